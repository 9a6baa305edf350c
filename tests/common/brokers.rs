//! Third-party and misbehaving upstream brokers: Debian's mosquitto and a
//! broker that never acknowledges.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fitedge::record::Record;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::*;

/// Debian's mosquitto as a real third-party broker on loopback.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Configuration lines after the tests' own (the last setting wins).
    extra: String,
}

impl Mosquitto {
    /// Starts mosquitto on a free port, or `None` (with a visible message)
    /// where it is not installed and `FITEDGE_REQUIRE_MOSQUITTO` is unset.
    pub fn start() -> Option<Mosquitto> {
        let installed = Path::new("/usr/sbin/mosquitto").exists();
        if !installed {
            assert!(
                std::env::var_os("FITEDGE_REQUIRE_MOSQUITTO").is_none(),
                "mosquitto is required here but not installed (apt-get install mosquitto)"
            );
            eprintln!("SKIPPED: mosquitto is not installed (apt-get install mosquitto); .ci/run installs it");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Mosquitto::start_on(port)
    }

    /// Starts mosquitto on `port` (see [`Mosquitto::start`]).
    pub fn start_on(port: u16) -> Option<Mosquitto> {
        Mosquitto::start_with(port, "")
    }

    /// Starts mosquitto on `port` with `extra` configuration lines.
    pub fn start_with(port: u16, extra: &str) -> Option<Mosquitto> {
        if !Path::new("/usr/sbin/mosquitto").exists() {
            assert!(
                std::env::var_os("FITEDGE_REQUIRE_MOSQUITTO").is_none(),
                "mosquitto is required here but not installed"
            );
            eprintln!("SKIPPED: mosquitto is not installed (apt-get install mosquitto); .ci/run installs it");
            return None;
        }
        let mut m = Mosquitto {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_string(),
        };
        m.restart();
        Some(m)
    }

    /// (Re)starts the broker on the same port, without persistence: a
    /// restart forgets every session, as Debian's default broker does.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 0\nlog_dest none\n{}\n", self.port, self.extra),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(up, "mosquitto listens on {}", self.port);
    }

    /// Kills the broker abruptly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A broker that accepts connections and publishes but never acknowledges
/// them (answers CONNACK, SUBACK-less, PINGRESP): a "running but not
/// forwarding" upstream. Stops when dropped.
pub struct NoAckBroker {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl NoAckBroker {
    pub fn start(port: u16) -> NoAckBroker {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .expect("port free for the fake broker");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut clients = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = listener.accept() {
                    let flag = flag.clone();
                    clients.push(std::thread::spawn(move || serve_without_acks(stream, flag)));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        NoAckBroker { port, stop }
    }
}

impl Drop for NoAckBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve_without_acks(mut stream: std::net::TcpStream, stop: Arc<AtomicBool>) {
    use std::io::{Read, Write};
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        // Split complete packets: type byte, remaining-length varint, body.
        loop {
            let mut len = 0usize;
            let mut i = 1;
            let mut complete = false;
            while i < buf.len() && i <= 4 {
                len |= ((buf[i] & 0x7F) as usize) << (7 * (i - 1));
                if buf[i] & 0x80 == 0 {
                    complete = true;
                    break;
                }
                i += 1;
            }
            if !complete || buf.len() < i + 1 + len {
                break;
            }
            let kind = buf[0] >> 4;
            buf.drain(..i + 1 + len);
            let reply: &[u8] = match kind {
                1 => &[0x20, 0x02, 0x00, 0x00], // CONNECT -> CONNACK, no session
                12 => &[0xD0, 0x00],            // PINGREQ -> PINGRESP
                14 => return,                   // DISCONNECT
                _ => &[],                       // PUBLISH and the rest: silence
            };
            if stream.write_all(reply).is_err() {
                return;
            }
        }
    }
}
