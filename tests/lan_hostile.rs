//! A device or stranger on the site network against the embedded LAN
//! broker: a taken client id, an account publishing for another's device,
//! and a users file with no accounts.

mod common;

use std::time::Duration;

use common::{
    binary, broker, embedded, enable_status, free_port, hub_config, status_report, wait_log,
    Daemon, Device, Platform, HUB_PASSWORD, HUB_USER,
};
use rumqttc::QoS;

fn publish_bands(device: &Device, from: u64, count: u64) {
    let mut rng = fastrand::Rng::with_seed(from);
    for seq in from..from + count {
        let frame = fitedge::sim::band_message((seq % 20) as u32 + 1, seq, &mut rng);
        device
            .client
            .publish("hub/hr-hub-1/hr", QoS::AtLeastOnce, false, frame.bytes)
            .unwrap();
    }
}

/// A gateway with the band hub on its embedded broker, its platform, LAN
/// port and status address.
fn hub_gateway() -> (
    Platform,
    u16,
    std::net::SocketAddr,
    Daemon,
    tempfile::TempDir,
) {
    let upstream = broker();
    let platform = Platform::subscribe(upstream);
    let dir = tempfile::tempdir().unwrap();
    let lan_port = free_port();
    let config = hub_config(dir.path(), upstream, &embedded(lan_port));
    let status = enable_status(&config);
    let daemon = Daemon::start(&config, 0);
    wait_log(&daemon, "LAN broker listening.");
    (platform, lan_port, status, daemon, dir)
}

/// Client ids cannot silence the gateway: there is no internal link to take
/// over (the id the gateway once used for it is an ordinary id), and a
/// client id held by one account cannot be taken by another. Readings of
/// the other devices keep arriving.
#[test]
fn a_taken_client_id_silences_no_one() {
    let (platform, lan_port, status, daemon, _dir) = hub_gateway();
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().unwrap();
    publish_bands(&hub, 0, 20);
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 20));

    // An account connects with the gateway's old internal id, and another
    // account with the hub's id.
    let squatter = Device::connect(lan_port, "fitedge-gateway", "spare", "other");
    assert!(
        squatter.outcome().is_ok(),
        "an ordinary id is an ordinary id"
    );
    let thief = Device::connect(lan_port, "hub-client", "spare", "other");
    assert!(
        thief.outcome().is_err(),
        "a client id held by another account is refused"
    );
    publish_bands(&hub, 20, 20);
    assert!(
        platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 40),
        "the hub's readings keep arriving: {} of 40\n{}",
        platform.record_count(),
        daemon.log_text()
    );
    let report = status_report(status);
    assert!(report["health"]["counters"]["lan_connections"].as_u64() >= Some(2));
    assert!(report["health"]["counters"]["lan_connections_refused"].as_u64() >= Some(1));
    assert!(report["health"]["counters"].get("lan_error").is_none());
}

/// An account may publish only on the topics of the devices configured
/// for it: `spare` publishing on the hub's topic is dropped and counted,
/// and nothing of it goes upstream.
#[test]
fn an_account_cannot_publish_as_another_device() {
    let (platform, lan_port, status, daemon, _dir) = hub_gateway();
    let intruder = Device::connect(lan_port, "intruder", "spare", "other");
    intruder.outcome().unwrap();
    publish_bands(&intruder, 1000, 30);
    let hub = Device::connect(lan_port, "hub-client", HUB_USER, HUB_PASSWORD);
    hub.outcome().unwrap();
    publish_bands(&hub, 0, 10);
    assert!(platform.wait_until(Duration::from_secs(20), |r| r.records.len() >= 10));
    let denied = (0..100).find_map(|_| {
        let n = status_report(status)["health"]["counters"]["lan_denied"].as_u64();
        std::thread::sleep(Duration::from_millis(50));
        n.filter(|n| *n >= 30)
    });
    assert_eq!(denied, Some(30), "every publish of the intruder is denied");
    platform.wait_quiet(Duration::from_millis(500), Duration::from_secs(5));
    assert_eq!(
        platform.record_count(),
        10,
        "only the hub's readings went upstream"
    );
    let log = daemon.log_text();
    let lines = log
        .matches("LAN publish outside the account's devices")
        .count();
    assert!(
        (1..=3).contains(&lines),
        "denials logged at a bounded rate ({lines} lines)"
    );
}

/// A users file with no account lines would leave the broker open to
/// anyone: `check` refuses it, as it refuses a device whose account is not
/// in the file.
#[test]
fn a_users_file_without_accounts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path(), 1883, &embedded(free_port()));
    let check = || {
        let out = binary()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert!(check().0, "the hub's config is valid: {}", check().1);
    common::write_private(&dir.path().join("lan-users"), "# accounts to come\n");
    let (ok, text) = check();
    assert!(!ok && text.contains("has no account lines"), "{text}");
    common::write_private(&dir.path().join("lan-users"), "spare:other\n");
    let (ok, text) = check();
    assert!(
        !ok && text.contains("publishes as account \"hr-hub-1\""),
        "{text}"
    );
}
