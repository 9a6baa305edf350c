//! The `fhir` upstream format against HL7's own FHIR R4 JSON Schema
//! (`tests/fixtures/fhir`): the encoder's resources for the kinds of record
//! a site sends, and what a gateway configured with `format = "fhir"`
//! publishes from a real station.

mod common;

use std::time::Duration;

use common::{wait_for_port, Daemon, Platform};
use fitedge::record::{Measurement, Origin, Reading, Record, Transport};
use fitedge::sim::{Instrument, Pty};

fn fhir_schema() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fhir/fhir.schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    jsonschema::draft6::new(&schema).expect("FHIR's schema compiles")
}

fn problems(validator: &jsonschema::Validator, resource: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(resource)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

#[test]
fn every_kind_of_record_is_valid_fhir_r4() {
    let validator = fhir_schema();
    let origin = Origin {
        gateway_id: "gw-01".into(),
        site_id: "site-a".into(),
        device_id: "dev-1".into(),
        profile_id: "p".into(),
        transport: Transport::Serial,
    };
    let record = |values: Vec<Reading>| {
        Record::new(
            &origin,
            Measurement {
                values,
                ..Default::default()
            },
        )
    };
    let mut bound = record(vec![
        Reading::new("body.height", 172.5, "cm"),
        Reading::new("body.weight", 65.4, "kg"),
    ]);
    bound.subject_ref = Some(format!("psn1:{}", "0f".repeat(32)));
    let mut unsynced = record(vec![Reading::new("strength.grip", 41.5, "kg")]);
    unsynced.clock_synced = false;
    unsynced.device_time = Some("2026-11-29T08:40:00.000Z".into());
    let cases = [
        (
            "one value",
            record(vec![Reading::new("vital.heart_rate", 72.0, "/min")]),
        ),
        ("several values, with a subject", bound),
        (
            "blood pressure and pulse",
            record(vec![
                Reading::new("vital.bp_systolic", 121.0, "mm[Hg]"),
                Reading::new("vital.bp_diastolic", 79.0, "mm[Hg]"),
                Reading::new("vital.bp_mean", 93.0, "mm[Hg]"),
                Reading::new("vital.pulse_rate", 66.0, "/min"),
            ]),
        ),
        ("a device time and an unsynchronized clock", unsynced),
        ("no values (a session record)", record(vec![])),
    ];
    for (name, record) in cases {
        let resource = fitedge::uplink::fhir::resource(&record);
        if record.values.is_empty() {
            assert!(resource.get("entry").is_none(), "FHIR has no empty arrays");
        }
        let found = problems(&validator, &resource);
        assert!(found.is_empty(), "{name}: {found:?}\n{resource:#}");
    }
    // The schema does say no: a Quantity whose value is text.
    let mut broken =
        fitedge::uplink::fhir::resource(&record(vec![Reading::new("body.height", 1.0, "cm")]));
    broken["valueQuantity"]["value"] = "tall".into();
    assert!(!problems(&validator, &broken).is_empty());
    broken["valueQuantity"]["value"] = 1.0.into();
    broken["status"] = "done".into();
    assert!(!problems(&validator, &broken).is_empty());
}

#[test]
fn a_gateway_with_the_fhir_format_publishes_valid_observations() {
    let port = common::broker();
    let platform = Platform::subscribe(port);
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::open().unwrap();
    let config = common::height_weight_config(dir.path(), port, &pty.path, "format = \"fhir\"");
    let mut daemon = Daemon::start(&config, 0);
    wait_for_port(&daemon);
    let mut rng = fastrand::Rng::with_seed(90);
    for n in 1..=5 {
        pty.write_frame(&Instrument::HeightWeight.frame(n, &mut rng).bytes)
            .unwrap();
    }
    let fhir = |p: &Platform| -> Vec<serde_json::Value> {
        p.received
            .lock()
            .unwrap()
            .raw
            .iter()
            .filter(|(topic, _)| topic.contains("/fhir/hw-1"))
            .map(|(_, payload)| serde_json::from_slice(payload).unwrap())
            .collect()
    };
    let arrived =
        platform.wait_until(Duration::from_secs(20), |_| false) || fhir(&platform).len() >= 5;
    assert!(arrived, "{}", daemon.log_text());
    daemon.stop();
    let validator = fhir_schema();
    let resources = fhir(&platform);
    for resource in &resources {
        let found = problems(&validator, resource);
        assert!(found.is_empty(), "{found:?}\n{resource:#}");
        assert_eq!(
            resource["resourceType"], "Bundle",
            "height and weight: two Observations"
        );
        let entries = resource["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0]["resource"]["code"]["coding"][0]["code"],
            "8302-2"
        );
        assert_eq!(
            entries[1]["resource"]["code"]["coding"][0]["code"],
            "29463-7"
        );
    }
    let ids: std::collections::BTreeSet<String> = resources
        .iter()
        .map(|r| {
            r["identifier"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        ids.len(),
        resources.len(),
        "each record's id identifies its Bundle"
    );
    assert!(
        platform.records().is_empty(),
        "no fitedge records beside the FHIR ones"
    );
}
