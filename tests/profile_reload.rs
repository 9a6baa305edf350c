//! Reloading profiles on SIGHUP: a changed profile takes effect without a
//! restart; a broken one is rejected and the running one keeps working.

mod common;

use std::time::Duration;

use common::{broker, profiles_dir, Daemon, DeviceEntry, Platform};
use fitedge::sim::Pty;

/// A profile directory holding a copy of the height/weight profile, and a
/// config pointing at it.
fn setup(
    dir: &std::path::Path,
    port: u16,
    pty: &Pty,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let profiles = dir.join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let original =
        std::fs::read_to_string(profiles_dir().join("height-weight-kv-line.toml")).unwrap();
    let profile = profiles.join("height-weight-kv-line.toml");
    std::fs::write(&profile, &original).unwrap();
    let config = common::write_config(
        dir,
        port,
        &[DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: &pty.path,
        }],
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &profiles_dir().display().to_string(),
        &profiles.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    (config, profile, original)
}

#[test]
fn sighup_applies_a_changed_profile_and_rejects_a_broken_one() {
    let port = broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let (config, profile, original) = setup(dir.path(), port, &pty);
    let mut daemon = Daemon::start(&config, 0);
    assert!((0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().contains("Serial port opened.")
    }));
    let frame = b"ID=S0001;HT=172.5;WT=143.30\r\n";
    pty.write_frame(frame).unwrap();
    assert!(platform.wait_until(Duration::from_secs(10), |r| r.records.len() == 1));
    assert_eq!(
        platform.records()[0].value("body.weight").unwrap().value,
        143.3
    );

    // The scale turns out to report pounds: fix the profile, send SIGHUP.
    std::fs::write(
        &profile,
        original.replace(
            "key = \"WT\"\nmetric = \"body.weight\"\nunit = \"kg\"",
            "key = \"WT\"\nmetric = \"body.weight\"\nunit = \"lb\"",
        ),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            daemon.log_text().contains("Profile reloaded.")
        }),
        "{}",
        daemon.log_text()
    );
    pty.write_frame(frame).unwrap();
    assert!(platform.wait_until(Duration::from_secs(10), |r| r.records.len() == 2));
    let converted = platform.records()[1].value("body.weight").unwrap().clone();
    assert_eq!(
        (converted.value, converted.source_unit.as_deref()),
        (64.999787, Some("lb"))
    );

    // A typo: rejected with its line, the lb profile keeps running.
    std::fs::write(
        &profile,
        original.replace("metric = \"body.weight\"", "metric = \"body.wieght\""),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            daemon.log_text().contains("Profile reload rejected")
        }),
        "{}",
        daemon.log_text()
    );
    assert!(daemon
        .log_text()
        .contains("unknown metric id \"body.wieght\""));
    pty.write_frame(frame).unwrap();
    assert!(
        platform.wait_until(Duration::from_secs(10), |r| r.records.len() == 3),
        "still forwarding"
    );
    assert_eq!(
        platform.records()[2].value("body.weight").unwrap().value,
        64.999787
    );

    daemon.stop();
}
