//! Against Debian's mosquitto: `fitedge demo --upstream` delivers documented
//! payloads, and records buffered while the broker is down arrive after it
//! restarts without our session (rumqttc then forgets its own queue; the
//! outbox must not).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{binary, seq_report, write_config, Daemon, DeviceEntry, Mosquitto, Platform};
use fitedge::record::Record;
use fitedge::sim::{Instrument, Pty};

#[test]
fn demo_delivers_two_device_kinds_to_mosquitto_as_documented() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let platform = Platform::subscribe(broker.port);
    let out = binary()
        .args([
            "demo",
            "--duration",
            "10",
            "--interval-ms",
            "200",
            "--upstream",
        ])
        .arg(format!("mqtt://127.0.0.1:{}", broker.port))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every reading arrived intact"), "{stdout}");
    assert!(platform.wait_until(Duration::from_secs(5), |r| r.records.len() >= 40));
    let received = platform.received.lock().unwrap();
    let profiles: BTreeSet<&str> = received
        .records
        .iter()
        .map(|r| r.profile_id.as_str())
        .collect();
    assert_eq!(
        profiles.into_iter().collect::<Vec<_>>(),
        [
            "grip-dynamometer-stx-etx",
            "heart-rate-band-hub-json",
            "height-weight-kv-line",
            "qr-scanner-resident-id-line"
        ]
    );
    // The scanner's records are the station's sessions.
    assert!(received
        .records
        .iter()
        .filter(|r| r.profile_id == "qr-scanner-resident-id-line")
        .all(|r| r.session.is_some()));
    for (topic, payload) in received.raw.iter().filter(|(t, _)| t.contains("/records/")) {
        let record: Record = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            topic,
            &fitedge::uplink::record_topic(
                "fitedge",
                &record.site_id,
                &record.gateway_id,
                &record.device_id
            )
        );
        // The payload is exactly the documented serialization.
        let as_sent: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(as_sent, serde_json::to_value(&record).unwrap());
    }
    assert!(received.statuses.iter().any(|s| s["state"] == "online"));
}

#[test]
fn records_buffered_during_a_broker_outage_arrive_after_it_restarts() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let platform = Platform::subscribe(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let config = write_config(
        dir.path(),
        broker.port,
        &[DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: &pty.path,
        }],
    );
    let mut daemon = Daemon::start(&config, 0);
    assert!((0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().contains("Connected to upstream broker.")
            && daemon.log_text().contains("Serial port opened.")
    }));
    let mut rng = fastrand::Rng::with_seed(9);
    let mut n = 0;
    let mut send = |count: u64, pty: &mut Pty| {
        for _ in 0..count {
            n += 1;
            pty.write_frame(&Instrument::HeightWeight.frame(n, &mut rng).bytes)
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    send(100, &mut pty);
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 100),
        "before the outage"
    );

    // Outage: everything read now can only be buffered.
    broker.kill();
    send(200, &mut pty);
    std::thread::sleep(Duration::from_millis(1500));
    // Hold the gateway while the broker comes back and the platform
    // resubscribes, so the replay cannot race the subscription.
    daemon.signal(libc::SIGSTOP);
    broker.restart();
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.subacks >= 2),
        "platform resubscribed"
    );
    daemon.signal(libc::SIGCONT);
    send(100, &mut pty);
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= 400),
        "after the outage: {}\n{}",
        platform.record_count(),
        daemon.log_text()
    );
    daemon.stop();

    let log = daemon.log_text();
    let fresh_sessions = log
        .lines()
        .filter(|l| {
            l.contains("Connected to upstream broker.") && l.contains("session_present=false")
        })
        .count();
    assert_eq!(
        fresh_sessions, 2,
        "first connect and the restarted broker had no session for us:\n{log}"
    );
    let outbox = common::open_buffer(dir.path());
    assert_eq!((outbox.head(), outbox.pending()), (400, 0));
    let (seqs, duplicates) = seq_report(&platform.records());
    println!("broker outage: 400 records, duplicates {duplicates}");
    assert_eq!(
        seqs,
        (0..400).collect::<BTreeSet<_>>(),
        "every record arrived"
    );
}

/// After an outage, new readings do not wait behind the backlog: they go
/// out at once while the backlog drains at `backlog_per_second`.
#[test]
fn live_readings_overtake_a_paced_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pty = Pty::open().unwrap();
    let config = write_config(
        dir.path(),
        port,
        &[DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: &pty.path,
        }],
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("backlog_per_second = 5000", "backlog_per_second = 20");
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, 0);
    assert!((0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().contains("Serial port opened.")
    }));
    // The platform is unreachable: 200 readings pile up in the buffer.
    let mut rng = fastrand::Rng::with_seed(11);
    for n in 1..=200 {
        pty.write_frame(&Instrument::HeightWeight.frame(n, &mut rng).bytes)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    // The platform comes back (the gateway held until the platform's
    // subscriber is in, so nothing goes out unseen); a new reading arrives.
    daemon.signal(libc::SIGSTOP);
    let _broker = fitedge::broker::start_on(port).unwrap();
    let platform = Platform::subscribe(port);
    daemon.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(1500));
    pty.write_frame(b"ID=LIVE;HT=170.0;WT=70.00\r\n").unwrap();
    let live = |r: &common::Received| {
        r.records
            .iter()
            .any(|r| r.subject_ref.as_deref() == Some(common::psn("LIVE").as_str()))
    };
    assert!(
        platform.wait_until(Duration::from_secs(5), live),
        "the live reading went out at once:\n{}",
        daemon.log_text()
    );
    let backlog_so_far = platform
        .records()
        .iter()
        .filter(|r| r.subject_ref.as_deref() != Some(common::psn("LIVE").as_str()))
        .count();
    println!("live lane: the new reading arrived while {backlog_so_far} of 200 backlog records had been delivered");
    assert!(
        backlog_so_far < 200,
        "the backlog had not finished draining"
    );
    // The paced backlog still drains completely.
    assert!(platform.wait_until(Duration::from_secs(30), |r| r
        .records
        .iter()
        .filter(|r| r.subject_ref.as_deref() != Some(common::psn("LIVE").as_str()))
        .count()
        >= 200));
}
