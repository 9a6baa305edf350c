//! Uplink: forwards the outbox to the platform broker with rumqttc, QoS 1.
//!
//! The outbox is the source of truth. The uplink publishes unacknowledged
//! records, at most `inflight_window` at a time, and acknowledges a record in
//! the outbox only on its PUBACK. rumqttc forgets its own pending publishes
//! when the broker has no session for us, so after every CONNACK without a
//! session everything unacknowledged is published again from the outbox.
//!
//! Two lanes: records accepted since the (re)connect go out at once (live);
//! the backlog from before goes out oldest first beside them, paced to
//! `backlog_per_second` so a week's backlog does not flood the platform.
//!
//! The retained status topic says "online" on connect, carries a heartbeat
//! with the gateway's figures every `STATUS_EVERY`, and the last will says
//! "offline".
//!
//! Packet ids: `publish()` does not return one, so the uplink keeps a FIFO of
//! the records it handed to rumqttc and pairs them with the ids as rumqttc
//! reports each outgoing publish. A publish rumqttc re-sends with an id that
//! is already in flight is a retransmission and pairs with nothing new.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::Stamp;
use crate::config::Upstream;
use crate::outbox::{Outbox, Stored};
use crate::source::Backoff;
use crate::status::{Health, Stats};

/// How long a stopping uplink waits for outstanding PUBACKs.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often the retained status carries fresh figures.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);

/// Topic of a device's records: `<prefix>/<site>/<gateway>/records/<device>`.
pub fn record_topic(prefix: &str, site: &str, gateway: &str, device: &str) -> String {
    format!("{prefix}/{site}/{gateway}/records/{device}")
}

/// Retained status topic: `<prefix>/<site>/<gateway>/status`.
pub fn status_topic(prefix: &str, site: &str, gateway: &str) -> String {
    format!("{prefix}/{site}/{gateway}/status")
}

/// The retained status payload.
#[derive(Debug, Serialize)]
pub struct StatusMessage<'a> {
    pub state: &'a str,
    pub gateway_id: &'a str,
    pub site_id: &'a str,
    pub version: &'a str,
    pub at: String,
    /// The figures, in heartbeats (absent from the last will).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl<'a> StatusMessage<'a> {
    pub fn new(state: &'a str, gateway_id: &'a str, site_id: &'a str) -> StatusMessage<'a> {
        StatusMessage {
            state,
            gateway_id,
            site_id,
            version: env!("CARGO_PKG_VERSION"),
            at: crate::clock::now_rfc3339(),
            health: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Everything the uplink task needs.
pub struct Uplink {
    pub upstream: Upstream,
    pub gateway_id: String,
    pub site_id: String,
    pub max_record_bytes: usize,
    pub outbox: Arc<Mutex<Outbox>>,
    /// Moves whenever the outbox head does.
    pub appended: watch::Receiver<u64>,
    pub stats: Arc<Stats>,
}

/// Publish bookkeeping, separate from I/O so the rules are explicit.
#[derive(Debug, Default)]
struct Inflight {
    /// Handed to rumqttc, packet id not yet known. `None`: a status message.
    queued: VecDeque<Option<u64>>,
    /// Packet id -> record awaiting its PUBACK.
    by_pkid: HashMap<u16, Option<u64>>,
    /// Backlog lane: next record to publish, and where the backlog ends.
    backlog_next: u64,
    backlog_end: u64,
    /// Live lane: next record at or after `backlog_end` to publish.
    live_next: u64,
}

impl Inflight {
    fn len(&self) -> usize {
        self.queued.len() + self.by_pkid.len()
    }

    /// rumqttc sent a publish with `pkid`.
    fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.by_pkid.contains_key(&pkid) {
            return; // QoS 0, or a retransmission of one already paired
        }
        if let Some(record) = self.queued.pop_front() {
            self.by_pkid.insert(pkid, record);
        }
    }

    /// A PUBACK arrived; the record it releases, if any.
    fn acked(&mut self, pkid: u16) -> Option<u64> {
        self.by_pkid.remove(&pkid).flatten()
    }

    /// The broker has no session: rumqttc dropped everything it held, so
    /// the backlog is everything unacknowledged, and live starts at `head`.
    fn restart(&mut self, tail: u64, head: u64) {
        self.queued.clear();
        self.by_pkid.clear();
        self.backlog_next = tail;
        self.backlog_end = head;
        self.live_next = head;
    }

    /// The broker kept our session: records not yet published join the
    /// paced backlog instead of going out at once.
    fn resume(&mut self, head: u64) {
        if !self.backlog_left() {
            self.backlog_next = self.live_next;
        }
        self.backlog_end = head.max(self.backlog_end);
        self.live_next = head.max(self.live_next);
    }

    fn backlog_left(&self) -> bool {
        self.backlog_next < self.backlog_end
    }
}

/// A token bucket pacing the backlog lane.
#[derive(Debug)]
struct Pace {
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl Pace {
    fn new(per_second: u32, now: Instant) -> Pace {
        Pace {
            per_second: per_second.max(1) as f64,
            tokens: 0.0,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.updated = now;
    }

    /// How many backlog records may go now, at most `want`.
    fn take(&mut self, want: usize, now: Instant) -> usize {
        self.refill(now);
        let n = (self.tokens.floor() as usize).min(want);
        self.tokens -= n as f64;
        n
    }

    /// When the next token is due.
    fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.updated + Duration::from_secs_f64(missing / self.per_second)
    }
}

const UNSYNCED: &[u8] = b"\"clock_synced\":false";

/// Rewrites `received_at` of a record taken while the clock was not yet
/// synchronized, now that it is: the wall time now minus the boot-clock time
/// elapsed since the outbox accepted it. `None` when nothing is to be done
/// (already synced, clock still unsynced, or taken in an earlier boot).
pub fn corrected_payload(
    stored: &Stored,
    now: &Stamp,
    now_wall: SystemTime,
    synced_now: bool,
) -> Option<Vec<u8>> {
    if !synced_now
        || !stored
            .payload
            .windows(UNSYNCED.len())
            .any(|w| w == UNSYNCED)
    {
        return None;
    }
    let elapsed = stored.stamp.elapsed_until(now)?;
    let mut value: serde_json::Value = serde_json::from_slice(&stored.payload).ok()?;
    let taken = now_wall.checked_sub(Duration::from_millis(elapsed))?;
    value["received_at"] = serde_json::Value::String(crate::clock::rfc3339(taken));
    value["time_corrected"] = serde_json::Value::Bool(true);
    serde_json::to_vec(&value).ok()
}

impl Uplink {
    /// Runs until `shutdown` is cancelled, then waits briefly for
    /// outstanding acknowledgements and says "offline".
    pub async fn run(mut self, shutdown: CancellationToken) {
        let u = self.upstream.clone();
        let status = status_topic(&u.topic_prefix, &self.site_id, &self.gateway_id);
        let mut options = MqttOptions::new(u.client_id.clone(), u.host.clone(), u.port);
        options
            .set_keep_alive(u.keep_alive)
            .set_clean_session(false)
            .set_inflight(u.inflight_window)
            .set_max_packet_size(self.max_record_bytes + 4096, self.max_record_bytes + 4096)
            .set_last_will(LastWill::new(
                &status,
                StatusMessage::new("offline", &self.gateway_id, &self.site_id).to_json(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &u.username {
            options.set_credentials(user.clone(), u.password.clone().unwrap_or_default());
        }
        let window = u.inflight_window as usize;
        let (client, mut eventloop) = AsyncClient::new(options, window * 2 + 8);
        let mut backoff = Backoff::new(u.reconnect_min, u.reconnect_max);
        let mut inflight = Inflight::default();
        {
            let outbox = self.lock();
            inflight.restart(outbox.tail(), outbox.head());
        }
        let mut pace = Pace::new(u.backlog_per_second, Instant::now());
        let mut connected = false;
        let mut stop_by: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        let mut next_status = Instant::now() + STATUS_EVERY;

        // After a buffer read error, wait a moment before reading again.
        let mut hold_until: Option<Instant> = None;
        let mut writer_gone = false;
        loop {
            let held = hold_until.is_some_and(|t| Instant::now() < t);
            if connected
                && stop_by.is_none()
                && !held
                && !self.fill(&client, &mut inflight, &mut pace, window)
            {
                hold_until = Some(Instant::now() + Duration::from_secs(1));
            }
            if stop_by.is_some() && (!connected || inflight.len() == 0) {
                break;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let deadline = stop_by.unwrap_or(far);
            let pace_at = match hold_until.filter(|t| Instant::now() < *t) {
                Some(t) => Some(t),
                None => (connected
                    && stop_by.is_none()
                    && inflight.backlog_left()
                    && inflight.len() < window)
                    .then(|| pace.next_at()),
            };
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        connected = true;
                        last_error = None;
                        backoff.reset();
                        self.stats.uplink_connected.store(true, Relaxed);
                        self.stats.uplink_connects.fetch_add(1, Relaxed);
                        self.stats.uplink_connected_since_ms.store(crate::clock::uptime_ms(), Relaxed);
                        let (tail, head, pending) = {
                            let outbox = self.lock();
                            (outbox.tail(), outbox.head(), outbox.pending())
                        };
                        if !ack.session_present {
                            let in_flight = inflight.queued.iter().chain(inflight.by_pkid.values()).flatten().count();
                            self.stats.records_republished.fetch_add(in_flight as u64, Relaxed);
                            inflight.restart(tail, head);
                            // rumqttc dropped its pending publishes, but events
                            // queued for ones it never flushed would still pair
                            // with our new publishes: drop them, and any
                            // packet-id collision left from the old session.
                            eventloop.state.events.retain(|e| !matches!(e, Event::Outgoing(Outgoing::Publish(_))));
                            eventloop.state.collision = None;
                        } else {
                            // The session survived (e.g. only our uplink was
                            // down): what piled up meanwhile is backlog too.
                            inflight.resume(head);
                        }
                        info!(message = "Connected to upstream broker.", host = %u.host, port = u.port, session_present = ack.session_present, backlog = pending);
                        self.publish_status(&client, &status, &mut inflight, "online");
                        next_status = Instant::now() + STATUS_EVERY;
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => inflight.sent(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = inflight.acked(ack.pkid) {
                            self.stats.records_acked.fetch_add(1, Relaxed);
                            self.stats.last_ack_uptime_ms.store(crate::clock::uptime_ms(), Relaxed);
                            if let Err(e) = self.lock().ack(seq) {
                                self.stats.buffer_errors.fetch_add(1, Relaxed);
                                error!(message = "Could not release an acknowledged record.", error = %e, seq, stage = "buffer");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let text = e.to_string();
                        if connected {
                            warn!(message = "Upstream connection lost; reconnecting.", error = %text, stage = "uplink");
                        } else if last_error.as_deref() != Some(text.as_str()) {
                            warn!(message = "Cannot reach upstream broker; retrying.", host = %u.host, port = u.port, error = %text, stage = "uplink");
                        }
                        last_error = Some(text);
                        connected = false;
                        self.stats.uplink_connected.store(false, Relaxed);
                        if stop_by.is_some() {
                            break;
                        }
                        let delay = backoff.next_delay();
                        debug!(message = "Waiting before reconnecting.", delay_ms = delay.as_millis() as u64);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                },
                changed = self.appended.changed(), if stop_by.is_none() && !writer_gone => {
                    // The writer is gone (no sources): nothing new will
                    // arrive, but the backlog still goes out until shutdown.
                    writer_gone = changed.is_err();
                }
                _ = sleep_until(pace_at), if pace_at.is_some() => {}
                _ = tokio::time::sleep_until(next_status), if connected && stop_by.is_none() => {
                    self.publish_status(&client, &status, &mut inflight, "online");
                    next_status = Instant::now() + STATUS_EVERY;
                }
                _ = shutdown.cancelled(), if stop_by.is_none() => {
                    stop_by = Some(Instant::now() + STOP_GRACE);
                }
                _ = tokio::time::sleep_until(deadline), if stop_by.is_some() => break,
            }
        }

        if connected {
            let offline = StatusMessage::new("offline", &self.gateway_id, &self.site_id).to_json();
            let _ = client.try_publish(&status, QoS::AtLeastOnce, true, offline);
            let _ = client.try_disconnect();
            // Let the event loop write the last packets; bounded.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = eventloop.poll().await {
                    if let Event::Outgoing(Outgoing::Disconnect) = event {
                        break;
                    }
                }
            })
            .await;
        }
        self.stats.uplink_connected.store(false, Relaxed);
        info!(
            message = "Uplink stopped.",
            unacknowledged = self.lock().pending()
        );
    }

    /// The gateway's figures for the status topic.
    pub fn health(&self) -> Health {
        crate::status::health(&self.stats, &self.outbox)
    }

    fn publish_status(
        &self,
        client: &AsyncClient,
        topic: &str,
        inflight: &mut Inflight,
        state: &str,
    ) {
        let mut message = StatusMessage::new(state, &self.gateway_id, &self.site_id);
        message.health = Some(self.health());
        if client
            .try_publish(topic, QoS::AtLeastOnce, true, message.to_json())
            .is_ok()
        {
            inflight.queued.push_back(None);
        }
    }

    /// Hands rumqttc the next records, keeping at most `window` in flight:
    /// live records first, then as much backlog as the pace allows.
    /// `false` when the buffer could not be read.
    fn fill(
        &self,
        client: &AsyncClient,
        inflight: &mut Inflight,
        pace: &mut Pace,
        window: usize,
    ) -> bool {
        let synced = crate::clock::is_synchronized();
        let (now, now_wall) = (Stamp::now(), SystemTime::now());
        if inflight.len() == 0 {
            // Nothing in flight: whatever goes out now starts the clock the
            // watchdog's stall check measures from.
            self.stats
                .uplink_busy_since_ms
                .store(crate::clock::uptime_ms(), Relaxed);
        }
        let room = window.saturating_sub(inflight.len());
        if room == 0 {
            return true;
        }
        let live = match self.lock().read(inflight.live_next, room) {
            Ok(batch) => batch,
            Err(e) => {
                self.read_failed(e);
                return false;
            }
        };
        let mut sent = 0;
        for stored in live {
            if !self.publish(client, &stored, synced, &now, now_wall) {
                return true;
            }
            inflight.queued.push_back(Some(stored.seq));
            inflight.live_next = stored.seq + 1;
            sent += 1;
        }
        if !inflight.backlog_left() {
            return true;
        }
        let allowed = pace.take(room - sent, Instant::now());
        if allowed == 0 {
            return true;
        }
        let backlog =
            match self
                .lock()
                .read_range(inflight.backlog_next, inflight.backlog_end, allowed)
            {
                Ok(batch) => batch,
                Err(e) => {
                    self.read_failed(e);
                    return false;
                }
            };
        let exhausted = backlog.len() < allowed;
        for stored in backlog {
            if !self.publish(client, &stored, synced, &now, now_wall) {
                return true;
            }
            inflight.queued.push_back(Some(stored.seq));
            inflight.backlog_next = stored.seq + 1;
        }
        if exhausted {
            inflight.backlog_next = inflight.backlog_end; // the rest was acknowledged meanwhile
        }
        true
    }

    /// Publishes one record; `false` when rumqttc's request queue is full.
    fn publish(
        &self,
        client: &AsyncClient,
        stored: &Stored,
        synced: bool,
        now: &Stamp,
        now_wall: SystemTime,
    ) -> bool {
        let topic = record_topic(
            &self.upstream.topic_prefix,
            &self.site_id,
            &self.gateway_id,
            &stored.device_id,
        );
        let payload = corrected_payload(stored, now, now_wall, synced)
            .unwrap_or_else(|| stored.payload.clone());
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            return false;
        }
        self.stats.records_published.fetch_add(1, Relaxed);
        true
    }

    fn read_failed(&self, e: crate::outbox::OutboxError) {
        self.stats.buffer_errors.fetch_add(1, Relaxed);
        error!(message = "Could not read the buffer.", error = %e, stage = "buffer");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_pair_with_records_in_publish_order() {
        let mut f = Inflight::default();
        f.queued.extend([None, Some(7), Some(8)]);
        f.sent(1);
        f.sent(2);
        f.sent(3);
        assert_eq!(f.acked(2), Some(7));
        assert_eq!(f.acked(1), None, "status message");
        assert_eq!(f.acked(2), None, "acknowledged once");
        assert_eq!(f.acked(3), Some(8));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_retransmission_with_a_pending_id_pairs_with_nothing_new() {
        let mut f = Inflight::default();
        f.queued.extend([Some(1), Some(2)]);
        f.sent(5);
        f.sent(5); // rumqttc re-sends pkid 5 after a session resume
        assert_eq!(f.queued.len(), 1);
        f.sent(6);
        assert_eq!((f.acked(5), f.acked(6)), (Some(1), Some(2)));
    }

    #[test]
    fn a_lost_session_makes_everything_unacknowledged_the_backlog() {
        let mut f = Inflight {
            live_next: 50,
            ..Default::default()
        };
        f.queued.push_back(Some(49));
        f.by_pkid.insert(3, Some(48));
        f.restart(40, 55);
        assert_eq!(
            (f.backlog_next, f.backlog_end, f.live_next, f.len()),
            (40, 55, 55, 0)
        );
        assert!(f.backlog_left());
    }

    #[test]
    fn a_resumed_session_turns_the_pile_up_into_backlog() {
        let mut f = Inflight::default();
        f.restart(0, 10); // 10 records from before, backlog 0..10
        f.backlog_next = 10; // all sent
        f.live_next = 12; // two live ones sent
        f.resume(50); // 38 piled up while the link was down
        assert_eq!((f.backlog_next, f.backlog_end, f.live_next), (12, 50, 50));
        f.backlog_next = 20;
        f.resume(60); // a backlog in progress is extended
        assert_eq!((f.backlog_next, f.backlog_end, f.live_next), (20, 60, 60));
    }

    #[test]
    fn the_backlog_pace_allows_its_rate() {
        let t0 = Instant::now();
        let mut p = Pace::new(10, t0);
        assert_eq!(p.take(100, t0), 0, "starts empty: no burst at connect");
        assert_eq!(p.take(100, t0 + Duration::from_millis(500)), 5);
        assert_eq!(
            p.take(100, t0 + Duration::from_secs(10)),
            10,
            "burst capped at one second's worth"
        );
        assert!(p.next_at() <= t0 + Duration::from_secs(10) + Duration::from_millis(100));
    }

    #[test]
    fn times_taken_before_clock_sync_are_corrected_from_the_boot_clock() {
        let boot = [7u8; 16];
        let payload =
            br#"{"seq":1,"received_at":"1970-01-01T00:00:05.000Z","clock_synced":false}"#.to_vec();
        let stored = Stored {
            seq: 1,
            stamp: Stamp {
                boot_id: boot,
                uptime_ms: 5_000,
            },
            device_id: "d".into(),
            payload,
        };
        let now = Stamp {
            boot_id: boot,
            uptime_ms: 65_000,
        };
        let wall = humantime::parse_rfc3339("2026-11-29T09:00:00Z").unwrap();
        let fixed: serde_json::Value =
            serde_json::from_slice(&corrected_payload(&stored, &now, wall, true).unwrap()).unwrap();
        assert_eq!(fixed["received_at"], "2026-11-29T08:59:00.000Z");
        assert_eq!(fixed["time_corrected"], true);
        assert_eq!(
            fixed["clock_synced"], false,
            "it still says the clock was not synchronized then"
        );
        assert!(
            corrected_payload(&stored, &now, wall, false).is_none(),
            "not while still unsynced"
        );
        let other_boot = Stamp {
            boot_id: [8; 16],
            uptime_ms: 65_000,
        };
        assert!(
            corrected_payload(&stored, &other_boot, wall, true).is_none(),
            "not across a reboot"
        );
        let synced = Stored {
            payload: br#"{"clock_synced":true}"#.to_vec(),
            ..stored
        };
        assert!(corrected_payload(&synced, &now, wall, true).is_none());
    }

    #[test]
    fn topics_follow_the_documented_scheme() {
        assert_eq!(
            record_topic("fitedge", "site-a", "gw-1", "grip-1"),
            "fitedge/site-a/gw-1/records/grip-1"
        );
        assert_eq!(
            status_topic("fitedge", "site-a", "gw-1"),
            "fitedge/site-a/gw-1/status"
        );
    }
}
