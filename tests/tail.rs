//! `fitedge tail`, the reference subscriber, against Debian's mosquitto: it
//! shows the demo's readings with no gap and no duplicate, and tells a
//! gateway's new buffer (a new epoch) from a gap.

mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{binary, wait_for_port, Daemon, Mosquitto, GATEWAY};
use fitedge::sim::{Instrument, Pty};

/// Starts `fitedge tail --json` on `port` for `seconds`; waits until it is
/// subscribed (its first connect).
fn start_tail(port: u16, seconds: u64, extra: &[&str]) -> Child {
    let child = binary()
        .args([
            "tail",
            "--json",
            "--seconds",
            &seconds.to_string(),
            "--upstream",
        ])
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The subscription is made on connect; give it a moment on loopback.
    std::thread::sleep(Duration::from_millis(700));
    child
}

/// The JSON lines tail printed and its summary for our gateway.
fn finish(mut tail: Child) -> (Vec<serde_json::Value>, serde_json::Value, i32) {
    // Read to the end first: a full pipe would hold tail up.
    let mut out = String::new();
    tail.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = tail.wait().unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines
        .iter()
        .find_map(|l| l.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary in:\n{out}"));
    (lines, summary, status.code().unwrap_or(-1))
}

#[test]
fn tail_shows_the_demo_with_no_gap_and_no_duplicate() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let tail = start_tail(broker.port, 16, &[]);
    let demo = binary()
        .args([
            "demo",
            "--duration",
            "8",
            "--interval-ms",
            "200",
            "--upstream",
        ])
        .arg(format!("mqtt://127.0.0.1:{}", broker.port))
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let (lines, summary, code) = finish(tail);
    assert_eq!(code, 0, "every payload matched the schemas: {summary}");
    assert_eq!(summary["invalid"], 0);
    let gateways = summary["gateways"].as_object().unwrap();
    assert_eq!(gateways.len(), 1, "{summary}");
    let g = gateways.values().next().unwrap();
    let records = lines.iter().filter(|l| l.get("schema").is_some()).count() as u64;
    println!("tail on the demo: {records} records, summary {g}");
    assert!(records >= 40, "{records} records shown");
    assert_eq!(g["records"].as_u64(), Some(records));
    assert_eq!(g["duplicates"], 0);
    assert_eq!(g["missing"], 0);
    assert_eq!(g["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(g["offline"], true, "the demo stopped cleanly and said so");
}

#[test]
fn tail_tells_a_new_buffer_from_a_gap() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let config = common::height_weight_config(dir.path(), broker.port, &pty.path, "");
    let tail = start_tail(broker.port, 14, &["--device", "hw-1"]);
    let mut rng = fastrand::Rng::with_seed(70);
    let mut send = |pty: &mut Pty, n: u64| {
        pty.write_frame(&Instrument::HeightWeight.frame(n, &mut rng).bytes)
            .unwrap()
    };
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    for n in 1..=5 {
        send(&mut pty, n);
    }
    std::thread::sleep(Duration::from_secs(2));
    daemon.stop();
    // A new buffer: a reinstall, or an unreadable one moved aside.
    std::fs::remove_dir_all(dir.path().join("buffer")).unwrap();
    let mut daemon = Daemon::start(&config, 1);
    wait_for_port(&daemon);
    for n in 6..=10 {
        send(&mut pty, n);
    }
    std::thread::sleep(Duration::from_secs(2));
    daemon.stop();
    let (lines, summary, code) = finish(tail);
    assert_eq!(code, 0, "{summary}");
    let g = &summary["gateways"][GATEWAY];
    println!("tail across a new buffer: {g}");
    assert_eq!(g["records"], 10, "{summary}");
    assert_eq!(g["missing"], 0, "seq starting again is not a gap");
    assert_eq!(g["duplicates"], 0);
    assert_eq!(g["epochs"].as_array().unwrap().len(), 2);
    assert!(lines.iter().any(|l| l["event"] == "epoch_change"));
    assert!(!lines.iter().any(|l| l["event"] == "gap"));
}
