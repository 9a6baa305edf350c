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
//! `slot.rs` holds the stored format, `inspect.rs` the offline tools
//! (`fitedge buffer stats|verify|export`).

mod inspect;
mod ledger;
mod quarantine;
mod slot;

pub use inspect::{disk_usage, export, inspect, Report};
pub use ledger::SLOTS as LEDGER_SLOTS;
pub use quarantine::{export as export_quarantine, Entry as QuarantineEntry, Quarantine};
pub use slot::FORMAT_VERSION;

use slot::{decode_slot, encode_slot, released_slot, slot_key, split_slot, Meta, META_KEY};

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tracing::{error, warn};

use crate::clock::Stamp;
use crate::config::FullPolicy;
use crate::record::Record;

/// Decodes the bytes of record `seq`'s slot as the uplink reads them; the
/// error says what is wrong. (The entry point for fuzzing the stored form.)
pub fn decode_slot_bytes(seq: u64, value: &[u8]) -> Result<Stored, String> {
    decode_slot(seq, value)
}

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
    /// Records not stored because their MQTT message was a resend of one
    /// already stored (see `ledger.rs`).
    pub redelivered: u64,
}

/// A stored record as the uplink needs it: the versioned record (what goes
/// on the wire is the payload encoder's business) and when it was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: u64,
    /// When the outbox accepted it, on the boot clock.
    pub stamp: Stamp,
    pub record: Record,
}

/// The durable ring. One writer appends; the uplink reads and acknowledges.
pub struct Outbox {
    path: PathBuf,
    db: sled::Db,
    /// A second handle on sled's log file, to `fdatasync` it after a flush.
    log: Arc<File>,
    /// The pointers as written to sled, including a batch not yet synced.
    meta: Meta,
    /// Records below this are durable: what readers may see.
    durable_head: u64,
    /// Acknowledged records at or after `tail` (PUBACKs may arrive out of order).
    acked: BTreeSet<u64>,
    options: OutboxOptions,
    /// The database handle was released for a rebuild that has not finished:
    /// nothing may be written or read until `reopen` succeeds.
    unusable: bool,
    /// Where unreadable slots go (`quarantine.rs`).
    quarantine: Quarantine,
    /// The messages behind recent records (`ledger.rs`).
    ledger: ledger::Ledger,
}

/// Opens the sled database. A handle dropped just before (a reopen after a
/// write failure) lets go of the file lock only when sled's flusher thread
/// ends, so a held lock is waited for, briefly.
fn open_db(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    private_dir(dir)?;
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

/// Creates `dir` (and missing parents) readable by the gateway's user only,
/// and closes up one left open by an older version: the buffer holds
/// health records.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
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
        if meta.epoch == 0 {
            // A buffer from before epochs: it gets one now.
            meta.epoch = ulid::Ulid::generate().0;
        }
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
        let ledger = ledger::Ledger::load(&db, meta.head).map_err(sled_err)?;
        let outbox = Outbox {
            path: dir.to_path_buf(),
            ledger,
            db,
            log: Arc::new(log),
            durable_head: meta.head,
            meta,
            acked: BTreeSet::new(),
            options,
            unusable: false,
            quarantine: Quarantine::open(dir),
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
        let (outcome, staged) = self.stage(records)?;
        if let Some(staged) = staged {
            staged.sync()?;
            self.made_durable(&staged);
        }
        Ok(outcome)
    }

    /// `append` on a shared outbox, holding the lock only to write the batch
    /// and to publish it: the `fdatasync` between, which takes the longest
    /// on an SD card, leaves the uplink free to read and acknowledge. The
    /// new records are seen by readers only once durable. Returns the new
    /// head as well.
    pub fn append_shared(
        outbox: &Mutex<Outbox>,
        records: &mut [Record],
    ) -> Result<(AppendOutcome, u64), OutboxError> {
        let lock = || outbox.lock().unwrap_or_else(|p| p.into_inner());
        let (outcome, staged) = lock().stage(records)?;
        if let Some(staged) = staged {
            let synced = staged.sync();
            let mut outbox = lock();
            match synced {
                Ok(()) => outbox.made_durable(&staged),
                Err(e) => {
                    outbox.sync_failed(&staged);
                    return Err(e);
                }
            }
        }
        let head = lock().head();
        Ok((outcome, head))
    }

    /// Writes a batch to sled (not yet synced) and moves the written
    /// pointers; `None` when nothing changed.
    fn stage(
        &mut self,
        records: &mut [Record],
    ) -> Result<(AppendOutcome, Option<Staged>), OutboxError> {
        self.usable()?;
        let mut meta = self.meta;
        let mut acked = self.acked.clone();
        let mut outcome = AppendOutcome::default();
        let mut batch = sled::Batch::default();
        let now = Stamp::now();
        outcome.expired = self.expire(&mut meta, &mut acked, &now)?;
        let mut inputs: Vec<([u8; 16], u64)> = Vec::new();
        for record in records.iter_mut() {
            if let Some(input) = record.input.filter(|i| i.dup) {
                let stored = self.ledger.seen(&input.digest, meta.head).is_some()
                    || inputs.iter().any(|(d, _)| *d == input.digest);
                if stored {
                    outcome.redelivered += 1;
                    continue;
                }
            }
            record.seq = meta.head;
            record.epoch = Some(meta.epoch_text());
            let encoded = encode_slot(record, &now);
            let bytes = encoded.as_ref().map_or(0, |(_, size)| *size);
            let Some((slot, size)) =
                encoded.filter(|(_, size)| *size <= self.options.max_record_bytes)
            else {
                warn!(
                    message = "Record too large for the buffer; refused.",
                    bytes,
                    limit = self.options.max_record_bytes,
                    device = %record.device_id,
                    stage = "buffer"
                );
                outcome.refused += 1;
                continue;
            };
            let over_bytes = |m: &Meta| {
                self.options
                    .max_bytes
                    .is_some_and(|max| m.pending_bytes() + size as u64 > max && m.head > m.tail)
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
            batch.insert(&slot_key(meta.head, meta.capacity), slot);
            if let Some(input) = &record.input {
                ledger::Ledger::write(&mut batch, meta.head, &input.digest);
                inputs.push((input.digest, meta.head));
            }
            outcome.accepted.push(meta.head);
            meta.head += 1;
            meta.bytes_appended += size as u64;
        }
        if meta == self.meta {
            return Ok((outcome, None));
        }
        // Expired and dropped records: overwritten, unless a new record
        // took their slot in this batch.
        for seq in self.meta.tail..meta.tail {
            if seq + meta.capacity >= meta.head {
                batch.insert(&slot_key(seq, meta.capacity), &released_slot(seq)[..]);
            }
        }
        batch.insert(META_KEY, &meta.encode()[..]);
        self.db
            .apply_batch(batch)
            .map_err(|source| self.sled_error(source))?;
        let staged = Staged {
            path: self.path.clone(),
            db: self.db.clone(),
            log: self.log.clone(),
            before: self.meta,
            head: meta.head,
        };
        self.meta = meta;
        self.acked = acked;
        self.ledger.remember(&inputs, meta.head);
        Ok((outcome, Some(staged)))
    }

    /// A staged batch is durable: readers may see it.
    fn made_durable(&mut self, staged: &Staged) {
        self.durable_head = self.durable_head.max(staged.head).min(self.meta.head);
    }

    /// A staged batch could not be synced: its sequence numbers are not
    /// handed out (the caller retries the same records after `reopen`).
    fn sync_failed(&mut self, staged: &Staged) {
        if self.meta.head == staged.head {
            self.meta.head = staged.before.head.max(self.meta.tail);
            self.meta.bytes_appended = staged.before.bytes_appended;
        }
        self.ledger.forget_from(staged.before.head);
    }

    /// Rebuilds the database after a write failed. sled refuses every write
    /// after an I/O error such as a full disk, and a log with a failed write
    /// in it does not reliably keep what is written after it, so the
    /// recovered contents are copied into a fresh database that replaces the
    /// old one. Needs free space for the copy; the caller retries until then.
    /// What this process knows beyond the disk (acknowledgements) is kept.
    pub fn reopen(&mut self) -> Result<(), OutboxError> {
        let (path, options, broken) = self.release()?;
        drop(broken);
        let fresh = rebuild(&path, options)?;
        self.install(fresh)
    }

    /// `reopen` on a shared outbox: the copy, which takes long on a large
    /// buffer, runs without the lock. Meanwhile reads fail (the uplink
    /// retries) and acknowledgements are remembered.
    pub fn reopen_shared(outbox: &Mutex<Outbox>) -> Result<(), OutboxError> {
        let lock = || outbox.lock().unwrap_or_else(|p| p.into_inner());
        let (path, options, broken) = lock().release()?;
        // Dropping sled's last handle flushes and syncs: not under the lock.
        drop(broken);
        let fresh = rebuild(&path, options)?;
        lock().install(fresh)
    }

    /// Gives up the database for a rebuild; the caller drops the handle
    /// returned (which lets go of the file lock).
    fn release(&mut self) -> Result<(PathBuf, OutboxOptions, sled::Db), OutboxError> {
        let placeholder = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| self.sled_error(source))?;
        let broken = std::mem::replace(&mut self.db, placeholder);
        self.unusable = true;
        Ok((self.path.clone(), self.options.clone(), broken))
    }

    /// Takes over the rebuilt database, keeping what this process knows
    /// beyond the disk.
    fn install(&mut self, fresh: Outbox) -> Result<(), OutboxError> {
        let mut meta = fresh.meta;
        if (meta.tail..=meta.head).contains(&self.meta.tail) {
            meta.tail = self.meta.tail;
        }
        // Never hand out a sequence number again, even if the recovered log
        // is shorter than what was accepted (its slots then read as corrupt).
        meta.head = meta.head.max(self.meta.head);
        self.acked.retain(|s| *s >= meta.tail && *s < meta.head);
        // Records acknowledged while the database was being rebuilt were
        // copied whole: release their slots now.
        let mut batch = sled::Batch::default();
        for seq in fresh.meta.tail..meta.tail {
            batch.insert(&slot_key(seq, meta.capacity), &released_slot(seq)[..]);
        }
        batch.insert(META_KEY, &meta.encode()[..]);
        fresh
            .db
            .apply_batch(batch)
            .map_err(|source| fresh.sled_error(source))?;
        self.db = fresh.db;
        self.log = fresh.log;
        self.meta = meta;
        self.durable_head = meta.head;
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
            let age = match self.read_stamp(meta, meta.tail) {
                Ok(stamp) => stamp.elapsed_until(now),
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
    pub fn read(&mut self, from: u64, max: usize) -> Result<Vec<Stored>, OutboxError> {
        self.read_range(from, u64::MAX, max)
    }

    /// Up to `max` unacknowledged records with `from <= seq < to`, in order.
    /// A slot that cannot be read is quarantined and skipped.
    pub fn read_range(
        &mut self,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Vec<Stored>, OutboxError> {
        self.usable()?;
        let mut out = Vec::new();
        let mut seq = from.max(self.meta.tail);
        while seq < self.durable_head.min(to) && out.len() < max {
            if !self.acked.contains(&seq) {
                match self.read_slot_with(&self.meta, seq) {
                    Ok(stored) => out.push(stored),
                    Err(OutboxError::Corrupt { detail, .. }) => {
                        self.quarantine_slot(seq, &detail)?
                    }
                    Err(e) => return Err(e),
                }
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Moves the bytes of unreadable slot `seq` to the quarantine file and
    /// releases the slot, so the records behind it can go.
    fn quarantine_slot(&mut self, seq: u64, detail: &str) -> Result<(), OutboxError> {
        let bytes = self
            .db
            .get(slot_key(seq, self.meta.capacity))
            .map_err(|source| self.sled_error(source))?
            .unwrap_or_default();
        self.quarantine
            .put(seq, detail, &bytes)
            .map_err(|source| OutboxError::Sync {
                path: self.quarantine.path().to_path_buf(),
                source,
            })?;
        error!(
            message = "Unreadable record moved to the quarantine file; going on with the next.",
            seq,
            error = detail,
            file = %self.quarantine.path().display(),
            stage = "buffer"
        );
        self.ack(seq)
    }

    /// Slots quarantined over the buffer's life.
    pub fn quarantined(&self) -> u64 {
        self.quarantine.count()
    }

    fn read_slot_with(&self, meta: &Meta, seq: u64) -> Result<Stored, OutboxError> {
        let value = self.slot(meta, seq)?;
        decode_slot(seq, &value).map_err(|detail| self.corrupt(seq, detail))
    }

    /// When record `seq` was accepted, from its slot's header alone.
    fn read_stamp(&self, meta: &Meta, seq: u64) -> Result<Stamp, OutboxError> {
        let value = self.slot(meta, seq)?;
        let (stamp, _) = split_slot(seq, &value).map_err(|detail| self.corrupt(seq, detail))?;
        Ok(stamp)
    }

    fn slot(&self, meta: &Meta, seq: u64) -> Result<sled::IVec, OutboxError> {
        self.db
            .get(slot_key(seq, meta.capacity))
            .map_err(|source| self.sled_error(source))?
            .ok_or_else(|| self.corrupt(seq, "nothing".into()))
    }

    fn corrupt(&self, seq: u64, detail: String) -> OutboxError {
        OutboxError::Corrupt {
            path: self.path.clone(),
            seq,
            detail,
        }
    }

    /// Releases record `seq` after its PUBACK: once every record before it
    /// is released too, its slot is overwritten. Acknowledging twice, or a
    /// record already released, is harmless. The new tail is written but not
    /// synced: a crash can only make already-delivered records go again.
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq < self.meta.tail || seq >= self.durable_head {
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
            // The delivered records leave the buffer: their slots are
            // overwritten in the same batch that moves the tail.
            let mut batch = sled::Batch::default();
            for seq in before..self.meta.tail {
                batch.insert(&slot_key(seq, self.meta.capacity), &released_slot(seq)[..]);
            }
            batch.insert(META_KEY, &self.meta.encode()[..]);
            self.db
                .apply_batch(batch)
                .map_err(|source| self.sled_error(source))?;
        }
        Ok(())
    }

    /// Makes everything written so far durable (flush + fdatasync).
    pub fn sync(&self) -> Result<(), OutboxError> {
        self.usable()?;
        sync_log(&self.path, &self.db, &self.log)
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

    /// Sequence number the next durable record will get: records below it
    /// are durable.
    pub fn head(&self) -> u64 {
        self.durable_head
    }

    /// This buffer's epoch: made with the buffer, carried by every record;
    /// `seq` is gap-free within one epoch.
    pub fn epoch(&self) -> String {
        self.meta.epoch_text()
    }

    /// Oldest unacknowledged sequence number.
    pub fn tail(&self) -> u64 {
        self.meta.tail
    }

    /// Records waiting for a PUBACK.
    pub fn pending(&self) -> u64 {
        self.durable_head
            .saturating_sub(self.meta.tail)
            .saturating_sub(self.acked.len() as u64)
    }

    /// Ring size in effect (the stored one until a resized buffer drains).
    pub fn capacity(&self) -> u64 {
        self.meta.capacity
    }

    /// Records waiting for a PUBACK, and the age of the oldest in ms.
    pub fn waiting(&self) -> (u64, Option<u64>) {
        (self.pending(), self.oldest_age_ms())
    }

    /// Age of the oldest unacknowledged record, when it is from this boot.
    pub fn oldest_age_ms(&self) -> Option<u64> {
        let oldest = (self.meta.tail..self.durable_head).find(|s| !self.acked.contains(s))?;
        self.read_stamp(&self.meta, oldest)
            .ok()?
            .elapsed_until(&Stamp::now())
    }
}

/// A batch written to sled but not yet synced, with what it takes to sync
/// it without the outbox.
struct Staged {
    path: PathBuf,
    db: sled::Db,
    log: Arc<File>,
    /// The pointers before the batch.
    before: Meta,
    /// The head after it.
    head: u64,
}

impl Staged {
    fn sync(&self) -> Result<(), OutboxError> {
        sync_log(&self.path, &self.db, &self.log)
    }
}

/// sled's flush, then `fdatasync` of its log file (the flush alone only
/// calls `sync_file_range`).
fn sync_log(path: &Path, db: &sled::Db, log: &File) -> Result<(), OutboxError> {
    db.flush().map_err(|source| OutboxError::Sled {
        path: path.to_path_buf(),
        source,
    })?;
    log.sync_data().map_err(|source| OutboxError::Sync {
        path: path.to_path_buf(),
        source,
    })
}

/// Copies what sled recovers of the buffer at `path` into a fresh database
/// and puts it in the old one's place (the old is kept as `<dir>.old` until
/// the new one is in place: `open_or_recover` restores it if interrupted).
fn rebuild(path: &Path, options: OutboxOptions) -> Result<Outbox, OutboxError> {
    let sled_err = |source| OutboxError::Sled {
        path: path.to_path_buf(),
        source,
    };
    let io_err = |source| OutboxError::Sync {
        path: path.to_path_buf(),
        source,
    };
    let rebuild = sibling(path, "rebuild");
    let old = sibling(path, "old");
    if rebuild.exists() {
        std::fs::remove_dir_all(&rebuild).map_err(io_err)?;
    }
    {
        let recovered = open_db(path, options.cache_bytes).map_err(sled_err)?;
        private_dir(&rebuild).map_err(io_err)?;
        let copy = open_db(&rebuild, options.cache_bytes).map_err(sled_err)?;
        for item in recovered.iter() {
            let (key, value) = item.map_err(sled_err)?;
            copy.insert(key, value).map_err(sled_err)?;
        }
        copy.flush().map_err(sled_err)?;
        File::open(rebuild.join("db"))
            .and_then(|f| f.sync_all())
            .map_err(io_err)?;
    }
    std::fs::rename(path, &old).map_err(io_err)?;
    std::fs::rename(&rebuild, path).map_err(io_err)?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
    }
    let _ = std::fs::remove_dir_all(&old);
    Outbox::open(path, options)
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

#[cfg(test)]
mod tests;
