//! `docs/mqtt-api.md` is the platform's contract: its JSON examples must be
//! exactly what the real serializer produces and accepts.

mod common;

use fitedge::record::Record;
use fitedge::uplink::{record_topic, status_topic, StatusMessage};

fn doc() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mqtt-api.md"),
    )
    .unwrap()
}

fn json_blocks(text: &str) -> Vec<serde_json::Value> {
    text.split("```json")
        .skip(1)
        .map(|block| {
            serde_json::from_str(block.split("```").next().unwrap()).expect("example is JSON")
        })
        .collect()
}

#[test]
fn record_examples_round_trip_through_the_serializer_unchanged() {
    let blocks = json_blocks(&doc());
    let records: Vec<_> = blocks
        .iter()
        .filter(|b| b["schema"] == fitedge::record::SCHEMA)
        .collect();
    assert_eq!(records.len(), 2);
    for example in records {
        let record: Record =
            serde_json::from_value((*example).clone()).expect("example deserializes as a record");
        let reserialized = serde_json::to_value(&record).unwrap();
        assert_eq!(
            &reserialized, example,
            "the serializer writes exactly the documented fields"
        );
        for v in &record.values {
            let metric = fitedge::vocabulary::Vocabulary::get()
                .metric(&v.metric)
                .expect("documented metric is in the vocabulary");
            assert_eq!(metric.unit, v.unit);
        }
    }
}

#[test]
fn status_example_has_the_serializers_fields() {
    let blocks = json_blocks(&doc());
    let example = blocks.iter().find(|b| b.get("state").is_some()).unwrap();
    assert_eq!(example["schema"], fitedge::uplink::STATUS_SCHEMA);
    let real = serde_json::to_value(StatusMessage::new("online", "gw-01", "site-a")).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(example), keys(&real));
}

#[test]
fn documented_topics_match_the_code() {
    let text = doc();
    assert!(text.contains(&record_topic("fitedge", "site-a", "gw-01", "grip-1")));
    assert!(text.contains(&record_topic(
        "<prefix>",
        "<site_id>",
        "<gateway_id>",
        "<device_id>"
    )));
    assert!(text.contains(&status_topic("<prefix>", "<site_id>", "<gateway_id>")));
}

#[test]
fn documented_examples_match_the_schemas_and_the_schemas_can_say_no() {
    for example in json_blocks(&doc()) {
        let bytes = serde_json::to_vec(&example).unwrap();
        let problems = common::schema_problems(&bytes);
        assert!(problems.is_empty(), "{example}: {problems:?}");
    }
    let mut heartbeat =
        serde_json::to_value(StatusMessage::new("online", "gw-01", "site-a")).unwrap();
    assert!(common::schema_problems(&serde_json::to_vec(&heartbeat).unwrap()).is_empty());
    // An undocumented field, a wrong type, a repeated metric: each caught.
    heartbeat["mood"] = "fine".into();
    assert!(!common::schema_problems(&serde_json::to_vec(&heartbeat).unwrap()).is_empty());
    let mut record = json_blocks(&doc())
        .into_iter()
        .find(|b| b.get("values").is_some())
        .unwrap();
    record["seq"] = "1042".into();
    assert!(!common::schema_problems(&serde_json::to_vec(&record).unwrap()).is_empty());
    record["seq"] = 1042.into();
    let first = record["values"][0].clone();
    record["values"].as_array_mut().unwrap().push(first);
    let problems = common::schema_problems(&serde_json::to_vec(&record).unwrap());
    assert!(problems.iter().any(|p| p.contains("twice")), "{problems:?}");
}
