//! The outbox: a durable ring of records waiting for the broker's PUBACK.
//!
//! Records are appended in batches; `append` returns only after the batch is
//! in sled *and* the database's log file has been `fdatasync`ed (sled's own
//! `flush()` only calls `sync_file_range`, which a power cut can undo). A
//! record leaves the ring only when acknowledged, in sequence order.
//!
//! sled 0.34 grows without bound under deletes, so the ring is a fixed set of
//! slot keys (`seq % capacity`) overwritten in place and never removed; the
//! head/tail pointers live in one meta key written in the same atomic batch
//! as the slots. The rule this implements is written in `docs/reliability.md`.
//!
//! Slot layout (format 1): `seq u64 | boot id [16] | uptime ms u64 |
//! device id length u8 | device id | record JSON`, integers big-endian.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tracing::{error, warn};

use crate::clock::Stamp;
use crate::config::FullPolicy;
use crate::record::Record;

/// Version of the on-disk layout; a newer one is refused, older ones read.
pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &[u8] = b"meta";
const HEADER: usize = 8 + 16 + 8 + 1;
/// Records expired by age in one append, at most (keeps appends short).
const EXPIRE_PER_APPEND: u64 = 10_000;

#[derive(Debug, Error)]
pub enum OutboxError {
    #[error("buffer database at {path}: {source}; if it stays unreadable, stop fitedge and move the directory aside")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("buffer at {path}: syncing the log file failed: {source}; check the disk (full or failing SD card?)")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("buffer at {path} was written by a newer fitedge (format {found}, this build reads up to {FORMAT_VERSION}); upgrade fitedge or move the directory aside")]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("buffer at {path}: slot for record {seq} holds {detail}; run `fitedge buffer verify`")]
    Corrupt {
        path: PathBuf,
        seq: u64,
        detail: String,
    },
    #[error("no buffer at {path}: the directory does not exist")]
    Missing { path: PathBuf },
}

impl OutboxError {
    /// Whether the database itself is damaged (move it aside), rather than
    /// unreachable for now (a full disk, permissions, a held lock).
    pub fn is_corruption(&self) -> bool {
        match self {
            OutboxError::Corrupt { .. } => true,
            OutboxError::Sled { source, .. } => match source {
                sled::Error::Corruption { .. }
                | sled::Error::ReportableBug(_)
                | sled::Error::Unsupported(_) => true,
                sled::Error::Io(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ),
                sled::Error::CollectionNotFound(_) => false,
            },
            OutboxError::Sync { .. }
            | OutboxError::NewerFormat { .. }
            | OutboxError::Missing { .. } => false,
        }
    }
}

/// Sizing and policy of the ring.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    pub max_records: u64,
    pub max_record_bytes: usize,
    pub full_policy: FullPolicy,
    pub cache_bytes: u64,
    /// Unacknowledged bytes, at most (estimated from the mean record size).
    pub max_bytes: Option<u64>,
    /// Unacknowledged records older than this are dropped (counted).
    pub max_age: Option<Duration>,
}

impl From<&crate::config::Buffer> for OutboxOptions {
    fn from(b: &crate::config::Buffer) -> Self {
        OutboxOptions {
            max_records: b.max_records,
            max_record_bytes: b.max_record_bytes,
            full_policy: b.full_policy,
            cache_bytes: b.cache_bytes,
            max_bytes: b.max_bytes,
            max_age: b.max_age,
        }
    }
}

/// What happened to one `append` call's records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AppendOutcome {
    /// Sequence numbers given to the records that are now durable.
    pub accepted: Vec<u64>,
    /// Records refused: ring full under `refuse_newest`, or too large.
    pub refused: u64,
    /// Unacknowledged records overwritten under `drop_oldest`.
    pub dropped_oldest: u64,
    /// Unacknowledged records dropped for being older than `max_age`.
    pub expired: u64,
}

/// A stored record as the uplink needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: u64,
    /// When the outbox accepted it, on the boot clock.
    pub stamp: Stamp,
    pub device_id: String,
    /// The record's JSON, exactly the MQTT payload.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Meta {
    version: u32,
    capacity: u64,
    /// Sequence number the next record gets.
    head: u64,
    /// Oldest record not yet acknowledged; everything before it is released.
    tail: u64,
    /// Bytes of all records ever appended, for the mean record size.
    bytes_appended: u64,
}

impl Meta {
    fn new(capacity: u64) -> Meta {
        Meta {
            version: FORMAT_VERSION,
            capacity,
            head: 0,
            tail: 0,
            bytes_appended: 0,
        }
    }

    fn encode(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[0..4].copy_from_slice(&self.version.to_be_bytes());
        b[4..12].copy_from_slice(&self.capacity.to_be_bytes());
        b[12..20].copy_from_slice(&self.head.to_be_bytes());
        b[20..28].copy_from_slice(&self.tail.to_be_bytes());
        b[28..36].copy_from_slice(&self.bytes_appended.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Meta> {
        let u64_at = |i: usize| {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
        };
        Some(Meta {
            version: u32::from_be_bytes(b.get(0..4)?.try_into().ok()?),
            capacity: u64_at(4)?,
            head: u64_at(12)?,
            tail: u64_at(20)?,
            bytes_appended: u64_at(28)?,
        })
    }

    /// Estimated bytes of the unacknowledged records.
    fn pending_bytes(&self) -> u64 {
        match self.head {
            0 => 0,
            n => (self.head - self.tail) * (self.bytes_appended / n),
        }
    }
}

/// The durable ring. One writer appends; the uplink reads and acknowledges.
pub struct Outbox {
    path: PathBuf,
    db: sled::Db,
    /// A second handle on sled's log file, to `fdatasync` it after a flush.
    log: File,
    meta: Meta,
    /// Acknowledged records at or after `tail` (PUBACKs may arrive out of order).
    acked: BTreeSet<u64>,
    options: OutboxOptions,
    /// The database handle was released for a rebuild that has not finished:
    /// nothing may be written or read until `reopen` succeeds.
    unusable: bool,
}

/// Opens the sled database. A handle dropped just before (a reopen after a
/// write failure) lets go of the file lock only when sled's flusher thread
/// ends, so a held lock is waited for, briefly.
fn open_db(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(500));
    let mut attempts = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if attempts < 50 && e.to_string().contains("acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn slot_key(seq: u64, capacity: u64) -> [u8; 8] {
    (seq % capacity).to_be_bytes()
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`. Only the meta key is read:
    /// opening a buffer of a million records costs the same as an empty one.
    pub fn open(dir: &Path, options: OutboxOptions) -> Result<Outbox, OutboxError> {
        let sled_err = |source| OutboxError::Sled {
            path: dir.to_path_buf(),
            source,
        };
        let db = open_db(dir, options.cache_bytes).map_err(sled_err)?;
        let log = File::open(dir.join("db")).map_err(|source| OutboxError::Sync {
            path: dir.to_path_buf(),
            source,
        })?;
        let stored = db.get(META_KEY).map_err(sled_err)?;
        let mut meta = match stored.as_deref().map(Meta::decode) {
            Some(Some(meta)) => meta,
            Some(None) => {
                return Err(OutboxError::Corrupt {
                    path: dir.to_path_buf(),
                    seq: 0,
                    detail: "an unreadable meta key".into(),
                });
            }
            None => Meta::new(options.max_records),
        };
        if meta.version > FORMAT_VERSION {
            return Err(OutboxError::NewerFormat {
                path: dir.to_path_buf(),
                found: meta.version,
            });
        }
        if meta.capacity != options.max_records {
            if meta.head == meta.tail {
                meta.capacity = options.max_records;
            } else {
                warn!(
                    message = "Buffer holds records; keeping its old size until it drains.",
                    stored = meta.capacity,
                    configured = options.max_records,
                    stage = "buffer"
                );
            }
        }
        if meta.tail > meta.head || meta.capacity == 0 {
            return Err(OutboxError::Corrupt {
                path: dir.to_path_buf(),
                seq: meta.tail,
                detail: format!(
                    "impossible pointers (head {}, capacity {})",
                    meta.head, meta.capacity
                ),
            });
        }
        let outbox = Outbox {
            path: dir.to_path_buf(),
            db,
            log,
            meta,
            acked: BTreeSet::new(),
            options,
            unusable: false,
        };
        outbox.write_meta()?;
        outbox.sync()?;
        Ok(outbox)
    }

    /// Opens the outbox; a database that cannot be opened is moved aside to
    /// `<dir>.corrupt-<unix time>` and a fresh one is started (the caller
    /// gets the path it was moved to, to report it).
    pub fn open_or_recover(
        dir: &Path,
        options: OutboxOptions,
    ) -> Result<(Outbox, Option<PathBuf>), OutboxError> {
        // A rebuild interrupted between its two renames left the old copy.
        let old = sibling(dir, "old");
        if !dir.exists() && old.exists() {
            warn!(message = "Restoring the buffer from an interrupted rebuild.", from = %old.display(), stage = "buffer");
            std::fs::rename(&old, dir).map_err(|source| OutboxError::Sync {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match Outbox::open(dir, options.clone()) {
            Ok(outbox) => Ok((outbox, None)),
            // A full disk, a permission problem or a held lock is not
            // corruption: moving the buffer aside would strand its records.
            Err(e) if !e.is_corruption() => Err(e),
            Err(e) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let aside = PathBuf::from(format!("{}.corrupt-{stamp}", dir.display()));
                error!(
                    message = "Buffer database unreadable; moving it aside and starting a fresh one.",
                    error = %e,
                    moved_to = %aside.display(),
                    stage = "buffer"
                );
                std::fs::rename(dir, &aside).map_err(|source| OutboxError::Sync {
                    path: dir.to_path_buf(),
                    source,
                })?;
                Ok((Outbox::open(dir, options)?, Some(aside)))
            }
        }
    }

    /// Appends records durably, giving each its sequence number (`record.seq`).
    /// On return every accepted record survives a crash or power cut.
    pub fn append(&mut self, records: &mut [Record]) -> Result<AppendOutcome, OutboxError> {
        self.usable()?;
        let mut meta = self.meta;
        let mut acked = self.acked.clone();
        let mut outcome = AppendOutcome::default();
        let mut batch = sled::Batch::default();
        let now = Stamp::now();
        outcome.expired = self.expire(&mut meta, &mut acked, &now)?;
        for record in records.iter_mut() {
            record.seq = meta.head;
            let json = serde_json::to_vec(record).unwrap_or_default();
            if json.is_empty()
                || json.len() > self.options.max_record_bytes
                || record.device_id.len() > 255
            {
                warn!(
                    message = "Record too large for the buffer; refused.",
                    bytes = json.len(),
                    limit = self.options.max_record_bytes,
                    device = %record.device_id,
                    stage = "buffer"
                );
                outcome.refused += 1;
                continue;
            }
            let over_bytes = |m: &Meta| {
                self.options.max_bytes.is_some_and(|max| {
                    m.pending_bytes() + json.len() as u64 > max && m.head > m.tail
                })
            };
            while meta.head - meta.tail >= meta.capacity || over_bytes(&meta) {
                if self.options.full_policy == FullPolicy::RefuseNewest {
                    break;
                }
                drop_oldest(&mut meta, &mut acked);
                outcome.dropped_oldest += 1;
            }
            if meta.head - meta.tail >= meta.capacity || over_bytes(&meta) {
                outcome.refused += 1;
                continue;
            }
            let mut value = Vec::with_capacity(HEADER + record.device_id.len() + json.len());
            value.extend_from_slice(&meta.head.to_be_bytes());
            value.extend_from_slice(&now.boot_id);
            value.extend_from_slice(&now.uptime_ms.to_be_bytes());
            value.push(record.device_id.len() as u8);
            value.extend_from_slice(record.device_id.as_bytes());
            value.extend_from_slice(&json);
            batch.insert(&slot_key(meta.head, meta.capacity), value);
            outcome.accepted.push(meta.head);
            meta.head += 1;
            meta.bytes_appended += json.len() as u64;
        }
        if meta == self.meta {
            return Ok(outcome);
        }
        batch.insert(META_KEY, &meta.encode()[..]);
        self.db
            .apply_batch(batch)
            .map_err(|source| self.sled_error(source))?;
        self.sync()?;
        self.meta = meta;
        self.acked = acked;
        Ok(outcome)
    }

    /// Rebuilds the database after a write failed. sled refuses every write
    /// after an I/O error such as a full disk, and a log with a failed write
    /// in it does not reliably keep what is written after it, so the
    /// recovered contents are copied into a fresh database that replaces the
    /// old one. Needs free space for the copy; the caller retries until then.
    /// What this process knows beyond the disk (acknowledgements) is kept.
    pub fn reopen(&mut self) -> Result<(), OutboxError> {
        let sled_err = |source| OutboxError::Sled {
            path: self.path.clone(),
            source,
        };
        let io_err = |source| OutboxError::Sync {
            path: self.path.clone(),
            source,
        };
        // Release the broken handle (and its file lock) first.
        self.db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(sled_err)?;
        self.unusable = true;
        let rebuild = sibling(&self.path, "rebuild");
        let old = sibling(&self.path, "old");
        if rebuild.exists() {
            std::fs::remove_dir_all(&rebuild).map_err(io_err)?;
        }
        {
            let recovered = sled::Config::new()
                .path(&self.path)
                .cache_capacity(self.options.cache_bytes)
                .open()
                .map_err(sled_err)?;
            let copy = sled::Config::new()
                .path(&rebuild)
                .cache_capacity(self.options.cache_bytes)
                .open()
                .map_err(sled_err)?;
            for item in recovered.iter() {
                let (key, value) = item.map_err(sled_err)?;
                copy.insert(key, value).map_err(sled_err)?;
            }
            copy.flush().map_err(sled_err)?;
            File::open(rebuild.join("db"))
                .and_then(|f| f.sync_all())
                .map_err(io_err)?;
        }
        std::fs::rename(&self.path, &old).map_err(io_err)?;
        std::fs::rename(&rebuild, &self.path).map_err(io_err)?;
        if let Some(parent) = self.path.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
        }
        let _ = std::fs::remove_dir_all(&old);
        let fresh = Outbox::open(&self.path, self.options.clone())?;
        let mut meta = fresh.meta;
        if (meta.tail..=meta.head).contains(&self.meta.tail) {
            meta.tail = self.meta.tail;
        }
        // Never hand out a sequence number again, even if the recovered log
        // is shorter than what was accepted (its slots then read as corrupt).
        meta.head = meta.head.max(self.meta.head);
        self.acked.retain(|s| *s >= meta.tail && *s < meta.head);
        self.db = fresh.db;
        self.log = fresh.log;
        self.meta = meta;
        self.unusable = false;
        Ok(())
    }

    fn usable(&self) -> Result<(), OutboxError> {
        if self.unusable {
            let source = std::io::Error::other(
                "the buffer is being rebuilt after a write failure (disk full?)",
            );
            return Err(OutboxError::Sync {
                path: self.path.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Drops unacknowledged records older than `max_age`, oldest first.
    fn expire(
        &self,
        meta: &mut Meta,
        acked: &mut BTreeSet<u64>,
        now: &Stamp,
    ) -> Result<u64, OutboxError> {
        let Some(max_age) = self.options.max_age else {
            return Ok(0);
        };
        let mut expired = 0;
        while meta.tail < meta.head && expired < EXPIRE_PER_APPEND {
            if acked.contains(&meta.tail) {
                drop_oldest(meta, acked);
                continue;
            }
            // An unreadable slot is dropped here rather than blocking every append.
            let age = match self.read_slot_with(meta, meta.tail) {
                Ok(stored) => stored.stamp.elapsed_until(now),
                Err(OutboxError::Corrupt { .. }) => Some(u64::MAX),
                Err(e) => return Err(e),
            };
            if age.is_none_or(|ms| ms <= max_age.as_millis() as u64) {
                break;
            }
            drop_oldest(meta, acked);
            expired += 1;
        }
        Ok(expired)
    }

    /// Up to `max` unacknowledged records with `seq >= from`, in order.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Stored>, OutboxError> {
        self.read_range(from, u64::MAX, max)
    }

    /// Up to `max` unacknowledged records with `from <= seq < to`, in order.
    pub fn read_range(&self, from: u64, to: u64, max: usize) -> Result<Vec<Stored>, OutboxError> {
        self.usable()?;
        let mut out = Vec::new();
        let mut seq = from.max(self.meta.tail);
        while seq < self.meta.head.min(to) && out.len() < max {
            if !self.acked.contains(&seq) {
                out.push(self.read_slot_with(&self.meta, seq)?);
            }
            seq += 1;
        }
        Ok(out)
    }

    fn read_slot_with(&self, meta: &Meta, seq: u64) -> Result<Stored, OutboxError> {
        let corrupt = |detail: String| OutboxError::Corrupt {
            path: self.path.clone(),
            seq,
            detail,
        };
        let value = self
            .db
            .get(slot_key(seq, meta.capacity))
            .map_err(|source| self.sled_error(source))?
            .ok_or_else(|| corrupt("nothing".into()))?;
        decode_slot(seq, &value).map_err(corrupt)
    }

    /// Releases record `seq` after its PUBACK. Acknowledging twice, or a
    /// record already released, is harmless. The new tail is written but not
    /// synced: a crash can only make already-delivered records go again.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq < self.meta.tail || seq >= self.meta.head {
            return Ok(());
        }
        self.acked.insert(seq);
        let before = self.meta.tail;
        if self.unusable {
            // Remembered in memory; written with the rebuilt database.
            while self.acked.remove(&self.meta.tail) {
                self.meta.tail += 1;
            }
            return Ok(());
        }
        while self.acked.remove(&self.meta.tail) {
            self.meta.tail += 1;
        }
        if self.meta.tail != before {
            self.write_meta()?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (flush + fdatasync).
    pub fn sync(&self) -> Result<(), OutboxError> {
        self.usable()?;
        self.db.flush().map_err(|source| self.sled_error(source))?;
        self.log.sync_data().map_err(|source| OutboxError::Sync {
            path: self.path.clone(),
            source,
        })
    }

    fn write_meta(&self) -> Result<(), OutboxError> {
        self.db
            .insert(META_KEY, &self.meta.encode()[..])
            .map_err(|source| self.sled_error(source))?;
        Ok(())
    }

    fn sled_error(&self, source: sled::Error) -> OutboxError {
        OutboxError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Sequence number the next record will get.
    pub fn head(&self) -> u64 {
        self.meta.head
    }

    /// Oldest unacknowledged sequence number.
    pub fn tail(&self) -> u64 {
        self.meta.tail
    }

    /// Records waiting for a PUBACK.
    pub fn pending(&self) -> u64 {
        self.meta.head - self.meta.tail - self.acked.len() as u64
    }

    /// Ring size in effect (the stored one until a resized buffer drains).
    pub fn capacity(&self) -> u64 {
        self.meta.capacity
    }

    /// Age of the oldest unacknowledged record, when it is from this boot.
    pub fn oldest_age_ms(&self) -> Option<u64> {
        let oldest = (self.meta.tail..self.meta.head).find(|s| !self.acked.contains(s))?;
        self.read_slot_with(&self.meta, oldest)
            .ok()?
            .stamp
            .elapsed_until(&Stamp::now())
    }
}

/// `<dir>.<suffix>` beside the buffer directory.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", dir.display()))
}

fn drop_oldest(meta: &mut Meta, acked: &mut BTreeSet<u64>) {
    acked.remove(&meta.tail);
    meta.tail += 1;
    while acked.remove(&meta.tail) {
        meta.tail += 1;
    }
}

fn decode_slot(seq: u64, value: &[u8]) -> Result<Stored, String> {
    let u64_at = |i: usize| {
        value
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let stored_seq = u64_at(0);
    if stored_seq != Some(seq) {
        return Err(format!("record {stored_seq:?}"));
    }
    let boot_id: [u8; 16] = value
        .get(8..24)
        .and_then(|b| b.try_into().ok())
        .ok_or("a truncated header")?;
    let uptime_ms = u64_at(24).ok_or("a truncated header")?;
    let id_len = *value.get(32).ok_or("a truncated header")? as usize;
    let device_id = value
        .get(HEADER..HEADER + id_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or("a bad device id")?
        .to_string();
    Ok(Stored {
        seq,
        stamp: Stamp { boot_id, uptime_ms },
        device_id,
        payload: value[HEADER + id_len..].to_vec(),
    })
}

/// What `fitedge buffer stats|verify` report about a stopped gateway's buffer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub format: u32,
    pub capacity: u64,
    pub head: u64,
    pub tail: u64,
    pub pending: u64,
    pub disk_bytes: u64,
    pub oldest_received_at: Option<String>,
    /// Slots that could not be read or parsed.
    pub problems: Vec<String>,
}

fn open_existing(dir: &Path) -> Result<(sled::Db, Meta), OutboxError> {
    if !dir.join("db").exists() {
        return Err(OutboxError::Missing {
            path: dir.to_path_buf(),
        });
    }
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(4 << 20)
        .open()
        .map_err(|source| OutboxError::Sled {
            path: dir.to_path_buf(),
            source,
        })?;
    let meta = db
        .get(META_KEY)
        .map_err(|source| OutboxError::Sled {
            path: dir.to_path_buf(),
            source,
        })?
        .and_then(|v| Meta::decode(&v))
        .ok_or_else(|| OutboxError::Corrupt {
            path: dir.to_path_buf(),
            seq: 0,
            detail: "no readable meta key".into(),
        })?;
    Ok((db, meta))
}

/// Reads every unacknowledged record of the buffer in `dir` (the gateway
/// must be stopped) and reports counts and problems.
pub fn inspect(dir: &Path) -> Result<Report, OutboxError> {
    let (db, meta) = open_existing(dir)?;
    let mut problems = Vec::new();
    let mut oldest = None;
    for seq in meta.tail..meta.head {
        let slot = db.get(slot_key(seq, meta.capacity)).ok().flatten();
        let stored = slot
            .ok_or_else(|| "missing".to_string())
            .and_then(|v| decode_slot(seq, &v));
        match stored.and_then(|s| {
            serde_json::from_slice::<Record>(&s.payload).map_err(|e| format!("JSON: {e}"))
        }) {
            Ok(record) => {
                oldest.get_or_insert(record.received_at);
            }
            Err(e) => problems.push(format!("record {seq}: {e}")),
        }
    }
    Ok(Report {
        path: dir.to_path_buf(),
        format: meta.version,
        capacity: meta.capacity,
        head: meta.head,
        tail: meta.tail,
        pending: meta.head - meta.tail,
        disk_bytes: disk_usage(dir),
        oldest_received_at: oldest,
        problems,
    })
}

/// Writes every unacknowledged record of the buffer in `dir` as JSON lines.
pub fn export(dir: &Path, out: &mut dyn std::io::Write) -> Result<u64, OutboxError> {
    let (db, meta) = open_existing(dir)?;
    let mut written = 0;
    for seq in meta.tail..meta.head {
        let Some(value) = db.get(slot_key(seq, meta.capacity)).ok().flatten() else {
            continue;
        };
        let Ok(stored) = decode_slot(seq, &value) else {
            continue;
        };
        let io = |source| OutboxError::Sync {
            path: dir.to_path_buf(),
            source,
        };
        out.write_all(&stored.payload).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
        written += 1;
    }
    Ok(written)
}

/// Bytes used by the files under `dir` (for soak tests and status).
pub fn disk_usage(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        match std::fs::read_dir(p) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum(),
            Err(_) => 0,
        }
    }
    walk(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Measurement, Origin, Transport};

    fn options(max_records: u64, full_policy: FullPolicy) -> OutboxOptions {
        OutboxOptions {
            max_records,
            max_record_bytes: 4096,
            full_policy,
            cache_bytes: 1 << 20,
            max_bytes: None,
            max_age: None,
        }
    }

    fn records(n: usize) -> Vec<Record> {
        let origin = Origin {
            gateway_id: "gw".into(),
            site_id: "s".into(),
            device_id: "dev-1".into(),
            profile_id: "p".into(),
            transport: Transport::Serial,
        };
        (0..n)
            .map(|_| Record::new(&origin, Measurement::default()))
            .collect()
    }

    fn seqs(stored: &[Stored]) -> Vec<u64> {
        stored.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn append_read_ack_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        let mut batch = records(3);
        let out = o.append(&mut batch).unwrap();
        assert_eq!(out.accepted, vec![0, 1, 2]);
        assert_eq!(batch[2].seq, 2);
        let stored = o.read(0, 10).unwrap();
        assert_eq!(seqs(&stored), vec![0, 1, 2]);
        assert_eq!(stored[0].device_id, "dev-1");
        let back: Record = serde_json::from_slice(&stored[1].payload).unwrap();
        assert_eq!(back, batch[1]);
        o.ack(1).unwrap();
        assert_eq!(o.tail(), 0, "tail waits for record 0");
        assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![0, 2]);
        o.ack(0).unwrap();
        assert_eq!(o.tail(), 2);
        assert_eq!(o.pending(), 1);
        o.ack(0).unwrap();
        o.ack(99).unwrap();
        assert_eq!(o.pending(), 1);
    }

    #[test]
    fn unacknowledged_records_survive_reopen_and_sequence_continues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
            o.append(&mut records(5)).unwrap();
            o.ack(0).unwrap();
            o.ack(1).unwrap();
        }
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        assert_eq!(o.tail(), 2);
        assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![2, 3, 4]);
        assert_eq!(o.append(&mut records(1)).unwrap().accepted, vec![5]);
    }

    #[test]
    fn the_ring_wraps_and_drop_oldest_overwrites_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        for seq in 0..40 {
            o.append(&mut records(1)).unwrap();
            o.ack(seq).unwrap();
        }
        assert_eq!((o.tail(), o.head()), (40, 40));
        let out = o.append(&mut records(20)).unwrap();
        assert_eq!(out.dropped_oldest, 4);
        assert_eq!(seqs(&o.read(0, 100).unwrap()), (44..60).collect::<Vec<_>>());
    }

    #[test]
    fn refuse_newest_keeps_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::RefuseNewest)).unwrap();
        let out = o.append(&mut records(20)).unwrap();
        assert_eq!((out.accepted.len(), out.refused), (16, 4));
        assert_eq!(seqs(&o.read(0, 100).unwrap()), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn oversized_records_are_refused_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(
            dir.path(),
            OutboxOptions {
                max_record_bytes: 600,
                ..options(16, FullPolicy::DropOldest)
            },
        )
        .unwrap();
        let mut batch = records(2);
        batch[0]
            .attributes
            .insert("blob".into(), serde_json::Value::String("x".repeat(1000)));
        let out = o.append(&mut batch).unwrap();
        assert_eq!((out.accepted, out.refused), (vec![0], 1));
    }

    #[test]
    fn a_resized_ring_keeps_its_size_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
            o.append(&mut records(3)).unwrap();
        }
        {
            let mut o = Outbox::open(dir.path(), options(32, FullPolicy::DropOldest)).unwrap();
            assert_eq!(o.capacity(), 16);
            assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![0, 1, 2]);
            for s in 0..3 {
                o.ack(s).unwrap();
            }
        }
        let o = Outbox::open(dir.path(), options(32, FullPolicy::DropOldest)).unwrap();
        assert_eq!(o.capacity(), 32);
    }

    #[test]
    fn an_unopenable_database_is_moved_aside_and_replaced() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("buffer");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("conf"), b"\x00garbage\xff").unwrap();
        std::fs::write(dir.join("db"), vec![0xAB; 4096]).unwrap();
        let (mut o, aside) =
            Outbox::open_or_recover(&dir, options(16, FullPolicy::DropOldest)).unwrap();
        let aside = aside.expect("moved aside");
        assert!(aside.exists());
        assert_eq!(o.append(&mut records(1)).unwrap().accepted, vec![0]);
    }

    #[test]
    fn reopening_keeps_records_and_acknowledgements() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
            o.append(&mut records(4)).unwrap();
            o.ack(0).unwrap();
            o.reopen().unwrap();
            assert_eq!((o.head(), o.tail()), (4, 1));
            o.append(&mut records(2)).unwrap();
            o.ack(1).unwrap();
        }
        let o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        assert_eq!((o.head(), o.tail()), (6, 2));
        assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![2, 3, 4, 5]);
    }

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            version: 1,
            capacity: 7,
            head: 1 << 40,
            tail: 3,
            bytes_appended: 99,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(Meta::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn a_byte_limit_applies_the_full_policy() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(
            dir.path(),
            OutboxOptions {
                max_bytes: Some(4000),
                ..options(1000, FullPolicy::DropOldest)
            },
        )
        .unwrap();
        o.append(&mut records(10)).unwrap();
        let size = o.meta.bytes_appended / 10;
        let out = o.append(&mut records(40)).unwrap();
        assert!(out.dropped_oldest > 0, "{out:?}");
        assert!(
            o.pending() * size <= 4000 + size,
            "pending {} of {size} bytes",
            o.pending()
        );
        let mut refusing = Outbox::open(
            tempfile::tempdir().unwrap().path(),
            OutboxOptions {
                max_bytes: Some(4000),
                ..options(1000, FullPolicy::RefuseNewest)
            },
        )
        .unwrap();
        let out = refusing.append(&mut records(50)).unwrap();
        assert!(out.refused > 0 && out.accepted.len() < 50);
    }

    #[test]
    fn records_past_their_age_are_dropped_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(
            dir.path(),
            OutboxOptions {
                max_age: Some(std::time::Duration::from_millis(300)),
                ..options(100, FullPolicy::DropOldest)
            },
        )
        .unwrap();
        o.append(&mut records(3)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        let out = o.append(&mut records(2)).unwrap();
        assert_eq!(out.expired, 3);
        assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![3, 4]);
    }

    #[test]
    fn slots_carry_the_boot_clock_and_inspection_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
            o.append(&mut records(3)).unwrap();
            o.ack(0).unwrap();
            let stored = o.read(0, 1).unwrap();
            assert_eq!(stored[0].stamp.boot_id, Stamp::now().boot_id);
            assert!(o.oldest_age_ms().is_some());
        }
        let report = inspect(dir.path()).unwrap();
        assert_eq!(
            (report.head, report.tail, report.pending, report.capacity),
            (3, 1, 2, 16)
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let mut out = Vec::new();
        export(dir.path(), &mut out).unwrap();
        let lines: Vec<Record> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    }
}
