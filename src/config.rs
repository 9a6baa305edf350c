//! The gateway's configuration file: parsing and validation.
//!
//! `RawConfig` mirrors the TOML (with spans, for line numbers); `load`
//! turns it into a validated [`Config`] or the full list of problems, each
//! with file, line and a fix. A commented example is `systemd/fitedge.toml`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::problem::{Problem, SourceText};
use crate::source::usb::UsbId;

pub const DEFAULT_PATH: &str = "/etc/fitedge/fitedge.toml";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway_id: String,
    pub site_id: String,
    /// Directories searched for `<profile>.toml`, first match wins.
    pub profile_dirs: Vec<PathBuf>,
    pub upstream: Upstream,
    pub buffer: Buffer,
    pub devices: Vec<Device>,
    /// How LAN MQTT devices reach the gateway, when any do.
    pub lan: Option<Lan>,
    /// Where the status endpoint (`fitedge status`, `/metrics`) listens.
    pub status_listen: Option<std::net::SocketAddr>,
}

/// The status endpoint's default address: localhost only.
pub const DEFAULT_STATUS: &str = "127.0.0.1:9717";

/// The gateway's MQTT side facing the site's LAN devices.
#[derive(Debug, Clone)]
pub enum Lan {
    /// An MQTT broker inside the gateway (rumqttd).
    Embedded(EmbeddedLan),
    /// Subscribe to a broker the site already runs (manual acknowledgements:
    /// a message is acknowledged only once its record is durable).
    Subscribe(SubscribeLan),
}

#[derive(Debug, Clone)]
pub struct EmbeddedLan {
    pub listen: Vec<std::net::SocketAddr>,
    /// Username -> password, from `users_file`.
    pub users: std::collections::HashMap<String, String>,
    pub max_connections: usize,
    pub max_payload_bytes: usize,
    pub max_inflight: usize,
}

#[derive(Debug, Clone)]
pub struct SubscribeLan {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    /// Read from `password_file` at load time; never written in the config.
    pub password: Option<String>,
    pub topic_prefix: String,
    /// Records published but not yet acknowledged, at most.
    pub inflight_window: u16,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Backlog records published per second at most, beside live ones.
    pub backlog_per_second: u32,
    /// Connected with records waiting but no PUBACK for this long: the
    /// gateway counts as stalled and stops feeding systemd's watchdog.
    pub stall: Duration,
}

#[derive(Debug, Clone)]
pub struct Buffer {
    pub dir: PathBuf,
    /// Ring slots: how many unacknowledged records the outbox holds.
    pub max_records: u64,
    /// A record larger than this is refused.
    pub max_record_bytes: usize,
    pub full_policy: FullPolicy,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Unacknowledged bytes kept at most (then `full_policy` applies).
    pub max_bytes: Option<u64>,
    /// Unacknowledged records older than this are dropped and counted.
    pub max_age: Option<Duration>,
    /// How long the writer gathers records before one durable write; a
    /// power cut can lose at most the frames received in this window.
    pub flush_window: Duration,
}

/// What the outbox does with a new record when every slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Overwrite the oldest unacknowledged record (counted and logged).
    DropOldest,
    /// Keep the backlog; the new record is refused (counted and logged).
    RefuseNewest,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub profile: String,
    pub transport: DeviceTransport,
}

#[derive(Debug, Clone)]
pub enum DeviceTransport {
    Serial(SerialSettings),
    Mqtt(MqttSettings),
    Ble(BleSettings),
}

/// A Bluetooth LE peripheral.
#[derive(Debug, Clone, PartialEq)]
pub struct BleSettings {
    /// The peripheral's address; without it the profile's `[match]`
    /// filters pick the first matching peripheral not taken by another
    /// device.
    pub address: Option<String>,
}

/// A device publishing on the LAN broker.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// Topic filter; defaults to the profile's `[match] mqtt_topic`.
    pub topic: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    pub port: PortRef,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// Which serial port: a path, or a USB adapter found by its ids.
#[derive(Debug, Clone, PartialEq)]
pub enum PortRef {
    Path(PathBuf),
    Usb(UsbId),
}

impl PortRef {
    /// The port's path now, if it can be found.
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            PortRef::Path(p) => Some(p.clone()),
            PortRef::Usb(id) => crate::source::usb::find(Path::new("/sys"), Path::new("/dev"), id),
        }
    }
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Path(p) => write!(f, "{}", p.display()),
            PortRef::Usb(id) => write!(f, "usb {id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Odd,
    Even,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    gateway_id: Spanned<String>,
    site_id: Spanned<String>,
    #[serde(default = "default_profile_dirs")]
    profile_dirs: Vec<Spanned<String>>,
    upstream: RawUpstream,
    #[serde(default)]
    buffer: RawBuffer,
    #[serde(default, rename = "device")]
    devices: Vec<RawDevice>,
    #[serde(default)]
    lan: Option<Spanned<RawLan>>,
    #[serde(default)]
    status: Option<Spanned<RawStatus>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[serde(default = "default_status")]
    listen: String,
    #[serde(default = "yes")]
    enabled: bool,
}

fn default_status() -> String {
    DEFAULT_STATUS.to_string()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLan {
    #[serde(rename = "type")]
    kind: LanKind,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    users_file: Option<String>,
    #[serde(default)]
    allow_anonymous: bool,
    #[serde(default = "lan_connections")]
    max_connections: usize,
    #[serde(default = "lan_payload")]
    max_payload_bytes: usize,
    #[serde(default = "lan_inflight")]
    max_inflight: usize,
    #[serde(default)]
    host: Option<String>,
    #[serde(default = "lan_port")]
    port: u16,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum LanKind {
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
struct RawUpstream {
    host: Spanned<String>,
    #[serde(default = "default_port")]
    port: Spanned<u16>,
    client_id: Option<Spanned<String>>,
    #[serde(default = "default_keep_alive")]
    keep_alive_seconds: Spanned<u64>,
    username: Option<String>,
    password_file: Option<Spanned<String>>,
    #[serde(default = "default_prefix")]
    topic_prefix: Spanned<String>,
    #[serde(default = "default_window")]
    inflight_window: Spanned<u16>,
    #[serde(default = "default_reconnect_min")]
    reconnect_min_ms: Spanned<u64>,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_seconds: Spanned<u64>,
    #[serde(default = "default_backlog_rate")]
    backlog_per_second: Spanned<u32>,
    #[serde(default = "default_stall")]
    stall_seconds: Spanned<u64>,
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
struct RawBuffer {
    dir: Spanned<String>,
    max_records: Spanned<u64>,
    max_record_bytes: Spanned<usize>,
    full_policy: FullPolicy,
    cache_bytes: Spanned<u64>,
    max_bytes: Option<Spanned<u64>>,
    max_age_hours: Option<Spanned<u64>>,
    flush_window_ms: Spanned<u64>,
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
struct RawDevice {
    id: Spanned<String>,
    profile: Spanned<String>,
    transport: RawTransport,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransport {
    #[serde(rename = "type")]
    kind: TransportKind,
    #[serde(default)]
    port: Option<Spanned<String>>,
    /// USB adapter `VID:PID[:SERIAL]`, instead of `port`.
    #[serde(default)]
    usb: Option<Spanned<String>>,
    /// MQTT devices: topic filter, instead of the profile's.
    #[serde(default)]
    topic: Option<Spanned<String>>,
    /// BLE devices: the peripheral's address.
    #[serde(default)]
    address: Option<Spanned<String>>,
    #[serde(default = "default_baud")]
    baud: Spanned<u32>,
    #[serde(default = "default_parity")]
    parity: Parity,
    #[serde(default = "default_data_bits")]
    data_bits: Spanned<u8>,
    #[serde(default = "default_stop_bits")]
    stop_bits: Spanned<u8>,
}

/// Transports a device can use; each has its own keys.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum TransportKind {
    Serial,
    Mqtt,
    Ble,
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

// ---- loading and validation ---------------------------------------------

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read the config file: {e}"),
            fix: format!("create it (an example is systemd/fitedge.toml) or pass --config PATH; default is {DEFAULT_PATH}"),
        }]
    })?;
    parse(path, &text)
}

/// Parses and validates config text; `path` is used in messages and to
/// resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Problem>> {
    let src = SourceText { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        vec![src.parse_problem(&e, "see the commented example in systemd/fitedge.toml")]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    let config = validate(&src, base, raw, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    let r = s.span();
    (r.end > 0).then_some(r)
}

/// Ids end up in MQTT topics: no wildcards, separators or spaces.
fn check_id(src: &SourceText, what: &str, value: &Spanned<String>, problems: &mut Vec<Problem>) {
    let v = value.get_ref();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        problems.push(src.problem(
            span(value),
            format!("{what} \"{v}\" is not a valid id"),
            "use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'",
        ));
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn validate(src: &SourceText, base: &Path, raw: RawConfig, problems: &mut Vec<Problem>) -> Config {
    check_id(src, "gateway_id", &raw.gateway_id, problems);
    check_id(src, "site_id", &raw.site_id, problems);
    let up = raw.upstream;
    if up.host.get_ref().trim().is_empty() {
        problems.push(src.problem(
            span(&up.host),
            "upstream host is empty",
            "set the platform broker's host name or address",
        ));
    }
    if *up.port.get_ref() == 0 {
        problems.push(src.problem(
            span(&up.port),
            "upstream port 0 is not a port",
            "use the broker's port, usually 1883 or 8883",
        ));
    }
    let keep_alive = *up.keep_alive_seconds.get_ref();
    if !(5..=3600).contains(&keep_alive) {
        problems.push(src.problem(
            span(&up.keep_alive_seconds),
            format!("keep_alive_seconds = {keep_alive} is outside 5..=3600"),
            "30 suits mobile uplinks",
        ));
    }
    let prefix = up.topic_prefix.get_ref();
    if prefix.is_empty()
        || prefix.contains(['+', '#'])
        || prefix.starts_with('/')
        || prefix.ends_with('/')
    {
        problems.push(src.problem(
            span(&up.topic_prefix),
            format!("topic_prefix \"{prefix}\" is not usable in a topic"),
            "use levels separated by '/', without '+', '#' or a leading/trailing '/'",
        ));
    }
    let window = *up.inflight_window.get_ref();
    if !(1..=1000).contains(&window) {
        problems.push(src.problem(
            span(&up.inflight_window),
            format!("inflight_window = {window} is outside 1..=1000"),
            "100 is a good default",
        ));
    }
    let min_ms = *up.reconnect_min_ms.get_ref();
    let max_s = *up.reconnect_max_seconds.get_ref();
    if min_ms == 0 || max_s == 0 || min_ms > max_s * 1000 {
        problems.push(src.problem(
            span(&up.reconnect_min_ms),
            format!("reconnect backoff {min_ms} ms .. {max_s} s is not a range"),
            "set 0 < reconnect_min_ms <= reconnect_max_seconds * 1000",
        ));
    }
    if *up.stall_seconds.get_ref() < 5 {
        problems.push(src.problem(
            span(&up.stall_seconds),
            format!("stall_seconds = {} is under 5", up.stall_seconds.get_ref()),
            "a broker may take a few seconds to acknowledge; 300 is the default",
        ));
    }
    if *up.backlog_per_second.get_ref() == 0 {
        problems.push(src.problem(
            span(&up.backlog_per_second),
            "backlog_per_second = 0 would never drain a backlog",
            "100 drains a week of a busy station in hours without flooding the platform",
        ));
    }
    let password = up.password_file.as_ref().and_then(|file| {
        let path = match expand_env(file.get_ref()) {
            Ok(expanded) => resolve(base, &expanded),
            Err(name) => {
                problems.push(src.problem(span(file), format!("password_file names ${{{name}}}, which is not set"), "run under the systemd unit (it provides CREDENTIALS_DIRECTORY) or give a plain path"));
                return None;
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(p) => Some(p.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => {
                problems.push(src.problem(
                    span(file),
                    format!("cannot read password_file {}: {e}", path.display()),
                    "create the file (mode 0600) holding only the password, or remove password_file",
                ));
                None
            }
        }
    });
    let client_id = match &up.client_id {
        Some(id) => {
            check_id(src, "client_id", id, problems);
            id.get_ref().clone()
        }
        None => format!("fitedge-{}", raw.gateway_id.get_ref()),
    };

    let b = raw.buffer;
    let max_records = *b.max_records.get_ref();
    if !(16..=100_000_000).contains(&max_records) {
        problems.push(src.problem(
            span(&b.max_records),
            format!("buffer max_records = {max_records} is outside 16..=100000000"),
            "size it for a week of readings; 200000 is the default",
        ));
    }
    let max_record_bytes = *b.max_record_bytes.get_ref();
    if !(512..=1024 * 1024).contains(&max_record_bytes) {
        problems.push(src.problem(
            span(&b.max_record_bytes),
            format!("buffer max_record_bytes = {max_record_bytes} is outside 512..=1048576"),
            "16384 is the default",
        ));
    }
    let cache_bytes = *b.cache_bytes.get_ref();
    if !(1024 * 1024..=1024 * 1024 * 1024).contains(&cache_bytes) {
        problems.push(src.problem(
            span(&b.cache_bytes),
            format!("buffer cache_bytes = {cache_bytes} is outside 1 MiB..=1 GiB"),
            "8388608 (8 MiB) suits a 512 MB box",
        ));
    }

    if let Some(max_bytes) = &b.max_bytes {
        if *max_bytes.get_ref() < 64 * 1024 {
            problems.push(src.problem(
                span(max_bytes),
                format!("buffer max_bytes = {} is under 64 KiB", max_bytes.get_ref()),
                "size it for the backlog of a long outage, e.g. 268435456 (256 MiB)",
            ));
        }
    }
    if let Some(hours) = &b.max_age_hours {
        if *hours.get_ref() == 0 {
            problems.push(src.problem(
                span(hours),
                "buffer max_age_hours = 0 would drop every record",
                "remove it to keep records until delivered, or set the hours",
            ));
        }
    }
    let flush_window_ms = *b.flush_window_ms.get_ref();
    if flush_window_ms > 10_000 {
        problems.push(src.problem(
            span(&b.flush_window_ms),
            format!("buffer flush_window_ms = {flush_window_ms} is over 10 s"),
            "a power cut loses up to this window of readings; 0-1000 ms is usual",
        ));
    }

    let mut seen = HashSet::new();
    let mut devices = Vec::new();
    for d in raw.devices {
        check_id(src, "device id", &d.id, problems);
        if !seen.insert(d.id.get_ref().clone()) {
            problems.push(src.problem(
                span(&d.id),
                format!("device id \"{}\" is used twice", d.id.get_ref()),
                "give every [[device]] its own id",
            ));
        }
        if d.transport.address.is_some() && !matches!(d.transport.kind, TransportKind::Ble) {
            problems.push(src.problem(
                d.transport.address.as_ref().and_then(span),
                format!(
                    "device \"{}\": address applies to ble devices only",
                    d.id.get_ref()
                ),
                "remove address, or set type = \"ble\"",
            ));
        }
        let transport = match d.transport.kind {
            TransportKind::Ble => {
                if d.transport.port.is_some()
                    || d.transport.usb.is_some()
                    || d.transport.topic.is_some()
                {
                    problems.push(src.problem(
                        span(&d.id),
                        format!(
                            "device \"{}\" is a ble device but has a port, usb or topic",
                            d.id.get_ref()
                        ),
                        "a ble device takes only address (or none: the profile's [match] picks it)",
                    ));
                }
                if let Some(address) = &d.transport.address {
                    if !valid_ble_address(address.get_ref()) {
                        problems.push(src.problem(
                            span(address),
                            format!("address \"{}\" is not a Bluetooth address", address.get_ref()),
                            "write six hex pairs with colons, e.g. \"C0:11:22:33:44:01\" (fitedge scan lists them)",
                        ));
                    }
                }
                DeviceTransport::Ble(BleSettings {
                    address: d.transport.address.map(|a| a.into_inner().to_uppercase()),
                })
            }
            TransportKind::Mqtt => {
                if d.transport.port.is_some() || d.transport.usb.is_some() {
                    problems.push(src.problem(
                        span(&d.id),
                        format!(
                            "device \"{}\" is an mqtt device but has a serial port or usb",
                            d.id.get_ref()
                        ),
                        "remove port/usb, or set type = \"serial\"",
                    ));
                }
                if raw.lan.is_none() {
                    problems.push(src.problem(span(&d.id), format!("device \"{}\" uses MQTT but the config has no [lan] section", d.id.get_ref()), "add [lan] with type = \"embedded\" (a broker in the gateway) or type = \"subscribe\" (the site's broker)"));
                }
                if let Some(topic) = &d.transport.topic {
                    if !valid_filter(topic.get_ref()) {
                        problems.push(src.problem(
                            span(topic),
                            format!("topic \"{}\" is not an MQTT topic filter", topic.get_ref()),
                            "'+' stands for one whole level, '#' only as the last level",
                        ));
                    }
                }
                DeviceTransport::Mqtt(MqttSettings {
                    topic: d.transport.topic.map(Spanned::into_inner),
                })
            }
            TransportKind::Serial => {
                let RawTransport {
                    port,
                    usb,
                    baud,
                    parity,
                    data_bits,
                    stop_bits,
                    ..
                } = d.transport;
                let port = match (port, usb) {
                    (Some(port), None) => {
                        if port.get_ref().is_empty() {
                            problems.push(src.problem(
                                span(&port),
                                "serial port path is empty",
                                "use a stable path such as /dev/serial/by-id/usb-...",
                            ));
                        }
                        PortRef::Path(PathBuf::from(port.into_inner()))
                    }
                    (None, Some(usb)) => match crate::profile::parse_usb(usb.get_ref()) {
                        Some((vid, pid, serial)) => PortRef::Usb(UsbId { vid, pid, serial }),
                        None => {
                            problems.push(src.problem(
                                span(&usb),
                                format!("usb \"{}\" is not VID:PID[:SERIAL]", usb.get_ref()),
                                "write the ids as 4 hex digits each, e.g. \"1a86:7523\" (fitedge scan lists them)",
                            ));
                            PortRef::Path(PathBuf::new())
                        }
                    },
                    (port, usb) => {
                        let at = port
                            .as_ref()
                            .and_then(span)
                            .or_else(|| usb.as_ref().and_then(span));
                        problems.push(src.problem(
                            at.or_else(|| span(&d.id)),
                            format!(
                                "device \"{}\" needs exactly one of port or usb",
                                d.id.get_ref()
                            ),
                            "port = \"/dev/serial/by-id/...\" or usb = \"VID:PID[:SERIAL]\"",
                        ));
                        PortRef::Path(PathBuf::new())
                    }
                };
                if !(50..=4_000_000).contains(baud.get_ref()) {
                    problems.push(src.problem(
                        span(&baud),
                        format!("baud {} is not a serial speed", baud.get_ref()),
                        "use the instrument's speed, e.g. 9600 or 115200",
                    ));
                }
                if !(5..=8).contains(data_bits.get_ref()) {
                    problems.push(src.problem(
                        span(&data_bits),
                        format!("data_bits {} is outside 5..=8", data_bits.get_ref()),
                        "most instruments use 8",
                    ));
                }
                if !(1..=2).contains(stop_bits.get_ref()) {
                    problems.push(src.problem(
                        span(&stop_bits),
                        format!("stop_bits {} is not 1 or 2", stop_bits.get_ref()),
                        "most instruments use 1",
                    ));
                }
                DeviceTransport::Serial(SerialSettings {
                    port,
                    baud: baud.into_inner(),
                    parity,
                    data_bits: data_bits.into_inner(),
                    stop_bits: stop_bits.into_inner(),
                })
            }
        };
        devices.push(Device {
            id: d.id.into_inner(),
            profile: d.profile.into_inner(),
            transport,
        });
    }

    let lan = raw
        .lan
        .as_ref()
        .map(|lan| validate_lan(src, base, lan, raw.gateway_id.get_ref(), problems));
    let status_listen = match &raw.status {
        None => DEFAULT_STATUS.parse().ok(),
        Some(s) if !s.get_ref().enabled => None,
        Some(s) => match s.get_ref().listen.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(src.problem(
                    Some(src.key_span(s.span(), "listen")),
                    format!("status listen \"{}\" is not IP:PORT", s.get_ref().listen),
                    "keep it on localhost, e.g. \"127.0.0.1:9717\"",
                ));
                None
            }
        },
    };
    Config {
        lan,
        status_listen,
        gateway_id: raw.gateway_id.into_inner(),
        site_id: raw.site_id.into_inner(),
        profile_dirs: raw
            .profile_dirs
            .iter()
            .map(|d| resolve(base, d.get_ref()))
            .collect(),
        upstream: Upstream {
            host: up.host.into_inner(),
            port: up.port.into_inner(),
            client_id,
            keep_alive: Duration::from_secs(keep_alive),
            username: up.username,
            password,
            topic_prefix: up.topic_prefix.into_inner(),
            inflight_window: window,
            reconnect_min: Duration::from_millis(min_ms),
            reconnect_max: Duration::from_secs(max_s),
            backlog_per_second: up.backlog_per_second.into_inner(),
            stall: Duration::from_secs(*up.stall_seconds.get_ref()),
        },
        buffer: Buffer {
            dir: resolve(base, b.dir.get_ref()),
            max_records,
            max_record_bytes,
            full_policy: b.full_policy,
            cache_bytes,
            max_bytes: b.max_bytes.map(Spanned::into_inner),
            max_age: b
                .max_age_hours
                .map(|h| Duration::from_secs(h.into_inner() * 3600)),
            flush_window: Duration::from_millis(flush_window_ms),
        },
        devices,
    }
}

impl Device {
    /// The MQTT topic filter of an MQTT device, when the config sets one.
    pub fn transport_topic(&self) -> Option<&str> {
        match &self.transport {
            DeviceTransport::Mqtt(m) => m.topic.as_deref(),
            DeviceTransport::Serial(_) | DeviceTransport::Ble(_) => None,
        }
    }
}

/// `AA:BB:CC:DD:EE:FF`.
fn valid_ble_address(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Expands `${NAME}` from the environment (systemd's `CREDENTIALS_DIRECTORY`
/// for service credentials); the name of a missing variable is the error.
fn expand_env(text: &str) -> Result<String, String> {
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

/// Whether `filter` is a valid MQTT topic filter.
pub fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, level)| {
            (!level.contains('#') || (*level == "#" && i + 1 == levels.len()))
                && (!level.contains('+') || *level == "+")
        })
}

fn validate_lan(
    src: &SourceText,
    base: &Path,
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
            let mut users = std::collections::HashMap::new();
            match &l.users_file {
                Some(file) => {
                    let path = resolve(base, file);
                    match std::fs::read_to_string(&path) {
                        Ok(text) => {
                            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
                                match line.split_once(':') {
                                    Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                                        users.insert(user.trim().to_string(), password.trim().to_string());
                                    }
                                    _ => problems.push(Problem { file: path.clone(), line: Some(n + 1), message: "not a user:password line".into(), fix: "one device account a line, as username:password".into() }),
                                }
                            }
                        }
                        Err(e) => problems.push(src.problem(at("users_file"), format!("cannot read users_file {}: {e}", path.display()), "create it (mode 0600) with username:password lines")),
                    }
                }
                None if !l.allow_anonymous => problems.push(src.problem(at("type"), "the LAN broker has no users_file", "give each device an account in users_file, or set allow_anonymous = true on a closed network")),
                None => {}
            }
            if !(1..=10_000).contains(&l.max_connections)
                || !(64..=16 * 1024 * 1024).contains(&l.max_payload_bytes)
                || !(1..=10_000).contains(&l.max_inflight)
            {
                problems.push(src.problem(at("max_connections"), "lan limits out of range", "max_connections 1..=10000, max_payload_bytes 64..=16777216, max_inflight 1..=10000"));
            }
            Lan::Embedded(EmbeddedLan {
                listen,
                users,
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
            let password = l.password_file.as_ref().and_then(|file| {
                let path = resolve(base, file);
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        problems.push(src.problem(
                            at("password_file"),
                            format!("cannot read password_file {}: {e}", path.display()),
                            "create the file holding only the password",
                        ))
                    })
                    .ok()
                    .map(|p| p.trim_end_matches(['\r', '\n']).to_string())
            });
            Lan::Subscribe(SubscribeLan {
                host,
                port: l.port,
                client_id: l
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("fitedge-lan-{gateway_id}")),
                username: l.username.clone(),
                password,
            })
        }
    }
}

/// The line of `[[device]]` entry `id` in the config text, for messages
/// about a device found after parsing (e.g. its profile is broken).
pub fn device_line(text: &str, id: &str) -> Option<usize> {
    let needle = format!("\"{id}\"");
    text.lines()
        .position(|l| l.trim_start().starts_with("id") && l.contains(&needle))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
gateway_id = "gw-01"
site_id = "site-a"
profile_dirs = ["profiles"]

[upstream]
host = "127.0.0.1"
port = 1883

[buffer]
dir = "buf"
max_records = 1000

[[device]]
id = "station-1"
profile = "height-weight-kv-line"
[device.transport]
type = "serial"
port = "/dev/ttyUSB0"
baud = 9600
parity = "even"
"#;

    fn parse_str(text: &str) -> Result<Config, Vec<Problem>> {
        parse(Path::new("/etc/fitedge/fitedge.toml"), text)
    }

    #[test]
    fn parses_a_good_config_with_defaults() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.gateway_id, "gw-01");
        assert_eq!(c.upstream.client_id, "fitedge-gw-01");
        assert_eq!(c.upstream.keep_alive, Duration::from_secs(30));
        assert_eq!(c.upstream.topic_prefix, "fitedge");
        assert_eq!(c.buffer.dir, PathBuf::from("/etc/fitedge/buf"));
        assert_eq!(c.profile_dirs, vec![PathBuf::from("/etc/fitedge/profiles")]);
        assert_eq!(c.buffer.full_policy, FullPolicy::DropOldest);
        let DeviceTransport::Serial(s) = &c.devices[0].transport else {
            panic!("serial")
        };
        assert_eq!(s.parity, Parity::Even);
        assert_eq!(s.port, PortRef::Path(PathBuf::from("/dev/ttyUSB0")));
    }

    #[test]
    fn unknown_key_is_reported_at_its_line() {
        let text = GOOD.replace("port = 1883", "port = 1883\nkeepalive = 30");
        let problems = parse_str(&text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(9), "{}", problems[0]);
        assert!(problems[0].message.contains("keepalive"), "{}", problems[0]);
    }

    #[test]
    fn wrong_type_is_reported_at_its_line() {
        let text = GOOD.replace("baud = 9600", "baud = \"fast\"");
        let problems = parse_str(&text).unwrap_err();
        assert_eq!(problems[0].line, Some(20), "{}", problems[0]);
    }

    #[test]
    fn every_semantic_problem_is_collected_with_its_line() {
        let text = GOOD
            .replace("gateway_id = \"gw-01\"", "gateway_id = \"gw/01\"")
            .replace("port = 1883", "port = 1883\nkeep_alive_seconds = 0")
            .replace("baud = 9600", "baud = 7");
        let problems = parse_str(&text).unwrap_err();
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(2), Some(9), Some(21)], "{problems:?}");
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
    }

    #[test]
    fn duplicate_device_ids_are_refused() {
        let dup = format!("{GOOD}\n[[device]]\nid = \"station-1\"\nprofile = \"x\"\ntransport = {{ type = \"serial\", port = \"/dev/ttyUSB1\" }}\n");
        let problems = parse_str(&dup).unwrap_err();
        assert!(problems[0].message.contains("used twice"), "{problems:?}");
        assert_eq!(problems[0].line, Some(24));
    }

    #[test]
    fn missing_password_file_is_a_problem() {
        let text = GOOD.replace(
            "port = 1883",
            "port = 1883\npassword_file = \"/nonexistent/pw\"",
        );
        let problems = parse_str(&text).unwrap_err();
        assert!(
            problems[0].message.contains("password_file"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_usb_adapter_can_stand_for_the_port() {
        let text = GOOD.replace("port = \"/dev/ttyUSB0\"", "usb = \"1a86:7523:ABC\"");
        let c = parse_str(&text).unwrap();
        let DeviceTransport::Serial(s) = &c.devices[0].transport else {
            panic!("serial")
        };
        assert_eq!(
            s.port,
            PortRef::Usb(UsbId {
                vid: 0x1a86,
                pid: 0x7523,
                serial: Some("ABC".into())
            })
        );
        assert_eq!(s.port.to_string(), "usb 1a86:7523:ABC");
        let both = GOOD.replace(
            "port = \"/dev/ttyUSB0\"",
            "port = \"/dev/ttyUSB0\"\nusb = \"1a86:7523\"",
        );
        assert!(parse_str(&both).unwrap_err()[0]
            .message
            .contains("exactly one of port or usb"));
        let bad = GOOD.replace("port = \"/dev/ttyUSB0\"", "usb = \"ch340\"");
        assert!(parse_str(&bad).unwrap_err()[0]
            .message
            .contains("not VID:PID"));
    }

    #[test]
    fn mqtt_devices_need_a_lan_section_and_valid_accounts() {
        let mqtt = "\n[[device]]\nid = \"hub-1\"\nprofile = \"heart-rate-band-hub-json\"\n[device.transport]\ntype = \"mqtt\"\ntopic = \"hub/+/hr\"\n";
        let without = format!("{GOOD}{mqtt}");
        assert!(parse_str(&without).unwrap_err()[0]
            .message
            .contains("no [lan] section"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("users"),
            "# accounts\nhub-1:secret\nbroken-line\n",
        )
        .unwrap();
        let lan = format!(
            "\n[lan]\ntype = \"embedded\"\nlisten = [\"127.0.0.1:1884\"]\nusers_file = \"{}\"\n",
            dir.path().join("users").display()
        );
        let text = GOOD.replace("[upstream]", &format!("{lan}\n[upstream]"));
        let problems = parse_str(&format!("{text}{mqtt}")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            (problems[0].line, problems[0].message.as_str()),
            (Some(3), "not a user:password line")
        );
        std::fs::write(dir.path().join("users"), "hub-1:secret\n").unwrap();
        let c = parse_str(&format!("{text}{mqtt}")).unwrap();
        let Some(Lan::Embedded(e)) = &c.lan else {
            panic!("embedded")
        };
        assert_eq!(e.users["hub-1"], "secret");
        assert_eq!(c.devices[1].transport_topic(), Some("hub/+/hr"));
        let bad_topic = format!("{text}{}", mqtt.replace("hub/+/hr", "hub/#/hr"));
        assert!(parse_str(&bad_topic).unwrap_err()[0]
            .message
            .contains("not an MQTT topic filter"));
    }

    #[test]
    fn environment_names_in_paths_are_expanded() {
        std::env::set_var("FITEDGE_TEST_CREDS", "/run/credentials/fitedge.service");
        assert_eq!(
            expand_env("${FITEDGE_TEST_CREDS}/upstream-password").unwrap(),
            "/run/credentials/fitedge.service/upstream-password"
        );
        assert_eq!(expand_env("/plain/path").unwrap(), "/plain/path");
        assert_eq!(
            expand_env("${FITEDGE_NOT_SET_ANYWHERE}/x").unwrap_err(),
            "FITEDGE_NOT_SET_ANYWHERE"
        );
    }

    #[test]
    fn device_line_finds_the_entry() {
        assert_eq!(device_line(GOOD, "station-1"), Some(15));
    }
}
