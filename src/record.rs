//! The record: one measurement event from one device, the one type every
//! stage after decoding shares (outbox, uplink, platform payload).
//!
//! The JSON form of [`Record`] is the payload the platform receives; it is
//! documented in `docs/mqtt-api.md` and versioned by [`SCHEMA`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Schema id carried in every payload; bump on incompatible changes.
pub const SCHEMA: &str = "fitedge.record.v1";

/// How a device is attached to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Serial,
    Ble,
    Mqtt,
    /// A keyboard-wedge scanner on an evdev input device.
    Input,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Serial => "serial",
            Transport::Ble => "ble",
            Transport::Mqtt => "mqtt",
            Transport::Input => "input",
        })
    }
}

/// Whether a value is plausible for its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Ok,
    /// Outside the vocabulary's plausible range: kept, never dropped.
    OutOfRange,
}

/// One normalized value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Metric id from the canonical vocabulary.
    pub metric: String,
    /// Value in the canonical unit.
    pub value: f64,
    /// Canonical UCUM unit of the metric.
    pub unit: String,
    pub quality: Quality,
    /// The number as the device sent it, before scale and conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_value: Option<f64>,
    /// The device's own unit, when it differs from the canonical one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_unit: Option<String>,
}

impl Reading {
    /// A plausible value in its canonical unit, as the device sent it.
    pub fn new(metric: &str, value: f64, unit: &str) -> Reading {
        Reading {
            metric: metric.into(),
            value,
            unit: unit.into(),
            quality: Quality::Ok,
            source_value: None,
            source_unit: None,
        }
    }
}

/// One measurement event, as stored in the outbox and sent upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    /// Globally unique id (ULID); the platform drops duplicates by it.
    pub id: String,
    /// Per-gateway sequence number, gap-free within one buffer epoch,
    /// assigned when the record is durably accepted by the outbox.
    pub seq: u64,
    /// The buffer's epoch (a ULID made with the buffer): a new epoch means
    /// `seq` started again (a new or replaced buffer), not a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    pub gateway_id: String,
    pub site_id: String,
    pub device_id: String,
    /// For a device behind a hub (`hr-hub-1.band-07`), the hub's configured
    /// id (`hr-hub-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_id: Option<String>,
    pub profile_id: String,
    pub transport: Transport,
    /// Who was measured, when known: a keyed pseudonym (`psn1:` and 64 hex
    /// digits), never the id itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_ref: Option<String>,
    /// The same subject under the previous site key, during a key
    /// changeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_ref_previous: Option<String>,
    /// The station the device belongs to, when it belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station_id: Option<String>,
    /// The station session the record belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// How a station device's reading got its subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
    /// The operator who ran the station (pseudonym), when one checked in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_ref: Option<String>,
    /// On the records that open and close a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionEvent>,
    /// The device's own timestamp, when the frame carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_time: Option<String>,
    /// Gateway receive time, RFC 3339 UTC.
    pub received_at: String,
    /// Whether the gateway clock was synchronized when the frame arrived.
    pub clock_synced: bool,
    /// Set when `received_at` was taken before the clock was synchronized
    /// and corrected from the boot clock at sending; never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_corrected: Option<bool>,
    pub values: Vec<Reading>,
    /// Metrics the device reported as "no data" (sentinels, NaN).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
    /// Extra device fields passed through unchanged (e.g. `side`, `attempt`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// The MQTT message the record came from, to recognise its
    /// redelivery; kept by the outbox's ledger, never in the record.
    #[serde(skip)]
    pub input: Option<InputKey>,
}

/// What identifies an MQTT message when the site's broker sends it again:
/// a digest of its packet id, topic and payload, and whether the broker
/// marked it as a resend (the DUP flag). A broker numbers the messages to
/// one client in sequence (mosquitto through 65,535), so the same id and
/// payload among the last records is the same message, while the same
/// payload under a new id is a reading of its own. The outbox's ledger holds
/// the digests of recent records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputKey {
    pub digest: [u8; 16],
    pub dup: bool,
}

impl InputKey {
    pub fn of(packet_id: u16, topic: &str, payload: &[u8], dup: bool) -> InputKey {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(packet_id.to_be_bytes());
        hash.update((topic.len() as u64).to_be_bytes());
        hash.update(topic.as_bytes());
        hash.update(payload);
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hash.finalize()[..16]);
        InputKey { digest, dup }
    }
}

/// Each metric at most once in a record: a later value of a metric (a
/// derived value, a later part of an assembled record) replaces the
/// earlier one in its place.
fn one_per_metric(values: Vec<Reading>) -> Vec<Reading> {
    let mut out: Vec<Reading> = Vec::with_capacity(values.len());
    for value in values {
        match out.iter_mut().find(|o| o.metric == value.metric) {
            Some(earlier) => *earlier = value,
            None => out.push(value),
        }
    }
    out
}

/// How a reading from a station's device got its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// From the session open on the station.
    Session,
    /// The device sent its own subject id.
    Device,
    /// No session was open: kept, with no subject.
    Unbound,
}

/// A session opening or closing, as carried by its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEvent {
    pub event: SessionEventKind,
    /// When the session opened (RFC 3339 UTC).
    pub opened_at: String,
    /// Why it closed (close records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CloseReason>,
    /// Readings bound to the session (close records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<u64>,
    /// For a rejected scan: what was wrong and the scan's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEventKind {
    Open,
    Close,
}

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The next person was scanned.
    NextScan,
    /// The reader sent its end-of-session frame.
    EndEvent,
    /// Nothing arrived for the station's idle timeout.
    IdleTimeout,
    /// A scan failed its check: the next readings are not this person's.
    RejectedScan,
}

/// What a frame says about a station's session rather than a measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum StationEvent {
    /// The profile's end-of-session frame.
    EndSession,
    /// A scan whose id failed its check: the problem's code and the scan's
    /// keyed fingerprint.
    ScanRejected {
        problem: &'static str,
        fingerprint: String,
    },
}

/// The decoded content of one frame, before the gateway stamps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    pub values: Vec<Reading>,
    pub absent: Vec<String>,
    /// The device behind a hub that sent it, when the profile says.
    pub device: Option<String>,
    pub subject_ref: Option<String>,
    pub subject_ref_previous: Option<String>,
    pub device_time: Option<String>,
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// Set on frames that open no measurement but steer a session.
    pub event: Option<StationEvent>,
}

/// A record on its way from a source to the outbox writer. `durable` is
/// completed once the outbox has decided on the record (stored durably, or
/// refused by its capacity policy), so a source can acknowledge upstream
/// devices only then.
#[derive(Debug)]
pub struct Incoming {
    pub record: Record,
    pub durable: Option<tokio::sync::oneshot::Sender<()>>,
    /// What the frame says about its station's session, for the binder;
    /// only devices in a station send one.
    pub event: Option<StationEvent>,
}

impl From<Record> for Incoming {
    fn from(record: Record) -> Self {
        Incoming {
            record,
            durable: None,
            event: None,
        }
    }
}

/// Who produced a record: the fields every record from one device shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub gateway_id: String,
    pub site_id: String,
    pub device_id: String,
    pub profile_id: String,
    pub transport: Transport,
}

impl Record {
    /// Stamps a decoded measurement with its origin and the receive time.
    /// `seq` stays 0 until the outbox accepts the record.
    pub fn new(origin: &Origin, measurement: Measurement) -> Record {
        Record {
            schema: SCHEMA.to_string(),
            id: ulid::Ulid::generate().to_string(),
            seq: 0,
            epoch: None,
            gateway_id: origin.gateway_id.clone(),
            site_id: origin.site_id.clone(),
            device_id: origin.device_id.clone(),
            hub_id: None,
            profile_id: origin.profile_id.clone(),
            transport: origin.transport,
            subject_ref: measurement.subject_ref,
            subject_ref_previous: measurement.subject_ref_previous,
            station_id: None,
            session_id: None,
            binding: None,
            operator_ref: None,
            session: None,
            device_time: measurement.device_time,
            received_at: crate::clock::now_rfc3339(),
            clock_synced: crate::clock::is_synchronized(),
            time_corrected: None,
            values: one_per_metric(measurement.values),
            absent: measurement.absent,
            attributes: measurement.attributes,
            input: None,
        }
    }

    /// The reading for `metric`, if the record has one.
    pub fn value(&self, metric: &str) -> Option<&Reading> {
        self.values.iter().find(|r| r.metric == metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_appears_at_most_once_and_the_later_value_wins() {
        let origin = Origin {
            gateway_id: "gw".into(),
            site_id: "site".into(),
            device_id: "dev".into(),
            profile_id: "p".into(),
            transport: Transport::Ble,
        };
        let reading = |metric: &str, value: f64| Reading::new(metric, value, "1");
        let m = Measurement {
            values: vec![
                reading("exercise.speed", 8.0),
                reading("vital.heart_rate", 120.0),
                reading("exercise.speed", 8.5),
            ],
            ..Default::default()
        };
        let record = Record::new(&origin, m);
        let got: Vec<(&str, f64)> = record
            .values
            .iter()
            .map(|r| (r.metric.as_str(), r.value))
            .collect();
        assert_eq!(
            got,
            vec![("exercise.speed", 8.5), ("vital.heart_rate", 120.0)]
        );
    }

    #[test]
    fn record_round_trips_through_json_and_ids_are_unique() {
        let origin = Origin {
            gateway_id: "gw".into(),
            site_id: "site".into(),
            device_id: "dev".into(),
            profile_id: "p".into(),
            transport: Transport::Serial,
        };
        let m = Measurement {
            values: vec![Reading {
                metric: "body.height".into(),
                value: 172.5,
                unit: "cm".into(),
                quality: Quality::Ok,
                source_value: None,
                source_unit: None,
            }],
            ..Default::default()
        };
        let a = Record::new(&origin, m.clone());
        let b = Record::new(&origin, m);
        assert_ne!(a.id, b.id);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"transport\":\"serial\""), "{json}");
        assert!(json.contains("\"quality\":\"ok\""), "{json}");
        assert!(
            !json.contains("subject_ref"),
            "absent fields are left out: {json}"
        );
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
