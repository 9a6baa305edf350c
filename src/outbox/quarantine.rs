//! The quarantine: where the outbox moves a slot it cannot read, so one bad
//! slot never holds up the records behind it.
//!
//! A side file `<buffer.dir>.quarantine` beside the buffer (outside it: a
//! rebuild or a buffer moved aside keeps it), readable by the gateway's user
//! only, one JSON line per slot: `seq`, `quarantined_at`, `error` and the
//! slot's bytes as `hex`. Each line is synced before the slot is released.
//! The bytes may hold a health record, so the file is bounded: past
//! `MAX_BYTES` a line keeps everything but the hex. `fitedge buffer export
//! --quarantine` prints it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Size of the file beyond which slots' bytes are no longer kept.
pub const MAX_BYTES: u64 = 16 << 20;

/// One quarantined slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub quarantined_at: String,
    pub error: String,
    /// The slot's bytes; absent when the file had reached its size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// The side file of one buffer, and how many slots it holds.
pub struct Quarantine {
    path: PathBuf,
    count: u64,
}

impl Quarantine {
    /// The side file of the buffer in `dir`.
    pub fn path_for(dir: &Path) -> PathBuf {
        super::sibling(dir, "quarantine")
    }

    /// Counts what an earlier run quarantined (a missing file is empty).
    pub fn open(dir: &Path) -> Quarantine {
        let path = Quarantine::path_for(dir);
        let count = File::open(&path)
            .map(|f| std::io::BufReader::new(f).lines().count() as u64)
            .unwrap_or(0);
        Quarantine { path, count }
    }

    /// Slots quarantined, over the buffer's life.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one slot and syncs the file; only then may the slot go.
    pub fn put(&mut self, seq: u64, error: &str, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let full = file.metadata()?.len() >= MAX_BYTES;
        let entry = Entry {
            seq,
            quarantined_at: crate::clock::now_rfc3339(),
            error: error.to_string(),
            hex: (!full).then(|| crate::codec::hex::hex(bytes)),
        };
        let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()?;
        self.count += 1;
        Ok(())
    }
}

/// Writes the quarantine of the buffer in `dir` to `out`, as stored (JSON
/// lines); the number of entries.
pub fn export(dir: &Path, out: &mut dyn Write) -> std::io::Result<u64> {
    let file = match File::open(Quarantine::path_for(dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        n += 1;
    }
    Ok(n)
}
