//! Input source: a USB keyboard-wedge scanner read from its evdev input
//! device (`/dev/input/by-id/...-event-kbd`). The device is grabbed so its
//! keystrokes reach no console; key presses become text ([`Wedge`]: digits,
//! letters, `-`, Enter as a line end) fed to the device's profile like bytes
//! from a serial port. A missing or unplugged device is retried with
//! backoff. What was typed is never logged: it is a resident's ID number.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Backoff, DeviceContext};

/// `EVIOCGRAB`: `_IOW('E', 0x90, int)`.
const EVIOCGRAB: u64 = 0x4004_4590;
const EV_KEY: u16 = 1;
const KEY_LEFTSHIFT: u16 = 42;
const KEY_RIGHTSHIFT: u16 = 54;

/// Bytes of one `struct input_event`: a `timeval` of two `long`s, then
/// type (u16), code (u16) and value (i32), in native byte order.
pub fn event_size() -> usize {
    2 * std::mem::size_of::<libc::c_long>() + 8
}

/// The character a key code types, upper-case (scanners type ids).
fn key_char(code: u16) -> Option<u8> {
    const ROW1: &[u8] = b"1234567890-"; // KEY_1 (2) .. KEY_MINUS (12)
    const QWERTY: [(u16, &[u8]); 3] = [(16, b"QWERTYUIOP"), (30, b"ASDFGHJKL"), (44, b"ZXCVBNM")];
    match code {
        2..=12 => Some(ROW1[(code - 2) as usize]),
        28 | 96 => Some(b'\n'), // KEY_ENTER, KEY_KPENTER
        71..=73 => Some(b"789"[(code - 71) as usize]),
        75..=77 => Some(b"456"[(code - 75) as usize]),
        79..=81 => Some(b"123"[(code - 79) as usize]),
        82 => Some(b'0'),
        _ => QWERTY.iter().find_map(|(first, row)| {
            let i = code.checked_sub(*first)? as usize;
            row.get(i).copied()
        }),
    }
}

/// Turns a stream of `input_event` records into the text typed.
#[derive(Debug, Default)]
pub struct Wedge {
    partial: Vec<u8>,
}

impl Wedge {
    /// Takes bytes as read (records may be split across reads) and returns
    /// the characters pressed in them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(bytes);
        let size = event_size();
        let whole = self.partial.len() / size * size;
        let mut typed = Vec::new();
        for event in self.partial[..whole].chunks_exact(size) {
            let at = size - 8;
            let kind = u16::from_ne_bytes([event[at], event[at + 1]]);
            let code = u16::from_ne_bytes([event[at + 2], event[at + 3]]);
            let value =
                i32::from_ne_bytes([event[at + 4], event[at + 5], event[at + 6], event[at + 7]]);
            // Presses (1) and repeats (2); shift changes no character an id uses.
            if kind == EV_KEY && value != 0 && code != KEY_LEFTSHIFT && code != KEY_RIGHTSHIFT {
                typed.extend(key_char(code));
            }
        }
        self.partial.drain(..whole);
        typed
    }
}

/// Reads the scanner until `shutdown` is cancelled.
pub async fn run(mut ctx: DeviceContext, path: PathBuf, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut last_error: Option<String> = None;
    loop {
        let reason = match open(&path) {
            Ok(device) => {
                info!(message = "Input device opened.", path = %path.display());
                last_error = None;
                backoff.reset();
                ctx.stats.connected.store(true, Relaxed);
                let end = read(&mut ctx, device, &shutdown).await;
                ctx.stats.connected.store(false, Relaxed);
                match end {
                    None => return,
                    Some(reason) => reason,
                }
            }
            Err(e) => e.to_string(),
        };
        if last_error.as_deref() != Some(reason.as_str()) {
            warn!(message = "Input device unavailable; retrying.", path = %path.display(), error = %reason, stage = "source");
            ctx.stats.set_error(format!("{}: {reason}", path.display()));
            last_error = Some(reason);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Opens the device non-blocking and grabs it; a device that cannot be
/// grabbed (not an evdev device) is read all the same, with a warning.
fn open(path: &Path) -> std::io::Result<AsyncFd<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // SAFETY: an ioctl with an int argument on a descriptor we own.
    let grabbed = unsafe { libc::ioctl(file.as_raw_fd(), EVIOCGRAB as _, 1 as libc::c_int) };
    if grabbed != 0 {
        warn!(message = "Cannot grab the input device; its keys may also reach a console.", path = %path.display(), error = %std::io::Error::last_os_error());
    }
    // SAFETY: the AsyncFd owns the file, so the descriptor stays open for
    // as long as it is registered.
    unsafe { AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Reads until the device fails (`Some(why)`) or the gateway stops.
async fn read(
    ctx: &mut DeviceContext,
    device: AsyncFd<std::fs::File>,
    shutdown: &CancellationToken,
) -> Option<String> {
    use std::io::Read;
    let mut decoder = ctx.decoder();
    let mut wedge = Wedge::default();
    let mut buf = vec![0u8; event_size() * 64];
    loop {
        let mut guard = tokio::select! {
            ready = device.readable() => match ready {
                Ok(guard) => guard,
                Err(e) => return Some(e.to_string()),
            },
            _ = shutdown.cancelled() => return None,
        };
        let n = match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
            Ok(Ok(0)) => return Some("the device is gone".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Some(e.to_string()),
            Err(_would_block) => continue,
        };
        if ctx.profile.has_changed().unwrap_or(false) {
            ctx.profile.mark_unchanged();
            decoder = ctx.decoder();
        }
        let typed = wedge.feed(&buf[..n]);
        if !typed.is_empty() && ctx.ingest(&mut decoder, &typed).await.is_none() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded capture: for each key, a scan event, the press, a sync,
    /// the release and a sync, as the kernel reports them; shift around X.
    fn record(text: &str) -> Vec<u8> {
        let code = |c: char| -> u16 {
            match c {
                '1'..='9' => c as u16 - '1' as u16 + 2,
                '0' => 11,
                'X' => 45,
                '\n' => 28,
                _ => unreachable!(),
            }
        };
        let mut out = Vec::new();
        let mut event = |kind: u16, code: u16, value: i32| {
            out.extend(std::iter::repeat_n(0u8, event_size() - 8));
            out.extend(kind.to_ne_bytes());
            out.extend(code.to_ne_bytes());
            out.extend(value.to_ne_bytes());
        };
        for c in text.chars() {
            let shifted = c == 'X';
            if shifted {
                event(EV_KEY, KEY_LEFTSHIFT, 1);
            }
            event(4, 4, 0x7001e); // EV_MSC MSC_SCAN
            event(EV_KEY, code(c), 1);
            event(0, 0, 0); // EV_SYN
            event(EV_KEY, code(c), 0);
            event(0, 0, 0);
            if shifted {
                event(EV_KEY, KEY_LEFTSHIFT, 0);
            }
        }
        out
    }

    #[test]
    fn a_recorded_scan_types_its_id_in_any_chunking() {
        let capture = record("11010519491231002X\n");
        for chunk in [1, 7, event_size() + 3, capture.len()] {
            let mut wedge = Wedge::default();
            let typed: Vec<u8> = capture.chunks(chunk).flat_map(|c| wedge.feed(c)).collect();
            assert_eq!(typed, b"11010519491231002X\n", "chunks of {chunk}");
        }
    }

    #[test]
    fn keys_map_to_digits_letters_and_enter_and_repeats_count() {
        assert_eq!(key_char(2), Some(b'1'));
        assert_eq!(key_char(11), Some(b'0'));
        assert_eq!(key_char(82), Some(b'0'));
        assert_eq!(key_char(79), Some(b'1'));
        assert_eq!(key_char(73), Some(b'9'));
        assert_eq!(key_char(45), Some(b'X'));
        assert_eq!(key_char(50), Some(b'M'));
        assert_eq!(key_char(16), Some(b'Q'));
        assert_eq!(key_char(96), Some(b'\n'));
        assert_eq!(key_char(1), None, "escape types nothing");
        let mut wedge = Wedge::default();
        let mut bytes = Vec::new();
        for value in [1i32, 2, 0] {
            bytes.extend(std::iter::repeat_n(0u8, event_size() - 8));
            bytes.extend(EV_KEY.to_ne_bytes());
            bytes.extend(3u16.to_ne_bytes());
            bytes.extend(value.to_ne_bytes());
        }
        assert_eq!(wedge.feed(&bytes), b"22", "press and repeat, not release");
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_64_bit_layout_matches_the_kernels() {
        // KEY_1 pressed: 16 bytes of time, type 1, code 2, value 1 (little-endian).
        let hex = "0000000000000000 0000000000000000 0100 0200 01000000";
        let bytes = crate::codec::parse_hex(hex).unwrap();
        assert_eq!(bytes.len(), event_size());
        if cfg!(target_endian = "little") {
            assert_eq!(Wedge::default().feed(&bytes), b"1");
        }
    }

    #[tokio::test]
    async fn the_source_reads_a_device_and_hands_over_the_scan() {
        // A FIFO stands in for the device (the grab fails and is only warned).
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("event-kbd");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: creating a FIFO at a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let text = "id = \"wedge-test\"\nname = \"t\"\n[frame]\ntype = \"line\"\ndelimiter = \"lf\"\n[decode]\ntype = \"regex\"\npattern = '^(?P<n>[0-9]+)$'\n[[field]]\nkey = \"n\"\nmetric = \"body.height\"\nunit = \"cm\"\n[[test]]\ntext = \"172\\n\"\nvalues = { \"body.height\" = 172.0 }\n";
        let profile = crate::profile::Profile::parse(Path::new("wedge-test.toml"), text).unwrap();
        let (_ptx, prx) = tokio::sync::watch::channel(profile);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let origin = crate::record::Origin {
            gateway_id: "gw".into(),
            site_id: "s".into(),
            device_id: "scanner".into(),
            profile_id: "wedge-test".into(),
            transport: crate::record::Transport::Input,
        };
        let stats = crate::status::Stats::default();
        let ctx = DeviceContext::new(origin, prx, Default::default(), stats.device("scanner"), tx);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(ctx, fifo.clone(), stop.clone()));
        // Opening for writing waits for the reader; keep it open.
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            w.write_all(&record("172\n")).unwrap();
            w
        });
        let incoming = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(incoming.record.value("body.height").unwrap().value, 172.0);
        stop.cancel();
        task.await.unwrap();
        drop(writer.await.unwrap());
    }
}
