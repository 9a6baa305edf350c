//! The stage after parsing: what the config names outside itself.
//!
//! Secrets are not written in the config but in files it names: the
//! upstream `password_file` (where `${NAME}` is expanded from the
//! environment, for systemd's `CREDENTIALS_DIRECTORY`), and the LAN
//! broker's `users_file` or the site broker's `password_file`. They are
//! read here, after every section is checked, into the draft config.

use std::collections::HashMap;
use std::path::Path;

use super::raw::{RawConfig, Section};
use super::{resolve, span, Draft, Lan};
use crate::problem::{Problem, SourceText};

/// Reads the files the config names into `draft`.
pub(super) fn apply(
    src: &SourceText,
    base: &Path,
    raw: &RawConfig,
    draft: &mut Draft,
    problems: &mut Vec<Problem>,
) {
    if let (Some(up), Some(upstream)) = (&raw.upstream, &mut draft.upstream) {
        upstream.password = up.password_file.as_ref().and_then(|file| {
            let path = match expand_env(file.get_ref()) {
                Ok(expanded) => resolve(base, &expanded),
                Err(name) => {
                    problems.push(src.problem(span(file), format!("password_file names ${{{name}}}, which is not set"), "run under the systemd unit (it provides CREDENTIALS_DIRECTORY) or give a plain path"));
                    return None;
                }
            };
            read_password(&path)
                .map_err(|e| {
                    problems.push(src.problem(
                        span(file),
                        format!("cannot read password_file {}: {e}", path.display()),
                        "create the file (mode 0600) holding only the password, or remove password_file",
                    ))
                })
                .ok()
        });
    }
    let (Section::Read(lan), Some(Some(drafted))) = (&raw.lan, &mut draft.lan) else {
        return;
    };
    let at = |key: &str| Some(src.key_span(lan.span(), key));
    let l = lan.get_ref();
    match drafted {
        Lan::Embedded(embedded) => {
            if let Some(file) = &l.users_file {
                let path = resolve(base, file);
                match std::fs::read_to_string(&path) {
                    Ok(text) => embedded.users = read_users(&path, &text, problems),
                    Err(e) => problems.push(src.problem(
                        at("users_file"),
                        format!("cannot read users_file {}: {e}", path.display()),
                        "create it (mode 0600) with username:password lines",
                    )),
                }
            }
        }
        Lan::Subscribe(subscribe) => {
            subscribe.password = l.password_file.as_ref().and_then(|file| {
                let path = resolve(base, file);
                read_password(&path)
                    .map_err(|e| {
                        problems.push(src.problem(
                            at("password_file"),
                            format!("cannot read password_file {}: {e}", path.display()),
                            "create the file holding only the password",
                        ))
                    })
                    .ok()
            });
        }
    }
}

/// A password file's content, without its line end.
fn read_password(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|p| p.trim_end_matches(['\r', '\n']).to_string())
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
