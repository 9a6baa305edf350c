//! Unit tests of parsing and validation: defaults, problems placed at
//! their lines, devices, LAN accounts and environment expansion.

use super::environment::expand_env;
use super::*;

const GOOD: &str = r#"
gateway_id = "gw-01"
site_id = "site-a"
profile_dirs = ["profiles"]

[upstream]
host = "127.0.0.1"
port = 1883

[buffer]
dir = "buf"
max_records = 1000

[[device]]
id = "station-1"
profile = "height-weight-kv-line"
[device.transport]
type = "serial"
port = "/dev/ttyUSB0"
baud = 9600
parity = "even"
"#;

fn parse_str(text: &str) -> Result<Config, Vec<Problem>> {
    parse(Path::new("/etc/fitedge/fitedge.toml"), text)
}

#[test]
fn parses_a_good_config_with_defaults() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.gateway_id, "gw-01");
    assert_eq!(c.upstream.client_id, "fitedge-gw-01");
    assert_eq!(c.upstream.keep_alive, Duration::from_secs(30));
    assert_eq!(c.upstream.topic_prefix, "fitedge");
    assert_eq!(c.buffer.dir, PathBuf::from("/etc/fitedge/buf"));
    assert_eq!(c.profile_dirs, vec![PathBuf::from("/etc/fitedge/profiles")]);
    assert_eq!(c.buffer.full_policy, FullPolicy::DropOldest);
    let DeviceTransport::Serial(s) = &c.devices[0].transport else {
        panic!("serial")
    };
    assert_eq!(s.parity, Parity::Even);
    assert_eq!(s.port, PortRef::Path(PathBuf::from("/dev/ttyUSB0")));
}

#[test]
fn unknown_key_is_reported_at_its_line() {
    let text = GOOD.replace("port = 1883", "port = 1883\nkeepalive = 30");
    let problems = parse_str(&text).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(9), "{}", problems[0]);
    assert!(problems[0].message.contains("keepalive"), "{}", problems[0]);
}

#[test]
fn wrong_type_is_reported_at_its_line() {
    let text = GOOD.replace("baud = 9600", "baud = \"fast\"");
    let problems = parse_str(&text).unwrap_err();
    assert_eq!(problems[0].line, Some(20), "{}", problems[0]);
}

#[test]
fn every_semantic_problem_is_collected_with_its_line() {
    let text = GOOD
        .replace("gateway_id = \"gw-01\"", "gateway_id = \"gw/01\"")
        .replace("port = 1883", "port = 1883\nkeep_alive_seconds = 0")
        .replace("baud = 9600", "baud = 7");
    let problems = parse_str(&text).unwrap_err();
    let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(2), Some(9), Some(21)], "{problems:?}");
    assert!(problems.iter().all(|p| !p.fix.is_empty()));
}

#[test]
fn duplicate_device_ids_are_refused() {
    let dup = format!("{GOOD}\n[[device]]\nid = \"station-1\"\nprofile = \"x\"\ntransport = {{ type = \"serial\", port = \"/dev/ttyUSB1\" }}\n");
    let problems = parse_str(&dup).unwrap_err();
    assert!(problems[0].message.contains("used twice"), "{problems:?}");
    assert_eq!(problems[0].line, Some(24));
}

#[test]
fn missing_password_file_is_a_problem() {
    let text = GOOD.replace(
        "port = 1883",
        "port = 1883\npassword_file = \"/nonexistent/pw\"",
    );
    let problems = parse_str(&text).unwrap_err();
    assert!(
        problems[0].message.contains("password_file"),
        "{problems:?}"
    );
}

#[test]
fn a_usb_adapter_can_stand_for_the_port() {
    let text = GOOD.replace("port = \"/dev/ttyUSB0\"", "usb = \"1a86:7523:ABC\"");
    let c = parse_str(&text).unwrap();
    let DeviceTransport::Serial(s) = &c.devices[0].transport else {
        panic!("serial")
    };
    assert_eq!(
        s.port,
        PortRef::Usb(UsbId {
            vid: 0x1a86,
            pid: 0x7523,
            serial: Some("ABC".into())
        })
    );
    assert_eq!(s.port.to_string(), "usb 1a86:7523:ABC");
    let both = GOOD.replace(
        "port = \"/dev/ttyUSB0\"",
        "port = \"/dev/ttyUSB0\"\nusb = \"1a86:7523\"",
    );
    assert!(parse_str(&both).unwrap_err()[0]
        .message
        .contains("exactly one of port or usb"));
    let bad = GOOD.replace("port = \"/dev/ttyUSB0\"", "usb = \"ch340\"");
    assert!(parse_str(&bad).unwrap_err()[0]
        .message
        .contains("not VID:PID"));
}

#[test]
fn mqtt_devices_need_a_lan_section_and_valid_accounts() {
    let mqtt = "\n[[device]]\nid = \"hub-1\"\nprofile = \"heart-rate-band-hub-json\"\n[device.transport]\ntype = \"mqtt\"\ntopic = \"hub/+/hr\"\n";
    let without = format!("{GOOD}{mqtt}");
    assert!(parse_str(&without).unwrap_err()[0]
        .message
        .contains("no [lan] section"));
    let dir = tempfile::tempdir().unwrap();
    let users = |text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("users");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    users("# accounts\nhub-1:secret\nbroken-line\n");
    let lan = format!(
        "\n[lan]\ntype = \"embedded\"\nlisten = [\"127.0.0.1:1884\"]\nusers_file = \"{}\"\n",
        dir.path().join("users").display()
    );
    let text = GOOD.replace("[upstream]", &format!("{lan}\n[upstream]"));
    let problems = parse_str(&format!("{text}{mqtt}")).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].line, problems[0].message.as_str()),
        (Some(3), "not a user:password line")
    );
    users("hub-1:secret\n");
    let c = parse_str(&format!("{text}{mqtt}")).unwrap();
    let Some(Lan::Embedded(e)) = &c.lan else {
        panic!("embedded")
    };
    assert_eq!(e.users["hub-1"], "secret");
    assert_eq!(c.devices[1].transport_topic(), Some("hub/+/hr"));
    let bad_topic = format!("{text}{}", mqtt.replace("hub/+/hr", "hub/#/hr"));
    assert!(parse_str(&bad_topic).unwrap_err()[0]
        .message
        .contains("not an MQTT topic filter"));
}

#[test]
fn environment_names_in_paths_are_expanded() {
    std::env::set_var("FITEDGE_TEST_CREDS", "/run/credentials/fitedge.service");
    assert_eq!(
        expand_env("${FITEDGE_TEST_CREDS}/upstream-password").unwrap(),
        "/run/credentials/fitedge.service/upstream-password"
    );
    assert_eq!(expand_env("/plain/path").unwrap(), "/plain/path");
    assert_eq!(
        expand_env("${FITEDGE_NOT_SET_ANYWHERE}/x").unwrap_err(),
        "FITEDGE_NOT_SET_ANYWHERE"
    );
}

#[test]
fn device_line_finds_the_entry() {
    assert_eq!(device_line(GOOD, "station-1"), Some(15));
}

#[test]
fn a_broken_section_does_not_hide_the_problems_of_others() {
    let text = GOOD
        .replace("site_id = \"site-a\"", "site_id = 3\nsite = \"a\"")
        .replace("port = 1883", "port = 0")
        .replace("max_records = 1000", "max_records = 1000\nmax_record = 10")
        .replace("baud = 9600", "baud = \"fast\"");
    let problems = parse_str(&text).unwrap_err();
    let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
    assert_eq!(
        lines,
        vec![Some(3), Some(4), Some(9), Some(14), Some(22)],
        "{problems:?}"
    );
    assert!(problems[1].message.contains("unknown field `site`"));
    assert!(problems[2].message.contains("upstream port 0"));
    assert!(problems[3].message.contains("unknown field `max_record`"));
}

#[test]
fn the_embedded_brokers_tls_takes_no_client_side_keys() {
    let lan = "\n[lan]\ntype = \"embedded\"\nlisten = [\"127.0.0.1:1884\"]\ntls_listen = [\"127.0.0.1:8884\"]\nallow_anonymous = true\n\n[lan.tls]\ncert_file = \"lan.pem\"\nkey_file = \"lan.key\"\nca_file = \"devices-ca.pem\"\n";
    let text = GOOD.replace("[upstream]", &format!("{lan}\n[upstream]"));
    let problems = parse_str(&text).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("does not check devices' certificates")),
        "{problems:?}"
    );
}
