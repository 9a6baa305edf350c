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
            let mut addresses = |key: &str, written: &[String], example: &str| {
                let mut parsed = Vec::new();
                for addr in written {
                    match addr.parse() {
                        Ok(a) => parsed.push(a),
                        Err(_) => problems.push(src.problem(
                            at(key),
                            format!("lan {key} address \"{addr}\" is not IP:PORT"),
                            format!("e.g. \"{example}\", or the LAN interface's own address"),
                        )),
                    }
                }
                parsed
            };
            let listen = addresses("listen", &l.listen, "0.0.0.0:1883");
            let tls_listen = addresses("tls_listen", &l.tls_listen, "0.0.0.0:8883");
            if l.listen.is_empty() && l.tls_listen.is_empty() {
                problems.push(src.problem(
                    at("type"),
                    "an embedded LAN broker needs listen addresses",
                    "listen = [\"0.0.0.0:1883\"] (and tls_listen = [\"0.0.0.0:8883\"] with [lan.tls])",
                ));
            }
            match (l.tls_listen.is_empty(), &l.tls) {
                (false, None) => problems.push(src.problem(
                    at("tls_listen"),
                    "tls_listen needs the broker's certificate",
                    "add [lan.tls] with cert_file and key_file",
                )),
                (true, Some(table)) => problems.push(src.problem(
                    super::span(table),
                    "[lan.tls] of an embedded broker is used only with tls_listen",
                    "add tls_listen = [\"0.0.0.0:8883\"] to [lan]",
                )),
                _ => {}
            }
            if let Some(table) = &l.tls {
                let t = table.get_ref();
                if t.ca_file.is_some() || t.server_name.is_some() {
                    problems.push(src.problem(
                        super::span(table),
                        "the embedded broker does not check devices' certificates: ca_file and server_name apply to links the gateway opens",
                        "remove them from [lan.tls]; devices log in with their accounts in users_file",
                    ));
                }
            }
            if l.users_file.is_none() && !l.allow_anonymous {
                problems.push(src.problem(at("type"), "the LAN broker has no users_file", "give each device an account in users_file, or set allow_anonymous = true on a closed network"));
            }
            if !(1..=10_000).contains(&l.max_connections)
                || !(64..=16 * 1024 * 1024).contains(&l.max_payload_bytes)
                || !(1..=10_000).contains(&l.max_inflight)
                || !(1..=l.max_connections.max(1)).contains(&l.max_connections_per_account)
                || !(1..=l.max_connections.max(1)).contains(&l.max_connections_per_address)
            {
                problems.push(src.problem(at("max_connections"), "lan limits out of range", "max_connections 1..=10000, max_payload_bytes 64..=16777216, max_inflight 1..=10000, max_connections_per_account and max_connections_per_address 1..=max_connections"));
            }
            Lan::Embedded(EmbeddedLan {
                listen,
                users: Default::default(),
                max_connections: l.max_connections,
                max_payload_bytes: l.max_payload_bytes,
                max_inflight: l.max_inflight,
                max_per_account: l.max_connections_per_account,
                max_per_address: l.max_connections_per_address,
                tls_listen,
                tls: None,
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
                tls: None,
            })
        }
    }
}
