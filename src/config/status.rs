//! The `[status]` section: where the status endpoint listens, if at all.

use std::net::SocketAddr;

use toml::Spanned;

use super::raw::{RawStatus, Section};
use super::DEFAULT_STATUS;
use crate::problem::{Problem, SourceText};

/// The status endpoint's address (`Some(None)`: disabled); `None` when the
/// section is broken.
pub(super) fn check_status(
    src: &SourceText,
    status: &Section<Spanned<RawStatus>>,
    problems: &mut Vec<Problem>,
) -> Option<Option<SocketAddr>> {
    match status {
        Section::Absent => Some(DEFAULT_STATUS.parse().ok()),
        Section::Broken => None,
        Section::Read(s) if !s.get_ref().enabled => Some(None),
        Section::Read(s) => match s.get_ref().listen.parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                problems.push(src.problem(
                    Some(src.key_span(s.span(), "listen")),
                    format!("status listen \"{}\" is not IP:PORT", s.get_ref().listen),
                    "keep it on localhost, e.g. \"127.0.0.1:9717\"",
                ));
                None
            }
        },
    }
}
