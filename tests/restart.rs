//! Restarts of the real daemon mid-stream: SIGKILL several times and a clean
//! SIGTERM. Every record the gateway accepted must reach the platform;
//! duplicates are counted, reported and bounded.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    broker, seq_report, wait_for_port, write_config, Daemon, DeviceEntry, Platform, Station,
};
use fitedge::sim::Pty;

const KILLS: usize = 3;
const WINDOW: usize = 20; // inflight_window in common::write_config

#[test]
fn every_accepted_record_arrives_across_kills_and_a_clean_restart() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open().unwrap();
    let config = write_config(
        dir.path(),
        port,
        &[DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: &pty.path,
        }],
    );
    let mut run = 0;
    let mut daemon = Daemon::start(&config, run);
    wait_for_port(&daemon);
    let station = Station::start(pty);

    for _ in 0..KILLS {
        let before = platform.record_count();
        assert!(
            platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= before + 100),
            "records flow; log:\n{}",
            daemon.log_text()
        );
        // Mid-stream: frames are being read, buffered and published.
        daemon.signal(libc::SIGKILL);
        assert!(daemon.wait(Duration::from_secs(10)).is_some());
        station.pause();
        run += 1;
        daemon = Daemon::start(&config, run);
        wait_for_port(&daemon);
        station.resume();
    }
    let first_after_kills = station.written().len();

    // A clean stop loses nothing: every frame written reaches the platform.
    let before = platform.record_count();
    assert!(platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= before + 100));
    station.pause();
    platform.wait_quiet(Duration::from_secs(1), Duration::from_secs(30));
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait(Duration::from_secs(15))
        .expect("SIGTERM stops the daemon");
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        daemon.log_text()
    );
    assert!(daemon.log_text().contains("Gateway stopped."));
    run += 1;
    daemon = Daemon::start(&config, run);
    wait_for_port(&daemon);
    station.resume();
    let before = platform.record_count();
    assert!(platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= before + 50));
    station.pause();
    platform.wait_quiet(Duration::from_secs(1), Duration::from_secs(30));
    daemon.stop();

    // What the gateway accepted, from its own buffer.
    let outbox = common::open_buffer(dir.path());
    let accepted = outbox.head();
    assert_eq!(outbox.pending(), 0, "everything accepted was acknowledged");
    drop(outbox);

    let records = platform.records();
    let (seqs, duplicates) = seq_report(&records);
    let missing: Vec<u64> = (0..accepted).filter(|s| !seqs.contains(s)).collect();
    let written = station.written();
    let received: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.subject_ref.as_deref())
        .collect();
    let lost_frames: Vec<usize> = written
        .iter()
        .enumerate()
        .filter(|(_, s)| !received.contains(s.as_str()))
        .map(|(i, _)| i)
        .collect();
    println!(
        "restart summary: kills {KILLS}, clean restarts 2, frames written {}, records accepted {accepted}, received {}, duplicates {duplicates}, accepted but missing {}, frames never accepted {}",
        written.len(),
        records.len(),
        missing.len(),
        lost_frames.len()
    );
    assert!(
        missing.is_empty(),
        "accepted records missing upstream: {missing:?}"
    );
    assert!(seqs.iter().all(|s| *s < accepted), "no record from nowhere");
    // A crash can resend what was in flight plus acks not yet flushed (<= 500 ms of stream).
    assert!(
        duplicates <= KILLS * (WINDOW + 150),
        "{duplicates} duplicates for {KILLS} kills"
    );
    // Frames in the gateway's hands at the instant of a SIGKILL are lost; nothing else.
    assert!(
        lost_frames.len() <= KILLS * 10,
        "{} frames lost: {lost_frames:?}",
        lost_frames.len()
    );
    assert!(
        lost_frames.iter().all(|i| *i < first_after_kills),
        "no frame lost around the clean restarts: {lost_frames:?}"
    );
}
