//! Offline tools on a stopped gateway's buffer: `fitedge buffer stats`,
//! `verify` and `export`, and the disk usage the soak and status report.

use std::path::{Path, PathBuf};

use super::slot::{decode_slot, slot_key, split_slot, Meta, META_KEY};
use super::OutboxError;

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
        match stored {
            Ok(stored) => {
                oldest.get_or_insert(stored.record.received_at);
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
        let Ok((_, json)) = split_slot(seq, &value) else {
            continue;
        };
        let io = |source| OutboxError::Sync {
            path: dir.to_path_buf(),
            source,
        };
        out.write_all(json).map_err(io)?;
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
