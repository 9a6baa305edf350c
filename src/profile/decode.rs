//! Decoding: one frame's payload -> raw fields -> a normalized
//! [`Measurement`] (canonical metric ids and units, plausibility flagged,
//! "no data" values listed as absent).
//!
//! Pure: no I/O and no logging; callers log and count the errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::codec::binary::{self, BinError, BinType, BinValue};
use crate::codec::checksum::Endian;
use crate::codec::parse_hex;
use crate::normalize::{self, NormalizeError, Source};
use crate::record::{Measurement, Reading};
use crate::units;

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
    /// Send only a salted SHA-256 of the subject id ("sha256").
    #[serde(default)]
    pub hash: Option<SubjectHash>,
    /// A missing optional field is skipped instead of failing the frame.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectHash {
    Sha256,
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

    /// Bytes the field reads (binary/modbus), when known.
    pub fn byte_size(&self) -> Option<usize> {
        self.kind.and_then(BinType::size).or(self.length)
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum DecodeError {
    #[error("frame is not ASCII/UTF-8 text")]
    NotText,
    #[error("frame is empty")]
    Empty,
    #[error("frame tag is \"{found}\", this profile expects \"{expected}\"")]
    TagMismatch { expected: String, found: String },
    #[error("frame does not match the profile's pattern")]
    NoMatch,
    #[error("{field} is missing from the frame")]
    MissingField { field: String },
    #[error("{field} holds \"{text}\", which is not a number")]
    BadNumber { field: String, text: String },
    #[error("{field}: frame has {have} bytes, the field needs {need}")]
    TooShort {
        field: String,
        have: usize,
        need: usize,
    },
    #[error("{field}: {detail}")]
    BadBytes { field: String, detail: String },
    #[error("{field} holds \"{text}\", which does not match time format \"{format}\"")]
    BadTime {
        field: String,
        text: String,
        format: String,
    },
    #[error("subject id \"{text}\" fails its check ({check:?}); ask for a re-scan")]
    BadSubject { text: String, check: SubjectCheck },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("Modbus exception {code} ({meaning}) from slave {slave}")]
    ModbusException {
        slave: u8,
        code: u8,
        meaning: &'static str,
    },
    #[error("{0}")]
    Unit(#[from] units::UnitError),
    #[error("a gatt profile decodes Bluetooth LE notifications, not a byte stream; use it for a ble device")]
    NotStream,
}

impl DecodeError {
    /// Not-applicable (the frame is not one this profile decodes) versus
    /// corrupt (it is, but its content is wrong), for counters.
    pub fn is_corrupt(&self) -> bool {
        !matches!(
            self,
            DecodeError::TagMismatch { .. } | DecodeError::Empty | DecodeError::NoMatch
        )
    }
}

/// Inputs to decoding besides the frame: the gateway's subject-hash salt.
#[derive(Debug, Clone, Default)]
pub struct DecodeContext {
    pub salt: Vec<u8>,
}

/// A payload split into fields, ready for lookups.
enum Parsed<'a> {
    Keyed(BTreeMap<String, &'a str>),
    Positional(Vec<&'a str>),
    Bytes(&'a [u8]),
    Json(serde_json::Value),
    Registers(Vec<u16>),
}

/// A field's value before normalization.
enum Raw {
    Text(String),
    Number(f64),
    Absent,
}

fn text(payload: &[u8]) -> Result<&str, DecodeError> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| DecodeError::NotText)?
        .trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if text.is_empty() {
        Err(DecodeError::Empty)
    } else {
        Ok(text)
    }
}

fn parse<'a>(spec: &DecodeSpec, payload: &'a [u8]) -> Result<Parsed<'a>, DecodeError> {
    Ok(match spec {
        DecodeSpec::KeyValue {
            pair_separator,
            separator,
        } => {
            let mut map = BTreeMap::new();
            // Lines of a multi-line record separate pairs too.
            for pair in text(payload)?
                .lines()
                .flat_map(|line| line.split(pair_separator.as_str()))
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                if let Some((k, v)) = pair.split_once(separator.as_str()) {
                    map.insert(k.trim().to_string(), v.trim());
                }
            }
            Parsed::Keyed(map)
        }
        DecodeSpec::Csv { separator, tag } => {
            let fields: Vec<&str> = text(payload)?
                .split(separator.as_str())
                .map(str::trim)
                .collect();
            if let Some(tag) = tag {
                if fields[0] != tag {
                    return Err(DecodeError::TagMismatch {
                        expected: tag.clone(),
                        found: fields[0].to_string(),
                    });
                }
            }
            Parsed::Positional(fields)
        }
        DecodeSpec::Regex { pattern } => {
            let text = text(payload)?;
            let caps = pattern.0.captures(text).ok_or(DecodeError::NoMatch)?;
            let mut map = BTreeMap::new();
            for name in pattern.0.capture_names().flatten() {
                if let Some(m) = caps.name(name) {
                    map.insert(name.to_string(), &text[m.start()..m.end()]);
                }
            }
            Parsed::Keyed(map)
        }
        DecodeSpec::Binary { expect } => {
            for e in expect {
                let found = payload.get(e.offset..e.offset + e.hex.len());
                if found != Some(e.hex.as_slice()) {
                    return Err(DecodeError::TagMismatch {
                        expected: format!("{} at offset {}", crate::codec::hex(&e.hex), e.offset),
                        found: found
                            .map(crate::codec::hex)
                            .unwrap_or_else(|| "nothing".into()),
                    });
                }
            }
            Parsed::Bytes(payload)
        }
        DecodeSpec::Json { require } => {
            let value: serde_json::Value =
                serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
            for (pointer, want) in require {
                let found = value.pointer(pointer).map(json_text).unwrap_or_default();
                if &found != want {
                    return Err(DecodeError::TagMismatch {
                        expected: format!("{pointer} = {want}"),
                        found,
                    });
                }
            }
            Parsed::Json(value)
        }
        DecodeSpec::Modbus { slave } => {
            if let (Some(want), Some(got)) = (slave, payload.first()) {
                if want != got {
                    return Err(DecodeError::TagMismatch {
                        expected: format!("slave {want}"),
                        found: format!("slave {got}"),
                    });
                }
            }
            Parsed::Registers(modbus_registers(payload)?)
        }
        DecodeSpec::Gatt(_) => return Err(DecodeError::NotStream),
    })
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The registers of a Modbus read response `slave fc count data... crc`.
fn modbus_registers(frame: &[u8]) -> Result<Vec<u16>, DecodeError> {
    let short = |need| DecodeError::TooShort {
        field: "Modbus response".into(),
        have: frame.len(),
        need,
    };
    let (&slave, rest) = frame.split_first().ok_or_else(|| short(5))?;
    let (&function, rest) = rest.split_first().ok_or_else(|| short(5))?;
    if function & 0x80 != 0 {
        let code = *rest.first().ok_or_else(|| short(5))?;
        let meaning = match code {
            1 => "illegal_function",
            2 => "illegal_data_address",
            3 => "illegal_data_value",
            4 => "slave_device_failure",
            5 => "acknowledge",
            6 => "slave_device_busy",
            _ => "unknown",
        };
        return Err(DecodeError::ModbusException {
            slave,
            code,
            meaning,
        });
    }
    let count = *rest.first().ok_or_else(|| short(5))? as usize;
    let data = rest.get(1..1 + count).ok_or_else(|| short(3 + count + 2))?;
    Ok(data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

impl Parsed<'_> {
    fn get(&self, field: &FieldSpec) -> Result<Option<Raw>, DecodeError> {
        let text = |s: Option<&&str>| {
            s.filter(|s| !s.is_empty())
                .map(|s| Raw::Text(s.to_string()))
        };
        Ok(match self {
            Parsed::Keyed(map) => text(field.key.as_ref().and_then(|k| map.get(k))),
            Parsed::Positional(v) => text(field.index.and_then(|i| v.get(i))),
            Parsed::Json(value) => match field.pointer.as_deref().and_then(|p| value.pointer(p)) {
                None => None,
                Some(serde_json::Value::Null) => Some(Raw::Absent),
                Some(serde_json::Value::Number(n)) => n.as_f64().map(Raw::Number),
                Some(serde_json::Value::Bool(b)) => Some(Raw::Number(*b as u8 as f64)),
                Some(serde_json::Value::String(s)) if s.is_empty() => None,
                Some(other) => Some(Raw::Text(json_text(other))),
            },
            Parsed::Bytes(bytes) => read_bytes(bytes, field)?,
            Parsed::Registers(regs) => read_registers(regs, field)?,
        })
    }
}

fn read_bytes(bytes: &[u8], field: &FieldSpec) -> Result<Option<Raw>, DecodeError> {
    if let Some(gate) = &field.when {
        let flags = *bytes.get(gate.offset).ok_or(DecodeError::TooShort {
            field: format!("flags of {}", field.label()),
            have: bytes.len(),
            need: gate.offset + 1,
        })?;
        if (flags & gate.mask != 0) != gate.set {
            return Ok(None);
        }
    }
    let (Some(offset), Some(kind)) = (field.offset, field.kind) else {
        return Ok(None);
    };
    let size = field.byte_size().unwrap_or(0);
    let Some(slice) = bytes.get(offset..offset + size) else {
        return Err(DecodeError::TooShort {
            field: field.label(),
            have: bytes.len(),
            need: offset + size,
        });
    };
    let value = binary::read(slice, kind, field.endian).map_err(|e| DecodeError::BadBytes {
        field: field.label(),
        detail: match e {
            BinError::BadBcd(b) => format!("0x{b:02X} is not BCD"),
            BinError::BadText => "text is not valid in its encoding".into(),
        },
    })?;
    Ok(Some(match value {
        BinValue::Number(n) => Raw::Number(bits(n, field)),
        BinValue::Text(t) if t.is_empty() => return Ok(None),
        BinValue::Text(t) => Raw::Text(t),
        BinValue::Absent => Raw::Absent,
    }))
}

fn read_registers(regs: &[u16], field: &FieldSpec) -> Result<Option<Raw>, DecodeError> {
    let Some(first) = field.register else {
        return Ok(None);
    };
    let kind = field.kind.unwrap_or(BinType::U16);
    let words = kind.size().unwrap_or(2).div_ceil(2);
    let Some(slice) = regs.get(first..first + words) else {
        return Err(DecodeError::TooShort {
            field: field.label(),
            have: regs.len() * 2,
            need: (first + words) * 2,
        });
    };
    let mut ordered = slice.to_vec();
    if field.word_order == Endian::Little {
        ordered.reverse();
    }
    let bytes: Vec<u8> = ordered.iter().flat_map(|w| w.to_be_bytes()).collect();
    let skip = bytes.len() - kind.size().unwrap_or(2);
    match binary::read(&bytes[skip..], kind, Endian::Big) {
        Ok(BinValue::Number(n)) => Ok(Some(Raw::Number(bits(n, field)))),
        Ok(BinValue::Absent) => Ok(Some(Raw::Absent)),
        Ok(BinValue::Text(t)) => Ok(Some(Raw::Text(t))),
        Err(_) => Err(DecodeError::BadBytes {
            field: field.label(),
            detail: "unreadable register value".into(),
        }),
    }
}

fn bits(n: f64, field: &FieldSpec) -> f64 {
    match field.mask {
        Some(mask) if n >= 0.0 => (((n as u64) >> field.shift) & mask) as f64,
        _ => n,
    }
}

/// Decodes one frame payload with a profile's decode spec and fields.
pub fn decode(
    spec: &DecodeSpec,
    fields: &[FieldSpec],
    payload: &[u8],
    ctx: &DecodeContext,
) -> Result<Measurement, DecodeError> {
    let parsed = parse(spec, payload)?;
    let mut m = Measurement::default();
    for field in fields {
        let gated_out = matches!(parsed, Parsed::Bytes(_)) && field.when.is_some();
        let raw = match parsed.get(field)? {
            Some(Raw::Number(n)) if field.absent.contains(&n) => Raw::Absent,
            Some(raw) => raw,
            None if field.optional || gated_out => continue,
            None => {
                return Err(DecodeError::MissingField {
                    field: field.label(),
                })
            }
        };
        match (field.role, raw) {
            (Role::Metric, Raw::Absent) => m.absent.extend(field.metric.clone()),
            (_, Raw::Absent) => {}
            (Role::Metric, raw) => m.values.push(reading(field, raw)?),
            (Role::Subject, raw) => {
                let text = match (raw, field.kind, field.length) {
                    // A BCD id keeps its leading zeros.
                    (Raw::Number(n), Some(BinType::Bcd), Some(len)) => {
                        format!("{:0width$}", n as u64, width = len * 2)
                    }
                    (raw, _, _) => raw_text(raw),
                };
                m.subject_ref = Some(subject(field, text, ctx)?);
            }
            (Role::DeviceTime, raw) => m.device_time = Some(device_time(field, raw)?),
            (Role::Device, raw) => m.device = Some(raw_text(raw)),
            (Role::Attribute, raw) => {
                let name = field
                    .name
                    .clone()
                    .or_else(|| field.key.clone())
                    .unwrap_or_else(|| field.label());
                let text = raw_text(raw);
                let value = match field.map.get(&text) {
                    Some(label) => serde_json::Value::String(label.clone()),
                    None => attribute_value(text),
                };
                m.attributes.insert(name, value);
            }
        }
    }
    Ok(m)
}

fn raw_text(raw: Raw) -> String {
    match raw {
        Raw::Text(t) => t,
        Raw::Number(n) => format!("{n}"),
        Raw::Absent => String::new(),
    }
}

fn reading(field: &FieldSpec, raw: Raw) -> Result<Reading, DecodeError> {
    let metric = field.metric.as_deref().unwrap_or_default();
    let number = match raw {
        Raw::Number(n) => n,
        Raw::Text(text) => parse_number(&text, field.format.as_deref())
            .filter(|v| v.is_finite())
            .ok_or(DecodeError::BadNumber {
                field: field.label(),
                text,
            })?,
        Raw::Absent => 0.0,
    };
    normalize::reading(Source {
        metric,
        number,
        unit: field.unit.as_deref(),
        scale: field.scale,
        add: field.add,
    })
    .map_err(|e| match e {
        // Profiles are validated at load, so the metric is known here.
        NormalizeError::UnknownMetric(_) => DecodeError::MissingField {
            field: format!("metric {metric}"),
        },
        NormalizeError::NotFinite(n) => DecodeError::BadNumber {
            field: field.label(),
            text: n.to_string(),
        },
        NormalizeError::Unit(e) => DecodeError::Unit(e),
    })
}

/// A number as instruments print it; with `format = "minutes_seconds"`,
/// times such as `3:45.2`, `3'45"2` or `3'45.2` become seconds.
fn parse_number(text: &str, format: Option<&str>) -> Option<f64> {
    let text = text.trim().trim_start_matches('+');
    if format != Some("minutes_seconds") {
        return text.parse().ok();
    }
    let (minutes, rest) = text.split_once([':', '\''])?;
    let rest = rest.trim_end_matches('"');
    let seconds = match rest.split_once('"') {
        Some((s, fraction)) => format!("{s}.{fraction}"),
        None => rest.to_string(),
    };
    let (minutes, seconds): (u32, f64) = (minutes.parse().ok()?, seconds.parse().ok()?);
    (seconds < 60.0).then_some(minutes as f64 * 60.0 + seconds)
}

/// An attribute's JSON value: an integer, a number, or the text.
fn attribute_value(text: String) -> serde_json::Value {
    if let Ok(i) = text.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::String(text))
}

fn subject(
    field: &FieldSpec,
    mut text: String,
    ctx: &DecodeContext,
) -> Result<String, DecodeError> {
    if field.check == Some(SubjectCheck::CnResidentId) {
        text = text.to_ascii_uppercase(); // one person, one id: 'x' and 'X' alike
    }
    if let Some(check) = field.check {
        let ok = match check {
            SubjectCheck::CnResidentId => cn_resident_id_valid(&text),
        };
        if !ok {
            return Err(DecodeError::BadSubject { text, check });
        }
    }
    Ok(match field.hash {
        None => text,
        Some(SubjectHash::Sha256) => {
            use sha2::Digest;
            let mut hasher = sha2::Sha256::new();
            hasher.update(&ctx.salt);
            hasher.update(text.as_bytes());
            format!(
                "sha256:{}",
                crate::codec::hex(&hasher.finalize()).to_lowercase()
            )
        }
    })
}

/// ISO 7064 MOD 11-2 check of an 18-character resident identity number.
pub fn cn_resident_id_valid(id: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let bytes = id.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| (b - b'0') as u32 * w)
        .sum();
    CHECK[(sum % 11) as usize] == bytes[17].to_ascii_uppercase()
}

fn device_time(field: &FieldSpec, raw: Raw) -> Result<String, DecodeError> {
    let format = field.format.as_deref().unwrap_or("%Y-%m-%dT%H:%M:%S");
    let bad = |text: String| DecodeError::BadTime {
        field: field.label(),
        text,
        format: format.to_string(),
    };
    let text = raw_text(raw);
    let time = if format == "unix" {
        text.parse::<i64>()
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.naive_utc())
    } else {
        chrono::NaiveDateTime::parse_from_str(&text, format).ok()
    };
    time.map(|t| {
        t.and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
    .ok_or_else(|| bad(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Quality;

    fn field(toml_text: &str) -> FieldSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn spec(toml_text: &str) -> DecodeSpec {
        toml::from_str(toml_text).unwrap()
    }

    fn run(spec_text: &str, fields: &[&str], payload: &[u8]) -> Result<Measurement, DecodeError> {
        let fields: Vec<FieldSpec> = fields.iter().map(|f| field(f)).collect();
        decode(
            &spec(spec_text),
            &fields,
            payload,
            &DecodeContext::default(),
        )
    }

    fn value(m: &Measurement, metric: &str) -> f64 {
        m.values.iter().find(|r| r.metric == metric).unwrap().value
    }

    const KV: &str = "type = \"key_value\"";

    #[test]
    fn key_value_fields_become_canonical_readings() {
        let m = run(
            KV,
            &[
                "key = \"ID\"\nrole = \"subject\"",
                "key = \"HT\"\nmetric = \"body.height\"",
                "key = \"WT\"\nmetric = \"body.weight\"",
            ],
            b"ID=S0001;HT=172.5;WT=65.40",
        )
        .unwrap();
        assert_eq!(m.subject_ref.as_deref(), Some("S0001"));
        assert_eq!(
            (value(&m, "body.height"), value(&m, "body.weight")),
            (172.5, 65.4)
        );
        assert_eq!(m.values[1].quality, Quality::Ok);
        assert_eq!(m.values[1].source_value, None);
    }

    #[test]
    fn unit_conversion_and_scale_keep_the_source() {
        let m = run(
            KV,
            &["key = \"W\"\nmetric = \"body.weight\"\nunit = \"lb\"\nscale = 0.1"],
            b"W=1442",
        )
        .unwrap();
        assert_eq!(m.values[0].value, 65.40802);
        assert_eq!(m.values[0].source_value, Some(1442.0));
        assert_eq!(m.values[0].source_unit.as_deref(), Some("lb"));
    }

    #[test]
    fn out_of_range_values_are_kept_and_flagged() {
        let m = run(KV, &["key = \"G\"\nmetric = \"strength.grip\""], b"G=180.0").unwrap();
        assert_eq!(
            (m.values[0].value, m.values[0].quality),
            (180.0, Quality::OutOfRange)
        );
    }

    #[test]
    fn csv_by_position_with_tag() {
        let spec = "type = \"csv\"\ntag = \"$VC\"";
        let f = "index = 2\nmetric = \"lung.vital_capacity\"";
        assert_eq!(
            value(
                &run(spec, &[f], b"$VC,S0001,3450,0").unwrap(),
                "lung.vital_capacity"
            ),
            3450.0
        );
        let err = run(spec, &[f], b"$XX,S0001,3450,0").unwrap_err();
        assert!(matches!(err, DecodeError::TagMismatch { .. }) && !err.is_corrupt());
    }

    #[test]
    fn regex_named_captures() {
        let spec = "type = \"regex\"\npattern = 'GRIP (?P<side>[LR]) (?P<kg>\\d+\\.\\d)kg'";
        let m = run(
            spec,
            &[
                "key = \"kg\"\nmetric = \"strength.grip\"",
                "key = \"side\"\nrole = \"attribute\"\nmap = { L = \"left\", R = \"right\" }",
            ],
            b"GRIP R 41.2kg",
        )
        .unwrap();
        assert_eq!(value(&m, "strength.grip"), 41.2);
        assert_eq!(m.attributes["side"], "right");
        assert_eq!(
            run(
                spec,
                &["key = \"kg\"\nmetric = \"strength.grip\""],
                b"hello"
            )
            .unwrap_err(),
            DecodeError::NoMatch
        );
    }

    #[test]
    fn binary_fields_signed_scaled_with_expectations() {
        let spec = "type = \"binary\"\nexpect = [{ offset = 3, hex = \"21\" }]";
        let f = "offset = 4\ntype = \"i16\"\nmetric = \"flex.sit_and_reach\"\nscale = 0.1";
        let a = "offset = 6\ntype = \"u16\"\nrole = \"attribute\"\nname = \"attempt\"";
        let m = run(spec, &[f, a], &parse_hex("AA550521FFD60002FD").unwrap()).unwrap();
        assert_eq!(value(&m, "flex.sit_and_reach"), -4.2);
        assert_eq!(m.attributes["attempt"], 2.0);
        assert!(matches!(
            run(spec, &[f], &parse_hex("AA550522FFD60002FD").unwrap()),
            Err(DecodeError::TagMismatch { .. })
        ));
        assert!(matches!(
            run(spec, &[f], &parse_hex("AA550521FF").unwrap()),
            Err(DecodeError::TooShort { .. })
        ));
    }

    #[test]
    fn flag_gates_sentinels_and_bit_fields() {
        let spec = "type = \"binary\"";
        let hr = "offset = 1\ntype = \"u8\"\nmetric = \"vital.heart_rate\"";
        let energy = "offset = 2\ntype = \"u16\"\nendian = \"little\"\nmetric = \"activity.energy\"\nunit = \"kJ\"\nwhen = { offset = 0, mask = 0x08 }";
        let rr = "offset = 4\ntype = \"u16\"\nendian = \"little\"\nmetric = \"vital.rr_interval\"\nabsent = [65535]\nscale = 0.0009765625\noptional = true";
        let m = run(spec, &[hr, energy, rr], &[0x08, 72, 0x10, 0x00, 0xFF, 0xFF]).unwrap();
        assert_eq!(value(&m, "vital.heart_rate"), 72.0);
        assert_eq!(value(&m, "activity.energy"), 3.824092);
        assert_eq!(m.absent, vec!["vital.rr_interval".to_string()]);
        let m = run(spec, &[hr, energy], &[0x00, 72]).unwrap();
        assert_eq!(m.values.len(), 1, "energy gated out by its flag");
        let nibble = "offset = 0\ntype = \"u8\"\nmask = 0x0F\nshift = 4\nrole = \"attribute\"\nname = \"hi\"";
        assert_eq!(
            run(spec, &[nibble], &[0xA5]).unwrap().attributes["hi"],
            10.0
        );
    }

    #[test]
    fn json_pointers_with_requirements() {
        let spec = "type = \"json\"\nrequire = { \"/item\" = \"sit_ups_1min\" }";
        let fields = [
            "pointer = \"/count\"\nmetric = \"endurance.sit_ups_1min\"",
            "pointer = \"/sid\"\nrole = \"subject\"",
        ];
        let m = run(
            spec,
            &fields,
            br#"{"item":"sit_ups_1min","sid":"S0001","count":32}"#,
        )
        .unwrap();
        assert_eq!(
            (
                value(&m, "endurance.sit_ups_1min"),
                m.subject_ref.as_deref()
            ),
            (32.0, Some("S0001"))
        );
        assert!(matches!(
            run(spec, &fields, br#"{"item":"push_ups","count":3}"#),
            Err(DecodeError::TagMismatch { .. })
        ));
        assert!(matches!(
            run(spec, &fields, b"{not json"),
            Err(DecodeError::NotJson(_))
        ));
        let m = run(
            "type = \"json\"",
            &["pointer = \"/hr\"\nmetric = \"vital.heart_rate\""],
            br#"{"hr":null}"#,
        )
        .unwrap();
        assert_eq!(m.absent, ["vital.heart_rate"]);
    }

    #[test]
    fn modbus_registers_with_scale_and_exceptions() {
        let fields = [
            "register = 0\nmetric = \"strength.load\"\nscale = 0.1",
            "register = 1\nmetric = \"strength.repetitions\"",
        ];
        let m = run(
            "type = \"modbus\"",
            &fields,
            &parse_hex("01030400FA000CDA07").unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                value(&m, "strength.load"),
                value(&m, "strength.repetitions")
            ),
            (25.0, 12.0)
        );
        let err = run(
            "type = \"modbus\"",
            &fields,
            &parse_hex("018302C0F1").unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::ModbusException {
                slave: 1,
                code: 2,
                meaning: "illegal_data_address"
            }
        );
        // A 32-bit value over two registers, low word first.
        let f =
            "register = 0\ntype = \"u32\"\nword_order = \"little\"\nmetric = \"activity.distance\"";
        let m = run(
            "type = \"modbus\"",
            &[f],
            &[1, 3, 4, 0x00, 0x01, 0x00, 0x02, 0, 0],
        )
        .unwrap();
        assert_eq!(value(&m, "activity.distance"), (2 * 65536 + 1) as f64);
    }

    #[test]
    fn resident_id_check_and_salted_hash() {
        assert!(cn_resident_id_valid("11010519491231002X"));
        assert!(!cn_resident_id_valid("110105194912310020"));
        assert!(!cn_resident_id_valid("1101051949123100"));
        let f = field(
            "key = \"ID\"\nrole = \"subject\"\ncheck = \"cn_resident_id\"\nhash = \"sha256\"",
        );
        let ctx = DecodeContext {
            salt: b"site-salt".to_vec(),
        };
        let spec = spec(KV);
        let m = decode(
            &spec,
            std::slice::from_ref(&f),
            b"ID=11010519491231002X",
            &ctx,
        )
        .unwrap();
        let subject = m.subject_ref.unwrap();
        assert!(
            subject.starts_with("sha256:")
                && subject.len() == 7 + 64
                && !subject.contains("1101051949")
        );
        let other_salt = decode(
            &spec,
            std::slice::from_ref(&f),
            b"ID=11010519491231002X",
            &DecodeContext::default(),
        )
        .unwrap();
        assert_ne!(other_salt.subject_ref.unwrap(), subject);
        assert!(matches!(
            decode(&spec, &[f], b"ID=110105194912310020", &ctx),
            Err(DecodeError::BadSubject { .. })
        ));
    }

    #[test]
    fn missing_and_malformed_fields_are_errors() {
        let f = "key = \"HT\"\nmetric = \"body.height\"";
        assert_eq!(
            run(KV, &[f], b"WT=1").unwrap_err(),
            DecodeError::MissingField {
                field: "key \"HT\"".into()
            }
        );
        assert!(matches!(
            run(KV, &[f], b"HT=abc").unwrap_err(),
            DecodeError::BadNumber { .. }
        ));
        assert!(matches!(
            run(KV, &[f], b"HT=NaN").unwrap_err(),
            DecodeError::BadNumber { .. }
        ));
        assert_eq!(
            run(KV, &[f], &[0xFF, 0xFE]).unwrap_err(),
            DecodeError::NotText
        );
        assert!(run(
            KV,
            &["key = \"HT\"\nmetric = \"body.height\"\noptional = true"],
            b"WT=1"
        )
        .unwrap()
        .values
        .is_empty());
    }

    #[test]
    fn numbers_too_large_for_the_payload_are_rejected_not_null() {
        let f = "key = \"W\"\nmetric = \"body.weight\"\nscale = 10.0";
        assert!(matches!(
            run(KV, &[f], b"W=1e308"),
            Err(DecodeError::BadNumber { .. })
        ));
        let j = "pointer = \"/w\"\nmetric = \"body.weight\"\nscale = 1e10";
        assert!(matches!(
            run("type = \"json\"", &[j], br#"{"w":1e305}"#),
            Err(DecodeError::BadNumber { .. })
        ));
    }

    #[test]
    fn race_times_in_minutes_and_seconds() {
        let f = "index = 2\nmetric = \"run.time_800m\"\nformat = \"minutes_seconds\"";
        for (text, seconds) in [
            ("3:45.2", 225.2),
            ("3'45\"2", 225.2),
            ("3'45.2", 225.2),
            ("4:05", 245.0),
        ] {
            let m = run(
                "type = \"csv\"",
                &[f],
                format!("$T800,S1,{text}").as_bytes(),
            )
            .unwrap();
            assert!(
                (value(&m, "run.time_800m") - seconds).abs() < 1e-9,
                "{text}"
            );
        }
        assert!(matches!(
            run("type = \"csv\"", &[f], b"$T800,S1,3:75.0"),
            Err(DecodeError::BadNumber { .. })
        ));
    }

    #[test]
    fn modbus_replies_from_other_slaves_are_not_ours() {
        let f = "register = 0\nmetric = \"strength.load\"\nscale = 0.1";
        let err = run(
            "type = \"modbus\"\nslave = 2",
            &[f],
            &parse_hex("01030400FA000CDA07").unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::TagMismatch { .. }) && !err.is_corrupt());
    }

    #[test]
    fn multi_line_key_value_records_and_integer_attributes() {
        let m = run(
            KV,
            &[
                "key = \"hei\"\nmetric = \"body.height\"",
                "key = \"n\"\nrole = \"attribute\"",
            ],
            b"hei=172\nn=3;over",
        )
        .unwrap();
        assert_eq!(value(&m, "body.height"), 172.0);
        assert_eq!(m.attributes["n"], serde_json::json!(3));
    }

    #[test]
    fn bcd_subjects_keep_leading_zeros_and_ids_are_case_blind() {
        let f = "offset = 0\ntype = \"bcd\"\nlength = 4\nrole = \"subject\"";
        let m = run(
            "type = \"binary\"",
            &[
                f,
                "offset = 4\ntype = \"u8\"\nmetric = \"endurance.rope_skip_1min\"",
            ],
            &[0, 0, 1, 7, 99],
        )
        .unwrap();
        assert_eq!(m.subject_ref.as_deref(), Some("00000107"));
        let id = "key = \"ID\"\nrole = \"subject\"\ncheck = \"cn_resident_id\"\nhash = \"sha256\"";
        let lower = run(KV, &[id], b"ID=11010519491231002x")
            .unwrap()
            .subject_ref;
        let upper = run(KV, &[id], b"ID=11010519491231002X")
            .unwrap()
            .subject_ref;
        assert_eq!(lower, upper);
    }

    #[test]
    fn device_time_formats() {
        let f = "key = \"T\"\nrole = \"device_time\"\nformat = \"%Y%m%d%H%M%S\"";
        assert_eq!(
            run(KV, &[f], b"T=20261129083000")
                .unwrap()
                .device_time
                .as_deref(),
            Some("2026-11-29T08:30:00.000Z")
        );
        assert!(matches!(
            run(KV, &[f], b"T=yesterday").unwrap_err(),
            DecodeError::BadTime { .. }
        ));
        let unix = "key = \"T\"\nrole = \"device_time\"\nformat = \"unix\"";
        assert_eq!(
            run(KV, &[unix], b"T=0").unwrap().device_time.as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
    }
}
