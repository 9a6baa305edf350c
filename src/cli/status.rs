//! `fitedge status`: the running gateway's figures from its status endpoint.

use std::path::Path;
use std::process::ExitCode;

use crate::config;

pub(super) fn status(address: Option<std::net::SocketAddr>, path: &Path, json: bool) -> ExitCode {
    let address = address
        .or_else(|| config::load(path).ok().and_then(|c| c.status_listen))
        .or_else(|| config::DEFAULT_STATUS.parse().ok());
    let Some(address) = address else {
        eprintln!(
            "fitedge status: the status endpoint is disabled in {}",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    match crate::report::fetch(address) {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", crate::report::render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fitedge status: {e}");
            ExitCode::FAILURE
        }
    }
}
