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
pub mod input;
pub mod lan_broker;
pub mod mqtt;
pub mod poll;
pub mod serial;

pub use crate::backoff::{Backoff, LogLimit};

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::codec::hex;
use crate::profile::{DecodeContext, DeviceDecoder, FrameFailure, Profile};
use crate::record::{Incoming, Measurement, Origin, Record, StationEvent};
use crate::status::DeviceStats;

/// What a source needs to turn bytes into records.
pub struct DeviceContext {
    pub origin: Origin,
    /// The device's profile; a new value arrives when profiles are reloaded.
    pub profile: watch::Receiver<Profile>,
    pub decode: DecodeContext,
    pub stats: Arc<DeviceStats>,
    pub records: mpsc::Sender<Incoming>,
    /// Whether the device belongs to a station: only then do its session
    /// events (an end frame, a rejected scan) go on to the binder.
    pub in_station: bool,
    /// Rejections are logged at most once per [`REJECT_LOG_EVERY`] for
    /// each kind: unexpected frames, corrupt frames.
    reject_log: Mutex<[LogLimit; 2]>,
}

/// How often a device's rejected frames are logged, at most.
pub const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a source adds when it hands over a decoded measurement.
#[derive(Debug, Default)]
pub struct Handover {
    /// The device behind a hub that sent it (e.g. a band on a hub's topic):
    /// the record's device id becomes `<device>.<sub>`.
    pub sub_device: Option<String>,
    /// Completed once the record is durable, for sources that acknowledge
    /// their devices only then.
    pub durable: Option<tokio::sync::oneshot::Sender<()>>,
    /// The MQTT message it came from (for recognising a redelivery).
    pub input: Option<crate::record::InputKey>,
}

/// A frame (or BLE value, or MQTT payload) that did not decode.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    pub error: &'a str,
    /// The bytes, as far as they are shown in the log (hex).
    pub raw: &'a [u8],
    /// Corrupt (counted as bad, kept as the device's last error) rather than
    /// simply not for this profile (counted as ignored).
    pub corrupt: bool,
    /// Frames a link carries as a matter of course that are not for this
    /// profile (other record types on a serial stream): when not corrupt,
    /// logged at debug only. Elsewhere an undecodable message is news.
    pub routine: bool,
    /// Where it came from, when a device has several places (a topic, a
    /// characteristic).
    pub at: Option<&'a str>,
}

impl DeviceContext {
    pub fn new(
        origin: Origin,
        profile: watch::Receiver<Profile>,
        decode: DecodeContext,
        stats: Arc<DeviceStats>,
        records: mpsc::Sender<Incoming>,
    ) -> DeviceContext {
        DeviceContext {
            origin,
            profile,
            decode,
            stats,
            records,
            in_station: false,
            reject_log: Mutex::new([
                LogLimit::new(REJECT_LOG_EVERY),
                LogLimit::new(REJECT_LOG_EVERY),
            ]),
        }
    }

    /// A decoder for the current profile.
    pub fn decoder(&self) -> DeviceDecoder {
        DeviceDecoder::new(&self.profile.borrow(), self.decode.clone())
    }

    /// Decodes bytes just read and hands over every record they complete.
    /// Returns how many frames completed (good, bad or ignored), or `None`
    /// once the record channel is closed (gateway stopping).
    pub async fn ingest(&self, decoder: &mut DeviceDecoder, bytes: &[u8]) -> Option<usize> {
        let outcomes = decoder.feed(bytes);
        let frames = outcomes.len();
        for outcome in outcomes {
            match outcome {
                Ok(measurement) => {
                    if !self.emit(measurement, Handover::default()).await {
                        return None;
                    }
                }
                Err(failure) if failure.ignored => {}
                Err(failure) => {
                    self.reject(Rejection {
                        error: &failure.error,
                        raw: &failure.raw,
                        corrupt: failure.corrupt,
                        routine: true,
                        at: None,
                    });
                    if !self.scan_rejected(&failure).await {
                        return None;
                    }
                }
            }
        }
        Some(frames)
    }

    /// A station reader's scan that failed its check ends the station's
    /// open session (so the next readings cannot land in the last person's
    /// record): tells the binder. `false` once the gateway is stopping.
    pub async fn scan_rejected(&self, failure: &FrameFailure) -> bool {
        let Some((problem, fingerprint)) = &failure.rejected_scan else {
            return true;
        };
        let event = StationEvent::ScanRejected {
            problem,
            fingerprint: fingerprint.clone(),
        };
        !self.in_station || self.send_event(event).await
    }

    async fn send_event(&self, event: StationEvent) -> bool {
        let incoming = Incoming {
            record: Record::new(&self.origin, Measurement::default()),
            durable: None,
            event: Some(event),
        };
        self.records.send(incoming).await.is_ok()
    }

    /// The one place a source hands over a decoded measurement: counts it,
    /// stamps it as a record and sends it on to the writer. `false` once the
    /// record channel is closed (gateway stopping).
    pub async fn emit(&self, mut measurement: Measurement, handover: Handover) -> bool {
        self.stats.frames_ok.fetch_add(1, Relaxed);
        if let Some(event) = measurement.event.take() {
            if !self.in_station {
                debug!(message = "Session frame from a device in no station; ignored.");
                return true;
            }
            let sent = self.send_event(event).await;
            // The event is handled once the binder has it.
            if let Some(done) = handover.durable {
                let _ = done.send(());
            }
            return sent;
        }
        let sub = handover
            .sub_device
            .map(|s| sanitize(&s))
            .filter(|s| !s.is_empty());
        let mut record = match sub {
            Some(sub) => {
                let mut origin = self.origin.clone();
                origin.device_id = format!("{}.{sub}", origin.device_id);
                let mut record = Record::new(&origin, measurement);
                record.hub_id = Some(self.origin.device_id.clone());
                record
            }
            None => Record::new(&self.origin, measurement),
        };
        record.input = handover.input;
        self.stats.note_reading(&record);
        debug!(message = "Frame decoded.", record = %record.id, device = %record.device_id);
        let incoming = Incoming {
            record,
            durable: handover.durable,
            event: None,
        };
        self.records.send(incoming).await.is_ok()
    }

    /// The one place a source reports what did not decode: counts it (bad
    /// or ignored) and logs it. Warnings come at most once per
    /// [`REJECT_LOG_EVERY`] for each kind (corrupt, unexpected), with a
    /// count of what was left out, and never carry the frame's bytes: those
    /// are shown at debug level only, and only for profiles whose frames
    /// name no one. A routine ignored frame is logged at debug only.
    pub fn reject(&self, rejection: Rejection<'_>) {
        let shown = match self.profile.borrow().carries_subject() {
            true => None,
            false => Some(&rejection.raw[..rejection.raw.len().min(MAX_LOGGED_BYTES)]),
        };
        if rejection.corrupt {
            self.stats.frames_bad.fetch_add(1, Relaxed);
            self.stats.set_error(rejection.error);
        } else {
            self.stats.frames_ignored.fetch_add(1, Relaxed);
        }
        if let Some(bytes) = shown {
            debug!(message = "Frame not decoded.", reason = %rejection.error, at = rejection.at, hex = %hex(bytes));
        }
        if rejection.routine && !rejection.corrupt {
            return;
        }
        let allowed = self.reject_log.lock().unwrap_or_else(|p| p.into_inner())
            [rejection.corrupt as usize]
            .allow();
        if let Some(suppressed) = allowed {
            warn!(
                message = match rejection.corrupt {
                    true => "Frame rejected.",
                    false => "Frame not for this profile.",
                },
                device = %self.origin.device_id,
                error = %rejection.error,
                at = rejection.at,
                bytes = rejection.raw.len(),
                profile = %self.profile.borrow().id,
                suppressed,
                stage = "decoding"
            );
        }
    }
}

/// Bytes of a rejected frame shown in the log, at most.
const MAX_LOGGED_BYTES: usize = 64;

/// A device id part made safe for ids and topics.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Transport;

    fn context() -> (DeviceContext, mpsc::Receiver<Incoming>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("device-profiles/grip-dynamometer-stx-etx.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let profile = Profile::parse(&path, &text).expect("catalogue profile");
        let (_profile_tx, profile_rx) = watch::channel(profile);
        let (tx, rx) = mpsc::channel(8);
        let origin = Origin {
            gateway_id: "gw".into(),
            site_id: "s".into(),
            device_id: "hub-1".into(),
            profile_id: "grip-dynamometer-stx-etx".into(),
            transport: Transport::Mqtt,
        };
        let stats = Arc::new(crate::status::Stats::default());
        (
            DeviceContext::new(
                origin,
                profile_rx,
                DecodeContext::default(),
                stats.device("hub-1"),
                tx,
            ),
            rx,
        )
    }

    #[tokio::test]
    async fn a_handover_names_the_sub_device_and_carries_the_durable_signal() {
        let (ctx, mut rx) = context();
        let (done, _durable) = tokio::sync::oneshot::channel();
        let handover = Handover {
            sub_device: Some("band 07/x".into()),
            durable: Some(done),
            input: None,
        };
        assert!(ctx.emit(Measurement::default(), handover).await);
        let incoming = rx.recv().await.unwrap();
        assert_eq!(incoming.record.device_id, "hub-1.band07x");
        assert!(incoming.durable.is_some());
        assert!(ctx.emit(Measurement::default(), Handover::default()).await);
        assert_eq!(rx.recv().await.unwrap().record.device_id, "hub-1");
        assert_eq!(ctx.stats.frames_ok.load(Relaxed), 2);
        drop(rx);
        assert!(
            !ctx.emit(Measurement::default(), Handover::default()).await,
            "false once the gateway stops"
        );
    }

    #[test]
    fn rejections_are_counted_each_and_logged_rate_limited() {
        let (ctx, _rx) = context();
        for n in 0..3 {
            ctx.reject(Rejection {
                error: &format!("bad checksum {n}"),
                raw: &[0x02, 0x41, 0x03],
                corrupt: true,
                routine: false,
                at: Some("bands/07"),
            });
        }
        ctx.reject(Rejection {
            error: "not for this profile",
            raw: b"x",
            corrupt: false,
            routine: true,
            at: None,
        });
        ctx.reject(Rejection {
            error: "no field matched",
            raw: b"{}",
            corrupt: false,
            routine: false,
            at: Some("bands/07"),
        });
        assert_eq!(ctx.stats.frames_bad.load(Relaxed), 3);
        assert_eq!(ctx.stats.frames_ignored.load(Relaxed), 2);
        assert_eq!(
            ctx.stats.last_error.lock().unwrap().as_deref(),
            Some("bad checksum 2")
        );
        let limits = ctx.reject_log.lock().unwrap();
        assert_eq!(
            (limits[1].suppressed(), limits[0].suppressed()),
            (2, 0),
            "one line for each kind: two bad left out and counted, the unexpected one logged, the routine one not"
        );
    }
}
