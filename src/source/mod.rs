//! Sources: the I/O side of each device. A source owns its link (serial
//! port, ...), feeds the bytes it reads to the device's profile decoder, and
//! sends the resulting records on to the outbox writer. Serial devices
//! have a task each; LAN MQTT devices share one broker link, and Bluetooth
//! LE devices one adapter scan.
//!
//! Sources never give up: a missing or vanished device is retried with
//! backoff for as long as the gateway runs.

pub mod ble;
pub mod bluez;
pub mod mqtt;
pub mod poll;
pub mod serial;
pub mod usb;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::codec::hex;
use crate::profile::{DecodeContext, DeviceDecoder, Profile};
use crate::record::{Incoming, Measurement, Origin, Record};
use crate::status::DeviceStats;

/// Backoff between attempts to (re)open a device link.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: doubles up to `max`, with up to 25 % jitter so many
    /// devices (or gateways) do not retry in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(1.0 - fastrand::f64() * 0.25)
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// What a source needs to turn bytes into records.
pub struct DeviceContext {
    pub origin: Origin,
    /// The device's profile; a new value arrives when profiles are reloaded.
    pub profile: watch::Receiver<Profile>,
    pub decode: DecodeContext,
    pub stats: Arc<DeviceStats>,
    pub records: mpsc::Sender<Incoming>,
}

impl DeviceContext {
    /// A decoder for the current profile.
    pub fn decoder(&self) -> DeviceDecoder {
        DeviceDecoder::new(&self.profile.borrow(), self.decode.clone())
    }

    /// Decodes bytes just read and sends on every record they complete.
    /// Returns how many frames completed (good, bad or ignored), or `None`
    /// once the record channel is closed (gateway stopping).
    pub async fn ingest(&self, decoder: &mut DeviceDecoder, bytes: &[u8]) -> Option<usize> {
        use std::sync::atomic::Ordering::Relaxed;
        let outcomes = decoder.feed(bytes);
        let frames = outcomes.len();
        for outcome in outcomes {
            match outcome {
                Ok(measurement) => {
                    if !self.emit(measurement).await {
                        return None;
                    }
                }
                Err(failure) if failure.ignored => {}
                Err(failure) if failure.corrupt => self.reject(&failure.error, &failure.raw),
                Err(failure) => {
                    self.stats.frames_ignored.fetch_add(1, Relaxed);
                    debug!(message = "Frame ignored.", reason = %failure.error, hex = %hex(&failure.raw));
                }
            }
        }
        Some(frames)
    }

    /// Counts a decoded measurement and sends it on as a record; false
    /// once the record channel is closed (gateway stopping).
    pub async fn emit(&self, measurement: Measurement) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.frames_ok.fetch_add(1, Relaxed);
        let record = Record::new(&self.origin, measurement);
        self.stats.note_reading(&record);
        debug!(message = "Frame decoded.", record = %record.id);
        self.records.send(record.into()).await.is_ok()
    }

    /// Counts and logs a frame (or BLE value) that did not decode.
    pub fn reject(&self, error: &str, raw: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.frames_bad.fetch_add(1, Relaxed);
        self.stats.set_error(error);
        warn!(
            message = "Frame rejected.",
            error = %error,
            hex = %hex(raw),
            profile = %self.profile.borrow().id,
            stage = "decoding"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        for (d, base) in delays.iter().zip([100u128, 200, 400, 800, 800, 800]) {
            assert!(*d <= base && *d >= base * 3 / 4, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
