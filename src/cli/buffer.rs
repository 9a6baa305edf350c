//! `fitedge buffer stats|verify|export` on a stopped gateway's buffer.

use std::process::ExitCode;

use crate::config;
use crate::problem::render;

use super::{BufferCommand, EXIT_CONFIG, EXIT_DATA};

pub(super) fn buffer(command: BufferCommand) -> ExitCode {
    let (BufferCommand::Stats(args)
    | BufferCommand::Verify(args)
    | BufferCommand::Export { args, .. }) = &command;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => match config::load(&args.config) {
            Ok(c) => c.buffer.dir,
            Err(problems) => {
                eprintln!("{}", render(&problems));
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let failed = |e: crate::outbox::OutboxError| {
        eprintln!("fitedge buffer: {e} (is the gateway still running? stop it first)");
        ExitCode::FAILURE
    };
    match command {
        BufferCommand::Stats(_) | BufferCommand::Verify(_) => {
            let report = match crate::outbox::inspect(&dir) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            if let BufferCommand::Stats(_) = command {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            for problem in &report.problems {
                println!("bad   {problem}");
            }
            println!(
                "{}: {} unacknowledged record(s) read, {} unreadable",
                dir.display(),
                report.pending,
                report.problems.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DATA)
            }
        }
        BufferCommand::Export {
            quarantine: true, ..
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match crate::outbox::export_quarantine(&dir, &mut out) {
                Ok(n) => {
                    drop(out);
                    eprintln!(
                        "fitedge buffer: {n} quarantined slot(s) in {}",
                        crate::outbox::Quarantine::path_for(&dir).display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "fitedge buffer: reading the quarantine of {}: {e}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        BufferCommand::Export { .. } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match crate::outbox::export(&dir, &mut out) {
                Ok(n) => {
                    drop(out);
                    eprintln!(
                        "fitedge buffer: exported {n} record(s) from {}",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
    }
}
