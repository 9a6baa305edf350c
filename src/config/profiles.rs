//! The last stage: each device's profile, found in the profile directories
//! and checked against the device's transport.
//!
//! Problems of a profile file keep that file and line; a profile that is
//! not found, or does not suit its device, is reported at the device's
//! line in the config.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{device_line, draft, read_file, Config, Device, DeviceTransport, Draft};
use crate::problem::{Problem, SourceText};
use crate::profile::{self, DecodeSpec, FrameSpec, Profile};

/// Reads and validates the config file at `path` and loads every profile
/// its devices use; the problems of both come in one list.
pub fn load_with_profiles(path: &Path) -> Result<(Config, HashMap<String, Profile>), Vec<Problem>> {
    let text = read_file(path)?;
    let src = SourceText { path, text: &text };
    let mut problems = Vec::new();
    let draft = draft(&src, &mut problems);
    let mut profiles = HashMap::new();
    if let Some(
        draft @ Draft {
            profile_dirs: Some(dirs),
            devices,
            ..
        },
    ) = &draft
    {
        let found;
        (profiles, found) = find_profiles(&src, dirs, devices);
        problems.extend(found);
        problems.extend(check_profiles(&src, devices, &profiles));
        problems.extend(check_subjects(&src, draft, &profiles));
    }
    match draft.and_then(Draft::finish) {
        Some(config) if problems.is_empty() => Ok((config, profiles)),
        _ => Err(problems),
    }
}

/// Loads the profile of every device from `dirs` (first match wins); a
/// profile not found is reported at the device's line in `config`.
pub fn find_profiles(
    config: &SourceText,
    dirs: &[PathBuf],
    devices: &[Device],
) -> (HashMap<String, Profile>, Vec<Problem>) {
    let mut profiles = HashMap::new();
    let mut problems = Vec::new();
    for device in devices {
        if profiles.contains_key(&device.profile) {
            continue;
        }
        match profile::find(dirs, &device.profile) {
            Ok(p) => {
                profiles.insert(device.profile.clone(), p);
            }
            Err(mut found) => {
                for p in &mut found {
                    if p.line.is_none() && p.message.contains("not found") {
                        p.file = config.path.to_path_buf();
                        p.line = device_line(config.text, &device.id);
                    }
                }
                problems.extend(found);
            }
        }
    }
    (profiles, problems)
}

/// Devices whose transport does not suit their profile: BLE devices need
/// gatt profiles and only they may use them, and serial devices cannot use
/// profiles that frame whole MQTT messages.
pub fn check_profiles(
    config: &SourceText,
    devices: &[Device],
    profiles: &HashMap<String, Profile>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for device in devices {
        let Some(p) = profiles.get(&device.profile) else {
            continue;
        };
        let gatt = matches!(p.decode, DecodeSpec::Gatt(_));
        let mismatch = match device.transport {
            DeviceTransport::Ble(_) if !gatt => Some((
                format!("device \"{}\" is ble but profile \"{}\" is not a gatt profile", device.id, device.profile),
                "use a profile with [decode] type = \"gatt\" (device-profiles/*-ble.toml)",
            )),
            DeviceTransport::Serial(_) | DeviceTransport::Mqtt(_) | DeviceTransport::Input(_) if gatt => Some((
                format!("device \"{}\" is not ble but profile \"{}\" decodes Bluetooth LE characteristics", device.id, device.profile),
                "set type = \"ble\", or pick a serial or MQTT profile",
            )),
            DeviceTransport::Input(_) if p.frame == FrameSpec::Message => Some((
                format!("device \"{}\" is an input device but profile \"{}\" frames whole MQTT messages", device.id, device.profile),
                "use a line profile, e.g. keyboard-wedge-resident-id",
            )),
            DeviceTransport::Serial(_) if p.frame == FrameSpec::Message => Some((
                format!("device \"{}\" is serial but profile \"{}\" frames whole MQTT messages", device.id, device.profile),
                "use a profile with a byte-stream framing (line, stx_etx, header, ...) or make the device type = \"mqtt\"",
            )),
            _ => None,
        };
        if let Some((message, fix)) = mismatch {
            problems.push(Problem {
                file: config.path.to_path_buf(),
                line: device_line(config.text, &device.id),
                message,
                fix: fix.into(),
            });
        }
    }
    problems
}

/// Subjects need a key: a config whose profiles or stations produce a
/// subject without `[identity]` is refused (at each such device's or
/// station's line), and a station's readers must be able to name someone.
fn check_subjects(
    config: &SourceText,
    draft: &Draft,
    profiles: &HashMap<String, Profile>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let problem = |line, message: String, fix: &str| Problem {
        file: config.path.to_path_buf(),
        line,
        message,
        fix: fix.into(),
    };
    let carries = |id: &str| {
        let device = draft.devices.iter().find(|d| d.id == id);
        device
            .and_then(|d| profiles.get(&d.profile))
            .map(Profile::carries_subject)
    };
    let no_key = matches!(draft.identity, Some(None));
    const KEY_FIX: &str = "add [identity] key_file = \"/etc/fitedge/pseudonym.key\" (mode 0600, at least 16 random bytes; docs/stations.md)";
    if no_key {
        for d in &draft.devices {
            if carries(&d.id) == Some(true) {
                problems.push(problem(
                    device_line(config.text, &d.id),
                    format!("device \"{}\" uses profile \"{}\", which reads who is measured, but no pseudonym key is configured", d.id, d.profile),
                    KEY_FIX,
                ));
            }
        }
    }
    for station in &draft.stations {
        let line = station_line(config.text, &station.id);
        if no_key {
            problems.push(problem(
                line,
                format!(
                    "station \"{}\" binds readings to people but no pseudonym key is configured",
                    station.id
                ),
                KEY_FIX,
            ));
        }
        for reader in station.readers.iter().chain(&station.operators) {
            if carries(reader) == Some(false) {
                problems.push(problem(
                    line,
                    format!("station \"{}\": reader \"{reader}\" uses a profile with no subject field", station.id),
                    "give the reader a scanner or card-reader profile (role = \"subject\"), or list it under devices",
                ));
            }
        }
    }
    problems
}

/// The line of `[[station]]` entry `id` in the config text.
fn station_line(text: &str, id: &str) -> Option<usize> {
    let needle = format!("\"{id}\"");
    let mut in_station = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            in_station = line.starts_with("[[station]]");
        } else if in_station && line.starts_with("id") && line.contains(&needle) {
            return Some(n + 1);
        }
    }
    None
}
