//! The binder's state, apart from I/O: which session is open on each
//! station, and what each record from a station's device becomes.
//!
//! Pure: time comes in as wall-clock milliseconds, records go out as a
//! [`Step`]; the task in [`super`] feeds it and saves [`Saved`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::Station;
use crate::record::{
    Binding, CloseReason, Incoming, Measurement, Origin, Record, SessionEvent, SessionEventKind,
    StationEvent,
};

/// An open session, as saved across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub subject_ref: String,
    #[serde(default)]
    pub subject_ref_previous: Option<String>,
    #[serde(default)]
    pub operator_ref: Option<String>,
    /// RFC 3339 UTC.
    pub opened_at: String,
    /// The reader whose scan opened it: close records come from it.
    pub opened_by: Origin,
    pub readings: u64,
    /// Wall clock of the last scan or reading, Unix milliseconds.
    pub last_activity_ms: u64,
}

/// What is saved: each station's open session and operator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub stations: HashMap<String, SavedStation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedStation {
    pub session: Option<Session>,
    pub operator_ref: Option<String>,
}

/// What one input (or tick) gives: records for the writer, and durable
/// signals of inputs that became no record (settled once state is saved).
#[derive(Debug, Default)]
pub struct Step {
    pub forward: Vec<Incoming>,
    pub settled: Vec<oneshot::Sender<()>>,
    /// The saved state changed in a way a restart must see.
    pub changed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Device,
    Reader,
    Operator,
}

/// Every station's state.
pub struct Binder {
    stations: Vec<(Station, SavedStation)>,
    parts: HashMap<String, (usize, Part)>,
}

impl Binder {
    /// Binder for `stations`, resuming `saved` sessions still within their
    /// idle timeout at `now_ms`; the others are closed by the returned step.
    pub fn new(stations: &[Station], saved: Saved, now_ms: u64) -> (Binder, Step) {
        let mut parts = HashMap::new();
        let mut states = Vec::new();
        for (i, station) in stations.iter().enumerate() {
            for d in &station.devices {
                parts.insert(d.clone(), (i, Part::Device));
            }
            for d in &station.readers {
                parts.insert(d.clone(), (i, Part::Reader));
            }
            for d in &station.operators {
                parts.insert(d.clone(), (i, Part::Operator));
            }
            let state = saved.stations.get(&station.id).cloned().unwrap_or_default();
            states.push((station.clone(), state));
        }
        let mut binder = Binder {
            stations: states,
            parts,
        };
        // A session resumes only when its last activity is within the idle
        // timeout either way (a clock stepped back by more is not trusted).
        let step = binder.expire(now_ms, |elapsed, idle| elapsed.unsigned_abs() >= idle);
        (binder, step)
    }

    /// The state to save.
    pub fn saved(&self) -> Saved {
        Saved {
            stations: self
                .stations
                .iter()
                .map(|(s, state)| (s.id.clone(), state.clone()))
                .collect(),
        }
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.stations
            .iter()
            .filter(|(_, s)| s.session.is_some())
            .count()
    }

    /// Closes sessions idle for their station's timeout.
    pub fn tick(&mut self, now_ms: u64) -> Step {
        self.expire(now_ms, |elapsed, idle| elapsed >= idle as i64)
    }

    fn expire(&mut self, now_ms: u64, expired: impl Fn(i64, u64) -> bool) -> Step {
        let mut step = Step::default();
        for i in 0..self.stations.len() {
            let idle = self.stations[i].0.idle_timeout.as_millis() as u64;
            let due = self.stations[i]
                .1
                .session
                .as_ref()
                .is_some_and(|s| expired(now_ms as i64 - s.last_activity_ms as i64, idle));
            if due {
                step.forward
                    .extend(self.close(i, CloseReason::IdleTimeout, None));
                step.changed = true;
            }
        }
        step
    }

    /// What a record from a source becomes.
    pub fn push(&mut self, mut incoming: Incoming, now_ms: u64) -> Step {
        let mut step = Step::default();
        let Some((i, part)) = self.part_of(&incoming.record.device_id) else {
            step.forward.push(incoming);
            return step;
        };
        let station_id = self.stations[i].0.id.clone();
        incoming.record.station_id = Some(station_id);
        match (part, incoming.event.take()) {
            (_, Some(StationEvent::EndSession)) => {
                step.forward
                    .extend(self.close(i, CloseReason::EndEvent, None));
                step.settled.extend(incoming.durable);
                step.changed = true;
            }
            (
                _,
                Some(StationEvent::ScanRejected {
                    problem,
                    fingerprint,
                }),
            ) => {
                let detail = format!("{problem}, fingerprint {fingerprint}");
                step.forward
                    .extend(self.close(i, CloseReason::RejectedScan, Some(detail)));
                step.settled.extend(incoming.durable);
                step.changed = true;
            }
            (Part::Operator, None) => {
                if let Some(operator) = incoming.record.subject_ref.take() {
                    self.stations[i].1.operator_ref = Some(operator);
                    step.changed = true;
                }
                step.settled.extend(incoming.durable);
            }
            (Part::Reader, None) if incoming.record.subject_ref.is_some() => {
                let same = self.stations[i].1.session.as_ref().map(|s| &s.subject_ref)
                    == incoming.record.subject_ref.as_ref();
                if same {
                    // The same person scanned again: the session goes on.
                    if let Some(s) = &mut self.stations[i].1.session {
                        s.last_activity_ms = now_ms;
                    }
                    step.settled.extend(incoming.durable);
                } else {
                    step.forward
                        .extend(self.close(i, CloseReason::NextScan, None));
                    step.forward.push(self.open(i, incoming, now_ms));
                }
                step.changed = true;
            }
            (Part::Reader | Part::Device, None) => {
                self.bind(i, &mut incoming.record, now_ms);
                step.forward.push(incoming);
            }
        }
        step
    }

    /// The station and part of a device, or of the hub a sub-device is on.
    fn part_of(&self, device_id: &str) -> Option<(usize, Part)> {
        let mut id = device_id;
        loop {
            if let Some(found) = self.parts.get(id) {
                return Some(*found);
            }
            id = &id[..id.rfind('.')?];
        }
    }

    fn bind(&mut self, i: usize, record: &mut Record, now_ms: u64) {
        let state = &mut self.stations[i].1;
        let Some(session) = &mut state.session else {
            if record.subject_ref.is_some() {
                record.binding = Some(Binding::Device);
            } else {
                record.binding = Some(Binding::Unbound);
            }
            return;
        };
        session.last_activity_ms = now_ms;
        match &record.subject_ref {
            // The device's own subject wins; the session id is kept only
            // when it names the same person.
            Some(own) => {
                record.binding = Some(Binding::Device);
                if *own != session.subject_ref {
                    return;
                }
            }
            None => {
                record.binding = Some(Binding::Session);
                record.subject_ref = Some(session.subject_ref.clone());
                record.subject_ref_previous = session.subject_ref_previous.clone();
            }
        }
        session.readings += 1;
        record.session_id = Some(session.id.clone());
        record.operator_ref = session.operator_ref.clone();
    }

    fn open(&mut self, i: usize, mut incoming: Incoming, now_ms: u64) -> Incoming {
        let state = &mut self.stations[i].1;
        let record = &mut incoming.record;
        let session = Session {
            id: ulid::Ulid::generate().to_string(),
            subject_ref: record.subject_ref.clone().unwrap_or_default(),
            subject_ref_previous: record.subject_ref_previous.clone(),
            operator_ref: state.operator_ref.clone(),
            opened_at: record.received_at.clone(),
            opened_by: Origin {
                gateway_id: record.gateway_id.clone(),
                site_id: record.site_id.clone(),
                device_id: record.device_id.clone(),
                profile_id: record.profile_id.clone(),
                transport: record.transport,
            },
            readings: 0,
            last_activity_ms: now_ms,
        };
        record.session_id = Some(session.id.clone());
        record.operator_ref = session.operator_ref.clone();
        record.session = Some(SessionEvent {
            event: SessionEventKind::Open,
            opened_at: session.opened_at.clone(),
            reason: None,
            readings: None,
            detail: None,
        });
        state.session = Some(session);
        incoming
    }

    fn close(&mut self, i: usize, reason: CloseReason, detail: Option<String>) -> Option<Incoming> {
        let (station, state) = &mut self.stations[i];
        let session = state.session.take()?;
        let mut record = Record::new(
            &session.opened_by,
            Measurement {
                subject_ref: Some(session.subject_ref),
                subject_ref_previous: session.subject_ref_previous,
                ..Measurement::default()
            },
        );
        record.station_id = Some(station.id.clone());
        record.session_id = Some(session.id);
        record.operator_ref = session.operator_ref;
        record.session = Some(SessionEvent {
            event: SessionEventKind::Close,
            opened_at: session.opened_at,
            reason: Some(reason),
            readings: Some(session.readings),
            detail,
        });
        Some(Incoming::from(record))
    }
}

#[cfg(test)]
mod tests;
