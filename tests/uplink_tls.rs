//! The uplink over TLS against Debian's mosquitto, with certificates made
//! here: records arrive and a capture of the link shows neither the
//! password nor a record; a wrong CA, an expired certificate, a wrong host
//! name and a missing client certificate each fail with their cause named
//! in the log and in `fitedge status`; mutual TLS with the key from a
//! credential directory delivers.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use fitedge::sim::{Instrument, Pty};

const USER: &str = "gw-test";
const PASSWORD: &str = "pw-3f9a71c2-never-in-clear";

/// A gateway config for `port` on `host`, with `tls` as the
/// `[upstream.tls]` table (none: plain MQTT) and the test account.
fn tls_config(
    dir: &Path,
    host: &str,
    port: u16,
    tls: Option<&str>,
    pty: Option<&Path>,
) -> std::path::PathBuf {
    let devices: Vec<DeviceEntry> = pty
        .map(|port| DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port,
        })
        .into_iter()
        .collect();
    let config = write_config(dir, port, &devices);
    let password = dir.join("upstream.password");
    write_private(&password, &format!("{PASSWORD}\n"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("host = \"127.0.0.1\"", &format!("host = \"{host}\""));
    text = text.replace(
        "[upstream]\n",
        &format!(
            "[upstream]\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    );
    if let Some(tls) = tls {
        text.push_str(&format!("\n[upstream.tls]\n{tls}\n"));
    }
    std::fs::write(&config, text).unwrap();
    config
}

fn wait_for_log(daemon: &Daemon, text: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if daemon.log_text().contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends `n` readings and waits for them upstream.
fn deliver(pty: &mut Pty, platform: &Platform, n: u64, daemon: &Daemon) {
    let mut rng = fastrand::Rng::with_seed(7);
    let before = platform.record_count();
    for i in 0..n {
        pty.write_frame(&Instrument::HeightWeight.frame(i, &mut rng).bytes)
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len()
            >= before + n as usize),
        "{} of {n} records arrived\n{}",
        platform.record_count() - before,
        daemon.log_text()
    );
}

#[test]
fn records_go_over_tls_and_a_capture_shows_no_password_and_no_record() {
    if !have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "platform-ca");
    let server = ca.issue("broker", &["localhost"], Use::Server);
    let broker = MosquittoTls::start(
        dir.path(),
        TlsListener {
            ca: &ca,
            server: &server,
            require_certificate: false,
            account: Some((USER, PASSWORD)),
        },
    );
    let platform = Platform::subscribe(broker.plain);
    let mut pty = Pty::open().unwrap();

    // The same relay in front of the plain listener sees everything: the
    // capture is able to show what TLS must hide.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain_capture = Capture::start(broker.plain);
    let config = tls_config(
        plain_dir.path(),
        "127.0.0.1",
        plain_capture.port,
        None,
        Some(&pty.path),
    );
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    deliver(&mut pty, &platform, 5, &daemon);
    daemon.stop();
    let clear = plain_capture.bytes();
    assert!(
        contains(&clear, PASSWORD.as_bytes()),
        "a plain link carries the password"
    );
    assert!(
        contains(&clear, b"height-weight-kv-line"),
        "and the records"
    );

    let capture = Capture::start(broker.tls);
    let tls = format!("ca_file = \"{}\"", ca.cert.display());
    let config = tls_config(
        dir.path(),
        "localhost",
        capture.port,
        Some(&tls),
        Some(&pty.path),
    );
    let mut daemon = Daemon::start(&config, 1);
    wait_for_port(&daemon);
    assert!(
        wait_for_log(
            &daemon,
            "Connected to upstream broker.",
            Duration::from_secs(10)
        ),
        "{}",
        daemon.log_text()
    );
    deliver(&mut pty, &platform, 20, &daemon);
    daemon.stop();

    let sent = capture.bytes();
    assert!(
        sent.len() > 2000,
        "the records crossed the relay: {} bytes",
        sent.len()
    );
    assert_eq!(
        &sent[..2],
        &[0x16, 0x03],
        "the link opens with a TLS handshake"
    );
    for secret in [
        PASSWORD.as_bytes(),
        b"height-weight-kv-line",
        b"records/hw-1",
        b"MQTT",
    ] {
        assert!(
            !contains(&sent, secret),
            "{:?} crossed the TLS link in clear",
            String::from_utf8_lossy(secret)
        );
    }
    assert!(
        !daemon.log_text().contains(PASSWORD),
        "the password is never logged"
    );
}

/// Starts a gateway that cannot connect, and checks that the log and
/// `fitedge status` name `cause`.
fn fails_with(dir: &Path, host: &str, port: u16, tls: &str, cause: &str) {
    let config = tls_config(dir, host, port, Some(tls), None);
    let status = enable_status(&config);
    let daemon = Daemon::start(&config, 0);
    assert!(
        wait_for_log(&daemon, cause, Duration::from_secs(15)),
        "the log names \"{cause}\":\n{}",
        daemon.log_text()
    );
    assert!(!daemon.log_text().contains("Connected to upstream broker."));
    let out = binary()
        .args(["status", "--address"])
        .arg(status.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOT CONNECTED") && text.contains(cause),
        "status names \"{cause}\":\n{text}"
    );
}

#[test]
fn tls_failures_name_their_cause() {
    if !have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "platform-ca");
    let other_ca = Ca::new(dir.path(), "other-ca");
    let server = ca.issue("broker", &["localhost"], Use::Server);
    let expired = ca.issue("expired-broker", &["localhost"], Use::ExpiredServer);
    let trust = format!("ca_file = \"{}\"", ca.cert.display());

    let listener = |server| TlsListener {
        ca: &ca,
        server,
        require_certificate: false,
        account: Some((USER, PASSWORD)),
    };
    let good = MosquittoTls::start(&subdir(dir.path(), "good"), listener(&server));
    let stale = MosquittoTls::start(&subdir(dir.path(), "stale"), listener(&expired));
    let strict = MosquittoTls::start(
        &subdir(dir.path(), "strict"),
        TlsListener {
            require_certificate: true,
            ..listener(&server)
        },
    );

    let case = |name: &str| subdir(dir.path(), name);
    let other = format!("ca_file = \"{}\"", other_ca.cert.display());
    fails_with(
        &case("wrong-ca"),
        "localhost",
        good.tls,
        &other,
        "TLS: unknown CA",
    );
    fails_with(
        &case("expired"),
        "localhost",
        stale.tls,
        &trust,
        "TLS: expired",
    );
    fails_with(
        &case("wrong-name"),
        "127.0.0.1",
        good.tls,
        &trust,
        "TLS: name mismatch",
    );
    // A configured server_name is checked as strictly as the host.
    let wrong_name = format!("{trust}\nserver_name = \"mqtt.elsewhere.example\"");
    fails_with(
        &case("wrong-server-name"),
        "localhost",
        good.tls,
        &wrong_name,
        "TLS: name mismatch",
    );
    fails_with(
        &case("no-client-cert"),
        "localhost",
        strict.tls,
        &trust,
        "TLS: no client certificate",
    );
}

#[test]
fn mutual_tls_with_the_key_from_a_credential_directory_delivers() {
    if !have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "platform-ca");
    let server = ca.issue("broker", &["localhost"], Use::Server);
    let client = ca.issue("gateway", &["gw-test"], Use::Client);
    let broker = MosquittoTls::start(
        dir.path(),
        TlsListener {
            ca: &ca,
            server: &server,
            require_certificate: true,
            account: None,
        },
    );
    let platform = Platform::subscribe(broker.plain);
    let credentials = subdir(dir.path(), "credentials");
    std::fs::rename(&client.key, credentials.join("upstream.key")).unwrap();
    let mut pty = Pty::open().unwrap();
    // By address, with the name the broker's certificate carries.
    let tls = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"${{CREDENTIALS_DIRECTORY}}/upstream.key\"\nserver_name = \"localhost\"",
        ca.cert.display(),
        client.cert.display()
    );
    let config = tls_config(
        dir.path(),
        "127.0.0.1",
        broker.tls,
        Some(&tls),
        Some(&pty.path),
    );
    let status = enable_status(&config);
    let daemon = Daemon::start_with_env(
        &config,
        0,
        &[("CREDENTIALS_DIRECTORY", credentials.display().to_string())],
    );
    wait_for_port(&daemon);
    deliver(&mut pty, &platform, 10, &daemon);
    let report = status_report(status);
    let counters = &report["health"]["counters"];
    for key in ["uplink_client_cert_expires", "uplink_server_cert_expires"] {
        let at = counters[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {counters}"));
        assert!(at.ends_with('Z') && at > "2026", "{key} = {at}");
    }
}

/// `parent/name`, created.
fn subdir(parent: &Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
