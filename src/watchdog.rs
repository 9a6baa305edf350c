//! The systemd watchdog: fed while the gateway makes progress, starved when
//! it does not, so systemd restarts a stuck gateway.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::error;

use crate::outbox::Outbox;
use crate::status::Stats;

/// Tells systemd the gateway is alive, while it is: the writer runs, the
/// uplink is not stalled (connected, records waiting, yet no PUBACK for
/// `stall`) and LAN devices can reach it (its broker started). A stalled
/// gateway stops feeding the watchdog and is restarted.
pub async fn run(
    stats: Arc<Stats>,
    outbox: Arc<Mutex<Outbox>>,
    writer_alive: impl Fn() -> bool,
    stall: Duration,
) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(period / 2);
    let mut stalled = false;
    loop {
        tick.tick().await;
        let pending = outbox.lock().unwrap_or_else(|p| p.into_inner()).pending();
        let since_progress = since_progress(&stats, crate::clock::uptime_ms());
        let stuck = is_stalled(&stats, pending, since_progress, stall);
        if stuck != stalled {
            stalled = stuck;
            if stuck {
                error!(
                    message =
                        "Uplink connected but no PUBACK; letting the watchdog restart the gateway.",
                    unacknowledged = pending,
                    seconds = since_progress / 1000,
                    stage = "uplink"
                );
            }
        }
        // LAN devices that cannot reach the gateway are as good as stuck.
        let lan_down = (stats.lan_error.lock()).is_ok_and(|e| e.is_some());
        if !stuck && !lan_down && writer_alive() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// Milliseconds since the uplink last moved: its last PUBACK, connect, or
/// the moment it started sending into an empty window.
fn since_progress(stats: &Stats, now_ms: u64) -> u64 {
    now_ms.saturating_sub(
        stats
            .last_ack_uptime_ms
            .load(Relaxed)
            .max(stats.uplink_connected_since_ms.load(Relaxed))
            .max(stats.uplink_busy_since_ms.load(Relaxed)),
    )
}

/// The stall rule: connected, records waiting, and no progress for `stall`.
fn is_stalled(stats: &Stats, pending: u64, since_progress_ms: u64, stall: Duration) -> bool {
    stats.uplink_connected.load(Relaxed)
        && pending > 0
        && since_progress_ms > stall.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connected_uplink_with_records_and_no_progress_is_stalled() {
        let stats = Stats::default();
        let stall = Duration::from_secs(60);
        stats.uplink_connected_since_ms.store(1_000, Relaxed);
        stats.last_ack_uptime_ms.store(5_000, Relaxed);
        assert_eq!(
            since_progress(&stats, 70_000),
            65_000,
            "measured from the last PUBACK"
        );
        assert!(
            !is_stalled(&stats, 10, 65_000, stall),
            "not connected: waiting, not stalled"
        );
        stats.uplink_connected.store(true, Relaxed);
        assert!(is_stalled(&stats, 10, 65_000, stall));
        assert!(!is_stalled(&stats, 0, 65_000, stall), "nothing to send");
        assert!(
            !is_stalled(&stats, 10, 59_000, stall),
            "within the stall time"
        );
        stats.uplink_busy_since_ms.store(69_000, Relaxed);
        assert_eq!(
            since_progress(&stats, 70_000),
            1_000,
            "sending began just now"
        );
    }
}
