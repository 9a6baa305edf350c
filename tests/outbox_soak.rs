//! Soak: millions of records written, read and acknowledged through the
//! outbox; disk use and resident memory must stay flat (sled 0.34 grows
//! without bound under deletes, which the ring of overwritten slots avoids).
//!
//! Size: `FITEDGE_SOAK_RECORDS` (default 200000; CI runs 2000000 in release).

use std::time::Instant;

use fitedge::config::FullPolicy;
use fitedge::outbox::{disk_usage, Outbox, OutboxOptions};
use fitedge::record::{Measurement, Origin, Reading, Record, Transport};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn record(origin: &Origin, n: u64) -> Record {
    let reading = Reading::new;
    Record::new(
        origin,
        Measurement {
            values: vec![
                reading("body.height", 150.0 + (n % 500) as f64 / 10.0, "cm"),
                reading("body.weight", 40.0 + (n % 7000) as f64 / 100.0, "kg"),
            ],
            subject_ref: Some(format!("S{n:07}")),
            ..Default::default()
        },
    )
}

#[test]
fn disk_and_memory_stay_flat_over_millions_of_records() {
    let total: u64 = std::env::var("FITEDGE_SOAK_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    const BATCH: u64 = 500;
    const LAG: u64 = 2_000; // records left unacknowledged, like an uplink's backlog
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox");
    let options = OutboxOptions {
        max_records: 10_000,
        max_record_bytes: 16 * 1024,
        full_policy: FullPolicy::DropOldest,
        cache_bytes: 8 << 20,
        max_bytes: None,
        max_age: None,
    };
    let mut outbox = Outbox::open(&path, options).unwrap();
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "s".into(),
        device_id: "hw-1".into(),
        profile_id: "p".into(),
        transport: Transport::Serial,
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut cursor = 0;
    let mut written = 0;
    while written < total {
        let mut batch: Vec<Record> = (written..written + BATCH)
            .map(|n| record(&origin, n))
            .collect();
        let outcome = outbox.append(&mut batch).unwrap();
        assert_eq!(outcome.accepted.len() as u64, BATCH);
        assert_eq!(outcome.dropped_oldest, 0, "the lag fits the ring");
        written += BATCH;
        // The uplink's side: read what is new, acknowledge what is old enough.
        let read = outbox.read(cursor, BATCH as usize).unwrap();
        assert_eq!(read.first().map(|s| s.seq), Some(cursor));
        cursor += read.len() as u64;
        for seq in outbox.tail()..written.saturating_sub(LAG) {
            outbox.ack(seq).unwrap();
        }
        if written % (total / 10).max(BATCH) == 0 {
            samples.push((written, disk_usage(&path), rss_bytes()));
        }
    }
    assert_eq!(outbox.pending(), LAG);
    let elapsed = started.elapsed();
    println!(
        "soak: {total} records in {:.1} s ({:.0} records/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for (n, disk, rss) in &samples {
        println!(
            "  after {n:>9} records: disk {:>6.1} MiB, rss {:>6.1} MiB",
            *disk as f64 / 1048576.0,
            *rss as f64 / 1048576.0
        );
    }
    // Flat: from the 20 % mark on, neither grows by more than a small margin.
    let (_, base_disk, base_rss) = samples[samples.len() / 5];
    let max_disk = samples.iter().map(|s| s.1).max().unwrap();
    let max_rss = samples.iter().map(|s| s.2).max().unwrap();
    assert!(
        max_disk <= base_disk + base_disk / 4 + (8 << 20),
        "disk grew from {base_disk} to {max_disk} bytes"
    );
    assert!(
        max_rss <= base_rss + base_rss / 4 + (32 << 20),
        "rss grew from {base_rss} to {max_rss} bytes"
    );
}
