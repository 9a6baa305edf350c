//! `fitedge decode`: a capture or one BLE value through a profile or a
//! built-in codec, offline.

use std::process::ExitCode;

use crate::codec::{self, parse_hex};
use crate::gatt;
use crate::problem::render;
use crate::profile::{self, Profile};

use super::{DecodeArgs, EXIT_CONFIG, EXIT_DATA, EXIT_USAGE};

/// The largest capture `--file` reads (hours of a serial instrument).
const MAX_CAPTURE_BYTES: u64 = 256 * 1024 * 1024;

pub(super) fn decode(args: DecodeArgs) -> ExitCode {
    let profile = match args.profile.as_deref().map(Profile::load).transpose() {
        Ok(p) => p,
        Err(problems) => {
            eprintln!("{}", render(&problems));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let input = if let Some(hex) = &args.input.hex {
        parse_hex(hex).map_err(|e| format!("--hex: {e}"))
    } else if let Some(text) = &args.input.text {
        Ok(unescape(text))
    } else if let Some(file) = &args.input.file {
        crate::secret::read_file(file, MAX_CAPTURE_BYTES)
            .map_err(|e| format!("{}: {e}", file.display()))
    } else {
        Err("give --hex, --text or --file".to_string())
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => {
            eprintln!("fitedge decode: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    if let Some(uuid) = &args.gatt {
        let spec = match profile.as_ref().map(|p| &p.decode) {
            Some(profile::DecodeSpec::Gatt(spec)) => spec.clone(),
            Some(_) => {
                eprintln!("fitedge decode: --gatt needs a gatt profile, or no --profile for the built-in codec");
                return ExitCode::from(EXIT_USAGE);
            }
            None => gatt::Spec::default(),
        };
        return decode_gatt(&spec, uuid, &input);
    }
    let Some(profile) = profile else {
        eprintln!("fitedge decode: give --profile, or --gatt for a Bluetooth LE value");
        return ExitCode::from(EXIT_USAGE);
    };
    let outcomes = profile.decode_all(&input, &crate::profile::DecodeContext::for_tests());
    if outcomes.is_empty() {
        eprintln!(
            "fitedge decode: the input holds no complete frame for profile {}",
            profile.id
        );
        return ExitCode::from(EXIT_DATA);
    }
    let mut ok = true;
    for outcome in outcomes {
        match outcome {
            Ok(m) => {
                let json = serde_json::json!({
                    "profile": profile.id,
                    "values": m.values,
                    "subject_ref": m.subject_ref,
                    "absent": m.absent,
                    "device_time": m.device_time,
                    "attributes": m.attributes,
                });
                println!("{json}");
            }
            Err(f) => {
                ok = false;
                // A frame that can name a person is not echoed back.
                let shown = match profile.carries_subject() {
                    true => "(not shown: it can hold an id)".to_string(),
                    false => codec::hex(&f.raw),
                };
                eprintln!("fitedge decode: frame {shown} rejected: {}", f.error);
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DATA)
    }
}

/// `decode --gatt`: one characteristic value, decoded on its own (a part
/// of a split record shows its own fields and `"continues": true`).
fn decode_gatt(spec: &gatt::Spec, uuid: &str, value: &[u8]) -> ExitCode {
    let Some(characteristic) = gatt::parse_uuid16(uuid) else {
        eprintln!("fitedge decode: --gatt {uuid} is not a 16-bit UUID such as 2A37");
        return ExitCode::from(EXIT_USAGE);
    };
    let codec = match spec.route(characteristic) {
        Ok(codec) => codec,
        Err(e) => {
            eprintln!("fitedge decode: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    let decoded = gatt::decode(codec, value, &spec.options()).and_then(|d| {
        let continues = d.continuation != gatt::Continuation::Complete;
        Ok((
            d.normalize(characteristic, codec, &spec.overrides)?,
            continues,
        ))
    });
    match decoded {
        Ok((m, continues)) => {
            let mut json = serde_json::json!({
                "characteristic": format!("{codec:04X}"),
                "values": m.values,
                "absent": m.absent,
            });
            if let Some(t) = m.device_time {
                json["device_time"] = t.into();
            }
            if !m.attributes.is_empty() {
                json["attributes"] = serde_json::to_value(m.attributes).unwrap_or_default();
            }
            if continues {
                json["continues"] = true.into();
            }
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "fitedge decode: {codec:04X} value {} rejected: {e}",
                codec::hex(value)
            );
            ExitCode::from(EXIT_DATA)
        }
    }
}

/// `\r`, `\n`, `\t`, `\\` and `\xNN` escapes in `--text`.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let (byte, used) = match bytes[i + 1] {
                b'r' => (Some(b'\r'), 2),
                b'n' => (Some(b'\n'), 2),
                b't' => (Some(b'\t'), 2),
                b'\\' => (Some(b'\\'), 2),
                b'x' => (
                    text.get(i + 2..i + 4)
                        .and_then(|h| u8::from_str_radix(h, 16).ok()),
                    4,
                ),
                _ => (None, 1),
            };
            if let Some(b) = byte {
                out.push(b);
                i += used;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_understands_common_escapes() {
        assert_eq!(unescape(r"A=1\r\n\x02\\"), b"A=1\r\n\x02\\");
        assert_eq!(unescape(r"\q"), b"\\q");
    }
}
