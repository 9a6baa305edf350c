//! Bluetooth LE devices: one scan shared by every BLE device, then per
//! device a loop of find, connect, subscribe, forward notifications through
//! the profile's GATT codecs, and reconnect with backoff when the link drops.
//!
//! The radio is reached through two small traits, [`Radio`] and [`Link`]:
//! [`super::bluez`] implements them on btleplug (BlueZ over D-Bus), and the
//! unit tests below drive reconnects and floods with a fake.
//!
//! Memory stays bounded whatever the air brings: the table of advertisers
//! holds at most [`MAX_SEEN`] peripherals, and each link queues at most
//! [`QUEUE`] notifications; beyond that notifications are dropped and
//! counted, never buffered without end.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use thiserror::Error;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};
use uuid::Uuid;

use super::{Backoff, DeviceContext, Handover, Rejection};
use crate::gatt::{self, GattDecoder};
use crate::profile::{DecodeSpec, Match, Profile};
use crate::status::Stats;

/// Peripherals remembered from advertisements; the one not heard from for
/// longest is forgotten first.
pub const MAX_SEEN: usize = 256;
/// Notifications queued per link before new ones are dropped.
pub const QUEUE: usize = 256;
/// How often a quiet link is checked for being still connected.
const LIVENESS: Duration = Duration::from_secs(2);
/// Connect and discover must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A scan or a link that lasted this long was healthy: backoff restarts.
const STABLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Error)]
pub enum BleError {
    #[error("Bluetooth is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Link(String),
}

/// What advertisements told of one peripheral.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Advert {
    /// The address, upper case with colons ("C0:11:22:33:44:01").
    pub address: String,
    pub name: Option<String>,
    pub rssi: Option<i16>,
    pub services: Vec<Uuid>,
    /// What a fitness machine advertises itself as (treadmill, rower, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fitness_machines: Vec<String>,
}

/// A characteristic the peripheral offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharInfo {
    pub uuid: Uuid,
    /// Notify or indicate.
    pub notifies: bool,
    pub readable: bool,
}

/// A notified or indicated value: the characteristic and its bytes.
pub type Notification = (Uuid, Vec<u8>);

/// A Bluetooth adapter.
pub trait Radio: Send + Sync + 'static {
    type Link: Link;
    /// Starts discovery. Advertisements arrive on the stream (repeats may
    /// be thinned out); it ends when the adapter is found gone or off.
    fn scan(&self) -> impl Future<Output = Result<BoxStream<'static, Advert>, BleError>> + Send;
    /// Connects to an advertised peripheral and discovers its services.
    fn connect(&self, address: &str) -> impl Future<Output = Result<Self::Link, BleError>> + Send;
}

/// A connection to one peripheral.
pub trait Link: Send + Sync + 'static {
    fn characteristics(&self) -> Vec<CharInfo>;
    fn read(&self, uuid: Uuid) -> impl Future<Output = Result<Vec<u8>, BleError>> + Send;
    fn subscribe(&self, uuid: Uuid) -> impl Future<Output = Result<(), BleError>> + Send;
    /// Values notified or indicated from now on.
    fn notifications(
        &self,
    ) -> impl Future<Output = Result<BoxStream<'static, Notification>, BleError>> + Send;
    fn is_connected(&self) -> impl Future<Output = bool> + Send;
    fn disconnect(&self) -> impl Future<Output = ()> + Send;
}

/// A BLE device of the config.
pub struct BleDevice {
    pub ctx: DeviceContext,
    /// The config's address, which takes precedence over the profile's.
    pub address: Option<String>,
}

/// Whether `advert` is the peripheral a device wants: the config's
/// `address` alone decides when given; otherwise every filter of the
/// profile's `matcher` must hold, and with none, nothing matches.
pub fn matches(matcher: &Match, address: Option<&str>, advert: &Advert) -> bool {
    if let Some(address) = address {
        return address.eq_ignore_ascii_case(&advert.address);
    }
    let address = matcher.ble_address.as_deref();
    if address.is_none()
        && matcher.ble_name.is_none()
        && matcher.ble_services.is_empty()
        && matcher.ble_fitness_machine.is_none()
    {
        return false;
    }
    let address_ok = address.is_none_or(|a| a.eq_ignore_ascii_case(&advert.address));
    let name_ok = matcher.ble_name.as_ref().is_none_or(|p| {
        advert
            .name
            .as_deref()
            .is_some_and(|name| p.0.is_match(name))
    });
    let services_ok = matcher
        .ble_services
        .iter()
        .all(|s| service_uuid(s).is_some_and(|wanted| advert.services.contains(&wanted)));
    let machine_ok = matcher
        .ble_fitness_machine
        .as_ref()
        .is_none_or(|m| advert.fitness_machines.contains(m));
    address_ok && name_ok && services_ok && machine_ok
}

/// A service UUID from "180d" or the 128-bit form.
pub fn service_uuid(text: &str) -> Option<Uuid> {
    match text.len() {
        4 => u16::from_str_radix(text, 16).ok().map(gatt::full_uuid),
        _ => Uuid::parse_str(text).ok(),
    }
}

/// The peripherals advertising now, shared by the scan and the devices.
#[derive(Default)]
pub struct Seen {
    table: Mutex<SeenTable>,
    changed: Notify,
}

#[derive(Default)]
struct SeenTable {
    /// By address: the advert and when it was last seen (a counter).
    adverts: BTreeMap<String, (Advert, u64)>,
    tick: u64,
    /// Addresses a device task holds.
    claimed: HashSet<String>,
}

impl Seen {
    /// Records an advertisement; wakes waiting devices when it is new or
    /// says something new.
    pub fn note(&self, advert: Advert) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.tick += 1;
        let tick = t.tick;
        let news = match t.adverts.get_mut(&advert.address) {
            Some((known, seen)) => {
                *seen = tick;
                // An advert may carry only some of the facts: keep the rest.
                let name = advert.name.or_else(|| known.name.clone());
                let services = if advert.services.is_empty() {
                    known.services.clone()
                } else {
                    advert.services
                };
                let news = name != known.name || services != known.services;
                known.name = name;
                known.services = services;
                if !advert.fitness_machines.is_empty() {
                    known.fitness_machines = advert.fitness_machines;
                }
                known.rssi = advert.rssi.or(known.rssi);
                news
            }
            None => {
                if t.adverts.len() >= MAX_SEEN {
                    let claimed = &t.claimed;
                    let oldest = t
                        .adverts
                        .iter()
                        .filter(|(a, _)| !claimed.contains(*a))
                        .min_by_key(|(_, (_, seen))| *seen)
                        .map(|(a, _)| a.clone());
                    if let Some(a) = oldest {
                        t.adverts.remove(&a);
                    }
                }
                t.adverts.insert(advert.address.clone(), (advert, tick));
                true
            }
        };
        drop(t);
        if news {
            self.changed.notify_waiters();
        }
    }

    /// Every peripheral in the table, strongest first.
    pub fn all(&self) -> Vec<Advert> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<Advert> = t.adverts.values().map(|(a, _)| a.clone()).collect();
        all.sort_by_key(|a| std::cmp::Reverse(a.rssi.unwrap_or(i16::MIN)));
        all
    }

    /// Claims the unclaimed peripheral `pick` accepts that was heard from
    /// last (a device gone since is not preferred over a present one).
    fn claim(&self, pick: impl Fn(&Advert) -> bool) -> Option<Advert> {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let found = t
            .adverts
            .values()
            .filter(|(a, _)| !t.claimed.contains(&a.address) && pick(a))
            .max_by_key(|(_, seen)| *seen)
            .map(|(a, _)| a.clone())?;
        t.claimed.insert(found.address.clone());
        Some(found)
    }

    fn release(&self, address: &str) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.claimed.remove(address);
    }

    /// Waits until a peripheral `pick` accepts is advertising, and claims it.
    async fn wait_claim(&self, pick: impl Fn(&Advert) -> bool) -> Advert {
        loop {
            let changed = self.changed.notified();
            if let Some(a) = self.claim(&pick) {
                return a;
            }
            // Re-check now and then: a claim released elsewhere wakes no one.
            let _ = tokio::time::timeout(Duration::from_secs(5), changed).await;
        }
    }
}

/// Runs every BLE device until `stop`. `open` reaches the adapter; while it
/// fails (no adapter, no bluetoothd, powered off) the devices report the
/// error and other sources carry on; it is retried with backoff.
pub async fn run<R, F, Fut>(
    open: F,
    devices: Vec<BleDevice>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) where
    R: Radio,
    F: Fn() -> Fut + Send,
    Fut: Future<Output = Result<R, BleError>> + Send,
{
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    let mut devices: Vec<Option<BleDevice>> = devices.into_iter().map(Some).collect();
    let mut reported: Option<String> = None;
    while !stop.is_cancelled() {
        let radio = match open().await {
            Ok(radio) => Arc::new(radio),
            Err(e) => {
                unavailable(&stats, &devices, &e, &mut reported);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        let stream = match radio.scan().await {
            Ok(s) => s,
            Err(e) => {
                unavailable(&stats, &devices, &e, &mut reported);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        if reported.take().is_some() {
            info!(message = "Bluetooth is available again; scanning.");
        } else {
            info!(
                message = "Scanning for Bluetooth LE devices.",
                devices = devices.len()
            );
        }
        set_unavailable(&stats, None);
        let scanning_since = tokio::time::Instant::now();
        let seen = Arc::new(Seen::default());
        let session = stop.child_token();
        let mut tasks = tokio::task::JoinSet::new();
        for slot in &mut devices {
            let Some(device) = slot.take() else { continue };
            let span = info_span!("device", id = %device.ctx.origin.device_id, transport = "ble");
            let task = run_device(radio.clone(), seen.clone(), device, session.clone());
            tasks.spawn(task.instrument(span));
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = scan(stream, &seen) => {
                let e = BleError::Unavailable("the adapter stopped scanning (removed or powered off)".into());
                warn!(message = "Bluetooth adapter lost; retrying.", error = %e);
            }
        }
        session.cancel();
        // Each device task hands its device back for the next session.
        let mut slot = devices.iter_mut();
        while let Some(done) = tasks.join_next().await {
            match (done, slot.next()) {
                (Ok(device), Some(s)) => *s = Some(device),
                (Err(e), _) => {
                    warn!(message = "A BLE device task failed; its device is stopped.", error = %e)
                }
                _ => {}
            }
        }
        devices.retain(Option::is_some);
        // An adapter that keeps failing at once is not hammered.
        if scanning_since.elapsed() > STABLE {
            backoff.reset();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn set_unavailable(stats: &Stats, why: Option<String>) {
    if let Ok(mut u) = stats.ble_unavailable.lock() {
        *u = why;
    }
}

fn unavailable(
    stats: &Stats,
    devices: &[Option<BleDevice>],
    e: &BleError,
    reported: &mut Option<String>,
) {
    let text = e.to_string();
    for d in devices.iter().flatten() {
        d.ctx.stats.connected.store(false, Relaxed);
        d.ctx.stats.set_error(text.clone());
    }
    set_unavailable(stats, Some(text.clone()));
    if reported.as_deref() != Some(&text) {
        warn!(
            message = "Bluetooth LE devices are unavailable; other devices carry on. Retrying.",
            error = %text,
            hint = "check that the adapter exists (hciconfig), bluetoothd runs and the adapter is powered"
        );
        *reported = Some(text);
    }
}

/// Feeds advertisements into the table until the stream ends.
async fn scan(mut stream: BoxStream<'static, Advert>, seen: &Seen) {
    while let Some(advert) = stream.next().await {
        seen.note(advert);
    }
}

/// One device's loop; returns the device when the session ends.
async fn run_device<R: Radio>(
    radio: Arc<R>,
    seen: Arc<Seen>,
    device: BleDevice,
    stop: CancellationToken,
) -> BleDevice {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut last_error: Option<String> = None;
    let ctx = &device.ctx;
    let mut profile = ctx.profile.clone();
    while !stop.is_cancelled() {
        let matcher = profile.borrow_and_update().matcher.clone();
        let address = device.address.clone();
        let advert = tokio::select! {
            _ = stop.cancelled() => break,
            // A reloaded profile may match other peripherals.
            Ok(()) = profile.changed() => continue,
            a = seen.wait_claim(|a| matches(&matcher, address.as_deref(), a)) => a,
        };
        // The session watches `stop` itself, so it can disconnect cleanly.
        let started = tokio::time::Instant::now();
        let outcome = session(&*radio, ctx, &advert, &stop).await;
        seen.release(&advert.address);
        ctx.stats.connected.store(false, Relaxed);
        match outcome {
            Ok(()) if stop.is_cancelled() => break,
            Ok(()) => {
                info!(message = "Peripheral disconnected; reconnecting.", address = %advert.address);
                // A link that keeps dropping at once is retried ever slower.
                if started.elapsed() > STABLE {
                    backoff.reset();
                }
            }
            Err(e) => {
                let text = e.to_string();
                ctx.stats.set_error(text.clone());
                if last_error.as_deref() != Some(&text) {
                    warn!(message = "Bluetooth LE link failed; retrying.", address = %advert.address, error = %text);
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    device
}

/// One connection: connect, subscribe, forward until the link drops.
async fn session<R: Radio>(
    radio: &R,
    ctx: &DeviceContext,
    advert: &Advert,
    stop: &CancellationToken,
) -> Result<(), BleError> {
    let profile: Profile = ctx.profile.borrow().clone();
    let DecodeSpec::Gatt(spec) = &profile.decode else {
        return Err(BleError::Link(format!(
            "profile {} is not a gatt profile; BLE devices need [decode] type = \"gatt\"",
            profile.id
        )));
    };
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, radio.connect(&advert.address));
    let link = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = connect => r.map_err(|_| BleError::Link(format!("connecting to {} timed out", advert.address)))??,
    };
    let result = forward(&link, ctx, spec, advert, stop).await;
    link.disconnect().await;
    result
}

async fn forward(
    link: &impl Link,
    ctx: &DeviceContext,
    spec: &gatt::Spec,
    advert: &Advert,
    stop: &CancellationToken,
) -> Result<(), BleError> {
    let chars = link.characteristics();
    let wanted = |c: &CharInfo| gatt::short_uuid(&c.uuid).and_then(|u| spec.codec_for(u));
    // Readable characteristics that describe the device (Weight Scale
    // Feature) are read once; their attributes go with every record.
    let mut context = BTreeMap::new();
    for c in chars.iter().filter(|c| c.readable && !c.notifies) {
        let Some(codec) = wanted(c) else { continue };
        let value = link.read(c.uuid).await?;
        match gatt::decode(codec, &value, &spec.options()) {
            Ok(d) => context.extend(d.attributes),
            Err(e) => {
                warn!(message = "Feature value rejected.", characteristic = %format!("{codec:04X}"), error = %e)
            }
        }
    }
    let subscribed: Vec<Uuid> = chars
        .iter()
        .filter(|c| c.notifies && wanted(c).is_some())
        .map(|c| c.uuid)
        .collect();
    if subscribed.is_empty() {
        return Err(BleError::Link(format!(
            "{} offers none of the characteristics profile {} decodes",
            advert.address,
            ctx.profile.borrow().id
        )));
    }
    let mut stream = link.notifications().await?;
    for uuid in &subscribed {
        link.subscribe(*uuid).await?;
    }
    ctx.stats.connected.store(true, Relaxed);
    info!(
        message = "Connected and subscribed.",
        address = %advert.address,
        name = advert.name.as_deref().unwrap_or(""),
        characteristics = %subscribed.iter().filter_map(gatt::short_uuid).map(|u| format!("{u:04X}")).collect::<Vec<_>>().join(",")
    );

    let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
    let stats = ctx.stats.clone();
    let reader = async move {
        let mut tick = tokio::time::interval(LIVENESS);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                n = stream.next() => match n {
                    Some(n) => {
                        if tx.try_send(n).is_err() {
                            stats.notifications_dropped.fetch_add(1, Relaxed);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => if !link.is_connected().await { break },
            }
        }
    };
    let mut decoder = GattDecoder::new(spec);
    let worker = async {
        while let Some((uuid, value)) = rx.recv().await {
            if !deliver(ctx, &mut decoder, uuid, &value, &context).await {
                break;
            }
        }
    };
    tokio::join!(reader, worker);
    Ok(())
}

/// Decodes one notification and sends the records it completes; false
/// once the gateway is stopping.
async fn deliver(
    ctx: &DeviceContext,
    decoder: &mut GattDecoder,
    uuid: Uuid,
    value: &[u8],
    context: &BTreeMap<String, serde_json::Value>,
) -> bool {
    let Some(short) = gatt::short_uuid(&uuid) else {
        return true;
    };
    match decoder.push(short, value) {
        Ok(measurements) => {
            for mut m in measurements {
                for (k, v) in context {
                    m.attributes.entry(k.clone()).or_insert_with(|| v.clone());
                }
                if !ctx.emit(m, Handover::default()).await {
                    return false;
                }
            }
        }
        Err(e) => ctx.reject(Rejection {
            error: &format!("characteristic {short:04X}: {e}"),
            raw: value,
            corrupt: true,
            routine: false,
            at: None,
        }),
    }
    true
}

#[cfg(test)]
mod tests;
