//! Decoding: one frame's payload -> named raw fields -> a normalized
//! [`Measurement`] (canonical metric ids and units, plausibility flagged).
//!
//! Pure: no I/O and no logging; callers log and count the errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

use crate::record::{Measurement, Quality, Reading};
use crate::units;
use crate::vocabulary::Vocabulary;

/// How a frame's payload is split into fields, as written in `[decode]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecodeSpec {
    /// `KEY=VALUE` pairs: `ID=S0001;HT=172.5;WT=65.40`.
    KeyValue {
        #[serde(default = "default_pair_separator")]
        pair_separator: String,
        #[serde(default = "default_kv_separator")]
        separator: String,
    },
    /// Fields by position: `$VC,S0001,3450,0`. With `tag`, field 0 must equal it.
    Csv {
        #[serde(default = "default_csv_separator")]
        separator: String,
        #[serde(default)]
        tag: Option<String>,
    },
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

/// What a field of the frame becomes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A number normalized to `metric`.
    #[default]
    Metric,
    /// The id of the person measured.
    Subject,
    /// The device's own timestamp (`format` is a strftime pattern).
    DeviceTime,
    /// Passed through as `attributes.<name>`.
    Attribute,
}

/// A `[[field]]` table of a profile.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Key, for `key_value` payloads.
    #[serde(default)]
    pub key: Option<String>,
    /// 0-based position, for `csv` payloads (the tag is field 0).
    #[serde(default)]
    pub index: Option<usize>,
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
    #[serde(default)]
    pub offset: f64,
    /// Attribute name, for `role = "attribute"` (defaults to the key).
    #[serde(default)]
    pub name: Option<String>,
    /// strftime pattern for `role = "device_time"`; the result is taken as UTC.
    #[serde(default)]
    pub format: Option<String>,
    /// A missing optional field is skipped instead of failing the frame.
    #[serde(default)]
    pub optional: bool,
}

fn one() -> f64 {
    1.0
}

impl FieldSpec {
    /// How the field is named in messages: its key or its position.
    pub fn label(&self) -> String {
        match (&self.key, self.index) {
            (Some(k), _) => format!("key \"{k}\""),
            (None, Some(i)) => format!("field {i}"),
            (None, None) => "field".into(),
        }
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
    #[error("{field} is missing from the frame")]
    MissingField { field: String },
    #[error("{field} holds \"{text}\", which is not a number")]
    BadNumber { field: String, text: String },
    #[error("{field} holds \"{text}\", which does not match time format \"{format}\"")]
    BadTime {
        field: String,
        text: String,
        format: String,
    },
    #[error("{0}")]
    Unit(#[from] units::UnitError),
}

impl DecodeError {
    /// Not-applicable (the frame is not one this profile decodes) versus
    /// corrupt (it is, but its content is wrong), for counters.
    pub fn is_corrupt(&self) -> bool {
        !matches!(self, DecodeError::TagMismatch { .. } | DecodeError::Empty)
    }
}

/// Splits a payload into raw field texts keyed by key or by position.
fn split<'a>(spec: &DecodeSpec, text: &'a str) -> Result<Fields<'a>, DecodeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    match spec {
        DecodeSpec::KeyValue {
            pair_separator,
            separator,
        } => {
            let mut map = BTreeMap::new();
            for pair in text
                .split(pair_separator.as_str())
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                if let Some((k, v)) = pair.split_once(separator.as_str()) {
                    map.insert(k.trim(), v.trim());
                }
            }
            Ok(Fields::Keyed(map))
        }
        DecodeSpec::Csv { separator, tag } => {
            let fields: Vec<&str> = text.split(separator.as_str()).map(str::trim).collect();
            if let Some(tag) = tag {
                if fields[0] != tag {
                    return Err(DecodeError::TagMismatch {
                        expected: tag.clone(),
                        found: fields[0].to_string(),
                    });
                }
            }
            Ok(Fields::Positional(fields))
        }
    }
}

enum Fields<'a> {
    Keyed(BTreeMap<&'a str, &'a str>),
    Positional(Vec<&'a str>),
}

impl<'a> Fields<'a> {
    fn get(&self, field: &FieldSpec) -> Option<&'a str> {
        match self {
            Fields::Keyed(map) => field.key.as_deref().and_then(|k| map.get(k).copied()),
            Fields::Positional(v) => field.index.and_then(|i| v.get(i).copied()),
        }
        .filter(|s| !s.is_empty())
    }
}

/// Decodes one frame payload with a profile's decode spec and fields.
pub fn decode(
    spec: &DecodeSpec,
    fields: &[FieldSpec],
    payload: &[u8],
) -> Result<Measurement, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotText)?;
    let raw = split(spec, text)?;
    let mut m = Measurement::default();
    for field in fields {
        let Some(text) = raw.get(field) else {
            if field.optional {
                continue;
            }
            return Err(DecodeError::MissingField {
                field: field.label(),
            });
        };
        match field.role {
            Role::Metric => m.values.push(reading(field, text)?),
            Role::Subject => m.subject_ref = Some(text.to_string()),
            Role::DeviceTime => m.device_time = Some(device_time(field, text)?),
            Role::Attribute => {
                let name = field
                    .name
                    .clone()
                    .or_else(|| field.key.clone())
                    .unwrap_or_else(|| field.label());
                let value = text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|| serde_json::Value::String(text.to_string()));
                m.attributes.insert(name, value);
            }
        }
    }
    Ok(m)
}

fn reading(field: &FieldSpec, text: &str) -> Result<Reading, DecodeError> {
    let metric_id = field.metric.as_deref().unwrap_or_default();
    // Profiles are validated at load, so the metric is known here.
    let metric = Vocabulary::get()
        .metric(metric_id)
        .ok_or_else(|| DecodeError::MissingField {
            field: format!("metric {metric_id}"),
        })?;
    let source: f64 = text
        .trim_start_matches('+')
        .parse()
        .map_err(|_| DecodeError::BadNumber {
            field: field.label(),
            text: text.to_string(),
        })?;
    if !source.is_finite() {
        return Err(DecodeError::BadNumber {
            field: field.label(),
            text: text.to_string(),
        });
    }
    let scaled = source * field.scale + field.offset;
    let source_unit = field.unit.as_deref().unwrap_or(&metric.unit);
    let value = round(units::convert(scaled, source_unit, &metric.unit)?);
    Ok(Reading {
        metric: metric_id.to_string(),
        value,
        unit: metric.unit.clone(),
        quality: if metric.in_range(value) {
            Quality::Ok
        } else {
            Quality::OutOfRange
        },
        source_value: (value != source).then_some(source),
        source_unit: (source_unit != metric.unit).then(|| source_unit.to_string()),
    })
}

/// Rounds away binary noise from scaling (65.4 * 1.0 stays 65.4; 0.1 * 3 is 0.3).
fn round(v: f64) -> f64 {
    let r = (v * 1e6).round() / 1e6;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

fn device_time(field: &FieldSpec, text: &str) -> Result<String, DecodeError> {
    let format = field.format.as_deref().unwrap_or("%Y-%m-%dT%H:%M:%S");
    chrono::NaiveDateTime::parse_from_str(text, format)
        .map(|t| {
            t.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|_| DecodeError::BadTime {
            field: field.label(),
            text: text.to_string(),
            format: format.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(key: &str, id: &str) -> FieldSpec {
        FieldSpec {
            key: Some(key.into()),
            index: None,
            role: Role::Metric,
            metric: Some(id.into()),
            unit: None,
            scale: 1.0,
            offset: 0.0,
            name: None,
            format: None,
            optional: false,
        }
    }

    fn kv() -> DecodeSpec {
        DecodeSpec::KeyValue {
            pair_separator: ";".into(),
            separator: "=".into(),
        }
    }

    #[test]
    fn key_value_fields_become_canonical_readings() {
        let mut subject = metric("ID", "");
        subject.role = Role::Subject;
        let fields = [
            subject,
            metric("HT", "body.height"),
            metric("WT", "body.weight"),
        ];
        let m = decode(&kv(), &fields, b"ID=S0001;HT=172.5;WT=65.40").unwrap();
        assert_eq!(m.subject_ref.as_deref(), Some("S0001"));
        assert_eq!(m.values[0].value, 172.5);
        assert_eq!(m.values[0].unit, "cm");
        assert_eq!(m.values[1].value, 65.4);
        assert_eq!(m.values[1].quality, Quality::Ok);
        assert_eq!(m.values[1].source_value, None);
    }

    #[test]
    fn unit_conversion_and_scale_keep_the_source() {
        let mut f = metric("W", "body.weight");
        f.unit = Some("lb".into());
        f.scale = 0.1;
        let m = decode(&kv(), &[f], b"W=1442").unwrap();
        assert_eq!(m.values[0].value, 65.40802);
        assert_eq!(m.values[0].source_value, Some(1442.0));
        assert_eq!(m.values[0].source_unit.as_deref(), Some("lb"));
    }

    #[test]
    fn out_of_range_values_are_kept_and_flagged() {
        let m = decode(&kv(), &[metric("G", "strength.grip")], b"G=180.0").unwrap();
        assert_eq!(m.values[0].value, 180.0);
        assert_eq!(m.values[0].quality, Quality::OutOfRange);
    }

    #[test]
    fn csv_by_position_with_tag() {
        let spec = DecodeSpec::Csv {
            separator: ",".into(),
            tag: Some("$VC".into()),
        };
        let mut f = metric("", "lung.vital_capacity");
        f.key = None;
        f.index = Some(2);
        let m = decode(&spec, std::slice::from_ref(&f), b"$VC,S0001,3450,0").unwrap();
        assert_eq!(m.values[0].value, 3450.0);
        let err = decode(&spec, &[f], b"$XX,S0001,3450,0").unwrap_err();
        assert!(matches!(err, DecodeError::TagMismatch { .. }));
        assert!(!err.is_corrupt());
    }

    #[test]
    fn missing_and_malformed_fields_are_errors() {
        let fields = [metric("HT", "body.height")];
        assert_eq!(
            decode(&kv(), &fields, b"WT=1").unwrap_err(),
            DecodeError::MissingField {
                field: "key \"HT\"".into()
            }
        );
        assert!(matches!(
            decode(&kv(), &fields, b"HT=abc").unwrap_err(),
            DecodeError::BadNumber { .. }
        ));
        assert!(matches!(
            decode(&kv(), &fields, b"HT=NaN").unwrap_err(),
            DecodeError::BadNumber { .. }
        ));
        assert_eq!(
            decode(&kv(), &fields, &[0xFF, 0xFE]).unwrap_err(),
            DecodeError::NotText
        );
        let mut optional = metric("HT", "body.height");
        optional.optional = true;
        assert!(decode(&kv(), &[optional], b"WT=1")
            .unwrap()
            .values
            .is_empty());
    }

    #[test]
    fn device_time_is_parsed_to_rfc3339() {
        let mut f = metric("T", "");
        f.role = Role::DeviceTime;
        f.format = Some("%Y%m%d%H%M%S".into());
        let m = decode(&kv(), std::slice::from_ref(&f), b"T=20261129083000").unwrap();
        assert_eq!(m.device_time.as_deref(), Some("2026-11-29T08:30:00.000Z"));
        assert!(matches!(
            decode(&kv(), &[f], b"T=yesterday").unwrap_err(),
            DecodeError::BadTime { .. }
        ));
    }
}
