//! `fitedge scan`: what a technician sees on site before writing a config:
//! Bluetooth LE peripherals advertising nearby (and those BlueZ still
//! remembers) and the serial ports, each with the catalogue profiles that
//! would match it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde::Serialize;

use crate::config;
use crate::gatt;
use crate::profile::Profile;
use crate::source::ble::{self, Advert, Radio, Seen};
use crate::source::bluez::Connector;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// How long to listen for Bluetooth LE advertisements.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Profiles come from this config's profile_dirs (if it exists).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    ble: BleReport,
    serial: Vec<SerialPort>,
}

#[derive(Serialize)]
struct BleReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    devices: Vec<BleSeen>,
}

#[derive(Serialize)]
struct BleSeen {
    #[serde(flatten)]
    advert: Advert,
    /// Advertised services, by name where known.
    service_names: Vec<String>,
    profiles: Vec<String>,
}

#[derive(Serialize)]
struct SerialPort {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    by_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usb: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<String>,
    profiles: Vec<String>,
}

pub fn run(args: ScanArgs) -> ExitCode {
    let profiles = catalogue(&args.config);
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge scan: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (adverts, error) = match runtime.block_on(scan_ble(Duration::from_secs(args.seconds))) {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let devices = adverts
        .into_iter()
        .map(|advert| BleSeen {
            service_names: advert.services.iter().map(service_name).collect(),
            profiles: profiles
                .iter()
                .filter(|p| ble::matches(&p.matcher, None, &advert))
                .map(|p| p.id.clone())
                .collect(),
            advert,
        })
        .collect();
    let report = Report {
        ble: BleReport { error, devices },
        serial: serial_ports(&profiles),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("fitedge scan: {e}"),
        }
    } else {
        print_table(&report, args.seconds);
    }
    ExitCode::SUCCESS
}

/// Every profile the config's directories (or the default ones) hold;
/// broken ones are left out here (`fitedge profile check` reports them).
fn catalogue(config_path: &Path) -> Vec<Profile> {
    let dirs = match config::load(config_path) {
        Ok(c) => c.profile_dirs,
        Err(_) => [
            "device-profiles",
            "/etc/fitedge/device-profiles",
            "/usr/share/fitedge/device-profiles",
        ]
        .iter()
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .collect(),
    };
    let mut seen = std::collections::HashSet::new();
    super::profile::load_profiles(&dirs)
        .unwrap_or_default()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|p| seen.insert(p.id.clone()))
        .collect()
}

async fn scan_ble(listen: Duration) -> Result<Vec<Advert>, ble::BleError> {
    let radio = Connector::default().open(None).await?;
    let mut stream = radio.scan().await?;
    let seen = Seen::default();
    let _ = tokio::time::timeout(listen, async {
        while let Some(advert) = stream.next().await {
            seen.note(advert);
        }
    })
    .await;
    Ok(seen.all())
}

fn service_name(uuid: &uuid::Uuid) -> String {
    match gatt::short_uuid(uuid) {
        Some(short) => match gatt::service_name(short) {
            Some(name) => format!("{short:04X} {name}"),
            None => format!("{short:04X}"),
        },
        None => uuid.to_string(),
    }
}

fn serial_ports(profiles: &[Profile]) -> Vec<SerialPort> {
    let by_id: Vec<(PathBuf, String)> = std::fs::read_dir("/dev/serial/by-id")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let target = std::fs::canonicalize(e.path()).ok()?;
            Some((target, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    let ports = tokio_serial::available_ports().unwrap_or_default();
    ports
        .into_iter()
        .map(|p| {
            let (usb, product) = match &p.port_type {
                tokio_serial::SerialPortType::UsbPort(u) => (
                    Some(format!("{:04x}:{:04x}", u.vid, u.pid)),
                    u.product.clone().or(u.manufacturer.clone()),
                ),
                _ => (None, None),
            };
            let matching = usb
                .as_deref()
                .map(|id| {
                    profiles
                        .iter()
                        .filter(|pr| {
                            pr.matcher
                                .usb
                                .iter()
                                .any(|u| u.to_lowercase().starts_with(id))
                        })
                        .map(|pr| pr.id.clone())
                        .collect()
                })
                .unwrap_or_default();
            let path = PathBuf::from(&p.port_name);
            SerialPort {
                by_id: by_id
                    .iter()
                    .find(|(t, _)| *t == path)
                    .map(|(_, n)| n.clone()),
                path: p.port_name,
                usb,
                product,
                profiles: matching,
            }
        })
        .collect()
}

fn print_table(report: &Report, seconds: u64) {
    println!("Bluetooth LE ({seconds} s of advertisements):");
    if let Some(e) = &report.ble.error {
        println!("  {e}");
    } else if report.ble.devices.is_empty() {
        println!("  nothing advertising");
    }
    for d in &report.ble.devices {
        let a = &d.advert;
        println!(
            "  {}  {:>4} dBm  {:<20}  services: {}  profiles: {}",
            a.address,
            a.rssi.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
            printable(a.name.as_deref().unwrap_or("(no name)")),
            none_if_empty(&d.service_names),
            none_if_empty(&d.profiles),
        );
    }
    println!("Serial ports:");
    if report.serial.is_empty() {
        println!("  none");
    }
    for p in &report.serial {
        println!(
            "  {}  usb {}  {}  by-id {}  profiles: {}",
            p.path,
            p.usb.as_deref().unwrap_or("-"),
            p.product.as_deref().unwrap_or(""),
            p.by_id.as_deref().unwrap_or("-"),
            none_if_empty(&p.profiles),
        );
    }
}

/// A name as a peripheral chose it, without control characters.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}
