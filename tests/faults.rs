//! The fault suite: the real binary as a child process, Debian's mosquitto
//! as the broker, a station streaming frames, and faults injected while it
//! runs: SIGKILL at random moments, broker outages, a broker that never
//! acknowledges, a full disk, a corrupted database. Each scenario checks
//! that no accepted record is lost, that duplicates stay bounded, and that
//! the gateway is alive and forwarding afterwards, and prints a summary.
//!
//! Size: `FITEDGE_FAULT_KILLS` SIGKILLs in the kill scenario (default 20).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{
    open_buffer, seq_report, wait_for_port, write_config, Daemon, DeviceEntry, Mosquitto,
    NoAckBroker, NotifySocket, Platform, Station,
};
use fitedge::sim::Pty;

const WINDOW: usize = 20; // inflight_window in common::write_config

/// Checks the platform got every record the gateway accepted, and prints
/// the scenario's line of the summary. Returns the duplicate count.
fn account(
    scenario: &str,
    dir: &std::path::Path,
    platform: &Platform,
    crashes: usize,
    frames_sent: usize,
) -> usize {
    let outbox = open_buffer(dir);
    let accepted = outbox.head();
    let pending = outbox.pending();
    drop(outbox);
    let records = platform.records();
    let (seqs, duplicates) = seq_report(&records);
    let lost: Vec<u64> = (0..accepted).filter(|s| !seqs.contains(s)).collect();
    summary!(
        "fault summary: {scenario}: crashes {crashes}, frames sent {frames_sent}, records accepted {accepted}, delivered {}, lost {}, duplicated {duplicates}, still buffered {pending}",
        seqs.len(),
        lost.len()
    );
    assert_eq!(
        pending, 0,
        "{scenario}: everything accepted was acknowledged"
    );
    assert!(
        lost.is_empty(),
        "{scenario}: accepted records missing upstream: {lost:?}"
    );
    duplicates
}

fn config_with(
    dir: &std::path::Path,
    port: u16,
    pty: &Pty,
    extra_upstream: &str,
) -> std::path::PathBuf {
    let config = write_config(
        dir,
        port,
        &[DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: &pty.path,
        }],
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[status]", &format!("{extra_upstream}\n[status]"));
    std::fs::write(&config, text).unwrap();
    config
}

fn drain_and_stop(daemon: &mut Daemon, station: &Station, platform: &Platform) {
    station.pause();
    platform.wait_quiet(Duration::from_secs(2), Duration::from_secs(60));
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait(Duration::from_secs(15))
        .expect("SIGTERM stops the daemon");
    assert!(
        status.success(),
        "clean exit after the faults:\n{}",
        daemon.log_text()
    );
}

#[test]
fn sigkill_at_random_moments_loses_no_accepted_record() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let kills: usize = std::env::var("FITEDGE_FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let platform = Platform::subscribe(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open().unwrap();
    let config = config_with(dir.path(), broker.port, &pty, "");
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let station = Station::start(pty);
    let mut rng = fastrand::Rng::with_seed(42);
    for n in 1..=kills {
        std::thread::sleep(Duration::from_millis(rng.u64(50..700)));
        daemon.signal(libc::SIGKILL);
        assert!(daemon.wait(Duration::from_secs(10)).is_some());
        daemon = Daemon::start(&config, n);
        wait_for_port(&daemon);
    }
    let before = platform.record_count();
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() > before + 20),
        "forwarding after {kills} kills:\n{}",
        daemon.log_text()
    );
    drain_and_stop(&mut daemon, &station, &platform);
    let duplicates = account(
        "sigkill",
        dir.path(),
        &platform,
        kills,
        station.written().len(),
    );
    // Per crash: the in-flight window, plus acknowledgements not yet written.
    assert!(
        duplicates <= kills * (WINDOW + 150),
        "{duplicates} duplicates for {kills} crashes"
    );
}

#[test]
fn broker_stopped_and_restarted_mid_stream() {
    let Some(mut broker) = Mosquitto::start() else {
        return;
    };
    let platform = Platform::subscribe(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open().unwrap();
    let config = config_with(dir.path(), broker.port, &pty, "");
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let station = Station::start(pty);
    for outage in 1..=3 {
        let before = platform.record_count();
        assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() > before + 30));
        // Let what was published arrive, then take the broker away mid-stream.
        broker.kill();
        std::thread::sleep(Duration::from_millis(800));
        // Hold the gateway while the broker returns and the platform resubscribes.
        daemon.signal(libc::SIGSTOP);
        broker.restart();
        assert!(
            platform.wait_until(Duration::from_secs(20), |r| r.subacks > outage),
            "platform resubscribed"
        );
        daemon.signal(libc::SIGCONT);
    }
    let before = platform.record_count();
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() > before + 30),
        "forwarding after the outages"
    );
    drain_and_stop(&mut daemon, &station, &platform);
    // Records the old broker acknowledged but had not yet passed on when it
    // was killed are the broker's loss, not the gateway's: count what the
    // gateway itself still held at each outage, which must all arrive.
    let outbox = open_buffer(dir.path());
    assert_eq!(outbox.pending(), 0);
    let accepted = outbox.head();
    drop(outbox);
    let (seqs, duplicates) = seq_report(&platform.records());
    let missing = (0..accepted).filter(|s| !seqs.contains(s)).count();
    summary!("fault summary: broker outages: outages 3, frames sent {}, records accepted {accepted}, delivered {}, lost upstream by the killed broker {missing}, duplicated {duplicates}", station.written().len(), seqs.len());
    assert!(missing <= 3 * WINDOW, "at most the in-flight window per outage can have been acknowledged but not delivered by the broker: {missing}");
}

#[test]
fn a_broker_that_never_acknowledges_stalls_the_watchdog_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fake = NoAckBroker::start(port);
    let mut pty = Pty::open().unwrap();
    let config = config_with(dir.path(), port, &pty, "stall_seconds = 5");
    let notify = NotifySocket::bind(dir.path());
    let env = [
        ("NOTIFY_SOCKET", notify.path.display().to_string()),
        ("WATCHDOG_USEC", "1000000".to_string()),
    ];
    let mut daemon = Daemon::start_with_env(&config, 0, &env);
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(5);
    for n in 1..=50 {
        pty.write_frame(
            &fitedge::sim::Instrument::HeightWeight
                .frame(n, &mut rng)
                .bytes,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(notify.saw("READY=1"), "READY once the buffer is open");
    let fed_early = notify.watchdog_times().len();
    assert!(
        fed_early >= 2,
        "the watchdog is fed while healthy ({fed_early})"
    );
    // No PUBACK for stall_seconds: the gateway must stop feeding the watchdog.
    std::thread::sleep(Duration::from_secs(6));
    let stalled_since = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let fed_while_stalled = notify
        .watchdog_times()
        .iter()
        .filter(|t| **t > stalled_since)
        .count();
    assert_eq!(
        fed_while_stalled, 0,
        "a stalled uplink must starve the watchdog"
    );
    assert!(
        daemon.log_text().contains("no PUBACK"),
        "{}",
        daemon.log_text()
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the gateway itself keeps running"
    );

    // The platform's broker comes back for real: everything arrives.
    drop(fake);
    daemon.signal(libc::SIGSTOP);
    let Some(mosquitto) = Mosquitto::start_on(port) else {
        daemon.signal(libc::SIGCONT);
        return;
    };
    let platform = Platform::subscribe(mosquitto.port);
    daemon.signal(libc::SIGCONT);
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= 50),
        "{}",
        daemon.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        notify
            .watchdog_times()
            .iter()
            .any(|t| *t > stalled_since + Duration::from_secs(2)),
        "fed again once acknowledgements flow"
    );
    daemon.stop();
    let duplicates = account("never-acknowledging broker", dir.path(), &platform, 0, 50);
    assert!(duplicates <= WINDOW, "{duplicates}");
}

/// A small tmpfs the test mounts, removed on drop.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    fn mount(megabytes: u32) -> Result<TinyFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m"),
                "fitedge-test",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(TinyFs { dir })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn a_full_disk_holds_readings_back_until_space_returns() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let fs = match TinyFs::mount(16) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED full-disk scenario: cannot mount a small tmpfs here ({e}); the buffer's byte limit is tested in the outbox unit tests");
            return;
        }
    };
    let platform = Platform::subscribe(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let config = config_with(dir.path(), broker.port, &pty, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("buffer").display().to_string(),
        &fs.dir.path().join("buffer").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(8);
    for n in 1..=20 {
        pty.write_frame(
            &fitedge::sim::Instrument::HeightWeight
                .frame(n, &mut rng)
                .bytes,
        )
        .unwrap();
    }
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20));
    // Another program fills the disk.
    let filler = fs.dir.path().join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output();
    for n in 21..=60 {
        pty.write_frame(
            &fitedge::sim::Instrument::HeightWeight
                .frame(n, &mut rng)
                .bytes,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        daemon
            .log_text()
            .contains("Could not store records; holding them and retrying.")
    });
    let log = daemon.log_text();
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "alive on a full disk:\n{log}"
    );
    if refused {
        assert!(
            log.contains("No space left") || log.contains("os error 28"),
            "the error says why:\n{log}"
        );
    }
    // Space comes back: the held readings are stored and sent.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= 60),
        "readings held during the full disk arrive: {}\n{}",
        platform.record_count(),
        daemon.log_text()
    );
    daemon.stop();
    let outbox =
        fitedge::outbox::Outbox::open(&fs.dir.path().join("buffer"), common::outbox_options(5000))
            .unwrap();
    let (accepted, pending) = (outbox.head(), outbox.pending());
    drop(outbox);
    let (seqs, duplicates) = seq_report(&platform.records());
    summary!("fault summary: full disk: frames sent 60, full-disk write failures seen {refused}, records accepted {accepted}, delivered {}, lost {}, duplicated {duplicates}", seqs.len(), (0..accepted).filter(|s| !seqs.contains(s)).count());
    assert_eq!(
        (accepted, pending),
        (60, 0),
        "every frame was accepted once space returned, none lost:\n{}",
        daemon.log_text()
    );
    assert!((0..accepted).all(|s| seqs.contains(&s)));
}

#[test]
fn a_corrupted_database_is_moved_aside_and_the_gateway_carries_on() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let platform = Platform::subscribe(broker.port);
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let config = config_with(dir.path(), broker.port, &pty, "");
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(9);
    for n in 1..=10 {
        pty.write_frame(
            &fitedge::sim::Instrument::HeightWeight
                .frame(n, &mut rng)
                .bytes,
        )
        .unwrap();
    }
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 10));
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    // Garbage over the database files, as a failing SD card leaves them.
    for name in ["db", "conf"] {
        std::fs::write(dir.path().join("buffer").join(name), vec![0xA5; 8192]).unwrap();
    }
    let mut daemon = Daemon::start(&config, 1);
    wait_for_port(&daemon);
    for n in 11..=20 {
        pty.write_frame(
            &fitedge::sim::Instrument::HeightWeight
                .frame(n, &mut rng)
                .bytes,
        )
        .unwrap();
    }
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20),
        "forwarding on a fresh buffer:\n{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(log.contains("moving it aside"), "logged loudly:\n{log}");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("buffer.corrupt-")
        })
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the unreadable buffer is kept for inspection"
    );
    let reported = platform.received.lock().unwrap().statuses.iter().any(|s| {
        s["health"]["counters"]["buffer_moved_aside"]
            .as_str()
            .is_some_and(|p| p.contains("buffer.corrupt-"))
    });
    assert!(reported, "the move is reported upstream in the status");
    // The new buffer is a new epoch: seq starts again, and says so.
    let records = platform.records();
    let epochs: std::collections::BTreeSet<_> = records.iter().map(|r| r.epoch.clone()).collect();
    assert_eq!(epochs.len(), 2, "two epochs: {epochs:?}");
    assert!(epochs.iter().all(|e| e.is_some()));
    for epoch in &epochs {
        let seqs: std::collections::BTreeSet<u64> = records
            .iter()
            .filter(|r| &r.epoch == epoch)
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (0..10).collect(), "each epoch counts from 0");
    }
    let heartbeat_epochs: std::collections::BTreeSet<_> = platform
        .received
        .lock()
        .unwrap()
        .statuses
        .iter()
        .filter_map(|s| s["health"]["buffer_epoch"].as_str().map(str::to_string))
        .map(Some)
        .collect();
    assert_eq!(heartbeat_epochs, epochs, "the heartbeat names each epoch");
    daemon.stop();
    summary!(
        "fault summary: corrupted database: moved aside {}, records after recovery 10 delivered",
        aside[0].file_name().to_string_lossy()
    );
}

/// A slot the card corrupted in the middle of a backlog is moved to the
/// quarantine file and every other record is delivered; the count reaches
/// the platform in the status and the bytes `fitedge buffer export
/// --quarantine`.
#[test]
fn an_unreadable_slot_is_quarantined_and_the_rest_delivered() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let config = config_with(dir.path(), port, &pty, "");
    let status = common::enable_status(&config);
    // No broker yet: the readings wait in the buffer.
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(12);
    for n in 1..=12 {
        pty.write_frame(
            &fitedge::sim::Instrument::HeightWeight
                .frame(n, &mut rng)
                .bytes,
        )
        .unwrap();
    }
    let accepted = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        common::status_report(status)["health"]["counters"]["records_accepted"] == 12
    });
    assert!(accepted, "12 readings buffered:\n{}", daemon.log_text());
    daemon.stop();

    // Garbage over record 5's slot, as a failing card leaves it.
    let garbage = vec![0x5A; 40];
    {
        let db = sled::open(dir.path().join("buffer")).unwrap();
        let meta = db.get("meta").unwrap().expect("the ring's meta key");
        let capacity = u64::from_be_bytes(meta[4..12].try_into().unwrap());
        db.insert((5 % capacity).to_be_bytes(), garbage.clone())
            .unwrap();
        db.flush().unwrap();
    }

    let Some(_broker) = Mosquitto::start_on(port) else {
        return;
    };
    let platform = Platform::subscribe(port);
    let mut daemon = Daemon::start(&config, 1);
    let delivered = platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 11);
    assert!(delivered, "the rest delivered:\n{}", daemon.log_text());
    platform.wait_quiet(Duration::from_secs(1), Duration::from_secs(5));
    let (seqs, _) = seq_report(&platform.records());
    let expected: std::collections::BTreeSet<u64> = (0..12).filter(|s| *s != 5).collect();
    assert_eq!(seqs, expected, "every record but the unreadable one");
    let report = common::status_report(status);
    assert_eq!(report["health"]["counters"]["records_quarantined"], 1);
    assert_eq!(report["health"]["unacknowledged"], 0, "{report}");
    let log = daemon.log_text();
    assert!(log.contains("quarantine"), "logged:\n{log}");
    daemon.stop();

    // Reported upstream from the start of the next run.
    let mut daemon = Daemon::start(&config, 2);
    let reported = platform.wait_until(Duration::from_secs(20), |r| {
        r.statuses
            .iter()
            .any(|s| s["state"] == "online" && s["health"]["counters"]["records_quarantined"] == 1)
    });
    assert!(reported, "the count in the status:\n{}", daemon.log_text());
    daemon.stop();

    let out = common::binary()
        .args(["buffer", "export", "--quarantine", "--dir"])
        .arg(dir.path().join("buffer"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["seq"], 5);
    assert_eq!(lines[0]["hex"], "5A".repeat(40));
    summary!(
        "fault summary: unreadable slot: 12 buffered, slot 5 quarantined, {} delivered",
        seqs.len()
    );
}
