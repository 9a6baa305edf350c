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
    Buffer, Config, Device, DeviceTransport, FullPolicy, Parity, PortRef, SerialSettings, Upstream,
};
use crate::gateway::{self, Handle};
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
];

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
fn parse_upstream(url: &str) -> anyhow::Result<(String, u16)> {
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
    let buffer = tempfile::tempdir().context("creating a temporary buffer directory")?;
    let instruments = [Instrument::HeightWeight, Instrument::Grip];
    let mut ptys = Vec::new();
    for _ in instruments {
        ptys.push(Pty::open().context("opening a pseudo-terminal")?);
    }
    let mut profiles = HashMap::new();
    for (id, text) in PROFILES {
        let profile = Profile::parse(Path::new(&format!("device-profiles/{id}.toml")), text)
            .map_err(|p| anyhow::anyhow!(crate::problem::render(&p)))?;
        profiles.insert(id.to_string(), profile);
    }
    let devices: Vec<Device> = instruments
        .iter()
        .zip(&ptys)
        .map(|(inst, pty)| Device {
            id: match inst {
                Instrument::HeightWeight => "height-weight-1".into(),
                Instrument::Grip => "grip-1".into(),
            },
            profile: inst.profile_id().into(),
            transport: DeviceTransport::Serial(SerialSettings {
                port: PortRef::Path(pty.path.clone()),
                baud: 9600,
                parity: Parity::None,
                data_bits: 8,
                stop_bits: 1,
            }),
        })
        .collect();
    let lan_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a port for the LAN broker")?;
    let mut devices = devices;
    let lan = lan_broker(lan_port, &mut devices);
    let config = Config {
        status_listen: crate::config::DEFAULT_STATUS.parse().ok(),
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
        },
        buffer: Buffer {
            dir: buffer.path().join("outbox"),
            max_records: 10_000,
            max_record_bytes: 16 * 1024,
            full_policy: FullPolicy::DropOldest,
            cache_bytes: 4 << 20,
            max_bytes: None,
            max_age: None,
            flush_window: Duration::ZERO,
        },
        devices: devices.clone(),
    };

    println!("fitedge demo: platform broker is {which} at mqtt://{host}:{port}; `fitedge status` shows the gateway while it runs");
    for d in &devices {
        let link = match &d.transport {
            DeviceTransport::Serial(s) => s.port.to_string(),
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

    // Simulators: one thread per instrument, writing frames until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<(String, SimFrame)>>> = Arc::default();
    let mut sims = Vec::new();
    for ((inst, mut pty), device) in instruments.into_iter().zip(ptys).zip(&devices) {
        let (stop, sent, id) = (stop.clone(), sent.clone(), device.id.clone());
        let interval = Duration::from_millis(args.interval_ms.max(10));
        sims.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::new();
            // Give the gateway a moment to open the port before the first frame.
            std::thread::sleep(Duration::from_millis(300));
            for n in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let frame = inst.frame(n, &mut rng);
                if pty.write_frame(&frame.bytes).is_err() {
                    break;
                }
                if let Ok(mut s) = sent.lock() {
                    s.push((id.clone(), frame));
                }
                std::thread::sleep(interval);
            }
            pty // keep the master open until the gateway has stopped
        }));
    }

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
    let _ptys: Vec<Pty> = sims.into_iter().filter_map(|t| t.join().ok()).collect();
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let received = platform.wait_for(sent.len(), Duration::from_secs(5)).await;
    Ok(summary(
        &sent,
        &received,
        snapshot.records_dropped_oldest + snapshot.records_refused,
    ))
}

/// The LAN broker for the simulated band hub, and its device.
#[cfg(feature = "embedded-broker")]
fn lan_broker(port: u16, devices: &mut Vec<Device>) -> Option<crate::config::Lan> {
    devices.push(Device {
        id: HUB.0.into(),
        profile: "heart-rate-band-hub-json".into(),
        transport: DeviceTransport::Mqtt(crate::config::MqttSettings { topic: None }),
    });
    Some(crate::config::Lan::Embedded(crate::config::EmbeddedLan {
        listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        users: HashMap::from([(HUB.0.to_string(), HUB.1.to_string())]),
        max_connections: 16,
        max_payload_bytes: 16 * 1024,
        max_inflight: 100,
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
    sent: Arc<Mutex<Vec<(String, SimFrame)>>>,
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
                s.push((format!("{}.band-{band:02}", HUB.0), frame));
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Compares what the simulators sent with what the platform received.
fn summary(sent: &[(String, SimFrame)], received: &[Record], dropped: u64) -> bool {
    let mut by_key: HashMap<(String, String), &Record> = HashMap::new();
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    for r in received {
        if !ids.insert(r.id.clone()) {
            duplicates += 1;
            continue;
        }
        let key = match r.attributes.get("seq") {
            Some(seq) => seq.to_string(),
            None => r.subject_ref.clone().unwrap_or_default(),
        };
        by_key.insert((r.device_id.clone(), key), r);
    }
    let mut per_device: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut mismatched = 0;
    for (device, frame) in sent {
        let entry = per_device.entry(device).or_default();
        entry.0 += 1;
        let Some(record) = by_key.get(&(device.clone(), frame.key.clone())) else {
            continue;
        };
        entry.1 += 1;
        let all_match = frame.values.iter().all(|(metric, want)| {
            record
                .value(metric)
                .is_some_and(|r| (r.value - want).abs() < 1e-6)
        });
        if !all_match {
            mismatched += 1;
        }
    }
    println!("\nsummary");
    for (device, (s, r)) in &per_device {
        println!("  {device:<16} frames sent {s:>5}  records received {r:>5}");
    }
    let total_sent: usize = per_device.values().map(|v| v.0).sum();
    let total_received: usize = per_device.values().map(|v| v.1).sum();
    println!("  duplicates {duplicates}, values differing from the simulator {mismatched}, dropped by the buffer {dropped}");
    let ok = total_received == total_sent && mismatched == 0 && total_sent > 0;
    println!(
        "  {}",
        if ok {
            "every reading arrived intact"
        } else {
            "SOME READINGS DID NOT ARRIVE INTACT"
        }
    );
    ok
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
    let values: Vec<String> = r
        .values
        .iter()
        .map(|v| format!("{}={} {}", v.metric, v.value, v.unit))
        .collect();
    format!(
        "#{:<4} {:<16} subject {:<7} {}",
        r.seq,
        r.device_id,
        r.subject_ref.as_deref().unwrap_or("-"),
        values.join("  ")
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
