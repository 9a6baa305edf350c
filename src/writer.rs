//! The writer: the stage that makes records durable. It takes records
//! from the sources (or the stage before it) in batches, appends each batch
//! to the outbox with one fsync, completes each record's `durable` signal,
//! and announces the new head to the uplink. A failed write (a full or
//! failing disk) is retried with the batch held in memory, rebuilding the
//! database between attempts; meanwhile the bounded channel holds the
//! sources back, so nothing accepted is ever lost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::outbox::{AppendOutcome, Outbox};
use crate::record::{Incoming, Record};
use crate::status::Stats;

/// Records made durable with one fsync, at most.
pub const WRITE_BATCH: usize = 512;

/// The writer: takes records from the sources in batches (gathering for up
/// to `flush_window`) and makes each batch durable before announcing the new
/// head to the uplink. A failed write (a full or failing disk) is retried
/// with the batch kept in memory; meanwhile the bounded channel holds the
/// sources back, so nothing accepted is ever lost.
pub async fn run(
    mut rx: mpsc::Receiver<Incoming>,
    outbox: Arc<Mutex<Outbox>>,
    head: watch::Sender<u64>,
    stats: Arc<Stats>,
    flush_window: Duration,
    stopping: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        if !flush_window.is_zero() {
            let until = tokio::time::Instant::now() + flush_window;
            while batch.len() < WRITE_BATCH {
                let room = WRITE_BATCH - batch.len();
                match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let (records, durable): (Vec<Record>, Vec<_>) = std::mem::take(&mut batch)
            .into_iter()
            .map(|i| (i.record, i.durable))
            .unzip();
        if !store(records, &outbox, &head, &stats, &rx, &stopping).await {
            return;
        }
        for done in durable.into_iter().flatten() {
            let _ = done.send(());
        }
    }
}

/// Appends one batch, retrying while the disk refuses it. `false` when the
/// gateway is stopping and the batch could not be stored.
async fn store(
    records: Vec<Record>,
    outbox: &Arc<Mutex<Outbox>>,
    head: &watch::Sender<u64>,
    stats: &Stats,
    rx: &mpsc::Receiver<Incoming>,
    stopping: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_error = String::new();
    let mut failures = 0;
    loop {
        let shared = outbox.clone();
        let mut attempt = records.clone();
        let result =
            tokio::task::spawn_blocking(move || Outbox::append_shared(&shared, &mut attempt)).await;
        let error = match result {
            Ok(Ok((outcome, new_head))) => {
                report(&outcome, stats);
                if failures > 0 {
                    info!(
                        message = "Buffer writable again.",
                        after_failures = failures,
                        stage = "buffer"
                    );
                }
                head.send_replace(new_head);
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        let reopened = {
            let outbox = outbox.clone();
            tokio::task::spawn_blocking(move || Outbox::reopen_shared(&outbox)).await
        };
        if let Ok(Err(e)) = reopened {
            debug!(message = "Reopening the buffer failed; will retry.", error = %e, stage = "buffer");
        }
        failures += 1;
        stats.buffer_errors.fetch_add(1, Relaxed);
        if error != last_error {
            error!(message = "Could not store records; holding them and retrying.", error = %error, records = records.len(), stage = "buffer");
            last_error = error;
        }
        if (rx.is_closed() || stopping.is_cancelled()) && failures >= 5 {
            error!(
                message = "Stopping with records that could not be stored; they are lost.",
                records = records.len(),
                stage = "buffer"
            );
            return false;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn report(outcome: &AppendOutcome, stats: &Stats) {
    stats
        .records_accepted
        .fetch_add(outcome.accepted.len() as u64, Relaxed);
    if outcome.refused > 0 {
        stats.records_refused.fetch_add(outcome.refused, Relaxed);
        warn!(
            message = "Buffer full; new records refused.",
            refused = outcome.refused,
            stage = "buffer"
        );
    }
    if outcome.dropped_oldest > 0 {
        stats
            .records_dropped_oldest
            .fetch_add(outcome.dropped_oldest, Relaxed);
        warn!(
            message = "Buffer full; oldest unsent records dropped.",
            dropped = outcome.dropped_oldest,
            stage = "buffer"
        );
    }
    if outcome.redelivered > 0 {
        stats
            .lan_redelivered
            .fetch_add(outcome.redelivered, Relaxed);
        info!(
            message = "MQTT messages sent again after their records were stored; not stored twice.",
            redelivered = outcome.redelivered,
            stage = "buffer"
        );
    }
    if outcome.expired > 0 {
        stats.records_expired.fetch_add(outcome.expired, Relaxed);
        warn!(
            message = "Unsent records past buffer.max_age_hours dropped.",
            expired = outcome.expired,
            stage = "buffer"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FullPolicy;
    use crate::outbox::OutboxOptions;
    use crate::record::{Measurement, Origin, Transport};

    #[tokio::test]
    async fn records_are_durable_before_their_signal_and_the_head_moves() {
        let dir = tempfile::tempdir().unwrap();
        let options = OutboxOptions {
            max_records: 64,
            max_record_bytes: 4096,
            full_policy: FullPolicy::DropOldest,
            cache_bytes: 1 << 20,
            max_bytes: None,
            max_age: None,
        };
        let outbox = Arc::new(Mutex::new(Outbox::open(dir.path(), options).unwrap()));
        let (tx, rx) = mpsc::channel(16);
        let (head_tx, mut head) = watch::channel(0);
        let stats = Arc::new(Stats::default());
        let writer = tokio::spawn(run(
            rx,
            outbox.clone(),
            head_tx,
            stats.clone(),
            Duration::from_millis(20),
            CancellationToken::new(),
        ));
        let origin = Origin {
            gateway_id: "gw".into(),
            site_id: "s".into(),
            device_id: "d".into(),
            profile_id: "p".into(),
            transport: Transport::Serial,
        };
        let mut signals = Vec::new();
        for _ in 0..3 {
            let (done, durable) = tokio::sync::oneshot::channel();
            let record = Record::new(&origin, Measurement::default());
            tx.send(Incoming {
                record,
                durable: Some(done),
                event: None,
            })
            .await
            .unwrap();
            signals.push(durable);
        }
        for durable in signals {
            durable.await.expect("signalled once durable");
        }
        head.wait_for(|h| *h == 3).await.unwrap();
        assert_eq!(outbox.lock().unwrap().pending(), 3);
        assert_eq!(stats.records_accepted.load(Relaxed), 3);
        drop(tx);
        writer
            .await
            .expect("the writer ends once its senders are gone");
    }
}
