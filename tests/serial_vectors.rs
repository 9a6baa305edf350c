//! Every frame of the shared reference vectors (`tests/vectors/serial.tsv`,
//! a copy of the programme's) goes through `fitedge decode` with the
//! catalogue profile for its framing and gives the expected values or error.

mod common;

use std::collections::BTreeMap;

use common::{binary, profiles_dir};
use fitedge::codec::parse_hex;
use fitedge::profile::Profile;

const VECTORS: &str = include_str!("vectors/serial.tsv");

/// The vocabulary id for a key of the vectors' expected JSON.
fn metric_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "body_height" => "body.height",
        "body_weight" => "body.weight",
        "vital_capacity" => "lung.vital_capacity",
        "grip_strength" => "strength.grip",
        "sit_and_reach" => "flex.sit_and_reach",
        "vertical_jump" => "power.vertical_jump",
        "sit_ups_1min" => "endurance.sit_ups_1min",
        "body_fat_percentage" => "body.fat_pct",
        "visceral_fat_area" => "body.visceral_fat_area",
        "load" => "strength.load",
        "repetitions" => "strength.repetitions",
        _ => return None,
    })
}

/// The catalogue profile for each device-to-host framing.
fn profile_for(framing: &str, hex: &str) -> Option<&'static str> {
    Some(match framing {
        "ascii_kv_line" => "height-weight-kv-line",
        "ascii_csv_line" => "vital-capacity-csv-line",
        "stx_etx_bcc_xor" => "grip-dynamometer-stx-etx",
        "binary_hdr_len_sum8" => "sit-and-reach-header-sum8",
        "binary_crc16_modbus_le" => "vertical-jump-header-crc16",
        "len16be_json" => "sit-ups-len16-json",
        "modbus_rtu_response" | "modbus_rtu_exception" => "strength-machine-modbus-rtu",
        "hid_keyboard_wedge_line" => "qr-scanner-resident-id-line",
        "ascii_cmd_response" if hex.starts_with("7765693D") => "weight-scale-ascii-query",
        "ascii_cmd_response" if hex.starts_with("6865693D") => "bia-analyser-dba310-ascii",
        _ => return None,
    })
}

struct Row {
    framing: String,
    hex: String,
    expected: serde_json::Value,
}

fn rows() -> Vec<Row> {
    VECTORS
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Row {
                framing: cols[0].into(),
                hex: cols[1].into(),
                expected: serde_json::from_str(cols[2]).unwrap(),
            }
        })
        .collect()
}

fn load(id: &str) -> Profile {
    Profile::load(&profiles_dir().join(format!("{id}.toml")))
        .unwrap_or_else(|p| panic!("{}", fitedge::problem::render(&p)))
}

#[test]
fn the_vectors_copy_matches_the_shared_reference_when_present() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/vectors/serial.tsv");
    if let Ok(text) = std::fs::read_to_string(shared) {
        assert_eq!(
            text, VECTORS,
            "tests/vectors/serial.tsv is out of step with the shared copy"
        );
    }
}

#[test]
fn device_frames_decode_to_the_expected_values_or_error() {
    let mut checked = 0;
    for row in rows() {
        let Some(id) = profile_for(&row.framing, &row.hex) else {
            continue;
        };
        let out = binary()
            .args(["decode", "--profile"])
            .arg(profiles_dir().join(format!("{id}.toml")))
            .args(["--hex", &row.hex])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = row.expected.as_object().unwrap();
        let wants_error = expected.contains_key("error")
            || expected.contains_key("exception")
            || expected.get("valid_checksum") == Some(&serde_json::json!(false));
        if wants_error {
            assert_eq!(
                out.status.code(),
                Some(65),
                "{} {}: must be rejected\n{stdout}",
                row.framing,
                row.hex
            );
            let reason = expected
                .get("error")
                .or(expected.get("exception"))
                .and_then(|v| v.as_str())
                .unwrap_or("fails its check");
            let spaced = reason.replace('_', " ");
            assert!(
                stderr.contains(reason) || stderr.contains(&spaced),
                "{} {}: error should mention {reason:?}: {stderr}",
                row.framing,
                row.hex
            );
        } else {
            assert!(
                out.status.success(),
                "{} {}: {stderr}",
                row.framing,
                row.hex
            );
            let json: serde_json::Value =
                serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
            let values: BTreeMap<String, f64> = json["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["metric"].as_str().unwrap().to_string(),
                        v["value"].as_f64().unwrap(),
                    )
                })
                .collect();
            let mut expected_values = BTreeMap::new();
            for (key, v) in expected {
                if let Some(metric) = metric_of(key) {
                    expected_values.insert(metric.to_string(), v["value"].as_f64().unwrap());
                }
            }
            if let Some(mapped) = expected.get("mapped").and_then(|m| m.as_object()) {
                for (key, v) in mapped {
                    expected_values.insert(
                        metric_of(key).unwrap().to_string(),
                        v["value"].as_f64().unwrap(),
                    );
                }
            }
            for (metric, want) in &expected_values {
                let got = values.get(metric).unwrap_or_else(|| {
                    panic!("{} {}: {metric} missing in {stdout}", row.framing, row.hex)
                });
                assert!(
                    (got - want).abs() < 1e-6,
                    "{} {}: {metric} {got} != {want}",
                    row.framing,
                    row.hex
                );
            }
            assert!(
                !expected_values.is_empty() || expected.contains_key("subject_ref"),
                "{}: nothing checked",
                row.framing
            );
            if let Some(subject) = expected.get("subject_ref").and_then(|s| s.as_str()) {
                // Only a keyed pseudonym leaves the decoder; a vector's
                // unkeyed hash stands for "some pseudonym".
                let got = json["subject_ref"].as_str().unwrap_or_default();
                if subject.starts_with("sha256") {
                    assert!(
                        got.starts_with("psn1:"),
                        "only a pseudonym leaves the gateway"
                    );
                } else {
                    let want = fitedge::identity::Keyring::for_tests().pseudonym(subject);
                    assert_eq!(got, want.current, "{}", row.framing);
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} rows checked");
}

#[test]
fn host_requests_in_the_vectors_are_what_the_profiles_send() {
    let rows = rows();
    let request = |framing: &str| {
        parse_hex(&rows.iter().find(|r| r.framing == framing).unwrap().hex).unwrap()
    };
    assert_eq!(
        load("strength-machine-modbus-rtu").request.unwrap().bytes(),
        request("modbus_rtu_request")
    );
    assert_eq!(
        load("weight-scale-ascii-query").request.unwrap().bytes(),
        request("ascii_cmd_response")
    );
}

#[test]
fn framing_only_rows_frame_as_the_vectors_say() {
    // CSAFE frames and ID-card reader commands: the framing must accept
    // them (checksums right, stuffing undone) even though they are commands.
    let treadmill = load("treadmill-csafe");
    let reader = load("id-card-reader-sam");
    for row in rows() {
        let bytes = parse_hex(&row.hex).unwrap();
        match row.framing.as_str() {
            "csafe_standard_frame" => {
                let framed = fitedge::profile::Framer::new(&treadmill.frame).push(&bytes);
                let content = framed[0].result.clone().expect("valid CSAFE frame");
                if let Some(unstuffed) = row
                    .expected
                    .get("unstuffed_content")
                    .and_then(|v| v.as_str())
                {
                    assert_eq!(fitedge::codec::hex(&content), unstuffed);
                } else {
                    assert_eq!(content, vec![0x91]);
                }
            }
            "idcard_sam_cmd" => {
                let framed = fitedge::profile::Framer::new(&reader.frame).push(&bytes);
                assert!(
                    framed[0].result.is_ok(),
                    "{}: checksum and length accepted",
                    row.hex
                );
                // A command is not a reader response: it carries no subject.
                let decoded =
                    reader.decode_all(&bytes, &fitedge::profile::DecodeContext::for_tests());
                assert!(decoded[0].is_err(), "{}", row.hex);
            }
            _ => {}
        }
    }
}
