//! Payload encoders: stored records in, publishes out. A [`Publish`] is a
//! topic, the bytes and the set of sequence numbers it carries; the uplink
//! acknowledges every one of them in the outbox on its PUBACK.
//!
//! [`JsonRecords`] is the default and the format `docs/mqtt-api.md`
//! documents: one record per publish on its device's topic, the record's
//! JSON byte for byte as stored. A batch or FHIR format is one more encoder.
//!
//! Encoders are pure: no I/O, no logging.

use std::time::{Duration, SystemTime};

use crate::clock::Stamp;
use crate::outbox::Stored;
use crate::record::Record;

/// Topic of a device's records: `<prefix>/<site>/<gateway>/records/<device>`.
pub fn record_topic(prefix: &str, site: &str, gateway: &str, device: &str) -> String {
    format!("{prefix}/{site}/{gateway}/records/{device}")
}

/// Retained status topic: `<prefix>/<site>/<gateway>/status`.
pub fn status_topic(prefix: &str, site: &str, gateway: &str) -> String {
    format!("{prefix}/{site}/{gateway}/status")
}

/// One MQTT publish and the records it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Sequence numbers of the records in `payload`, ascending.
    pub seqs: Vec<u64>,
}

/// Where the records of one gateway are published.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prefix: String,
    pub site_id: String,
    pub gateway_id: String,
}

impl Topics {
    pub fn records(&self, device: &str) -> String {
        record_topic(&self.prefix, &self.site_id, &self.gateway_id, device)
    }

    pub fn status(&self) -> String {
        status_topic(&self.prefix, &self.site_id, &self.gateway_id)
    }
}

/// The clock at the moment of sending, for correcting times taken before
/// it was synchronized.
#[derive(Debug, Clone)]
pub struct SendClock {
    pub now: Stamp,
    pub wall: SystemTime,
    pub synced: bool,
}

impl SendClock {
    pub fn now() -> SendClock {
        SendClock {
            now: Stamp::now(),
            wall: SystemTime::now(),
            synced: crate::clock::is_synchronized(),
        }
    }
}

/// Turns stored records (ascending `seq`) into publishes.
///
/// Contract: every input record is in exactly one publish, and publishes
/// come in `seq` order (every seq of a publish is below every seq of the
/// next), so a caller that could hand over only the first publishes knows
/// the rest are still to go.
pub trait Encoder: Send + Sync {
    fn encode(&self, records: &[Stored], topics: &Topics, clock: &SendClock) -> Vec<Publish>;
}

/// One record per publish, as JSON, on the device's topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonRecords;

impl Encoder for JsonRecords {
    fn encode(&self, records: &[Stored], topics: &Topics, clock: &SendClock) -> Vec<Publish> {
        one_per_record(records, clock, |record| {
            let payload = serde_json::to_vec(record).unwrap_or_default();
            (topics.records(&record.device_id), payload)
        })
    }
}

/// One publish per record, as it may leave the box (time corrected, no
/// subject that is not a pseudonym): `make` gives its topic and payload.
pub fn one_per_record(
    records: &[Stored],
    clock: &SendClock,
    make: impl Fn(&Record) -> (String, Vec<u8>),
) -> Vec<Publish> {
    records
        .iter()
        .map(|stored| {
            let corrected = corrected(stored, clock);
            let record = corrected.as_ref().unwrap_or(&stored.record);
            let withheld = without_raw_subjects(record);
            let (topic, payload) = make(withheld.as_ref().unwrap_or(record));
            Publish {
                topic,
                payload,
                seqs: vec![stored.seq],
            }
        })
        .collect()
}

/// A record whose subject fields hold something other than a pseudonym
/// (records an older version buffered before subjects were pseudonymized),
/// with those fields left out and the attribute `subject_withheld`: a raw
/// id never leaves the box. `None` when there is nothing to withhold.
pub fn without_raw_subjects(record: &Record) -> Option<Record> {
    let raw = |s: &Option<String>| {
        s.as_deref()
            .is_some_and(|s| !crate::identity::is_pseudonym(s))
    };
    if !raw(&record.subject_ref) && !raw(&record.subject_ref_previous) && !raw(&record.operator_ref)
    {
        return None;
    }
    let mut record = record.clone();
    for field in [
        &mut record.subject_ref,
        &mut record.subject_ref_previous,
        &mut record.operator_ref,
    ] {
        if raw(field) {
            *field = None;
        }
    }
    record
        .attributes
        .insert("subject_withheld".into(), serde_json::Value::Bool(true));
    Some(record)
}

/// A record taken while the clock was not yet synchronized, with its
/// `received_at` rewritten now that it is: the wall time now minus the
/// boot-clock time elapsed since the outbox accepted it. `None` when nothing
/// is to be done (already synced, clock still unsynced, or taken in an
/// earlier boot).
pub fn corrected(stored: &Stored, clock: &SendClock) -> Option<Record> {
    if !clock.synced || stored.record.clock_synced {
        return None;
    }
    let elapsed = stored.stamp.elapsed_until(&clock.now)?;
    let taken = clock.wall.checked_sub(Duration::from_millis(elapsed))?;
    let mut record = stored.record.clone();
    record.received_at = crate::clock::rfc3339(taken);
    record.time_corrected = Some(true);
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Measurement, Origin, Transport};

    #[test]
    fn a_subject_that_is_not_a_pseudonym_never_leaves() {
        let mut s = stored(0, "dev", 0);
        let pseudonym = format!("psn1:{}", "a1".repeat(32));
        s.record.subject_ref = Some("110101199003071234".into());
        s.record.operator_ref = Some(pseudonym.clone());
        let topics = Topics {
            prefix: "fitedge".into(),
            site_id: "site-a".into(),
            gateway_id: "gw-1".into(),
        };
        for encoder in [
            &JsonRecords as &dyn Encoder,
            &crate::uplink::FhirObservations,
        ] {
            let publish = &encoder.encode(std::slice::from_ref(&s), &topics, &SendClock::now())[0];
            let text = String::from_utf8_lossy(&publish.payload);
            assert!(!text.contains("110101199003071234"), "{text}");
        }
        let sent = without_raw_subjects(&s.record).unwrap();
        assert_eq!(sent.subject_ref, None);
        assert_eq!(sent.operator_ref, Some(pseudonym), "a pseudonym stays");
        assert_eq!(sent.attributes["subject_withheld"], true);
        s.record.subject_ref = None;
        assert!(without_raw_subjects(&s.record).is_none());
    }

    fn stored(seq: u64, device: &str, uptime_ms: u64) -> Stored {
        let origin = Origin {
            gateway_id: "gw-1".into(),
            site_id: "site-a".into(),
            device_id: device.into(),
            profile_id: "p".into(),
            transport: Transport::Serial,
        };
        let mut record = Record::new(&origin, Measurement::default());
        record.seq = seq;
        record.clock_synced = false;
        record.received_at = "1970-01-01T00:00:05.000Z".into();
        Stored {
            seq,
            stamp: Stamp {
                boot_id: [7; 16],
                uptime_ms,
            },
            record,
        }
    }

    fn topics() -> Topics {
        Topics {
            prefix: "fitedge".into(),
            site_id: "site-a".into(),
            gateway_id: "gw-1".into(),
        }
    }

    fn unsynced_clock() -> SendClock {
        SendClock {
            now: Stamp {
                boot_id: [7; 16],
                uptime_ms: 65_000,
            },
            wall: SystemTime::UNIX_EPOCH,
            synced: false,
        }
    }

    #[test]
    fn json_records_go_one_per_publish_on_their_device_topic() {
        let records = [stored(4, "grip-1", 5_000), stored(5, "scale-2", 5_000)];
        let out = JsonRecords.encode(&records, &topics(), &unsynced_clock());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].topic, "fitedge/site-a/gw-1/records/grip-1");
        assert_eq!(out[1].topic, "fitedge/site-a/gw-1/records/scale-2");
        assert_eq!(out[0].seqs, vec![4]);
        assert_eq!(out[1].seqs, vec![5]);
    }

    #[test]
    fn a_published_record_is_byte_for_byte_what_the_outbox_stored() {
        use crate::config::FullPolicy;
        use crate::outbox::{export, Outbox, OutboxOptions};
        let dir = tempfile::tempdir().unwrap();
        let options = OutboxOptions {
            max_records: 16,
            max_record_bytes: 4096,
            full_policy: FullPolicy::DropOldest,
            cache_bytes: 1 << 20,
            max_bytes: None,
            max_age: None,
        };
        let mut record = stored(0, "treadmill-1", 5_000).record;
        record.clock_synced = true;
        // Numbers whose shortest form a lossy float parse would change.
        for (i, raw) in [99_999.0, 12_345.0, 777.0].iter().enumerate() {
            record
                .attributes
                .insert(format!("a{i}"), serde_json::json!(raw * 0.1));
        }
        record.values.push(crate::record::Reading {
            metric: "activity.distance".into(),
            value: 9_999.900_000_000_001,
            unit: "m".into(),
            quality: crate::record::Quality::Ok,
            source_value: Some(0.1 + 0.2),
            source_unit: None,
        });
        let payload = {
            let mut outbox = Outbox::open(dir.path(), options).unwrap();
            outbox.append(&mut [record]).unwrap();
            let read = outbox.read(0, 1).unwrap();
            let mut out = JsonRecords.encode(&read, &topics(), &SendClock::now());
            out.remove(0).payload
        };
        let mut exported = Vec::new();
        export(dir.path(), &mut exported).unwrap();
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            String::from_utf8(exported).unwrap().trim_end(),
            "the stored JSON, unchanged"
        );
    }

    #[test]
    fn times_taken_before_clock_sync_are_corrected_from_the_boot_clock() {
        let record = stored(1, "d", 5_000);
        let wall = humantime::parse_rfc3339("2026-11-29T09:00:00Z").unwrap();
        let clock = SendClock {
            wall,
            synced: true,
            ..unsynced_clock()
        };
        let out = JsonRecords.encode(std::slice::from_ref(&record), &topics(), &clock);
        let fixed: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(fixed["received_at"], "2026-11-29T08:59:00.000Z");
        assert_eq!(fixed["time_corrected"], true);
        assert_eq!(
            fixed["clock_synced"], false,
            "it still says the clock was not synchronized then"
        );
        assert!(
            corrected(&record, &unsynced_clock()).is_none(),
            "not while still unsynced"
        );
        let other_boot = SendClock {
            now: Stamp {
                boot_id: [8; 16],
                uptime_ms: 65_000,
            },
            ..clock.clone()
        };
        assert!(
            corrected(&record, &other_boot).is_none(),
            "not across a reboot"
        );
        let mut synced = record.clone();
        synced.record.clock_synced = true;
        assert!(corrected(&synced, &clock).is_none());
    }

    #[test]
    fn topics_follow_the_documented_scheme() {
        assert_eq!(
            record_topic("fitedge", "site-a", "gw-1", "grip-1"),
            "fitedge/site-a/gw-1/records/grip-1"
        );
        assert_eq!(topics().status(), "fitedge/site-a/gw-1/status");
    }
}
