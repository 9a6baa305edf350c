//! Uplink: forwards the outbox to the platform broker with rumqttc, QoS 1.
//!
//! The outbox is the source of truth. The uplink publishes unacknowledged
//! records and acknowledges them in the outbox only on their PUBACK.
//! rumqttc forgets its own pending publishes when the broker has no session
//! for us, so after every CONNACK without a session everything
//! unacknowledged is published again from the outbox.
//!
//! - `state.rs`: the session's rules (in-flight window, live lane and paced
//!   backlog, what a CONNACK means), pure and unit-tested;
//! - `payload.rs`: topics and the payload encoder (stored records ->
//!   publishes, each with the set of records it carries); `fhir.rs`: the
//!   FHIR R4 encoder;
//! - this file: the I/O loop over rumqttc that drives both.
//!
//! With `[upstream.tls]` the connection is MQTT over TLS (rustls); a failed
//! handshake is reported by its cause ([`crate::tls::explain`]).
//!
//! The retained status topic says "online" on connect, carries a heartbeat
//! with the gateway's figures every `STATUS_EVERY`, and the last will says
//! "offline".

pub mod fhir;
pub mod payload;
pub mod state;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::Upstream;
use crate::outbox::{Outbox, Stored};
use crate::status::{Health, Stats};
pub use fhir::FhirObservations;
pub use payload::{record_topic, status_topic, Encoder, JsonRecords, Publish, SendClock, Topics};
use state::{Lane, Session};

/// How long a stopping uplink waits for outstanding PUBACKs.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often the retained status carries fresh figures.
pub const STATUS_EVERY: Duration = Duration::from_secs(60);

/// The retained status payload.
#[derive(Debug, Serialize)]
pub struct StatusMessage<'a> {
    /// `fitedge.status.v1` (`docs/schema/`).
    pub schema: &'static str,
    pub state: &'a str,
    pub gateway_id: &'a str,
    pub site_id: &'a str,
    pub version: &'a str,
    pub at: String,
    /// The figures, in heartbeats (absent from the last will).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// On the last will only: the connection's keep-alive. MQTT fixes a
    /// will's content at CONNECT, so `at` is the connect time; the broker
    /// sends the will once it has heard nothing for 1.5 keep-alives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub will_keep_alive_seconds: Option<u64>,
}

impl<'a> StatusMessage<'a> {
    pub fn new(state: &'a str, gateway_id: &'a str, site_id: &'a str) -> StatusMessage<'a> {
        StatusMessage {
            schema: STATUS_SCHEMA,
            state,
            gateway_id,
            site_id,
            version: env!("CARGO_PKG_VERSION"),
            at: crate::clock::now_rfc3339(),
            health: None,
            will_keep_alive_seconds: None,
        }
    }

    /// The last will as of now (its `at` is the connect time).
    pub fn will(topic: &str, gateway_id: &str, site_id: &str, keep_alive: Duration) -> LastWill {
        let mut will = StatusMessage::new("offline", gateway_id, site_id);
        will.will_keep_alive_seconds = Some(keep_alive.as_secs());
        LastWill::new(topic, will.to_json(), QoS::AtLeastOnce, true)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Schema id of the status payload; bump on incompatible changes.
pub const STATUS_SCHEMA: &str = "fitedge.status.v1";

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
    /// Turns stored records into publishes ([`JsonRecords`] by default).
    pub encoder: Arc<dyn Encoder>,
}

/// Forgets what rumqttc still holds from a session the broker no longer
/// has: its queued `Outgoing::Publish` events for publishes it never flushed
/// (they would pair with our new publishes) and any packet-id collision.
///
/// This is the one place that reaches into rumqttc's internals (the public
/// `EventLoop::state` fields `events` and `collision`, as of 0.25); a unit
/// test fails if an upgrade changes them.
pub fn forget_unsent_publishes(eventloop: &mut EventLoop) {
    eventloop
        .state
        .events
        .retain(|e| !matches!(e, Event::Outgoing(Outgoing::Publish(_))));
    eventloop.state.collision = None;
}

impl Uplink {
    /// Runs until `shutdown` is cancelled, then waits briefly for
    /// outstanding acknowledgements and says "offline".
    pub async fn run(mut self, shutdown: CancellationToken) {
        let u = self.upstream.clone();
        let topics = Topics {
            prefix: u.topic_prefix.clone(),
            site_id: self.site_id.clone(),
            gateway_id: self.gateway_id.clone(),
        };
        let status = topics.status();
        let mut options = MqttOptions::new(u.client_id.clone(), u.host.clone(), u.port);
        options
            .set_keep_alive(u.keep_alive)
            .set_clean_session(false)
            .set_inflight(u.inflight_window)
            .set_max_packet_size(self.max_record_bytes + 4096, self.max_record_bytes + 4096)
            .set_last_will(StatusMessage::will(
                &status,
                &self.gateway_id,
                &self.site_id,
                u.keep_alive,
            ));
        if let Some(user) = &u.username {
            options.set_credentials(user.clone(), u.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &u.tls {
            options.set_transport(tls.transport());
            let client_cert = tls.client_cert.map_or(0, |v| v.not_after);
            self.stats
                .uplink_client_cert_expires
                .store(client_cert, Relaxed);
        }
        let window = u.inflight_window as usize;
        let (client, mut eventloop) = AsyncClient::new(options, window * 2 + 8);
        let mut backoff = Backoff::new(u.reconnect_min, u.reconnect_max);
        let mut session = {
            let outbox = self.lock();
            Session::new(window, u.backlog_per_second, outbox.tail(), outbox.head())
        };
        let mut connected = false;
        let mut stop_by: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        let mut next_status = Instant::now() + STATUS_EVERY;

        // After a buffer read error, wait a moment before reading again.
        let mut hold_until: Option<Instant> = None;
        let mut writer_gone = false;
        loop {
            let held = hold_until.is_some_and(|t| Instant::now() < t);
            if connected && stop_by.is_none() && !held && !self.fill(&client, &mut session, &topics)
            {
                hold_until = Some(Instant::now() + Duration::from_secs(1));
            }
            if stop_by.is_some() && (!connected || session.in_flight() == 0) {
                break;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let deadline = stop_by.unwrap_or(far);
            let pace_at = match hold_until.filter(|t| Instant::now() < *t) {
                Some(t) => Some(t),
                None => session.pace_at().filter(|_| connected && stop_by.is_none()),
            };
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        connected = true;
                        last_error = None;
                        self.note_connected(&u);
                        backoff.reset();
                        self.stats.uplink_connected.store(true, Relaxed);
                        self.stats.uplink_connects.fetch_add(1, Relaxed);
                        self.stats.uplink_connected_since_ms.store(crate::clock::uptime_ms(), Relaxed);
                        let (tail, head, pending) = {
                            let outbox = self.lock();
                            (outbox.tail(), outbox.head(), outbox.pending())
                        };
                        let reconnect = session.connected(ack.session_present, tail, head);
                        self.stats.records_republished.fetch_add(reconnect.republished, Relaxed);
                        if reconnect.forget_unsent {
                            forget_unsent_publishes(&mut eventloop);
                        }
                        info!(message = "Connected to upstream broker.", host = %u.host, port = u.port, session_present = ack.session_present, backlog = pending);
                        self.publish_status(&client, &status, &mut session, "online");
                        next_status = Instant::now() + STATUS_EVERY;
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => session.sent(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let seqs = session.acked(ack.pkid);
                        if !seqs.is_empty() {
                            self.acknowledge(&seqs);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let text = crate::tls::describe(&e, u.tls.as_ref(), "[upstream.tls]");
                        if let Ok(mut last) = self.stats.uplink_error.lock() {
                            *last = Some(text.clone());
                        }
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
                        // The next CONNECT (at the next poll) carries a will
                        // stamped with its own time.
                        eventloop.mqtt_options.set_last_will(StatusMessage::will(
                            &status,
                            &self.gateway_id,
                            &self.site_id,
                            u.keep_alive,
                        ));
                    }
                },
                changed = self.appended.changed(), if stop_by.is_none() && !writer_gone => {
                    // The writer is gone (no sources): nothing new will
                    // arrive, but the backlog still goes out until shutdown.
                    writer_gone = changed.is_err();
                }
                _ = sleep_until(pace_at), if pace_at.is_some() => {}
                _ = tokio::time::sleep_until(next_status), if connected && stop_by.is_none() => {
                    self.publish_status(&client, &status, &mut session, "online");
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

    /// Clears the connect error and notes the broker certificate's expiry.
    fn note_connected(&self, u: &Upstream) {
        if let Ok(mut last) = self.stats.uplink_error.lock() {
            *last = None;
        }
        if let Some(at) = u.tls.as_ref().and_then(|t| t.server_expiry()) {
            self.stats.uplink_server_cert_expires.store(at, Relaxed);
        }
    }

    /// The gateway's figures for the status topic.
    pub fn health(&self) -> Health {
        let waiting = self.lock().waiting();
        crate::status::health(&self.stats, waiting)
    }

    /// Releases the records of one PUBACK in the outbox.
    fn acknowledge(&self, seqs: &[u64]) {
        self.stats
            .records_acked
            .fetch_add(seqs.len() as u64, Relaxed);
        self.stats
            .last_ack_uptime_ms
            .store(crate::clock::uptime_ms(), Relaxed);
        let mut outbox = self.lock();
        for &seq in seqs {
            if let Err(e) = outbox.ack(seq) {
                self.stats.buffer_errors.fetch_add(1, Relaxed);
                error!(message = "Could not release an acknowledged record.", error = %e, seq, stage = "buffer");
            }
        }
    }

    fn publish_status(
        &self,
        client: &AsyncClient,
        topic: &str,
        session: &mut Session,
        state: &str,
    ) {
        let mut message = StatusMessage::new(state, &self.gateway_id, &self.site_id);
        message.health = Some(self.health());
        if client
            .try_publish(topic, QoS::AtLeastOnce, true, message.to_json())
            .is_ok()
        {
            session.queued_status();
        }
    }

    /// Hands rumqttc the next publishes while the window has room: live
    /// records first, then as much backlog as the pace allows. `false` when
    /// the buffer could not be read.
    fn fill(&self, client: &AsyncClient, session: &mut Session, topics: &Topics) -> bool {
        if session.in_flight() == 0 {
            // Nothing in flight: whatever goes out now starts the clock the
            // watchdog's stall check measures from.
            self.stats
                .uplink_busy_since_ms
                .store(crate::clock::uptime_ms(), Relaxed);
        }
        let clock = SendClock::now();
        let room = session.room();
        if room == 0 {
            return true;
        }
        let live = match self.read(|outbox| outbox.read(session.live_from(), room)) {
            Ok(batch) => batch,
            Err(e) => {
                self.read_failed(e);
                return false;
            }
        };
        if !self.publish(client, session, topics, &clock, &live, Lane::Live) {
            return true;
        }
        let want = session.room();
        let Some((from, to, allowed)) = session.backlog_reads(want, Instant::now()) else {
            return true;
        };
        let backlog = match self.read(|outbox| outbox.read_range(from, to, allowed)) {
            Ok(batch) => batch,
            Err(e) => {
                self.read_failed(e);
                return false;
            }
        };
        let exhausted = backlog.len() < allowed;
        if self.publish(client, session, topics, &clock, &backlog, Lane::Backlog) && exhausted {
            session.backlog_done(); // the rest was acknowledged meanwhile
        }
        true
    }

    /// Encodes and hands over `records`; `false` when rumqttc's request
    /// queue filled before all of them were handed over.
    fn publish(
        &self,
        client: &AsyncClient,
        session: &mut Session,
        topics: &Topics,
        clock: &SendClock,
        records: &[Stored],
        lane: Lane,
    ) -> bool {
        for publish in self.encoder.encode(records, topics, clock) {
            if client
                .try_publish(publish.topic, QoS::AtLeastOnce, false, publish.payload)
                .is_err()
            {
                return false;
            }
            self.stats
                .records_published
                .fetch_add(publish.seqs.len() as u64, Relaxed);
            session.queued(publish.seqs, lane);
        }
        true
    }

    /// Reads from the outbox, keeping the count of quarantined slots.
    fn read(
        &self,
        read: impl FnOnce(&mut Outbox) -> Result<Vec<Stored>, crate::outbox::OutboxError>,
    ) -> Result<Vec<Stored>, crate::outbox::OutboxError> {
        let mut outbox = self.lock();
        let result = read(&mut outbox);
        self.stats
            .records_quarantined
            .store(outbox.quarantined(), Relaxed);
        result
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

    async fn next(eventloop: &mut EventLoop) -> Event {
        let poll = tokio::time::timeout(Duration::from_secs(5), eventloop.poll());
        poll.await.expect("an event in time").expect("connected")
    }

    /// What the uplink relies on in rumqttc: a connected event loop reports
    /// the events queued in `state.events` first, in order (so events left
    /// from a lost session would pair with new publishes), and
    /// `forget_unsent_publishes` drops the publish events among them and
    /// clears a packet-id collision.
    #[tokio::test]
    async fn queued_publish_events_are_what_poll_reports_and_can_be_forgotten() {
        let broker = crate::broker::start().expect("embedded broker");
        let (_client, mut eventloop) =
            AsyncClient::new(MqttOptions::new("probe", "127.0.0.1", broker.port), 8);
        while !matches!(
            next(&mut eventloop).await,
            Event::Incoming(Packet::ConnAck(_))
        ) {}
        let events = &mut eventloop.state.events;
        events.push_back(Event::Outgoing(Outgoing::Publish(3)));
        events.push_back(Event::Outgoing(Outgoing::PingReq));
        assert_eq!(
            next(&mut eventloop).await,
            Event::Outgoing(Outgoing::Publish(3)),
            "queued events come first"
        );
        eventloop
            .state
            .events
            .push_front(Event::Outgoing(Outgoing::Publish(4)));
        eventloop.state.collision =
            Some(rumqttc::Publish::new("t", QoS::AtLeastOnce, b"x".to_vec()));
        forget_unsent_publishes(&mut eventloop);
        assert!(eventloop.state.collision.is_none());
        assert_eq!(
            next(&mut eventloop).await,
            Event::Outgoing(Outgoing::PingReq),
            "the publish event is gone, the others stay"
        );
    }
}
