//! What an installer sees: `fitedge status` and `/metrics` from a running
//! daemon show the uplink, the buffer, each device's last reading and error,
//! and the counters.

mod common;

use std::time::Duration;

use common::{binary, broker, wait_for_port, write_config, Daemon, DeviceEntry, Platform};
use fitedge::sim::{Instrument, Pty};

#[test]
fn status_and_metrics_show_a_running_gateway() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let missing = dir.path().join("ttyUSB-unplugged");
    let config = write_config(
        dir.path(),
        port,
        &[
            DeviceEntry {
                id: "hw-1",
                profile: "height-weight-kv-line",
                port: &pty.path,
            },
            DeviceEntry {
                id: "grip-1",
                profile: "grip-dynamometer-stx-etx",
                port: &missing,
            },
        ],
    );
    let address = common::enable_status(&config).to_string();
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(1);
    for n in 1..=5 {
        pty.write_frame(&Instrument::HeightWeight.frame(n, &mut rng).bytes)
            .unwrap();
    }
    pty.write_frame(b"ID=S9;HT=oops;WT=1\r\n").unwrap();
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 5));

    let out = binary()
        .args(["status", "--address", &address])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("fitedge gw-test at site site-test"), "{text}");
    assert!(text.contains("uplink   connected"), "{text}");
    assert!(text.contains("buffer   0 unsent"), "{text}");
    assert!(text.contains("accepted 5, acknowledged 5"), "{text}");
    assert!(
        text.contains("hw-1") && text.contains("frames ok 5 bad 1"),
        "{text}"
    );
    assert!(
        text.contains("last reading") && text.contains("body.height="),
        "{text}"
    );
    assert!(
        text.contains("grip-1")
            && text.contains("not connected")
            && text.contains("ttyUSB-unplugged"),
        "the unplugged device and why: {text}"
    );

    let out = binary()
        .args(["status", "--json", "--address", &address])
        .output()
        .unwrap();
    let report: fitedge::report::Report = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.health.counters.records_accepted, 5);
    assert!(report.uplink_connected);

    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut metrics = String::new();
    std::io::Read::read_to_string(&mut stream, &mut metrics).unwrap();
    assert!(
        metrics.contains("fitedge_records_accepted_total 5"),
        "{metrics}"
    );
    assert!(metrics.contains("fitedge_uplink_connected 1"), "{metrics}");
    assert!(
        metrics.contains("fitedge_device_frames_total{device=\"hw-1\",result=\"bad\"} 1"),
        "{metrics}"
    );

    daemon.stop();
    let out = binary()
        .args(["status", "--address", &address])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no gateway answers"));
}
