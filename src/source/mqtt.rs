//! LAN MQTT source: devices that publish on the site network (heart-rate
//! band hubs, Wi-Fi treadmills, camera counters). Either the gateway's own
//! broker serves them ([`super::lan_broker`]), or the gateway subscribes to
//! the site's broker.
//!
//! Each message's topic picks the device (first matching topic filter); its
//! payload is one frame for the device's profile. A hub with many bands is
//! one `[[device]]`: the band comes from a topic level or a payload field and
//! becomes part of the record's device id (`hub-1.band-07`).
//!
//! Delivery: either way a message is acknowledged only once its record is
//! durable in the outbox (or it was dropped as undecodable): the embedded
//! broker holds its PUBACK, and subscribing to the site's broker uses manual
//! acks in a persistent session. A gateway crash loses nothing a device or
//! the site broker was told it may forget.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Backoff, DeviceContext, Handover, LogLimit, Rejection};
use crate::config::{Lan, SubscribeLan};
use crate::record::InputKey;
use crate::status::Stats;

/// One configured MQTT device.
pub struct MqttDevice {
    pub ctx: DeviceContext,
    /// Topic filter (from the config, or the profile's `[match]`).
    pub filter: String,
    /// The embedded broker's account that may publish for it.
    pub account: String,
}

/// A device with its decoder, rebuilt only when its profile is reloaded.
struct Routed {
    device: MqttDevice,
    decoder: crate::profile::DeviceDecoder,
    topic_level: Option<usize>,
}

impl Routed {
    fn new(mut device: MqttDevice) -> Routed {
        let topic_level = device
            .ctx
            .profile
            .borrow_and_update()
            .matcher
            .device_topic_level;
        Routed {
            decoder: device.ctx.decoder(),
            topic_level,
            device,
        }
    }

    fn refresh(&mut self) {
        if self.device.ctx.profile.has_changed().unwrap_or(false) {
            let topic_level = self
                .device
                .ctx
                .profile
                .borrow_and_update()
                .matcher
                .device_topic_level;
            self.decoder = self.device.ctx.decoder();
            self.topic_level = topic_level;
        }
    }
}

/// Whether `topic` matches the MQTT `filter` (`+` one level, `#` the rest).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        match (f, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Routes and decodes messages; shared by both modes.
struct Router {
    devices: Vec<Routed>,
    stats: Arc<Stats>,
    unmatched_log: LogLimit,
}

/// What became of one message.
#[derive(Debug, PartialEq, Eq)]
enum Routing {
    /// Handed over as a record; `durable` completes once it is durable.
    Handed,
    /// From no device, or not decodable: counted and (rate-limited) logged.
    Dropped,
    /// The gateway is stopping.
    Closed,
}

impl Router {
    /// Decodes one message and hands it over as a record through its
    /// device, naming the hub's sub-device when the payload or topic says.
    /// `durable` completes once the record is durable, or at once for a
    /// message dropped (so that it is acknowledged and not sent again).
    /// `input` identifies a site broker's message for the outbox's ledger
    /// (none for the embedded broker: devices' packet ids repeat within a
    /// few messages, so a resend and a new reading of the same value cannot
    /// be told apart).
    async fn route(
        &mut self,
        topic: &str,
        payload: &[u8],
        input: Option<InputKey>,
        durable: oneshot::Sender<()>,
    ) -> Routing {
        let Some(routed) = self
            .devices
            .iter_mut()
            .find(|d| matches(&d.device.filter, topic))
        else {
            self.stats.lan_unmatched.fetch_add(1, Relaxed);
            if let Some(suppressed) = self.unmatched_log.allow() {
                warn!(
                    message = "MQTT message from no configured device; dropped.",
                    topic,
                    suppressed,
                    stage = "source"
                );
            }
            let _ = durable.send(());
            return Routing::Dropped;
        };
        routed.refresh();
        let ctx = &routed.device.ctx;
        match routed.decoder.decode_message(payload) {
            Ok(measurement) => {
                let sub_device = measurement.device.clone().or_else(|| {
                    routed
                        .topic_level
                        .and_then(|l| topic.split('/').nth(l))
                        .map(str::to_string)
                });
                let handover = Handover {
                    sub_device,
                    durable: Some(durable),
                    input,
                };
                match ctx.emit(measurement, handover).await {
                    true => Routing::Handed,
                    false => Routing::Closed,
                }
            }
            Err(failure) => {
                ctx.reject(Rejection {
                    error: &failure.error,
                    raw: payload,
                    corrupt: failure.corrupt,
                    routine: false,
                    at: Some(topic),
                });
                if !ctx.scan_rejected(&failure).await {
                    return Routing::Closed;
                }
                let _ = durable.send(());
                Routing::Dropped
            }
        }
    }
}

/// Runs the LAN side until `shutdown`.
pub async fn run(
    lan: Lan,
    devices: Vec<MqttDevice>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    if devices.is_empty() {
        return;
    }
    let acl = super::lan_broker::Acl::new(
        (devices.iter()).map(|d| (d.account.clone(), d.filter.clone())),
    );
    let devices = devices.into_iter().map(Routed::new).collect();
    let router = Router {
        devices,
        stats: stats.clone(),
        unmatched_log: LogLimit::new(Duration::from_secs(10)),
    };
    match lan {
        Lan::Embedded(embedded) => embedded_broker(embedded, acl, router, stats, shutdown).await,
        Lan::Subscribe(subscribe) => subscribe_broker(subscribe, router, shutdown).await,
    }
}

/// Serves the devices with the gateway's own broker ([`super::lan_broker`]):
/// its messages come to the router one at a time, and each is
/// acknowledged to its device once the router is finished with it.
async fn embedded_broker(
    lan: crate::config::EmbeddedLan,
    acl: super::lan_broker::Acl,
    mut router: Router,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    if let Some(tls) = &lan.tls {
        stats
            .lan_cert_expires
            .store(tls.validity.not_after, Relaxed);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<super::lan_broker::Inbound>(1024);
    let serving = {
        let (stats, shutdown) = (stats.clone(), shutdown.clone());
        tokio::spawn(async move {
            super::lan_broker::run(&lan, acl, tx, stats, shutdown).await;
        })
    };
    while let Some(message) = rx.recv().await {
        if router
            .route(&message.topic, &message.payload, None, message.done)
            .await
            == Routing::Closed
        {
            return;
        }
    }
    // Every sender is gone: the broker stopped, at shutdown or because it
    // could not start (its error is in the status).
    let _ = serving.await;
}

/// mosquitto's count of messages it dropped over its queue and in-flight
/// limits (all clients), updated every `sys_interval`.
const SITE_DROPPED: &str = "$SYS/broker/publish/messages/dropped";

/// What the gateway can tell about the site broker's settings: whether it
/// keeps the gateway's session, and whether it drops queued messages.
#[derive(Debug, Default)]
struct SiteBroker {
    connects: u64,
    dropped: Option<u64>,
}

impl SiteBroker {
    fn connected(&mut self, session_present: bool) {
        self.connects += 1;
        if self.connects > 1 && !session_present {
            warn!(
                message = "The site's MQTT broker kept no session for the gateway: messages for it while it was away are lost. Set `persistence true` (mosquitto) and a long session expiry; see docs/reliability.md.",
                stage = "source"
            );
        }
    }

    fn dropped(&mut self, payload: &[u8], stats: &Stats) {
        let Some(count) = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
        else {
            return;
        };
        stats.lan_site_dropped.store(count, Relaxed);
        if count > self.dropped.unwrap_or(0) {
            warn!(
                message = "The site's MQTT broker dropped messages over its queue or in-flight limits; readings queued for the gateway may be among them. Set `max_queued_messages 0` (mosquitto); see docs/reliability.md.",
                dropped_since_broker_start = count,
                stage = "source"
            );
        }
        self.dropped = Some(count);
    }
}

async fn subscribe_broker(lan: SubscribeLan, mut router: Router, shutdown: CancellationToken) {
    let mut options = MqttOptions::new(lan.client_id.clone(), lan.host.clone(), lan.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some(user) = &lan.username {
        options.set_credentials(user.clone(), lan.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &lan.tls {
        options.set_transport(tls.transport());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let filters: Vec<String> = router
        .devices
        .iter()
        .map(|d| d.device.filter.clone())
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_error = String::new();
    let mut site = SiteBroker::default();
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    last_error.clear();
                    info!(message = "Subscribed to the site's MQTT broker.", host = %lan.host, port = lan.port, session_present = ack.session_present);
                    site.connected(ack.session_present);
                    for filter in &filters {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    let _ = client.try_subscribe(SITE_DROPPED, QoS::AtMostOnce);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == SITE_DROPPED => {
                    site.dropped(&publish.payload, &router.stats);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let topic = publish.topic.clone();
                    let (done, durable) = oneshot::channel();
                    let input = InputKey::of(publish.pkid, &topic, &publish.payload, publish.dup);
                    match router.route(&topic, &publish.payload, Some(input), done).await {
                        // Acknowledged only once the record is durable.
                        Routing::Handed => {
                            let client = client.clone();
                            tokio::spawn(async move {
                                if durable.await.is_ok() {
                                    let _ = client.ack(&publish).await;
                                }
                            });
                        }
                        // Rejected messages are acknowledged, or they would come back forever.
                        Routing::Dropped => {
                            let _ = client.try_ack(&publish);
                        }
                        Routing::Closed => return,
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let text = crate::tls::describe(&e, lan.tls.as_ref(), "[lan.tls]");
                    if text != last_error {
                        warn!(message = "Cannot reach the site's MQTT broker; retrying.", host = %lan.host, port = lan.port, error = %text, stage = "source");
                        last_error = text;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            },
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::sanitize;

    #[test]
    fn topic_filters_match_like_mqtt() {
        assert!(matches("hub/+/hr", "hub/band-07/hr"));
        assert!(!matches("hub/+/hr", "hub/band-07/spo2"));
        assert!(!matches("hub/+/hr", "hub/band-07/hr/x"));
        assert!(matches("hub/#", "hub/band-07/hr"));
        assert!(matches("#", "anything/at/all"));
        assert!(!matches("hub/a", "hub"));
    }

    #[test]
    fn ids_from_devices_are_made_safe() {
        assert_eq!(sanitize("band 07/x#"), "band07x");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 48);
    }
}
