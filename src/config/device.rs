//! The `[[device]]` entries: each instrument's id, profile and transport.

use std::collections::HashSet;
use std::path::PathBuf;

use super::raw::{RawDevice, RawTransport, TransportKind};
use super::{
    check_id, span, valid_filter, BleSettings, Device, DeviceTransport, MqttSettings, PortRef,
    SerialSettings,
};
use crate::problem::{Problem, SourceText};
use crate::usb::UsbId;

/// Validates every device that could be read; `lan_written` tells whether
/// the file has a `[lan]` section (MQTT devices need one).
pub(super) fn check_devices(
    src: &SourceText,
    raw: &[RawDevice],
    lan_written: bool,
    problems: &mut Vec<Problem>,
) -> Vec<Device> {
    let mut seen = HashSet::new();
    let mut devices = Vec::new();
    for d in raw {
        check_id(src, "device id", &d.id, problems);
        if !seen.insert(d.id.get_ref().clone()) {
            problems.push(src.problem(
                span(&d.id),
                format!("device id \"{}\" is used twice", d.id.get_ref()),
                "give every [[device]] its own id",
            ));
        }
        devices.push(Device {
            id: d.id.get_ref().clone(),
            profile: d.profile.get_ref().clone(),
            transport: check_transport(src, d, lan_written, problems),
        });
    }
    devices
}

fn check_transport(
    src: &SourceText,
    d: &RawDevice,
    lan_written: bool,
    problems: &mut Vec<Problem>,
) -> DeviceTransport {
    let t = &d.transport;
    let id = d.id.get_ref();
    if t.path.is_some() && !matches!(t.kind, TransportKind::Input) {
        problems.push(src.problem(
            t.path.as_ref().and_then(span),
            format!("device \"{id}\": path applies to input devices only"),
            "serial devices take port, or set type = \"input\" for a keyboard-wedge scanner",
        ));
    }
    if t.address.is_some() && !matches!(t.kind, TransportKind::Ble) {
        problems.push(src.problem(
            t.address.as_ref().and_then(span),
            format!("device \"{id}\": address applies to ble devices only"),
            "remove address, or set type = \"ble\"",
        ));
    }
    match t.kind {
        TransportKind::Ble => {
            if t.port.is_some() || t.usb.is_some() || t.topic.is_some() {
                problems.push(src.problem(
                    span(&d.id),
                    format!("device \"{id}\" is a ble device but has a port, usb or topic"),
                    "a ble device takes only address (or none: the profile's [match] picks it)",
                ));
            }
            if let Some(address) = &t.address {
                if !valid_ble_address(address.get_ref()) {
                    problems.push(src.problem(
                        span(address),
                        format!("address \"{}\" is not a Bluetooth address", address.get_ref()),
                        "write six hex pairs with colons, e.g. \"C0:11:22:33:44:01\" (fitedge scan lists them)",
                    ));
                }
            }
            DeviceTransport::Ble(BleSettings {
                address: t.address.as_ref().map(|a| a.get_ref().to_uppercase()),
            })
        }
        TransportKind::Mqtt => {
            if t.port.is_some() || t.usb.is_some() {
                problems.push(src.problem(
                    span(&d.id),
                    format!("device \"{id}\" is an mqtt device but has a serial port or usb"),
                    "remove port/usb, or set type = \"serial\"",
                ));
            }
            if !lan_written {
                problems.push(src.problem(span(&d.id), format!("device \"{id}\" uses MQTT but the config has no [lan] section"), "add [lan] with type = \"embedded\" (a broker in the gateway) or type = \"subscribe\" (the site's broker)"));
            }
            if let Some(topic) = &t.topic {
                if !valid_filter(topic.get_ref()) {
                    problems.push(src.problem(
                        span(topic),
                        format!("topic \"{}\" is not an MQTT topic filter", topic.get_ref()),
                        "'+' stands for one whole level, '#' only as the last level",
                    ));
                }
            }
            DeviceTransport::Mqtt(MqttSettings {
                topic: t.topic.as_ref().map(|t| t.get_ref().clone()),
                account: t.account.as_ref().map(|a| a.get_ref().clone()),
            })
        }
        TransportKind::Serial => DeviceTransport::Serial(check_serial(src, d, problems)),
        TransportKind::Input => match &t.path {
            Some(path) if !path.get_ref().is_empty() && t.port.is_none() && t.usb.is_none() => {
                DeviceTransport::Input(PathBuf::from(path.get_ref()))
            }
            _ => {
                problems.push(src.problem(
                    span(&d.id),
                    format!("device \"{id}\" is an input device and needs path (and no port or usb)"),
                    "path = \"/dev/input/by-id/usb-...-event-kbd\" (ls /dev/input/by-id lists them)",
                ));
                DeviceTransport::Input(PathBuf::new())
            }
        },
    }
}

fn check_serial(src: &SourceText, d: &RawDevice, problems: &mut Vec<Problem>) -> SerialSettings {
    let RawTransport {
        port,
        usb,
        baud,
        parity,
        data_bits,
        stop_bits,
        ..
    } = &d.transport;
    let port = match (port, usb) {
        (Some(port), None) => {
            if port.get_ref().is_empty() {
                problems.push(src.problem(
                    span(port),
                    "serial port path is empty",
                    "use a stable path such as /dev/serial/by-id/usb-...",
                ));
            }
            PortRef::Path(PathBuf::from(port.get_ref()))
        }
        (None, Some(usb)) => match crate::profile::parse_usb(usb.get_ref()) {
            Some((vid, pid, serial)) => PortRef::Usb(UsbId { vid, pid, serial }),
            None => {
                problems.push(src.problem(
                    span(usb),
                    format!("usb \"{}\" is not VID:PID[:SERIAL]", usb.get_ref()),
                    "write the ids as 4 hex digits each, e.g. \"1a86:7523\" (fitedge scan lists them)",
                ));
                PortRef::Path(PathBuf::new())
            }
        },
        (port, usb) => {
            let at = port
                .as_ref()
                .and_then(span)
                .or_else(|| usb.as_ref().and_then(span));
            problems.push(src.problem(
                at.or_else(|| span(&d.id)),
                format!(
                    "device \"{}\" needs exactly one of port or usb",
                    d.id.get_ref()
                ),
                "port = \"/dev/serial/by-id/...\" or usb = \"VID:PID[:SERIAL]\"",
            ));
            PortRef::Path(PathBuf::new())
        }
    };
    if !(50..=4_000_000).contains(baud.get_ref()) {
        problems.push(src.problem(
            span(baud),
            format!("baud {} is not a serial speed", baud.get_ref()),
            "use the instrument's speed, e.g. 9600 or 115200",
        ));
    }
    if !(5..=8).contains(data_bits.get_ref()) {
        problems.push(src.problem(
            span(data_bits),
            format!("data_bits {} is outside 5..=8", data_bits.get_ref()),
            "most instruments use 8",
        ));
    }
    if !(1..=2).contains(stop_bits.get_ref()) {
        problems.push(src.problem(
            span(stop_bits),
            format!("stop_bits {} is not 1 or 2", stop_bits.get_ref()),
            "most instruments use 1",
        ));
    }
    SerialSettings {
        port,
        baud: *baud.get_ref(),
        parity: *parity,
        data_bits: *data_bits.get_ref(),
        stop_bits: *stop_bits.get_ref(),
    }
}

/// `AA:BB:CC:DD:EE:FF`.
fn valid_ble_address(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Each MQTT device with the account that publishes for it on the embedded
/// broker: its `account`, or else its own id.
pub fn mqtt_accounts(devices: &[Device]) -> impl Iterator<Item = (&str, &str)> {
    devices.iter().filter_map(|d| match &d.transport {
        DeviceTransport::Mqtt(m) => Some((d.id.as_str(), m.account.as_deref().unwrap_or(&d.id))),
        _ => None,
    })
}
