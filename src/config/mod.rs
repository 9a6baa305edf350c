//! The gateway's configuration file: parsing and validation.
//!
//! A file goes through four stages, each collecting into one problem list
//! (every problem with file, line and a fix), so one `fitedge check` run
//! shows all of them:
//!
//! 1. [`raw`]: the TOML is parsed and each section deserialized on its own
//!    into a spanned mirror; only a syntax error stops here.
//! 2. One check per section ([`upstream`], [`buffer`], [`device`], [`lan`],
//!    [`status`]) turns what could be read into the validated types.
//! 3. [`environment`]: the files the config names (passwords, LAN users)
//!    are read, with `${NAME}` expanded where the config allows it.
//! 4. [`profiles`]: each device's profile is found and checked against its
//!    transport ([`load_with_profiles`]).
//!
//! Problems of the config file are listed in its line order. A commented
//! example is `systemd/fitedge.toml`.

mod buffer;
mod device;
mod environment;
mod lan;
mod profiles;
mod raw;
mod station;
mod status;
mod tls;
mod upstream;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::problem::{Problem, SourceText};
use crate::usb::UsbId;

pub use profiles::{check_profiles, find_profiles, load_with_profiles};

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
    /// The status endpoint (`fitedge status`, `/metrics`), when enabled.
    pub status: Option<StatusEndpoint>,
    /// The keys that turn subject ids into pseudonyms, from `[identity]`.
    pub identity: Option<std::sync::Arc<crate::identity::Keyring>>,
    /// Devices grouped with the readers that say who is measured.
    pub stations: Vec<Station>,
    /// What is worth saying but does not stop the gateway (a certificate
    /// that expires soon); `fitedge check` prints them, the daemon logs them.
    pub warnings: Vec<Problem>,
}

/// A `[[station]]`: devices, and the readers whose scans open sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    pub id: String,
    pub devices: Vec<String>,
    pub readers: Vec<String>,
    /// Readers of operator cards: who runs the station.
    pub operators: Vec<String>,
    /// A session with nothing new for this long closes.
    pub idle_timeout: Duration,
}

/// The status endpoint's default address: localhost only.
pub const DEFAULT_STATUS: &str = "127.0.0.1:9717";

/// `[status]`: where the status endpoint listens and the password it asks
/// for (from `password_file`; required when it listens off loopback).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusEndpoint {
    pub listen: std::net::SocketAddr,
    pub password: Option<String>,
}

impl StatusEndpoint {
    /// The default: localhost, no password.
    pub fn local() -> StatusEndpoint {
        StatusEndpoint {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9717)),
            password: None,
        }
    }
}

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
    /// Connections one account, and one source address, may hold at once.
    pub max_per_account: usize,
    pub max_per_address: usize,
    /// TLS listeners, served with `tls`.
    pub tls_listen: Vec<std::net::SocketAddr>,
    pub tls: Option<crate::tls::ServerTls>,
}

#[derive(Debug, Clone)]
pub struct SubscribeLan {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<crate::tls::ClientTls>,
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
    /// `[upstream.tls]`: MQTT over TLS, read in the environment stage.
    pub tls: Option<crate::tls::ClientTls>,
    /// What the records are published as.
    pub format: PayloadFormat,
}

/// `[upstream] format`: the payload of the records upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// fitedge records as JSON (`docs/mqtt-api.md`, `docs/schema`).
    #[default]
    Json,
    /// HL7 FHIR R4 Observations (`src/uplink/fhir.rs`).
    Fhir,
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
    /// A keyboard-wedge scanner: an evdev input device, grabbed.
    Input(std::path::PathBuf),
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
    /// The embedded broker's account that publishes for the device;
    /// defaults to the device's id.
    pub account: Option<String>,
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
            PortRef::Usb(id) => crate::usb::find(Path::new("/sys"), Path::new("/dev"), id),
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

impl Device {
    /// The MQTT topic filter of an MQTT device, when the config sets one.
    pub fn transport_topic(&self) -> Option<&str> {
        match &self.transport {
            DeviceTransport::Mqtt(m) => m.topic.as_deref(),
            DeviceTransport::Serial(_) | DeviceTransport::Ble(_) | DeviceTransport::Input(_) => {
                None
            }
        }
    }
}

// ---- loading ---------------------------------------------------------------

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = read_file(path)?;
    parse(path, &text)
}

/// The config file's text, or the problem of reading it.
fn read_file(path: &Path) -> Result<String, Vec<Problem>> {
    let problem = |message: String| {
        vec![Problem {
            file: path.to_path_buf(),
            line: None,
            message,
            fix: format!("create it (an example is systemd/fitedge.toml) or pass --config PATH; default is {DEFAULT_PATH}"),
        }]
    };
    let bytes = crate::secret::read_file(path, crate::secret::MAX_FILE_BYTES)
        .map_err(|e| problem(format!("cannot read the config file: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| problem("cannot read the config file: it is not UTF-8 text".into()))
}

/// Parses and validates config text; `path` is used in messages and to
/// resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Problem>> {
    let src = SourceText { path, text };
    let mut problems = Vec::new();
    match draft(&src, &mut problems).and_then(Draft::finish) {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    }
}

/// Every section that could be validated; `None` where a section could not
/// (its problems are recorded).
struct Draft {
    gateway_id: Option<String>,
    site_id: Option<String>,
    profile_dirs: Option<Vec<PathBuf>>,
    upstream: Option<Upstream>,
    buffer: Option<Buffer>,
    /// The devices that could be read, for the profile checks even when
    /// other sections have problems.
    devices: Vec<Device>,
    lan: Option<Option<Lan>>,
    status: Option<Option<StatusEndpoint>>,
    /// `Some(None)` when `[identity]` is absent.
    identity: Option<Option<std::sync::Arc<crate::identity::Keyring>>>,
    stations: Vec<Station>,
    warnings: Vec<Problem>,
}

impl Draft {
    /// The config, when every section could be validated.
    fn finish(self) -> Option<Config> {
        Some(Config {
            gateway_id: self.gateway_id?,
            site_id: self.site_id?,
            profile_dirs: self.profile_dirs?,
            upstream: self.upstream?,
            buffer: self.buffer?,
            devices: self.devices,
            lan: self.lan?,
            status: self.status?,
            identity: self.identity?,
            stations: self.stations,
            warnings: self.warnings,
        })
    }
}

/// Runs the stages up to the environment (all but the profiles); `None`
/// after a TOML syntax error.
fn draft(src: &SourceText, problems: &mut Vec<Problem>) -> Option<Draft> {
    let raw = raw::read(src, problems)?;
    let base = src.path.parent().unwrap_or(Path::new("."));
    let mut draft = check_sections(src, base, &raw, problems);
    environment::apply(src, base, &raw, &mut draft, problems);
    // In the file's order (sections are read in a fixed order, unknown keys
    // in the table's); problems of other files (a users file) come after.
    problems.sort_by_key(|p| (p.file != src.path, p.line));
    Some(draft)
}

fn check_sections(
    src: &SourceText,
    base: &Path,
    raw: &raw::RawConfig,
    problems: &mut Vec<Problem>,
) -> Draft {
    let mut checked_id = |what, id: &Option<Spanned<String>>| {
        id.as_ref().map(|id| {
            check_id(src, what, id, problems);
            id.get_ref().clone()
        })
    };
    let gateway_id = checked_id("gateway_id", &raw.gateway_id);
    let site_id = checked_id("site_id", &raw.site_id);
    let gateway = gateway_id.as_deref().unwrap_or_default();
    let lan_written = !matches!(raw.lan, raw::Section::Absent);
    let devices = device::check_devices(src, &raw.devices, lan_written, problems);
    Draft {
        stations: station::check_stations(src, &raw.stations, &devices, problems),
        devices,
        // Read by the environment stage.
        identity: match raw.identity {
            raw::Section::Absent => Some(None),
            _ => None,
        },
        profile_dirs: raw
            .profile_dirs
            .as_ref()
            .map(|dirs| dirs.iter().map(|d| resolve(base, d.get_ref())).collect()),
        upstream: (raw.upstream.as_ref())
            .map(|up| upstream::check_upstream(src, up, gateway, problems)),
        buffer: (raw.buffer.as_ref()).map(|b| buffer::check_buffer(src, base, b, problems)),
        lan: match &raw.lan {
            raw::Section::Absent => Some(None),
            raw::Section::Broken => None,
            raw::Section::Read(l) => Some(Some(lan::check_lan(src, l, gateway, problems))),
        },
        status: status::check_status(src, &raw.status, problems),
        gateway_id,
        site_id,
        warnings: Vec::new(),
    }
}

// ---- helpers shared by the section checks ----------------------------------

/// The span of a value written in the file; `None` for a default.
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

/// A path from the config, relative to the config file's directory.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
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

/// The line of `[[device]]` entry `id` in the config text, for messages
/// about a device found after parsing (e.g. its profile is broken).
pub fn device_line(text: &str, id: &str) -> Option<usize> {
    let needle = format!("\"{id}\"");
    text.lines()
        .position(|l| l.trim_start().starts_with("id") && l.contains(&needle))
        .map(|i| i + 1)
}
