//! The canonical metric vocabulary: ids, UCUM units and plausible ranges.
//!
//! `metrics.toml` beside this file is a copy of the programme's shared
//! vocabulary and is compiled in. Every value that leaves the gateway carries
//! one of these ids in exactly the unit given here.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The vocabulary as shipped with this build.
pub const METRICS_TOML: &str = include_str!("metrics.toml");

/// One canonical metric.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Metric {
    /// UCUM code of the canonical unit.
    pub unit: String,
    /// LOINC code, where one is well established.
    #[serde(default)]
    pub loinc: Option<String>,
    /// Plausible `[min, max]`; a value outside is kept but flagged.
    pub range: [f64; 2],
    /// Typical instrument resolution (informative).
    #[serde(default)]
    pub res: Option<f64>,
    #[serde(default)]
    pub note: Option<String>,
}

impl Metric {
    /// Whether `value` lies inside the plausible range (inclusive).
    pub fn in_range(&self, value: f64) -> bool {
        value >= self.range[0] && value <= self.range[1]
    }
}

#[derive(Deserialize)]
struct File {
    metrics: BTreeMap<String, Metric>,
}

/// The whole vocabulary, keyed by metric id.
#[derive(Debug)]
pub struct Vocabulary {
    metrics: BTreeMap<String, Metric>,
}

impl Vocabulary {
    /// The compiled-in vocabulary, parsed once.
    pub fn get() -> &'static Vocabulary {
        static VOCABULARY: OnceLock<Vocabulary> = OnceLock::new();
        VOCABULARY.get_or_init(|| {
            // The file is part of the build and covered by tests, so a parse
            // failure here is a build defect, not bad input.
            let file: File = toml::from_str(METRICS_TOML).expect("embedded metrics.toml is valid");
            Vocabulary {
                metrics: file.metrics,
            }
        })
    }

    pub fn metric(&self, id: &str) -> Option<&Metric> {
        self.metrics.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.metrics.keys().map(String::as_str)
    }

    /// The known id closest to an unknown one (a typo), to suggest a fix.
    pub fn suggest(&self, unknown: &str) -> Option<&str> {
        self.ids()
            .map(|id| (strsim::damerau_levenshtein(unknown, id), id))
            .filter(|(distance, id)| *distance <= (id.len() / 3).max(2))
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_vocabulary_parses_and_has_core_metrics() {
        let v = Vocabulary::get();
        assert_eq!(v.metric("body.height").unwrap().unit, "cm");
        assert_eq!(v.metric("body.weight").unwrap().unit, "kg");
        assert_eq!(v.metric("strength.grip").unwrap().unit, "kg");
        assert!(v.metric("body.nonsense").is_none());
        assert!(v.ids().count() > 60);
    }

    #[test]
    fn range_is_inclusive() {
        let grip = Vocabulary::get().metric("strength.grip").unwrap();
        assert!(grip.in_range(2.0) && grip.in_range(100.0));
        assert!(!grip.in_range(100.1) && !grip.in_range(1.9));
    }

    #[test]
    fn suggests_a_known_id_for_a_near_miss() {
        let v = Vocabulary::get();
        assert_eq!(v.suggest("body.hieght"), Some("body.height"));
        assert_eq!(v.suggest("flex.sit_reach"), Some("flex.sit_and_reach"));
        assert_eq!(v.suggest("strength.gripp"), Some("strength.grip"));
        assert_eq!(v.suggest("temperature"), None);
    }

    /// The vocabulary is the programme's shared one; keep the copy in step.
    #[test]
    fn embedded_copy_matches_shared_reference_when_present() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/metrics.toml");
        if let Ok(text) = std::fs::read_to_string(&shared) {
            assert_eq!(
                text,
                METRICS_TOML,
                "src/metrics.toml differs from {}",
                shared.display()
            );
        }
    }
}
