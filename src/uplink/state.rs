//! The uplink session's rules, apart from I/O: what is in flight, what to
//! publish next, and what a CONNACK with or without a session means. The
//! event loop in `mod.rs` feeds it what rumqttc reports and does what it
//! says; every rule here is unit-tested without a broker.
//!
//! Two lanes: records accepted since the (re)connect go out at once (live);
//! the backlog from before goes out oldest first beside them, paced to
//! `backlog_per_second`. At most `window` publishes are in flight.
//!
//! Packet ids: `publish()` does not return one, so publishes handed to
//! rumqttc wait in a FIFO and are paired with the ids as rumqttc reports
//! each outgoing publish. A publish re-sent with an id that is already in
//! flight is a retransmission and pairs with nothing new.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Sequence numbers carried by one publish; empty for a status message.
pub type Seqs = Vec<u64>;

/// Which lane a publish went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Live,
    Backlog,
}

/// What the I/O loop must do after a CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Records that were in flight and go out again from the outbox.
    pub republished: u64,
    /// rumqttc dropped its pending publishes: its queued events for ones it
    /// never flushed must be forgotten too, or they would pair with ours.
    pub forget_unsent: bool,
}

#[derive(Debug)]
pub struct Session {
    window: usize,
    /// Handed to rumqttc, packet id not yet known.
    queued: VecDeque<Seqs>,
    /// Packet id -> records awaiting its PUBACK.
    by_pkid: HashMap<u16, Seqs>,
    /// Backlog lane: next record to publish, and where the backlog ends.
    backlog_next: u64,
    backlog_end: u64,
    /// Live lane: next record at or after `backlog_end` to publish.
    live_next: u64,
    pace: Pace,
}

impl Session {
    /// A session over an outbox holding `tail..head`, before any connect:
    /// everything stored is backlog.
    pub fn new(window: usize, backlog_per_second: u32, tail: u64, head: u64) -> Session {
        let mut session = Session {
            window: window.max(1),
            queued: VecDeque::new(),
            by_pkid: HashMap::new(),
            backlog_next: 0,
            backlog_end: 0,
            live_next: 0,
            pace: Pace::new(backlog_per_second, Instant::now()),
        };
        session.restart(tail, head);
        session
    }

    /// Publishes handed to rumqttc and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.queued.len() + self.by_pkid.len()
    }

    /// Records in those publishes.
    pub fn records_in_flight(&self) -> usize {
        self.queued
            .iter()
            .chain(self.by_pkid.values())
            .map(Vec::len)
            .sum()
    }

    /// Free places in the in-flight window.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.in_flight())
    }

    /// A CONNACK arrived. Without a session rumqttc dropped everything it
    /// held, so the backlog becomes everything unacknowledged (`tail..head`)
    /// and live starts at `head`. With one, what piled up while the link was
    /// down joins the paced backlog instead of going out at once.
    pub fn connected(&mut self, session_present: bool, tail: u64, head: u64) -> Reconnect {
        if session_present {
            if !self.backlog_left() {
                self.backlog_next = self.live_next;
            }
            self.backlog_end = head.max(self.backlog_end);
            self.live_next = head.max(self.live_next);
            return Reconnect {
                republished: 0,
                forget_unsent: false,
            };
        }
        let republished = self.records_in_flight() as u64;
        self.restart(tail, head);
        Reconnect {
            republished,
            forget_unsent: true,
        }
    }

    fn restart(&mut self, tail: u64, head: u64) {
        self.queued.clear();
        self.by_pkid.clear();
        self.backlog_next = tail;
        self.backlog_end = head;
        self.live_next = head;
    }

    /// The first record the live lane has not published.
    pub fn live_from(&self) -> u64 {
        self.live_next
    }

    /// The backlog range to read now, at most `want` records as the pace
    /// allows: `(from, to, max)`, or `None` when nothing may go.
    pub fn backlog_reads(&mut self, want: usize, now: Instant) -> Option<(u64, u64, usize)> {
        if !self.backlog_left() || want == 0 {
            return None;
        }
        let allowed = self.pace.take(want, now);
        (allowed > 0).then_some((self.backlog_next, self.backlog_end, allowed))
    }

    /// A publish carrying `seqs` was handed to rumqttc on `lane`.
    pub fn queued(&mut self, seqs: Seqs, lane: Lane) {
        if let Some(last) = seqs.last() {
            match lane {
                Lane::Live => self.live_next = self.live_next.max(last + 1),
                Lane::Backlog => self.backlog_next = self.backlog_next.max(last + 1),
            }
        }
        self.queued.push_back(seqs);
    }

    /// A status message was handed to rumqttc.
    pub fn queued_status(&mut self) {
        self.queued.push_back(Vec::new());
    }

    /// A backlog read came back short: the rest was acknowledged meanwhile.
    pub fn backlog_done(&mut self) {
        self.backlog_next = self.backlog_end;
    }

    /// rumqttc sent a publish with `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.by_pkid.contains_key(&pkid) {
            return; // QoS 0, or a retransmission of one already paired
        }
        if let Some(seqs) = self.queued.pop_front() {
            self.by_pkid.insert(pkid, seqs);
        }
    }

    /// A PUBACK arrived: the records it releases (none for a status
    /// message, or a PUBACK already seen).
    pub fn acked(&mut self, pkid: u16) -> Seqs {
        self.by_pkid.remove(&pkid).unwrap_or_default()
    }

    pub fn backlog_left(&self) -> bool {
        self.backlog_next < self.backlog_end
    }

    /// When the pace allows the next backlog record, if the loop should
    /// wake for it.
    pub fn pace_at(&self) -> Option<Instant> {
        (self.backlog_left() && self.room() > 0).then(|| self.pace.next_at())
    }
}

/// A token bucket pacing the backlog lane.
#[derive(Debug)]
struct Pace {
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl Pace {
    fn new(per_second: u32, now: Instant) -> Pace {
        Pace {
            per_second: per_second.max(1) as f64,
            tokens: 0.0,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.updated = now;
    }

    /// How many backlog records may go now, at most `want`.
    fn take(&mut self, want: usize, now: Instant) -> usize {
        self.refill(now);
        let n = (self.tokens.floor() as usize).min(want);
        self.tokens -= n as f64;
        n
    }

    /// When the next token is due.
    fn next_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.updated + Duration::from_secs_f64(missing / self.per_second)
    }
}

#[cfg(test)]
mod tests;
