//! `fitedge demo`: the whole pipeline on embedded defaults.
//!
//! Simulated instruments write real frames to pseudo-terminals; the real
//! gateway (the same code as `run`) reads them, buffers them in a temporary
//! sled outbox and forwards them to a broker (embedded rumqttd, or the one
//! given with `--upstream`); a subscriber standing in for the platform prints
//! what arrives, and a summary checks it against what was sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config::{
    Buffer, Config, Device, DeviceTransport, FullPolicy, Parity, PortRef, SerialSettings, Station,
    Upstream,
};
use crate::gateway::{self, Handle};
use crate::identity::{Key, Keyring};
use crate::profile::Profile;
use crate::record::Record;
use crate::sim::{Instrument, Pty, SimFrame};

const GATEWAY: &str = "demo-gw";
const SITE: &str = "demo-site";

/// The profiles the simulated instruments need, compiled in.
const PROFILES: &[(&str, &str)] = &[
    (
        "height-weight-kv-line",
        include_str!("../../device-profiles/height-weight-kv-line.toml"),
    ),
    (
        "grip-dynamometer-stx-etx",
        include_str!("../../device-profiles/grip-dynamometer-stx-etx.toml"),
    ),
    (
        "heart-rate-band-hub-json",
        include_str!("../../device-profiles/heart-rate-band-hub-json.toml"),
    ),
    (
        "qr-scanner-resident-id-line",
        include_str!("../../device-profiles/qr-scanner-resident-id-line.toml"),
    ),
];

/// The simulated station: its two instruments and its ID scanner.
const STATION: &str = "physique-corner";
const SCANNER: &str = "id-scanner-1";

/// The simulated heart-rate hub's account on the LAN broker.
const HUB: (&str, &str) = ("hr-hub-1", "demo-hub-secret");
/// Bands the simulated hub relays.
const BANDS: u32 = 5;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Send to this broker (mqtt://HOST:PORT) instead of the embedded one.
    #[arg(long)]
    upstream: Option<String>,
    /// Milliseconds between frames of each simulated instrument.
    #[arg(long, default_value_t = 700)]
    interval_ms: u64,
    /// Keep the buffer (and the station sessions) in this directory
    /// instead of a temporary one.
    #[arg(long)]
    buffer: Option<std::path::PathBuf>,
}

pub fn run(args: DemoArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(demo(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fitedge demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `mqtt://HOST:PORT` (port defaults to 1883).
pub(super) fn parse_upstream(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.strip_prefix("mqtt://").unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            port.parse().with_context(|| format!("port in {url}"))?,
        )),
        None if !rest.is_empty() => Ok((rest.to_string(), 1883)),
        None => bail!("--upstream wants mqtt://HOST:PORT, got \"{url}\""),
    }
}

fn start_broker(upstream: Option<&str>) -> anyhow::Result<(String, u16, &'static str)> {
    if let Some(url) = upstream {
        let (host, port) = parse_upstream(url)?;
        return Ok((host, port, "the given broker"));
    }
    #[cfg(feature = "embedded-broker")]
    {
        let broker = crate::broker::start().context("starting the embedded broker")?;
        Ok(("127.0.0.1".into(), broker.port, "the embedded broker"))
    }
    #[cfg(not(feature = "embedded-broker"))]
    bail!("this build has no embedded broker; pass --upstream mqtt://HOST:PORT")
}

async fn demo(args: DemoArgs) -> anyhow::Result<bool> {
    let (host, port, which) = start_broker(args.upstream.as_deref())?;
    let temporary = tempfile::tempdir().context("creating a temporary buffer directory")?;
    let buffer_dir = args
        .buffer
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let instruments = [Instrument::HeightWeight, Instrument::Grip];
    let mut ptys = Vec::new();
    for _ in instruments {
        ptys.push(Pty::open().context("opening a pseudo-terminal")?);
    }
    let scanner = Pty::open().context("opening a pseudo-terminal")?;
    let mut profiles = HashMap::new();
    for (id, text) in PROFILES {
        let profile = Profile::parse(Path::new(&format!("device-profiles/{id}.toml")), text)
            .map_err(|p| anyhow::anyhow!(crate::problem::render(&p)))?;
        profiles.insert(id.to_string(), profile);
    }
    let devices: Vec<Device> = instruments
        .iter()
        .zip(&ptys)
        .map(|(inst, pty)| {
            let id = match inst {
                Instrument::HeightWeight => "height-weight-1",
                Instrument::Grip => "grip-1",
            };
            serial_device(id, inst.profile_id(), pty)
        })
        .collect();
    let lan_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a port for the LAN broker")?;
    let mut devices = devices;
    devices.push(serial_device(
        SCANNER,
        "qr-scanner-resident-id-line",
        &scanner,
    ));
    let lan = lan_broker(lan_port, &mut devices);
    // The demo's own site key, new each run (a site reads its key from a
    // file; docs/stations.md).
    let mut key = [0u8; 32];
    fastrand::fill(&mut key);
    let keys = Arc::new(Keyring::new(Key::new(key).context("making the demo key")?));
    let config = Config {
        status: Some(crate::config::StatusEndpoint::local()),
        lan,
        gateway_id: GATEWAY.into(),
        site_id: SITE.into(),
        profile_dirs: vec![],
        upstream: Upstream {
            host: host.clone(),
            port,
            client_id: format!("fitedge-demo-{}", std::process::id()),
            keep_alive: Duration::from_secs(30),
            username: None,
            password: None,
            topic_prefix: "fitedge".into(),
            inflight_window: 100,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            backlog_per_second: 100,
            stall: Duration::from_secs(300),
            tls: None,
            format: Default::default(),
        },
        buffer: Buffer {
            dir: buffer_dir.join("outbox"),
            max_records: 10_000,
            max_record_bytes: 16 * 1024,
            full_policy: FullPolicy::DropOldest,
            cache_bytes: 4 << 20,
            max_bytes: None,
            max_age: None,
            flush_window: Duration::ZERO,
        },
        devices: devices.clone(),
        identity: Some(keys.clone()),
        stations: vec![Station {
            id: STATION.into(),
            devices: vec!["height-weight-1".into(), "grip-1".into()],
            readers: vec![SCANNER.into()],
            operators: vec![],
            idle_timeout: Duration::from_secs(60),
        }],
        warnings: vec![],
    };

    println!("fitedge demo: platform broker is {which} at mqtt://{host}:{port}; `fitedge status` shows the gateway while it runs");
    println!("  station {STATION}: {SCANNER} scans who is tested at height-weight-1 and grip-1");
    for d in &devices {
        let link = match &d.transport {
            DeviceTransport::Serial(s) => s.port.to_string(),
            DeviceTransport::Input(path) => format!("input {}", path.display()),
            DeviceTransport::Mqtt(_) => {
                format!("LAN MQTT broker 127.0.0.1:{lan_port}, {BANDS} bands")
            }
            DeviceTransport::Ble(b) => format!(
                "Bluetooth LE {}",
                b.address.as_deref().unwrap_or("(by profile)")
            ),
        };
        println!("  device {:<16} profile {:<26} on {link}", d.id, d.profile);
    }
    let platform = Platform::subscribe(&host, port).await?;

    // The station's simulator: one thread playing people checking in at the
    // scanner and being measured, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let station = {
        let (stop, sent, keys) = (stop.clone(), sent.clone(), keys.clone());
        let interval = Duration::from_millis(args.interval_ms.max(10));
        let mut ptys: Vec<Pty> = ptys;
        ptys.push(scanner);
        std::thread::spawn(move || {
            run_station(&mut ptys, &keys, interval, &stop, &sent);
            ptys // keep the masters open until the gateway has stopped
        })
    };

    if devices
        .iter()
        .any(|d| matches!(d.transport, DeviceTransport::Mqtt(_)))
    {
        tokio::spawn(band_hub(
            lan_port,
            Duration::from_millis(args.interval_ms.max(10)),
            stop.clone(),
            sent.clone(),
        ));
    }

    let handle = Handle::default();
    let duration = args.duration;
    let stop_sims = stop.clone();
    let shutdown = async move {
        match duration {
            Some(secs) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                    _ = crate::cli::shutdown_signal() => {}
                }
            }
            None => crate::cli::shutdown_signal().await,
        }
        stop_sims.store(true, Ordering::Relaxed);
        // Let the last frames reach the gateway before it stops reading.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let snapshot = gateway::run(config, profiles, handle, shutdown).await?;
    let _ptys = station.join();
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let received = platform.wait_for(sent.len(), Duration::from_secs(5)).await;
    Ok(summary(
        &sent,
        &received,
        snapshot.records_dropped_oldest + snapshot.records_refused,
    ))
}

/// A frame the simulators sent: the device, the frame, and the pseudonym
/// its record must carry (the subject scanned in, or none).
type Sent = (String, SimFrame, Option<String>);

fn serial_device(id: &str, profile: &str, pty: &Pty) -> Device {
    Device {
        id: id.into(),
        profile: profile.into(),
        transport: DeviceTransport::Serial(SerialSettings {
            port: PortRef::Path(pty.path.clone()),
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        }),
    }
}

/// Plays the station: person after person is scanned in and measured on
/// both instruments; after every second person the operator scans END and
/// one grip reading is taken with no one checked in (it arrives unbound).
/// `ptys` are the height/weight station, the grip and the scanner.
fn run_station(
    ptys: &mut [Pty],
    keys: &Keyring,
    interval: Duration,
    stop: &AtomicBool,
    sent: &Mutex<Vec<Sent>>,
) {
    let mut rng = fastrand::Rng::new();
    let ids = crate::sim::resident_ids();
    // Give the gateway a moment to open the ports before the first frame.
    std::thread::sleep(Duration::from_millis(300));
    let write = |pty: &mut Pty, bytes: &[u8]| {
        std::thread::sleep(interval);
        !stop.load(Ordering::Relaxed) && pty.write_frame(bytes).is_ok()
    };
    // (pty, device, instrument; None for a scan of the given bytes)
    type Play = (usize, &'static str, Option<Instrument>);
    for person in 0.. {
        let id = &ids[person % ids.len()];
        let scan = crate::sim::scan_frame(id);
        let subject = Some(keys.pseudonym(id).current);
        let mut plan: Vec<(Play, &[u8], Option<String>)> = vec![
            ((2, SCANNER, None), &scan, None),
            (
                (0, "height-weight-1", Some(Instrument::HeightWeight)),
                b"",
                subject.clone(),
            ),
            ((1, "grip-1", Some(Instrument::Grip)), b"", subject.clone()),
            ((1, "grip-1", Some(Instrument::Grip)), b"", subject.clone()),
        ];
        if person % 2 == 1 {
            plan.push(((2, SCANNER, None), b"END\r", None));
            plan.push(((1, "grip-1", Some(Instrument::Grip)), b"", None));
        }
        for ((pty, device, instrument), bytes, subject) in plan {
            let frame = instrument.map(|inst| inst.anonymous_frame(&mut rng));
            let bytes = frame.as_ref().map_or(bytes, |f| f.bytes.as_slice());
            if !write(&mut ptys[pty], bytes) {
                return;
            }
            if let (Some(frame), Ok(mut s)) = (frame, sent.lock()) {
                s.push((device.to_string(), frame, subject));
            }
        }
    }
}

/// The LAN broker for the simulated band hub, and its device.
#[cfg(feature = "embedded-broker")]
fn lan_broker(port: u16, devices: &mut Vec<Device>) -> Option<crate::config::Lan> {
    devices.push(Device {
        id: HUB.0.into(),
        profile: "heart-rate-band-hub-json".into(),
        transport: DeviceTransport::Mqtt(crate::config::MqttSettings {
            topic: None,
            account: None,
        }),
    });
    Some(crate::config::Lan::Embedded(crate::config::EmbeddedLan {
        listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        users: HashMap::from([(HUB.0.to_string(), HUB.1.to_string())]),
        max_connections: 16,
        max_payload_bytes: 16 * 1024,
        max_inflight: 100,
        max_per_account: 4,
        max_per_address: 8,
        tls_listen: vec![],
        tls: None,
    }))
}

#[cfg(not(feature = "embedded-broker"))]
fn lan_broker(_: u16, _: &mut Vec<Device>) -> Option<crate::config::Lan> {
    None
}

/// A heart-rate band hub on the LAN: publishes one reading a band every
/// `interval` to the gateway's LAN broker, with its own account.
async fn band_hub(
    port: u16,
    interval: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
) {
    let mut options = MqttOptions::new(HUB.0, "127.0.0.1", port);
    options
        .set_credentials(HUB.0, HUB.1)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    // Give the gateway a moment to start its LAN broker.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut rng = fastrand::Rng::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        for band in 1..=BANDS {
            seq += 1;
            let frame = crate::sim::band_message(band, seq, &mut rng);
            if client
                .publish(
                    format!("hub/{}/hr", HUB.0),
                    QoS::AtLeastOnce,
                    false,
                    frame.bytes.clone(),
                )
                .await
                .is_err()
            {
                return;
            }
            if let Ok(mut s) = sent.lock() {
                s.push((format!("{}.band-{band:02}", HUB.0), frame, None));
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Compares what the simulators sent with what the platform received:
/// every reading arrived once with its values, and each station reading
/// carries the pseudonym of the person scanned in (or none).
fn summary(sent: &[Sent], received: &[Record], dropped: u64) -> bool {
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    let mut waiting: HashMap<(String, String), Vec<&Record>> = HashMap::new();
    for r in received {
        if !ids.insert(r.id.clone()) {
            duplicates += 1;
            continue;
        }
        if r.session.is_some() {
            continue;
        }
        let key = match r.attributes.get("seq") {
            Some(seq) => seq.to_string(),
            None => r
                .values
                .iter()
                .map(|v| format!("{}={}", v.metric, v.value))
                .collect::<Vec<_>>()
                .join(";"),
        };
        waiting
            .entry((r.device_id.clone(), key))
            .or_default()
            .push(r);
    }
    let mut per_device: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut misbound = 0;
    for (device, frame, subject) in sent {
        let entry = per_device.entry(device).or_default();
        entry.0 += 1;
        // Readings of equal values are told apart by whom they name.
        let found = waiting.get_mut(&(device.clone(), frame.key.clone()));
        let Some(record) = found.and_then(|rs| {
            let at = rs
                .iter()
                .position(|r| r.station_id.is_none() || &r.subject_ref == subject);
            (!rs.is_empty()).then(|| rs.remove(at.unwrap_or(0)))
        }) else {
            continue;
        };
        entry.1 += 1;
        if record.station_id.is_some() && &record.subject_ref != subject {
            misbound += 1;
        }
    }
    print_sessions(received);
    println!("\nsummary");
    for (device, (s, r)) in &per_device {
        println!("  {device:<16} frames sent {s:>5}  records received {r:>5}");
    }
    let total_sent: usize = per_device.values().map(|v| v.0).sum();
    let total_received: usize = per_device.values().map(|v| v.1).sum();
    println!("  duplicates {duplicates}, station readings bound to the wrong person {misbound}, dropped by the buffer {dropped}");
    let ok = total_received == total_sent && misbound == 0 && total_sent > 0;
    println!(
        "  {}",
        if ok {
            "every reading arrived intact, each bound to the person scanned in"
        } else {
            "SOME READINGS DID NOT ARRIVE INTACT"
        }
    );
    ok
}

/// The station's readings as the platform sees them: grouped by subject
/// pseudonym and session, then the readings that arrived unbound.
fn print_sessions(received: &[Record]) {
    let mut sessions: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    let mut unbound = Vec::new();
    for r in received.iter().filter(|r| r.station_id.is_some()) {
        match &r.session_id {
            Some(session) => sessions.entry(session.clone()).or_default().push(r),
            None if r.session.is_none() => unbound.push(r),
            None => {}
        }
    }
    println!("\nstation {STATION}, by person and session");
    for (session, records) in &sessions {
        let subject = records[0].subject_ref.as_deref().unwrap_or("-");
        let closed = records
            .iter()
            .find_map(|r| r.session.as_ref().and_then(|e| e.reason))
            .map(|reason| format!("closed: {reason:?}"))
            .unwrap_or_else(|| "open".into());
        println!(
            "  subject {} session {} ({closed})",
            short(subject),
            short(session)
        );
        for r in records.iter().filter(|r| r.session.is_none()) {
            println!("      {:<16} {}", r.device_id, values(r));
        }
    }
    println!("  unbound (no one checked in): {}", unbound.len());
    for r in unbound {
        println!("      {:<16} {}", r.device_id, values(r));
    }
}

fn short(text: &str) -> &str {
    &text[..text.len().min(17)]
}

fn values(r: &Record) -> String {
    let values: Vec<String> = r
        .values
        .iter()
        .map(|v| format!("{}={} {}", v.metric, v.value, v.unit))
        .collect();
    values.join("  ")
}

/// The stand-in platform: subscribes to the gateway's topics and prints records.
struct Platform {
    received: Arc<Mutex<Vec<Record>>>,
}

impl Platform {
    async fn subscribe(host: &str, port: u16) -> anyhow::Result<Platform> {
        let mut options =
            MqttOptions::new(format!("platform-demo-{}", std::process::id()), host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client
            .subscribe(format!("fitedge/{SITE}/{GATEWAY}/#"), QoS::AtLeastOnce)
            .await?;
        // Wait for the SUBACK so nothing published after this is missed.
        let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("cannot subscribe at mqtt://{host}:{port}: {e}"),
            Err(_) => bail!("no SUBACK from mqtt://{host}:{port} within 10 s"),
        }
        let received: Arc<Mutex<Vec<Record>>> = Arc::default();
        let sink = received.clone();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic.ends_with("/status") {
                            println!(
                                "[platform] {} {}",
                                p.topic,
                                String::from_utf8_lossy(&p.payload)
                            );
                            continue;
                        }
                        match serde_json::from_slice::<Record>(&p.payload) {
                            Ok(record) => {
                                println!("[platform] {}", describe(&record));
                                if let Ok(mut r) = sink.lock() {
                                    r.push(record);
                                }
                            }
                            Err(e) => println!("[platform] unreadable payload on {}: {e}", p.topic),
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(Platform { received })
    }

    /// Waits until `n` records arrived or `within` passed; returns them all.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Record> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let count = self.received.lock().map(|r| r.len()).unwrap_or(0);
            if count >= n || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn describe(r: &Record) -> String {
    let what = match &r.session {
        Some(event) => format!(
            "session {:?} {}",
            event.event,
            short(r.session_id.as_deref().unwrap_or("-"))
        ),
        None => values(r),
    };
    format!(
        "#{:<4} {:<16} subject {:<17} {}",
        r.seq,
        r.device_id,
        short(r.subject_ref.as_deref().unwrap_or("-")),
        what
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            parse_upstream("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_upstream("broker.local").unwrap(),
            ("broker.local".into(), 1883)
        );
        assert!(parse_upstream("mqtt://h:notaport").is_err());
    }
}
