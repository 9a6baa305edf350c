//! A device or stranger on the site network against the embedded LAN
//! broker: a taken client id, an account publishing for another's device,
//! a users file with no accounts, retained messages and new topic names by
//! the thousand, and more silent connections than the box has descriptors.

mod common;

use std::time::Duration;

use common::{
    binary, broker, embedded, enable_status, free_port, hub_config, rss_kb, status_report,
    wait_for_port, wait_log, Daemon, Device, Mosquitto, Platform, HUB_PASSWORD, HUB_USER,
};
use rumqttc::QoS;

fn publish_bands(device: &Device, from: u64, count: u64) {
    let mut rng = fastrand::Rng::with_seed(from);
    for seq in from..from + count {
        let frame = fitedge::sim::band_message((seq % 20) as u32 + 1, seq, &mut rng);
        device
            .client
            .publish("hub/hr-hub-1/hr", QoS::AtLeastOnce, false, frame.bytes)
            .unwrap();
    }
}

/// A gateway with the band hub on its embedded broker, its platform, LAN
/// port and status address.
fn hub_gateway() -> (
    Platform,
    u16,
    std::net::SocketAddr,
    Daemon,
    tempfile::TempDir,
) {
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let config = hub_config(dir.path(), upstream, &embedded(lan_port));
    let status = enable_status(&config);
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    (platform, lan_port, status, daemon, dir)
}

/// Client ids cannot silence the gateway: there is no internal link to take
/// over (the id the gateway once used for it is an ordinary id), and a
/// client id held by one account cannot be taken by another. Readings of
/// the other devices keep arriving.
#[test]
fn a_taken_client_id_silences_no_one() {
    let (platform, lan_port, status, daemon, _dir) = hub_gateway();
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().unwrap();
    publish_bands(&hub, 0, 20);
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20));

    // An account connects with the gateway's old internal id, and another
    // account with the hub's id.
    let squatter = Device::connect(lan_port, "fitedge-gateway", "spare", "other");
    assert!(
        squatter.outcome().is_ok(),
        "an ordinary id is an ordinary id"
    );
    let thief = Device::connect(lan_port, "hub-client", "spare", "other");
    assert!(
        thief.outcome().is_err(),
        "a client id held by another account is refused"
    );
    publish_bands(&hub, 20, 20);
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 40),
        "the hub's readings keep arriving: {} of 40\n{}",
        platform.record_count(),
        daemon.log_text()
    );
    let report = status_report(status);
    assert!(report["health"]["counters"]["lan_connections"].as_u64() >= Some(2));
    assert!(report["health"]["counters"]["lan_connections_refused"].as_u64() >= Some(1));
    assert!(report["health"]["counters"].get("lan_error").is_none());
}

/// An account may publish only on the topics of the devices configured
/// for it: `spare` publishing on the hub's topic is dropped and counted,
/// and nothing of it goes upstream.
#[test]
fn an_account_cannot_publish_as_another_device() {
    let (platform, lan_port, status, daemon, _dir) = hub_gateway();
    let intruder = Device::connect(lan_port, "intruder", "spare", "other");
    intruder.outcome().unwrap();
    publish_bands(&intruder, 1000, 30);
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().unwrap();
    publish_bands(&hub, 0, 10);
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 10));
    let denied = (0..100).find_map(|_| {
        let n = status_report(status)["health"]["counters"]["lan_denied"].as_u64();
        std::thread::sleep(Duration::from_millis(50));
        n.filter(|n| *n >= 30)
    });
    assert_eq!(denied, Some(30), "every publish of the intruder is denied");
    platform.wait_quiet(Duration::from_millis(500), Duration::from_secs(5));
    assert_eq!(
        platform.record_count(),
        10,
        "only the hub's readings went upstream"
    );
    let log = daemon.log_text();
    let lines = log
        .matches("LAN publish outside the account's devices")
        .count();
    assert!(
        (1..=3).contains(&lines),
        "denials logged at a bounded rate ({lines} lines)"
    );
}

/// A users file with no account lines would leave the broker open to
/// anyone: `check` refuses it, as it refuses a device whose account is not
/// in the file.
#[test]
fn a_users_file_without_accounts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), 1883, &embedded(free_port()));
    let check = || {
        let out = binary()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert!(check().0, "the hub's config is valid: {}", check().1);
    common::write_private(&dir.path().join("lan-users"), "# accounts to come\n");
    let (ok, text) = check();
    assert!(!ok && text.contains("has no account lines"), "{text}");
    common::write_private(&dir.path().join("lan-users"), "spare:other\n");
    let (ok, text) = check();
    assert!(
        !ok && text.contains("publishes as account \"hr-hub-1\""),
        "{text}"
    );
}

/// Waits until the gateway's `counter` reaches `at_least`; its value.
fn wait_counter(status: std::net::SocketAddr, counter: &str, at_least: u64) -> u64 {
    let mut seen = 0;
    for _ in 0..600 {
        seen = status_report(status)["health"]["counters"][counter]
            .as_u64()
            .unwrap_or(0);
        if seen >= at_least {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// Retained messages and new topic names cost the gateway nothing it
/// keeps: a stranger's account publishes thousands of retained 1 KiB
/// messages, each on a topic never seen before, then the hub retains its
/// own readings; memory stays where it was (before the broker was the
/// gateway's own, 200,000 retained messages grew it by 409 MB and 100,000
/// topic names by 45 MB, never given back). `FITEDGE_LAN_FLOOD` sets the
/// count (20,000 by default).
#[test]
fn retained_messages_and_new_topics_grow_no_memory() {
    let (platform, lan_port, status, daemon, _dir) = hub_gateway();
    let flood: u64 = std::env::var("FITEDGE_LAN_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().unwrap();
    let stranger = Device::connect(lan_port, "stranger", "spare", "other");
    stranger.outcome().unwrap();
    let payload = vec![b'r'; 1024];
    let retain = |from: u64, count: u64| {
        for i in from..from + count {
            stranger
                .client
                .publish(format!("kept/{i}"), QoS::AtLeastOnce, true, payload.clone())
                .unwrap();
        }
        wait_counter(status, "lan_denied", from + count)
    };
    // Warm up the allocator and the buffer, then measure.
    publish_bands(&hub, 0, 200);
    assert!(platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= 200));
    assert_eq!(retain(0, 1000), 1000);
    let pid = daemon.child.id();
    let before = rss_kb(pid);
    assert_eq!(
        retain(1000, flood),
        1000 + flood,
        "every retained message was taken and denied"
    );
    let after_stranger = rss_kb(pid);
    for seq in 200..200 + flood / 4 {
        let frame = fitedge::sim::band_message(
            (seq % 20) as u32 + 1,
            seq,
            &mut fastrand::Rng::with_seed(seq),
        );
        hub.client
            .publish("hub/hr-hub-1/hr", QoS::AtLeastOnce, true, frame.bytes)
            .unwrap();
    }
    let total = 200 + flood as usize / 4;
    assert!(
        platform.wait_until(Duration::from_secs(120), |r| r.records.len() >= total),
        "the hub's retained readings are readings like any other: {} of {total}",
        platform.record_count()
    );
    let after = rss_kb(pid);
    println!(
        "retained flood: {flood} retained 1 KiB messages on new topics, then {} retained readings; RSS {before} kB -> {after_stranger} kB -> {after} kB",
        flood / 4
    );
    assert!(
        after_stranger < before + 8 * 1024 && after < before + 12 * 1024,
        "RSS {before} kB before, {after_stranger} kB after the stranger, {after} kB at the end"
    );
}

/// More silent connections than systemd's default descriptor limit
/// (1,024, set on the daemon here) from 200 source addresses: the
/// connections over the broker's limits are closed at once, the rest once
/// their time to log in is up. Meanwhile the upstream broker restarts and
/// the uplink reconnects, a serial and a LAN reading arrive, and the
/// status endpoint answers; the log holds a few lines, not one per
/// connection.
#[test]
fn silent_connections_by_the_thousand_take_nothing_the_gateway_needs() {
    let Some(mut upstream) = Mosquitto::start() else {
        return;
    };
    let platform = Platform::subscribe(upstream.port);
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let config = hub_config(dir.path(), upstream.port, &embedded(lan_port));
    let mut pty = fitedge::sim::Pty::open().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[device]]\nid = \"hw-1\"\nprofile = \"height-weight-kv-line\"\n[device.transport]\ntype = \"serial\"\nport = \"{}\"\nbaud = 9600\n",
        pty.path.display()
    ));
    std::fs::write(&config, text).unwrap();
    let status = enable_status(&config);
    let log = dir.path().join("gateway-0.log");
    let mut command = binary();
    command
        .args(["run", "--config"])
        .arg(&config)
        .env("FITEDGE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; it only lowers the child's limit.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut daemon = Daemon {
        child: command.spawn().unwrap(),
        log,
    };
    wait_log(&daemon, "LAN broker listening.");
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(11);
    let mut serial_sent = 0;
    let mut serial = |pty: &mut fitedge::sim::Pty| {
        serial_sent += 1;
        let frame = fitedge::sim::Instrument::HeightWeight.frame(serial_sent, &mut rng);
        pty.write_frame(&frame.bytes).unwrap();
    };
    serial(&mut pty);
    assert!(platform.wait_until(Duration::from_secs(20), |r| !r.records.is_empty()));

    // The attack: 1,100 connections that never send CONNECT.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lan = std::net::SocketAddr::from(([127, 0, 0, 1], lan_port));
    let attack = |count: u32| -> Vec<tokio::net::TcpStream> {
        rt.block_on(async {
            let mut held = Vec::new();
            for i in 0..count {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 200) as u8);
                socket.bind((source, 0).into()).unwrap();
                if let Ok(stream) = socket.connect(lan).await {
                    held.push(stream);
                }
            }
            held
        })
    };
    let first = attack(1100);
    assert!(first.len() >= 1000, "{} connections opened", first.len());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .unwrap()
        .count();
    assert!(fds < 1024 - 128, "the daemon holds {fds} descriptors");

    // The platform's broker restarts while the attack goes on.
    upstream.kill();
    std::thread::sleep(Duration::from_millis(500));
    let second = attack(1100);
    let subacks = platform.received.lock().unwrap().subacks;
    upstream.restart();
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.subacks > subacks),
        "platform resubscribed"
    );
    serial(&mut pty);
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    let hub_in = (0..100).any(|_| hub.outcome().is_ok());
    assert!(
        hub_in,
        "the hub logs in once the silent connections time out"
    );
    publish_bands(&hub, 0, 1);
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| {
            r.records.iter().any(|x| x.device_id == "hw-1" && x.seq > 0)
                && r.records
                    .iter()
                    .any(|x| x.device_id.starts_with("hr-hub-1."))
        }),
        "a serial and a LAN reading arrive after the restart:\n{}",
        daemon.log_text()
    );
    let report = status_report(status);
    assert_eq!(report["uplink_connected"], true);
    assert!(report["health"]["counters"]["lan_connections_refused"].as_u64() >= Some(1000));
    drop((first, second));
    daemon.stop();
    let log = daemon.log_text();
    let lines = log.lines().count();
    println!("silent connections: 2,200 opened, daemon held {fds} descriptors, {lines} log lines");
    assert!(lines < 100, "{lines} log lines:\n{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

/// One client bursts readings at the embedded broker as fast as it can
/// while a neighbour publishes at a steady pace. The flood is held back by
/// its own in-flight budget, not dropped: every reading the broker
/// acknowledged is delivered or in the buffer, and every one of the
/// neighbour's reaches the platform.
/// Size: `FITEDGE_LAN_BURST` readings (default 50,000; 500,000 on demand).
#[test]
fn a_flooding_client_slows_itself_and_loses_nothing_it_was_acknowledged() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let burst: u64 = std::env::var("FITEDGE_LAN_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let config = hub_config(dir.path(), upstream, &embedded(lan_port));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_records = 5000", "max_records = 2000000");
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    let options = |id: &str| {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", lan_port);
        o.set_credentials(HUB_USER, HUB_PASSWORD);
        o
    };
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let started = std::time::Instant::now();
    let flood = {
        let options = options("flood");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(40);
            let messages = (0..burst).map(move |seq| {
                let band = (seq % 19) as u32 + 1;
                (seq, fitedge::sim::band_message(band, seq, &mut rng).bytes)
            });
            common::publish_acknowledged(options, "hub/hr-hub-1/hr", messages, &stop)
        })
    };
    // The neighbour: 200 readings, one every 10 ms, on its own band.
    let neighbour_from = 10_000_000u64;
    let neighbour = {
        let options = options("neighbour");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(41);
            let messages = (neighbour_from..neighbour_from + 200).map(move |seq| {
                std::thread::sleep(Duration::from_millis(10));
                (seq, fitedge::sim::band_message(20, seq, &mut rng).bytes)
            });
            common::publish_acknowledged(options, "hub/hr-hub-1/hr", messages, &stop)
        })
    };
    let neighbour_acked = neighbour.join().unwrap();
    let neighbour_done = started.elapsed();
    let flood_acked = flood.join().unwrap();
    let flood_done = started.elapsed();
    stop.store(true, Relaxed);
    let hub_seqs = |p: &Platform| -> std::collections::HashSet<u64> {
        p.records()
            .iter()
            .filter_map(|r| r.attributes.get("seq").and_then(|s| s.as_u64()))
            .collect()
    };
    let neighbour_arrived = platform.wait_until(Duration::from_secs(120), |r| {
        let arrived = r
            .records
            .iter()
            .filter(|r| r.device_id == "hr-hub-1.band-20")
            .count();
        arrived >= 200
    });
    daemon.stop();
    let delivered = hub_seqs(&platform);

    let out = binary()
        .args(["buffer", "export", "--dir"])
        .arg(dir.path().join("buffer"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut stored: std::collections::HashSet<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["attributes"]["seq"].as_u64())
        .collect();
    let still_buffered = stored.len();
    stored.extend(delivered.iter().copied());
    let flood_lost = flood_acked.iter().filter(|s| !stored.contains(s)).count();
    println!(
        "burst: {burst} readings from one client, {} acknowledged in {:.1} s ({:.0}/s), {flood_lost} of them neither delivered nor buffered ({still_buffered} still buffered); the neighbour's 200 acknowledged {} in {:.1} s, all delivered: {neighbour_arrived}",
        flood_acked.len(),
        flood_done.as_secs_f64(),
        flood_acked.len() as f64 / flood_done.as_secs_f64(),
        neighbour_acked.len(),
        neighbour_done.as_secs_f64(),
    );
    assert_eq!(flood_acked.len() as u64, burst, "the whole burst went in");
    assert_eq!(
        flood_lost, 0,
        "acknowledged readings of the burst not stored"
    );
    assert_eq!(neighbour_acked.len(), 200, "the neighbour was served");
    assert!(
        neighbour_arrived,
        "the neighbour's readings reach the platform"
    );
    assert!(neighbour_acked.iter().all(|s| delivered.contains(s)));
}
