//! The profile schema: the serde types a profile file deserializes into
//! (`[match]`, `[frame]` by way of [`super::frame`], `[decode]`,
//! `[[field]]`, `[request]`, `[[test]]`) and the validated [`Profile`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::frame::FrameSpec;
use crate::codec::binary::BinType;
use crate::codec::checksum::{ChecksumKind, Endian};
use crate::codec::parse_hex;

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub path: PathBuf,
    pub matcher: Match,
    pub frame: FrameSpec,
    pub decode: DecodeSpec,
    pub fields: Vec<FieldSpec>,
    /// Payloads that mean "not ready" (e.g. `measing`): ignored, not errors.
    pub ignore: Vec<String>,
    /// Payloads that end the open session on the device's station (a
    /// scanner's "END" code, a card reader's card-removed frame).
    pub session_end: Vec<String>,
    pub request: Option<RequestSpec>,
    pub tests: Vec<TestCase>,
}

impl Profile {
    /// Whether frames of this profile can carry who was measured: such
    /// frames are never logged, not even in hex.
    pub fn carries_subject(&self) -> bool {
        self.fields.iter().any(|f| f.role == Role::Subject)
    }
}

/// How a device is recognised (`[match]`): used to suggest a profile for a
/// device found by `fitedge scan` and to pick MQTT and BLE devices.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// USB `VID:PID` or `VID:PID:SERIAL` of the serial adapter.
    #[serde(default)]
    pub usb: Vec<String>,
    /// BLE advertised name (regular expression).
    #[serde(default)]
    pub ble_name: Option<Pattern>,
    /// BLE advertised service UUIDs (16-bit like "180d", or 128-bit).
    #[serde(default)]
    pub ble_services: Vec<String>,
    /// BLE device address.
    #[serde(default)]
    pub ble_address: Option<String>,
    /// BLE fitness machines: the type the machine advertises (FTMS service
    /// data), e.g. "treadmill", to tell machines of one service apart.
    #[serde(default)]
    pub ble_fitness_machine: Option<String>,
    /// MQTT topic filter.
    #[serde(default)]
    pub mqtt_topic: Option<String>,
    /// MQTT: the topic level (0-based) naming the device behind a hub,
    /// e.g. 1 in `hub/band-07/hr`.
    #[serde(default)]
    pub device_topic_level: Option<usize>,
}

/// A request/response device (`[request]`): what to send, how often, and
/// how long to wait for the reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// The command as text (TOML escapes such as \n and \r apply).
    #[serde(default)]
    pub command: Option<String>,
    /// The command as hex.
    #[serde(default)]
    pub hex: Option<String>,
    /// A Modbus RTU read request, built with its CRC.
    #[serde(default)]
    pub modbus: Option<ModbusRequest>,
    /// Time between requests.
    #[serde(default = "every_ms")]
    pub every_ms: u64,
    /// Time to wait for a reply before sending again.
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
    /// Resends before the device counts as not answering.
    #[serde(default = "retries")]
    pub retries: u32,
}

fn every_ms() -> u64 {
    1000
}
fn timeout_ms() -> u64 {
    500
}
fn retries() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRequest {
    pub slave: u8,
    /// 3 (holding registers) or 4 (input registers).
    #[serde(default = "fc3")]
    pub function: u8,
    /// First register, 0-based on the wire (40001 is 0).
    pub start: u16,
    pub count: u16,
}

fn fc3() -> u8 {
    3
}

impl RequestSpec {
    /// The bytes to send.
    pub fn bytes(&self) -> Vec<u8> {
        if let Some(m) = &self.modbus {
            let mut b = vec![m.slave, m.function];
            b.extend(m.start.to_be_bytes());
            b.extend(m.count.to_be_bytes());
            let crc = ChecksumKind::Crc16Modbus.compute(&b);
            b.extend(crc.to_le_bytes());
            return b;
        }
        if let Some(hex) = &self.hex {
            return parse_hex(hex).unwrap_or_default();
        }
        self.command.clone().unwrap_or_default().into_bytes()
    }
}

/// A `[[test]]` case: input bytes and the expected outcome.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub line: usize,
    pub input: Vec<u8>,
    /// The characteristic, for gatt profiles.
    pub characteristic: Option<u16>,
    /// Values notified in turn (gatt profiles; `input` is the first).
    pub packets: Vec<Vec<u8>>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub enum Expect {
    Values {
        values: BTreeMap<String, f64>,
        subject: Option<String>,
        absent: Vec<String>,
        attributes: BTreeMap<String, toml::Value>,
    },
    /// The frame must be rejected with an error containing this text.
    Error(String),
}

/// A `[[test]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTest {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) hex: Option<String>,
    /// The characteristic the value came from (gatt profiles).
    #[serde(default)]
    pub(super) characteristic: Option<String>,
    /// Several values in turn, for records split over packets (gatt).
    #[serde(default)]
    pub(super) packets: Vec<String>,
    #[serde(default)]
    pub(super) values: BTreeMap<String, f64>,
    #[serde(default)]
    pub(super) subject: Option<String>,
    #[serde(default)]
    pub(super) absent: Vec<String>,
    #[serde(default)]
    pub(super) attributes: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub(super) error: Option<String>,
}

/// A profile file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub(super) id: Spanned<String>,
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default, rename = "match")]
    pub(super) matcher: Option<Spanned<Match>>,
    #[serde(default)]
    pub(super) frame: Option<Spanned<FrameSpec>>,
    pub(super) decode: Spanned<DecodeSpec>,
    #[serde(default, rename = "field")]
    pub(super) fields: Vec<Spanned<FieldSpec>>,
    #[serde(default)]
    pub(super) ignore: Vec<String>,
    #[serde(default)]
    pub(super) session_end: Vec<String>,
    #[serde(default)]
    pub(super) request: Option<Spanned<RequestSpec>>,
    #[serde(default, rename = "test")]
    pub(super) tests: Vec<Spanned<RawTest>>,
}

/// How a frame's payload is split into fields, as written in `[decode]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecodeSpec {
    /// `KEY=VALUE` pairs: `ID=S0001;HT=172.5;WT=65.40`. Fields by `key`.
    KeyValue {
        #[serde(default = "default_pair_separator")]
        pair_separator: String,
        #[serde(default = "default_kv_separator")]
        separator: String,
    },
    /// Fields by position: `$VC,S0001,3450,0`. With `tag`, field 0 must
    /// equal it (NMEA-like `$TAG,` sentences). Fields by `index`.
    Csv {
        #[serde(default = "default_csv_separator")]
        separator: String,
        #[serde(default)]
        tag: Option<String>,
    },
    /// A regular expression over the text; fields by capture name (`key`).
    Regex { pattern: Pattern },
    /// Binary fields at byte offsets from the first byte of the frame. Each
    /// `expect` must hold or the frame is not for this profile.
    Binary {
        #[serde(default)]
        expect: Vec<ExpectBytes>,
    },
    /// A JSON document; fields by JSON `pointer`. Each `require` pointer
    /// must hold the given value or the payload is not for this profile.
    Json {
        #[serde(default)]
        require: BTreeMap<String, String>,
    },
    /// A Modbus RTU read response (FC 03/04); fields by `register`, counted
    /// from the first register requested. With `slave`, replies from other
    /// slaves on the bus are not for this profile.
    Modbus {
        #[serde(default)]
        slave: Option<u8>,
    },
    /// Bluetooth LE: the built-in GATT codecs, with options and overrides
    /// (see [`crate::gatt::Spec`]). Takes no `[frame]` and no `[[field]]`.
    Gatt(crate::gatt::Spec),
}

fn default_pair_separator() -> String {
    ";".into()
}
fn default_kv_separator() -> String {
    "=".into()
}
fn default_csv_separator() -> String {
    ",".into()
}

/// A compiled regular expression, written as a string.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("invalid regex: {e}")))
    }
}

/// Bytes a binary frame must have at an offset (a command or type code).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectBytes {
    pub offset: usize,
    #[serde(deserialize_with = "hex_string")]
    pub hex: Vec<u8>,
}

fn hex_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    parse_hex(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// What a field of the frame becomes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A number normalized to `metric`.
    #[default]
    Metric,
    /// The id of the person measured.
    Subject,
    /// The device's own timestamp (`format` is a strftime pattern, or "unix").
    DeviceTime,
    /// Passed through as `attributes.<name>`.
    Attribute,
    /// Which device behind a hub sent it (e.g. one band of many).
    Device,
}

/// A condition on a flag byte: the field is present only when it holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub offset: usize,
    pub mask: u8,
    /// Present when the masked bits are set (default) or clear.
    #[serde(default = "yes")]
    pub set: bool,
}

fn yes() -> bool {
    true
}

/// Checks a subject id must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectCheck {
    /// Chinese resident identity number: 17 digits and an ISO 7064
    /// MOD 11-2 check character.
    CnResidentId,
}

/// A `[[field]]` table of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Key (`key_value`) or capture name (`regex`).
    #[serde(default)]
    pub key: Option<String>,
    /// 0-based position (`csv`; the tag is field 0).
    #[serde(default)]
    pub index: Option<usize>,
    /// JSON pointer (`json`), e.g. "/count".
    #[serde(default)]
    pub pointer: Option<String>,
    /// Byte offset from the frame's first byte (`binary`).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Register number from the first one read (`modbus`).
    #[serde(default)]
    pub register: Option<usize>,
    /// Binary encoding (`binary`; `modbus` defaults to u16).
    #[serde(default, rename = "type")]
    pub kind: Option<BinType>,
    #[serde(default)]
    pub endian: Endian,
    /// Modbus 32-bit values: which register holds the high word.
    #[serde(default)]
    pub word_order: Endian,
    /// Bytes, for bcd, ascii and utf16le.
    #[serde(default)]
    pub length: Option<usize>,
    /// Bit field: `(value >> shift) & mask`.
    #[serde(default)]
    pub mask: Option<u64>,
    #[serde(default)]
    pub shift: u32,
    /// The field exists only when this flag condition holds.
    #[serde(default)]
    pub when: Option<Gate>,
    /// Raw values that mean "no data" (e.g. 0xFFFF): listed as absent.
    #[serde(default)]
    pub absent: Vec<f64>,
    /// Raw value -> label, for attributes (enums such as 0 = "left").
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    #[serde(default)]
    pub role: Role,
    /// Canonical metric id, for `role = "metric"`.
    #[serde(default)]
    pub metric: Option<String>,
    /// The device's unit; converted to the metric's canonical unit.
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after scaling, before unit conversion.
    #[serde(default)]
    pub add: f64,
    /// Attribute name, for `role = "attribute"` (defaults to the key).
    #[serde(default)]
    pub name: Option<String>,
    /// strftime pattern (or "unix") for `role = "device_time"`; taken as UTC.
    #[serde(default)]
    pub format: Option<String>,
    /// A check the subject id must pass, for `role = "subject"`.
    #[serde(default)]
    pub check: Option<SubjectCheck>,
    /// A pattern the whole subject id must match, for ids other than
    /// resident ID numbers (e.g. "M[0-9]{8}" for member numbers).
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// Only "hmac-sha256", what every subject becomes anyway; the unkeyed
    /// "sha256" of earlier profiles is refused.
    #[serde(default)]
    pub hash: Option<SubjectHash>,
    /// A missing optional field is skipped instead of failing the frame.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectHash {
    /// Refused: a plain hash of an ID number is reversed by trying them all.
    Sha256,
    HmacSha256,
}

fn one() -> f64 {
    1.0
}

impl FieldSpec {
    /// How the field is named in messages.
    pub fn label(&self) -> String {
        if let Some(k) = &self.key {
            format!("key \"{k}\"")
        } else if let Some(i) = self.index {
            format!("field {i}")
        } else if let Some(p) = &self.pointer {
            format!("pointer \"{p}\"")
        } else if let Some(o) = self.offset {
            format!("offset {o}")
        } else if let Some(r) = self.register {
            format!("register {r}")
        } else {
            "field".into()
        }
    }

    /// How a subject id from this field is checked.
    pub fn id_check(&self) -> crate::identity::IdCheck {
        use crate::identity::IdCheck;
        match (&self.check, &self.pattern) {
            (Some(SubjectCheck::CnResidentId), _) => IdCheck::CnResidentId,
            (None, Some(p)) => IdCheck::Pattern(p.0.clone()),
            (None, None) => IdCheck::Any,
        }
    }

    /// Bytes the field reads (binary/modbus), when known.
    pub fn byte_size(&self) -> Option<usize> {
        self.kind.and_then(BinType::size).or(self.length)
    }
}
