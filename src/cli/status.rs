//! `fitedge status`: the running gateway's figures from its status endpoint.

use std::path::Path;
use std::process::ExitCode;

use crate::config;

pub(super) fn status(address: Option<std::net::SocketAddr>, path: &Path, json: bool) -> ExitCode {
    let configured = config::load(path).ok().map(|c| c.status);
    let password = configured.clone().flatten().and_then(|s| s.password);
    let address = match (address, configured) {
        (Some(address), _) => address,
        (None, Some(Some(status))) => status.listen,
        (None, None) => config::StatusEndpoint::local().listen,
        (None, Some(None)) => {
            eprintln!(
                "fitedge status: the status endpoint is disabled in {}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match crate::report::fetch(address, password.as_deref()) {
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
