//! How long opening the outbox takes, and how much memory, with many
//! records buffered: the gateway must start fast after a long outage and
//! must not load the backlog into memory.
//!
//! `cargo bench --bench outbox_open` (size: `FITEDGE_BENCH_RECORDS`,
//! default 1,000,000 buffered records).

use std::time::Instant;

use fitedge::config::FullPolicy;
use fitedge::outbox::{Outbox, OutboxOptions};
use fitedge::record::{Measurement, Origin, Quality, Reading, Record, Transport};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let records: u64 = std::env::var("FITEDGE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = || OutboxOptions {
        max_records: records + 1,
        max_record_bytes: 16 * 1024,
        full_policy: FullPolicy::DropOldest,
        cache_bytes: 8 << 20,
        max_bytes: None,
        max_age: None,
    };
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "s".into(),
        device_id: "hw-1".into(),
        profile_id: "p".into(),
        transport: Transport::Serial,
    };
    let started = Instant::now();
    {
        let mut outbox = Outbox::open(dir.path(), options()).expect("outbox opens");
        let mut written = 0;
        while written < records {
            let n = 1000.min(records - written);
            let mut batch: Vec<Record> = (0..n)
                .map(|i| {
                    let reading = Reading {
                        metric: "body.weight".into(),
                        value: 40.0 + (i % 500) as f64 / 10.0,
                        unit: "kg".into(),
                        quality: Quality::Ok,
                        source_value: None,
                        source_unit: None,
                    };
                    Record::new(
                        &origin,
                        Measurement {
                            values: vec![reading],
                            subject_ref: Some(format!("S{i:06}")),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            outbox.append(&mut batch).expect("append");
            written += n;
        }
    }
    let filled = started.elapsed();
    let rss_before = rss_mib();
    let mut opens = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let outbox = Outbox::open(dir.path(), options()).expect("reopen");
        opens.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(outbox.pending(), records);
        drop(outbox);
    }
    opens.sort_by(|a, b| a.total_cmp(b));
    println!(
        "outbox_open: {records} buffered records written in {:.1} s; reopen median {:.1} ms (min {:.1}, max {:.1}) over 5; RSS {:.1} MiB before reopening, {:.1} MiB after; disk {:.1} MiB",
        filled.as_secs_f64(),
        opens[2],
        opens[0],
        opens[4],
        rss_before,
        rss_mib(),
        fitedge::outbox::disk_usage(dir.path()) as f64 / 1048576.0
    );
}
