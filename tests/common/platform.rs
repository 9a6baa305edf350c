//! The platform side: an embedded broker and a subscriber standing in for
//! the county platform, with what it received.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fitedge::record::Record;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::*;

/// Starts an embedded broker on a free loopback port.
pub fn broker() -> u16 {
    fitedge::broker::start()
        .expect("embedded broker starts")
        .port
}

/// What the platform received, shared with the subscriber's task.
#[derive(Default)]
pub struct Received {
    pub records: Vec<Record>,
    pub statuses: Vec<serde_json::Value>,
    pub raw: Vec<(String, Vec<u8>)>,
    /// SUBACKs seen: one per (re)connect of the subscriber.
    pub subacks: usize,
    /// Payloads that did not validate against their schema (docs/schema),
    /// with why: a test whose platform received any fails.
    pub invalid: Vec<String>,
}

/// What is wrong with `payload` against the schema it names (empty: valid),
/// by the gateway's own check of the contract (`fitedge::contract`).
pub fn schema_problems(payload: &[u8]) -> Vec<String> {
    static SCHEMAS: std::sync::OnceLock<fitedge::contract::Schemas> = std::sync::OnceLock::new();
    SCHEMAS
        .get_or_init(fitedge::contract::Schemas::new)
        .check(payload)
        .1
}

/// A subscriber standing in for the platform, on its own thread and runtime
/// so it can serve blocking tests too.
pub struct Platform {
    pub received: Arc<Mutex<Received>>,
}

impl Platform {
    /// Subscribes to everything under `fitedge/` and waits for the SUBACK.
    pub fn subscribe(port: u16) -> Platform {
        let received: Arc<Mutex<Received>> = Arc::default();
        let sink = received.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let id = format!("platform-{}-{}", std::process::id(), fastrand::u32(..));
                let mut options = MqttOptions::new(id, "127.0.0.1", port);
                options
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(1 << 20, 1 << 20);
                let (client, mut eventloop) = AsyncClient::new(options, 64);
                let mut ready = Some(ready_tx);
                loop {
                    match eventloop.poll().await {
                        // (Re)subscribe on every connect: a restarted broker forgets us.
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            client.try_subscribe("fitedge/#", QoS::AtLeastOnce).unwrap();
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            sink.lock().unwrap().subacks += 1;
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let mut r = sink.lock().unwrap();
                            r.raw.push((p.topic.clone(), p.payload.to_vec()));
                            if p.topic.contains("/fhir/") {
                                // FHIR payloads: checked by tests/fhir.rs against FHIR's schema.
                                continue;
                            }
                            let problems = schema_problems(&p.payload);
                            if !problems.is_empty() {
                                let invalid = format!("{}: {}", p.topic, problems.join("; "));
                                r.invalid.push(invalid);
                            }
                            if p.topic.ends_with("/status") {
                                r.statuses.push(serde_json::from_slice(&p.payload).unwrap());
                            } else {
                                let record: Record = serde_json::from_slice(&p.payload)
                                    .unwrap_or_else(|e| {
                                        panic!("payload on {} is not a record: {e}", p.topic)
                                    });
                                r.records.push(record);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("platform subscribed");
        Platform { received }
    }

    /// Waits until `done` holds for what was received, or `within` passes.
    pub fn wait_until(&self, within: Duration, done: impl Fn(&Received) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done(&self.received.lock().unwrap()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done(&self.received.lock().unwrap())
    }

    pub fn records(&self) -> Vec<Record> {
        self.received.lock().unwrap().records.clone()
    }

    pub fn record_count(&self) -> usize {
        self.received.lock().unwrap().records.len()
    }

    /// Waits until nothing new has arrived for `quiet` (at most `within`).
    pub fn wait_quiet(&self, quiet: Duration, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = (self.record_count(), Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let count = self.record_count();
            if count != last.0 {
                last = (count, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return;
            }
        }
    }
}

impl Drop for Platform {
    /// Every payload the platform received matched its schema.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let invalid = std::mem::take(&mut self.received.lock().unwrap().invalid);
        assert!(
            invalid.is_empty(),
            "{} payload(s) do not match docs/schema: {}",
            invalid.len(),
            invalid
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Sequence numbers received, with duplicates counted.
pub fn seq_report(records: &[Record]) -> (BTreeSet<u64>, usize) {
    let mut seqs = BTreeSet::new();
    let mut ids = HashMap::new();
    let mut duplicates = 0;
    for r in records {
        if ids.insert(r.id.clone(), r.seq).is_some() {
            duplicates += 1;
        }
        seqs.insert(r.seq);
    }
    (seqs, duplicates)
}
