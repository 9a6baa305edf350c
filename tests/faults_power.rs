//! Power cuts, simulated by a filesystem that forgets everything not synced
//! (`tests/power`). SIGKILL alone cannot show what a power cut loses: the
//! kernel keeps what a killed process wrote. Here the writer is killed and
//! then the unsynced data is thrown away, at random moments.
//!
//! Needs FUSE (`/dev/fuse` and Debian's `fuse3`); where that is missing the
//! tests say so and are skipped. Size: `FITEDGE_POWER_CUTS` (default 20).

#[macro_use]
mod common;
mod power;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use power::{Disk, PowerCutFs};

/// Mounts the power-cut filesystem, or explains why it cannot.
fn mount(at: &Path) -> Option<(Disk, fuser::BackgroundSession)> {
    if !Path::new("/dev/fuse").exists() {
        eprintln!(
            "SKIPPED power-cut test: /dev/fuse is missing (no FUSE in this kernel or container)"
        );
        return None;
    }
    match PowerCutFs::mount(at) {
        Ok(mounted) => Some(mounted),
        Err(e) => {
            eprintln!("SKIPPED power-cut test: cannot mount the test filesystem ({e}); install Debian's fuse3");
            None
        }
    }
}

fn cuts() -> usize {
    std::env::var("FITEDGE_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[test]
fn calibration_fsynced_data_survives_a_cut_and_sync_file_range_alone_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let Some((disk, _session)) = mount(dir.path()) else {
        return;
    };
    let path = dir.path().join("f");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all_at(b"synced", 0).unwrap();
    file.sync_data().unwrap();
    file.write_all_at(b"+range", 6).unwrap();
    // What sled's flush() does: sync_file_range only.
    // SAFETY: a plain syscall on a descriptor we own.
    let rc = unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"synced+range",
        "visible before the cut"
    );
    disk.cut();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"synced",
        "only fsynced data survives"
    );
}

/// The child half of the outbox test: appends batches to an outbox on the
/// power-cut filesystem and prints each accepted sequence number.
#[test]
fn outbox_power_cut_child() {
    let Some(dir) = std::env::var_os("FITEDGE_POWER_CHILD") else {
        return;
    };
    let options = common::outbox_options(100_000);
    let mut outbox = fitedge::outbox::Outbox::open(Path::new(&dir), options).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        let mut batch = records(fastrand::usize(1..50));
        let outcome = outbox.append(&mut batch).unwrap();
        for seq in outcome.accepted {
            writeln!(out, "{seq}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn the_outbox_loses_no_accepted_record_across_power_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let Some((disk, _session)) = mount(dir.path()) else {
        return;
    };
    let buffer = dir.path().join("buffer");
    let options = || common::outbox_options(100_000);
    let mut accepted_total = 0u64;
    let mut rng = fastrand::Rng::with_seed(77);
    for cut in 0..cuts() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "outbox_power_cut_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FITEDGE_POWER_CHILD", &buffer)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Read what it accepted for a random while, then cut the power.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(seq) = line.trim().parse::<u64>() {
                    let _ = tx.send(seq);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(rng.u64(100..600)));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        disk.cut();
        let accepted: Vec<u64> = rx.try_iter().collect();
        let mut outbox = fitedge::outbox::Outbox::open(&buffer, options())
            .unwrap_or_else(|e| panic!("cut {cut}: the buffer must open: {e}"));
        let last = accepted.last().copied();
        if let Some(last) = last {
            assert!(
                outbox.head() > last,
                "cut {cut}: record {last} was accepted but the buffer ends at {}",
                outbox.head()
            );
            let stored = outbox.read(last, 1).unwrap();
            assert_eq!(
                stored.first().map(|s| s.seq),
                Some(last),
                "cut {cut}: accepted record {last} is readable"
            );
        }
        accepted_total += accepted.len() as u64;
        drop(outbox);
    }
    let mut outbox = fitedge::outbox::Outbox::open(&buffer, options()).unwrap();
    let all = outbox.read(0, usize::MAX).unwrap();
    assert_eq!(
        all.len() as u64,
        outbox.head(),
        "every record from 0 to the head is there"
    );
    summary!(
        "power-cut summary: outbox: cuts {}, records accepted {accepted_total}, lost 0, fsyncs {}",
        cuts(),
        disk.syncs()
    );
}

#[test]
fn the_daemon_loses_no_accepted_record_across_power_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let Some((disk, _session)) = mount(&mnt) else {
        return;
    };
    let port = common::broker();
    let platform = common::Platform::subscribe(port);
    let pty = fitedge::sim::Pty::open().unwrap();
    let config = common::write_config(
        dir.path(),
        port,
        &[common::DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: &pty.path,
        }],
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &dir.path().join("buffer").display().to_string(),
        &mnt.join("buffer").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let station = common::Station::start(pty);
    let mut rng = fastrand::Rng::with_seed(78);
    let mut daemon = common::Daemon::start(&config, 0);
    common::wait_for_port(&daemon);
    for cut in 1..=cuts() {
        std::thread::sleep(Duration::from_millis(rng.u64(150..700)));
        daemon.signal(libc::SIGKILL);
        daemon.wait(Duration::from_secs(10));
        disk.cut();
        daemon = common::Daemon::start(&config, cut);
        common::wait_for_port(&daemon);
    }
    let before = platform.record_count();
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() > before + 20),
        "forwarding after the cuts:\n{}",
        daemon.log_text()
    );
    station.pause();
    platform.wait_quiet(Duration::from_secs(2), Duration::from_secs(60));
    daemon.stop();
    // A record the gateway accepted and then lost to a cut would leave its
    // sequence number to be given again to another record: one seq, two ids.
    let records = platform.records();
    let mut ids_by_seq: std::collections::BTreeMap<u64, std::collections::BTreeSet<String>> =
        Default::default();
    for r in &records {
        ids_by_seq.entry(r.seq).or_default().insert(r.id.clone());
    }
    let reused: Vec<_> = ids_by_seq
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(s, _)| *s)
        .collect();
    let outbox = common::open_buffer(&mnt);
    let head = outbox.head();
    assert_eq!(outbox.pending(), 0);
    drop(outbox);
    let missing: Vec<u64> = (0..head).filter(|s| !ids_by_seq.contains_key(s)).collect();
    let duplicates = records.len() - ids_by_seq.values().map(|ids| ids.len()).sum::<usize>();
    summary!("power-cut summary: daemon: cuts {}, frames sent {}, records accepted {head}, lost {}, duplicated {duplicates}", cuts(), station.written().len(), reused.len() + missing.len());
    assert!(
        reused.is_empty(),
        "accepted records lost to a power cut (their seq was given again): {reused:?}"
    );
    assert!(
        missing.is_empty(),
        "accepted records missing upstream: {missing:?}"
    );
}

fn records(n: usize) -> Vec<fitedge::record::Record> {
    let origin = fitedge::record::Origin {
        gateway_id: "gw".into(),
        site_id: "s".into(),
        device_id: "hw-1".into(),
        profile_id: "p".into(),
        transport: fitedge::record::Transport::Serial,
    };
    (0..n)
        .map(|_| fitedge::record::Record::new(&origin, Default::default()))
        .collect()
}

/// The outbox's lock, if it can be had within five seconds.
fn lock_within<T>(m: &std::sync::Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(guard) = m.try_lock() {
            return Some(guard);
        }
        if std::time::Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// While the writer's `fdatasync` (or a rebuild's copy) waits on a slow
/// disk, the uplink can still read and acknowledge: the outbox's lock is
/// not held through either. The filesystem holds every sync until told.
#[test]
fn the_uplink_acknowledges_while_a_sync_or_a_rebuild_is_slow() {
    use fitedge::outbox::Outbox;
    let dir = tempfile::tempdir().unwrap();
    let Some((disk, _session)) = mount(dir.path()) else {
        return;
    };
    // A failed assertion must not leave a sync held (the unmount would hang).
    struct Release(Disk);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.release_syncs();
        }
    }
    let _release = Release(disk.clone());
    let buffer = dir.path().join("buffer");
    let outbox = std::sync::Arc::new(std::sync::Mutex::new(
        Outbox::open(&buffer, common::outbox_options(1000)).unwrap(),
    ));
    let seqs = |stored: Vec<fitedge::outbox::Stored>| -> Vec<u64> {
        stored.iter().map(|s| s.seq).collect()
    };
    let (_, head) = Outbox::append_shared(&outbox, &mut records(10)).unwrap();
    assert_eq!(head, 10);

    disk.hold_syncs();
    let writer = {
        let outbox = outbox.clone();
        std::thread::spawn(move || Outbox::append_shared(&outbox, &mut records(5)))
    };
    assert!(
        disk.wait_for_held_sync(Duration::from_secs(10)),
        "the append reaches its sync"
    );
    let mut o = lock_within(&outbox).expect("the lock is free while the writer syncs");
    assert_eq!(
        seqs(o.read(0, 100).unwrap()),
        (0..10).collect::<Vec<_>>(),
        "records not yet durable are not read"
    );
    for seq in 0..10 {
        o.ack(seq).unwrap();
    }
    assert_eq!((o.tail(), o.pending()), (10, 0));
    drop(o);
    assert!(!writer.is_finished(), "the sync is still held");
    disk.release_syncs();
    let (outcome, head) = writer.join().unwrap().unwrap();
    assert_eq!(outcome.accepted, (10..15).collect::<Vec<_>>());
    assert_eq!(head, 15);
    assert_eq!(
        seqs(outbox.lock().unwrap().read(0, 100).unwrap()),
        (10..15).collect::<Vec<_>>()
    );

    disk.hold_syncs();
    let rebuilder = {
        let outbox = outbox.clone();
        std::thread::spawn(move || Outbox::reopen_shared(&outbox))
    };
    assert!(
        disk.wait_for_held_sync(Duration::from_secs(10)),
        "the rebuild reaches a sync"
    );
    let mut o = lock_within(&outbox).expect("the lock is free while the rebuild copies");
    o.ack(10).unwrap();
    assert!(o.read(0, 100).is_err(), "reads wait for the rebuild");
    drop(o);
    disk.release_syncs();
    rebuilder.join().unwrap().unwrap();
    let mut o = outbox.lock().unwrap();
    assert_eq!(
        o.tail(),
        11,
        "the acknowledgement made during the rebuild holds"
    );
    assert_eq!(seqs(o.read(0, 100).unwrap()), (11..15).collect::<Vec<_>>());
    eprintln!(
        "slow sync: 10 records read and acknowledged while an append's sync was held, 1 while a rebuild's was; {} syncs",
        disk.syncs()
    );
}

/// A band hub publishing to the embedded LAN broker as fast as it is
/// acknowledged, from a fresh connection after each cut. Returns the hub
/// counters (`seq`) the broker acknowledged.
fn hub_publisher(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut start = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut options = rumqttc::MqttOptions::new("hub", "127.0.0.1", port);
            options.set_credentials(common::HUB_USER, common::HUB_PASSWORD);
            let mut rng = fastrand::Rng::with_seed(start);
            let messages = (start..).map(move |seq| {
                let band = (seq % 20) as u32 + 1;
                (seq, fitedge::sim::band_message(band, seq, &mut rng).bytes)
            });
            let got = common::publish_acknowledged(options, "hub/hr-hub-1/hr", messages, &stop);
            // Counters of a new connection never repeat.
            start = got.iter().max().map_or(start, |m| m + 1) + 1_000;
            acked.extend(got);
            std::thread::sleep(Duration::from_millis(100));
        }
        acked
    })
}

/// Power cuts while a band hub publishes on the LAN (`lan` is the `[lan]`
/// body, `ready` the log line that says the gateway listens again, and
/// `publisher` starts the hub, returning what its broker acknowledged).
/// Every reading acknowledged to the hub must reach the platform, and none
/// under two record ids. Half the cuts run with a 500 ms flush window,
/// where acknowledgements wait longest.
fn lan_power_cuts(
    scenario: &str,
    lan: &str,
    ready: &str,
    publisher: impl FnOnce(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<Vec<u64>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt).unwrap();
    let Some((disk, _session)) = mount(&mnt) else {
        return;
    };
    let upstream = common::broker();
    let platform = common::Platform::subscribe(upstream);
    let config = common::hub_config(dir.path(), upstream, lan);
    // A ring large enough that no reading is dropped for room.
    let base = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &dir.path().join("buffer").display().to_string(),
            &mnt.join("buffer").display().to_string(),
        )
        .replace("max_records = 5000", "max_records = 1000000");
    let window = |ms: u64| {
        let text = base.replace("[buffer]\n", &format!("[buffer]\nflush_window_ms = {ms}\n"));
        std::fs::write(&config, text).unwrap();
    };
    window(0);
    let mut daemon = common::Daemon::start(&config, 0);
    common::wait_log(&daemon, ready);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = publisher(stop.clone());
    let mut rng = fastrand::Rng::with_seed(80);
    for cut in 1..=cuts() {
        std::thread::sleep(Duration::from_millis(rng.u64(300..900)));
        daemon.signal(libc::SIGKILL);
        daemon.wait(Duration::from_secs(10));
        disk.cut();
        window(if cut % 2 == 0 { 0 } else { 500 });
        daemon = common::Daemon::start(&config, cut);
        common::wait_log(&daemon, ready);
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = publisher.join().unwrap();
    let all_in = platform.wait_until(Duration::from_secs(120), |r| {
        let seqs: std::collections::HashSet<u64> = r
            .records
            .iter()
            .filter_map(|r| r.attributes.get("seq").and_then(|s| s.as_u64()))
            .collect();
        acked.iter().all(|s| seqs.contains(s))
    });
    platform.wait_quiet(Duration::from_secs(2), Duration::from_secs(60));
    daemon.stop();
    let mut ids: std::collections::HashMap<u64, std::collections::HashSet<String>> =
        Default::default();
    let records = platform.records();
    for r in &records {
        if let Some(seq) = r.attributes.get("seq").and_then(|s| s.as_u64()) {
            ids.entry(seq).or_default().insert(r.id.clone());
        }
    }
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|s| !ids.contains_key(s))
        .collect();
    let twice: Vec<u64> = ids
        .iter()
        .filter(|(_, i)| i.len() > 1)
        .map(|(s, _)| *s)
        .collect();
    summary!(
        "power-cut summary: {scenario}: cuts {}, readings acknowledged {}, arrived {}, lost {}, stored twice {}, sent again under the same id {}",
        cuts(),
        acked.len(),
        ids.len(),
        lost.len(),
        twice.len(),
        records.len() - ids.values().map(|i| i.len()).sum::<usize>()
    );
    assert!(acked.len() > 100, "the hub got readings through");
    assert!(all_in || !lost.is_empty());
    assert!(lost.is_empty(), "acknowledged readings lost: {lost:?}");
    assert!(twice.is_empty(), "readings stored twice: {twice:?}");
}

/// The embedded LAN broker acknowledges a reading only once it is durable.
#[test]
fn the_embedded_lan_broker_loses_no_acknowledged_reading_across_power_cuts() {
    let lan_port = common::free_port();
    lan_power_cuts(
        "embedded LAN broker",
        &common::embedded(lan_port),
        "LAN broker listening.",
        |stop| hub_publisher(lan_port, stop),
    );
}

/// Subscribed to the site's broker (mosquitto, persistent session): what
/// mosquitto acknowledged to the hub reaches the platform, and what it
/// sends again after a cut (DUP) is not stored twice.
#[test]
fn subscribing_to_the_site_broker_loses_and_doubles_nothing_across_power_cuts() {
    let Some(site) = common::Mosquitto::start() else {
        return;
    };
    let port = site.port;
    lan_power_cuts(
        "site broker",
        &common::subscribe(port),
        "Subscribed to the site's MQTT broker.",
        |stop| {
            std::thread::spawn(move || {
                let options = rumqttc::MqttOptions::new("site-hub", "127.0.0.1", port);
                let mut rng = fastrand::Rng::with_seed(81);
                // 500 a second: a busy hub, within what the gateway drains.
                let messages = (0..).map(move |seq| {
                    std::thread::sleep(Duration::from_millis(2));
                    let band = (seq % 20) as u32 + 1;
                    (seq, fitedge::sim::band_message(band, seq, &mut rng).bytes)
                });
                common::publish_acknowledged(options, "hub/hr-hub-1/hr", messages, &stop)
            })
        },
    );
}
