//! The binder stage, between the sources and the writer: ties each reading
//! from a station's devices to the session open on that station (who was
//! scanned in), opens and closes sessions, and saves them so an open
//! session survives a restart or a crash within its idle timeout.
//!
//! The rules are in [`binder`]; this file is the task and its state file.

pub mod binder;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::Station;
use crate::record::{Incoming, SessionEventKind};
use crate::status::Stats;
pub use binder::{Binder, Saved, Step};

/// How often idle sessions are looked for.
const TICK: Duration = Duration::from_secs(1);
/// Activity alone (a reading) is saved at most this often.
const SAVE_ACTIVITY_EVERY: Duration = Duration::from_secs(5);

/// Where the open sessions are kept: beside the buffer directory.
pub fn state_path(buffer_dir: &Path) -> PathBuf {
    buffer_dir.with_file_name("sessions.json")
}

/// The saved sessions; an unreadable file is reported and replaced (its
/// sessions are lost, the readings are not: they arrive unbound).
pub fn load(path: &Path) -> Saved {
    if !path.exists() {
        return Saved::default();
    }
    match crate::secret::read_file(path, crate::secret::MAX_FILE_BYTES) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            error!(message = "Saved station sessions are unreadable; starting with none.", path = %path.display(), error = %e, stage = "stations");
            Saved::default()
        }),
        Err(e) => {
            error!(message = "Cannot read the saved station sessions; starting with none.", path = %path.display(), error = %e, stage = "stations");
            Saved::default()
        }
    }
}

/// Writes the state durably: a private temporary file, synced, renamed.
fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(saved).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the binder until the sources' channel closes, then saves the open
/// sessions (they stay open for the next start) and ends, closing the
/// writer's channel.
pub async fn run(
    stations: Vec<Station>,
    path: PathBuf,
    mut from_sources: mpsc::Receiver<Incoming>,
    to_writer: mpsc::Sender<Incoming>,
    stats: Arc<Stats>,
) {
    let (mut binder, first) = Binder::new(&stations, load(&path), now_ms());
    info!(message = "Stations ready.", stations = stations.len(), sessions_resumed = binder.open_sessions(), state = %path.display());
    let mut last_save = tokio::time::Instant::now();
    let mut dirty = false;
    let mut tick = tokio::time::interval(TICK);
    let mut step = first;
    loop {
        if step.changed || (dirty && last_save.elapsed() >= SAVE_ACTIVITY_EVERY) {
            if let Err(e) = save(&path, &binder.saved()) {
                warn!(message = "Cannot save the station sessions; a restart may lose them.", path = %path.display(), error = %e, stage = "stations");
            }
            last_save = tokio::time::Instant::now();
            dirty = false;
        }
        for done in step.settled.drain(..) {
            let _ = done.send(());
        }
        for incoming in step.forward.drain(..) {
            note(&stats, &incoming);
            if to_writer.send(incoming).await.is_err() {
                return;
            }
        }
        stats
            .sessions_open
            .store(binder.open_sessions() as u64, Relaxed);
        step = tokio::select! {
            incoming = from_sources.recv() => match incoming {
                Some(incoming) => {
                    dirty = true;
                    binder.push(incoming, now_ms())
                }
                None => break,
            },
            _ = tick.tick() => binder.tick(now_ms()),
        };
    }
    if let Err(e) = save(&path, &binder.saved()) {
        warn!(message = "Cannot save the station sessions at shutdown.", path = %path.display(), error = %e, stage = "stations");
    }
}

/// Counts and logs what the binder forwards (pseudonyms are shown short).
fn note(stats: &Stats, incoming: &Incoming) {
    let r = &incoming.record;
    if r.binding == Some(crate::record::Binding::Unbound) {
        stats.readings_unbound.fetch_add(1, Relaxed);
    }
    let Some(event) = &r.session else { return };
    let station = r.station_id.as_deref().unwrap_or_default();
    let session = r.session_id.as_deref().unwrap_or_default();
    match event.event {
        SessionEventKind::Open => {
            stats.sessions_opened.fetch_add(1, Relaxed);
            info!(message = "Session opened.", station, session);
        }
        SessionEventKind::Close => {
            if event.reason == Some(crate::record::CloseReason::RejectedScan) {
                stats.scans_rejected.fetch_add(1, Relaxed);
            }
            info!(message = "Session closed.", station, session, reason = ?event.reason, readings = event.readings);
        }
    }
}
