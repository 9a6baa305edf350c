//! The `fhir` payload format: each record as HL7 FHIR R4, for platforms
//! that pass readings on to the health commission's systems.
//!
//! A record with one value is one `Observation`; with several, a `Bundle`
//! (type `collection`) of them; blood pressure is one Observation with
//! systolic, diastolic and mean as components, as FHIR's vital-signs
//! profile asks. Codes are LOINC where `metrics.toml` has one, always with
//! the metric id in the local code system `urn:fitedge:metric`; values are
//! UCUM quantities. The record id is the identifier, so a redelivery stays
//! recognisable. Published on `<prefix>/<site>/<gateway>/fhir/<device>`.
//! The systems and extensions are listed in `docs/mqtt-api.md`.

use serde_json::{json, Value};

use super::payload::{one_per_record, Encoder, Publish, SendClock, Topics};
use crate::outbox::Stored;
use crate::record::{Reading, Record};
use crate::vocabulary::Vocabulary;

/// Code systems and extension URLs of this format.
pub const METRIC_SYSTEM: &str = "urn:fitedge:metric";
pub const RECORD_SYSTEM: &str = "urn:fitedge:record";
pub const PSEUDONYM_SYSTEM: &str = "urn:fitedge:pseudonym";
pub const DEVICE_SYSTEM: &str = "urn:fitedge:device";
pub const CLOCK_SYNCED_EXTENSION: &str = "urn:fitedge:fhir:clock-synced";
const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// LOINC panel of a blood pressure reading, and the metrics that are its
/// components.
const BP_PANEL: &str = "85354-9";
const BP_COMPONENTS: [&str; 3] = ["vital.bp_systolic", "vital.bp_diastolic", "vital.bp_mean"];

/// Each record as FHIR R4 JSON on its device's `fhir` topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct FhirObservations;

impl Encoder for FhirObservations {
    fn encode(&self, records: &[Stored], topics: &Topics, clock: &SendClock) -> Vec<Publish> {
        one_per_record(records, clock, |record| {
            let topic = format!(
                "{}/{}/{}/fhir/{}",
                topics.prefix, topics.site_id, topics.gateway_id, record.device_id
            );
            (
                topic,
                serde_json::to_vec(&resource(record)).unwrap_or_default(),
            )
        })
    }
}

/// The FHIR resource for one record.
pub fn resource(record: &Record) -> Value {
    let has_bp = record
        .values
        .iter()
        .any(|v| v.metric == "vital.bp_systolic" || v.metric == "vital.bp_diastolic");
    let mut observations = Vec::new();
    if has_bp {
        let components: Vec<Value> = record
            .values
            .iter()
            .filter(|v| BP_COMPONENTS.contains(&v.metric.as_str()))
            .map(|v| json!({ "code": code(v), "valueQuantity": quantity(v) }))
            .collect();
        let panel = json!({
            "coding": [{ "system": LOINC, "code": BP_PANEL, "display": "Blood pressure panel" }],
            "text": "blood pressure"
        });
        observations.push((
            "vital.bp".to_string(),
            observation(record, "vital.bp", panel, None, components),
        ));
    }
    for v in record
        .values
        .iter()
        .filter(|v| !(has_bp && BP_COMPONENTS.contains(&v.metric.as_str())))
    {
        let obs = observation(record, &v.metric, code(v), Some(quantity(v)), Vec::new());
        observations.push((v.metric.clone(), obs));
    }
    if observations.len() == 1 {
        let (_, mut only) = observations.remove(0);
        only["identifier"] = json!([{ "system": RECORD_SYSTEM, "value": record.id }]);
        return only;
    }
    // Several (or no) values: a collection, identified by the record id;
    // each Observation by the record id and its metric. FHIR allows no
    // empty arrays: a record with no values (a session opening or closing,
    // a machine's state change) is a Bundle without entries.
    let entries: Vec<Value> = observations
        .into_iter()
        .map(|(metric, mut obs)| {
            obs["identifier"] =
                json!([{ "system": RECORD_SYSTEM, "value": format!("{}/{metric}", record.id) }]);
            json!({ "resource": obs })
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "identifier": { "system": RECORD_SYSTEM, "value": record.id },
        "type": "collection",
        "timestamp": record.received_at,
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    bundle
}

fn observation(
    record: &Record,
    metric: &str,
    code: Value,
    value: Option<Value>,
    components: Vec<Value>,
) -> Value {
    let mut obs = json!({
        "resourceType": "Observation",
        "extension": [{ "url": CLOCK_SYNCED_EXTENSION, "valueBoolean": record.clock_synced || record.time_corrected == Some(true) }],
        "status": "final",
        "category": [{ "coding": [category(metric)] }],
        "code": code,
        "effectiveDateTime": record.device_time.as_deref().unwrap_or(&record.received_at),
        "device": { "identifier": {
            "system": DEVICE_SYSTEM,
            "value": format!("{}/{}/{}", record.site_id, record.gateway_id, record.device_id),
        }},
    });
    if let Some(subject) = &record.subject_ref {
        obs["subject"] = json!({ "identifier": { "system": PSEUDONYM_SYSTEM, "value": subject } });
    }
    if let Some(value) = value {
        obs["valueQuantity"] = value;
    }
    if !components.is_empty() {
        obs["component"] = Value::Array(components);
    }
    obs
}

/// vital-signs for vital signs and body measurements, activity for
/// exercise, exam for the physique test items.
fn category(metric: &str) -> Value {
    let (code, display) = match metric.split('.').next() {
        Some("vital" | "body") => ("vital-signs", "Vital Signs"),
        Some("activity") => ("activity", "Activity"),
        _ => ("exam", "Exam"),
    };
    json!({ "system": CATEGORY, "code": code, "display": display })
}

fn code(v: &Reading) -> Value {
    let mut coding = Vec::new();
    if let Some(loinc) = Vocabulary::get()
        .metric(&v.metric)
        .and_then(|m| m.loinc.as_deref())
    {
        coding.push(json!({ "system": LOINC, "code": loinc }));
    }
    coding.push(json!({ "system": METRIC_SYSTEM, "code": v.metric }));
    json!({ "coding": coding, "text": v.metric })
}

fn quantity(v: &Reading) -> Value {
    json!({ "value": v.value, "unit": v.unit, "system": UCUM, "code": v.unit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Measurement, Origin, Transport};

    fn record(values: Vec<Reading>) -> Record {
        let origin = Origin {
            gateway_id: "gw-01".into(),
            site_id: "site-a".into(),
            device_id: "bp-1".into(),
            profile_id: "p".into(),
            transport: Transport::Ble,
        };
        let mut r = Record::new(
            &origin,
            Measurement {
                values,
                ..Default::default()
            },
        );
        r.id = "01KB6M0Z6Q4TK2S9G1R6V5M3XH".into();
        r.received_at = "2026-11-29T08:44:13.512Z".into();
        r.clock_synced = true;
        r.subject_ref = Some(format!("psn1:{}", "ab".repeat(32)));
        r
    }

    #[test]
    fn one_value_is_one_observation_with_loinc_ucum_and_the_record_id() {
        let got = resource(&record(vec![Reading::new("body.height", 172.5, "cm")]));
        let want = json!({
            "resourceType": "Observation",
            "identifier": [{ "system": "urn:fitedge:record", "value": "01KB6M0Z6Q4TK2S9G1R6V5M3XH" }],
            "extension": [{ "url": "urn:fitedge:fhir:clock-synced", "valueBoolean": true }],
            "status": "final",
            "category": [{ "coding": [{ "system": CATEGORY, "code": "vital-signs", "display": "Vital Signs" }] }],
            "code": { "coding": [
                { "system": "http://loinc.org", "code": "8302-2" },
                { "system": "urn:fitedge:metric", "code": "body.height" }
            ], "text": "body.height" },
            "subject": { "identifier": { "system": "urn:fitedge:pseudonym", "value": format!("psn1:{}", "ab".repeat(32)) } },
            "effectiveDateTime": "2026-11-29T08:44:13.512Z",
            "device": { "identifier": { "system": "urn:fitedge:device", "value": "site-a/gw-01/bp-1" } },
            "valueQuantity": { "value": 172.5, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm" }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn blood_pressure_is_one_observation_with_components_beside_the_pulse() {
        let got = resource(&record(vec![
            Reading::new("vital.bp_systolic", 121.0, "mm[Hg]"),
            Reading::new("vital.bp_diastolic", 79.0, "mm[Hg]"),
            Reading::new("vital.pulse_rate", 66.0, "/min"),
        ]));
        assert_eq!(got["resourceType"], "Bundle");
        assert_eq!(got["identifier"]["value"], "01KB6M0Z6Q4TK2S9G1R6V5M3XH");
        let entries = got["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let bp = &entries[0]["resource"];
        assert_eq!(bp["code"]["coding"][0]["code"], BP_PANEL);
        assert!(bp.get("valueQuantity").is_none());
        let codes: Vec<&str> = bp["component"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"]["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["8480-6", "8462-4"]);
        assert_eq!(bp["component"][0]["valueQuantity"]["code"], "mm[Hg]");
        let pulse = &entries[1]["resource"];
        assert_eq!(
            pulse["identifier"][0]["value"],
            "01KB6M0Z6Q4TK2S9G1R6V5M3XH/vital.pulse_rate"
        );
        assert_eq!(
            pulse["code"]["coding"],
            json!([{ "system": METRIC_SYSTEM, "code": "vital.pulse_rate" }]),
            "no LOINC in the vocabulary: the local code alone"
        );
    }

    #[test]
    fn device_time_wins_and_an_unsynchronized_clock_says_so() {
        let mut r = record(vec![Reading::new("strength.grip", 41.5, "kg")]);
        r.device_time = Some("2026-11-29T08:40:00.000Z".into());
        r.clock_synced = false;
        r.subject_ref = None;
        let got = resource(&r);
        assert_eq!(got["effectiveDateTime"], "2026-11-29T08:40:00.000Z");
        assert_eq!(got["extension"][0]["valueBoolean"], false);
        assert_eq!(got["category"][0]["coding"][0]["code"], "exam");
        assert!(got.get("subject").is_none());
    }
}
