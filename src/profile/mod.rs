//! Device profiles: TOML files that say how to frame, decode and normalize a
//! device's bytes, with self-tests inside. Technicians add them without
//! recompiling.
//!
//! A profile file is parsed and validated here (every problem with its line
//! and a fix); [`DeviceDecoder`] then runs it over one device's byte stream.
//! The stages live in [`frame`] (bytes -> frames) and [`decode`]
//! (frame -> normalized measurement). The technician's guide is
//! `docs/device-profiles.md`.

pub mod decode;
pub mod frame;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::problem::{Problem, SourceText};
use crate::record::Measurement;
use crate::units;
use crate::vocabulary::Vocabulary;
pub use decode::{DecodeError, DecodeSpec, FieldSpec, Role};
pub use frame::{FrameError, FrameSpec, Framer};

/// A validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub path: PathBuf,
    pub frame: FrameSpec,
    pub decode: DecodeSpec,
    pub fields: Vec<FieldSpec>,
    pub tests: Vec<TestCase>,
}

/// A `[[test]]` case: input bytes and the expected outcome.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub line: usize,
    pub input: Vec<u8>,
    pub expect: Expect,
}

#[derive(Debug, Clone)]
pub enum Expect {
    Values {
        values: BTreeMap<String, f64>,
        subject: Option<String>,
    },
    /// The frame must be rejected with an error containing this text.
    Error(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    frame: FrameSpec,
    decode: DecodeSpec,
    #[serde(rename = "field")]
    fields: Vec<Spanned<FieldSpec>>,
    #[serde(default, rename = "test")]
    tests: Vec<Spanned<RawTest>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    #[serde(default)]
    values: BTreeMap<String, f64>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl Profile {
    /// Reads and validates one profile file.
    pub fn load(path: &Path) -> Result<Profile, Vec<Problem>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                file: path.to_path_buf(),
                line: None,
                message: format!("cannot read profile: {e}"),
                fix: "check the path and the file's permissions".into(),
            }]
        })?;
        Profile::parse(path, &text)
    }

    /// Parses and validates profile text; `path` names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Profile, Vec<Problem>> {
        let src = SourceText { path, text };
        let raw: RawProfile = toml::from_str(text).map_err(|e| {
            vec![src.parse_problem(
                &e,
                "see docs/device-profiles.md for the keys a profile takes",
            )]
        })?;
        let _ = &raw.description;
        let mut problems = Vec::new();
        let profile = validate(&src, raw, &mut problems);
        if problems.is_empty() {
            Ok(profile)
        } else {
            Err(problems)
        }
    }

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
        let outcomes = self.decode_all(&case.input);
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
            Expect::Values { values, subject } => {
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
                Ok(())
            }
        }
    }

    /// Frames and decodes a complete capture (a trailing unterminated line
    /// counts as a frame).
    pub fn decode_all(&self, input: &[u8]) -> Vec<Result<Measurement, FrameFailure>> {
        let mut decoder = DeviceDecoder::new(self);
        let mut out = decoder.feed(input);
        out.extend(decoder.finish());
        out
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

/// A frame that could not be turned into a measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFailure {
    /// The raw bytes, for the log (as hex).
    pub raw: Vec<u8>,
    pub error: String,
    /// Corrupt (counted as a bad frame) rather than merely not ours.
    pub corrupt: bool,
}

/// A profile applied to one device's byte stream.
#[derive(Debug)]
pub struct DeviceDecoder {
    framer: Framer,
    decode: DecodeSpec,
    fields: Vec<FieldSpec>,
}

impl DeviceDecoder {
    pub fn new(profile: &Profile) -> DeviceDecoder {
        DeviceDecoder {
            framer: Framer::new(&profile.frame),
            decode: profile.decode.clone(),
            fields: profile.fields.clone(),
        }
    }

    /// Feeds bytes as read; returns a result for every completed frame.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Measurement, FrameFailure>> {
        let framed = self.framer.push(bytes);
        framed.into_iter().map(|f| self.decode_framed(f)).collect()
    }

    /// Ends the stream (see [`Framer::finish`]).
    pub fn finish(&mut self) -> Vec<Result<Measurement, FrameFailure>> {
        let framed = self.framer.finish();
        framed.into_iter().map(|f| self.decode_framed(f)).collect()
    }

    fn decode_framed(&self, framed: frame::Framed) -> Result<Measurement, FrameFailure> {
        let payload = framed.result.map_err(|e| FrameFailure {
            raw: framed.raw.clone(),
            error: e.to_string(),
            corrupt: true,
        })?;
        decode::decode(&self.decode, &self.fields, &payload).map_err(|e| FrameFailure {
            raw: framed.raw,
            corrupt: e.is_corrupt(),
            error: e.to_string(),
        })
    }
}

fn validate(src: &SourceText, raw: RawProfile, problems: &mut Vec<Problem>) -> Profile {
    let id_span = Some(raw.id.span());
    let id = raw.id.into_inner();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        problems.push(src.problem(
            id_span.clone(),
            format!("profile id \"{id}\" is not lowercase-with-dashes"),
            "name it <instrument>-<framing>, e.g. grip-dynamometer-stx-etx",
        ));
    }
    if let Some(stem) = src.path.file_stem().and_then(|s| s.to_str()) {
        if stem != id {
            problems.push(src.problem(
                id_span,
                format!("profile id \"{id}\" differs from the file name \"{stem}.toml\""),
                format!("rename the file to {id}.toml or set id = \"{stem}\""),
            ));
        }
    }

    let vocab = Vocabulary::get();
    let keyed = matches!(raw.decode, DecodeSpec::KeyValue { .. });
    if raw.fields.iter().all(|f| f.get_ref().role != Role::Metric) {
        problems.push(src.problem(
            None,
            "the profile maps no field to a metric",
            "add a [[field]] with metric = \"<id from metrics.toml>\"",
        ));
    }
    for spanned in &raw.fields {
        let span = Some(spanned.span());
        let f = spanned.get_ref();
        match (keyed, &f.key, f.index) {
            (true, None, _) => problems.push(src.problem(
                span.clone(),
                "field has no key",
                "key_value payloads need key = \"NAME\" on every [[field]]",
            )),
            (false, _, None) => problems.push(src.problem(
                span.clone(),
                "field has no index",
                "csv payloads need index = N (0-based, the tag is 0) on every [[field]]",
            )),
            _ => {}
        }
        match f.role {
            Role::Metric => match f.metric.as_deref() {
                None => problems.push(src.problem(
                    span.clone(),
                    format!("{} has no metric", f.label()),
                    "set metric = \"<id from metrics.toml>\", or role = \"attribute\"",
                )),
                Some(m) => match vocab.metric(m) {
                    None => {
                        let hint = vocab
                            .suggest(m)
                            .map(|s| format!("did you mean \"{s}\"? "))
                            .unwrap_or_default();
                        problems.push(src.problem(
                            span.clone().map(|s| src.key_span(s, "metric")),
                            format!("unknown metric id \"{m}\""),
                            format!("{hint}use an id from metrics.toml"),
                        ));
                    }
                    Some(metric) => {
                        if let Some(unit) = &f.unit {
                            if let Err(e) = units::convertible(unit, &metric.unit) {
                                problems.push(src.problem(
                                    span.clone().map(|s| src.key_span(s, "unit")),
                                    format!("{}: {e}", f.label()),
                                    "set unit to the device's unit",
                                ));
                            }
                        }
                    }
                },
            },
            Role::Attribute | Role::Subject | Role::DeviceTime => {
                if f.metric.is_some() || f.unit.is_some() {
                    problems.push(src.problem(
                        span.clone(),
                        format!(
                            "{} has role {:?} but also a metric or unit",
                            f.label(),
                            f.role
                        ),
                        "remove metric/unit, or drop the role to map it to a metric",
                    ));
                }
            }
        }
        if !f.scale.is_finite() || f.scale == 0.0 || !f.offset.is_finite() {
            problems.push(src.problem(
                span.clone(),
                format!("{} has scale {} / offset {}", f.label(), f.scale, f.offset),
                "scale must be a non-zero number, offset a number",
            ));
        }
    }
    let mut names = HashSet::new();
    let mut tests = Vec::new();
    for (i, spanned) in raw.tests.iter().enumerate() {
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
        let input = match (&t.text, &t.hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => match frame::parse_hex(hex) {
                Ok(bytes) => bytes,
                Err(e) => {
                    problems.push(src.problem(
                        Some(span.clone()),
                        format!("{name}: {e}"),
                        "write the capture as hex digits, e.g. hex = \"02 47 52\"",
                    ));
                    continue;
                }
            },
            _ => {
                problems.push(src.problem(
                    Some(span.clone()),
                    format!("{name}: needs exactly one of text or hex"),
                    "text = \"...\" for ASCII captures, hex = \"...\" for binary",
                ));
                continue;
            }
        };
        let expect = match (&t.error, t.values.is_empty()) {
            (Some(e), true) => Expect::Error(e.clone()),
            (None, false) => Expect::Values {
                values: t.values.clone(),
                subject: t.subject.clone(),
            },
            _ => {
                problems.push(src.problem(Some(span.clone()), format!("{name}: needs either values or error"), "values = { \"metric.id\" = 1.0 } for a good frame, error = \"checksum\" for a bad one"));
                continue;
            }
        };
        if let Expect::Values { values, .. } = &expect {
            for metric in values.keys().filter(|m| vocab.metric(m).is_none()) {
                problems.push(src.problem(
                    Some(span.clone()),
                    format!("{name}: unknown metric id \"{metric}\""),
                    "use an id from metrics.toml",
                ));
            }
        }
        tests.push(TestCase {
            name,
            line,
            input,
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
    Profile {
        id,
        name: raw.name,
        path: src.path.to_path_buf(),
        frame: raw.frame,
        decode: raw.decode,
        fields: raw.fields.into_iter().map(Spanned::into_inner).collect(),
        tests,
    }
}

/// Finds and loads profile `id` from the first directory that has `<id>.toml`.
pub fn find(dirs: &[PathBuf], id: &str) -> Result<Profile, Vec<Problem>> {
    for dir in dirs {
        let path = dir.join(format!("{id}.toml"));
        if path.exists() {
            return Profile::load(&path);
        }
    }
    Err(vec![Problem {
        file: dirs.first().cloned().unwrap_or_default(),
        line: None,
        message: format!(
            "profile \"{id}\" not found in {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        fix: format!("add {id}.toml to one of those directories, or fix the device's profile name"),
    }])
}

/// Every `*.toml` profile path under the given files and directories.
pub fn collect_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problem> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| Problem {
                file: p.clone(),
                line: None,
                message: format!("cannot list directory: {e}"),
                fix: "check the path".into(),
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: &str = r#"
id = "height-weight-kv-line"
name = "test"
[frame]
type = "line"
[decode]
type = "key_value"
[[field]]
key = "ID"
role = "subject"
[[field]]
key = "HT"
metric = "body.height"
[[test]]
text = "ID=S0001;HT=172.5\r\n"
values = { "body.height" = 172.5 }
subject = "S0001"
[[test]]
name = "garbled"
text = "ID=S0001;HT=17x.5\r\n"
error = "not a number"
"#;

    fn parse(text: &str) -> Result<Profile, Vec<Problem>> {
        Profile::parse(
            Path::new("device-profiles/height-weight-kv-line.toml"),
            text,
        )
    }

    #[test]
    fn a_valid_profile_passes_its_own_tests() {
        let p = parse(KV).unwrap();
        let outcomes = p.run_tests();
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(|o| o.failure.is_none()), "{outcomes:?}");
    }

    #[test]
    fn a_wrong_expectation_fails_the_case() {
        let p = parse(&KV.replace("\"body.height\" = 172.5", "\"body.height\" = 170.0")).unwrap();
        let failure = p.run_tests()[0].failure.clone().unwrap();
        assert!(failure.contains("expected 170"), "{failure}");
    }

    #[test]
    fn a_typo_in_a_key_is_reported_at_its_line() {
        let problems =
            parse(&KV.replace("metric = \"body.height\"", "metrc = \"body.height\"")).unwrap_err();
        assert_eq!(problems[0].line, Some(13), "{problems:?}");
        assert!(problems[0].message.contains("metrc"), "{problems:?}");
    }

    #[test]
    fn an_unknown_metric_names_its_field_line_and_a_fix() {
        let problems =
            parse(&KV.replace("metric = \"body.height\"", "metric = \"body.heigth\"")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(13), "the metric key's own line");
        assert!(problems[0].message.contains("body.heigth"));
        assert!(
            problems[0].fix.contains("did you mean \"body.height\""),
            "{problems:?}"
        );
    }

    #[test]
    fn id_must_match_the_file_name() {
        let problems = Profile::parse(Path::new("x/other.toml"), KV).unwrap_err();
        assert!(
            problems[0].fix.contains("set id = \"other\""),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_test_hex_is_a_problem() {
        let problems =
            parse(&KV.replace("text = \"ID=S0001;HT=172.5\\r\\n\"", "hex = \"zz\"")).unwrap_err();
        assert!(problems[0].message.contains("not hex"), "{problems:?}");
    }
}
