//! The [`Radio`] and [`Link`] traits on btleplug, which reaches BlueZ over
//! the system D-Bus. Everything Bluetooth-specific that can fail on a box
//! without Bluetooth (no D-Bus, no bluetoothd, no adapter, adapter off)
//! fails here, in [`Bluez::open`], with an error that says which.

use btleplug::api::{
    BDAddr, Central, CentralEvent, CentralState, CharPropFlags, Characteristic, Manager as _,
    Peripheral as _, ScanFilter,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures::stream::BoxStream;
use futures::StreamExt;
use uuid::Uuid;

use crate::gatt;

use super::ble::{Advert, BleError, CharInfo, Link, Notification, Radio};

/// How often a scanning adapter is checked for being still there and on.
const PROBE: Duration = Duration::from_secs(10);
/// Repeated advertisements of one peripheral are looked at this often.
const REPEAT: Duration = Duration::from_secs(2);
/// Peripherals whose last look is remembered for [`REPEAT`].
const REPEAT_MEMORY: usize = 1024;

/// Reaches BlueZ. It keeps its D-Bus connection across attempts: btleplug
/// runs each connection in a background task that outlives a dropped
/// manager, so a new connection per retry would pile up.
#[derive(Default)]
pub struct Connector {
    manager: tokio::sync::Mutex<Option<Manager>>,
}

impl Connector {
    /// The adapter named `name` (e.g. "hci0"), or the first one.
    pub async fn open(&self, name: Option<&str>) -> Result<Bluez, BleError> {
        let unavailable =
            |what: &str, e: btleplug::Error| BleError::Unavailable(format!("{what}: {e}"));
        let mut slot = self.manager.lock().await;
        let manager = match slot.take() {
            Some(m) => m,
            None => Manager::new()
                .await
                .map_err(|e| unavailable("cannot reach the system D-Bus", e))?,
        };
        let adapters = match manager.adapters().await {
            Ok(a) => a,
            Err(e) => {
                // bluetoothd missing: the connection is fine, keep it. Any
                // other failure may be a dead connection: start afresh.
                if e.to_string().contains("org.bluez") {
                    *slot = Some(manager);
                }
                return Err(unavailable("cannot reach bluetoothd", e));
            }
        };
        *slot = Some(manager);
        drop(slot);
        let mut chosen = None;
        for adapter in adapters {
            let info = adapter.adapter_info().await.unwrap_or_default();
            if name.is_none_or(|n| info.split_whitespace().next() == Some(n)) {
                chosen = Some(adapter);
                break;
            }
        }
        let adapter = chosen.ok_or_else(|| {
            BleError::Unavailable(match name {
                Some(n) => format!("no Bluetooth adapter named {n}"),
                None => "no Bluetooth adapter".into(),
            })
        })?;
        match adapter.adapter_state().await {
            Ok(CentralState::PoweredOn) => Ok(Bluez { adapter }),
            Ok(_) => Err(BleError::Unavailable(
                "the Bluetooth adapter is powered off (bluetoothctl power on)".into(),
            )),
            Err(e) => Err(unavailable("cannot read the adapter's state", e)),
        }
    }
}

/// A BlueZ adapter.
pub struct Bluez {
    adapter: Adapter,
}

impl Bluez {
    async fn peripheral(&self, address: &str) -> Result<Peripheral, BleError> {
        let wanted: BDAddr = address
            .parse()
            .map_err(|_| BleError::Link(format!("\"{address}\" is not a Bluetooth address")))?;
        let peripherals = self.adapter.peripherals().await.map_err(link_error)?;
        peripherals
            .into_iter()
            .find(|p| p.address() == wanted)
            .ok_or_else(|| BleError::Link(format!("{address} is no longer known to BlueZ")))
    }
}

fn link_error(e: btleplug::Error) -> BleError {
    BleError::Link(e.to_string())
}

/// What the scan stream carries before it becomes adverts.
enum Event {
    Central(CentralEvent),
    Probe { on: bool },
}

impl Event {
    fn adapter_lost(&self) -> bool {
        match self {
            Event::Central(CentralEvent::StateUpdate(s)) => *s != CentralState::PoweredOn,
            Event::Central(_) => false,
            Event::Probe { on } => !on,
        }
    }
}

/// Whether a repeat advertisement of `id` is worth a look now; remembers
/// at most [`REPEAT_MEMORY`] peripherals.
fn first_look<K: std::hash::Hash + Eq + Clone>(
    looked: &Mutex<HashMap<K, Instant>>,
    id: &K,
) -> bool {
    let mut looked = looked.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if looked
        .get(id)
        .is_some_and(|t| now.duration_since(*t) < REPEAT)
    {
        return false;
    }
    if looked.len() >= REPEAT_MEMORY {
        looked.retain(|_, t| now.duration_since(*t) < REPEAT);
        if looked.len() >= REPEAT_MEMORY {
            looked.clear();
        }
    }
    looked.insert(id.clone(), now);
    true
}

async fn advert(adapter: &Adapter, id: &PeripheralId) -> Option<Advert> {
    let peripheral = adapter.peripheral(id).await.ok()?;
    let p = peripheral.properties().await.ok()??;
    Some(Advert {
        address: p.address.to_string().to_uppercase(),
        name: p.local_name.or(p.advertisement_name),
        rssi: p.rssi,
        fitness_machines: p
            .service_data
            .get(&gatt::full_uuid(0x1826))
            .map(|data| gatt::fitness_machines(data))
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect(),
        services: p.services,
    })
}

impl Radio for Bluez {
    type Link = BluezLink;

    /// Advertisements, with each peripheral's repeats looked at no more
    /// than every [`REPEAT`]; ends when the adapter is off or gone (checked
    /// every [`PROBE`]: BlueZ sends nothing when a dongle is pulled).
    async fn scan(&self) -> Result<BoxStream<'static, Advert>, BleError> {
        let events = self
            .adapter
            .events()
            .await
            .map_err(|e| BleError::Unavailable(e.to_string()))?;
        self.adapter
            .start_scan(ScanFilter::default())
            .await
            .map_err(|e| BleError::Unavailable(format!("cannot start scanning: {e}")))?;
        // Events, and a probe of the adapter's state, in one stream that
        // ends at the first sign of the adapter being off or gone.
        let probed = self.adapter.clone();
        let probe = futures::stream::unfold((), move |()| {
            let adapter = probed.clone();
            async move {
                tokio::time::sleep(PROBE).await;
                let on = matches!(adapter.adapter_state().await, Ok(CentralState::PoweredOn));
                Some((Event::Probe { on }, ()))
            }
        });
        let events = events.map(Event::Central);
        let adapter = self.adapter.clone();
        let looked: Arc<Mutex<HashMap<PeripheralId, Instant>>> = Arc::default();
        let adverts = futures::stream::select(events, probe)
            .take_while(|e| std::future::ready(!e.adapter_lost()))
            .filter_map(move |event| {
                let (adapter, looked) = (adapter.clone(), looked.clone());
                async move {
                    let Event::Central(event) = event else {
                        return None;
                    };
                    let (id, repeat) = match event {
                        CentralEvent::DeviceDiscovered(id)
                        | CentralEvent::DeviceUpdated(id)
                        | CentralEvent::ServicesAdvertisement { id, .. } => (id, false),
                        CentralEvent::RssiUpdate { id, .. }
                        | CentralEvent::ManufacturerDataAdvertisement { id, .. }
                        | CentralEvent::ServiceDataAdvertisement { id, .. } => (id, true),
                        _ => return None,
                    };
                    if repeat && !first_look(&looked, &id) {
                        return None;
                    }
                    advert(&adapter, &id).await
                }
            });
        Ok(adverts.boxed())
    }

    async fn connect(&self, address: &str) -> Result<BluezLink, BleError> {
        let peripheral = self.peripheral(address).await?;
        if !peripheral.is_connected().await.unwrap_or(false) {
            peripheral.connect().await.map_err(link_error)?;
        }
        peripheral.discover_services().await.map_err(link_error)?;
        Ok(BluezLink { peripheral })
    }
}

/// A connected BlueZ peripheral.
pub struct BluezLink {
    peripheral: Peripheral,
}

impl BluezLink {
    fn characteristic(&self, uuid: Uuid) -> Result<Characteristic, BleError> {
        self.peripheral
            .characteristics()
            .into_iter()
            .find(|c| c.uuid == uuid)
            .ok_or_else(|| BleError::Link(format!("characteristic {uuid} vanished")))
    }
}

impl Link for BluezLink {
    fn characteristics(&self) -> Vec<CharInfo> {
        self.peripheral
            .characteristics()
            .into_iter()
            .map(|c| CharInfo {
                uuid: c.uuid,
                notifies: c
                    .properties
                    .intersects(CharPropFlags::NOTIFY | CharPropFlags::INDICATE),
                readable: c.properties.contains(CharPropFlags::READ),
            })
            .collect()
    }

    async fn read(&self, uuid: Uuid) -> Result<Vec<u8>, BleError> {
        let c = self.characteristic(uuid)?;
        self.peripheral.read(&c).await.map_err(link_error)
    }

    async fn subscribe(&self, uuid: Uuid) -> Result<(), BleError> {
        let c = self.characteristic(uuid)?;
        self.peripheral.subscribe(&c).await.map_err(link_error)
    }

    async fn notifications(&self) -> Result<BoxStream<'static, Notification>, BleError> {
        let stream = self.peripheral.notifications().await.map_err(link_error)?;
        Ok(stream.map(|n| (n.uuid, n.value)).boxed())
    }

    async fn is_connected(&self) -> bool {
        self.peripheral.is_connected().await.unwrap_or(false)
    }

    async fn disconnect(&self) {
        let _ = self.peripheral.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_adverts_are_looked_at_once_per_interval_in_bounded_memory() {
        let looked: Mutex<HashMap<String, Instant>> = Mutex::default();
        assert!(first_look(&looked, &"strap".to_string()));
        assert!(
            !first_look(&looked, &"strap".to_string()),
            "a repeat within the interval"
        );
        assert!(first_look(&looked, &"scale".to_string()));
        for i in 0..10 * REPEAT_MEMORY {
            first_look(&looked, &i.to_string());
            assert!(looked.lock().unwrap().len() <= REPEAT_MEMORY);
        }
    }
}
