//! Profile loading, validation messages and self-tests, end to end.

use std::path::Path;

use super::*;
use crate::problem::Problem;

const KV: &str = r#"
id = "height-weight-kv-line"
name = "test"
[frame]
type = "line"
[decode]
type = "key_value"
[[field]]
key = "ID"
role = "subject"
[[field]]
key = "HT"
metric = "body.height"
[[test]]
text = "ID=S0001;HT=172.5\r\n"
values = { "body.height" = 172.5 }
subject = "S0001"
[[test]]
name = "garbled"
text = "ID=S0001;HT=17x.5\r\n"
error = "not a number"
"#;

fn parse(text: &str) -> Result<Profile, Vec<Problem>> {
    Profile::parse(
        Path::new("device-profiles/height-weight-kv-line.toml"),
        text,
    )
}

#[test]
fn a_valid_profile_passes_its_own_tests() {
    let p = parse(KV).unwrap();
    let outcomes = p.run_tests();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.failure.is_none()), "{outcomes:?}");
}

#[test]
fn a_wrong_expectation_fails_the_case() {
    let p = parse(&KV.replace("\"body.height\" = 172.5", "\"body.height\" = 170.0")).unwrap();
    let failure = p.run_tests()[0].failure.clone().unwrap();
    assert!(failure.contains("expected 170"), "{failure}");
}

#[test]
fn a_typo_in_a_key_is_reported_at_its_line() {
    let problems =
        parse(&KV.replace("metric = \"body.height\"", "metrc = \"body.height\"")).unwrap_err();
    assert_eq!(problems[0].line, Some(13), "{problems:?}");
    assert!(problems[0].message.contains("metrc"), "{problems:?}");
}

#[test]
fn an_unknown_metric_names_its_field_line_and_a_fix() {
    let problems =
        parse(&KV.replace("metric = \"body.height\"", "metric = \"body.heigth\"")).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, Some(13), "the metric key's own line");
    assert!(problems[0].message.contains("body.heigth"));
    assert!(
        problems[0].fix.contains("did you mean \"body.height\""),
        "{problems:?}"
    );
}

#[test]
fn id_must_match_the_file_name() {
    let problems = Profile::parse(Path::new("x/other.toml"), KV).unwrap_err();
    assert!(
        problems[0].fix.contains("set id = \"other\""),
        "{problems:?}"
    );
}

#[test]
fn bad_test_hex_is_a_problem() {
    let problems =
        parse(&KV.replace("text = \"ID=S0001;HT=172.5\\r\\n\"", "hex = \"zz\"")).unwrap_err();
    assert!(problems[0].message.contains("not hex"), "{problems:?}");
}

#[test]
fn a_profiles_session_end_frame_becomes_an_end_event() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("device-profiles/qr-scanner-resident-id-line.toml");
    let profile = Profile::load(&path).unwrap();
    let mut decoder = DeviceDecoder::new(&profile, DecodeContext::for_tests());
    let out = decoder.feed(b"END\r");
    assert_eq!(out.len(), 1);
    let m = out[0].as_ref().unwrap();
    assert_eq!(m.event, Some(crate::record::StationEvent::EndSession));
}
