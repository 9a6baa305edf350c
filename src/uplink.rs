//! Uplink: forwards the outbox to the platform broker with rumqttc, QoS 1.
//!
//! The outbox is the source of truth. The uplink publishes unacknowledged
//! records in order, at most `inflight_window` at a time, and acknowledges a
//! record in the outbox only on its PUBACK. rumqttc forgets its own pending
//! publishes when the broker has no session for us, so after every CONNACK
//! without a session everything unacknowledged is published again from the
//! outbox. The retained status topic says "online"; the last will "offline".
//!
//! Packet ids: `publish()` does not return one, so the uplink keeps a FIFO of
//! the records it handed to rumqttc and pairs them with the ids as rumqttc
//! reports each outgoing publish. A publish rumqttc re-sends with an id that
//! is already in flight is a retransmission and pairs with nothing new.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Upstream;
use crate::outbox::Outbox;
use crate::source::Backoff;
use crate::status::Stats;

/// How long a stopping uplink waits for outstanding PUBACKs.
const STOP_GRACE: Duration = Duration::from_secs(3);

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
}

impl<'a> StatusMessage<'a> {
    pub fn new(state: &'a str, gateway_id: &'a str, site_id: &'a str) -> StatusMessage<'a> {
        StatusMessage {
            state,
            gateway_id,
            site_id,
            version: env!("CARGO_PKG_VERSION"),
            at: crate::clock::now_rfc3339(),
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

/// Publish bookkeeping, separate from I/O so the pairing rules are explicit.
#[derive(Debug, Default)]
struct Inflight {
    /// Handed to rumqttc, packet id not yet known. `None`: a status message.
    queued: VecDeque<Option<u64>>,
    /// Packet id -> record awaiting its PUBACK.
    by_pkid: HashMap<u16, Option<u64>>,
    /// Next sequence number to publish.
    cursor: u64,
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
    /// start again from the oldest unacknowledged record.
    fn restart_from(&mut self, tail: u64) {
        self.queued.clear();
        self.by_pkid.clear();
        self.cursor = tail;
    }
}

impl Uplink {
    /// Runs until `shutdown` is cancelled, then waits briefly for
    /// outstanding acknowledgements and says "offline".
    pub async fn run(mut self, shutdown: CancellationToken) {
        let u = &self.upstream;
        let status = status_topic(&u.topic_prefix, &self.site_id, &self.gateway_id);
        let mut options = MqttOptions::new(u.client_id.clone(), u.host.clone(), u.port);
        options
            .set_keep_alive(u.keep_alive)
            .set_clean_session(false)
            .set_inflight(u.inflight_window)
            .set_max_packet_size(self.max_record_bytes + 1024, self.max_record_bytes + 1024)
            .set_last_will(LastWill::new(
                &status,
                StatusMessage::new("offline", &self.gateway_id, &self.site_id).to_json(),
                QoS::AtLeastOnce,
                true,
            ));
        if let (Some(user), Some(password)) = (&u.username, &u.password) {
            options.set_credentials(user.clone(), password.clone());
        } else if let Some(user) = &u.username {
            options.set_credentials(user.clone(), "");
        }
        let window = u.inflight_window as usize;
        let (client, mut eventloop) = AsyncClient::new(options, window * 2 + 8);
        let mut backoff = Backoff::new(u.reconnect_min, u.reconnect_max);
        let mut inflight = Inflight {
            cursor: self.lock().tail(),
            ..Default::default()
        };
        let mut connected = false;
        let mut stop_by: Option<tokio::time::Instant> = None;
        let mut last_error: Option<String> = None;

        loop {
            if connected && stop_by.is_none() {
                self.fill(&client, &mut inflight, window);
            }
            if stop_by.is_some() && (!connected || inflight.len() == 0) {
                break;
            }
            let deadline =
                stop_by.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        connected = true;
                        last_error = None;
                        backoff.reset();
                        self.stats.uplink_connected.store(true, Relaxed);
                        self.stats.uplink_connects.fetch_add(1, Relaxed);
                        let tail = self.lock().tail();
                        if !ack.session_present {
                            let resend = inflight.cursor.saturating_sub(tail);
                            self.stats.records_republished.fetch_add(resend, Relaxed);
                            inflight.restart_from(tail);
                        }
                        info!(message = "Connected to upstream broker.", host = %u.host, port = u.port, session_present = ack.session_present, backlog = self.lock().pending());
                        let online = StatusMessage::new("online", &self.gateway_id, &self.site_id).to_json();
                        if client.try_publish(&status, QoS::AtLeastOnce, true, online).is_ok() {
                            inflight.queued.push_back(None);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => inflight.sent(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = inflight.acked(ack.pkid) {
                            self.stats.records_acked.fetch_add(1, Relaxed);
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
                changed = self.appended.changed(), if stop_by.is_none() => {
                    if changed.is_err() {
                        // The writer is gone: nothing new will arrive.
                        stop_by.get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
                    }
                }
                _ = shutdown.cancelled(), if stop_by.is_none() => {
                    stop_by = Some(tokio::time::Instant::now() + STOP_GRACE);
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

    /// Hands rumqttc the next records, keeping at most `window` in flight.
    fn fill(&self, client: &AsyncClient, inflight: &mut Inflight, window: usize) {
        let room = window.saturating_sub(inflight.len());
        if room == 0 {
            return;
        }
        let batch = match self.lock().read(inflight.cursor, room) {
            Ok(batch) => batch,
            Err(e) => {
                self.stats.buffer_errors.fetch_add(1, Relaxed);
                error!(message = "Could not read the buffer.", error = %e, stage = "buffer");
                return;
            }
        };
        for stored in batch {
            let topic = record_topic(
                &self.upstream.topic_prefix,
                &self.site_id,
                &self.gateway_id,
                &stored.device_id,
            );
            if client
                .try_publish(topic, QoS::AtLeastOnce, false, stored.payload)
                .is_err()
            {
                return; // request channel full; try again after the next event
            }
            inflight.queued.push_back(Some(stored.seq));
            inflight.cursor = stored.seq + 1;
            self.stats.records_published.fetch_add(1, Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
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
    fn a_lost_session_restarts_from_the_tail() {
        let mut f = Inflight {
            cursor: 50,
            ..Default::default()
        };
        f.queued.push_back(Some(49));
        f.by_pkid.insert(3, Some(48));
        f.restart_from(40);
        assert_eq!((f.cursor, f.len()), (40, 0));
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
