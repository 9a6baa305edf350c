//! The gateway's lifecycle: builds the stages from a validated config, runs
//! them until `shutdown` resolves, then drains them in order.
//!
//! ```text
//! sources (one task per device) --records--> writer --durable--> outbox
//!                                                      |            ^
//!                                                 head moved     PUBACK
//!                                                      v            |
//!                                                    uplink ----> broker
//! ```
//! This is the only place that creates channels. [`Stages`] holds every
//! running stage, each field saying why it exists. A stage between the
//! sources and the writer (the station binder, a de-duplicator) takes the
//! receiver the writer would take and gives the writer its own: one more
//! field and one more task in [`Stages::start`]. Shutdown stops the sources
//! first, lets the writer make everything they sent durable, then gives the
//! uplink a moment to collect outstanding PUBACKs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::{Config, DeviceTransport, PayloadFormat};
use crate::outbox::{Outbox, OutboxError, OutboxOptions};
use crate::profile::{DecodeContext, Profile};
use crate::record::{Incoming, Origin, Transport};
use crate::source::{self, DeviceContext};
use crate::status::{Snapshot, Stats};
use crate::uplink::{FhirObservations, JsonRecords, Uplink};

/// Records waiting between the sources and the writer, at most.
const RECORD_QUEUE: usize = 1024;

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
    let outbox = open_outbox(&config, &handle.stats).await?;
    let stages = Stages::start(&config, &profiles, &handle, outbox)?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(message = "Gateway running.", gateway = %config.gateway_id, devices = config.devices.len());
    for warning in &config.warnings {
        tracing::warn!(message = "Configuration warning.", warning = %warning);
    }
    shutdown.await;
    Ok(stages.drain().await)
}

/// Every running stage, in pipeline order.
struct Stages {
    stats: Arc<Stats>,
    /// The durable buffer: the writer appends, the uplink reads and
    /// releases, the status endpoint and the watchdog look.
    outbox: Arc<Mutex<Outbox>>,
    /// One task per serial device, one for all BLE devices and one for the
    /// LAN broker link. Stopped first, so nothing new arrives while draining.
    sources: JoinSet<()>,
    stop_sources: CancellationToken,
    /// A sender of the sources' channel, held until shutdown so the writer
    /// (and the watchdog's view of it) stays up with no device configured.
    records: mpsc::Sender<Incoming>,
    /// Sources -> binder -> writer, when the config has stations: ties
    /// readings to the session open on their station. Ends once every
    /// source has stopped, saving the open sessions.
    binder: Option<JoinHandle<()>>,
    /// Sources -> outbox: batches, fsyncs, retries and rebuilds. Ends once
    /// every sender is gone and everything sent is durable.
    writer: JoinHandle<()>,
    /// Outbox -> platform broker. Stopped after the writer, with a grace
    /// period for outstanding PUBACKs.
    uplink: JoinHandle<()>,
    stop_uplink: CancellationToken,
    /// Profile reloads on SIGHUP, to every device using the profile.
    reloader: JoinHandle<()>,
    /// Feeds systemd's watchdog while the writer runs and the uplink moves.
    watchdog: JoinHandle<()>,
    /// The localhost status endpoint, served until the stages are dropped.
    _endpoint: Option<crate::report::Endpoint>,
}

/// Opens the buffer, moving an unreadable one aside (reported in status).
async fn open_outbox(config: &Config, stats: &Stats) -> Result<Outbox, GatewayError> {
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
    stats
        .records_quarantined
        .store(outbox.quarantined(), std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut epoch) = stats.buffer_epoch.lock() {
        *epoch = Some(outbox.epoch());
    }
    info!(
        message = "Buffer open.",
        dir = %config.buffer.dir.display(),
        unacknowledged = outbox.pending(),
        next_seq = outbox.head()
    );
    Ok(outbox)
}

impl Stages {
    /// Creates the channels and spawns every stage.
    fn start(
        config: &Config,
        profiles: &HashMap<String, Profile>,
        handle: &Handle,
        outbox: Outbox,
    ) -> Result<Stages, GatewayError> {
        let stats = handle.stats.clone();
        let outbox = Arc::new(Mutex::new(outbox));
        // Sources -> writer (by way of the binder when there are stations).
        // Closing: every source (and the binder) has stopped.
        let (records, from_sources) = mpsc::channel::<Incoming>(RECORD_QUEUE);
        let (binder, to_writer) = if config.stations.is_empty() {
            (None, from_sources)
        } else {
            let (bound, to_writer) = mpsc::channel::<Incoming>(RECORD_QUEUE);
            let task = crate::station::run(
                config.stations.clone(),
                crate::station::state_path(&config.buffer.dir),
                from_sources,
                bound,
                stats.clone(),
            );
            (
                Some(tokio::spawn(task.instrument(info_span!("stations")))),
                to_writer,
            )
        };
        // Writer -> uplink: the outbox head after each durable batch.
        // Closing: the writer has made everything durable and stopped.
        let (head_tx, head_rx) = watch::channel(0u64);
        let stop_sources = CancellationToken::new();
        let stop_uplink = CancellationToken::new();

        let (sources, profile_senders) =
            spawn_sources(config, profiles, &stats, &records, &stop_sources)?;

        let writer_done = Arc::new(AtomicBool::new(false));
        let writer = {
            let done = writer_done.clone();
            let task = crate::writer::run(
                to_writer,
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
            encoder: match config.upstream.format {
                PayloadFormat::Json => Arc::new(JsonRecords),
                PayloadFormat::Fhir => Arc::new(FhirObservations),
            },
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
        let endpoint = config.status.as_ref().and_then(|status| {
            crate::report::serve(
                status,
                config.gateway_id.clone(),
                config.site_id.clone(),
                stats.clone(),
                outbox.clone(),
            )
        });
        let watchdog = tokio::spawn(crate::watchdog::run(
            stats.clone(),
            outbox.clone(),
            move || !writer_done.load(Relaxed),
            config.upstream.stall,
        ));
        Ok(Stages {
            stats,
            outbox,
            sources,
            stop_sources,
            records,
            binder,
            writer,
            uplink,
            stop_uplink,
            reloader,
            watchdog,
            _endpoint: endpoint,
        })
    }

    /// Stops the stages in pipeline order, each after the one feeding it has
    /// finished, and reports the final figures.
    async fn drain(mut self) -> Snapshot {
        info!(message = "Stopping: closing sources, syncing the buffer, draining the uplink.");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.stop_sources.cancel();
        self.reloader.abort();
        self.watchdog.abort();
        while self.sources.join_next().await.is_some() {}
        drop(self.records);
        if let Some(binder) = self.binder {
            if let Err(e) = binder.await {
                error!(message = "Station binder task failed.", error = %e);
            }
        }
        if let Err(e) = self.writer.await {
            error!(message = "Writer task failed.", error = %e);
        }
        self.stop_uplink.cancel();
        if let Err(e) = self.uplink.await {
            error!(message = "Uplink task failed.", error = %e);
        }
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = outbox.sync() {
            warn!(message = "Final buffer sync failed.", error = %e, stage = "buffer");
        }
        let snapshot = self.stats.snapshot();
        info!(
            message = "Gateway stopped.",
            accepted = snapshot.records_accepted,
            acknowledged = snapshot.records_acked,
            unacknowledged = outbox.pending(),
            lan_durable_ms_median = snapshot.lan_durable_ms_median.unwrap_or_default()
        );
        snapshot
    }
}

/// Profile id -> the senders of every device using it, for reloads.
type ProfileSenders = HashMap<String, Vec<watch::Sender<Profile>>>;

/// Spawns the source tasks: one per serial device, one for all BLE devices,
/// one for the LAN side.
fn spawn_sources(
    config: &Config,
    profiles: &HashMap<String, Profile>,
    stats: &Arc<Stats>,
    records: &mpsc::Sender<Incoming>,
    stop: &CancellationToken,
) -> Result<(JoinSet<()>, ProfileSenders), GatewayError> {
    let mut sources = JoinSet::new();
    let mut profile_senders = ProfileSenders::new();
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
            DeviceTransport::Input(_) => Transport::Input,
        };
        let mut ctx = DeviceContext::new(
            Origin {
                gateway_id: config.gateway_id.clone(),
                site_id: config.site_id.clone(),
                device_id: device.id.clone(),
                profile_id: profile.id.clone(),
                transport,
            },
            profile_rx,
            DecodeContext {
                keys: config.identity.clone(),
            },
            stats.device(&device.id),
            records.clone(),
        );
        ctx.in_station = config.stations.iter().any(|s| {
            [&s.devices, &s.readers, &s.operators]
                .iter()
                .any(|list| list.contains(&device.id))
        });
        match &device.transport {
            DeviceTransport::Serial(settings) => {
                let span = info_span!("device", id = %device.id, transport = "serial");
                sources.spawn(
                    source::serial::run(ctx, settings.clone(), stop.clone()).instrument(span),
                );
            }
            DeviceTransport::Mqtt(settings) => {
                let filter = settings
                    .topic
                    .clone()
                    .or_else(|| profile.matcher.mqtt_topic.clone())
                    .unwrap_or_else(|| format!("{}/#", device.id));
                let account = settings
                    .account
                    .clone()
                    .unwrap_or_else(|| device.id.clone());
                mqtt_devices.push(source::mqtt::MqttDevice {
                    ctx,
                    filter,
                    account,
                });
            }
            DeviceTransport::Input(path) => {
                let span = info_span!("device", id = %device.id, transport = "input");
                sources.spawn(source::input::run(ctx, path.clone(), stop.clone()).instrument(span));
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
            source::ble::run(open, ble_devices, stats.clone(), stop.clone())
                .instrument(info_span!("ble")),
        );
    }
    if let (Some(lan), false) = (config.lan.clone(), mqtt_devices.is_empty()) {
        sources.spawn(
            source::mqtt::run(lan, mqtt_devices, stats.clone(), stop.clone())
                .instrument(info_span!("lan")),
        );
    }
    Ok((sources, profile_senders))
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
