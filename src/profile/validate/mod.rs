//! Loading and validating profiles: every problem a file has, each with
//! its line and a fix, and finding profile files by id or directory.
//! The `[[test]]` tables are checked in [`cases`].

mod cases;

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::frame::FrameSpec;
use super::spec::{
    DecodeSpec, FieldSpec, Match, Profile, RawProfile, RequestSpec, Role, SubjectHash,
};
use crate::codec::binary::BinType;
use crate::codec::parse_hex;
use crate::gatt;
use crate::problem::{Problem, SourceText};
use crate::units;
use crate::vocabulary::Vocabulary;
use cases::validate_tests;

impl Profile {
    /// Reads and validates one profile file.
    pub fn load(path: &Path) -> Result<Profile, Vec<Problem>> {
        let problem = |message: String| {
            vec![Problem {
                file: path.to_path_buf(),
                line: None,
                message,
                fix: "name a profile file (TOML), readable by the gateway's user".into(),
            }]
        };
        let bytes = crate::secret::read_file(path, crate::secret::MAX_FILE_BYTES)
            .map_err(|e| problem(format!("cannot read profile: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| problem("cannot read profile: it is not UTF-8 text".into()))?;
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
        session_end: raw.session_end,
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
                let words = f.kind.and_then(BinType::size).unwrap_or(2).div_ceil(2);
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
    if (f.check.is_some() || f.hash.is_some() || f.pattern.is_some()) && f.role != Role::Subject {
        push(
            Some(span.clone()),
            format!("{label}: check, pattern and hash apply to role = \"subject\" only"),
            "move them to the subject field",
        );
    }
    if f.check.is_some() && f.pattern.is_some() {
        push(
            at("pattern"),
            format!("{label}: both check and pattern are set"),
            "keep check = \"cn_resident_id\" for resident ID numbers, pattern for other ids",
        );
    }
    if f.hash == Some(SubjectHash::Sha256) {
        push(
            at("hash"),
            format!("{label}: hash = \"sha256\" is refused: an unkeyed hash of an ID number is undone in seconds by hashing every possible number"),
            "remove the hash line: every subject is sent as a keyed pseudonym (HMAC-SHA256 with the site key set in [identity] key_file)",
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
