//! Finds the serial port of a USB adapter by its vendor/product id (and
//! serial number), so a device keeps its config across re-plugging and
//! renumbering (`/dev/ttyUSB0` becoming `/dev/ttyUSB1`).
//!
//! Reads sysfs: each `/sys/class/tty/<name>/device` leads, a few levels up,
//! to the USB device directory holding `idVendor`, `idProduct`, `serial`.

use std::path::{Path, PathBuf};

/// A USB adapter selector: `VID:PID[:SERIAL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbId {
    pub vid: u16,
    pub pid: u16,
    pub serial: Option<String>,
}

impl std::fmt::Display for UsbId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vid, self.pid)?;
        if let Some(s) = &self.serial {
            write!(f, ":{s}")?;
        }
        Ok(())
    }
}

/// A serial adapter found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbPort {
    pub path: PathBuf,
    pub id: UsbId,
}

/// Every USB serial port under `sys_root` (normally `/sys`), sorted by path.
pub fn usb_ports(sys_root: &Path, dev_root: &Path) -> Vec<UsbPort> {
    let Ok(entries) = std::fs::read_dir(sys_root.join("class/tty")) else {
        return Vec::new();
    };
    let mut ports: Vec<UsbPort> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let device = std::fs::canonicalize(entry.path().join("device")).ok()?;
            let usb = device
                .ancestors()
                .take(6)
                .find(|d| d.join("idVendor").is_file())?;
            let read = |name: &str| {
                std::fs::read_to_string(usb.join(name))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            let id = UsbId {
                vid: u16::from_str_radix(&read("idVendor")?, 16).ok()?,
                pid: u16::from_str_radix(&read("idProduct")?, 16).ok()?,
                serial: read("serial"),
            };
            Some(UsbPort {
                path: dev_root.join(entry.file_name()),
                id,
            })
        })
        .collect();
    ports.sort_by(|a, b| a.path.cmp(&b.path));
    ports
}

/// The port of the first adapter matching `wanted` (a serial number in
/// `wanted` must match; without one, any serial matches).
pub fn find(sys_root: &Path, dev_root: &Path, wanted: &UsbId) -> Option<PathBuf> {
    usb_ports(sys_root, dev_root)
        .into_iter()
        .find(|p| {
            p.id.vid == wanted.vid
                && p.id.pid == wanted.pid
                && (wanted.serial.is_none() || wanted.serial == p.id.serial)
        })
        .map(|p| p.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs: two USB adapters and one on-board UART.
    fn fake_sys() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let usb = |bus: &str, vid: &str, pid: &str, serial: Option<&str>, tty: &str| {
            let dev = root.path().join(format!("devices/pci0/usb1/{bus}"));
            let iface = dev.join(format!("{bus}:1.0/{tty}"));
            std::fs::create_dir_all(&iface).unwrap();
            std::fs::write(dev.join("idVendor"), format!("{vid}\n")).unwrap();
            std::fs::write(dev.join("idProduct"), format!("{pid}\n")).unwrap();
            if let Some(s) = serial {
                std::fs::write(dev.join("serial"), format!("{s}\n")).unwrap();
            }
            let class = root.path().join("class/tty").join(tty);
            std::fs::create_dir_all(&class).unwrap();
            std::os::unix::fs::symlink(&iface, class.join("device")).unwrap();
        };
        usb("1-1", "1a86", "7523", None, "ttyUSB0");
        usb("1-2", "0403", "6001", Some("A50285BI"), "ttyUSB1");
        let uart = root.path().join("devices/platform/serial0");
        std::fs::create_dir_all(&uart).unwrap();
        std::fs::create_dir_all(root.path().join("class/tty/ttyS0")).unwrap();
        std::os::unix::fs::symlink(&uart, root.path().join("class/tty/ttyS0/device")).unwrap();
        root
    }

    #[test]
    fn finds_adapters_by_vid_pid_and_serial() {
        let sys = fake_sys();
        let dev = Path::new("/dev");
        let ports = usb_ports(sys.path(), dev);
        assert_eq!(ports.len(), 2, "the on-board UART is not USB");
        let ch340 = UsbId {
            vid: 0x1a86,
            pid: 0x7523,
            serial: None,
        };
        assert_eq!(
            find(sys.path(), dev, &ch340),
            Some(PathBuf::from("/dev/ttyUSB0"))
        );
        let ftdi = UsbId {
            vid: 0x0403,
            pid: 0x6001,
            serial: Some("A50285BI".into()),
        };
        assert_eq!(
            find(sys.path(), dev, &ftdi),
            Some(PathBuf::from("/dev/ttyUSB1"))
        );
        let other_serial = UsbId {
            serial: Some("XXXX".into()),
            ..ftdi
        };
        assert_eq!(find(sys.path(), dev, &other_serial), None);
        assert_eq!(ftdi.to_string(), "0403:6001:A50285BI");
    }
}
