//! The gateway's self-report, for people and for monitoring: `GET /status`
//! (JSON: uplink, buffer, devices, counters) and `GET /metrics`
//! (Prometheus text), served by [`serve`] (on localhost unless configured
//! otherwise, then with a password); `fitedge status` is its client and
//! prints the same figures for a person.

pub mod serve;

use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::outbox::Outbox;
use crate::status::{health, Health, Stats};
pub use serve::Endpoint;

/// What `GET /status` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub gateway_id: String,
    pub site_id: String,
    pub version: String,
    pub uplink_connected: bool,
    pub health: Health,
}

/// Serves the report where `[status]` says until the returned endpoint is
/// dropped (inside the runtime).
pub fn serve(
    status: &crate::config::StatusEndpoint,
    gateway_id: String,
    site_id: String,
    stats: Arc<Stats>,
    outbox: Arc<Mutex<Outbox>>,
) -> Option<Endpoint> {
    let report = move || Report {
        gateway_id: gateway_id.clone(),
        site_id: site_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uplink_connected: stats
            .uplink_connected
            .load(std::sync::atomic::Ordering::Relaxed),
        health: health(
            &stats,
            outbox.lock().unwrap_or_else(|p| p.into_inner()).waiting(),
        ),
    };
    serve::serve(
        status.listen,
        status.password.as_deref(),
        move |path| match path {
            "/status" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&report()).unwrap_or_default(),
            ),
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                prometheus(&report()),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /status or /metrics\n".into(),
            ),
        },
    )
}

/// The report in Prometheus' text format.
pub fn prometheus(report: &Report) -> String {
    let mut out = String::new();
    let c = &report.health.counters;
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP fitedge_{name} {help}\n# TYPE fitedge_{name} {kind}\nfitedge_{name} {value}"
        );
    };
    metric(
        "records_accepted_total",
        "counter",
        "Records durably accepted into the buffer.",
        c.records_accepted as f64,
    );
    metric(
        "records_acknowledged_total",
        "counter",
        "Records acknowledged by the platform broker.",
        c.records_acked as f64,
    );
    metric(
        "records_published_total",
        "counter",
        "Record publishes, first tries and resends.",
        c.records_published as f64,
    );
    metric(
        "records_republished_total",
        "counter",
        "Records published again after a reconnect without a session.",
        c.records_republished as f64,
    );
    metric(
        "records_refused_total",
        "counter",
        "Records refused by a full buffer or for their size.",
        c.records_refused as f64,
    );
    metric(
        "records_dropped_oldest_total",
        "counter",
        "Unsent records overwritten by a full buffer.",
        c.records_dropped_oldest as f64,
    );
    metric(
        "records_expired_total",
        "counter",
        "Unsent records dropped for their age.",
        c.records_expired as f64,
    );
    metric(
        "records_quarantined_total",
        "counter",
        "Unreadable buffer slots moved to the quarantine file.",
        c.records_quarantined as f64,
    );
    metric(
        "buffer_errors_total",
        "counter",
        "Buffer reads or writes that failed.",
        c.buffer_errors as f64,
    );
    metric(
        "lan_unmatched_total",
        "counter",
        "LAN MQTT messages from no configured device.",
        c.lan_unmatched as f64,
    );
    metric(
        "lan_connections",
        "gauge",
        "Clients logged in to the embedded LAN broker.",
        c.lan_connections as f64,
    );
    metric(
        "lan_connections_refused_total",
        "counter",
        "LAN connections refused over a connection limit.",
        c.lan_connections_refused as f64,
    );
    metric(
        "lan_logins_refused_total",
        "counter",
        "LAN logins refused: unknown account or wrong password.",
        c.lan_logins_refused as f64,
    );
    metric(
        "lan_denied_total",
        "counter",
        "LAN publishes dropped: outside the account's devices.",
        c.lan_denied as f64,
    );
    metric(
        "lan_redelivered_total",
        "counter",
        "LAN MQTT messages sent again after their records were stored; not stored twice.",
        c.lan_redelivered as f64,
    );
    metric(
        "lan_site_dropped",
        "gauge",
        "Messages the site's MQTT broker dropped over its limits since it started.",
        c.lan_site_dropped as f64,
    );
    metric(
        "uplink_connects_total",
        "counter",
        "Connections made to the platform broker.",
        c.uplink_connects as f64,
    );
    metric(
        "uplink_connected",
        "gauge",
        "1 while connected to the platform broker.",
        report.uplink_connected as u8 as f64,
    );
    metric(
        "buffer_unacknowledged",
        "gauge",
        "Records waiting for the platform broker's acknowledgement.",
        report.health.unacknowledged as f64,
    );
    if let Some(age) = report.health.oldest_unacknowledged_seconds {
        metric(
            "buffer_oldest_unacknowledged_seconds",
            "gauge",
            "Age of the oldest unacknowledged record.",
            age as f64,
        );
    }
    if let Some(age) = report.health.last_ack_seconds {
        metric(
            "uplink_last_ack_seconds",
            "gauge",
            "Seconds since the last acknowledgement of a record.",
            age as f64,
        );
    }
    let _ = writeln!(out, "# HELP fitedge_device_frames_total Frames (BLE notifications) per device and outcome; dropped: lost to a notification flood.\n# TYPE fitedge_device_frames_total counter");
    for (id, d) in &c.devices {
        for (result, n) in [
            ("ok", d.frames_ok),
            ("bad", d.frames_bad),
            ("ignored", d.frames_ignored),
            ("dropped", d.notifications_dropped),
        ] {
            let _ = writeln!(
                out,
                "fitedge_device_frames_total{{device=\"{id}\",result=\"{result}\"}} {n}"
            );
        }
    }
    let _ = writeln!(out, "# HELP fitedge_device_connected 1 while the device's link is open.\n# TYPE fitedge_device_connected gauge");
    for (id, d) in &c.devices {
        let _ = writeln!(
            out,
            "fitedge_device_connected{{device=\"{id}\"}} {}",
            d.connected as u8
        );
    }
    out
}

/// Fetches the report from a running gateway, giving `password` when the
/// endpoint asks for one.
pub fn fetch(address: SocketAddr, password: Option<&str>) -> Result<Report, String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3)).map_err(|e| {
        format!("no gateway answers on {address} ({e}); is it running, with [status] enabled?")
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let authorization = password
        .map(|p| format!("Authorization: Basic {}\r\n", serve::basic("fitedge", p)))
        .unwrap_or_default();
    let request = format!(
        "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{authorization}\r\n"
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .take(MAX_REPORT_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the gateway's answer has no body")?;
    if head.starts_with("HTTP/1.1 401") {
        return Err(format!(
            "the gateway on {address} asks for a password: run as a user who can read [status] password_file"
        ));
    }
    serde_json::from_str(body)
        .map_err(|e| format!("the gateway's answer is not a status report: {e}"))
}

/// The longest answer `fetch` reads.
const MAX_REPORT_BYTES: u64 = 16 * 1024 * 1024;

/// The report as a person reads it.
pub fn render(r: &Report) -> String {
    let h = &r.health;
    let c = &h.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fitedge {} at site {}, version {}",
        r.gateway_id, r.site_id, r.version
    );
    let _ = writeln!(
        out,
        "uplink   {} ({} connects)",
        if r.uplink_connected {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        c.uplink_connects
    );
    let oldest = h
        .oldest_unacknowledged_seconds
        .map(|s| format!(", oldest {s} s"))
        .unwrap_or_default();
    let last_ack = h
        .last_ack_seconds
        .map(|s| format!(", last acknowledgement {s} s ago"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "buffer   {} unsent{oldest}{last_ack}",
        h.unacknowledged
    );
    let _ = writeln!(
        out,
        "records  accepted {}, acknowledged {}, republished {}, refused {}, dropped {}, expired {}, buffer errors {}",
        c.records_accepted, c.records_acked, c.records_republished, c.records_refused, c.records_dropped_oldest, c.records_expired, c.buffer_errors
    );
    if c.records_quarantined > 0 {
        let _ = writeln!(
            out,
            "         {} unreadable record(s) quarantined: `fitedge buffer export --quarantine`",
            c.records_quarantined
        );
    }
    if let (false, Some(why)) = (r.uplink_connected, &c.uplink_error) {
        let _ = writeln!(out, "         {why}");
    }
    for (whose, at) in [
        ("this gateway's client", &c.uplink_client_cert_expires),
        ("the broker's", &c.uplink_server_cert_expires),
        ("the LAN broker's", &c.lan_cert_expires),
    ] {
        if let Some(at) = at {
            let _ = writeln!(out, "tls      {whose} certificate expires {at}");
        }
    }
    if let Some(aside) = &c.buffer_moved_aside {
        let _ = writeln!(
            out,
            "WARNING  an unreadable buffer was moved aside to {aside}"
        );
    }
    if let Some(why) = &c.ble_unavailable {
        let _ = writeln!(out, "WARNING  {why}");
    }
    if let Some(why) = &c.lan_error {
        let _ = writeln!(out, "WARNING  LAN MQTT devices are off: {why}");
    }
    if c.lan_connections + c.lan_connections_refused + c.lan_logins_refused + c.lan_denied > 0 {
        let _ = writeln!(
            out,
            "lan      {} connected, refused {} over limits, {} logins, {} publishes outside their devices",
            c.lan_connections, c.lan_connections_refused, c.lan_logins_refused, c.lan_denied
        );
    }
    let _ = writeln!(out, "devices");
    for (id, d) in &c.devices {
        let _ = writeln!(
            out,
            "  {id:<20} {:<12} frames ok {} bad {} ignored {}",
            if d.connected {
                "connected"
            } else {
                "not connected"
            },
            d.frames_ok,
            d.frames_bad,
            d.frames_ignored
        );
        if d.notifications_dropped > 0 {
            let _ = writeln!(
                out,
                "  {:<20} {} notifications dropped in a flood",
                "", d.notifications_dropped
            );
        }
        if let Some(last) = &d.last_reading {
            let _ = writeln!(out, "  {:<20} last reading {last}", "");
        }
        if let Some(e) = &d.last_error {
            let _ = writeln!(out, "  {:<20} last error {e}", "");
        }
    }
    out
}
