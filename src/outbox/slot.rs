//! The stored format: the meta key (ring pointers) and one slot per record.
//!
//! Meta (52 bytes): `version u32 | capacity u64 | head u64 | tail u64 |
//! bytes appended u64 | epoch u128` (a buffer written before the epoch was
//! added has 36 bytes, read with epoch 0: the outbox then gives it one). Slot (format 1): `seq u64 | boot id [16] | uptime ms
//! u64 | device id length u8 | device id | record JSON`, integers big-endian.
//! A released slot (its record acknowledged, expired or dropped) is
//! overwritten with its `seq u64` alone, so the buffer keeps no health data
//! it no longer needs (sled's log may still hold the old bytes until it
//! reuses that segment; `docs/security.md` has the measurements).
//! The record JSON carries its own schema id (`fitedge.record.v1`): the slot
//! stores the versioned record, and the uplink's payload encoder decides what
//! goes on the wire.

use crate::clock::Stamp;
use crate::record::Record;

use super::Stored;

/// Version of the on-disk layout; a newer one is refused, older ones read.
pub const FORMAT_VERSION: u32 = 1;
pub(super) const META_KEY: &[u8] = b"meta";
const HEADER: usize = 8 + 16 + 8 + 1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Meta {
    pub version: u32,
    pub capacity: u64,
    /// Sequence number the next record gets.
    pub head: u64,
    /// Oldest record not yet acknowledged; everything before it is released.
    pub tail: u64,
    /// Bytes of all records ever appended, for the mean record size.
    pub bytes_appended: u64,
    /// This buffer's epoch (a ULID made with it; 0: none yet): `seq` counts
    /// from 0 within one epoch.
    pub epoch: u128,
}

impl Meta {
    pub fn new(capacity: u64) -> Meta {
        Meta {
            version: FORMAT_VERSION,
            capacity,
            head: 0,
            tail: 0,
            bytes_appended: 0,
            epoch: ulid::Ulid::generate().0,
        }
    }

    pub fn encode(&self) -> [u8; 52] {
        let mut b = [0u8; 52];
        b[0..4].copy_from_slice(&self.version.to_be_bytes());
        b[4..12].copy_from_slice(&self.capacity.to_be_bytes());
        b[12..20].copy_from_slice(&self.head.to_be_bytes());
        b[20..28].copy_from_slice(&self.tail.to_be_bytes());
        b[28..36].copy_from_slice(&self.bytes_appended.to_be_bytes());
        b[36..52].copy_from_slice(&self.epoch.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
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
            epoch: b
                .get(36..52)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u128::from_be_bytes),
        })
    }

    /// The epoch as the records carry it.
    pub fn epoch_text(&self) -> String {
        ulid::Ulid(self.epoch).to_string()
    }

    /// Estimated bytes of the unacknowledged records.
    pub fn pending_bytes(&self) -> u64 {
        match self.head {
            0 => 0,
            n => (self.head - self.tail) * (self.bytes_appended / n),
        }
    }
}

pub(super) fn slot_key(seq: u64, capacity: u64) -> [u8; 8] {
    (seq % capacity).to_be_bytes()
}

/// What a released slot holds: its sequence number, nothing of the record.
pub(super) fn released_slot(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The slot for a record (its header, then the record's JSON) and the size
/// of that JSON, which `max_record_bytes` limits. `None` when the record
/// cannot be stored (no JSON, a device id over 255 bytes).
pub(super) fn encode_slot(record: &Record, stamp: &Stamp) -> Option<(Vec<u8>, usize)> {
    let json = serde_json::to_vec(record).ok()?;
    let id = record.device_id.as_bytes();
    let id_len = u8::try_from(id.len()).ok()?;
    let mut value = Vec::with_capacity(HEADER + id.len() + json.len());
    value.extend_from_slice(&record.seq.to_be_bytes());
    value.extend_from_slice(&stamp.boot_id);
    value.extend_from_slice(&stamp.uptime_ms.to_be_bytes());
    value.push(id_len);
    value.extend_from_slice(id);
    value.extend_from_slice(&json);
    Some((value, json.len()))
}

/// The header of slot `seq` and its record's JSON, not yet parsed.
pub(super) fn split_slot(seq: u64, value: &[u8]) -> Result<(Stamp, &[u8]), String> {
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
    value
        .get(HEADER..HEADER + id_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or("a bad device id")?;
    Ok((Stamp { boot_id, uptime_ms }, &value[HEADER + id_len..]))
}

/// Slot `seq` as the uplink reads it: header and parsed record.
pub(super) fn decode_slot(seq: u64, value: &[u8]) -> Result<Stored, String> {
    let (stamp, json) = split_slot(seq, value)?;
    // serde's message can quote the stored text (a subject among it): only
    // the kind of error and where it is are told, in logs and quarantine.
    let record: Record = serde_json::from_slice(json).map_err(|e| {
        format!(
            "an unreadable record ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    if record.seq != seq {
        return Err(format!("a record numbered {}", record.seq));
    }
    Ok(Stored { seq, stamp, record })
}
