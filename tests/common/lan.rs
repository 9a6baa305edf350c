//! LAN MQTT devices for the tests: a gateway config with a band hub on the
//! embedded broker, and a device as a real MQTT client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{Client, ConnectionError, Event, MqttOptions, Packet};

use super::*;

pub const HUB_USER: &str = "hr-hub-1";
pub const HUB_PASSWORD: &str = "hub-secret";

/// A gateway config with one band hub on the LAN side (`lan` is the
/// `[lan]` table's body).
pub fn hub_config(dir: &Path, upstream: u16, lan: &str) -> PathBuf {
    write_private(
        &dir.join("lan-users"),
        &format!("{HUB_USER}:{HUB_PASSWORD}\nspare:other\n"),
    );
    let config = write_config(dir, upstream, &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("[upstream]", &format!("[lan]\n{lan}\n\n[upstream]"));
    text.push_str("\n[[device]]\nid = \"hr-hub-1\"\nprofile = \"heart-rate-band-hub-json\"\n[device.transport]\ntype = \"mqtt\"\n");
    std::fs::write(&config, text).unwrap();
    config
}

/// The `[lan]` body of an embedded broker on loopback `port` with the
/// accounts of `hub_config`.
pub fn embedded(port: u16) -> String {
    format!("type = \"embedded\"\nlisten = [\"127.0.0.1:{port}\"]\nusers_file = \"lan-users\"\nmax_payload_bytes = 4096")
}

/// The `[lan]` body of subscribing to a site broker on loopback `port`.
pub fn subscribe(port: u16) -> String {
    format!("type = \"subscribe\"\nhost = \"127.0.0.1\"\nport = {port}")
}

/// An MQTT client on its own thread; `publish` queues, the thread drives it.
pub struct Device {
    pub client: Client,
    pub connected: std::sync::mpsc::Receiver<Result<(), String>>,
}

impl Device {
    pub fn connect(port: u16, id: &str, user: &str, password: &str) -> Device {
        Device::connect_with(MqttOptions::new(id, "127.0.0.1", port), user, password)
    }

    /// Over TLS, trusting the certificates in `ca` (PEM).
    pub fn connect_tls(port: u16, id: &str, user: &str, password: &str, ca: &Path) -> Device {
        let mut options = MqttOptions::new(id, "localhost", port);
        options.set_transport(rumqttc::Transport::tls(
            std::fs::read(ca).unwrap(),
            None,
            None,
        ));
        Device::connect_with(options, user, password)
    }

    pub fn connect_with(mut options: MqttOptions, user: &str, password: &str) -> Device {
        options
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 1000);
        let (tx, connected) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = tx.send(Ok(()));
                    }
                    Ok(_) => {}
                    Err(ConnectionError::ConnectionRefused(code)) => {
                        let _ = tx.send(Err(format!("{code:?}")));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
        Device { client, connected }
    }

    /// Waits for the first connect attempt's outcome.
    pub fn outcome(&self) -> Result<(), String> {
        self.connected
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| Err("no answer".into()))
    }
}

pub fn wait_log(daemon: &Daemon, text: &str) {
    let seen = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().contains(text)
    });
    assert!(seen, "log never said {text:?}:\n{}", daemon.log_text());
}

pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

/// Publishes `messages` (a key and a payload each) at QoS 1 on `topic` over
/// one connection, as fast as they are acknowledged, until they are all
/// acknowledged, the connection fails or `stop` is set. Returns the keys
/// the broker acknowledged (each PUBACK paired with its publish).
pub fn publish_acknowledged(
    options: MqttOptions,
    topic: &'static str,
    messages: impl Iterator<Item = (u64, Vec<u8>)> + Send + 'static,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<u64> {
    use rumqttc::{Outgoing, QoS};
    use std::sync::atomic::Ordering::Relaxed;
    let (client, mut connection) = Client::new(options, 64);
    // Publishes go out in the order they are queued, so the keys queued,
    // in order, pair with the packet ids as they are sent.
    let (queued_tx, queued) = std::sync::mpsc::channel::<u64>();
    // How many were queued, once all are (u64::MAX until then).
    let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let feeder = {
        let total = total.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            for (key, payload) in messages {
                if queued_tx.send(key).is_err()
                    || client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .is_err()
                {
                    return;
                }
                n += 1;
            }
            total.store(n, Relaxed);
        })
    };
    let mut sent = 0;
    let mut acked = Vec::new();
    let mut in_flight = std::collections::HashMap::new();
    for event in connection.iter() {
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Ok(key) = queued.recv() {
                    in_flight.insert(pkid, key);
                    sent += 1;
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                acked.extend(in_flight.remove(&ack.pkid));
                if in_flight.is_empty() && sent == total.load(Relaxed) {
                    break;
                }
            }
            Ok(_) => {}
            // What the gateway did not acknowledge is the publisher's to
            // send again, not the gateway's to keep.
            Err(_) => break,
        }
        if stop.load(Relaxed) {
            break;
        }
    }
    drop(connection);
    drop(queued);
    let _ = feeder.join();
    acked
}
