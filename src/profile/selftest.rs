//! A profile's own `[[test]]` cases: read from the file (with problems
//! like the rest of the profile) and run against the decoder.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use toml::Spanned;

use super::device::decode_gatt;
use super::spec::{DecodeSpec, Expect, Profile, TestCase};
use super::DecodeContext;
use crate::codec::parse_hex;
use crate::gatt;
use crate::problem::{Problem, SourceText};
use crate::record::Measurement;
use crate::vocabulary::Vocabulary;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    /// The characteristic the value came from (gatt profiles).
    #[serde(default)]
    characteristic: Option<String>,
    /// Several values in turn, for records split over packets (gatt).
    #[serde(default)]
    packets: Vec<String>,
    #[serde(default)]
    values: BTreeMap<String, f64>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, toml::Value>,
    #[serde(default)]
    error: Option<String>,
}

impl Profile {
    /// Runs the profile's own `[[test]]` cases.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        self.tests
            .iter()
            .map(|case| TestOutcome {
                name: case.name.clone(),
                line: case.line,
                failure: self.check_case(case).err(),
            })
            .collect()
    }

    fn check_case(&self, case: &TestCase) -> Result<(), String> {
        let outcomes = match (&self.decode, case.characteristic) {
            (DecodeSpec::Gatt(spec), Some(c)) => decode_gatt(spec, c, &case.packets),
            _ => self.decode_all(&case.input, &DecodeContext::default()),
        };
        match &case.expect {
            Expect::Error(want) => {
                if let Some(ok) = outcomes.iter().find_map(|o| o.as_ref().ok()) {
                    return Err(format!(
                        "expected an error containing \"{want}\", got values {:?}",
                        ok.values
                    ));
                }
                let errors: Vec<String> = outcomes
                    .iter()
                    .filter_map(|o| o.as_ref().err().map(|f| f.error.clone()))
                    .collect();
                if errors
                    .iter()
                    .any(|e| e.to_lowercase().contains(&want.to_lowercase()))
                {
                    Ok(())
                } else if errors.is_empty() {
                    Err(format!("expected an error containing \"{want}\", but the input holds no complete frame"))
                } else {
                    Err(format!(
                        "expected an error containing \"{want}\", got: {}",
                        errors.join("; ")
                    ))
                }
            }
            Expect::Values {
                values,
                subject,
                absent,
                attributes,
            } => {
                let decoded: Vec<&Measurement> = outcomes
                    .iter()
                    .map(|o| {
                        o.as_ref()
                            .map_err(|f| format!("frame rejected: {}", f.error))
                    })
                    .collect::<Result<_, _>>()?;
                let [m] = decoded.as_slice() else {
                    return Err(format!(
                        "expected one frame, the input holds {}",
                        decoded.len()
                    ));
                };
                for (metric, want) in values {
                    let Some(got) = m.values.iter().find(|r| &r.metric == metric) else {
                        return Err(format!("{metric}: missing from the decode"));
                    };
                    let tolerance = Vocabulary::get()
                        .metric(metric)
                        .and_then(|m| m.res)
                        .unwrap_or(1e-6)
                        / 2.0;
                    if (got.value - want).abs() > tolerance.max(1e-6) {
                        return Err(format!("{metric}: expected {want}, decoded {}", got.value));
                    }
                }
                if let Some(extra) = m.values.iter().find(|r| !values.contains_key(&r.metric)) {
                    return Err(format!(
                        "{}: decoded {} but the test does not expect it",
                        extra.metric, extra.value
                    ));
                }
                if subject.is_some() && subject != &m.subject_ref {
                    return Err(format!(
                        "subject: expected {subject:?}, decoded {:?}",
                        m.subject_ref
                    ));
                }
                if &m.absent != absent {
                    return Err(format!(
                        "absent: expected {absent:?}, decoded {:?}",
                        m.absent
                    ));
                }
                for (name, want) in attributes {
                    let got = m.attributes.get(name).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    let want = match want {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Float(f) => serde_json::json!(f).to_string(),
                        toml::Value::Integer(i) => i.to_string(),
                        other => other.to_string(),
                    };
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(format!(
                            "attribute {name}: expected {want}, decoded {got:?}"
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The result of one `[[test]]` case.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub name: String,
    pub line: usize,
    /// `None` when the case passed.
    pub failure: Option<String>,
}

pub(super) fn validate_tests(
    src: &SourceText,
    raw: &[Spanned<RawTest>],
    gatt: Option<&crate::gatt::Spec>,
    problems: &mut Vec<Problem>,
) -> Vec<TestCase> {
    let vocab = Vocabulary::get();
    let mut names = HashSet::new();
    let mut tests = Vec::new();
    for (i, spanned) in raw.iter().enumerate() {
        let span = spanned.span();
        let line = src.line_of(span.start);
        let t = spanned.get_ref();
        let name = t.name.clone().unwrap_or_else(|| format!("test {}", i + 1));
        if !names.insert(name.clone()) {
            problems.push(src.problem(
                Some(span.clone()),
                format!("test name \"{name}\" is used twice"),
                "give each [[test]] its own name",
            ));
        }
        let mut packets = Vec::new();
        for hex in &t.packets {
            match parse_hex(hex) {
                Ok(bytes) => packets.push(bytes),
                Err(e) => problems.push(src.problem(
                    Some(src.key_span(span.clone(), "packets")),
                    format!("{name}: {e}"),
                    "write each value as hex digits",
                )),
            }
        }
        let input = match (&t.text, &t.hex) {
            (None, None) if gatt.is_some() && !t.packets.is_empty() => Vec::new(),
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => match parse_hex(hex) {
                Ok(bytes) => bytes,
                Err(e) => {
                    problems.push(src.problem(
                        Some(src.key_span(span.clone(), "hex")),
                        format!("{name}: {e}"),
                        "write the capture as hex digits, e.g. hex = \"02 47 52\"",
                    ));
                    continue;
                }
            },
            _ => {
                problems.push(src.problem(
                    Some(span.clone()),
                    format!(
                        "{name}: needs exactly one of text or hex (or packets, in a gatt profile)"
                    ),
                    "text = \"...\" for ASCII captures, hex = \"...\" for binary",
                ));
                continue;
            }
        };
        let expects_values = !t.values.is_empty()
            || t.subject.is_some()
            || !t.absent.is_empty()
            || !t.attributes.is_empty();
        let expect = match (&t.error, expects_values) {
            (Some(e), false) => Expect::Error(e.clone()),
            (None, true) => Expect::Values {
                values: t.values.clone(),
                subject: t.subject.clone(),
                absent: t.absent.clone(),
                attributes: t.attributes.clone(),
            },
            _ => {
                problems.push(src.problem(Some(span.clone()), format!("{name}: needs either values (or subject) or error"), "values = { \"metric.id\" = 1.0 } for a good frame, error = \"checksum\" for a bad one"));
                continue;
            }
        };
        for metric in t
            .values
            .keys()
            .chain(&t.absent)
            .filter(|m| vocab.metric(m).is_none())
        {
            problems.push(src.problem(
                Some(src.key_span(span.clone(), "values")),
                format!("{name}: unknown metric id \"{metric}\""),
                "use an id from metrics.toml",
            ));
        }
        let characteristic = match (gatt, &t.characteristic) {
            (Some(spec), Some(c)) => match gatt::parse_uuid16(c) {
                Some(u) if spec.codec_for(u).is_some() => Some(u),
                _ => {
                    problems.push(src.problem(
                        Some(src.key_span(span.clone(), "characteristic")),
                        format!("{name}: characteristic \"{c}\" is not one this profile decodes"),
                        "use a 16-bit UUID from [decode] characteristics, e.g. \"2A37\"",
                    ));
                    continue;
                }
            },
            (Some(_), None) => {
                problems.push(src.problem(
                    Some(span.clone()),
                    format!("{name}: a gatt test needs the characteristic"),
                    "add characteristic = \"2A37\" (the UUID the value came from)",
                ));
                continue;
            }
            (None, Some(_)) => {
                problems.push(src.problem(
                    Some(src.key_span(span.clone(), "characteristic")),
                    format!("{name}: characteristic applies to gatt profiles only"),
                    "remove it",
                ));
                continue;
            }
            (None, None) => None,
        };
        if packets.is_empty() {
            packets.push(input.clone());
        } else if gatt.is_none() {
            problems.push(src.problem(
                Some(src.key_span(span.clone(), "packets")),
                format!("{name}: packets applies to gatt profiles only"),
                "use hex or text",
            ));
        }
        tests.push(TestCase {
            name,
            line,
            input,
            characteristic,
            packets,
            expect,
        });
    }
    if tests.is_empty() && problems.is_empty() {
        problems.push(src.problem(
            None,
            "the profile has no [[test]] case",
            "add one with a frame captured from the device and the values it should give",
        ));
    }
    tests
}
