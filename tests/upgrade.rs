//! Upgrades: a gateway reads the buffer and config its earlier versions
//! wrote. `tests/fixtures/buffer-format-1/` is a buffer written by version
//! 0.1 (on-disk format 1, the first) holding 25 unsent records, and
//! `tests/fixtures/fitedge-0.1.toml` that version's config; this version
//! must start on them and deliver every record. Keep the fixtures when the
//! format changes and add the new format's beside them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{broker, Daemon, Platform};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_buffer_and_config_from_format_1_are_read_and_drained() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &fixtures().join("buffer-format-1"),
        &dir.path().join("buffer"),
    );
    let config = std::fs::read_to_string(fixtures().join("fitedge-0.1.toml"))
        .unwrap()
        .replace("@PORT@", &port.to_string())
        .replace("@BUFFER@", &dir.path().join("buffer").display().to_string())
        .replace("@PROFILES@", &common::profiles_dir().display().to_string());
    let config_path = dir.path().join("fitedge.toml");
    std::fs::write(&config_path, config).unwrap();
    // The buffer tools read the old buffer before the gateway starts.
    let buffer = dir.path().join("buffer");
    let stats = common::binary()
        .args(["buffer", "stats", "--dir"])
        .arg(&buffer)
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&stats.stdout).expect("stats prints JSON");
    assert_eq!(
        (report["format"].as_u64(), report["pending"].as_u64()),
        (Some(1), Some(25))
    );
    let verify = common::binary()
        .args(["buffer", "verify", "--dir"])
        .arg(&buffer)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let export = common::binary()
        .args(["buffer", "export", "--dir"])
        .arg(&buffer)
        .output()
        .unwrap();
    let exported: Vec<fitedge::record::Record> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 25);
    let check = common::binary()
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the 0.1 config still validates: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut daemon = Daemon::start(&config_path, 0);
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 25),
        "the old backlog drains:\n{}",
        daemon.log_text()
    );
    let records = platform.records();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        (0..25).collect()
    );
    assert!(records.iter().all(|r| r.schema == fitedge::record::SCHEMA
        && r.device_id == "hw-1"
        && r.value("body.weight").is_some()));
    // 0.1 buffered subjects as they came; they never leave the box.
    assert!(exported.iter().any(|r| r.subject_ref.is_some()));
    assert!(records.iter().all(|r| r.subject_ref.is_none()
        && r.attributes.get("subject_withheld") == Some(&serde_json::Value::Bool(true))));
    daemon.stop();
    assert_eq!(common::open_buffer(dir.path()).pending(), 0);
}

/// Writes the fixture buffer; run by hand (`cargo test --test upgrade --
/// --ignored`) only when adding the fixtures of a new on-disk format.
#[test]
#[ignore = "writes tests/fixtures; run by hand for a new on-disk format"]
fn write_format_fixture() {
    let dir = fixtures().join(format!("buffer-format-{}", fitedge::outbox::FORMAT_VERSION));
    let _ = std::fs::remove_dir_all(&dir);
    let options = common::outbox_options(64);
    let mut outbox = fitedge::outbox::Outbox::open(&dir, options).unwrap();
    let origin = fitedge::record::Origin {
        gateway_id: "gw-test".into(),
        site_id: "site-test".into(),
        device_id: "hw-1".into(),
        profile_id: "height-weight-kv-line".into(),
        transport: fitedge::record::Transport::Serial,
    };
    let profile =
        fitedge::profile::Profile::load(&common::profiles_dir().join("height-weight-kv-line.toml"))
            .unwrap();
    let mut rng = fastrand::Rng::with_seed(1);
    let mut records: Vec<_> = (1..=25)
        .map(|n| {
            let frame = fitedge::sim::Instrument::HeightWeight.frame(n, &mut rng);
            let m = profile
                .decode_all(&frame.bytes, &fitedge::profile::DecodeContext::for_tests())
                .remove(0)
                .unwrap();
            fitedge::record::Record::new(&origin, m)
        })
        .collect();
    outbox.append(&mut records).unwrap();
}
