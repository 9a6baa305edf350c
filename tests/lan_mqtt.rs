//! LAN MQTT devices with real MQTT clients: a band hub for 20 wearers over
//! the embedded broker, wrong credentials refused, a malformed-payload storm
//! while good devices keep flowing, and (against mosquitto as the site's
//! broker) a gateway killed mid-stream losing nothing the broker holds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    broker, embedded, free_port, hub_config, psn, rss_kb, wait_log, Daemon, Device, Mosquitto,
    Platform, HUB_PASSWORD, HUB_USER,
};
use rumqttc::QoS;

/// A device that speaks MQTT over TLS reaches the embedded broker's TLS
/// listener (with its account), and its readings go upstream; the plain
/// listener beside it keeps working.
#[test]
fn a_device_over_tls_reaches_the_embedded_broker() {
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let ca = common::Ca::new(dir.path(), "site-ca");
    let server = ca.issue("gateway-lan", &["localhost"], common::Use::Server);
    let (plain, secure) = (free_port(), free_port());
    let lan = format!(
        "{}\ntls_listen = [\"127.0.0.1:{secure}\"]\n\n[lan.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        embedded(plain),
        server.cert.display(),
        server.key.display()
    );
    let config = hub_config(dir.path(), upstream, &lan);
    let status = common::enable_status(&config);
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    let report = common::status_report(status);
    let expires = report["health"]["counters"]["lan_cert_expires"].as_str();
    assert!(
        expires.is_some_and(|at| at.ends_with('Z') && at > "2026"),
        "the LAN certificate's expiry in status: {expires:?}"
    );
    let hub = Device::connect_tls(secure, "hub-tls", HUB_USER, HUB_PASSWORD, &ca.cert);
    hub.outcome().expect("the hub connects over TLS");
    let stranger = Device::connect_tls(secure, "hub-bad", HUB_USER, "wrong", &ca.cert);
    assert!(stranger.outcome().is_err(), "accounts hold over TLS too");
    let mut rng = fastrand::Rng::with_seed(21);
    for seq in 0..20u64 {
        let frame = fitedge::sim::band_message(1 + (seq % 4) as u32, seq, &mut rng);
        hub.client
            .publish("hub/hr-hub-1/hr", QoS::AtLeastOnce, false, frame.bytes)
            .unwrap();
    }
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20),
        "{} of 20 over TLS:\n{}",
        platform.record_count(),
        daemon.log_text()
    );
    let plain_hub = Device::connect(plain, "hub-plain", HUB_USER, HUB_PASSWORD);
    plain_hub
        .outcome()
        .expect("the plain listener still serves");
}

/// Subscribe mode over TLS to a site broker (mosquitto) that requires a
/// client certificate and an account.
#[test]
fn subscribing_to_the_site_broker_over_mutual_tls() {
    if !common::have_mosquitto() {
        return;
    }
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let ca = common::Ca::new(dir.path(), "site-ca");
    let server = ca.issue("site-broker", &["localhost"], common::Use::Server);
    let client = ca.issue("gateway", &["gw-test"], common::Use::Client);
    let site = common::MosquittoTls::start(
        dir.path(),
        common::TlsListener {
            ca: &ca,
            server: &server,
            require_certificate: true,
            account: Some(("fitedge", "site-secret")),
        },
    );
    common::write_private(&dir.path().join("site.password"), "site-secret\n");
    let lan = format!(
        "type = \"subscribe\"\nhost = \"localhost\"\nport = {}\nusername = \"fitedge\"\npassword_file = \"site.password\"\n\n[lan.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        site.tls,
        ca.cert.display(),
        client.cert.display(),
        client.key.display()
    );
    let config = hub_config(dir.path(), upstream, &lan);
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "Subscribed to the site's MQTT broker.");
    std::thread::sleep(Duration::from_millis(300));
    // The hub publishes on the site broker's plain listener.
    let hub = Device::connect(site.plain, "site-hub", "x", "y");
    hub.outcome().unwrap();
    let mut rng = fastrand::Rng::with_seed(41);
    for seq in 1..=20u64 {
        let frame = fitedge::sim::band_message((seq % 5 + 1) as u32, seq, &mut rng);
        hub.client
            .publish("hub/hr-hub-1/hr", QoS::AtLeastOnce, false, frame.bytes)
            .unwrap();
    }
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20),
        "{} of 20 through the TLS site broker:\n{}",
        platform.record_count(),
        daemon.log_text()
    );
}

#[test]
fn a_band_hub_for_20_wearers_arrives_upstream_per_band() {
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let config = hub_config(dir.path(), upstream, &embedded(lan_port));
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().expect("the hub's account is accepted");
    let mut rng = fastrand::Rng::with_seed(20);
    let mut sent = BTreeMap::new();
    for round in 0..10u64 {
        for band in 1..=20u32 {
            let seq = round * 20 + band as u64;
            let frame = fitedge::sim::band_message(band, seq, &mut rng);
            hub.client
                .publish(
                    "hub/hr-hub-1/hr",
                    QoS::AtLeastOnce,
                    false,
                    frame.bytes.clone(),
                )
                .unwrap();
            sent.insert(seq, (band, frame));
        }
    }
    assert!(
        platform.wait_until(Duration::from_secs(30), |r| r.records.len() >= 200),
        "{} of 200:\n{}",
        platform.record_count(),
        daemon.log_text()
    );
    let mut daemon = daemon;
    daemon.stop();
    let log = daemon.log_text();
    let window = log
        .lines()
        .find(|l| l.contains("Gateway stopped."))
        .and_then(|l| l.split("lan_durable_ms_median=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    println!("band hub: 200 messages from 20 bands; median time from the embedded broker's receipt to the record being durable: {window} ms");
    let records = platform.records();
    let devices: BTreeSet<&str> = records.iter().map(|r| r.device_id.as_str()).collect();
    assert_eq!(devices.len(), 20, "one device id a band: {devices:?}");
    for r in &records {
        assert_eq!(r.transport, fitedge::record::Transport::Mqtt);
        assert_eq!(r.profile_id, "heart-rate-band-hub-json");
        let seq = r.attributes["seq"]
            .as_u64()
            .expect("the hub's own counter passes through");
        let (band, frame) = &sent[&seq];
        assert_eq!(r.device_id, format!("hr-hub-1.band-{band:02}"));
        assert_eq!(r.subject_ref, Some(psn(&frame.subject)));
        assert_eq!(
            r.value("vital.heart_rate").unwrap().value,
            frame.values[0].1
        );
    }
}

#[test]
fn wrong_credentials_are_refused() {
    let upstream = broker();
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let config = hub_config(dir.path(), upstream, &embedded(lan_port));
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    assert!(
        Device::connect(lan_port, "intruder", HUB_USER, "guess")
            .outcome()
            .is_err(),
        "a wrong password is refused"
    );
    assert!(
        Device::connect(lan_port, "stranger", "nobody", "x")
            .outcome()
            .is_err(),
        "an unknown user is refused"
    );
    assert!(
        Device::connect(lan_port, "hub", HUB_USER, HUB_PASSWORD)
            .outcome()
            .is_ok(),
        "the right account still works"
    );
}

#[test]
fn a_malformed_storm_does_not_stop_good_devices_and_memory_stays_bounded() {
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let config = hub_config(dir.path(), upstream, &embedded(lan_port));
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().unwrap();
    // The storm comes from a second connection of the hub's own account,
    // which may publish on the hub's topics.
    let storm = Device::connect(lan_port, "storm", HUB_USER, HUB_PASSWORD);
    storm.outcome().unwrap();
    // Warm up, then measure.
    let mut rng = fastrand::Rng::with_seed(30);
    for seq in 1..=20 {
        hub.client
            .publish(
                "hub/hr-hub-1/hr",
                QoS::AtLeastOnce,
                false,
                fitedge::sim::band_message(1, seq, &mut rng).bytes,
            )
            .unwrap();
    }
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20));
    let rss_before = rss_kb(daemon.child.id());
    let mut seq = 20;
    let mut rss_mid = 0;
    let storm_size: u32 = std::env::var("FITEDGE_STORM_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    for i in 0..storm_size {
        let (topic, payload): (&str, Vec<u8>) = match i % 5 {
            0 => ("hub/hr-hub-1/hr", b"\x00\xff not json at all".to_vec()),
            1 => (
                "hub/hr-hub-1/hr",
                br#"{"band":"band-09","hr":"fast"}"#.to_vec(),
            ),
            2 => (
                "hub/hr-hub-1/hr",
                br#"{"band":["x"],"hr":{"deep":[1,2,3]}}"#.to_vec(),
            ),
            3 => ("unknown/device/topic", br#"{"hr":70}"#.to_vec()),
            _ => ("hub/hr-hub-1/hr", vec![b'{'; 3000]),
        };
        storm
            .client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .unwrap();
        if i == storm_size / 2 {
            std::thread::sleep(Duration::from_millis(500));
            rss_mid = rss_kb(daemon.child.id());
        }
        if i % 50 == 0 {
            seq += 1;
            hub.client
                .publish(
                    "hub/hr-hub-1/hr",
                    QoS::AtLeastOnce,
                    false,
                    fitedge::sim::band_message(2, seq, &mut rng).bytes,
                )
                .unwrap();
        }
    }
    let good = (seq - 20) as usize;
    assert!(
        platform.wait_until(Duration::from_secs(60), |r| r.records.len() >= 20 + good),
        "good readings during the storm: {} of {}\n{}",
        platform.record_count() - 20,
        good,
        daemon
            .log_text()
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Oversized payloads are refused by the broker itself.
    storm
        .client
        .publish("hub/hr-hub-1/hr", QoS::AtMostOnce, false, vec![b'x'; 8192])
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kb(daemon.child.id());
    let log = daemon.log_text();
    let rejected_lines = log
        .lines()
        .filter(|l| l.contains("Frame rejected."))
        .count();
    println!("storm: {storm_size} malformed messages, {good} good readings all delivered, gateway RSS {rss_before} kB -> {rss_mid} kB (half) -> {rss_after} kB (end), {rejected_lines} rejection log lines");
    assert!(
        rss_after < rss_mid + 8 * 1024,
        "memory keeps growing in the second half: {rss_mid} kB -> {rss_after} kB"
    );
    assert!(daemon.child.id() > 0 && rss_after > 0);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} kB to {rss_after} kB"
    );
    assert!(
        (1..=10).contains(&rejected_lines),
        "rejections are logged, rate-limited, not one line each ({rejected_lines})"
    );
    assert!(
        log.contains("LAN publish outside the account's devices"),
        "topics of no device are reported"
    );
    let records = platform.records();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.device_id == "hr-hub-1.band-09")
            .count(),
        0,
        "nothing malformed got through"
    );
}

#[test]
fn subscribing_to_the_site_broker_loses_nothing_when_the_gateway_is_killed() {
    let Some(site) = Mosquitto::start() else {
        return;
    };
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), upstream, &common::subscribe(site.port));
    let mut daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "Subscribed to the site's MQTT broker.");
    std::thread::sleep(Duration::from_millis(300));
    let hub = Device::connect(site.port, "site-hub", "x", "y");
    hub.outcome().unwrap();
    let mut rng = fastrand::Rng::with_seed(40);
    let total = 300u64;
    for seq in 1..=total {
        hub.client
            .publish(
                "hub/hr-hub-1/hr",
                QoS::AtLeastOnce,
                false,
                fitedge::sim::band_message((seq % 20 + 1) as u32, seq, &mut rng).bytes,
            )
            .unwrap();
        if seq == 150 {
            std::thread::sleep(Duration::from_millis(100));
            daemon.signal(libc::SIGKILL);
            daemon.wait(Duration::from_secs(10));
        }
        if seq == 200 {
            daemon = Daemon::start(&config, 1);
            wait_log(&daemon, "Subscribed to the site's MQTT broker.");
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let got = |p: &Platform| {
        p.records()
            .iter()
            .filter_map(|r| r.attributes.get("seq").and_then(|s| s.as_u64()))
            .collect::<BTreeSet<u64>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got(&platform).len() < total as usize && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let seqs = got(&platform);
    let missing: Vec<u64> = (1..=total).filter(|s| !seqs.contains(s)).collect();
    println!("site broker: {total} hub messages, gateway killed once, {} delivered, {} duplicates, missing {missing:?}", seqs.len(), platform.record_count() - seqs.len());
    assert!(
        missing.is_empty(),
        "messages the site broker held were lost: {missing:?}"
    );
    // A message the broker sent again after the kill is recognised: no
    // hub message is stored under two record ids.
    let mut ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in platform.records() {
        if let Some(seq) = r.attributes.get("seq").and_then(|s| s.as_u64()) {
            ids.entry(seq).or_default().insert(r.id);
        }
    }
    let twice: Vec<u64> = ids
        .iter()
        .filter(|(_, i)| i.len() > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
}

/// A raw MQTT peer for the site-broker tests: reads whole packets.
struct RawMqtt {
    stream: std::net::TcpStream,
    inbox: bytes::BytesMut,
}

impl RawMqtt {
    fn read(&mut self) -> rumqttc::mqttbytes::v4::Packet {
        use std::io::Read;
        loop {
            match rumqttc::mqttbytes::v4::Packet::read(&mut self.inbox, 1 << 16) {
                Ok(packet) => return packet,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    let mut chunk = [0u8; 1024];
                    let n = self
                        .stream
                        .read(&mut chunk)
                        .expect("a packet from the gateway");
                    assert!(n > 0, "the gateway closed the connection");
                    self.inbox.extend_from_slice(&chunk[..n]);
                }
                Err(e) => panic!("unreadable packet: {e:?}"),
            }
        }
    }

    fn write(&mut self, write: impl FnOnce(&mut bytes::BytesMut)) {
        use std::io::Write;
        let mut out = bytes::BytesMut::new();
        write(&mut out);
        self.stream.write_all(&out).unwrap();
    }

    /// Answers SUBSCRIBE and PINGREQ until the PUBACK for `pkid`.
    fn until_puback(&mut self, pkid: u16) {
        use rumqttc::mqttbytes::v4::{Packet, PingResp, SubAck, SubscribeReasonCode};
        loop {
            match self.read() {
                Packet::PubAck(ack) if ack.pkid == pkid => return,
                Packet::Subscribe(sub) => {
                    let codes =
                        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); sub.filters.len()];
                    self.write(|out| {
                        SubAck::new(sub.pkid, codes).write(out).unwrap();
                    });
                }
                Packet::PingReq => self.write(|out| {
                    PingResp.write(out).unwrap();
                }),
                other => panic!("expected the PUBACK of {pkid}, got {other:?}"),
            }
        }
    }
}

/// Takes the gateway's next connection as the site's broker would, and
/// publishes `sends` (payload, packet id, DUP) to it, each once acknowledged.
fn site_broker_session(listener: &std::net::TcpListener, sends: &[(&[u8], u16, bool)]) {
    use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, Publish};
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut peer = RawMqtt {
        stream,
        inbox: bytes::BytesMut::new(),
    };
    assert!(matches!(peer.read(), Packet::Connect(..)));
    peer.write(|out| {
        ConnAck::new(ConnectReturnCode::Success, true)
            .write(out)
            .unwrap();
    });
    for (payload, pkid, dup) in sends {
        let mut publish = Publish::new("hub/hr-hub-1/hr", QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = *pkid;
        publish.dup = *dup;
        peer.write(|out| {
            publish.write(out).unwrap();
        });
        peer.until_puback(*pkid);
    }
}

/// The site's broker sends a message again, with the DUP flag and the same
/// packet id, after the gateway stored it but (as after a crash or a cut)
/// before the broker saw its acknowledgement. A stand-in broker speaking
/// raw MQTT makes that happen exactly: the gateway acknowledges the resend
/// and does not store it again; the same payload under a new packet id,
/// and a DUP message it never had, are stored.
#[test]
fn a_message_the_site_broker_sends_again_is_stored_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let site_port = listener.local_addr().unwrap().port();
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), upstream, &common::subscribe(site_port));
    let status = common::enable_status(&config);
    let mut daemon = Daemon::start(&config, 0);
    let mut rng = fastrand::Rng::with_seed(50);
    let reading = fitedge::sim::band_message(1, 1, &mut rng).bytes;
    let other = fitedge::sim::band_message(2, 2, &mut rng).bytes;
    // The first delivery, acknowledged once durable; then the link drops.
    site_broker_session(&listener, &[(&reading, 7, false)]);
    // The gateway reconnects; the broker sends it again, then more.
    site_broker_session(
        &listener,
        &[(&reading, 7, true), (&reading, 8, false), (&other, 9, true)],
    );
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 3),
        "{}",
        daemon.log_text()
    );
    platform.wait_quiet(Duration::from_secs(1), Duration::from_secs(10));
    let records = platform.records();
    let ids = |hub_seq: u64| -> BTreeSet<String> {
        records
            .iter()
            .filter(|r| r.attributes.get("seq").and_then(|s| s.as_u64()) == Some(hub_seq))
            .map(|r| r.id.clone())
            .collect()
    };
    assert_eq!(
        ids(1).len(),
        2,
        "the first delivery and the same reading anew"
    );
    assert_eq!(ids(2).len(), 1, "a DUP message never stored is stored");
    let report = common::status_report(status);
    assert_eq!(report["health"]["counters"]["lan_redelivered"], 1);
    daemon.stop();
}

/// Stops the gateway (subscribed to `site`), has a hub publish `burst`
/// readings to the site broker meanwhile, starts the gateway again and
/// waits for `expected` of them: the hub counters that arrived, and the
/// gateway.
fn restart_under_a_burst(
    site: &Mosquitto,
    burst: u64,
    expected: u64,
) -> (BTreeSet<u64>, Daemon, tempfile::TempDir) {
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), upstream, &common::subscribe(site.port));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_records = 5000", "max_records = 100000");
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "Subscribed to the site's MQTT broker.");
    daemon.stop();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut rng = fastrand::Rng::with_seed(60);
    let messages = (0..burst).map(move |seq| {
        let band = (seq % 20) as u32 + 1;
        (seq, fitedge::sim::band_message(band, seq, &mut rng).bytes)
    });
    let acked = common::publish_acknowledged(
        rumqttc::MqttOptions::new("burst-hub", "127.0.0.1", site.port),
        "hub/hr-hub-1/hr",
        messages,
        &stop,
    );
    assert_eq!(acked.len() as u64, burst, "the site broker took the burst");
    let daemon = Daemon::start(&config, 1);
    wait_log(&daemon, "Subscribed to the site's MQTT broker.");
    let seqs = |p: &Platform| -> BTreeSet<u64> {
        p.records()
            .iter()
            .filter_map(|r| r.attributes.get("seq").and_then(|s| s.as_u64()))
            .collect()
    };
    platform.wait_until(Duration::from_secs(60), |r| {
        r.records.len() as u64 >= expected
    });
    platform.wait_quiet(Duration::from_secs(2), Duration::from_secs(30));
    (seqs(&platform), daemon, dir)
}

/// With the settings `docs/reliability.md` asks of a site broker (no queue
/// limit), a gateway restart while a hub bursts 3,000 readings loses none.
/// With mosquitto's default limit of 1,000 queued messages the broker drops
/// the rest after acknowledging them to the hub: the gateway cannot get them
/// back, but it says so, in the log and in its status.
#[test]
fn a_gateway_restart_under_a_burst_loses_nothing_with_the_documented_site_settings() {
    let burst = 3_000;
    let Some(site) = Mosquitto::start_with(free_port(), "sys_interval 1") else {
        return;
    };
    let (arrived, mut daemon, _dir) = restart_under_a_burst(&site, burst, burst);
    let missing = (0..burst).filter(|s| !arrived.contains(s)).count();
    println!("site broker without a queue limit: gateway restarted under a burst of {burst}, {} arrived, {missing} missing", arrived.len());
    assert_eq!(missing, 0, "readings the site broker queued were lost");
    assert!(!daemon
        .log_text()
        .contains("dropped messages over its queue"));
    daemon.stop();
    drop(site);

    let Some(site) = Mosquitto::start_with(free_port(), "sys_interval 1\nmax_queued_messages 1000")
    else {
        return;
    };
    let (arrived, mut daemon, _dir) = restart_under_a_burst(&site, burst, 1000);
    println!(
        "site broker with mosquitto's default queue limit (1000): {} of {burst} arrived",
        arrived.len()
    );
    assert!(arrived.len() < burst as usize, "the limit dropped some");
    wait_log(
        &daemon,
        "dropped messages over its queue or in-flight limits",
    );
    daemon.stop();
}

/// A site broker without persistence forgets the gateway's session when it
/// restarts, and with it whatever was queued: the gateway says so.
#[test]
fn a_site_broker_that_forgets_the_gateways_session_is_reported() {
    let Some(mut site) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), broker(), &common::subscribe(site.port));
    let mut daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "Subscribed to the site's MQTT broker.");
    assert!(!daemon.log_text().contains("kept no session"));
    site.kill();
    site.restart();
    wait_log(&daemon, "kept no session for the gateway");
    daemon.stop();
}
