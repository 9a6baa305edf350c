//! `fitedge run` (the daemon, with SIGHUP reloads and SIGTERM shutdown)
//! and `fitedge check` (config and profiles, exit 78 on problems).

use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::problem::render;

use super::{load, runtime, EXIT_CONFIG};

pub(super) fn run_daemon(path: &Path) -> ExitCode {
    let (config, profiles) = match load(path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!(
                "fitedge: the configuration has problems:\n{}",
                render(&problems)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = crate::gateway::Handle::default();
    let result = rt.block_on(async move {
        reload_on_sighup(handle.reload.clone());
        crate::gateway::run(config, profiles, handle, shutdown_signal()).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(message = "Gateway failed.", error = %e);
            ExitCode::FAILURE
        }
    }
}

/// Notifies `reload` on every SIGHUP (a task on the current runtime).
fn reload_on_sighup(reload: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!(message = "SIGHUP received.");
                    reload.notify_one();
                }
            });
        }
        Err(e) => {
            tracing::warn!(message = "Cannot listen for SIGHUP; profile reload is off.", error = %e)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!(message = "SIGTERM received."),
                _ = int.recv() => tracing::info!(message = "SIGINT received."),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub(super) fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok((config, profiles)) => {
            println!(
                "{}: OK (gateway {}, site {}, {} device(s), {} profile(s))",
                path.display(),
                config.gateway_id,
                config.site_id,
                config.devices.len(),
                profiles.len()
            );
            for warning in &config.warnings {
                println!("warning: {warning}");
            }
            for device in &config.devices {
                let config::DeviceTransport::Serial(s) = &device.transport else {
                    continue;
                };
                if !s.port.resolve().is_some_and(|p| p.exists()) {
                    println!("note: device \"{}\": serial port {} is not present now; the gateway will wait for it", device.id, s.port);
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}", render(&problems));
            eprintln!("{} problem(s) found.", problems.len());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
