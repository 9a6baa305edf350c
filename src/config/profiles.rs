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
    if let Some(Draft {
        profile_dirs: Some(dirs),
        devices,
        ..
    }) = &draft
    {
        let found;
        (profiles, found) = find_profiles(&src, dirs, devices);
        problems.extend(found);
        problems.extend(check_profiles(&src, devices, &profiles));
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
            DeviceTransport::Serial(_) | DeviceTransport::Mqtt(_) if gatt => Some((
                format!("device \"{}\" is not ble but profile \"{}\" decodes Bluetooth LE characteristics", device.id, device.profile),
                "set type = \"ble\", or pick a serial or MQTT profile",
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
