//! Restarts of the real daemon mid-stream: SIGKILL several times and a clean
//! SIGTERM. Every record the gateway accepted must reach the platform;
//! duplicates are counted, reported and bounded.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{broker, seq_report, write_config, Daemon, DeviceEntry, Platform};
use fitedge::sim::{Instrument, Pty};

const KILLS: usize = 3;
const WINDOW: usize = 20; // inflight_window in common::write_config

/// A height/weight station writing a frame every few milliseconds while
/// `running`; remembers the subject of every frame written.
struct Station {
    running: Arc<AtomicBool>,
    written: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Station {
    fn start(mut pty: Pty) -> Station {
        let running = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let written: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, s, w) = (running.clone(), stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(3);
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                if r.load(Ordering::Relaxed) {
                    n += 1;
                    let frame = Instrument::HeightWeight.frame(n, &mut rng);
                    if pty.write_frame(&frame.bytes).is_ok() {
                        w.lock().unwrap().push(frame.subject);
                    }
                }
                std::thread::sleep(Duration::from_millis(4));
            }
        });
        Station {
            running,
            written,
            stop,
            thread: Some(thread),
        }
    }

    fn pause(&self) {
        self.running.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }

    fn resume(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    fn written(&self) -> Vec<String> {
        self.written.lock().unwrap().clone()
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_for_port(daemon: &Daemon) {
    let opened = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().contains("Serial port opened.")
    });
    assert!(
        opened,
        "daemon opened its port; log:\n{}",
        daemon.log_text()
    );
}

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
    std::thread::sleep(Duration::from_millis(300));
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
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal(libc::SIGTERM);
    assert!(daemon
        .wait(Duration::from_secs(15))
        .expect("stops")
        .success());

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
