//! Fixtures shared by the integration tests: an embedded broker, a platform
//! subscriber, simulated instruments on pseudo-terminals, config files and
//! the real binary as a child process.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fitedge::record::Record;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub const GATEWAY: &str = "gw-test";
pub const SITE: &str = "site-test";

/// The repository's profile catalogue.
pub fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles")
}

/// Starts an embedded broker on a free loopback port.
pub fn broker() -> u16 {
    fitedge::broker::start()
        .expect("embedded broker starts")
        .port
}

/// What the platform received, shared with the subscriber's task.
#[derive(Default)]
pub struct Received {
    pub records: Vec<Record>,
    pub statuses: Vec<serde_json::Value>,
    pub raw: Vec<(String, Vec<u8>)>,
    /// SUBACKs seen: one per (re)connect of the subscriber.
    pub subacks: usize,
}

/// A subscriber standing in for the platform, on its own thread and runtime
/// so it can serve blocking tests too.
pub struct Platform {
    pub received: Arc<Mutex<Received>>,
}

impl Platform {
    /// Subscribes to everything under `fitedge/` and waits for the SUBACK.
    pub fn subscribe(port: u16) -> Platform {
        let received: Arc<Mutex<Received>> = Arc::default();
        let sink = received.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let id = format!("platform-{}-{}", std::process::id(), fastrand::u32(..));
                let mut options = MqttOptions::new(id, "127.0.0.1", port);
                options
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut eventloop) = AsyncClient::new(options, 64);
                let mut ready = Some(ready_tx);
                loop {
                    match eventloop.poll().await {
                        // (Re)subscribe on every connect: a restarted broker forgets us.
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            client.try_subscribe("fitedge/#", QoS::AtLeastOnce).unwrap();
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            sink.lock().unwrap().subacks += 1;
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let mut r = sink.lock().unwrap();
                            r.raw.push((p.topic.clone(), p.payload.to_vec()));
                            if p.topic.ends_with("/status") {
                                r.statuses.push(serde_json::from_slice(&p.payload).unwrap());
                            } else {
                                let record: Record = serde_json::from_slice(&p.payload)
                                    .unwrap_or_else(|e| {
                                        panic!("payload on {} is not a record: {e}", p.topic)
                                    });
                                r.records.push(record);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("platform subscribed");
        Platform { received }
    }

    /// Waits until `done` holds for what was received, or `within` passes.
    pub fn wait_until(&self, within: Duration, done: impl Fn(&Received) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(&self.received.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done(&self.received.lock().unwrap())
    }

    pub fn records(&self) -> Vec<Record> {
        self.received.lock().unwrap().records.clone()
    }

    pub fn record_count(&self) -> usize {
        self.received.lock().unwrap().records.len()
    }

    /// Waits until nothing new has arrived for `quiet` (at most `within`).
    pub fn wait_quiet(&self, quiet: Duration, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = (self.record_count(), Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let count = self.record_count();
            if count != last.0 {
                last = (count, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return;
            }
        }
    }
}

/// Sequence numbers received, with duplicates counted.
pub fn seq_report(records: &[Record]) -> (BTreeSet<u64>, usize) {
    let mut seqs = BTreeSet::new();
    let mut ids = HashMap::new();
    let mut duplicates = 0;
    for r in records {
        if ids.insert(r.id.clone(), r.seq).is_some() {
            duplicates += 1;
        }
        seqs.insert(r.seq);
    }
    (seqs, duplicates)
}

/// A `[[device]]` for a config file.
pub struct DeviceEntry<'a> {
    pub id: &'a str,
    pub profile: &'a str,
    pub port: &'a Path,
}

/// Writes a config for the gateway into `dir` and returns its path.
pub fn write_config(dir: &Path, broker_port: u16, devices: &[DeviceEntry]) -> PathBuf {
    let mut text = format!(
        r#"gateway_id = "{GATEWAY}"
site_id = "{SITE}"
profile_dirs = ["{profiles}"]

[upstream]
host = "127.0.0.1"
port = {broker_port}
client_id = "fitedge-test-{pid}-{rand}"
keep_alive_seconds = 5
inflight_window = 20
reconnect_min_ms = 100
reconnect_max_seconds = 1
backlog_per_second = 5000

[status]
enabled = false

[buffer]
dir = "{buffer}"
max_records = 5000
"#,
        profiles = profiles_dir().display(),
        pid = std::process::id(),
        rand = fastrand::u32(..),
        buffer = dir.join("buffer").display(),
    );
    for d in devices {
        text.push_str(&format!(
            "\n[[device]]\nid = \"{}\"\nprofile = \"{}\"\n[device.transport]\ntype = \"serial\"\nport = \"{}\"\nbaud = 9600\n",
            d.id,
            d.profile,
            d.port.display()
        ));
    }
    let path = dir.join("fitedge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Opens the buffer a test gateway left in `dir` (see `write_config`).
/// A config whose status endpoint listens on a free loopback port.
pub fn enable_status(config: &Path) -> std::net::SocketAddr {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(config).unwrap().replace(
        "[status]\nenabled = false",
        &format!("[status]\nlisten = \"{address}\""),
    );
    std::fs::write(config, text).unwrap();
    address
}

pub fn open_buffer(dir: &Path) -> fitedge::outbox::Outbox {
    fitedge::outbox::Outbox::open(&dir.join("buffer"), outbox_options(5000))
        .expect("the gateway's buffer opens")
}

/// The real `fitedge` binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fitedge"))
}

/// The daemon as a child process, logging to `<dir>/gateway-<n>.log`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, n: usize) -> Daemon {
        let log = config.with_file_name(format!("gateway-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = binary()
            .args(["run", "--config"])
            .arg(config)
            .env("FITEDGE_LOG", "info,fitedge=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("fitedge binary starts");
        Daemon { child, log }
    }

    pub fn signal(&mut self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the process to end (bounded); its exit status.
    pub fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then asserts a clean exit within 15 s.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self
            .wait(Duration::from_secs(15))
            .expect("SIGTERM stops the daemon");
        assert!(
            status.success(),
            "clean exit: {status:?}\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's mosquitto as a real third-party broker on loopback.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
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
            format!("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 0\nlog_dest none\n", self.port),
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

/// A height/weight station writing a frame every few milliseconds while
/// `running`; remembers the subject of every frame written.
pub struct Station {
    running: Arc<AtomicBool>,
    written: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Station {
    pub fn start(mut pty: fitedge::sim::Pty) -> Station {
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
                    let frame = fitedge::sim::Instrument::HeightWeight.frame(n, &mut rng);
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

    pub fn pause(&self) {
        self.running.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }

    pub fn resume(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    pub fn written(&self) -> Vec<String> {
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

pub fn wait_for_port(daemon: &Daemon) {
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

/// A stand-in for systemd's notify socket: collects what the daemon sends.
pub struct NotifySocket {
    pub path: PathBuf,
    pub messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let messages: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => sink.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if Arc::strong_count(&sink) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        NotifySocket { path, messages }
    }

    /// Times at which the daemon fed the watchdog.
    pub fn watchdog_times(&self) -> Vec<Instant> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn saw(&self, text: &str) -> bool {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains(text))
    }
}

impl Daemon {
    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(config: &Path, n: usize, env: &[(&str, String)]) -> Daemon {
        let log = config.with_file_name(format!("gateway-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = binary();
        command
            .args(["run", "--config"])
            .arg(config)
            .env("FITEDGE_LOG", "info,fitedge=debug")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            command.env(k, v);
        }
        Daemon {
            child: command.spawn().expect("fitedge binary starts"),
            log,
        }
    }
}

/// Prints a line of the fault suites' summary, and appends it to the file
/// named by `FITEDGE_FAULT_SUMMARY` (CI prints that file at the end).
#[allow(unused_macros)]
macro_rules! summary {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        if let Some(path) = std::env::var_os("FITEDGE_FAULT_SUMMARY") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}");
            }
        }
    }};
}

/// Outbox options as the tests' gateways use them.
pub fn outbox_options(max_records: u64) -> fitedge::outbox::OutboxOptions {
    fitedge::outbox::OutboxOptions {
        max_records,
        max_record_bytes: 16 * 1024,
        full_policy: fitedge::config::FullPolicy::DropOldest,
        cache_bytes: 1 << 20,
        max_bytes: None,
        max_age: None,
    }
}
