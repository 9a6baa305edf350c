//! End to end, in process: simulated instruments on pseudo-terminals ->
//! the real pipeline -> embedded broker -> a platform subscriber.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{broker, psn, write_config, DeviceEntry, Platform, GATEWAY, SITE};
use fitedge::gateway::{self, Handle};
use fitedge::record::{Quality, Transport, SCHEMA};
use fitedge::sim::{Instrument, Pty};

/// Starts the gateway in process on a config file; returns a stop sender and
/// the join handle of the thread running it.
fn start_gateway(
    config: &std::path::Path,
    handle: Handle,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<fitedge::status::Snapshot>,
) {
    let (config, profiles) = fitedge::cli::load(config).expect("valid config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(gateway::run(config, profiles, handle, async {
            let _ = stop_rx.await;
        }))
        .expect("gateway runs")
    });
    (stop_tx, thread)
}

#[test]
fn readings_from_two_instruments_arrive_intact_and_bad_frames_are_counted() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    let mut hw = Pty::open().unwrap();
    let mut grip = Pty::open().unwrap();
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
                port: &grip.path,
            },
        ],
    );
    let handle = Handle::default();
    let (stop, gateway) = start_gateway(&config, handle.clone());
    // Wait until both ports are open, so no frame is written into the void.
    let opened = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let s = handle.stats.snapshot();
        s.devices.values().filter(|d| d.connected).count() == 2
    });
    assert!(opened, "both serial ports opened");

    let mut rng = fastrand::Rng::with_seed(7);
    let mut sent = HashMap::new();
    for n in 1..=20 {
        let f = Instrument::HeightWeight.frame(n, &mut rng);
        hw.write_frame(&f.bytes).unwrap();
        sent.insert(("hw-1".to_string(), psn(&f.subject)), f);
        let f = Instrument::Grip.frame(n, &mut rng);
        grip.write_frame(&f.bytes).unwrap();
        sent.insert(("grip-1".to_string(), psn(&f.subject)), f);
        if n == 5 {
            // Corrupted check byte, line noise, a garbled line, an implausible grip.
            grip.write_frame(
                &fitedge::codec::parse_hex("024752502C53303030312C3033382E3603C8").unwrap(),
            )
            .unwrap();
            grip.write_frame(b"\xFF\xFE noise").unwrap();
            hw.write_frame(b"ID=S9999;HT=1x2.0;WT=50.00\r\n").unwrap();
            let mut bad = vec![0x02];
            bad.extend_from_slice(b"GRP,S9998,180.0\x03");
            bad.push(bad[1..].iter().fold(0, |a, b| a ^ b));
            grip.write_frame(&bad).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 41),
        "41 records arrive, got {}",
        platform.record_count()
    );
    stop.send(()).unwrap();
    let snapshot = gateway.join().unwrap();

    let records = platform.records();
    assert_eq!(records.len(), 41);
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort();
    assert_eq!(seqs, (0..41).collect::<Vec<_>>(), "gap-free sequence");
    for r in &records {
        assert_eq!(r.schema, SCHEMA);
        assert_eq!((r.gateway_id.as_str(), r.site_id.as_str()), (GATEWAY, SITE));
        assert_eq!(r.transport, Transport::Serial);
        assert_eq!(r.id.len(), 26, "ULID");
        assert!(r.received_at.ends_with('Z'));
        let subject = r.subject_ref.clone().expect("subject");
        if subject == psn("S9998") {
            assert_eq!(r.values.len(), 1);
            assert_eq!(r.values[0].value, 180.0);
            assert_eq!(
                r.values[0].quality,
                Quality::OutOfRange,
                "implausible value kept and flagged"
            );
            continue;
        }
        let frame = &sent[&(r.device_id.clone(), subject)];
        assert_eq!(r.values.len(), frame.values.len());
        for (metric, value) in &frame.values {
            let reading = r
                .value(metric)
                .unwrap_or_else(|| panic!("{metric} in {r:?}"));
            assert!(
                (reading.value - value).abs() < 1e-9,
                "{metric}: sent {value}, got {}",
                reading.value
            );
            assert_eq!(reading.quality, Quality::Ok);
            let unit = fitedge::vocabulary::Vocabulary::get()
                .metric(metric)
                .unwrap()
                .unit
                .clone();
            assert_eq!(reading.unit, unit);
        }
        assert_eq!(
            r.profile_id,
            if r.device_id == "hw-1" {
                "height-weight-kv-line"
            } else {
                "grip-dynamometer-stx-etx"
            }
        );
    }
    assert_eq!(snapshot.devices["grip-1"].frames_bad, 1, "bad BCC counted");
    assert_eq!(
        snapshot.devices["hw-1"].frames_bad, 1,
        "garbled line counted"
    );
    assert_eq!(snapshot.records_acked, 41);
    assert!(
        platform.wait_until(Duration::from_secs(5), |r| r
            .statuses
            .iter()
            .any(|s| s["state"] == "offline")),
        "offline status after a clean stop"
    );
    let statuses = platform.received.lock().unwrap().statuses.clone();
    assert_eq!(statuses[0]["state"], "online");
}

#[test]
fn a_missing_port_is_waited_for_and_an_unplugged_one_reopened() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    // A stable name (like /dev/serial/by-id/...) that points at nothing yet.
    let link: PathBuf = dir.path().join("ttyUSB-grip");
    let config = write_config(
        dir.path(),
        port,
        &[DeviceEntry {
            id: "grip-1",
            profile: "grip-dynamometer-stx-etx",
            port: &link,
        }],
    );
    let handle = Handle::default();
    let (stop, gateway) = start_gateway(&config, handle.clone());
    std::thread::sleep(Duration::from_millis(700));
    let snapshot = handle.stats.snapshot();
    assert!(!snapshot.devices["grip-1"].connected);
    assert!(snapshot.devices["grip-1"]
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("ttyUSB-grip"));

    let mut rng = fastrand::Rng::with_seed(1);
    for round in 0..2u64 {
        // Plug a device in (a new pseudo-terminal each time).
        let mut pty = Pty::open().unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&pty.path, &link).unwrap();
        let connected = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            handle.stats.snapshot().devices["grip-1"].connected
        });
        assert!(connected, "port opened in round {round}");
        for n in 0..3 {
            pty.write_frame(&Instrument::Grip.frame(round * 10 + n, &mut rng).bytes)
                .unwrap();
        }
        let want = (round as usize + 1) * 3;
        assert!(
            platform.wait_until(Duration::from_secs(10), |r| r.records.len() >= want),
            "round {round}: {} records",
            platform.record_count()
        );
        // Unplug: the device side disappears.
        drop(pty);
        let _ = std::fs::remove_file(&link);
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !handle.stats.snapshot().devices["grip-1"].connected
        });
        assert!(gone, "unplug noticed in round {round}");
    }
    stop.send(()).unwrap();
    let snapshot = gateway.join().unwrap();
    assert_eq!(snapshot.records_accepted, 6);
    assert_eq!(platform.record_count(), 6);
}
