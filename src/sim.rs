//! Simulated serial instruments on pseudo-terminals, for `fitedge demo` and
//! the tests. The simulator writes real frames to the master side; the
//! gateway opens the slave side by path with the same code it uses for a
//! real port.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// The master side of a pseudo-terminal pair, and the slave's path.
pub struct Pty {
    master: File,
    pub path: PathBuf,
}

impl Pty {
    /// Opens a new pair in raw mode (no echo, no CR/LF translation), so the
    /// bytes written arrive unchanged.
    pub fn open() -> std::io::Result<Pty> {
        // SAFETY: plain libc calls on a descriptor we own; each result is checked.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let master = File::from_raw_fd(fd);
            if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut name = [0 as libc::c_char; 128];
            if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let path = std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned();
            // Termios requests on the master apply to the slave on Linux.
            let mut tio: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut tio) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::cfmakeraw(&mut tio);
            if libc::tcsetattr(fd, libc::TCSANOW, &tio) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Pty {
                master,
                path: PathBuf::from(path),
            })
        }
    }

    /// Writes one frame to the device side.
    pub fn write_frame(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.master.write_all(bytes)?;
        self.master.flush()
    }

    /// Reads what the gateway wrote to the device (a request), waiting up
    /// to `wait` for the first byte. Empty when nothing came.
    pub fn read_request(&mut self, wait: std::time::Duration) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut timeout = wait.as_millis().min(i32::MAX as u128) as i32;
        loop {
            let mut pfd = libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one descriptor we own, with a bounded timeout.
            let ready = unsafe { libc::poll(&mut pfd, 1, timeout) };
            if ready <= 0 || pfd.revents & libc::POLLIN == 0 {
                return Ok(out);
            }
            let mut buf = [0u8; 256];
            let n = self.master.read(&mut buf)?;
            out.extend_from_slice(&buf[..n]);
            // Collect the rest of a request written in pieces.
            timeout = 20;
        }
    }
}

/// Kinds of simulated instruments, each producing realistic frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// Combined height/weight station: `ID=S0001;HT=172.5;WT=65.40\r\n`.
    HeightWeight,
    /// Grip dynamometer: `STX GRP,S0001,038.6 ETX BCC`.
    Grip,
}

/// A heart-rate band hub on the LAN: one JSON message a band and reading,
/// published on `hub/<hub>/hr`.
pub fn band_message(band: u32, seq: u64, rng: &mut fastrand::Rng) -> SimFrame {
    let hr = rng.u32(55..175) as f64;
    let wearer = format!("S{:05}", 100 + band);
    let json = format!(r#"{{"band":"band-{band:02}","wearer":"{wearer}","hr":{hr},"seq":{seq}}}"#);
    SimFrame {
        bytes: json.into_bytes(),
        subject: wearer,
        key: seq.to_string(),
        values: vec![("vital.heart_rate", hr)],
    }
}

/// One simulated measurement: the frame and the values it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFrame {
    pub bytes: Vec<u8>,
    pub subject: String,
    /// What identifies this measurement in what arrives: the subject for
    /// instruments, the hub's message counter for bands.
    pub key: String,
    /// (metric id, value in canonical unit)
    pub values: Vec<(&'static str, f64)>,
}

/// Made-up resident ID numbers (valid check digits, real regions and
/// birth dates, no real person) for the simulated station's scanner.
pub fn resident_ids() -> Vec<String> {
    use crate::identity::check::make_cn_resident_id;
    [
        ("330106", "19880512", "317"),
        ("110105", "19710203", "046"),
        ("440305", "20010919", "582"),
        ("510107", "19650730", "129"),
    ]
    .iter()
    .map(|(region, birth, seq)| make_cn_resident_id(region, birth, seq))
    .collect()
}

/// What the simulated scanner sends for `id`: the number and CR.
pub fn scan_frame(id: &str) -> Vec<u8> {
    format!("{id}\r").into_bytes()
}

impl Instrument {
    /// The `n`-th frame with no subject id (the station's session says
    /// who): keyed in what arrives by its values.
    pub fn anonymous_frame(self, rng: &mut fastrand::Rng) -> SimFrame {
        let mut frame = self.frame(0, rng);
        frame.subject.clear();
        let text = String::from_utf8_lossy(&frame.bytes).into_owned();
        frame.bytes = match self {
            Instrument::HeightWeight => text.replacen("ID=S00000;", "", 1).into_bytes(),
            Instrument::Grip => {
                let mut bytes = text.replacen("S00000", "", 1).into_bytes();
                let n = bytes.len();
                bytes[n - 1] = bytes[1..n - 1].iter().fold(0u8, |a, b| a ^ b);
                bytes
            }
        };
        frame.key = frame
            .values
            .iter()
            .map(|(m, v)| format!("{m}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        frame
    }

    /// The profile id that decodes this instrument.
    pub fn profile_id(self) -> &'static str {
        match self {
            Instrument::HeightWeight => "height-weight-kv-line",
            Instrument::Grip => "grip-dynamometer-stx-etx",
        }
    }

    /// The `n`-th frame: subject `S<n>` and plausible values.
    pub fn frame(self, n: u64, rng: &mut fastrand::Rng) -> SimFrame {
        let subject = format!("S{n:05}");
        match self {
            Instrument::HeightWeight => {
                let height = (rng.u32(1450..1950) as f64) / 10.0;
                let weight = (rng.u32(4000..11000) as f64) / 100.0;
                let text = format!("ID={subject};HT={height:.1};WT={weight:.2}\r\n");
                SimFrame {
                    bytes: text.into_bytes(),
                    key: subject.clone(),
                    subject,
                    values: vec![("body.height", height), ("body.weight", weight)],
                }
            }
            Instrument::Grip => {
                let grip = (rng.u32(150..650) as f64) / 10.0;
                let body = format!("GRP,{subject},{grip:05.1}");
                let mut bytes = vec![0x02];
                bytes.extend_from_slice(body.as_bytes());
                bytes.push(0x03);
                let bcc = bytes[1..].iter().fold(0u8, |a, b| a ^ b);
                bytes.push(bcc);
                SimFrame {
                    bytes,
                    key: subject.clone(),
                    subject,
                    values: vec![("strength.grip", grip)],
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pty_passes_bytes_unchanged_to_the_slave() {
        let mut pty = Pty::open().unwrap();
        let mut slave = std::fs::OpenOptions::new()
            .read(true)
            .open(&pty.path)
            .unwrap();
        pty.write_frame(b"A=1\r\n\x02\x03").unwrap();
        let mut buf = [0u8; 7];
        slave.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"A=1\r\n\x02\x03");
    }

    #[test]
    fn anonymous_frames_have_no_id_and_a_valid_bcc() {
        let mut rng = fastrand::Rng::with_seed(1);
        let hw = Instrument::HeightWeight.anonymous_frame(&mut rng);
        assert!(
            hw.bytes.starts_with(b"HT="),
            "{:?}",
            String::from_utf8_lossy(&hw.bytes)
        );
        let grip = Instrument::Grip.anonymous_frame(&mut rng);
        assert!(grip.bytes.starts_with(b"\x02GRP,,"));
        let n = grip.bytes.len();
        assert_eq!(
            grip.bytes[n - 1],
            grip.bytes[1..n - 1].iter().fold(0, |a, b| a ^ b)
        );
        for id in resident_ids() {
            assert!(
                crate::identity::check::cn_resident_id(&id, None).is_ok(),
                "{id}"
            );
        }
    }

    #[test]
    fn grip_frames_carry_a_valid_bcc() {
        let f = Instrument::Grip.frame(1, &mut fastrand::Rng::with_seed(1));
        let n = f.bytes.len();
        assert_eq!(
            f.bytes[n - 1],
            f.bytes[1..n - 1].iter().fold(0, |a, b| a ^ b)
        );
    }
}
