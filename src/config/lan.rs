//! The `[lan]` section: how LAN MQTT devices reach the gateway.

use toml::Spanned;

use super::raw::{LanKind, RawLan};
use super::{EmbeddedLan, Lan, SubscribeLan};
use crate::problem::{Problem, SourceText};

/// Validates `[lan]`; the users and the password files are left for the
/// environment stage.
pub(super) fn check_lan(
    src: &SourceText,
    lan: &Spanned<RawLan>,
    gateway_id: &str,
    problems: &mut Vec<Problem>,
) -> Lan {
    let at = |key: &str| Some(src.key_span(lan.span(), key));
    let l = lan.get_ref();
    match l.kind {
        LanKind::Embedded => {
            let mut listen = Vec::new();
            for addr in &l.listen {
                match addr.parse() {
                    Ok(a) => listen.push(a),
                    Err(_) => problems.push(src.problem(
                        at("listen"),
                        format!("lan listen address \"{addr}\" is not IP:PORT"),
                        "e.g. \"0.0.0.0:1883\", or the LAN interface's own address",
                    )),
                }
            }
            if l.listen.is_empty() {
                problems.push(src.problem(
                    at("type"),
                    "an embedded LAN broker needs listen addresses",
                    "listen = [\"0.0.0.0:1883\"]",
                ));
            }
            if l.users_file.is_none() && !l.allow_anonymous {
                problems.push(src.problem(at("type"), "the LAN broker has no users_file", "give each device an account in users_file, or set allow_anonymous = true on a closed network"));
            }
            if !(1..=10_000).contains(&l.max_connections)
                || !(64..=16 * 1024 * 1024).contains(&l.max_payload_bytes)
                || !(1..=10_000).contains(&l.max_inflight)
            {
                problems.push(src.problem(at("max_connections"), "lan limits out of range", "max_connections 1..=10000, max_payload_bytes 64..=16777216, max_inflight 1..=10000"));
            }
            Lan::Embedded(EmbeddedLan {
                listen,
                users: Default::default(),
                max_connections: l.max_connections,
                max_payload_bytes: l.max_payload_bytes,
                max_inflight: l.max_inflight,
            })
        }
        LanKind::Subscribe => {
            let host = l.host.clone().unwrap_or_default();
            if host.is_empty() {
                problems.push(src.problem(
                    at("type"),
                    "subscribing to a site broker needs its host",
                    "host = \"127.0.0.1\" (and port)",
                ));
            }
            Lan::Subscribe(SubscribeLan {
                host,
                port: l.port,
                client_id: l
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("fitedge-lan-{gateway_id}")),
                username: l.username.clone(),
                password: None,
            })
        }
    }
}
