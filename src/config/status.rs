//! The `[status]` section: where the status endpoint listens, if at all,
//! and whether it asks for a password (required off loopback; the file is
//! read by the environment stage).

use toml::Spanned;

use super::raw::{RawStatus, Section};
use super::StatusEndpoint;
use crate::problem::{Problem, SourceText};

/// The status endpoint (`Some(None)`: disabled); `None` when the section
/// is broken.
pub(super) fn check_status(
    src: &SourceText,
    status: &Section<Spanned<RawStatus>>,
    problems: &mut Vec<Problem>,
) -> Option<Option<StatusEndpoint>> {
    let s = match status {
        Section::Absent => return Some(Some(StatusEndpoint::local())),
        Section::Broken => return None,
        Section::Read(s) if !s.get_ref().enabled => return Some(None),
        Section::Read(s) => s,
    };
    let raw = s.get_ref();
    let Ok(listen) = raw.listen.parse::<std::net::SocketAddr>() else {
        problems.push(src.problem(
            Some(src.key_span(s.span(), "listen")),
            format!("status listen \"{}\" is not IP:PORT", raw.listen),
            "keep it on localhost, e.g. \"127.0.0.1:9717\"",
        ));
        return None;
    };
    if !listen.ip().is_loopback() && raw.password_file.is_none() {
        problems.push(src.problem(
            Some(src.key_span(s.span(), "listen")),
            format!("status listen \"{listen}\" is reachable from the network, and the status shows each device's last reading and error"),
            "keep it on 127.0.0.1, or set password_file = \"...\" (a file of mode 0600 holding the password clients must give)",
        ));
        return None;
    }
    Some(Some(StatusEndpoint {
        listen,
        password: None,
    }))
}
