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
