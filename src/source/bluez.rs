//! The [`Radio`] and [`Link`] traits on btleplug, which reaches BlueZ over
//! the system D-Bus. Everything Bluetooth-specific that can fail on a box
//! without Bluetooth (no D-Bus, no bluetoothd, no adapter, adapter off)
//! fails here, in [`Bluez::open`], with an error that says which.

use btleplug::api::{
    BDAddr, Central, CentralEvent, CentralState, CharPropFlags, Characteristic, Manager as _,
    Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager, Peripheral};
use futures::stream::BoxStream;
use futures::StreamExt;
use uuid::Uuid;

use super::ble::{Advert, BleError, CharInfo, Link, Notification, Radio};

/// A BlueZ adapter.
pub struct Bluez {
    adapter: Adapter,
}

impl Bluez {
    /// The adapter named `name` (e.g. "hci0"), or the first one.
    pub async fn open(name: Option<&str>) -> Result<Bluez, BleError> {
        let unavailable =
            |what: &str, e: btleplug::Error| BleError::Unavailable(format!("{what}: {e}"));
        let manager = Manager::new()
            .await
            .map_err(|e| unavailable("cannot reach the system D-Bus", e))?;
        let adapters = manager
            .adapters()
            .await
            .map_err(|e| unavailable("cannot reach bluetoothd", e))?;
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

async fn advert(adapter: &Adapter, id: &btleplug::platform::PeripheralId) -> Option<Advert> {
    let peripheral = adapter.peripheral(id).await.ok()?;
    let p = peripheral.properties().await.ok()??;
    Some(Advert {
        address: p.address.to_string().to_uppercase(),
        name: p.local_name.or(p.advertisement_name),
        rssi: p.rssi,
        services: p.services,
    })
}

impl Radio for Bluez {
    type Link = BluezLink;

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
        let adapter = self.adapter.clone();
        let adverts = events
            .take_while(|e| {
                std::future::ready(
                    !matches!(e, CentralEvent::StateUpdate(s) if *s != CentralState::PoweredOn),
                )
            })
            .filter_map(move |event| {
                let adapter = adapter.clone();
                async move {
                    match event {
                        CentralEvent::DeviceDiscovered(id)
                        | CentralEvent::DeviceUpdated(id)
                        | CentralEvent::ServicesAdvertisement { id, .. } => {
                            advert(&adapter, &id).await
                        }
                        _ => None,
                    }
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
