//! Wall-clock time and whether the kernel believes it is synchronized.
//!
//! Many boxes boot without a real-time clock; until NTP has set the time,
//! `adjtimex` reports the clock as unsynchronized and records say so.

use std::time::SystemTime;

/// Whether the kernel reports the system clock as synchronized (NTP).
pub fn is_synchronized() -> bool {
    // SAFETY: `ntp_adjtime` with `modes = 0` only reads the kernel's clock
    // state into the zeroed struct we own.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::ntp_adjtime(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), to tell whether a
/// monotonic timestamp comes from the current boot. Zeros when unknown.
pub fn boot_id() -> [u8; 16] {
    static BOOT: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
        id
    })
}

/// Milliseconds since boot, counting suspend (CLOCK_BOOTTIME): unaffected
/// by the wall clock being set.
pub fn uptime_ms() -> u64 {
    // SAFETY: clock_gettime writes into the timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// When something happened, on both clocks, for correcting wall-clock
/// times taken before NTP set the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub boot_id: [u8; 16],
    pub uptime_ms: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            boot_id: boot_id(),
            uptime_ms: uptime_ms(),
        }
    }

    /// Milliseconds from `self` to `later`, when both are from one boot.
    pub fn elapsed_until(&self, later: &Stamp) -> Option<u64> {
        (self.boot_id == later.boot_id && self.boot_id != [0; 16])
            .then(|| later.uptime_ms.saturating_sub(self.uptime_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_within_one_boot_only() {
        let a = Stamp {
            boot_id: [1; 16],
            uptime_ms: 1000,
        };
        assert_eq!(
            a.elapsed_until(&Stamp {
                boot_id: [1; 16],
                uptime_ms: 4500
            }),
            Some(3500)
        );
        assert_eq!(
            a.elapsed_until(&Stamp {
                boot_id: [2; 16],
                uptime_ms: 4500
            }),
            None
        );
        let now = Stamp::now();
        assert!(now.uptime_ms > 0);
        assert_ne!(now.boot_id, [0; 16], "boot id readable on Linux");
    }
}
