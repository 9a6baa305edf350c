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
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::{Config, DeviceTransport};
use crate::outbox::{Outbox, OutboxError, OutboxOptions};
use crate::profile::Profile;
use crate::record::{Origin, Record, Transport};
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
    if let Some(aside) = moved_aside {
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
    let (records_tx, records_rx) = mpsc::channel::<Record>(RECORD_QUEUE);
    // Writer -> uplink: the outbox head after each durable batch.
    // Closing: the writer has made everything durable and stopped.
    let (head_tx, head_rx) = watch::channel(0u64);

    let stop_sources = CancellationToken::new();
    let stop_uplink = CancellationToken::new();

    let mut sources = JoinSet::new();
    // Profile id -> the senders of every device using it, for reloads.
    let mut profile_senders: HashMap<String, Vec<watch::Sender<Profile>>> = HashMap::new();
    for device in &config.devices {
        let profile =
            profiles
                .get(&device.profile)
                .cloned()
                .ok_or_else(|| GatewayError::MissingProfile {
                    device: device.id.clone(),
                    profile: device.profile.clone(),
                })?;
        let DeviceTransport::Serial(settings) = &device.transport;
        let (profile_tx, profile_rx) = watch::channel(profile.clone());
        profile_senders
            .entry(device.profile.clone())
            .or_default()
            .push(profile_tx);
        let ctx = DeviceContext {
            origin: Origin {
                gateway_id: config.gateway_id.clone(),
                site_id: config.site_id.clone(),
                device_id: device.id.clone(),
                profile_id: profile.id.clone(),
                transport: Transport::Serial,
            },
            profile: profile_rx,
            decode: Default::default(),
            stats: stats.device(&device.id),
            records: records_tx.clone(),
        };
        let span = info_span!("device", id = %device.id, transport = "serial");
        sources.spawn(
            source::serial::run(ctx, settings.clone(), stop_sources.clone()).instrument(span),
        );
    }
    drop(records_tx);

    let writer = tokio::spawn(write_records(
        records_rx,
        outbox.clone(),
        head_tx,
        stats.clone(),
    ));
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
    info!(message = "Gateway running.", gateway = %config.gateway_id, devices = config.devices.len());

    shutdown.await;
    info!(message = "Stopping: closing sources, syncing the buffer, draining the uplink.");
    stop_sources.cancel();
    reloader.abort();
    while sources.join_next().await.is_some() {}
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
        unacknowledged = outbox.lock().unwrap_or_else(|p| p.into_inner()).pending()
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

/// The writer: takes records from the sources in batches and makes each
/// batch durable before announcing the new head to the uplink.
async fn write_records(
    mut rx: mpsc::Receiver<Record>,
    outbox: Arc<Mutex<Outbox>>,
    head: watch::Sender<u64>,
    stats: Arc<Stats>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let mut records = std::mem::take(&mut batch);
        let outbox = outbox.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut outbox = outbox.lock().unwrap_or_else(|p| p.into_inner());
            outbox
                .append(&mut records)
                .map(|outcome| (outcome, outbox.head()))
        })
        .await;
        match result {
            Ok(Ok((outcome, new_head))) => {
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
                head.send_replace(new_head);
            }
            Ok(Err(e)) => {
                stats.buffer_errors.fetch_add(1, Relaxed);
                error!(message = "Could not store records; they are lost.", error = %e, stage = "buffer");
            }
            Err(e) => error!(message = "Buffer write task failed.", error = %e, stage = "buffer"),
        }
    }
}
