//! Validating a profile's `[[test]]` tables into the cases the self-test
//! runner checks.

use std::collections::HashSet;

use toml::Spanned;

use crate::codec::parse_hex;
use crate::gatt;
use crate::problem::{Problem, SourceText};
use crate::profile::spec::{Expect, RawTest, TestCase};
use crate::vocabulary::Vocabulary;

/// The most `[[test]]` tables one profile may hold (the catalogue's
/// profiles hold up to eight).
pub const MAX_TESTS: usize = 1000;

pub(in crate::profile) fn validate_tests(
    src: &SourceText,
    raw: &[Spanned<RawTest>],
    gatt: Option<&crate::gatt::Spec>,
    problems: &mut Vec<Problem>,
) -> Vec<TestCase> {
    let vocab = Vocabulary::get();
    let mut names = HashSet::new();
    let mut tests = Vec::new();
    if raw.len() > MAX_TESTS {
        problems.push(src.problem(
            raw.get(MAX_TESTS).map(|t| t.span()),
            format!("{} [[test]] tables; a profile may hold {MAX_TESTS}", raw.len()),
            "keep the cases that show each kind of frame; replay long captures with fitedge decode --file",
        ));
        return tests;
    }
    let mut lines = (0, 0);
    for (i, spanned) in raw.iter().enumerate() {
        let span = spanned.span();
        let line = src.line_from(&mut lines, span.start);
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
