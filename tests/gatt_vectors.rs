//! Every row of the shared GATT vectors (`tests/vectors/gatt.tsv`, a copy of
//! the programme's) goes through `fitedge decode --gatt` and gives exactly
//! the expected values (within the vocabulary's resolution) and absent
//! metrics, or the expected error with a non-zero exit.

mod common;

use common::binary;
use fitedge::vocabulary::Vocabulary;
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/gatt.tsv");

/// (metric, value) pairs of a decode, in order.
fn values(doc: &Value) -> Vec<(String, f64, String)> {
    doc["values"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["metric"].as_str().unwrap_or_default().to_string(),
                v["value"].as_f64().unwrap_or(f64::NAN),
                v["unit"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn strings(doc: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = doc[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Half the metric's resolution, but never coarser than 0.01 of a unit
/// step and never finer than the vectors' six decimals.
fn tolerance(metric: &str) -> f64 {
    let res = Vocabulary::get()
        .metric(metric)
        .and_then(|m| m.res)
        .unwrap_or(1.0);
    (res / 2.0).clamp(1e-6, 0.5)
}

#[test]
fn every_gatt_vector_decodes_exactly() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in VECTORS.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [uuid, hex, expected, note] = cols[..] else {
            panic!("malformed vector line: {line}");
        };
        let expected: Value = serde_json::from_str(expected).expect("vector JSON");
        let out = binary()
            .args(["decode", "--gatt", uuid, "--hex", hex])
            .output()
            .expect("fitedge runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let case = format!("{uuid} {hex} ({note})");
        checked += 1;
        if let Some(error) = expected["error"].as_str() {
            if out.status.success() || !stderr.contains(error) {
                failures.push(format!(
                    "{case}: expected error \"{error}\", got {:?}: {stdout}{stderr}",
                    out.status.code()
                ));
            }
            continue;
        }
        if !out.status.success() {
            failures.push(format!("{case}: failed: {stderr}"));
            continue;
        }
        let got: Value = match serde_json::from_str(stdout.trim()) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{case}: output is not JSON ({e}): {stdout}"));
                continue;
            }
        };
        let (want, have) = (values(&expected), values(&got));
        let same = want.len() == have.len()
            && want
                .iter()
                .zip(&have)
                .all(|(w, h)| w.0 == h.0 && w.2 == h.2 && (w.1 - h.1).abs() <= tolerance(&w.0));
        if !same {
            failures.push(format!("{case}: values\n  want {want:?}\n  got  {have:?}"));
        }
        if strings(&expected, "absent") != strings(&got, "absent") {
            failures.push(format!(
                "{case}: absent: want {:?}, got {:?}",
                strings(&expected, "absent"),
                strings(&got, "absent")
            ));
        }
    }
    assert!(checked >= 50, "only {checked} vectors read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
