//! The `[[station]]` entries: which devices measure at a station and which
//! readers say who is being measured there.

use std::collections::HashMap;
use std::time::Duration;

use super::raw::RawStation;
use super::{check_id, span, Device, Station};
use crate::problem::{Problem, SourceText};

/// Sessions left idle longer than this close, at most.
const MAX_IDLE_SECONDS: u64 = 24 * 3600;

/// Validates every station that could be read against the devices: each
/// named device exists and belongs to at most one station.
pub(super) fn check_stations(
    src: &SourceText,
    raw: &[RawStation],
    devices: &[Device],
    problems: &mut Vec<Problem>,
) -> Vec<Station> {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    let mut ids: Vec<&str> = Vec::new();
    let mut stations = Vec::new();
    for s in raw {
        let id = s.id.get_ref().as_str();
        check_id(src, "station id", &s.id, problems);
        if ids.contains(&id) {
            problems.push(src.problem(
                span(&s.id),
                format!("station id \"{id}\" is used twice"),
                "give every [[station]] its own id",
            ));
        }
        ids.push(id);
        if s.readers.is_empty() {
            problems.push(src.problem(
                span(&s.id),
                format!("station \"{id}\" has no readers"),
                "list the scanner or card reader that identifies the person: readers = [\"qr-1\"]",
            ));
        }
        let lists = [
            ("devices", &s.devices),
            ("readers", &s.readers),
            ("operators", &s.operators),
        ];
        for (what, list) in lists {
            for name in list {
                let device = name.get_ref().as_str();
                if !devices.iter().any(|d| d.id == device) {
                    problems.push(src.problem(
                        span(name),
                        format!("station \"{id}\" {what} names device \"{device}\", which no [[device]] has"),
                        "add the [[device]] or fix the id",
                    ));
                } else if let Some(other) = owner.insert(device, id) {
                    problems.push(src.problem(
                        span(name),
                        format!("device \"{device}\" is already in station \"{other}\"; a device belongs to at most one station"),
                        "remove it from one of the stations",
                    ));
                }
            }
        }
        let idle = *s.idle_timeout_seconds.get_ref();
        if !(10..=MAX_IDLE_SECONDS).contains(&idle) {
            problems.push(src.problem(
                span(&s.idle_timeout_seconds),
                format!("idle_timeout_seconds = {idle} is outside 10..={MAX_IDLE_SECONDS}"),
                "300 (five minutes) suits a physique-test corner",
            ));
        }
        let names =
            |list: &Vec<toml::Spanned<String>>| list.iter().map(|n| n.get_ref().clone()).collect();
        stations.push(Station {
            id: id.to_string(),
            devices: names(&s.devices),
            readers: names(&s.readers),
            operators: names(&s.operators),
            idle_timeout: Duration::from_secs(idle),
        });
    }
    stations
}
