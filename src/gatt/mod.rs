//! Built-in codecs for the standard Bluetooth LE GATT characteristics:
//! heart rate, weight and body composition, blood pressure, temperature,
//! pulse oximetry, cycling and running sensors, and fitness machines (FTMS).
//!
//! A codec turns one characteristic value into a [`Decoded`]: values in the
//! device's own unit, each tagged with a field name a profile can override,
//! metrics left out as absent, the device time and attributes.
//! [`Decoded::normalize`] then applies a profile's overrides and hands each
//! value to [`crate::normalize`] for the canonical units. Codecs are
//! pure and never panic: a payload shorter or longer than its flags say is
//! a [`GattError`]. Multi-packet records and derived speed and cadence need
//! state across notifications; that lives in [`assemble`].
//!
//! Layouts follow the Bluetooth SIG characteristic definitions; all
//! multi-byte fields are little-endian.

pub mod assemble;
mod ftms;
mod health;
mod spec;
mod sport;

use std::collections::BTreeMap;

use thiserror::Error;

use crate::codec::binary::{self, BinValue};
use crate::normalize::{self, NormalizeError, Source};
use crate::record::Measurement;
use crate::units;

pub use assemble::Assembler;
pub use spec::{GattDecoder, Spec};

/// Why a characteristic value could not be decoded.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GattError {
    #[error("truncated: {field} needs {need} byte(s) at offset {offset}, but the value has {len}")]
    Truncated {
        field: &'static str,
        offset: usize,
        need: usize,
        len: usize,
    },
    #[error("inconsistent: the flags account for {used} byte(s), but the value has {len}; check the characteristic and, for FTMS pace fields, pace_bytes")]
    Trailing { used: usize, len: usize },
    #[error("no built-in codec for characteristic {0:04X}; known: {known}", known = known_list())]
    Unknown(u16),
    #[error("characteristic {0:04X} is not among the profile's characteristics")]
    NotWanted(u16),
    #[error("{0}")]
    Unit(#[from] units::UnitError),
    #[error("{field}: {value} scaled or converted is not a finite number")]
    NotFinite { field: &'static str, value: f64 },
}

/// Codec settings a profile may change.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Width of the FTMS treadmill pace fields: 1 (the 2017 definition, u8
    /// 0.1 km/min) or 2 (later revisions and some firmware).
    pub pace_bytes: usize,
    /// Wheel circumference for speed from CSC and Cycling Power wheel data.
    pub wheel_circumference_m: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pace_bytes: 1,
            wheel_circumference_m: 2.105,
        }
    }
}

/// A built-in codec: the characteristic it decodes and how.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub uuid: u16,
    /// The service the characteristic belongs to.
    pub service: u16,
    pub name: &'static str,
    read: Read,
}

type Read = fn(&mut Reader, &mut Decoded, &Options) -> Result<(), GattError>;

impl Codec {
    const fn new(uuid: u16, service: u16, name: &'static str, read: Read) -> Codec {
        Codec {
            uuid,
            service,
            name,
            read,
        }
    }
}

/// The characteristics with a built-in codec. Adding a codec is one row:
/// lookups, the UUID list in messages and [`decode`] all read this table.
#[rustfmt::skip]
pub const CODECS: &[Codec] = &[
    Codec::new(0x2A37, 0x180D, "Heart Rate Measurement",       health::heart_rate),
    Codec::new(0x2A9D, 0x181D, "Weight Measurement",           health::weight),
    Codec::new(0x2A9E, 0x181D, "Weight Scale Feature",         health::weight_feature),
    Codec::new(0x2A9C, 0x181B, "Body Composition Measurement", health::body_composition),
    Codec::new(0x2A35, 0x1810, "Blood Pressure Measurement",   health::blood_pressure),
    Codec::new(0x2A1C, 0x1809, "Temperature Measurement",      health::temperature),
    Codec::new(0x2A5E, 0x1822, "PLX Spot-check Measurement",   health::plx_spot_check),
    Codec::new(0x2A5F, 0x1822, "PLX Continuous Measurement",   health::plx_continuous),
    Codec::new(0x2A5B, 0x1816, "CSC Measurement",              sport::csc),
    Codec::new(0x2A63, 0x1818, "Cycling Power Measurement",    sport::cycling_power),
    Codec::new(0x2A53, 0x1814, "RSC Measurement",              sport::rsc),
    Codec::new(0x2ACD, 0x1826, "Treadmill Data",               ftms::treadmill),
    Codec::new(0x2ACE, 0x1826, "Cross Trainer Data",           ftms::cross_trainer),
    Codec::new(0x2AD1, 0x1826, "Rower Data",                   ftms::rower),
    Codec::new(0x2AD2, 0x1826, "Indoor Bike Data",             ftms::indoor_bike),
    Codec::new(0x2AD3, 0x1826, "Training Status",              ftms::training_status),
    Codec::new(0x2ADA, 0x1826, "Fitness Machine Status",       ftms::machine_status),
];

/// Names of the services a scan shows.
const SERVICES: &[(u16, &str)] = &[
    (0x180D, "Heart Rate"),
    (0x1809, "Health Thermometer"),
    (0x1810, "Blood Pressure"),
    (0x181D, "Weight Scale"),
    (0x181B, "Body Composition"),
    (0x181C, "User Data"),
    (0x1816, "Cycling Speed and Cadence"),
    (0x1818, "Cycling Power"),
    (0x1814, "Running Speed and Cadence"),
    (0x1822, "Pulse Oximeter"),
    (0x1826, "Fitness Machine"),
    (0x180A, "Device Information"),
    (0x180F, "Battery"),
    (0x1805, "Current Time"),
];

/// Fitness machine types, by bit of the FTMS advertisement's service data.
pub const FITNESS_MACHINES: [&str; 6] = [
    "treadmill",
    "cross_trainer",
    "step_climber",
    "stair_climber",
    "rower",
    "indoor_bike",
];

/// The machine types a Fitness Machine Service advertisement's service
/// data (flags u8, then the type bits u16) says the machine is.
pub fn fitness_machines(service_data: &[u8]) -> Vec<&'static str> {
    let Some(types) = service_data.get(1..3) else {
        return Vec::new();
    };
    let types = u16::from_le_bytes([types[0], types[1]]) as u32;
    FITNESS_MACHINES
        .iter()
        .enumerate()
        .filter(|(b, _)| bit(types, *b as u32))
        .map(|(_, name)| *name)
        .collect()
}

/// The name of a standard service.
pub fn service_name(uuid: u16) -> Option<&'static str> {
    SERVICES.iter().find(|s| s.0 == uuid).map(|s| s.1)
}

fn known_list() -> String {
    CODECS
        .iter()
        .map(|c| format!("{:04X}", c.uuid))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The built-in codec for a characteristic, if there is one.
pub fn codec(uuid: u16) -> Option<&'static Codec> {
    CODECS.iter().find(|c| c.uuid == uuid)
}

/// The codec's name for a characteristic, if there is one.
pub fn codec_name(uuid: u16) -> Option<&'static str> {
    codec(uuid).map(|c| c.name)
}

/// Decodes one value of characteristic `uuid`.
pub fn decode(uuid: u16, bytes: &[u8], options: &Options) -> Result<Decoded, GattError> {
    let mut r = Reader::new(bytes);
    let mut out = Decoded::default();
    let codec = codec(uuid).ok_or(GattError::Unknown(uuid))?;
    (codec.read)(&mut r, &mut out, options)?;
    r.finish()?;
    Ok(out)
}

/// A 16-bit SIG UUID from "2A37", "0x2a37" or the full 128-bit form on the
/// Bluetooth base UUID.
pub fn parse_uuid16(text: &str) -> Option<u16> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.len() == 4 {
        return u16::from_str_radix(t, 16).ok();
    }
    let uuid = uuid::Uuid::parse_str(t).ok()?;
    short_uuid(&uuid)
}

/// The 16-bit form of a UUID on the Bluetooth base UUID.
pub fn short_uuid(uuid: &uuid::Uuid) -> Option<u16> {
    let value = uuid.as_u128();
    const BASE: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;
    const MASK: u128 = 0xFFFF_FFFF_u128 << 96;
    (value & !MASK == BASE && value >> 112 == 0).then_some((value >> 96) as u16)
}

/// The full UUID of a 16-bit SIG UUID.
pub fn full_uuid(short: u16) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x0000_0000_0000_1000_8000_0080_5f9b_34fb | (short as u128) << 96)
}

/// One value in the device's unit, before normalization.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The codec's field name, which profile overrides refer to.
    pub field: &'static str,
    pub metric: String,
    pub value: f64,
    /// UCUM unit of `value` (converted to the metric's unit later).
    pub unit: &'static str,
}

/// Whether more packets belong to the same record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Continuation {
    /// The record is complete.
    #[default]
    Complete,
    /// FTMS "More Data": the record goes on in the next notification.
    MoreData,
    /// Body Composition "Multiple Packet": one of two halves.
    MultiplePacket,
}

/// Raw wheel and crank counters, for speed and cadence across samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// (cumulative revolutions, last event time in ticks, ticks per second).
    pub wheel: Option<(u32, u16, f64)>,
    /// (cumulative revolutions, last event time in 1/1024 s).
    pub crank: Option<(u16, u16)>,
}

/// One decoded characteristic value, still in the device's units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decoded {
    pub values: Vec<Value>,
    /// (field, metric) of values the device marked as not available.
    pub absent: Vec<(&'static str, String)>,
    /// RFC 3339 UTC, from the device's own clock.
    pub device_time: Option<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub continuation: Continuation,
    pub counters: Counters,
}

impl Decoded {
    fn value(&mut self, field: &'static str, metric: &str, value: f64, unit: &'static str) {
        self.values.push(Value {
            field,
            metric: metric.to_string(),
            value,
            unit,
        });
    }

    fn absent(&mut self, field: &'static str, metric: &str) {
        self.absent.push((field, metric.to_string()));
    }

    /// A value, or absent when `raw` is the field's "not available" code.
    fn value_or_absent(
        &mut self,
        field: &'static str,
        metric: &str,
        raw: f64,
        not_available: f64,
        scale: f64,
        unit: &'static str,
    ) {
        if raw == not_available {
            self.absent(field, metric);
        } else {
            self.value(field, metric, raw * scale, unit);
        }
    }

    /// An SFLOAT/FLOAT value: special values (NaN, NRes, +/-INF) are absent.
    fn medfloat(&mut self, field: &'static str, metric: &str, v: BinValue, unit: &'static str) {
        match v {
            BinValue::Number(n) => self.value(field, metric, n, unit),
            _ => self.absent(field, metric),
        }
    }

    fn attribute(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.attributes.insert(name.to_string(), value.into());
    }

    /// Adds the other part of a split record; a metric already present
    /// (the repeated body fat of a multi-packet record) is kept once.
    pub fn merge(&mut self, later: Decoded) {
        for v in later.values {
            if !self.values.iter().any(|x| x.metric == v.metric) {
                self.values.push(v);
            }
        }
        for a in later.absent {
            if !self.absent.contains(&a) && !self.values.iter().any(|x| x.metric == a.1) {
                self.absent.push(a);
            }
        }
        self.device_time = self.device_time.take().or(later.device_time);
        self.attributes.extend(later.attributes);
        self.continuation = later.continuation;
    }

    /// Converts to canonical metrics and units, applying a profile's
    /// overrides first. `characteristic` is the one the value came from,
    /// `codec` the one whose layout decoded it (they differ for an alias);
    /// an override may name either.
    pub fn normalize(
        self,
        characteristic: u16,
        codec: u16,
        overrides: &[Override],
    ) -> Result<Measurement, GattError> {
        let ids = [characteristic, codec];
        let mut m = Measurement {
            device_time: self.device_time,
            attributes: self.attributes,
            ..Measurement::default()
        };
        for v in self.values {
            let Some((v, scale)) = apply(v, &ids, overrides) else {
                continue;
            };
            let source = Source {
                scale,
                ..Source::new(&v.metric, v.value, Some(v.unit))
            };
            match normalize::reading(source) {
                Ok(reading) => m.values.push(reading),
                Err(NormalizeError::UnknownMetric(_)) => continue,
                Err(NormalizeError::NotFinite(value)) => {
                    return Err(GattError::NotFinite {
                        field: v.field,
                        value,
                    })
                }
                Err(NormalizeError::Unit(e)) => return Err(GattError::Unit(e)),
            }
        }
        for (field, metric) in self.absent {
            let placeholder = Value {
                field,
                metric,
                value: 0.0,
                unit: "1",
            };
            if let Some((v, _)) = apply(placeholder, &ids, overrides) {
                if !m.absent.contains(&v.metric) {
                    m.absent.push(v.metric);
                }
            }
        }
        Ok(m)
    }
}

/// A profile's change to one field of a built-in codec.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Limits the override to one characteristic (16-bit UUID); default all.
    #[serde(default)]
    pub characteristic: Option<String>,
    /// The codec's field name (see docs/device-profiles.md).
    pub field: String,
    /// Multiplies the decoded value (a vendor's other resolution).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Sends the field as another metric (its unit must be convertible
    /// from the field's; `fitedge profile test` shows a mismatch).
    #[serde(default)]
    pub metric: Option<String>,
    /// Leaves the field out.
    #[serde(default)]
    pub drop: bool,
}

/// The value with the overrides' metric, and the product of their scales
/// (applied by the normalizer, which keeps the codec's number as sent).
fn apply(mut v: Value, characteristics: &[u16], overrides: &[Override]) -> Option<(Value, f64)> {
    let mut factor = 1.0;
    for o in overrides.iter().filter(|o| {
        o.field == v.field
            && o.characteristic
                .as_deref()
                .is_none_or(|c| parse_uuid16(c).is_some_and(|c| characteristics.contains(&c)))
    }) {
        if o.drop {
            return None;
        }
        if let Some(scale) = o.scale {
            factor *= scale;
        }
        if let Some(metric) = &o.metric {
            v.metric = metric.clone();
        }
    }
    Some((v, factor))
}

/// A cursor over a characteristic value; every read names its field.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], GattError> {
        let end = self.pos + n;
        let slice = self.bytes.get(self.pos..end).ok_or(GattError::Truncated {
            field,
            offset: self.pos,
            need: n,
            len: self.bytes.len(),
        })?;
        self.pos = end;
        Ok(slice)
    }

    fn uint(&mut self, n: usize, field: &'static str) -> Result<u32, GattError> {
        let b = self.take(n, field)?;
        Ok(b.iter().rev().fold(0u32, |acc, &x| acc << 8 | x as u32))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, GattError> {
        Ok(self.uint(1, field)? as u8)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, GattError> {
        Ok(self.uint(2, field)? as u16)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, GattError> {
        Ok(self.u16(field)? as i16)
    }

    fn u24(&mut self, field: &'static str) -> Result<u32, GattError> {
        self.uint(3, field)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, GattError> {
        self.uint(4, field)
    }

    fn sfloat(&mut self, field: &'static str) -> Result<BinValue, GattError> {
        Ok(binary::sfloat(self.u16(field)?))
    }

    fn float(&mut self, field: &'static str) -> Result<BinValue, GattError> {
        Ok(binary::float(self.u32(field)?))
    }

    /// Date Time (0x2A08), 7 bytes. `None` when the device left it unset
    /// (year, month or day 0) or sent an impossible date.
    fn date_time(&mut self, field: &'static str) -> Result<Option<String>, GattError> {
        let b = self.take(7, field)?;
        let year = u16::from_le_bytes([b[0], b[1]]);
        let date = chrono::NaiveDate::from_ymd_opt(year as i32, b[2] as u32, b[3] as u32)
            .filter(|_| (1582..=9999).contains(&year));
        let time = chrono::NaiveTime::from_hms_opt(b[4] as u32, b[5] as u32, b[6] as u32);
        Ok(date.zip(time).map(|(d, t)| {
            d.and_time(t)
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn finish(&self) -> Result<(), GattError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(GattError::Trailing {
                used: self.pos,
                len: self.bytes.len(),
            })
        }
    }
}

/// Whether bit `n` of `flags` is set.
fn bit(flags: u32, n: u32) -> bool {
    flags >> n & 1 == 1
}

/// Names of the set bits of `flags`, from a table indexed by bit number.
fn bit_names(flags: u32, names: &[(u32, &str)]) -> Vec<serde_json::Value> {
    names
        .iter()
        .filter(|(b, _)| bit(flags, *b))
        .map(|(_, n)| serde_json::Value::from(*n))
        .collect()
}

#[cfg(test)]
mod tests;
