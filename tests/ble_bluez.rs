//! The gateway binary with its unmodified btleplug code against a mocked
//! BlueZ on a private D-Bus (tests/ble/mock_bluez.py on python-dbusmock):
//! a heart-rate strap, a scale and a treadmill are found, connected and
//! subscribed, their notifications reach the platform as records, and a
//! strap that drops mid-stream is reconnected. Then, with no Bluetooth at
//! all, a serial device keeps forwarding and the BLE device is reported
//! unavailable.
//!
//! Needs `dbus-daemon` and Debian's python3-dbusmock; without them the
//! mocked-BlueZ test is skipped, unless FITEDGE_REQUIRE_BLUEZ_MOCK=1 (CI).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{broker, enable_status, write_config, Daemon, DeviceEntry, Platform};
use fitedge::record::{Record, Transport};
use fitedge::sim::{Instrument, Pty};

const STRAP: &str = "C0:11:22:33:44:01";
const SCALE: &str = "C0:11:22:33:44:02";
const TREADMILL: &str = "C0:11:22:33:44:03";

/// A private system bus with the mocked BlueZ on it.
struct MockBluez {
    bus: Child,
    mock: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    address: String,
}

impl MockBluez {
    /// Starts the bus and the mock, or says why it cannot.
    fn start(dir: &Path) -> Result<MockBluez, String> {
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ble");
        let python = Path::new("/usr/bin/python3");
        let probe = Command::new(python)
            .args(["-c", "import dbusmock, gi"])
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            return Err("python3-dbusmock is not installed".into());
        }
        let mut bus = Command::new("dbus-daemon")
            .arg(format!(
                "--config-file={}",
                here.join("system-bus.conf").display()
            ))
            .args(["--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", dir.join("bus").display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dbus-daemon: {e}"))?;
        let mut address = String::new();
        BufReader::new(bus.stdout.take().expect("piped"))
            .read_line(&mut address)
            .map_err(|e| format!("dbus-daemon address: {e}"))?;
        let address = address.trim().to_string();
        let mut mock = Command::new(python)
            .arg(here.join("mock_bluez.py"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("mock_bluez.py: {e}"))?;
        let stdin = mock.stdin.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        let stdout = mock.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut m = MockBluez {
            bus,
            mock,
            stdin,
            lines,
            address,
        };
        m.expect("ready", Duration::from_secs(20))?;
        Ok(m)
    }

    /// Waits for a line starting with `prefix`, passing over others.
    fn expect(&mut self, prefix: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Err(format!("mock never printed \"{prefix}\""))
    }

    /// Waits for lines starting with each of `prefixes`, in any order.
    fn expect_all(&mut self, prefixes: &[String], within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut missing: Vec<&String> = prefixes.iter().collect();
        while !missing.is_empty() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("mock never printed {missing:?}"))?;
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("mock never printed {missing:?}"))?;
            missing.retain(|p| !line.starts_with(p.as_str()));
        }
        Ok(())
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("mock stdin");
        let verb = line.split_whitespace().next().unwrap_or_default();
        self.expect(&format!("ok {verb}"), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
}

impl Drop for MockBluez {
    fn drop(&mut self) {
        let _ = self.mock.kill();
        let _ = self.mock.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

fn ble_device(id: &str, profile: &str, address: Option<&str>) -> String {
    let address = address
        .map(|a| format!("address = \"{a}\"\n"))
        .unwrap_or_default();
    format!("\n[[device]]\nid = \"{id}\"\nprofile = \"{profile}\"\n[device.transport]\ntype = \"ble\"\n{address}")
}

/// Appends `[[device]]` tables to a config file.
fn add_devices(config: &Path, devices: &[String]) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.extend(devices.iter().map(String::as_str));
    std::fs::write(config, text).unwrap();
}

fn value(r: &Record, metric: &str) -> Option<f64> {
    r.value(metric).map(|v| v.value)
}

fn has(platform: &Platform, device: &str, metric: &str, want: f64) -> bool {
    platform.wait_until(Duration::from_secs(20), |r| {
        r.records
            .iter()
            .any(|x| x.device_id == device && value(x, metric) == Some(want))
    })
}

#[test]
fn mocked_bluez_devices_reach_the_platform_and_a_dropped_strap_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut bluez) = mock_or_skip(dir.path()) else {
        return;
    };
    let port = broker();
    let platform = Platform::subscribe(port);
    let config = write_config(dir.path(), port, &[]);
    add_devices(
        &config,
        &[
            ble_device("strap-1", "heart-rate-strap-ble", None),
            ble_device("scale-1", "weight-scale-ble", Some(SCALE)),
            ble_device("treadmill-1", "ftms-treadmill-ble", Some(TREADMILL)),
        ],
    );
    let mut daemon = Daemon::start_with_env(
        &config,
        1,
        &[("DBUS_SYSTEM_BUS_ADDRESS", bluez.address.clone())],
    );

    let within = Duration::from_secs(30);
    let subscribed: Vec<String> = [(STRAP, "2A37"), (SCALE, "2A9D"), (TREADMILL, "2ACD")]
        .iter()
        .map(|(address, characteristic)| format!("event subscribe {address} {characteristic}"))
        .collect();
    bluez
        .expect_all(&subscribed, within)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    // Subscriptions are made after the notification stream is open, so
    // nothing sent from here on is missed.
    bluez.command(&format!("notify {STRAP} 2A37 0048"));
    bluez.command(&format!("notify {SCALE} 2A9D 00B036"));
    bluez.command(&format!("notify {TREADMILL} 2ACD 01042003"));
    bluez.command(&format!("notify {TREADMILL} 2ACD 0000E803"));
    assert!(
        has(&platform, "strap-1", "vital.heart_rate", 72.0),
        "{}",
        daemon.log_text()
    );
    assert!(has(&platform, "scale-1", "body.weight", 70.0));
    assert!(has(&platform, "treadmill-1", "activity.speed", 10.0));
    let treadmill = platform
        .records()
        .into_iter()
        .find(|r| r.device_id == "treadmill-1")
        .expect("a treadmill record");
    assert_eq!(
        value(&treadmill, "activity.elapsed_time"),
        Some(800.0),
        "split record merged"
    );
    assert_eq!(treadmill.transport, Transport::Ble);
    assert_eq!(treadmill.profile_id, "ftms-treadmill-ble");

    // The strap drops mid-stream and comes back.
    bluez.command(&format!("disconnect {STRAP}"));
    bluez
        .expect(&format!("event connect {STRAP}"), within)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    bluez
        .expect(&format!("event subscribe {STRAP} 2A37"), within)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    bluez.command(&format!("notify {STRAP} 2A37 063C"));
    assert!(
        has(&platform, "strap-1", "vital.heart_rate", 60.0),
        "{}",
        daemon.log_text()
    );
    // A malformed value is rejected without harm.
    bluez.command(&format!("notify {STRAP} 2A37 0148"));
    bluez.command(&format!("notify {STRAP} 2A37 0050"));
    assert!(has(&platform, "strap-1", "vital.heart_rate", 80.0));
    daemon.stop();
    let log = daemon.log_text();
    assert!(log.contains("characteristic 2A37: truncated"), "{log}");
    assert!(log.contains("reconnecting"), "{log}");
}

/// Starts the mocked BlueZ, or returns None when the test is to be skipped.
fn mock_or_skip(dir: &Path) -> Option<MockBluez> {
    match MockBluez::start(dir) {
        Ok(m) => Some(m),
        Err(why) if std::env::var_os("FITEDGE_REQUIRE_BLUEZ_MOCK").is_none() => {
            eprintln!("skipped: {why}");
            None
        }
        Err(why) => panic!("mocked BlueZ required: {why}"),
    }
}

#[test]
fn scan_lists_the_advertising_peripherals_with_their_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bluez) = mock_or_skip(dir.path()) else {
        return;
    };
    let out = common::binary()
        .args(["scan", "--seconds", "2", "--json", "--config"])
        .arg(dir.path().join("none.toml"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bluez.address)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = report["ble"]["devices"].as_array().expect("devices");
    let strap = devices
        .iter()
        .find(|d| d["address"] == STRAP)
        .unwrap_or_else(|| panic!("strap listed: {report}"));
    assert_eq!(strap["name"], "HRM-Pro");
    assert_eq!(strap["rssi"], -50);
    assert_eq!(strap["service_names"][0], "180D Heart Rate");
    assert_eq!(
        strap["profiles"],
        serde_json::json!(["heart-rate-strap-ble"])
    );
    let scale = devices
        .iter()
        .find(|d| d["address"] == SCALE)
        .expect("scale");
    assert_eq!(scale["profiles"], serde_json::json!(["weight-scale-ble"]));
    let treadmill = devices
        .iter()
        .find(|d| d["address"] == TREADMILL)
        .expect("treadmill");
    assert_eq!(
        treadmill["fitness_machines"],
        serde_json::json!(["treadmill"])
    );
    assert_eq!(
        treadmill["profiles"],
        serde_json::json!(["ftms-treadmill-ble"])
    );
    assert!(report["serial"].is_array());
}

/// The gateway's status report, from its status endpoint.
fn status(address: std::net::SocketAddr) -> serde_json::Value {
    let out = common::binary()
        .args(["status", "--json", "--address"])
        .arg(address.to_string())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn a_powered_off_adapter_is_reported_and_the_strap_returns_when_it_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut bluez) = mock_or_skip(dir.path()) else {
        return;
    };
    let port = broker();
    let platform = Platform::subscribe(port);
    let config = write_config(dir.path(), port, &[]);
    let endpoint = enable_status(&config);
    add_devices(
        &config,
        &[ble_device("strap-1", "heart-rate-strap-ble", None)],
    );
    let mut daemon = Daemon::start_with_env(
        &config,
        1,
        &[("DBUS_SYSTEM_BUS_ADDRESS", bluez.address.clone())],
    );
    let within = Duration::from_secs(30);
    let subscribed = [format!("event subscribe {STRAP} 2A37")];
    bluez
        .expect_all(&subscribed, within)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));

    bluez.command("power off");
    let deadline = Instant::now() + within;
    let mut report = status(endpoint);
    while Instant::now() < deadline
        && !report["health"]["counters"]["ble_unavailable"]
            .as_str()
            .is_some_and(|w| w.contains("powered off"))
    {
        std::thread::sleep(Duration::from_millis(200));
        report = status(endpoint);
    }
    let counters = &report["health"]["counters"];
    assert!(
        counters["ble_unavailable"]
            .as_str()
            .is_some_and(|w| w.contains("powered off")),
        "{report}\n{}",
        daemon.log_text()
    );
    assert_eq!(counters["devices"]["strap-1"]["connected"], false);

    bluez.command("power on");
    bluez
        .expect_all(&subscribed, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    bluez.command(&format!("notify {STRAP} 2A37 0042"));
    assert!(
        has(&platform, "strap-1", "vital.heart_rate", 66.0),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        status(endpoint)["health"]["counters"]["ble_unavailable"],
        serde_json::Value::Null
    );
    daemon.stop();
}

#[test]
fn a_bus_without_bluetoothd_is_named_as_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ble/system-bus.conf");
    let Ok(mut bus) = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
        .arg(format!(
            "--address=unix:path={}",
            dir.path().join("bus").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        assert!(
            std::env::var_os("FITEDGE_REQUIRE_BLUEZ_MOCK").is_none(),
            "dbus-daemon required"
        );
        eprintln!("skipped: no dbus-daemon");
        return;
    };
    let mut address = String::new();
    BufReader::new(bus.stdout.take().expect("piped"))
        .read_line(&mut address)
        .unwrap();
    let out = common::binary()
        .args(["scan", "--seconds", "1", "--json", "--config"])
        .arg(dir.path().join("none.toml"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", address.trim())
        .output()
        .unwrap();
    let _ = bus.kill();
    let _ = bus.wait();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = report["ble"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot reach bluetoothd") && error.contains("org.bluez"),
        "{report}"
    );
}

#[test]
fn without_bluetooth_serial_devices_keep_forwarding_and_ble_is_reported_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let port = broker();
    let platform = Platform::subscribe(port);
    let mut grip = Pty::open().unwrap();
    let config = write_config(
        dir.path(),
        port,
        &[DeviceEntry {
            id: "grip-1",
            profile: "grip-dynamometer-stx-etx",
            port: &grip.path,
        }],
    );
    let endpoint = enable_status(&config);
    add_devices(
        &config,
        &[ble_device("strap-1", "heart-rate-strap-ble", None)],
    );
    let no_bus = format!("unix:path={}", dir.path().join("no-such-bus").display());
    let mut daemon = Daemon::start_with_env(&config, 1, &[("DBUS_SYSTEM_BUS_ADDRESS", no_bus)]);

    let mut rng = fastrand::Rng::with_seed(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while platform.record_count() < 5 && Instant::now() < deadline {
        n += 1;
        grip.write_frame(&Instrument::Grip.frame(n, &mut rng).bytes)
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(platform.record_count() >= 5, "{}", daemon.log_text());
    assert!(platform.records().iter().all(|r| r.device_id == "grip-1"));

    let report = status(endpoint);
    let counters = &report["health"]["counters"];
    let why = counters["ble_unavailable"].as_str().unwrap_or_default();
    assert!(why.contains("Bluetooth is unavailable"), "{report}");
    let strap = &counters["devices"]["strap-1"];
    assert_eq!(strap["connected"], false);
    assert!(
        strap["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("D-Bus"),
        "{report}"
    );
    daemon.stop();
    assert!(daemon.log_text().contains("other devices carry on"));

    // `fitedge scan` says why there is no Bluetooth and still lists ports.
    let out = common::binary()
        .args(["scan", "--seconds", "1", "--json", "--config"])
        .arg(&config)
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}", dir.path().join("no-such-bus").display()),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["ble"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("D-Bus"),
        "{report}"
    );
    assert!(report["serial"].is_array());
}
