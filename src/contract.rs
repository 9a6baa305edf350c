//! The platform contract as a subscriber checks it: the payload schemas of
//! `docs/schema` (built in), and a tally of what a stream of records and
//! statuses says per gateway: duplicates by id, `seq` gaps within a buffer
//! epoch, epoch changes, gateways that went offline. `fitedge tail` prints
//! it; this module does no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

/// The schema files, by the id payloads carry in `schema`.
const SCHEMAS: [(&str, &str); 2] = [
    (
        "fitedge.record.v1",
        include_str!("../docs/schema/fitedge.record.v1.json"),
    ),
    (
        "fitedge.status.v1",
        include_str!("../docs/schema/fitedge.status.v1.json"),
    ),
];

/// Missing sequence numbers remembered per gateway, at most (a larger gap
/// is still counted).
const MAX_MISSING: usize = 100_000;

/// Validates payloads against the built-in schemas.
pub struct Schemas {
    validators: HashMap<&'static str, jsonschema::Validator>,
}

impl Schemas {
    pub fn new() -> Schemas {
        let validators = SCHEMAS
            .iter()
            .filter_map(|(id, text)| {
                let schema: serde_json::Value = serde_json::from_str(text).ok()?;
                Some((*id, jsonschema::draft202012::new(&schema).ok()?))
            })
            .collect();
        Schemas { validators }
    }

    /// What is wrong with `payload` against the schema it names (empty:
    /// valid), and the payload when it is JSON.
    pub fn check(&self, payload: &[u8]) -> (Option<serde_json::Value>, Vec<String>) {
        let value: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return (None, vec![format!("not JSON: {e}")]),
        };
        let Some(validator) = value["schema"]
            .as_str()
            .and_then(|id| self.validators.get(id))
        else {
            let problem = format!("unknown schema {}", value["schema"]);
            return (Some(value), vec![problem]);
        };
        let mut problems: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        let mut seen = HashSet::new();
        for metric in value["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["metric"].as_str())
        {
            if !seen.insert(metric) {
                problems.push(format!("metric {metric} appears twice"));
            }
        }
        (Some(value), problems)
    }
}

impl Default for Schemas {
    fn default() -> Self {
        Schemas::new()
    }
}

/// Something a subscriber should know about the stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// A record id seen before: a redelivery (harmless; drop it).
    Duplicate { gateway: String, id: String },
    /// `seq` jumped: records `from..=to` of this epoch have not arrived
    /// (yet: a backlog may still bring them).
    Gap { gateway: String, from: u64, to: u64 },
    /// The gateway's buffer is new: `seq` starts again.
    EpochChange {
        gateway: String,
        from: String,
        to: String,
    },
    /// The gateway's status says offline.
    Offline { gateway: String, at: String },
}

/// What one gateway's stream showed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GatewayTally {
    pub records: u64,
    pub duplicates: u64,
    /// Sequence numbers still missing in the current epoch.
    pub missing: u64,
    pub epochs: Vec<String>,
    pub offline: bool,
    #[serde(skip)]
    ids: HashSet<String>,
    #[serde(skip)]
    highest: Option<u64>,
    #[serde(skip)]
    missing_seqs: BTreeSet<u64>,
    /// Missing beyond what is remembered, and missing in earlier epochs.
    #[serde(skip)]
    missing_more: u64,
}

impl GatewayTally {
    fn count_missing(&mut self) {
        self.missing = self.missing_seqs.len() as u64 + self.missing_more;
    }
}

/// Per gateway, what the stream showed; payloads that broke the contract.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub gateways: BTreeMap<String, GatewayTally>,
    pub invalid: u64,
}

impl Tally {
    /// Takes one record (already validated).
    pub fn record(&mut self, record: &serde_json::Value) -> Vec<Notice> {
        let gateway = record["gateway_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let g = self.gateways.entry(gateway.clone()).or_default();
        let mut notices = Vec::new();
        let id = record["id"].as_str().unwrap_or_default().to_string();
        if !g.ids.insert(id.clone()) {
            g.duplicates += 1;
            notices.push(Notice::Duplicate { gateway, id });
            return notices;
        }
        g.records += 1;
        let epoch = record["epoch"].as_str().unwrap_or_default().to_string();
        match g.epochs.last() {
            Some(last) if *last != epoch => {
                notices.push(Notice::EpochChange {
                    gateway: gateway.clone(),
                    from: last.clone(),
                    to: epoch.clone(),
                });
                g.epochs.push(epoch);
                g.highest = None;
                g.missing_more += g.missing_seqs.len() as u64;
                g.missing_seqs.clear();
            }
            None => g.epochs.push(epoch),
            _ => {}
        }
        let Some(seq) = record["seq"].as_u64() else {
            return notices;
        };
        match g.highest {
            Some(high) if seq > high + 1 => {
                notices.push(Notice::Gap {
                    gateway,
                    from: high + 1,
                    to: seq - 1,
                });
                for missing in high + 1..seq {
                    if g.missing_seqs.len() < MAX_MISSING {
                        g.missing_seqs.insert(missing);
                    } else {
                        g.missing_more += 1;
                    }
                }
                g.highest = Some(seq);
            }
            // A late arrival (the backlog drains beside the live lane).
            Some(high) if seq <= high => {
                g.missing_seqs.remove(&seq);
            }
            _ => g.highest = Some(seq),
        }
        g.count_missing();
        notices
    }

    /// Takes one status message (already validated).
    pub fn status(&mut self, status: &serde_json::Value) -> Vec<Notice> {
        let gateway = status["gateway_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let g = self.gateways.entry(gateway.clone()).or_default();
        g.offline = status["state"] == "offline";
        if g.offline {
            let at = status["at"].as_str().unwrap_or_default().to_string();
            return vec![Notice::Offline { gateway, at }];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, id: &str, epoch: &str) -> serde_json::Value {
        serde_json::json!({ "gateway_id": "gw", "id": id, "seq": seq, "epoch": epoch })
    }

    #[test]
    fn duplicates_gaps_late_arrivals_and_epochs_are_told_apart() {
        let mut t = Tally::default();
        assert!(t.record(&record(5, "a", "E1")).is_empty());
        assert!(t.record(&record(6, "b", "E1")).is_empty());
        assert_eq!(
            t.record(&record(6, "b", "E1")),
            vec![Notice::Duplicate {
                gateway: "gw".into(),
                id: "b".into()
            }]
        );
        assert_eq!(
            t.record(&record(9, "c", "E1")),
            vec![Notice::Gap {
                gateway: "gw".into(),
                from: 7,
                to: 8
            }]
        );
        assert_eq!(t.gateways["gw"].missing, 2);
        // The backlog brings one of them late.
        assert!(t.record(&record(7, "d", "E1")).is_empty());
        assert_eq!(t.gateways["gw"].missing, 1);
        let change = t.record(&record(0, "e", "E2"));
        assert!(
            matches!(&change[..], [Notice::EpochChange { from, to, .. }] if from == "E1" && to == "E2")
        );
        assert_eq!(
            t.gateways["gw"].missing, 1,
            "what the old epoch lacked stays counted"
        );
        assert!(
            t.record(&record(1, "f", "E2")).is_empty(),
            "a new epoch counts from 0"
        );
        let g = &t.gateways["gw"];
        assert_eq!((g.records, g.duplicates, g.epochs.len()), (6, 1, 2));
    }

    #[test]
    fn the_built_in_schemas_accept_the_gateways_payloads_and_refuse_others() {
        let schemas = Schemas::new();
        let status = crate::uplink::StatusMessage::new("online", "gw-01", "site-a").to_json();
        assert!(schemas.check(&status).1.is_empty());
        let will = crate::uplink::StatusMessage::will(
            "t",
            "gw-01",
            "site-a",
            std::time::Duration::from_secs(30),
        );
        let (value, problems) = schemas.check(&will.message);
        assert!(problems.is_empty(), "{problems:?}");
        let value = value.unwrap();
        assert_eq!(
            (
                value["state"].as_str(),
                value["will_keep_alive_seconds"].as_u64()
            ),
            (Some("offline"), Some(30))
        );
        assert!(!schemas
            .check(b"{\"schema\":\"fitedge.status.v1\"}")
            .1
            .is_empty());
        assert!(!schemas.check(b"not json").1.is_empty());
        assert!(!schemas.check(b"{\"schema\":\"other.v9\"}").1.is_empty());
    }
}
