//! `fitedge check` and `fitedge run` on good and broken configs and profiles:
//! every problem is reported with file, line and a fix, and the exit code is
//! 78 (EX_CONFIG).

mod common;

use std::path::Path;

use common::{binary, profiles_dir, write_config, DeviceEntry};

fn check(config: &Path) -> (i32, String, String) {
    let out = binary()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

/// A config with one serial device, `hw-1`, using `profile`.
fn one_serial_device(dir: &Path, profile: &str) -> std::path::PathBuf {
    write_config(
        dir,
        1883,
        &[DeviceEntry {
            id: "hw-1",
            profile,
            port: Path::new("/dev/null"),
        }],
    )
}

#[test]
fn the_shipped_example_config_is_valid_apart_from_its_paths() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/fitedge.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Point the example's directories at the repository, as an install would.
    let text = text
        .replace("\"/etc/fitedge/device-profiles\", ", "")
        .replace(
            "/usr/share/fitedge/device-profiles",
            &profiles_dir().display().to_string(),
        );
    // The unit hands the password over as a systemd credential.
    common::write_private(&dir.path().join("upstream.password"), "secret\n");
    common::identity_section(dir.path());
    let config = dir.path().join("fitedge.toml");
    std::fs::write(&config, text).unwrap();
    let out = binary()
        .args(["check", "--config"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let (code, stdout, stderr) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stdout.contains("not present now"),
        "absent ports are noted, not fatal: {stdout}"
    );
}

#[test]
fn the_example_config_outside_systemd_says_where_the_password_comes_from() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/fitedge.toml");
    let out = binary()
        .args(["check", "--config"])
        .arg(&example)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("${CREDENTIALS_DIRECTORY}, which is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_good_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_serial_device(dir.path(), "height-weight-kv-line");
    let (code, stdout, _) = check(&config);
    assert_eq!(code, 0);
    assert!(stdout.contains("1 device(s), 1 profile(s)"), "{stdout}");
}

#[test]
fn config_problems_name_file_line_and_fix_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_serial_device(dir.path(), "height-weight-kv-line");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("keep_alive_seconds = 5", "keep_alive_seconds = 0")
        .replace("baud = 9600", "baud = 3");
    std::fs::write(&config, &text).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    let path = config.display().to_string();
    let keep_alive = line_of(&text, "keep_alive_seconds = 0");
    let baud = line_of(&text, "baud = 3");
    assert!(
        stderr.contains(&format!("{path}:{keep_alive}: keep_alive_seconds = 0")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{path}:{baud}: baud 3")),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(stderr.contains("2 problem(s) found."), "{stderr}");
}

#[test]
fn three_mistakes_in_different_sections_are_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_serial_device(dir.path(), "no-such-profile");
    // A mistyped value, an unknown key and a device whose profile is missing.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keep_alive_seconds = 5", "keep_alive_seconds = \"5\"")
        .replace("max_records = 5000", "max_records = 5000\nmax_record = 10");
    std::fs::write(&config, &text).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78, "{stderr}");
    let path = config.display().to_string();
    let at = |needle: &str| format!("{path}:{}: ", line_of(&text, needle));
    for expected in [
        format!(
            "{}invalid type: string \"5\", expected u64",
            at("keep_alive_seconds")
        ),
        format!("{}unknown field `max_record`", at("max_record = 10")),
        format!(
            "{}profile \"no-such-profile\" not found",
            at("id = \"hw-1\"")
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected} in:\n{stderr}");
    }
    assert!(stderr.contains("3 problem(s) found."), "{stderr}");
}

#[test]
fn a_syntax_error_is_placed_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fitedge.toml");
    std::fs::write(
        &config,
        "gateway_id = \"gw\"\nsite_id = \"s\"\n[upstream\nhost = \"x\"\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    assert!(stderr.contains("fitedge.toml:3:"), "{stderr}");
}

#[test]
fn an_unknown_profile_is_reported_at_the_device_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_serial_device(dir.path(), "no-such-profile");
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    let line = line_of(&std::fs::read_to_string(&config).unwrap(), "id = \"hw-1\"");
    assert!(
        stderr.contains(&format!(
            "{}:{line}: profile \"no-such-profile\" not found",
            config.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_broken_profile_is_reported_with_its_own_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let good =
        std::fs::read_to_string(profiles_dir().join("grip-dynamometer-stx-etx.toml")).unwrap();
    let typo = good.replace("metric = \"strength.grip\"", "metric = \"strength.gripp\"");
    std::fs::write(profiles.join("grip-dynamometer-stx-etx.toml"), &typo).unwrap();
    let config = write_config(
        dir.path(),
        1883,
        &[DeviceEntry {
            id: "g",
            profile: "grip-dynamometer-stx-etx",
            port: Path::new("/dev/null"),
        }],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            &profiles_dir().display().to_string(),
            &profiles.display().to_string(),
        ),
    )
    .unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    let line = typo
        .lines()
        .position(|l| l.contains("strength.gripp"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "grip-dynamometer-stx-etx.toml:{line}: metric: unknown metric id \"strength.gripp\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("did you mean \"strength.grip\""),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_bad_config_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fitedge.toml");
    std::fs::write(&config, "gateway_id = \"gw\"\n").unwrap();
    let out = binary()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_config_file_says_what_to_do() {
    let out = binary()
        .args(["check", "--config", "/nonexistent/fitedge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the config file") && stderr.contains("systemd/fitedge.toml"),
        "{stderr}"
    );
}

#[test]
fn a_serial_device_with_an_mqtt_message_profile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        1883,
        &[DeviceEntry {
            id: "hub",
            profile: "heart-rate-band-hub-json",
            port: Path::new("/dev/null"),
        }],
    );
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    assert!(stderr.contains("frames whole MQTT messages"), "{stderr}");
}

#[test]
fn ble_devices_need_gatt_profiles_and_real_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1883, &[]);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(concat!(
        "\n[[device]]\nid = \"strap-1\"\nprofile = \"heart-rate-strap-ble\"\n",
        "[device.transport]\ntype = \"ble\"\naddress = \"C0:11:22:33:44\"\n",
        "\n[[device]]\nid = \"grip-ble\"\nprofile = \"grip-dynamometer-stx-etx\"\n",
        "[device.transport]\ntype = \"ble\"\n",
        "\n[[device]]\nid = \"strap-serial\"\nprofile = \"heart-rate-strap-ble\"\n",
        "[device.transport]\ntype = \"serial\"\nport = \"/dev/ttyUSB9\"\n",
    ));
    std::fs::write(&config, &text).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78, "{stderr}");
    let at = |needle: &str| format!("fitedge.toml:{}", line_of(&text, needle));
    assert!(
        stderr.contains("address \"C0:11:22:33:44\" is not a Bluetooth address")
            && stderr.contains(&at("address = \"C0:11:22:33:44\"")),
        "{stderr}"
    );
    // With the address mended, the profile mismatches are reported.
    let text = text.replace("C0:11:22:33:44\"", "C0:11:22:33:44:01\"");
    std::fs::write(&config, &text).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("device \"grip-ble\" is ble but profile \"grip-dynamometer-stx-etx\" is not a gatt profile"),
        "{stderr}"
    );
    assert!(
        stderr.contains("device \"strap-serial\" is not ble but profile \"heart-rate-strap-ble\" decodes Bluetooth LE characteristics"),
        "{stderr}"
    );
}

#[test]
fn subjects_without_a_pseudonym_key_are_refused_and_so_is_an_open_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = one_serial_device(dir.path(), "height-weight-kv-line");
    let with_key = std::fs::read_to_string(&config).unwrap();
    let section = common::identity_section(dir.path());
    std::fs::write(&config, with_key.replace(&section, "")).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("reads who is measured, but no pseudonym key is configured"),
        "{stderr}"
    );
    assert!(stderr.contains("[identity] key_file"), "{stderr}");

    std::fs::write(&config, &with_key).unwrap();
    let key = dir.path().join("pseudonym.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
    std::fs::write(&key, "\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78);
    assert!(stderr.contains("it is empty"), "{stderr}");
}

#[test]
fn station_problems_are_placed_at_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        1883,
        &[
            DeviceEntry {
                id: "hw-1",
                profile: "height-weight-kv-line",
                port: Path::new("/dev/null"),
            },
            DeviceEntry {
                id: "qr-1",
                profile: "qr-scanner-resident-id-line",
                port: Path::new("/dev/null"),
            },
        ],
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[station]]\nid = \"a\"\ndevices = [\"hw-1\"]\nreaders = [\"qr-1\"]\n");
    text.push_str(
        "\n[[station]]\nid = \"b\"\ndevices = [\"hw-1\", \"ghost\"]\nreaders = [\"hw-1\"]\n",
    );
    std::fs::write(&config, &text).unwrap();
    let (code, _, stderr) = check(&config);
    assert_eq!(code, 78, "{stderr}");
    let at = |needle: &str, nth: usize| {
        let line = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .nth(nth)
            .unwrap()
            .0
            + 1;
        format!("fitedge.toml:{line}:")
    };
    let expected = [
        (
            at("devices = [\"hw-1\", \"ghost\"]", 0),
            "device \"hw-1\" is already in station \"a\"",
        ),
        (
            at("devices = [\"hw-1\", \"ghost\"]", 0),
            "names device \"ghost\", which no [[device]] has",
        ),
        (
            at("readers = [\"hw-1\"]", 0),
            "device \"hw-1\" is already in station \"b\"",
        ),
    ];
    for (line, message) in expected {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&line) && l.contains(message)),
            "{line} {message} in:\n{stderr}"
        );
    }
}

#[test]
fn an_unkeyed_sha256_subject_is_refused_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let qr =
        std::fs::read_to_string(profiles_dir().join("qr-scanner-resident-id-line.toml")).unwrap();
    let old = qr.replace(
        "check = \"cn_resident_id\"",
        "check = \"cn_resident_id\"\nhash = \"sha256\"",
    );
    std::fs::write(profiles.join("qr-scanner-resident-id-line.toml"), &old).unwrap();
    let out = binary()
        .args(["profile", "check"])
        .arg(profiles.join("qr-scanner-resident-id-line.toml"))
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stderr.contains("hash = \"sha256\" is refused"), "{stderr}");
    assert!(stderr.contains("keyed pseudonym"), "{stderr}");
}

/// `check`'s output for `config` with `extra` appended and `upstream`
/// lines added to `[upstream]`.
fn check_with(dir: &Path, upstream: &str, extra: &str) -> (i32, String, String) {
    let config = one_serial_device(dir, "height-weight-kv-line");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = match upstream.strip_prefix("port = ") {
        Some(port) => text.replace("port = 1883\n", &format!("port = {port}\n")),
        None => text.replace("[upstream]\n", &format!("[upstream]\n{upstream}\n")),
    };
    std::fs::write(&config, format!("{text}\n{extra}\n")).unwrap();
    check(&config)
}

#[test]
fn secret_files_must_be_private_and_hold_something() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("upstream.password");
    let naming = format!(
        "username = \"gw\"\npassword_file = \"{}\"",
        password.display()
    );

    std::fs::write(&password, "secret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = check_with(dir.path(), &naming, "");
    assert_eq!(code, 78, "a world-readable password file is refused");
    assert!(
        stderr.contains("readable by group or others (mode 644)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("chmod 600 {}", password.display())),
        "{stderr}"
    );

    for empty in ["", " \n\n"] {
        common::write_private(&password, empty);
        let (code, _, stderr) = check_with(dir.path(), &naming, "");
        assert_eq!(code, 78, "an empty password file is refused");
        assert!(
            stderr.contains("upstream.password: it is empty"),
            "{stderr}"
        );
    }
    common::write_private(&password, "secret\n");
    let (code, stdout, stderr) = check_with(dir.path(), &naming, "");
    assert_eq!(code, 0, "{stdout}{stderr}");

    let users = dir.path().join("lan-users");
    std::fs::write(&users, "hub:pw\n").unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o666)).unwrap();
    let lan = format!(
        "[lan]\ntype = \"embedded\"\nlisten = [\"127.0.0.1:1884\"]\nusers_file = \"{}\"",
        users.display()
    );
    let (code, _, stderr) = check_with(dir.path(), &naming, &lan);
    assert_eq!(code, 78);
    assert!(
        stderr.contains(&format!("chmod 600 {}", users.display())),
        "{stderr}"
    );
}

#[test]
fn tls_files_are_loaded_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = common::Ca::new(dir.path(), "platform-ca");
    let other = common::Ca::new(dir.path(), "other-ca");
    let client = ca.issue("gateway", &["gw"], common::Use::Client);
    let stranger = other.issue("stranger", &["gw"], common::Use::Client);
    let expired = ca.issue("expired", &["gw"], common::Use::ExpiredClient);
    let soon = ca.issue("soon", &["gw"], common::Use::ClientExpiringSoon);
    let table = |cert: &Path, key: &Path| {
        format!(
            "[upstream.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
            ca.cert.display(),
            cert.display(),
            key.display()
        )
    };
    let tls_port = "port = 8883";

    let (code, stdout, stderr) =
        check_with(dir.path(), tls_port, &table(&client.cert, &client.key));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("warning"), "{stdout}");

    let (code, _, stderr) = check_with(dir.path(), tls_port, &table(&client.cert, &stranger.key));
    assert_eq!(code, 78);
    assert!(
        stderr.contains("is not the key of the certificate"),
        "{stderr}"
    );

    let (code, _, stderr) = check_with(dir.path(), tls_port, &table(&expired.cert, &expired.key));
    assert_eq!(code, 78);
    assert!(stderr.contains("expired on 2021-01-01"), "{stderr}");

    let (code, stdout, stderr) = check_with(dir.path(), tls_port, &table(&soon.cert, &soon.key));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("warning:")
            && (stdout.contains("expires in 9 days") || stdout.contains("expires in 10 days")),
        "{stdout}"
    );

    std::fs::set_permissions(&client.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = check_with(dir.path(), tls_port, &table(&client.cert, &client.key));
    assert_eq!(code, 78);
    assert!(
        stderr.contains(&format!("chmod 600 {}", client.key.display())),
        "{stderr}"
    );

    let half = format!("[upstream.tls]\ncert_file = \"{}\"", client.cert.display());
    let (code, _, stderr) = check_with(dir.path(), tls_port, &half);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("cert_file and key_file go together"),
        "{stderr}"
    );

    let missing = "[upstream.tls]\nca_file = \"/nonexistent/ca.pem\"";
    let (code, _, stderr) = check_with(dir.path(), tls_port, missing);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("cannot read /nonexistent/ca.pem"),
        "{stderr}"
    );

    // The port says TLS, the config does not.
    let (code, stdout, _) = check_with(dir.path(), tls_port, "");
    assert_eq!(code, 0);
    assert!(
        stdout.contains("warning:") && stdout.contains("port 8883 is MQTT over TLS"),
        "{stdout}"
    );
}

/// Runs `check` on `config`, failing (not hanging) if it does not end.
fn check_bounded(config: &Path) -> (i32, String) {
    let mut child = binary()
        .args(["check", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = (0..400).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        ended,
        "check did not end within 20 s on {}",
        config.display()
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config or profile path that names `/dev/zero` or a FIFO is refused at
/// once (before, `/dev/zero` was read until memory ran out and a FIFO hung
/// `check`), and a profile with more test cases than any instrument needs
/// is refused instead of taking seconds to load.
#[test]
fn files_that_never_end_or_never_open_are_refused() {
    let (code, stderr) = check_bounded(Path::new("/dev/zero"));
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (code, stderr) = check_bounded(&fifo);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");

    // The device's profile, in a folder of the config's own, is a FIFO.
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let profile = profiles.join("grip-dynamometer-stx-etx.toml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&profile)
        .status()
        .unwrap()
        .success());
    let config = one_serial_device(dir.path(), "grip-dynamometer-stx-etx");
    let text = std::fs::read_to_string(&config).unwrap();
    let own_profiles = text.replace(
        &profiles_dir().display().to_string(),
        &profiles.display().to_string(),
    );
    std::fs::write(&config, &own_profiles).unwrap();
    let (code, stderr) = check_bounded(&config);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("grip-dynamometer-stx-etx.toml") && stderr.contains("not a regular file"),
        "{stderr}"
    );

    // The same profile with 20,000 test cases.
    std::fs::remove_file(&profile).unwrap();
    let mut good =
        std::fs::read_to_string(profiles_dir().join("grip-dynamometer-stx-etx.toml")).unwrap();
    for _ in 0..20_000 {
        good.push_str("\n[[test]]\nhex = \"02\"\n");
    }
    std::fs::write(&profile, &good).unwrap();
    let (code, stderr) = check_bounded(&config);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("a profile may hold 1000"), "{stderr}");
}
