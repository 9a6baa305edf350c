//! The BLE source against a fake radio: matching, reconnect after a drop
//! mid-stream, notification floods, advertisement floods and an adapter
//! that is missing at first.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use tokio::sync::watch;

use super::*;
use crate::record::{Incoming, Origin, Record, Transport};

const PROFILE: &str = r#"
id = "strap"
name = "test strap"
[match]
ble_services = ["180d"]
ble_name = "^HRM"
[decode]
type = "gatt"
[[test]]
characteristic = "2A37"
hex = "0048"
values = { "vital.heart_rate" = 72.0 }
"#;

const HR: Uuid = Uuid::from_u128(0x0000_2a37_0000_1000_8000_0080_5f9b_34fb);
const BIKE: Uuid = Uuid::from_u128(0x0000_2ad2_0000_1000_8000_0080_5f9b_34fb);

fn strap(address: &str) -> Advert {
    Advert {
        address: address.into(),
        name: Some("HRM-Pro".into()),
        rssi: Some(-50),
        services: vec![gatt::full_uuid(0x180D)],
        fitness_machines: Vec::new(),
    }
}

/// A peripheral connection the test drives.
struct FakeLink {
    connected: Arc<AtomicBool>,
    notifications: Mutex<Option<mpsc::Receiver<Notification>>>,
}

impl Link for FakeLink {
    fn characteristics(&self) -> Vec<CharInfo> {
        [HR, BIKE]
            .into_iter()
            .map(|uuid| CharInfo {
                uuid,
                notifies: true,
                readable: false,
            })
            .collect()
    }
    async fn read(&self, _: Uuid) -> Result<Vec<u8>, BleError> {
        Err(BleError::Link("not readable".into()))
    }
    async fn subscribe(&self, _: Uuid) -> Result<(), BleError> {
        Ok(())
    }
    async fn notifications(&self) -> Result<BoxStream<'static, Notification>, BleError> {
        let rx = self
            .notifications
            .lock()
            .unwrap()
            .take()
            .expect("one stream");
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|n| (n, rx)) })
                .boxed(),
        )
    }
    async fn is_connected(&self) -> bool {
        self.connected.load(Relaxed)
    }
    async fn disconnect(&self) {
        self.connected.store(false, Relaxed);
    }
}

/// A connection's flag and notification sender, as the test holds them.
type FakeConnection = (Arc<AtomicBool>, mpsc::Sender<Notification>);

/// The test's side of the fake: adverts to send and live connections.
#[derive(Clone, Default)]
struct Air {
    adverts: Arc<Mutex<Option<mpsc::UnboundedReceiver<Advert>>>>,
    /// (connected flag, notification sender) per connect, in order.
    links: Arc<Mutex<Vec<FakeConnection>>>,
    connects: Arc<AtomicUsize>,
}

struct FakeRadio(Air);

impl Radio for FakeRadio {
    type Link = FakeLink;
    async fn scan(&self) -> Result<BoxStream<'static, Advert>, BleError> {
        let rx = self
            .0
            .adverts
            .lock()
            .unwrap()
            .take()
            .ok_or(BleError::Unavailable("gone".into()))?;
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|a| (a, rx)) })
                .boxed(),
        )
    }
    async fn connect(&self, _: &str) -> Result<FakeLink, BleError> {
        self.0.connects.fetch_add(1, Relaxed);
        let connected = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel(16);
        self.0.links.lock().unwrap().push((connected.clone(), tx));
        Ok(FakeLink {
            connected,
            notifications: Mutex::new(Some(rx)),
        })
    }
}

struct Rig {
    air: Air,
    adverts: mpsc::UnboundedSender<Advert>,
    records: mpsc::Receiver<Incoming>,
    stats: Arc<Stats>,
    device: Arc<crate::status::DeviceStats>,
    /// Sends a reloaded profile to the device.
    profile: watch::Sender<Profile>,
    stop: CancellationToken,
}

/// A strap device's context; its records arrive on the receiver, which
/// holds at most `capacity` before the source has to wait, and reloaded
/// profiles go through the sender.
fn strap_context(
    stats: &Stats,
    capacity: usize,
) -> (
    DeviceContext,
    mpsc::Receiver<Incoming>,
    watch::Sender<Profile>,
) {
    let profile = Profile::parse(Path::new("strap.toml"), PROFILE).expect("profile");
    let (profile_tx, profile_rx) = watch::channel(profile);
    let (records_tx, records) = mpsc::channel(capacity);
    let ctx = DeviceContext::new(
        Origin {
            gateway_id: "gw".into(),
            site_id: "site".into(),
            device_id: "strap-1".into(),
            profile_id: "strap".into(),
            transport: Transport::Ble,
        },
        profile_rx,
        crate::profile::DecodeContext::default(),
        stats.device("strap-1"),
        records_tx,
    );
    (ctx, records, profile_tx)
}

/// Runs the BLE source with one strap device on a fake radio.
fn rig(capacity: usize, address: Option<&str>) -> Rig {
    let stats = Arc::new(Stats::default());
    let (ctx, records, profile) = strap_context(&stats, capacity);
    let device = ctx.stats.clone();
    let air = Air::default();
    let (adverts, rx) = mpsc::unbounded_channel();
    *air.adverts.lock().unwrap() = Some(rx);
    let stop = CancellationToken::new();
    let devices = vec![BleDevice {
        ctx,
        address: address.map(str::to_string),
    }];
    let radio_air = air.clone();
    let open = move || {
        let air = radio_air.clone();
        async move { Ok(FakeRadio(air)) }
    };
    tokio::spawn(run(open, devices, stats.clone(), stop.clone()));
    Rig {
        air,
        adverts,
        records,
        stats,
        device,
        profile,
        stop,
    }
}

impl Rig {
    /// Waits (bounded) until the `n`th connection exists.
    async fn link(&self, n: usize) -> FakeConnection {
        for _ in 0..500 {
            if let Some(l) = self.air.links.lock().unwrap().get(n - 1) {
                if self.device.connected.load(Relaxed) {
                    return l.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("connection {n} never came");
    }

    async fn record(&mut self) -> Record {
        tokio::time::timeout(Duration::from_secs(10), self.records.recv())
            .await
            .expect("a record in time")
            .expect("source running")
            .record
    }
}

fn heart_rate(r: &Record) -> Option<f64> {
    r.value("vital.heart_rate").map(|v| v.value)
}

#[tokio::test(start_paused = true)]
async fn reconnects_after_a_drop_mid_stream_and_drops_the_partial_record() {
    let mut rig = rig(16, None);
    rig.adverts.send(strap("C0:11:22:33:44:01")).unwrap();
    let (connected, tx) = rig.link(1).await;
    tx.send((HR, vec![0x00, 72])).await.unwrap();
    let r = rig.record().await;
    assert_eq!(heart_rate(&r), Some(72.0));
    assert_eq!(r.transport, Transport::Ble);

    // The first part of a split bike record, then the link drops.
    tx.send((BIKE, vec![0x41, 0x00, 0xC8, 0x00])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    connected.store(false, Relaxed);
    drop(tx);

    let (_, tx) = rig.link(2).await;
    assert_eq!(rig.air.connects.load(Relaxed), 2);
    tx.send((BIKE, vec![0x00, 0x04, 0xD0, 0x07, 0x37]))
        .await
        .unwrap();
    let r = rig.record().await;
    assert_eq!(r.value("activity.speed").map(|v| v.value), Some(20.0));
    assert!(
        r.value("activity.power").is_none(),
        "the partial from before the drop is gone"
    );
    tx.send((HR, vec![0x00, 80])).await.unwrap();
    assert_eq!(heart_rate(&rig.record().await), Some(80.0));
    rig.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_link_that_goes_quiet_and_disconnected_is_noticed() {
    let rig = rig(16, None);
    rig.adverts.send(strap("C0:11:22:33:44:01")).unwrap();
    let (connected, _tx) = rig.link(1).await;
    // The stream stays open; only the connection state says it is gone.
    connected.store(false, Relaxed);
    rig.link(2).await;
    rig.stop.cancel();
}

#[tokio::test]
async fn a_notification_flood_is_bounded_and_counted() {
    let mut rig = rig(1, None);
    rig.adverts.send(strap("C0:11:22:33:44:01")).unwrap();
    let (_, tx) = rig.link(1).await;
    const SENT: usize = 20_000;
    for i in 0..SENT {
        tx.send((HR, vec![0x00, (i % 200) as u8 + 40]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nothing was read from `records` yet: at most the queue and the one
    // record in the channel (plus one in hand) can be held.
    let dropped = rig.device.notifications_dropped.load(Relaxed) as usize;
    assert!(dropped >= SENT - QUEUE - 2, "dropped {dropped}");
    let mut received = 0;
    while tokio::time::timeout(Duration::from_millis(300), rig.records.recv())
        .await
        .is_ok_and(|r| r.is_some())
    {
        received += 1;
    }
    assert_eq!(
        received + dropped,
        SENT,
        "every notification is delivered or counted"
    );
    // The link still works afterwards.
    tx.send((HR, vec![0x00, 99])).await.unwrap();
    assert_eq!(heart_rate(&rig.record().await), Some(99.0));
    assert!(rig.stats.snapshot().devices["strap-1"].notifications_dropped > 0);
    rig.stop.cancel();
}

#[test]
fn an_advertisement_flood_keeps_the_table_bounded() {
    let seen = Seen::default();
    for i in 0..20_000u32 {
        let mut a = strap(&format!(
            "C0:11:22:33:{:02X}:{:02X}",
            (i / 256) % 256,
            i % 256
        ));
        a.rssi = Some(-((i % 90) as i16));
        seen.note(a.clone());
        seen.note(a);
    }
    assert_eq!(seen.all().len(), MAX_SEEN);
    // A claimed peripheral is never the one forgotten.
    let claimed = seen.claim(|_| true).expect("one");
    for i in 0..1000u32 {
        seen.note(strap(&format!(
            "D0:00:00:00:{:02X}:{:02X}",
            i / 256,
            i % 256
        )));
    }
    assert!(seen.all().iter().any(|a| a.address == claimed.address));
}

#[test]
fn matching_needs_every_filter_given() {
    let profile = Profile::parse(Path::new("strap.toml"), PROFILE).expect("profile");
    let m = &profile.matcher;
    assert!(matches(m, None, &strap("C0:11:22:33:44:01")));
    let mut other_name = strap("C0:11:22:33:44:01");
    other_name.name = Some("Scale".into());
    assert!(!matches(m, None, &other_name));
    let mut no_service = strap("C0:11:22:33:44:01");
    no_service.services.clear();
    assert!(!matches(m, None, &no_service));
    assert!(matches(
        m,
        Some("c0:11:22:33:44:01"),
        &strap("C0:11:22:33:44:01")
    ));
    assert!(!matches(
        m,
        Some("C0:11:22:33:44:02"),
        &strap("C0:11:22:33:44:01")
    ));
    assert!(
        !matches(&Match::default(), None, &strap("C0:11:22:33:44:01")),
        "no filter, no match"
    );
}

#[test]
fn fitness_machines_are_told_apart_by_their_advertised_type() {
    let treadmill_only = Match {
        ble_services: vec!["1826".into()],
        ble_fitness_machine: Some("treadmill".into()),
        ..Match::default()
    };
    let mut machine = strap("C0:11:22:33:44:03");
    machine.services = vec![gatt::full_uuid(0x1826)];
    assert!(!matches(&treadmill_only, None, &machine), "type unknown");
    // Service data: available, type bits treadmill | rower.
    let types = gatt::fitness_machines(&[0x01, 0x11, 0x00]);
    assert_eq!(types, ["treadmill", "rower"]);
    machine.fitness_machines = types.iter().map(|t| t.to_string()).collect();
    assert!(matches(&treadmill_only, None, &machine));
    machine.fitness_machines = vec!["indoor_bike".into()];
    assert!(!matches(&treadmill_only, None, &machine));
    assert!(gatt::fitness_machines(&[0x01]).is_empty(), "short data");
}

#[tokio::test(start_paused = true)]
async fn the_configured_address_picks_the_peripheral() {
    let rig = rig(16, Some("C0:11:22:33:44:02"));
    // The first strap is not the configured one.
    rig.adverts.send(strap("C0:11:22:33:44:01")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig.air.connects.load(Relaxed), 0);
    rig.adverts.send(strap("C0:11:22:33:44:02")).unwrap();
    rig.link(1).await;
    rig.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_missing_adapter_is_reported_until_it_appears() {
    let stats = Arc::new(Stats::default());
    let (ctx, _records, _profile) = strap_context(&stats, 4);
    let device = ctx.stats.clone();
    let air = Air::default();
    let (_adverts, rx) = mpsc::unbounded_channel();
    *air.adverts.lock().unwrap() = Some(rx);
    let attempts = Arc::new(AtomicUsize::new(0));
    let open = {
        let (air, attempts) = (air.clone(), attempts.clone());
        move || {
            let air = air.clone();
            let n = attempts.fetch_add(1, Relaxed);
            async move {
                if n < 3 {
                    Err(BleError::Unavailable("no Bluetooth adapter".into()))
                } else {
                    Ok(FakeRadio(air))
                }
            }
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn(run(
        open,
        vec![BleDevice { ctx, address: None }],
        stats.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let why = stats.snapshot().ble_unavailable.expect("reported");
    assert!(why.contains("no Bluetooth adapter"), "{why}");
    assert!(device
        .last_error
        .lock()
        .unwrap()
        .as_deref()
        .is_some_and(|e| e.contains("unavailable")));
    for _ in 0..100 {
        if attempts.load(Relaxed) > 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        stats.snapshot().ble_unavailable,
        None,
        "cleared once the adapter is there"
    );
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_profile_reaches_a_device_still_waiting_for_a_peripheral() {
    let rig = rig(16, None);
    let scale_only = PROFILE.replace("^HRM", "^Scale");
    rig.profile
        .send(Profile::parse(Path::new("strap.toml"), &scale_only).expect("profile"))
        .unwrap();
    rig.adverts.send(strap("C0:11:22:33:44:01")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.air.connects.load(Relaxed),
        0,
        "the strap does not match"
    );
    // A reload that matches the strap is taken up without a new advert.
    rig.profile
        .send(Profile::parse(Path::new("strap.toml"), PROFILE).expect("profile"))
        .unwrap();
    rig.link(1).await;
    rig.stop.cancel();
}
