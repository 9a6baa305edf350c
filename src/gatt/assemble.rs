//! State across notifications of one peripheral: merging records split over
//! several packets (FTMS "More Data", Body Composition "Multiple Packet")
//! and deriving speed and cadence from consecutive wheel and crank counters,
//! which wrap.
//!
//! Memory is bounded: at most one partial record per characteristic, of at
//! most [`MAX_PARTS`] packets, and one counter sample per characteristic.

use std::collections::HashMap;

use super::{decode, Continuation, Counters, Decoded, GattError, Options, Value};

/// Packets of one split record beyond this are a broken sender: the
/// partial record is dropped.
pub const MAX_PARTS: usize = 8;

/// What one notification produced.
#[derive(Debug, PartialEq)]
pub enum Assembled {
    /// A whole record.
    Record(Decoded),
    /// Part of a record; nothing to send yet.
    Partial,
}

/// Per-peripheral decoding state.
#[derive(Debug, Default)]
pub struct Assembler {
    options: Options,
    partial: HashMap<u16, (Decoded, usize)>,
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
    /// codec it uses). A record left incomplete by a broken packet is
    /// dropped along with it.
    pub fn push(&mut self, characteristic: u16, bytes: &[u8]) -> Result<Vec<Decoded>, GattError> {
        let mut decoded = match decode(characteristic, bytes, &self.options) {
            Ok(d) => d,
            Err(e) => {
                self.partial.remove(&characteristic);
                return Err(e);
            }
        };
        self.derive(characteristic, &mut decoded);
        let mut done = Vec::new();
        match decoded.continuation {
            Continuation::Complete => {
                done.push(self.complete(characteristic, decoded));
            }
            Continuation::MoreData => {
                let parts = self.hold(characteristic, decoded);
                if parts > MAX_PARTS {
                    self.partial.remove(&characteristic);
                }
            }
            Continuation::MultiplePacket => {
                // Two packets, each with the flag: the second completes it.
                if let Some((mut first, _)) = self.partial.remove(&characteristic) {
                    first.merge(decoded);
                    first.continuation = Continuation::Complete;
                    done.push(first);
                } else {
                    self.hold(characteristic, decoded);
                }
            }
        }
        Ok(done)
    }

    /// Packets held in partial records.
    pub fn held(&self) -> usize {
        self.partial.values().map(|(_, parts)| parts).sum()
    }

    /// The link dropped: partial records cannot be completed, and counters
    /// may have moved on by more than one wrap.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.counters.clear();
    }

    fn hold(&mut self, characteristic: u16, decoded: Decoded) -> usize {
        match self.partial.get_mut(&characteristic) {
            Some((held, parts)) => {
                held.merge(decoded);
                *parts += 1;
                *parts
            }
            None => {
                self.partial.insert(characteristic, (decoded, 1));
                1
            }
        }
    }

    fn complete(&mut self, characteristic: u16, decoded: Decoded) -> Decoded {
        match self.partial.remove(&characteristic) {
            Some((mut held, _)) => {
                held.merge(decoded);
                held.continuation = Continuation::Complete;
                held
            }
            None => decoded,
        }
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
            if dt > 0.0 {
                let metres = revs.wrapping_sub(revs0) as f64 * self.options.wheel_circumference_m;
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
            if dt > 0.0 {
                let turns = revs.wrapping_sub(revs0) as f64;
                decoded.values.push(Value {
                    field: "crank_cadence",
                    metric: "activity.cadence".into(),
                    value: turns / dt * 60.0,
                    unit: "/min",
                });
            }
        }
    }
}
