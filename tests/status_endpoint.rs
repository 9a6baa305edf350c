//! The status endpoint against a stranger: a request head too large to
//! keep, connections that never send a request, and a password that
//! must be given once one is set.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{binary, broker, enable_status, rss_kb, wait_log, write_config, Daemon};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What the server answers to `request` (the status line), or `None`
/// when it closes the connection without an answer.
fn answer(address: SocketAddr, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines().next().map(str::to_string)
}

/// Whether the server has closed `stream` (reads end of file or a reset).
fn closed(mut stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn a_stranger_cannot_grow_or_hold_the_status_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), broker(), &[]);
    let status = enable_status(&config);
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "Status endpoint listening.");
    let pid = daemon.child.id();
    assert!(common::status_report(status)["gateway_id"].is_string());
    let (rss_before, fds_before) = (rss_kb(pid), open_fds(pid));

    // Request heads of 4 MiB: refused, not buffered.
    let mut huge = b"GET /status HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 << 20));
    huge.extend_from_slice(b"\r\n\r\n");
    for _ in 0..5 {
        let line = answer(status, &huge);
        assert!(
            line.as_deref().is_none_or(|l| l.contains("431")),
            "a 4 MiB head is refused: {line:?}"
        );
    }

    // Forty connections that never send a request: those over the limit
    // are closed at once, the rest once their time to send a head is up.
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(status).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let early = silent.iter().filter(|s| closed(s)).count();
    assert!(early >= 40 - 16, "{early} of 40 closed at once");
    std::thread::sleep(Duration::from_secs(6));
    let late = silent.iter().filter(|s| closed(s)).count();
    assert_eq!(late, 40, "every silent connection is closed after 5 s");
    drop(silent);

    std::thread::sleep(Duration::from_millis(200));
    let report = common::status_report(status);
    assert!(
        report["gateway_id"].is_string(),
        "the endpoint still answers"
    );
    let (rss_after, fds_after) = (rss_kb(pid), open_fds(pid));
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS {rss_before} kB before, {rss_after} kB after"
    );
    assert!(
        fds_after <= fds_before + 2,
        "descriptors {fds_before} before, {fds_after} after"
    );
    println!("status endpoint: RSS {rss_before} -> {rss_after} kB, descriptors {fds_before} -> {fds_after}");
}

#[test]
fn a_status_endpoint_with_a_password_asks_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), broker(), &[]);
    let status = enable_status(&config);
    let text = std::fs::read_to_string(&config).unwrap();

    // Off loopback without a password: refused by check.
    let open = text.replace(
        &format!("listen = \"{status}\""),
        "listen = \"0.0.0.0:9717\"",
    );
    std::fs::write(&config, &open).unwrap();
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("reachable from the network") && stderr.contains("password_file"),
        "{stderr}"
    );

    // With a password file, every request must carry it.
    common::write_private(&dir.path().join("status.password"), "s3cret\n");
    let guarded = text.replace(
        &format!("listen = \"{status}\""),
        &format!("listen = \"{status}\"\npassword_file = \"status.password\""),
    );
    std::fs::write(&config, &guarded).unwrap();
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "Status endpoint listening.");
    let plain = answer(
        status,
        b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        plain.as_deref().is_some_and(|l| l.contains("401")),
        "{plain:?}"
    );
    let wrong = answer(
        status,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic Zml0ZWRnZTp3cm9uZw==\r\n\r\n",
    );
    assert!(
        wrong.as_deref().is_some_and(|l| l.contains("401")),
        "{wrong:?}"
    );

    // fitedge status reads the password from the config; without the
    // config it says what is asked of it.
    let out = binary()
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["gateway_id"], common::GATEWAY);
    let out = binary()
        .args(["status", "--address", &status.to_string(), "--config"])
        .arg(dir.path().join("none.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("asks for a password"),
        "{stderr}"
    );
}
