//! Stations end to end on the real binary: ID scans open sessions, the
//! station's readings carry the scanned person's pseudonym, every way a
//! session ends, an open session across SIGTERM and SIGKILL, and the raw
//! ID numbers found nowhere: not in the buffer's files, not in the logs at
//! trace level, not in any payload upstream.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{broker, psn, wait_for_port, write_config, Daemon, DeviceEntry, Platform};
use fitedge::record::{Binding, CloseReason, Record, SessionEventKind};
use fitedge::sim::{resident_ids, scan_frame, Instrument, Pty};

fn grip(pty: &mut Pty) {
    let frame = Instrument::Grip.anonymous_frame(&mut fastrand::Rng::new());
    pty.write_frame(&frame.bytes).unwrap();
}

/// The records received, each once (a SIGKILL may redeliver some), in
/// the order they first arrived.
fn unique(records: &[Record]) -> Vec<Record> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| seen.insert(r.id.clone()))
        .cloned()
        .collect()
}

/// Waits until the `n`-th distinct record arrived and returns it.
fn nth(platform: &Platform, n: usize) -> Record {
    assert!(
        platform.wait_until(Duration::from_secs(15), |r| unique(&r.records).len() >= n),
        "record {n} arrives; got {:?}",
        platform.records()
    );
    unique(&platform.records())[n - 1].clone()
}

fn closed(r: &Record) -> Option<CloseReason> {
    let event = r.session.as_ref()?;
    (event.event == SessionEventKind::Close).then_some(event.reason?)
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

/// Asserts no raw id (nor its first 14 digits: region and birth date) is in
/// any of `places`.
fn assert_nowhere(ids: &[String], places: &[(String, Vec<u8>)]) {
    assert!(!places.is_empty());
    for id in ids {
        for needle in [id.as_str(), &id[..14]] {
            for (place, bytes) in places {
                let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
                assert!(!found, "raw id found in {place}");
            }
        }
    }
}

#[test]
fn a_station_binds_readings_to_sessions_through_every_end_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = broker();
    let platform = Platform::subscribe(port);
    let (mut hw, mut grip_pty, mut qr) = (
        Pty::open().unwrap(),
        Pty::open().unwrap(),
        Pty::open().unwrap(),
    );
    let config = write_config(
        dir.path(),
        port,
        &[
            DeviceEntry {
                id: "hw-1",
                profile: "height-weight-kv-line",
                port: &hw.path,
            },
            DeviceEntry {
                id: "grip-1",
                profile: "grip-dynamometer-stx-etx",
                port: &grip_pty.path,
            },
            DeviceEntry {
                id: "qr-1",
                profile: "qr-scanner-resident-id-line",
                port: &qr.path,
            },
        ],
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[station]]\nid = \"corner-1\"\ndevices = [\"hw-1\", \"grip-1\"]\nreaders = [\"qr-1\"]\nidle_timeout_seconds = 10\n");
    std::fs::write(&config, text).unwrap();
    let trace = [("FITEDGE_LOG", "trace".to_string())];
    let mut daemon = Daemon::start_with_env(&config, 1, &trace);
    wait_for_port(&daemon);
    std::thread::sleep(Duration::from_millis(500));
    let ids = resident_ids();
    let (a, b) = (&ids[0], &ids[1]);

    // A is scanned in and measured on two devices.
    qr.write_frame(&scan_frame(a)).unwrap();
    let open_a = nth(&platform, 1);
    assert_eq!(
        open_a.session.as_ref().unwrap().event,
        SessionEventKind::Open
    );
    assert_eq!(open_a.subject_ref, Some(psn(a)));
    let session_a = open_a.session_id.clone().unwrap();
    hw.write_frame(
        &Instrument::HeightWeight
            .anonymous_frame(&mut fastrand::Rng::new())
            .bytes,
    )
    .unwrap();
    let r = nth(&platform, 2);
    assert_eq!(
        (r.device_id.as_str(), r.binding),
        ("hw-1", Some(Binding::Session))
    );
    assert_eq!(
        (r.subject_ref.clone(), r.session_id.clone()),
        (Some(psn(a)), Some(session_a.clone()))
    );
    grip(&mut grip_pty);
    assert_eq!(nth(&platform, 3).session_id, Some(session_a.clone()));

    // The next scan closes A's session and opens B's.
    qr.write_frame(&scan_frame(b)).unwrap();
    let close_a = nth(&platform, 4);
    assert_eq!(
        (closed(&close_a), close_a.session_id.clone()),
        (Some(CloseReason::NextScan), Some(session_a.clone()))
    );
    assert_eq!(close_a.session.as_ref().unwrap().readings, Some(2));
    assert_eq!(nth(&platform, 5).subject_ref, Some(psn(b)));
    grip(&mut grip_pty);
    assert_eq!(nth(&platform, 6).subject_ref, Some(psn(b)));

    // A bad check digit ends B's session; the next reading is unbound.
    let mut bad = b.clone().into_bytes();
    bad[17] = if bad[17] == b'0' { b'1' } else { b'0' };
    qr.write_frame(&scan_frame(std::str::from_utf8(&bad).unwrap()))
        .unwrap();
    let rejected = nth(&platform, 7);
    assert_eq!(closed(&rejected), Some(CloseReason::RejectedScan));
    let detail = rejected.session.as_ref().unwrap().detail.clone().unwrap();
    assert!(detail.starts_with("check_digit, fingerprint "), "{detail}");
    grip(&mut grip_pty);
    let unbound = nth(&platform, 8);
    assert_eq!(
        (unbound.binding, unbound.subject_ref.clone()),
        (Some(Binding::Unbound), None)
    );

    // A's new session survives a clean restart and a SIGKILL.
    qr.write_frame(&scan_frame(a)).unwrap();
    let session = nth(&platform, 9).session_id.clone().unwrap();
    daemon.stop();
    let mut daemon = Daemon::start_with_env(&config, 2, &trace);
    wait_for_port(&daemon);
    std::thread::sleep(Duration::from_millis(500));
    grip(&mut grip_pty);
    assert_eq!(
        nth(&platform, 10).session_id,
        Some(session.clone()),
        "open after SIGTERM and start"
    );
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(5));
    let mut daemon = Daemon::start_with_env(&config, 3, &trace);
    wait_for_port(&daemon);
    std::thread::sleep(Duration::from_millis(500));
    grip(&mut grip_pty);
    let after_kill = nth(&platform, 11);
    assert_eq!(
        after_kill.session_id,
        Some(session.clone()),
        "open after a crash"
    );

    // The scanner's END code closes it; then the idle timeout closes the next.
    qr.write_frame(b"END\r").unwrap();
    assert_eq!(closed(&nth(&platform, 12)), Some(CloseReason::EndEvent));
    qr.write_frame(&scan_frame(b)).unwrap();
    nth(&platform, 13);
    let idle = nth(&platform, 14);
    assert_eq!(closed(&idle), Some(CloseReason::IdleTimeout));
    daemon.stop();

    // Nowhere: the buffer directory, the logs at trace level, the payloads.
    let mut places = files(dir.path());
    places.retain(|(p, _)| !p.ends_with("fitedge.toml"));
    for (topic, payload) in platform.received.lock().unwrap().raw.iter() {
        places.push((format!("payload on {topic}"), payload.clone()));
    }
    assert_nowhere(&ids, &places);
}

#[test]
fn the_demo_station_leaves_no_raw_id_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let port = broker();
    let platform = Platform::subscribe(port);
    let out = common::binary()
        .args(["demo", "--duration", "8", "--interval-ms", "60", "--buffer"])
        .arg(dir.path())
        .arg("--upstream")
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .env("FITEDGE_LOG", "trace")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("each bound to the person scanned in"),
        "{stdout}"
    );
    assert!(stdout.contains("unbound (no one checked in): "), "{stdout}");
    let records = platform.records();
    assert!(records.iter().any(|r| r.binding == Some(Binding::Session)));
    assert!(records.iter().any(|r| r.binding == Some(Binding::Unbound)));
    let mut places = files(dir.path());
    places.push(("demo stdout".into(), out.stdout.clone()));
    places.push(("demo log (trace)".into(), out.stderr.clone()));
    for (topic, payload) in platform.received.lock().unwrap().raw.iter() {
        places.push((format!("payload on {topic}"), payload.clone()));
    }
    assert_nowhere(&resident_ids(), &places);
}
