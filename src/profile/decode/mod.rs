//! Decoding: one frame's payload -> raw fields -> a normalized
//! [`Measurement`] (numbers through [`crate::normalize`], plausibility flagged,
//! "no data" values listed as absent).
//!
//! Pure: no I/O and no logging; callers log and count the errors.

use std::collections::BTreeMap;

use thiserror::Error;

use super::spec::{DecodeSpec, FieldSpec, Role};
use crate::codec::binary::{self, BinError, BinType, BinValue};
use crate::codec::checksum::Endian;
use crate::identity::{IdProblem, Keyring};
use crate::normalize::{self, NormalizeError, Source};
use crate::record::{Measurement, Reading};
use crate::units;

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
    /// The id itself is never quoted: only what is wrong with it and a
    /// short keyed fingerprint.
    #[error(
        "subject id fails its check: {problem} (fingerprint {fingerprint}); ask for a re-scan"
    )]
    BadSubject {
        problem: IdProblem,
        fingerprint: String,
    },
    #[error(
        "the frame names a subject but no pseudonym key is configured; set [identity] key_file"
    )]
    NoKey,
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

/// Inputs to decoding besides the frame: the keys that turn subject ids
/// into pseudonyms (without them a frame naming a subject is refused).
#[derive(Debug, Clone, Default)]
pub struct DecodeContext {
    pub keys: Option<std::sync::Arc<Keyring>>,
}

impl DecodeContext {
    /// With the offline tools' key ([`Keyring::for_tests`]).
    pub fn for_tests() -> DecodeContext {
        DecodeContext {
            keys: Some(std::sync::Arc::new(Keyring::for_tests())),
        }
    }
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
    let end = offset.saturating_add(size);
    let Some(slice) = bytes.get(offset..end) else {
        return Err(DecodeError::TooShort {
            field: field.label(),
            have: bytes.len(),
            need: end,
        });
    };
    let bad = |e| DecodeError::BadBytes {
        field: field.label(),
        detail: match e {
            BinError::BadBcd(b) => format!("0x{b:02X} is not BCD"),
            BinError::BadText => "text is not valid in its encoding".into(),
        },
    };
    // An id in BCD keeps its leading zeros and every digit.
    if field.role == Role::Subject && kind == BinType::Bcd {
        return Ok(Some(Raw::Text(
            binary::bcd_digits(slice, field.endian).map_err(bad)?,
        )));
    }
    let value = binary::read(slice, kind, field.endian).map_err(bad)?;
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
    let end = first.saturating_add(words);
    let Some(slice) = regs.get(first..end) else {
        return Err(DecodeError::TooShort {
            field: field.label(),
            have: regs.len() * 2,
            need: end.saturating_mul(2),
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
                let text = raw_text(raw);
                // An instrument with no card tapped sends an empty id.
                if !text.trim().is_empty() {
                    let pseudonym = subject(field, &text, ctx)?;
                    m.subject_ref = Some(pseudonym.current);
                    m.subject_ref_previous = pseudonym.previous;
                }
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

/// Checks and normalizes a subject id and returns its pseudonyms: the
/// one way a subject leaves decoding.
fn subject(
    field: &FieldSpec,
    text: &str,
    ctx: &DecodeContext,
) -> Result<crate::identity::Pseudonym, DecodeError> {
    let keys = ctx.keys.as_deref().ok_or(DecodeError::NoKey)?;
    let today = crate::clock::is_synchronized().then(|| chrono::Utc::now().date_naive());
    match field.id_check().normalize(text, today) {
        Ok(id) => Ok(keys.pseudonym(&id)),
        Err(problem) => Err(DecodeError::BadSubject {
            problem,
            fingerprint: keys.fingerprint(text.trim()),
        }),
    }
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
mod tests;
