//! Request/response devices: the gateway polls a simulated Modbus RTU
//! strength machine on a pseudo-terminal, retries when it falls silent,
//! reports it, and carries on when it answers again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{broker, Platform};
use fitedge::codec::checksum::ChecksumKind;
use fitedge::gateway::{self, Handle};
use fitedge::sim::Pty;

const PROFILE: &str = r#"
id = "test-strength-modbus"
name = "Strength machine, Modbus RTU"
[frame]
type = "modbus_rtu"
[decode]
type = "modbus"
[[field]]
register = 0
metric = "strength.load"
scale = 0.1
[[field]]
register = 1
metric = "strength.repetitions"
[request]
modbus = { slave = 1, function = 3, start = 0, count = 2 }
every_ms = 100
timeout_ms = 60
retries = 1
[[test]]
hex = "01030400FA000CDA07"
values = { "strength.load" = 25.0, "strength.repetitions" = 12.0 }
[[test]]
hex = "018302C0F1"
error = "illegal_data_address"
"#;

fn response(load_tenths: u16, reps: u16) -> Vec<u8> {
    let mut r = vec![1, 3, 4];
    r.extend(load_tenths.to_be_bytes());
    r.extend(reps.to_be_bytes());
    let crc = ChecksumKind::Crc16Modbus.compute(&r);
    r.extend(crc.to_le_bytes());
    r
}

#[test]
fn a_polled_modbus_machine_is_read_retried_and_reported_when_silent() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("test-strength-modbus.toml"), PROFILE).unwrap();
    let mut pty = Pty::open().unwrap();
    let config = common::write_config(
        dir.path(),
        port,
        &[common::DeviceEntry {
            id: "press-1",
            profile: "test-strength-modbus",
            port: &pty.path,
        }],
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &common::profiles_dir().display().to_string(),
        &profiles.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();

    // The machine: answers each request, except while `silent`.
    let silent = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (s, st, a, r) = (
        silent.clone(),
        stop.clone(),
        answered.clone(),
        requests.clone(),
    );
    let machine = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            let request = pty.read_request(Duration::from_millis(100)).unwrap();
            if request.is_empty() {
                continue;
            }
            r.lock().unwrap().push(request);
            if !s.load(Ordering::Relaxed) {
                let n = a.fetch_add(1, Ordering::Relaxed) as u16 + 1;
                pty.write_frame(&response(250 + n, n)).unwrap();
            }
        }
    });

    let (config, profiles) = fitedge::cli::load(&config).unwrap();
    let handle = Handle::default();
    let stats = handle.stats.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(gateway::run(config, profiles, handle, async {
                let _ = stop_rx.await;
            }))
    });

    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 5),
        "polled readings arrive"
    );
    silent.store(true, Ordering::Relaxed);
    let reported = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        stats.snapshot().devices["press-1"].requests_unanswered >= 2
    });
    assert!(reported, "silence is counted");
    let snapshot = stats.snapshot();
    assert!(snapshot.devices["press-1"]
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("no reply"));
    let before = platform.record_count();
    silent.store(false, Ordering::Relaxed);
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= before + 5),
        "readings resume"
    );
    stop_tx.send(()).unwrap();
    gateway.join().unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    machine.join().unwrap();

    let expected_request = vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0xC4, 0x0B];
    let requests = requests.lock().unwrap();
    assert!(
        requests.iter().all(|r| r == &expected_request),
        "every request is the FC03 read with its CRC: {requests:02X?}"
    );
    let answered_count = answered.load(Ordering::Relaxed) as u64;
    assert!(
        requests.len() as u64 > answered_count,
        "retries were sent while silent"
    );
    for record in platform.records() {
        let reps = record.value("strength.repetitions").unwrap().value;
        let load = record.value("strength.load").unwrap().value;
        assert!(
            (load - (250.0 + reps) / 10.0).abs() < 1e-9,
            "load {load} for repetition {reps}"
        );
    }
}
