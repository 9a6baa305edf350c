//! The ledger: digests of the MQTT messages behind the last `SLOTS`
//! records, so that a message sent again after the gateway stored it but
//! before its acknowledgement went out (a crash, a power cut, a dropped
//! link) is recognised and not stored twice.
//!
//! An entry is written in the same atomic sled batch as its record: a
//! record is durable exactly when its entry is. Entries are keyed
//! `L | seq % SLOTS` and overwritten in place (sled grows under deletes),
//! each holding `seq u64 | digest [16]`; one is current while its record is
//! among the last `SLOTS` records. The rule (a resend marked DUP whose
//! digest is current) is in `docs/reliability.md`.

use std::collections::HashMap;

/// Records whose messages are remembered.
pub const SLOTS: u64 = 8192;

fn key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'L';
    k[1..].copy_from_slice(&(seq % SLOTS).to_be_bytes());
    k
}

fn current(seq: u64, head: u64) -> bool {
    seq < head && seq + SLOTS >= head
}

/// The digests of recent records' messages, and the seq of each.
#[derive(Debug, Default)]
pub struct Ledger {
    by_digest: HashMap<[u8; 16], u64>,
}

impl Ledger {
    /// Reads the current entries (at most `SLOTS` keys).
    pub fn load(db: &sled::Db, head: u64) -> sled::Result<Ledger> {
        let mut by_digest = HashMap::new();
        for item in db.scan_prefix([b'L']) {
            let (key, value) = item?;
            if key.len() != 9 {
                continue;
            }
            let Some((seq, digest)) = value
                .get(..8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .zip(value.get(8..24).and_then(|d| <[u8; 16]>::try_from(d).ok()))
            else {
                continue;
            };
            if current(seq, head) {
                by_digest.insert(digest, seq);
            }
        }
        Ok(Ledger { by_digest })
    }

    /// The seq of the record a message with `digest` became, if it is one
    /// of the last `SLOTS` before `head`.
    pub fn seen(&self, digest: &[u8; 16], head: u64) -> Option<u64> {
        self.by_digest
            .get(digest)
            .copied()
            .filter(|seq| current(*seq, head))
    }

    /// Adds the entry for record `seq` to `batch`.
    pub fn write(batch: &mut sled::Batch, seq: u64, digest: &[u8; 16]) {
        let mut value = [0u8; 24];
        value[..8].copy_from_slice(&seq.to_be_bytes());
        value[8..].copy_from_slice(digest);
        batch.insert(&key(seq), &value[..]);
    }

    /// Remembers entries once their batch is written.
    pub fn remember(&mut self, entries: &[([u8; 16], u64)], head: u64) {
        self.by_digest.extend(entries.iter().copied());
        if self.by_digest.len() as u64 > 2 * SLOTS {
            self.by_digest.retain(|_, seq| current(*seq, head));
        }
    }

    /// Forgets entries of records from `seq` on (their batch was not made
    /// durable and will be written again).
    pub fn forget_from(&mut self, seq: u64) {
        self.by_digest.retain(|_, s| *s < seq);
    }
}
