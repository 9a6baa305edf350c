//! The shipped profile catalogue: every profile loads, carries tests, passes
//! them, and the reference frames in `serial.tsv` decode as expected.

mod common;

use common::{binary, profiles_dir};
use fitedge::profile::{self, Profile};

fn catalogue() -> Vec<Profile> {
    profile::collect_paths(&[profiles_dir()])
        .unwrap()
        .iter()
        .map(|p| Profile::load(p).unwrap_or_else(|e| panic!("{}", fitedge::problem::render(&e))))
        .collect()
}

#[test]
fn every_profile_passes_its_own_tests_including_a_bad_frame() {
    let profiles = catalogue();
    assert!(profiles.len() >= 24, "{} profiles", profiles.len());
    for p in &profiles {
        let outcomes = p.run_tests();
        assert!(
            outcomes.len() >= 2,
            "{} has {} test(s)",
            p.id,
            outcomes.len()
        );
        assert!(
            p.tests
                .iter()
                .any(|t| matches!(t.expect, profile::Expect::Error(_))),
            "{} tests no bad frame",
            p.id
        );
        for o in outcomes {
            assert!(
                o.failure.is_none(),
                "{} / {}: {:?}",
                p.id,
                o.name,
                o.failure
            );
        }
    }
}

/// Every physique-test item of the vocabulary has an instrument profile,
/// and every profile says in its header what framing it assumes.
#[test]
fn the_catalogue_covers_every_physique_test_item() {
    let profiles = catalogue();
    let covered: std::collections::BTreeSet<&str> = profiles
        .iter()
        .flat_map(|p| p.fields.iter().filter_map(|f| f.metric.as_deref()))
        .collect();
    let items = fitedge::vocabulary::Vocabulary::get().ids().filter(|id| {
        [
            "body.height",
            "body.sitting_height",
            "body.weight",
            "body.fat_pct",
            "body.waist_circumference",
            "body.hip_circumference",
            "vital.bp_systolic",
            "vital.bp_diastolic",
        ]
        .contains(id)
            || [
                "lung.",
                "strength.grip",
                "flex.",
                "power.",
                "endurance.",
                "balance.",
                "neuro.",
                "cardio.",
                "run.",
            ]
            .iter()
            .any(|p| id.starts_with(p))
    });
    let missing: Vec<&str> = items.filter(|id| !covered.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "physique items without a profile: {missing:?}"
    );
    for p in &profiles {
        let text = std::fs::read_to_string(&p.path).unwrap();
        assert!(
            text.starts_with("# ") && text.to_lowercase().contains("framing"),
            "{}: header comment must say which framing is assumed",
            p.id
        );
    }
}

#[test]
fn profile_test_command_reports_every_case() {
    let out = binary()
        .args(["profile", "test"])
        .arg(profiles_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("pass  grip-dynamometer-stx-etx / corrupted check byte"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn profile_test_command_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(profiles_dir().join("height-weight-kv-line.toml")).unwrap();
    let path = dir.path().join("height-weight-kv-line.toml");
    std::fs::write(
        &path,
        text.replace("\"body.height\" = 172.5", "\"body.height\" = 171.5"),
    )
    .unwrap();
    let out = binary()
        .args(["profile", "test"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("FAIL  height-weight-kv-line / reference frame")
            && stdout.contains("expected 171.5, decoded 172.5"),
        "{stdout}"
    );
}

/// The rows of the shared reference vectors that the catalogue covers.
#[test]
fn reference_serial_vectors_decode_through_the_cli() {
    let cases = [
        (
            "height-weight-kv-line",
            "49443D53303030313B48543D3137322E353B57543D36352E34300D0A",
            Some(vec![("body.height", 172.5), ("body.weight", 65.4)]),
        ),
        (
            "grip-dynamometer-stx-etx",
            "024752502C53303030312C3033382E360337",
            Some(vec![("strength.grip", 38.6)]),
        ),
        (
            "grip-dynamometer-stx-etx",
            "024752502C53303030312C3033382E3603C8",
            None,
        ),
    ];
    for (id, hex, expected) in cases {
        let out = binary()
            .args(["decode", "--profile"])
            .arg(profiles_dir().join(format!("{id}.toml")))
            .args(["--hex", hex])
            .output()
            .unwrap();
        match expected {
            Some(values) => {
                assert!(
                    out.status.success(),
                    "{id}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(
                    json["subject_ref"],
                    fitedge::identity::Keyring::for_tests()
                        .pseudonym("S0001")
                        .current
                );
                for (metric, value) in values {
                    let v = json["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["metric"] == metric)
                        .unwrap();
                    assert_eq!(v["value"].as_f64(), Some(value), "{id} {metric}");
                    assert_eq!(v["quality"], "ok");
                }
            }
            None => {
                assert_eq!(out.status.code(), Some(65), "bad frame exits 65");
                assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
            }
        }
    }
}

#[test]
fn reference_vectors_file_still_holds_the_rows_used_here() {
    let tsv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/vectors/serial.tsv");
    if let Ok(text) = std::fs::read_to_string(tsv) {
        assert!(text.contains("49443D53303030313B48543D3137322E353B57543D36352E34300D0A"));
        assert!(text.contains("024752502C53303030312C3033382E360337"));
    }
}
