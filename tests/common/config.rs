//! Config files and buffers for test gateways.
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

/// The repository's profile catalogue.
pub fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("device-profiles")
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

{identity}
"#,
        identity = identity_section(dir),
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

/// A gateway config with one height-weight station (`hw-1`) on `pty`,
/// and `upstream_extra` lines added to `[upstream]`.
pub fn height_weight_config(
    dir: &Path,
    broker_port: u16,
    pty: &Path,
    upstream_extra: &str,
) -> PathBuf {
    let config = write_config(
        dir,
        broker_port,
        &[DeviceEntry {
            id: "hw-1",
            profile: "height-weight-kv-line",
            port: pty,
        }],
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[upstream]\n", &format!("[upstream]\n{upstream_extra}\n"));
    std::fs::write(&config, text).unwrap();
    config
}

/// The site key of every test gateway.
pub const TEST_KEY: &[u8] = b"fitedge-tests-site-key-0123456789";

/// Writes the test key (mode 0600) into `dir` and returns the
/// `[identity]` section naming it.
pub fn identity_section(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("pseudonym.key");
    std::fs::write(&path, TEST_KEY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!("[identity]\nkey_file = \"{}\"\n", path.display())
}

/// The pseudonym a test gateway sends for subject id `id`.
pub fn psn(id: &str) -> String {
    let key = fitedge::identity::Key::new(TEST_KEY).unwrap();
    fitedge::identity::Keyring::new(key).pseudonym(id).current
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
