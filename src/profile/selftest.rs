//! The self-test runner: a profile's own `[[test]]` cases (validated in
//! [`super::validate`]) run against its decoder.

use super::decode::DecodeContext;
use super::device::decode_gatt;
use super::spec::{DecodeSpec, Expect, Profile, TestCase};
use crate::identity::Keyring;
use crate::record::Measurement;
use crate::vocabulary::Vocabulary;

impl Profile {
    /// Runs the profile's own `[[test]]` cases.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        self.tests
            .iter()
            .map(|case| TestOutcome {
                name: case.name.clone(),
                line: case.line,
                failure: self.check_case(case).err(),
            })
            .collect()
    }

    fn check_case(&self, case: &TestCase) -> Result<(), String> {
        let outcomes = match (&self.decode, case.characteristic) {
            (DecodeSpec::Gatt(spec), Some(c)) => decode_gatt(spec, c, &case.packets),
            _ => self.decode_all(&case.input, &DecodeContext::for_tests()),
        };
        match &case.expect {
            Expect::Error(want) => {
                if let Some(ok) = outcomes.iter().find_map(|o| o.as_ref().ok()) {
                    return Err(format!(
                        "expected an error containing \"{want}\", got values {:?}",
                        ok.values
                    ));
                }
                let errors: Vec<String> = outcomes
                    .iter()
                    .filter_map(|o| o.as_ref().err().map(|f| f.error.clone()))
                    .collect();
                if errors
                    .iter()
                    .any(|e| e.to_lowercase().contains(&want.to_lowercase()))
                {
                    Ok(())
                } else if errors.is_empty() {
                    Err(format!("expected an error containing \"{want}\", but the input holds no complete frame"))
                } else {
                    Err(format!(
                        "expected an error containing \"{want}\", got: {}",
                        errors.join("; ")
                    ))
                }
            }
            Expect::Values {
                values,
                subject,
                absent,
                attributes,
            } => {
                let decoded: Vec<&Measurement> = outcomes
                    .iter()
                    .map(|o| {
                        o.as_ref()
                            .map_err(|f| format!("frame rejected: {}", f.error))
                    })
                    .collect::<Result<_, _>>()?;
                let [m] = decoded.as_slice() else {
                    return Err(format!(
                        "expected one frame, the input holds {}",
                        decoded.len()
                    ));
                };
                for (metric, want) in values {
                    let Some(got) = m.values.iter().find(|r| &r.metric == metric) else {
                        return Err(format!("{metric}: missing from the decode"));
                    };
                    let tolerance = Vocabulary::get()
                        .metric(metric)
                        .and_then(|m| m.res)
                        .unwrap_or(1e-6)
                        / 2.0;
                    if (got.value - want).abs() > tolerance.max(1e-6) {
                        return Err(format!("{metric}: expected {want}, decoded {}", got.value));
                    }
                }
                if let Some(extra) = m.values.iter().find(|r| !values.contains_key(&r.metric)) {
                    return Err(format!(
                        "{}: decoded {} but the test does not expect it",
                        extra.metric, extra.value
                    ));
                }
                // The test names the id as normalized; the decoder gives its
                // pseudonym under the offline tools' key.
                let want = subject
                    .as_deref()
                    .map(|s| Keyring::for_tests().pseudonym(s).current);
                if want.is_some() && want != m.subject_ref {
                    return Err(format!(
                        "subject: expected the pseudonym of {subject:?}, decoded {}",
                        match &m.subject_ref {
                            Some(_) => "another",
                            None => "none",
                        }
                    ));
                }
                if &m.absent != absent {
                    return Err(format!(
                        "absent: expected {absent:?}, decoded {:?}",
                        m.absent
                    ));
                }
                for (name, want) in attributes {
                    let got = m.attributes.get(name).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    });
                    let want = match want {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Float(f) => serde_json::json!(f).to_string(),
                        toml::Value::Integer(i) => i.to_string(),
                        other => other.to_string(),
                    };
                    if got.as_deref() != Some(want.as_str()) {
                        return Err(format!(
                            "attribute {name}: expected {want}, decoded {got:?}"
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The result of one `[[test]]` case.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub name: String,
    pub line: usize,
    /// `None` when the case passed.
    pub failure: Option<String>,
}
