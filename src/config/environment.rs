//! The stage after parsing: what the config names outside itself.
//!
//! Secrets are not written in the config but in files it names: the
//! upstream `password_file` (where `${NAME}` is expanded from the
//! environment, for systemd's `CREDENTIALS_DIRECTORY`), and the LAN
//! broker's `users_file` or the site broker's `password_file`, and the
//! pseudonym keys of `[identity]`, the TLS files of the `tls` tables and
//! the status endpoint's `password_file`.
//! Every secret file must be readable by its owner only ([`secret`]).
//! They are read here, after every section is checked, into the draft
//! config.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::raw::{RawConfig, RawIdentity, Section};
use super::{resolve, span, tls, Draft, Lan};
use crate::identity::{Key, KeyFileError, Keyring, MIN_KEY_BYTES};
use crate::problem::{Problem, SourceText};
use crate::secret::{self, SecretError};
use crate::tls::{ClientTls, ServerTls};

/// Reads the files the config names into `draft`.
pub(super) fn apply(
    src: &SourceText,
    base: &Path,
    raw: &RawConfig,
    draft: &mut Draft,
    problems: &mut Vec<Problem>,
) {
    if let Section::Read(identity) = &raw.identity {
        draft.identity = read_keys(src, base, identity, problems).map(Some);
    }
    let warnings = &mut draft.warnings;
    if let (Some(up), Some(upstream)) = (&raw.upstream, &mut draft.upstream) {
        upstream.password = up.password_file.as_ref().and_then(|file| {
            let path = secret_path(
                src,
                span(file),
                base,
                "password_file",
                file.get_ref(),
                problems,
            )?;
            secret::read_password(&path)
                .map_err(|e| {
                    problems.push(src.problem(
                        span(file),
                        format!("password_file {}: {e}", path.display()),
                        e.fix(&path),
                    ))
                })
                .ok()
        });
        upstream.tls = (up.tls.as_ref())
            .and_then(|t| tls::load(src, base, t, problems, warnings, ClientTls::load));
        let hint = match (&up.tls, upstream.port) {
            (Some(_), 1883) => Some("[upstream.tls] is set but port is 1883, MQTT's plain port; MQTT over TLS is usually 8883"),
            (None, 8883) => Some("port 8883 is MQTT over TLS, but [upstream.tls] is not set: the gateway speaks plain MQTT; add [upstream.tls]"),
            _ => None,
        };
        if let Some(hint) = hint {
            warnings.push(src.problem(span(&up.port), hint, ""));
        }
    }
    if let (Section::Read(status), Some(Some(endpoint))) = (&raw.status, &mut draft.status) {
        let at = Some(src.key_span(status.span(), "password_file"));
        if let Some(file) = &status.get_ref().password_file {
            let read = secret_path(src, at.clone(), base, "password_file", file, problems)
                .map(|path| secret::read_password(&path).map_err(|e| (path, e)));
            match read {
                Some(Ok(password)) => endpoint.password = Some(password),
                Some(Err((path, e))) => problems.push(src.problem(
                    at,
                    format!("[status] password_file {}: {e}", path.display()),
                    e.fix(&path),
                )),
                None => {}
            }
        }
    }
    let (Section::Read(lan), Some(Some(drafted))) = (&raw.lan, &mut draft.lan) else {
        return;
    };
    let at = |key: &str| Some(src.key_span(lan.span(), key));
    let l = lan.get_ref();
    match drafted {
        Lan::Embedded(embedded) => {
            let users = (l.users_file.as_ref()).and_then(|file| {
                secret_path(src, at("users_file"), base, "users_file", file, problems)
            });
            if let Some(path) = users {
                match secret::read(&path).and_then(|bytes| {
                    String::from_utf8(bytes)
                        .map_err(|_| SecretError::Unreadable("it is not UTF-8 text".into()))
                }) {
                    Ok(text) => {
                        embedded.users = read_users(&path, &text, problems);
                        if embedded.users.is_empty() {
                            problems.push(src.problem(
                                at("users_file"),
                                format!("users_file {} has no account lines", path.display()),
                                "one device account a line, as username:password (with no accounts the broker would let anyone in)",
                            ));
                        }
                        for (device, account) in super::device::mqtt_accounts(&draft.devices) {
                            if !embedded.users.contains_key(account) {
                                problems.push(src.problem(
                                    at("users_file"),
                                    format!("device \"{device}\" publishes as account \"{account}\", which users_file {} does not have", path.display()),
                                    format!("add a line {account}:PASSWORD to users_file, or set account = \"...\" in the device's [device.transport]"),
                                ));
                            }
                        }
                    }
                    Err(e) => problems.push(src.problem(
                        at("users_file"),
                        format!("users_file {}: {e}", path.display()),
                        match e {
                            SecretError::Empty | SecretError::Unreadable(_) => format!(
                                "create {} (mode 0600) with username:password lines",
                                path.display()
                            ),
                            e => e.fix(&path),
                        },
                    )),
                }
            }
            if !embedded.tls_listen.is_empty() {
                embedded.tls = (l.tls.as_ref())
                    .and_then(|t| tls::load(src, base, t, problems, warnings, ServerTls::load));
            }
        }
        Lan::Subscribe(subscribe) => {
            subscribe.password = l.password_file.as_ref().and_then(|file| {
                let path = secret_path(
                    src,
                    at("password_file"),
                    base,
                    "password_file",
                    file,
                    problems,
                )?;
                secret::read_password(&path)
                    .map_err(|e| {
                        problems.push(src.problem(
                            at("password_file"),
                            format!("password_file {}: {e}", path.display()),
                            e.fix(&path),
                        ))
                    })
                    .ok()
            });
            subscribe.tls = (l.tls.as_ref())
                .and_then(|t| tls::load(src, base, t, problems, warnings, ClientTls::load));
        }
    }
}

/// The pseudonym keys `[identity]` names; `None` after a problem.
fn read_keys(
    src: &SourceText,
    base: &Path,
    identity: &RawIdentity,
    problems: &mut Vec<Problem>,
) -> Option<Arc<Keyring>> {
    let mut read = |file: &toml::Spanned<String>, what: &str| {
        let path = match expand_env(file.get_ref()) {
            Ok(expanded) => resolve(base, &expanded),
            Err(name) => {
                problems.push(src.problem(span(file), format!("{what} names ${{{name}}}, which is not set"), "run under the systemd unit (LoadCredential= provides CREDENTIALS_DIRECTORY) or give a plain path"));
                return None;
            }
        };
        Key::read(&path)
            .map_err(|e| {
                let fix = match &e {
                    KeyFileError::Secret(e @ (SecretError::TooOpen(_) | SecretError::NotAFile | SecretError::TooLarge(_))) => e.fix(&path),
                    _ => format!("create it (mode 0600) with at least {MIN_KEY_BYTES} random bytes, e.g. `head -c 32 /dev/urandom | base64 > {}`; every site of a county uses the same key (docs/stations.md)", path.display()),
                };
                problems.push(src.problem(span(file), format!("{what} {}: {e}", path.display()), fix))
            })
            .ok()
    };
    let current = read(&identity.key_file, "key_file");
    let previous = identity
        .previous_key_file
        .as_ref()
        .map(|file| read(file, "previous_key_file"));
    match (current, previous) {
        (Some(current), None) => Some(Arc::new(Keyring::new(current))),
        (Some(current), Some(Some(previous))) => Some(Arc::new(Keyring {
            current,
            previous: Some(previous),
        })),
        _ => None,
    }
}

/// A secret file's path from the config, `${NAME}` expanded (systemd's
/// `CREDENTIALS_DIRECTORY`); `None` after the problem of a name not set.
fn secret_path(
    src: &SourceText,
    at: Option<std::ops::Range<usize>>,
    base: &Path,
    key: &str,
    value: &str,
    problems: &mut Vec<Problem>,
) -> Option<std::path::PathBuf> {
    match expand_env(value) {
        Ok(expanded) => Some(resolve(base, &expanded)),
        Err(name) => {
            problems.push(src.problem(at, format!("{key} names ${{{name}}}, which is not set"), "run under the systemd unit (LoadCredential= provides CREDENTIALS_DIRECTORY) or give a plain path"));
            None
        }
    }
}

/// `username:password` lines; blank lines and `#` comments are skipped.
fn read_users(path: &Path, text: &str, problems: &mut Vec<Problem>) -> HashMap<String, String> {
    let mut users = HashMap::new();
    let lines = text.lines().enumerate();
    for (n, line) in lines.filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    {
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                users.insert(user.trim().to_string(), password.trim().to_string());
            }
            _ => problems.push(Problem {
                file: path.to_path_buf(),
                line: Some(n + 1),
                message: "not a user:password line".into(),
                fix: "one device account a line, as username:password".into(),
            }),
        }
    }
    users
}

/// Expands `${NAME}` from the environment (systemd's `CREDENTIALS_DIRECTORY`
/// for service credentials); the name of a missing variable is the error.
pub(super) fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
