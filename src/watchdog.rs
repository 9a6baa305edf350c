//! The systemd watchdog: fed while the gateway makes progress, starved when
//! it does not, so systemd restarts a stuck gateway.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::error;

use crate::outbox::Outbox;
use crate::status::Stats;

/// Tells systemd the gateway is alive, while it is: the writer runs and the
/// uplink is not stalled (connected, records waiting, yet no PUBACK for
/// `stall`). A stalled gateway stops feeding the watchdog and is restarted.
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
        let now = crate::clock::uptime_ms();
        let pending = outbox.lock().unwrap_or_else(|p| p.into_inner()).pending();
        let last_ack = stats.last_ack_uptime_ms.load(Relaxed);
        let since_progress = now.saturating_sub(
            last_ack
                .max(stats.uplink_connected_since_ms.load(Relaxed))
                .max(stats.uplink_busy_since_ms.load(Relaxed)),
        );
        let stuck = stats.uplink_connected.load(Relaxed)
            && pending > 0
            && since_progress > stall.as_millis() as u64;
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
        if !stuck && writer_alive() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}
