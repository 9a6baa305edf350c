//! The gateway's lifecycle: builds the pipeline from a validated config,
//! runs it until `shutdown` resolves, then drains it in order.
//!
//! ```text
//! sources (one task per device) --records--> writer --durable--> outbox
//!                                                      |            ^
//!                                                 head moved     PUBACK
//!                                                      v            |
//!                                                    uplink ----> broker
//! ```
//! This is the only place that creates channels. Shutdown stops the sources
//! first, lets the writer make everything they sent durable, then gives the
//! uplink a moment to collect outstanding PUBACKs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::{Config, DeviceTransport};
use crate::outbox::{Outbox, OutboxError, OutboxOptions};
use crate::profile::Profile;
use crate::record::{Incoming, Origin, Record, Transport};
use crate::source::{self, DeviceContext};
use crate::status::{Snapshot, Stats};
use crate::uplink::Uplink;

/// Records waiting between the sources and the writer, at most.
const RECORD_QUEUE: usize = 1024;
/// Records made durable with one fsync, at most.
const WRITE_BATCH: usize = 512;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("device \"{device}\" uses profile \"{profile}\", which was not loaded")]
    MissingProfile { device: String, profile: String },
    #[error("internal task failed: {0}")]
    Task(String),
}

/// A running gateway's shared state, for callers that watch and steer it.
#[derive(Clone, Default)]
pub struct Handle {
    pub stats: Arc<Stats>,
    /// Notify to reload every device's profile from the profile directories
    /// (what SIGHUP does).
    pub reload: Arc<Notify>,
}

/// Runs the gateway until `shutdown` resolves. `profiles` maps profile id to
/// the loaded profile for every device in `config`.
pub async fn run(
    config: Config,
    profiles: HashMap<String, Profile>,
    handle: Handle,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot, GatewayError> {
    let stats = handle.stats.clone();
    let dir = config.buffer.dir.clone();
    let options = OutboxOptions::from(&config.buffer);
    let (outbox, moved_aside) =
        tokio::task::spawn_blocking(move || Outbox::open_or_recover(&dir, options))
            .await
            .map_err(|e| GatewayError::Task(e.to_string()))??;
    if let Some(aside) = &moved_aside {
        if let Ok(mut m) = stats.buffer_moved_aside.lock() {
            *m = Some(aside.display().to_string());
        }
        error!(message = "Started with an empty buffer; the unreadable one is kept for inspection.", moved_to = %aside.display(), stage = "buffer");
    }
    info!(
        message = "Buffer open.",
        dir = %config.buffer.dir.display(),
        unacknowledged = outbox.pending(),
        next_seq = outbox.head()
    );
    let outbox = Arc::new(Mutex::new(outbox));

    // Sources -> writer. Closing: every source has stopped.
    let (records_tx, records_rx) = mpsc::channel::<Incoming>(RECORD_QUEUE);
    // Writer -> uplink: the outbox head after each durable batch.
    // Closing: the writer has made everything durable and stopped.
    let (head_tx, head_rx) = watch::channel(0u64);

    let stop_sources = CancellationToken::new();
    let stop_uplink = CancellationToken::new();

    let mut sources = JoinSet::new();
    // Profile id -> the senders of every device using it, for reloads.
    let mut profile_senders: HashMap<String, Vec<watch::Sender<Profile>>> = HashMap::new();
    let mut mqtt_devices = Vec::new();
    let mut ble_devices = Vec::new();
    for device in &config.devices {
        let profile =
            profiles
                .get(&device.profile)
                .cloned()
                .ok_or_else(|| GatewayError::MissingProfile {
                    device: device.id.clone(),
                    profile: device.profile.clone(),
                })?;
        let (profile_tx, profile_rx) = watch::channel(profile.clone());
        profile_senders
            .entry(device.profile.clone())
            .or_default()
            .push(profile_tx);
        let transport = match device.transport {
            DeviceTransport::Serial(_) => Transport::Serial,
            DeviceTransport::Mqtt(_) => Transport::Mqtt,
            DeviceTransport::Ble(_) => Transport::Ble,
        };
        let ctx = DeviceContext {
            origin: Origin {
                gateway_id: config.gateway_id.clone(),
                site_id: config.site_id.clone(),
                device_id: device.id.clone(),
                profile_id: profile.id.clone(),
                transport,
            },
            profile: profile_rx,
            decode: Default::default(),
            stats: stats.device(&device.id),
            records: records_tx.clone(),
        };
        match &device.transport {
            DeviceTransport::Serial(settings) => {
                let span = info_span!("device", id = %device.id, transport = "serial");
                sources.spawn(
                    source::serial::run(ctx, settings.clone(), stop_sources.clone())
                        .instrument(span),
                );
            }
            DeviceTransport::Mqtt(settings) => {
                let filter = settings
                    .topic
                    .clone()
                    .or_else(|| profile.matcher.mqtt_topic.clone())
                    .unwrap_or_else(|| format!("{}/#", device.id));
                mqtt_devices.push(source::mqtt::MqttDevice { ctx, filter });
            }
            DeviceTransport::Ble(settings) => {
                ble_devices.push(source::ble::BleDevice {
                    ctx,
                    address: settings.address.clone(),
                });
            }
        }
    }
    if !ble_devices.is_empty() {
        let connector = Arc::new(source::bluez::Connector::default());
        let open = move || {
            let connector = connector.clone();
            async move { connector.open(None).await }
        };
        sources.spawn(
            source::ble::run(open, ble_devices, stats.clone(), stop_sources.clone())
                .instrument(info_span!("ble")),
        );
    }
    if let (Some(lan), false) = (config.lan.clone(), mqtt_devices.is_empty()) {
        sources.spawn(
            source::mqtt::run(lan, mqtt_devices, stats.clone(), stop_sources.clone())
                .instrument(info_span!("lan")),
        );
    }
    // Held until shutdown, so the writer (and the watchdog's view of it)
    // stays up even with no device configured.
    let writer_keepalive = records_tx;

    let writer_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let done = writer_done.clone();
        let task = write_records(
            records_rx,
            outbox.clone(),
            head_tx,
            stats.clone(),
            config.buffer.flush_window,
            stop_sources.clone(),
        );
        tokio::spawn(async move {
            task.await;
            done.store(true, Relaxed);
        })
    };
    let uplink = Uplink {
        upstream: config.upstream.clone(),
        gateway_id: config.gateway_id.clone(),
        site_id: config.site_id.clone(),
        max_record_bytes: config.buffer.max_record_bytes,
        outbox: outbox.clone(),
        appended: head_rx,
        stats: stats.clone(),
    };
    let uplink = tokio::spawn(
        uplink
            .run(stop_uplink.clone())
            .instrument(info_span!("uplink")),
    );
    let reloader = tokio::spawn(reload_profiles(
        config.profile_dirs.clone(),
        profile_senders,
        handle.reload.clone(),
        stats.clone(),
    ));
    let _endpoint = config.status_listen.and_then(|listen| {
        crate::report::serve(
            listen,
            config.gateway_id.clone(),
            config.site_id.clone(),
            stats.clone(),
            outbox.clone(),
        )
    });
    let watchdog = {
        let writer_done = writer_done.clone();
        tokio::spawn(feed_watchdog(
            stats.clone(),
            outbox.clone(),
            move || !writer_done.load(Relaxed),
            config.upstream.stall,
        ))
    };
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(message = "Gateway running.", gateway = %config.gateway_id, devices = config.devices.len());

    shutdown.await;
    info!(message = "Stopping: closing sources, syncing the buffer, draining the uplink.");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    stop_sources.cancel();
    reloader.abort();
    watchdog.abort();
    while sources.join_next().await.is_some() {}
    drop(writer_keepalive);
    if let Err(e) = writer.await {
        error!(message = "Writer task failed.", error = %e);
    }
    stop_uplink.cancel();
    if let Err(e) = uplink.await {
        error!(message = "Uplink task failed.", error = %e);
    }
    let final_sync = outbox.lock().unwrap_or_else(|p| p.into_inner()).sync();
    if let Err(e) = final_sync {
        warn!(message = "Final buffer sync failed.", error = %e, stage = "buffer");
    }
    let snapshot = stats.snapshot();
    info!(
        message = "Gateway stopped.",
        accepted = snapshot.records_accepted,
        acknowledged = snapshot.records_acked,
        unacknowledged = outbox.lock().unwrap_or_else(|p| p.into_inner()).pending(),
        lan_durable_ms_median = snapshot.lan_durable_ms_median.unwrap_or_default()
    );
    Ok(snapshot)
}

/// Reloads profiles whenever `reload` is notified. A profile that fails to
/// load is rejected with its problems and the running one stays in use.
async fn reload_profiles(
    dirs: Vec<std::path::PathBuf>,
    senders: HashMap<String, Vec<watch::Sender<Profile>>>,
    reload: Arc<Notify>,
    stats: Arc<Stats>,
) {
    loop {
        reload.notified().await;
        info!(message = "Reloading device profiles.");
        for (id, txs) in &senders {
            let dirs = dirs.clone();
            let lookup = id.clone();
            let found =
                tokio::task::spawn_blocking(move || crate::profile::find(&dirs, &lookup)).await;
            match found {
                Ok(Ok(profile)) => {
                    for tx in txs {
                        tx.send_replace(profile.clone());
                    }
                    info!(message = "Profile reloaded.", profile = %id, path = %profile.path.display());
                }
                Ok(Err(problems)) => {
                    stats.profile_reload_errors.fetch_add(1, Relaxed);
                    error!(
                        message = "Profile reload rejected; the running profile stays in use.",
                        profile = %id,
                        problems = %crate::problem::render(&problems),
                        stage = "profiles"
                    );
                }
                Err(e) => error!(message = "Profile reload task failed.", error = %e),
            }
        }
    }
}

/// The writer: takes records from the sources in batches (gathering for up
/// to `flush_window`) and makes each batch durable before announcing the new
/// head to the uplink. A failed write (a full or failing disk) is retried
/// with the batch kept in memory; meanwhile the bounded channel holds the
/// sources back, so nothing accepted is ever lost.
async fn write_records(
    mut rx: mpsc::Receiver<Incoming>,
    outbox: Arc<Mutex<Outbox>>,
    head: watch::Sender<u64>,
    stats: Arc<Stats>,
    flush_window: std::time::Duration,
    stopping: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        if !flush_window.is_zero() {
            let until = tokio::time::Instant::now() + flush_window;
            while batch.len() < WRITE_BATCH {
                let room = WRITE_BATCH - batch.len();
                match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let (records, durable): (Vec<Record>, Vec<_>) = std::mem::take(&mut batch)
            .into_iter()
            .map(|i| (i.record, i.durable))
            .unzip();
        if !store(records, &outbox, &head, &stats, &rx, &stopping).await {
            return;
        }
        for done in durable.into_iter().flatten() {
            let _ = done.send(());
        }
    }
}

/// Appends one batch, retrying while the disk refuses it. `false` when the
/// gateway is stopping and the batch could not be stored.
async fn store(
    records: Vec<Record>,
    outbox: &Arc<Mutex<Outbox>>,
    head: &watch::Sender<u64>,
    stats: &Stats,
    rx: &mpsc::Receiver<Incoming>,
    stopping: &CancellationToken,
) -> bool {
    let mut backoff = crate::source::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(5),
    );
    let mut last_error = String::new();
    let mut failures = 0;
    loop {
        let shared = outbox.clone();
        let mut attempt = records.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut outbox = shared.lock().unwrap_or_else(|p| p.into_inner());
            outbox
                .append(&mut attempt)
                .map(|outcome| (outcome, outbox.head()))
        })
        .await;
        let error = match result {
            Ok(Ok((outcome, new_head))) => {
                report(&outcome, stats);
                if failures > 0 {
                    info!(
                        message = "Buffer writable again.",
                        after_failures = failures,
                        stage = "buffer"
                    );
                }
                head.send_replace(new_head);
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        let reopened = {
            let outbox = outbox.clone();
            tokio::task::spawn_blocking(move || {
                outbox.lock().unwrap_or_else(|p| p.into_inner()).reopen()
            })
            .await
        };
        if let Ok(Err(e)) = reopened {
            debug!(message = "Reopening the buffer failed; will retry.", error = %e, stage = "buffer");
        }
        failures += 1;
        stats.buffer_errors.fetch_add(1, Relaxed);
        if error != last_error {
            error!(message = "Could not store records; holding them and retrying.", error = %error, records = records.len(), stage = "buffer");
            last_error = error;
        }
        if (rx.is_closed() || stopping.is_cancelled()) && failures >= 5 {
            error!(
                message = "Stopping with records that could not be stored; they are lost.",
                records = records.len(),
                stage = "buffer"
            );
            return false;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn report(outcome: &crate::outbox::AppendOutcome, stats: &Stats) {
    stats
        .records_accepted
        .fetch_add(outcome.accepted.len() as u64, Relaxed);
    if outcome.refused > 0 {
        stats.records_refused.fetch_add(outcome.refused, Relaxed);
        warn!(
            message = "Buffer full; new records refused.",
            refused = outcome.refused,
            stage = "buffer"
        );
    }
    if outcome.dropped_oldest > 0 {
        stats
            .records_dropped_oldest
            .fetch_add(outcome.dropped_oldest, Relaxed);
        warn!(
            message = "Buffer full; oldest unsent records dropped.",
            dropped = outcome.dropped_oldest,
            stage = "buffer"
        );
    }
    if outcome.expired > 0 {
        stats.records_expired.fetch_add(outcome.expired, Relaxed);
        warn!(
            message = "Unsent records past buffer.max_age_hours dropped.",
            expired = outcome.expired,
            stage = "buffer"
        );
    }
}

/// Tells systemd the gateway is alive, while it is: the writer runs and the
/// uplink is not stalled (connected, records waiting, yet no PUBACK for
/// `stall`). A stalled gateway stops feeding the watchdog and is restarted.
async fn feed_watchdog(
    stats: Arc<Stats>,
    outbox: Arc<Mutex<Outbox>>,
    writer_alive: impl Fn() -> bool,
    stall: std::time::Duration,
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
