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
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::codec::checksum::ChecksumKind;
use crate::codec::parse_hex;
use crate::gatt;
use crate::problem::{Problem, SourceText};
use crate::record::Measurement;
use crate::units;
use crate::vocabulary::Vocabulary;
pub use decode::{DecodeContext, DecodeError, DecodeSpec, FieldSpec, Role};
pub use frame::{FrameError, FrameSpec, Framer};

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
    pub request: Option<RequestSpec>,
    pub tests: Vec<TestCase>,
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
    pub ble_name: Option<decode::Pattern>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "match")]
    matcher: Option<Spanned<Match>>,
    #[serde(default)]
    frame: Option<Spanned<FrameSpec>>,
    decode: Spanned<DecodeSpec>,
    #[serde(default, rename = "field")]
    fields: Vec<Spanned<FieldSpec>>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    request: Option<Spanned<RequestSpec>>,
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

    /// Frames and decodes a complete capture (a trailing unterminated line
    /// counts as a frame).
    pub fn decode_all(
        &self,
        input: &[u8],
        ctx: &DecodeContext,
    ) -> Vec<Result<Measurement, FrameFailure>> {
        let mut decoder = DeviceDecoder::new(self, ctx.clone());
        let mut out = decoder.feed(input);
        out.extend(decoder.finish());
        out.retain(|o| !matches!(o, Err(f) if f.ignored));
        out
    }
}

/// Decodes characteristic values notified in turn with a gatt profile's
/// settings: one result per completed record or rejected value.
pub fn decode_gatt(
    spec: &gatt::Spec,
    characteristic: u16,
    values: &[Vec<u8>],
) -> Vec<Result<Measurement, FrameFailure>> {
    let mut decoder = gatt::GattDecoder::new(spec);
    let mut out = Vec::new();
    for value in values {
        match decoder.push(characteristic, value) {
            Ok(records) => out.extend(records.into_iter().map(Ok)),
            Err(e) => out.push(Err(FrameFailure {
                raw: value.clone(),
                error: e.to_string(),
                corrupt: true,
                ignored: false,
            })),
        }
    }
    out
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
    /// One of the profile's `ignore` payloads ("not ready" replies).
    pub ignored: bool,
}

/// A profile applied to one device's byte stream.
#[derive(Debug)]
pub struct DeviceDecoder {
    framer: Framer,
    decode: DecodeSpec,
    fields: Vec<FieldSpec>,
    ignore: Vec<String>,
    ctx: DecodeContext,
}

impl DeviceDecoder {
    pub fn new(profile: &Profile, ctx: DecodeContext) -> DeviceDecoder {
        DeviceDecoder {
            framer: Framer::new(&profile.frame).ignoring(&profile.ignore),
            decode: profile.decode.clone(),
            fields: profile.fields.clone(),
            ignore: profile.ignore.clone(),
            ctx,
        }
    }

    /// Decodes one whole message (an MQTT payload) as one frame.
    pub fn decode_message(&self, payload: &[u8]) -> Result<Measurement, FrameFailure> {
        self.decode_framed(frame::Framed {
            raw: payload.to_vec(),
            result: Ok(payload.to_vec()),
        })
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
            ignored: e == FrameError::Echo,
            corrupt: e != FrameError::Echo,
            error: e.to_string(),
        })?;
        let text = String::from_utf8_lossy(&payload);
        if self.ignore.iter().any(|i| text.trim() == i) {
            return Err(FrameFailure {
                raw: framed.raw,
                error: format!("\"{}\" ignored", text.trim()),
                corrupt: false,
                ignored: true,
            });
        }
        decode::decode(&self.decode, &self.fields, &payload, &self.ctx).map_err(|e| FrameFailure {
            raw: framed.raw,
            corrupt: e.is_corrupt(),
            error: e.to_string(),
            ignored: false,
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
    if let Some(m) = &raw.matcher {
        validate_match(src, m, problems);
    }
    let gatt = match raw.decode.get_ref() {
        DecodeSpec::Gatt(spec) => Some(spec),
        _ => None,
    };
    let frame = match (&raw.frame, gatt) {
        (Some(frame), _) => {
            validate_frame(src, frame.span(), frame.get_ref(), problems);
            frame.get_ref().clone()
        }
        (None, Some(_)) => FrameSpec::Message,
        (None, None) => {
            problems.push(src.problem(
                None,
                "the profile has no [frame] table",
                "add [frame] with the framing the device uses, e.g. type = \"line\"",
            ));
            FrameSpec::Message
        }
    };
    let decode_span = raw.decode.span();
    validate_decode(
        src,
        decode_span.clone(),
        &frame,
        raw.decode.get_ref(),
        problems,
    );
    if let Some(spec) = gatt {
        if let Some(f) = &raw.frame {
            problems.push(src.problem(
                Some(f.span()),
                "a gatt profile takes no [frame]: each notification is one value",
                "remove the [frame] table",
            ));
        }
        if let Some(f) = raw.fields.first() {
            problems.push(src.problem(
                Some(f.span()),
                "a gatt profile takes no [[field]]: the built-in codecs know the layout",
                "change single fields with [[decode.override]] field = \"...\"",
            ));
        }
        for (key, message, fix) in spec.problems() {
            problems.push(src.problem(Some(src.key_span(decode_span.clone(), key)), message, fix));
        }
    }
    let has_subject = raw.fields.iter().any(|f| f.get_ref().role == Role::Subject);
    if gatt.is_none() && raw.fields.iter().all(|f| f.get_ref().role != Role::Metric) && !has_subject
    {
        problems.push(src.problem(
            None,
            "the profile maps no field to a metric or a subject",
            "add a [[field]] with metric = \"<id from metrics.toml>\"",
        ));
    }
    let max_frame = frame.max_frame_bytes();
    let modbus_count = raw
        .request
        .as_ref()
        .and_then(|r| r.get_ref().modbus.as_ref())
        .map(|m| m.count as usize);
    for spanned in &raw.fields {
        validate_field(
            src,
            spanned.span(),
            spanned.get_ref(),
            raw.decode.get_ref(),
            max_frame,
            modbus_count,
            problems,
        );
    }
    if let Some(request) = &raw.request {
        validate_request(src, request.span(), request.get_ref(), &frame, problems);
    }
    let tests = validate_tests(src, &raw.tests, gatt, problems);
    Profile {
        id,
        name: raw.name,
        path: src.path.to_path_buf(),
        matcher: raw.matcher.map(Spanned::into_inner).unwrap_or_default(),
        frame,
        decode: raw.decode.into_inner(),
        fields: raw.fields.into_iter().map(Spanned::into_inner).collect(),
        ignore: raw.ignore,
        request: raw.request.map(Spanned::into_inner),
        tests,
    }
}

fn validate_match(src: &SourceText, m: &Spanned<Match>, problems: &mut Vec<Problem>) {
    let span = Some(m.span());
    let m = m.get_ref();
    for usb in &m.usb {
        if parse_usb(usb).is_none() {
            problems.push(src.problem(span.clone().map(|s| src.key_span(s, "usb")), format!("usb \"{usb}\" is not VID:PID[:SERIAL]"), "write the IDs as 4 hex digits each, e.g. \"1a86:7523\" (see `fitedge scan` or lsusb)"));
        }
    }
    for uuid in &m.ble_services {
        let hex = uuid.replace('-', "");
        if !(hex.len() == 4 || hex.len() == 32) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(src.problem(
                span.clone().map(|s| src.key_span(s, "ble_services")),
                format!("BLE service \"{uuid}\" is not a UUID"),
                "use a 16-bit UUID such as \"180d\" or a full 128-bit one",
            ));
        }
    }
    if let Some(machine) = &m.ble_fitness_machine {
        if !gatt::FITNESS_MACHINES.contains(&machine.as_str()) {
            problems.push(src.problem(
                span.clone().map(|s| src.key_span(s, "ble_fitness_machine")),
                format!("ble_fitness_machine \"{machine}\" is not a fitness machine type"),
                format!("use one of {}", gatt::FITNESS_MACHINES.join(", ")),
            ));
        }
    }
    if let Some(filter) = &m.mqtt_topic {
        let bad = filter.is_empty()
            || filter.split('/').enumerate().any(|(i, level)| {
                (level.contains('#') && (level != "#" || i + 1 != filter.split('/').count()))
                    || (level.contains('+') && level != "+")
            });
        if bad {
            problems.push(src.problem(
                span.clone().map(|s| src.key_span(s, "mqtt_topic")),
                format!("mqtt_topic \"{filter}\" is not a topic filter"),
                "'+' stands for one whole level, '#' only as the last level",
            ));
        }
    }
}

/// `VID:PID[:SERIAL]` with hex ids.
pub fn parse_usb(text: &str) -> Option<(u16, u16, Option<String>)> {
    let mut parts = text.splitn(3, ':');
    let vid = parts
        .next()
        .filter(|p| p.len() == 4)
        .and_then(|p| u16::from_str_radix(p, 16).ok())?;
    let pid = parts
        .next()
        .filter(|p| p.len() == 4)
        .and_then(|p| u16::from_str_radix(p, 16).ok())?;
    Some((
        vid,
        pid,
        parts.next().filter(|s| !s.is_empty()).map(str::to_string),
    ))
}

fn validate_frame(
    src: &SourceText,
    span: Range<usize>,
    frame: &FrameSpec,
    problems: &mut Vec<Problem>,
) {
    for (key, message, fix) in frame.problems() {
        problems.push(src.problem(Some(src.key_span(span.clone(), key)), message, fix));
    }
}

fn validate_decode(
    src: &SourceText,
    span: Range<usize>,
    frame: &FrameSpec,
    decode: &DecodeSpec,
    problems: &mut Vec<Problem>,
) {
    let binary_frame = frame.is_binary();
    match decode {
        DecodeSpec::Modbus { .. } if !matches!(frame, FrameSpec::ModbusRtu) => {
            problems.push(src.problem(
                Some(span),
                "decode type \"modbus\" needs frame type \"modbus_rtu\"",
                "set [frame] type = \"modbus_rtu\"",
            ));
        }
        DecodeSpec::KeyValue { .. } | DecodeSpec::Csv { .. } | DecodeSpec::Regex { .. }
            if binary_frame =>
        {
            problems.push(src.problem(
                Some(span),
                "a text decoder on a binary framing",
                "use decode type \"binary\" (fields by offset) for this framing",
            ));
        }
        DecodeSpec::Binary { expect } => {
            if let Some(max) = frame.max_frame_bytes() {
                for e in expect.iter().filter(|e| e.offset + e.hex.len() > max) {
                    problems.push(src.problem(
                        Some(src.key_span(span.clone(), "expect")),
                        format!(
                            "expect at offset {} lies past the longest frame ({max} bytes)",
                            e.offset
                        ),
                        "offsets count from the frame's first byte",
                    ));
                }
            }
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn validate_field(
    src: &SourceText,
    span: Range<usize>,
    f: &FieldSpec,
    decode: &DecodeSpec,
    max_frame: Option<usize>,
    modbus_count: Option<usize>,
    problems: &mut Vec<Problem>,
) {
    let vocab = Vocabulary::get();
    let at = |key: &str| Some(src.key_span(span.clone(), key));
    let mut push = |at: Option<Range<usize>>, message: String, fix: &str| {
        problems.push(src.problem(at, message, fix))
    };
    let label = f.label();
    match decode {
        DecodeSpec::KeyValue { .. } if f.key.is_none() => push(Some(span.clone()), "field has no key".into(), "key_value payloads need key = \"NAME\" on every [[field]]"),
        DecodeSpec::Regex { pattern } => match &f.key {
            None => push(Some(span.clone()), "field has no key".into(), "regex payloads need key = \"<capture name>\" on every [[field]]"),
            Some(k) if !pattern.0.capture_names().flatten().any(|n| n == k) => push(at("key"), format!("the pattern has no capture named \"{k}\""), "name a capture group (?P<name>...) in [decode] pattern"),
            _ => {}
        },
        DecodeSpec::Csv { .. } if f.index.is_none() => push(Some(span.clone()), "field has no index".into(), "csv payloads need index = N (0-based, the tag is 0) on every [[field]]"),
        DecodeSpec::Json { .. } => match &f.pointer {
            None => push(Some(span.clone()), "field has no pointer".into(), "json payloads need pointer = \"/path/to/value\""),
            Some(p) if !p.starts_with('/') => push(at("pointer"), format!("pointer \"{p}\" does not start with '/'"), "JSON pointers look like \"/count\" or \"/data/0/hr\""),
            _ => {}
        },
        DecodeSpec::Binary { .. } => match (f.offset, f.kind) {
            (Some(offset), Some(kind)) => {
                if kind.size().is_none() && f.length.is_none() {
                    push(at("type"), format!("{label}: type {kind:?} needs length = N (bytes)"), "set length to the field's size in bytes");
                }
                if let (Some(size), Some(max)) = (f.byte_size(), max_frame) {
                    if offset + size > max {
                        push(at("offset"), format!("{label} ({size} bytes) ends past the longest frame ({max} bytes)"), "offsets count from the frame's first byte; check the offset or the frame's length");
                    }
                }
            }
            _ => push(Some(span.clone()), format!("{label}: binary fields need offset and type"), "set offset = N and type = \"u8\" | \"i16\" | \"u16\" | ... (see docs/device-profiles.md)"),
        },
        DecodeSpec::Modbus { .. } => match f.register {
            None => push(Some(span.clone()), "field has no register".into(), "modbus payloads need register = N (0 = the first register requested)"),
            Some(r) => {
                let words = f.kind.and_then(crate::codec::binary::BinType::size).unwrap_or(2).div_ceil(2);
                if let Some(count) = modbus_count {
                    if r + words > count {
                        push(at("register"), format!("register {r} is past the {count} register(s) the request reads"), "raise [request] modbus count or fix the register number");
                    }
                }
            }
        },
        _ => {}
    }
    if let Some(gate) = &f.when {
        if max_frame.is_some_and(|max| gate.offset >= max) {
            push(
                at("when"),
                format!(
                    "{label}: flag byte offset {} is past the longest frame",
                    gate.offset
                ),
                "offsets count from the frame's first byte",
            );
        }
    }
    match f.role {
        Role::Metric if f.format.as_deref().is_some_and(|f| f != "minutes_seconds") => push(
            at("format"),
            format!(
                "{label}: format {:?} applies to device_time fields",
                f.format.as_deref().unwrap_or_default()
            ),
            "for a metric, only format = \"minutes_seconds\" (3:45.2 -> 225.2 s) is known",
        ),
        Role::Metric => match f.metric.as_deref() {
            None => push(
                Some(span.clone()),
                format!("{label} has no metric"),
                "set metric = \"<id from metrics.toml>\", or a role",
            ),
            Some(m) => match vocab.metric(m) {
                None => {
                    let hint = vocab
                        .suggest(m)
                        .map(|s| format!("did you mean \"{s}\"? "))
                        .unwrap_or_default();
                    push(
                        at("metric"),
                        format!("metric: unknown metric id \"{m}\""),
                        &format!("{hint}use an id from metrics.toml"),
                    );
                }
                Some(metric) => {
                    if let Some(unit) = &f.unit {
                        if let Err(e) = units::convertible(unit, &metric.unit) {
                            push(
                                at("unit"),
                                format!("{label}: {e}"),
                                "set unit to the device's unit",
                            );
                        }
                    }
                }
            },
        },
        Role::Attribute | Role::Subject | Role::DeviceTime | Role::Device => {
            if f.metric.is_some() || f.unit.is_some() {
                push(
                    Some(span.clone()),
                    format!("{label} has role {:?} but also a metric or unit", f.role),
                    "remove metric/unit, or drop the role to map it to a metric",
                );
            }
        }
    }
    if (f.check.is_some() || f.hash.is_some()) && f.role != Role::Subject {
        push(
            Some(span.clone()),
            format!("{label}: check and hash apply to role = \"subject\" only"),
            "move them to the subject field",
        );
    }
    if !f.scale.is_finite() || f.scale == 0.0 || !f.add.is_finite() {
        push(
            Some(span.clone()),
            format!("{label} has scale {} / add {}", f.scale, f.add),
            "scale must be a non-zero number, add a number",
        );
    }
}

fn validate_request(
    src: &SourceText,
    span: Range<usize>,
    r: &RequestSpec,
    frame: &FrameSpec,
    problems: &mut Vec<Problem>,
) {
    let given = [r.command.is_some(), r.hex.is_some(), r.modbus.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        problems.push(src.problem(Some(span.clone()), "[request] needs exactly one of command, hex or modbus", "command = \"*wei?\\n\" for text, hex = \"...\" for bytes, modbus = { slave = 1, start = 0, count = 2 }"));
    }
    if let Some(hex) = &r.hex {
        if let Err(e) = parse_hex(hex) {
            problems.push(src.problem(
                Some(src.key_span(span.clone(), "hex")),
                format!("request hex: {e}"),
                "write the command as hex digits",
            ));
        }
    }
    if let Some(m) = &r.modbus {
        if !matches!(m.function, 3 | 4) || m.count == 0 || m.count > 125 {
            problems.push(src.problem(
                Some(src.key_span(span.clone(), "modbus")),
                format!(
                    "modbus function {} count {} is not a register read",
                    m.function, m.count
                ),
                "use function 3 or 4 and count 1..=125",
            ));
        }
        if !matches!(frame, FrameSpec::ModbusRtu) {
            problems.push(src.problem(
                Some(span.clone()),
                "a modbus request needs [frame] type = \"modbus_rtu\"",
                "set the frame type",
            ));
        }
    }
    if r.every_ms < 50 || r.timeout_ms == 0 || r.timeout_ms > r.every_ms.max(1) * 10 {
        problems.push(src.problem(
            Some(span),
            format!(
                "every_ms {} / timeout_ms {} are not a usable poll cycle",
                r.every_ms, r.timeout_ms
            ),
            "poll no faster than every 50 ms, with 0 < timeout_ms",
        ));
    }
}

fn validate_tests(
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
