//! Counters the stages keep about themselves: per device, the buffer and
//! the uplink. Shared as `Arc<Stats>`; read for logs and the status topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Counters for one device.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub frames_ok: AtomicU64,
    pub frames_bad: AtomicU64,
    /// Frames that were well-formed but not for this profile (wrong tag).
    pub frames_ignored: AtomicU64,
    /// Request cycles (request and retries) the device did not answer.
    pub requests_unanswered: AtomicU64,
    /// BLE notifications dropped because the link's queue was full.
    pub notifications_dropped: AtomicU64,
    pub connected: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// The last reading: when, and its values in brief.
    pub last_reading: Mutex<Option<String>>,
}

impl DeviceStats {
    /// Remembers `record` as the device's last reading.
    pub fn note_reading(&self, record: &crate::record::Record) {
        let values: Vec<String> = record
            .values
            .iter()
            .map(|v| format!("{}={} {}", v.metric, v.value, v.unit))
            .collect();
        if let Ok(mut last) = self.last_reading.lock() {
            *last = Some(format!("{} {}", record.received_at, values.join(", ")));
        }
    }

    pub fn set_error(&self, error: impl Into<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.into());
        }
    }
}

/// Gateway-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub records_accepted: AtomicU64,
    pub records_refused: AtomicU64,
    pub records_dropped_oldest: AtomicU64,
    pub records_acked: AtomicU64,
    pub records_published: AtomicU64,
    /// Records published again after a reconnect without a session.
    pub records_republished: AtomicU64,
    pub uplink_connects: AtomicU64,
    pub uplink_connected: AtomicBool,
    pub buffer_errors: AtomicU64,
    /// Profile reloads rejected because a profile was broken.
    pub profile_reload_errors: AtomicU64,
    pub records_expired: AtomicU64,
    /// Unreadable buffer slots moved to the quarantine file, ever.
    pub records_quarantined: AtomicU64,
    /// Boot-clock time of the last PUBACK for a record (0: none yet).
    pub last_ack_uptime_ms: AtomicU64,
    /// Boot-clock time of the last successful connect upstream.
    pub uplink_connected_since_ms: AtomicU64,
    /// Boot-clock time the uplink last went from idle to publishing.
    pub uplink_busy_since_ms: AtomicU64,
    /// LAN MQTT messages whose topic matched no device.
    pub lan_unmatched: AtomicU64,
    /// The embedded LAN broker: clients logged in now; connections refused
    /// over a limit; logins refused; publishes outside the account's devices.
    pub lan_connections: AtomicU64,
    pub lan_connections_refused: AtomicU64,
    pub lan_logins_refused: AtomicU64,
    pub lan_denied: AtomicU64,
    /// LAN MQTT messages sent again (DUP) whose records were already
    /// stored: recognised by the outbox's ledger and not stored twice.
    pub lan_redelivered: AtomicU64,
    /// Messages the site's MQTT broker says it dropped over its queue or
    /// in-flight limits since it started (mosquitto's $SYS count).
    pub lan_site_dropped: AtomicU64,
    /// Why LAN MQTT devices cannot reach the gateway, while they cannot.
    pub lan_error: Mutex<Option<String>>,
    /// Station sessions opened, open now, and scans that failed their check
    /// while a session was open; readings kept with no session.
    pub sessions_opened: AtomicU64,
    pub sessions_open: AtomicU64,
    pub scans_rejected: AtomicU64,
    pub readings_unbound: AtomicU64,
    /// Recent times from a LAN message's arrival to its record being durable.
    lan_durable_ms: Mutex<std::collections::VecDeque<u64>>,
    /// Why the uplink last failed to connect, until it connects.
    pub uplink_error: Mutex<Option<String>>,
    /// Expiry (unix seconds, 0: none) of the uplink's client certificate and
    /// of the broker's certificate seen at the last TLS handshake.
    pub uplink_client_cert_expires: std::sync::atomic::AtomicI64,
    pub uplink_server_cert_expires: std::sync::atomic::AtomicI64,
    /// Expiry of the embedded LAN broker's TLS certificate (0: no TLS).
    pub lan_cert_expires: std::sync::atomic::AtomicI64,
    /// The buffer's epoch (`Outbox::epoch`), once it is open.
    pub buffer_epoch: Mutex<Option<String>>,
    /// Where an unreadable buffer was moved at start, if it was.
    pub buffer_moved_aside: Mutex<Option<String>>,
    /// Why Bluetooth LE devices cannot be reached, while they cannot.
    pub ble_unavailable: Mutex<Option<String>>,
    devices: Mutex<BTreeMap<String, Arc<DeviceStats>>>,
}

/// A point-in-time copy of the counters, as reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub records_accepted: u64,
    pub records_refused: u64,
    pub records_dropped_oldest: u64,
    pub records_acked: u64,
    pub records_published: u64,
    pub records_republished: u64,
    pub uplink_connects: u64,
    pub uplink_connected: bool,
    /// Why the uplink cannot connect, while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_error: Option<String>,
    /// When the uplink's client certificate expires (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_client_cert_expires: Option<String>,
    /// When the broker's certificate expires, as seen at the last handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_server_cert_expires: Option<String>,
    /// When the embedded LAN broker's TLS certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_cert_expires: Option<String>,
    pub buffer_errors: u64,
    pub profile_reload_errors: u64,
    pub records_expired: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records_quarantined: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_moved_aside: Option<String>,
    pub lan_unmatched: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lan_connections: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lan_connections_refused: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lan_logins_refused: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lan_denied: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lan_redelivered: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lan_site_dropped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_error: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sessions_opened: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sessions_open: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scans_rejected: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub readings_unbound: u64,
    /// Median of the last 256 LAN messages' arrival-to-durable times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lan_durable_ms_median: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ble_unavailable: Option<String>,
    pub devices: BTreeMap<String, DeviceSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceSnapshot {
    pub connected: bool,
    pub frames_ok: u64,
    pub frames_bad: u64,
    pub frames_ignored: u64,
    pub requests_unanswered: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notifications_dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reading: Option<String>,
}

impl Stats {
    /// Records how long a LAN message took to become durable.
    pub fn note_lan_durable(&self, took: std::time::Duration) {
        if let Ok(mut samples) = self.lan_durable_ms.lock() {
            if samples.len() == 256 {
                samples.pop_front();
            }
            samples.push_back(took.as_millis() as u64);
        }
    }

    /// Notes why LAN MQTT devices cannot reach the gateway.
    pub fn set_lan_error(&self, error: String) {
        *self.lan_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The counters of device `id`, created on first use.
    pub fn device(&self, id: &str) -> Arc<DeviceStats> {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices.entry(id.to_string()).or_default().clone()
    }

    pub fn snapshot(&self) -> Snapshot {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        Snapshot {
            records_accepted: self.records_accepted.load(Relaxed),
            records_refused: self.records_refused.load(Relaxed),
            records_dropped_oldest: self.records_dropped_oldest.load(Relaxed),
            records_acked: self.records_acked.load(Relaxed),
            records_published: self.records_published.load(Relaxed),
            records_republished: self.records_republished.load(Relaxed),
            uplink_connects: self.uplink_connects.load(Relaxed),
            uplink_connected: self.uplink_connected.load(Relaxed),
            uplink_error: self.uplink_error.lock().ok().and_then(|e| e.clone()),
            uplink_client_cert_expires: expiry(&self.uplink_client_cert_expires),
            uplink_server_cert_expires: expiry(&self.uplink_server_cert_expires),
            lan_cert_expires: expiry(&self.lan_cert_expires),
            buffer_errors: self.buffer_errors.load(Relaxed),
            profile_reload_errors: self.profile_reload_errors.load(Relaxed),
            records_expired: self.records_expired.load(Relaxed),
            records_quarantined: self.records_quarantined.load(Relaxed),
            lan_unmatched: self.lan_unmatched.load(Relaxed),
            lan_connections: self.lan_connections.load(Relaxed),
            lan_connections_refused: self.lan_connections_refused.load(Relaxed),
            lan_logins_refused: self.lan_logins_refused.load(Relaxed),
            lan_denied: self.lan_denied.load(Relaxed),
            lan_redelivered: self.lan_redelivered.load(Relaxed),
            lan_site_dropped: self.lan_site_dropped.load(Relaxed),
            lan_error: self.lan_error.lock().ok().and_then(|e| e.clone()),
            sessions_opened: self.sessions_opened.load(Relaxed),
            sessions_open: self.sessions_open.load(Relaxed),
            scans_rejected: self.scans_rejected.load(Relaxed),
            readings_unbound: self.readings_unbound.load(Relaxed),
            lan_durable_ms_median: self.lan_durable_ms.lock().ok().and_then(|samples| {
                let mut sorted: Vec<u64> = samples.iter().copied().collect();
                sorted.sort_unstable();
                sorted.get(sorted.len() / 2).copied()
            }),
            buffer_moved_aside: self.buffer_moved_aside.lock().ok().and_then(|m| m.clone()),
            ble_unavailable: self.ble_unavailable.lock().ok().and_then(|m| m.clone()),
            devices: devices
                .iter()
                .map(|(id, d)| {
                    let last_error = d.last_error.lock().ok().and_then(|e| e.clone());
                    (
                        id.clone(),
                        DeviceSnapshot {
                            connected: d.connected.load(Relaxed),
                            frames_ok: d.frames_ok.load(Relaxed),
                            frames_bad: d.frames_bad.load(Relaxed),
                            frames_ignored: d.frames_ignored.load(Relaxed),
                            requests_unanswered: d.requests_unanswered.load(Relaxed),
                            notifications_dropped: d.notifications_dropped.load(Relaxed),
                            last_error,
                            last_reading: d.last_reading.lock().ok().and_then(|r| r.clone()),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A certificate expiry kept as unix seconds, as RFC 3339.
fn expiry(at: &std::sync::atomic::AtomicI64) -> Option<String> {
    let at = at.load(Relaxed);
    (at != 0).then(|| crate::tls::rfc3339(at))
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the heartbeat and `fitedge status` report: progress and counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    /// Records waiting for a PUBACK.
    pub unacknowledged: u64,
    /// Age of the oldest of them, in seconds (this boot only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unacknowledged_seconds: Option<u64>,
    /// Seconds since the last PUBACK for a record, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack_seconds: Option<u64>,
    /// The buffer's epoch, as its records carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_epoch: Option<String>,
    pub counters: Snapshot,
}

/// The gateway's figures now, given what the buffer holds: records waiting
/// for a PUBACK and the age of the oldest in ms (`Outbox::waiting`).
pub fn health(stats: &Stats, (unacknowledged, oldest): (u64, Option<u64>)) -> Health {
    let last_ack = stats.last_ack_uptime_ms.load(Relaxed);
    Health {
        unacknowledged,
        oldest_unacknowledged_seconds: oldest.map(|ms| ms / 1000),
        last_ack_seconds: (last_ack > 0)
            .then(|| crate::clock::uptime_ms().saturating_sub(last_ack) / 1000),
        buffer_epoch: stats.buffer_epoch.lock().ok().and_then(|e| e.clone()),
        counters: stats.snapshot(),
    }
}
