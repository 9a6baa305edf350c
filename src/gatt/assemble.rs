//! State across notifications of one peripheral: merging records split over
//! several packets (FTMS "More Data", Body Composition "Multiple Packet")
//! and deriving speed and cadence from consecutive wheel and crank counters,
//! which wrap.
//!
//! Memory is bounded: at most one partial record per characteristic, of at
//! most [`MAX_PARTS`] packets, and one counter sample per characteristic.
//! Nothing held is silently lost: a partial record that grows too long,
//! repeats a field, or waits longer than [`MAX_HOLD`] is sent as it is.
//! Only a link drop (see [`Assembler::reset`]) or a broken packet discards
//! a partial record.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{decode, Continuation, Counters, Decoded, GattError, Options, Value};

/// Packets of one split record at most; a longer run is sent as it is.
pub const MAX_PARTS: usize = 8;
/// A partial record older than this is sent as it is when the next value
/// of its characteristic arrives (a lost second half is not paired with an
/// unrelated one).
pub const MAX_HOLD: Duration = Duration::from_secs(5);
/// Derived values beyond these are a counter reset, not a movement.
const MAX_WHEEL_SPEED_MS: f64 = 30.0;
const MAX_CADENCE_RPM: f64 = 250.0;

/// A partial record: what is held so far, how many packets, since when.
#[derive(Debug)]
struct Held {
    record: Decoded,
    parts: usize,
    since: Instant,
}

impl Held {
    /// Whether `next` continues this record: it is fresh, and a More Data
    /// part repeats no field already held.
    fn takes(&self, next: &Decoded) -> bool {
        let repeats = self.record.continuation == Continuation::MoreData
            && next
                .values
                .iter()
                .any(|v| self.record.values.iter().any(|h| h.metric == v.metric));
        self.since.elapsed() <= MAX_HOLD && !repeats
    }

    fn finish(self) -> Decoded {
        let mut record = self.record;
        record.continuation = Continuation::Complete;
        record
    }
}

/// Per-peripheral decoding state.
#[derive(Debug, Default)]
pub struct Assembler {
    options: Options,
    partial: HashMap<u16, Held>,
    counters: HashMap<u16, Counters>,
}

impl Assembler {
    pub fn new(options: Options) -> Self {
        Assembler {
            options,
            ..Assembler::default()
        }
    }

    /// Decodes one notification of `characteristic` (already mapped to the
    /// codec it uses) and returns the records it completes. A record left
    /// incomplete by a broken packet is dropped along with it.
    pub fn push(&mut self, characteristic: u16, bytes: &[u8]) -> Result<Vec<Decoded>, GattError> {
        let mut decoded = match decode(characteristic, bytes, &self.options) {
            Ok(d) => d,
            Err(e) => {
                self.partial.remove(&characteristic);
                return Err(e);
            }
        };
        self.derive(characteristic, &mut decoded);
        let continuation = decoded.continuation;
        let mut done = Vec::new();
        let held = match self.partial.remove(&characteristic) {
            Some(mut held) if held.takes(&decoded) => {
                held.record.merge(decoded);
                held.parts += 1;
                held
            }
            // A stale half, or a part repeating a field already held,
            // belongs to another record: send what is held first.
            other => {
                done.extend(other.map(Held::finish));
                Held {
                    record: decoded,
                    parts: 1,
                    since: Instant::now(),
                }
            }
        };
        let complete = match continuation {
            Continuation::Complete => true,
            Continuation::MoreData => held.parts >= MAX_PARTS,
            // Two packets, each with the flag: the second completes it.
            Continuation::MultiplePacket => held.parts >= 2,
        };
        if complete {
            done.push(held.finish());
        } else {
            self.partial.insert(characteristic, held);
        }
        Ok(done)
    }

    /// The link dropped: partial records cannot be completed, and counters
    /// may have moved on by more than one wrap.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.counters.clear();
    }

    /// Packets held in partial records.
    pub fn held(&self) -> usize {
        self.partial.values().map(|h| h.parts).sum()
    }

    /// Adds speed and cadence computed against the previous sample.
    fn derive(&mut self, characteristic: u16, decoded: &mut Decoded) {
        let now = decoded.counters;
        if now.wheel.is_none() && now.crank.is_none() {
            return;
        }
        let before = self
            .counters
            .insert(characteristic, now)
            .unwrap_or_default();
        if let (Some((revs, time, ticks)), Some((revs0, time0, _))) = (now.wheel, before.wheel) {
            let dt = time.wrapping_sub(time0) as f64 / ticks;
            let metres = revs.wrapping_sub(revs0) as f64 * self.options.wheel_circumference_m;
            if dt > 0.0 && metres / dt <= MAX_WHEEL_SPEED_MS {
                decoded.values.push(Value {
                    field: "wheel_speed",
                    metric: "activity.speed".into(),
                    value: metres / dt,
                    unit: "m/s",
                });
            }
        }
        if let (Some((revs, time)), Some((revs0, time0))) = (now.crank, before.crank) {
            let dt = time.wrapping_sub(time0) as f64 / 1024.0;
            let rpm = revs.wrapping_sub(revs0) as f64 / dt * 60.0;
            if dt > 0.0 && rpm <= MAX_CADENCE_RPM {
                decoded.values.push(Value {
                    field: "crank_cadence",
                    metric: "activity.cadence".into(),
                    value: rpm,
                    unit: "/min",
                });
            }
        }
    }
}
