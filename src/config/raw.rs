//! The config file as written: a serde mirror of the TOML with spans (for
//! line numbers) and the defaults of keys left out.
//!
//! [`read`] parses the document once and then deserializes each top-level
//! section, and each `[[device]]`, on its own, so a mistyped value or an
//! unknown key in one section does not hide the problems of the others.
//! Only a TOML syntax error stops the reading (the document has no shape
//! to go on from).

use serde::de::{DeserializeOwned, Error as _};
use serde::Deserialize;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::{FullPolicy, Parity, DEFAULT_STATUS};
use crate::problem::{Problem, SourceText};

/// The fix given for a value serde refuses.
const FIX: &str = "see the commented example in systemd/fitedge.toml";

/// The top-level keys, in the order their problems are reported.
const KEYS: &[&str] = &[
    "gateway_id",
    "site_id",
    "profile_dirs",
    "upstream",
    "buffer",
    "device",
    "lan",
    "status",
    "identity",
    "station",
];

/// The file's sections as read; `None` marks a required or defaulted part
/// that could not be read (its problem is already recorded).
pub(super) struct RawConfig {
    pub gateway_id: Option<Spanned<String>>,
    pub site_id: Option<Spanned<String>>,
    pub profile_dirs: Option<Vec<Spanned<String>>>,
    pub upstream: Option<RawUpstream>,
    pub buffer: Option<RawBuffer>,
    /// The `[[device]]` entries that could be read.
    pub devices: Vec<RawDevice>,
    pub lan: Section<Spanned<RawLan>>,
    pub status: Section<Spanned<RawStatus>>,
    pub identity: Section<RawIdentity>,
    /// The `[[station]]` entries that could be read.
    pub stations: Vec<RawStation>,
}

/// `[identity]`: where the pseudonym keys are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    /// The site key (`${CREDENTIALS_DIRECTORY}` is expanded).
    pub key_file: Spanned<String>,
    /// The previous key, during a changeover.
    #[serde(default)]
    pub previous_key_file: Option<Spanned<String>>,
}

/// A `[[station]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStation {
    pub id: Spanned<String>,
    /// Instruments whose readings the station's sessions bind.
    #[serde(default)]
    pub devices: Vec<Spanned<String>>,
    /// Scanners and card readers whose scan opens a session.
    #[serde(default)]
    pub readers: Vec<Spanned<String>>,
    /// Readers of operator cards: who runs the station.
    #[serde(default)]
    pub operators: Vec<Spanned<String>>,
    #[serde(default = "default_idle")]
    pub idle_timeout_seconds: Spanned<u64>,
}

fn default_idle() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}

/// An optional table as read.
pub(super) enum Section<T> {
    Absent,
    /// Written but not readable; its problem is already recorded.
    Broken,
    Read(T),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    #[serde(default = "default_status")]
    pub listen: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The password HTTP clients must give (Basic); required off loopback.
    #[serde(default)]
    pub password_file: Option<String>,
}

fn default_status() -> String {
    DEFAULT_STATUS.to_string()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLan {
    #[serde(rename = "type")]
    pub kind: LanKind,
    #[serde(default)]
    pub listen: Vec<String>,
    #[serde(default)]
    pub users_file: Option<String>,
    #[serde(default)]
    pub allow_anonymous: bool,
    #[serde(default = "lan_connections")]
    pub max_connections: usize,
    #[serde(default = "lan_payload")]
    pub max_payload_bytes: usize,
    #[serde(default = "lan_inflight")]
    pub max_inflight: usize,
    #[serde(default = "lan_per_account")]
    pub max_connections_per_account: usize,
    #[serde(default = "lan_per_address")]
    pub max_connections_per_address: usize,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "lan_port")]
    pub port: u16,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    /// The embedded broker's TLS listeners.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    #[serde(default)]
    pub tls: Option<Spanned<RawTls>>,
}

/// A `tls` table, the same keys wherever it appears (paths may use
/// `${CREDENTIALS_DIRECTORY}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub(super) enum LanKind {
    Embedded,
    Subscribe,
}

fn lan_connections() -> usize {
    64
}
fn lan_payload() -> usize {
    16 * 1024
}
fn lan_inflight() -> usize {
    100
}
fn lan_per_account() -> usize {
    4
}
fn lan_per_address() -> usize {
    8
}
fn lan_port() -> u16 {
    1883
}

fn default_profile_dirs() -> Vec<Spanned<String>> {
    [
        "/etc/fitedge/device-profiles",
        "/usr/share/fitedge/device-profiles",
    ]
    .into_iter()
    .map(|d| Spanned::new(0..0, d.to_string()))
    .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub host: Spanned<String>,
    #[serde(default = "default_port")]
    pub port: Spanned<u16>,
    pub client_id: Option<Spanned<String>>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_seconds: Spanned<u64>,
    pub username: Option<String>,
    pub password_file: Option<Spanned<String>>,
    #[serde(default = "default_prefix")]
    pub topic_prefix: Spanned<String>,
    #[serde(default = "default_window")]
    pub inflight_window: Spanned<u16>,
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: Spanned<u64>,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_seconds: Spanned<u64>,
    #[serde(default = "default_backlog_rate")]
    pub backlog_per_second: Spanned<u32>,
    #[serde(default = "default_stall")]
    pub stall_seconds: Spanned<u64>,
    #[serde(default)]
    pub format: super::PayloadFormat,
    #[serde(default)]
    pub tls: Option<Spanned<RawTls>>,
}

fn default_stall() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}

fn default_backlog_rate() -> Spanned<u32> {
    Spanned::new(0..0, 100)
}

fn default_port() -> Spanned<u16> {
    Spanned::new(0..0, 1883)
}
fn default_keep_alive() -> Spanned<u64> {
    Spanned::new(0..0, 30)
}
fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "fitedge".to_string())
}
fn default_window() -> Spanned<u16> {
    Spanned::new(0..0, 100)
}
fn default_reconnect_min() -> Spanned<u64> {
    Spanned::new(0..0, 500)
}
fn default_reconnect_max() -> Spanned<u64> {
    Spanned::new(0..0, 60)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBuffer {
    pub dir: Spanned<String>,
    pub max_records: Spanned<u64>,
    pub max_record_bytes: Spanned<usize>,
    pub full_policy: FullPolicy,
    pub cache_bytes: Spanned<u64>,
    pub max_bytes: Option<Spanned<u64>>,
    pub max_age_hours: Option<Spanned<u64>>,
    pub flush_window_ms: Spanned<u64>,
}

impl Default for RawBuffer {
    fn default() -> Self {
        RawBuffer {
            dir: Spanned::new(0..0, "/var/lib/fitedge/buffer".to_string()),
            max_records: Spanned::new(0..0, 200_000),
            max_record_bytes: Spanned::new(0..0, 16 * 1024),
            full_policy: FullPolicy::DropOldest,
            cache_bytes: Spanned::new(0..0, 8 * 1024 * 1024),
            max_bytes: None,
            max_age_hours: None,
            flush_window_ms: Spanned::new(0..0, 0),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub id: Spanned<String>,
    pub profile: Spanned<String>,
    pub transport: RawTransport,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransport {
    #[serde(rename = "type")]
    pub kind: TransportKind,
    #[serde(default)]
    pub port: Option<Spanned<String>>,
    /// USB adapter `VID:PID[:SERIAL]`, instead of `port`.
    #[serde(default)]
    pub usb: Option<Spanned<String>>,
    /// MQTT devices: topic filter, instead of the profile's.
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// MQTT devices on the embedded broker: the account that may publish
    /// for the device (default: the device's id).
    #[serde(default)]
    pub account: Option<Spanned<String>>,
    /// BLE devices: the peripheral's address.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    /// Input devices: the evdev device, e.g. `/dev/input/by-id/...-event-kbd`.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default = "default_baud")]
    pub baud: Spanned<u32>,
    #[serde(default = "default_parity")]
    pub parity: Parity,
    #[serde(default = "default_data_bits")]
    pub data_bits: Spanned<u8>,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: Spanned<u8>,
}

/// Transports a device can use; each has its own keys.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum TransportKind {
    Serial,
    Mqtt,
    Ble,
    /// A keyboard-wedge scanner on an evdev input device.
    Input,
}

fn default_baud() -> Spanned<u32> {
    Spanned::new(0..0, 9600)
}
fn default_parity() -> Parity {
    Parity::None
}
fn default_data_bits() -> Spanned<u8> {
    Spanned::new(0..0, 8)
}
fn default_stop_bits() -> Spanned<u8> {
    Spanned::new(0..0, 1)
}

// ---- reading section by section -----------------------------------------

/// The document's top-level entries not read yet.
struct Document<'i> {
    entries: Vec<(Spanned<DeString<'i>>, Spanned<DeValue<'i>>)>,
    /// Where the document starts: missing keys are reported here.
    start: usize,
}

impl<'i> Document<'i> {
    fn take(&mut self, key: &str) -> Option<Spanned<DeValue<'i>>> {
        let at = self.entries.iter().position(|(k, _)| k.get_ref() == key)?;
        Some(self.entries.remove(at).1)
    }

    /// A key every config sets.
    fn required<T: DeserializeOwned>(
        &mut self,
        src: &SourceText,
        key: &'static str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        match self.take(key) {
            Some(value) => deserialize(src, value, problems),
            None => {
                let e = toml::de::Error::missing_field(key);
                problems.push(src.problem(Some(self.start..self.start), e.message(), FIX));
                None
            }
        }
    }

    /// A key with a default.
    fn defaulted<T: DeserializeOwned>(
        &mut self,
        src: &SourceText,
        key: &str,
        default: impl FnOnce() -> T,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        match self.take(key) {
            Some(value) => deserialize(src, value, problems),
            None => Some(default()),
        }
    }

    /// A table that may be left out.
    fn optional<T: DeserializeOwned>(
        &mut self,
        src: &SourceText,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Section<T> {
        match self.take(key) {
            None => Section::Absent,
            Some(value) => match deserialize(src, value, problems) {
                Some(v) => Section::Read(v),
                None => Section::Broken,
            },
        }
    }

    /// Every entry of an array of tables (`[[device]]`) that can be read,
    /// each on its own.
    fn tables<T: DeserializeOwned>(
        &mut self,
        src: &SourceText,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Vec<T> {
        let Some(value) = self.take(key) else {
            return Vec::new();
        };
        if !matches!(value.get_ref(), DeValue::Array(_)) {
            // Not a list of tables: serde says what it expected.
            return deserialize(src, value, problems).unwrap_or_default();
        }
        let DeValue::Array(entries) = value.into_inner() else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter_map(|entry| deserialize(src, entry, problems))
            .collect()
    }

    /// Keys the config does not know.
    fn unknown(self, src: &SourceText, problems: &mut Vec<Problem>) {
        for (key, _) in self.entries {
            let e = toml::de::Error::unknown_field(key.get_ref(), KEYS);
            problems.push(src.problem(Some(key.span()), e.message(), FIX));
        }
    }
}

fn deserialize<T: DeserializeOwned>(
    src: &SourceText,
    value: Spanned<DeValue<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| problems.push(src.parse_problem(&e, FIX)))
        .ok()
}

/// Reads the file's sections, each on its own; `None` after a TOML syntax
/// error.
pub(super) fn read(src: &SourceText, problems: &mut Vec<Problem>) -> Option<RawConfig> {
    let root = match DeTable::parse(src.text) {
        Ok(root) => root,
        Err(e) => {
            problems.push(src.parse_problem(&e, FIX));
            return None;
        }
    };
    let mut doc = Document {
        start: root.span().start,
        entries: root.into_inner().into_iter().collect(),
    };
    let raw = RawConfig {
        gateway_id: doc.required(src, "gateway_id", problems),
        site_id: doc.required(src, "site_id", problems),
        profile_dirs: doc.defaulted(src, "profile_dirs", default_profile_dirs, problems),
        upstream: doc.required(src, "upstream", problems),
        buffer: doc.defaulted(src, "buffer", RawBuffer::default, problems),
        devices: doc.tables(src, "device", problems),
        lan: doc.optional(src, "lan", problems),
        status: doc.optional(src, "status", problems),
        identity: doc.optional(src, "identity", problems),
        stations: doc.tables(src, "station", problems),
    };
    doc.unknown(src, problems);
    Some(raw)
}
