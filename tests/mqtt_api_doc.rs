//! `docs/mqtt-api.md` is the platform's contract: its JSON examples must be
//! exactly what the real serializer produces and accepts.

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
        .filter(|b| b.get("schema").is_some())
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
