//! The `tls` tables (`[upstream.tls]`, `[lan.tls]`): one shape for every
//! MQTT link. Read in the environment stage: paths are resolved (with
//! `${NAME}` expanded, for systemd credentials) and the files loaded and
//! checked by [`crate::tls`].

use std::path::Path;

use toml::Spanned;

use super::environment::expand_env;
use super::raw::RawTls;
use super::{resolve, span};
use crate::problem::{Problem, SourceText};
use crate::tls::{TlsError, TlsFiles};

/// The table's files, or the problem of a `${NAME}` that is not set.
fn files(
    src: &SourceText,
    base: &Path,
    table: &Spanned<RawTls>,
    problems: &mut Vec<Problem>,
) -> Option<TlsFiles> {
    let t = table.get_ref();
    let mut failed = false;
    let mut path = |value: &Option<String>| {
        let value = value.as_ref()?;
        match expand_env(value) {
            Ok(expanded) => Some(resolve(base, &expanded)),
            Err(name) => {
                failed = true;
                problems.push(src.problem(span(table), format!("{value} names ${{{name}}}, which is not set"), "run under the systemd unit (LoadCredential= provides CREDENTIALS_DIRECTORY) or give a plain path"));
                None
            }
        }
    };
    let files = TlsFiles {
        ca_file: path(&t.ca_file),
        cert_file: path(&t.cert_file),
        key_file: path(&t.key_file),
        server_name: t.server_name.clone(),
    };
    (!failed).then_some(files)
}

/// The table loaded by `load` (`ClientTls::load` for the uplink and the
/// site broker, `ServerTls::load` for the embedded broker); a problem at
/// the table's line when it cannot be, and its warnings.
pub(super) fn load<T>(
    src: &SourceText,
    base: &Path,
    table: &Spanned<RawTls>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
    load: impl FnOnce(&TlsFiles, &mut Vec<String>) -> Result<T, TlsError>,
) -> Option<T> {
    let files = files(src, base, table, problems)?;
    let mut soon = Vec::new();
    let loaded = load(&files, &mut soon);
    for w in soon {
        warnings.push(src.problem(span(table), w, ""));
    }
    loaded
        .map_err(|e| problems.push(src.problem(span(table), e.to_string(), e.fix())))
        .ok()
}
