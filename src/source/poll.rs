//! Polling for request/response devices: when to send the profile's
//! request, when a reply is overdue, and when the device counts as not
//! answering. Pure state; the serial source does the I/O.

use std::time::Duration;

use tokio::time::Instant;

use crate::profile::RequestSpec;

/// What the source should do when the poller's timer fires.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write the request.
    Send,
    /// The device gave no reply to the request and its retries.
    GaveUp,
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Next request due at this time.
    Idle { next: Instant },
    /// Request sent; `attempts` so far, reply due by `deadline`.
    Waiting {
        sent: Instant,
        deadline: Instant,
        attempts: u32,
    },
}

#[derive(Debug)]
pub struct Poller {
    every: Duration,
    timeout: Duration,
    retries: u32,
    state: State,
    /// The device has not answered its last request cycle.
    pub silent: bool,
}

impl Poller {
    /// A poller that sends its first request at once.
    pub fn new(spec: &RequestSpec, now: Instant) -> Poller {
        Poller {
            every: Duration::from_millis(spec.every_ms),
            timeout: Duration::from_millis(spec.timeout_ms),
            retries: spec.retries,
            state: State::Idle { next: now },
            silent: false,
        }
    }

    /// When the timer should next fire.
    pub fn wakeup(&self) -> Instant {
        match self.state {
            State::Idle { next } => next,
            State::Waiting { deadline, .. } => deadline,
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> Action {
        match self.state {
            State::Idle { next } if now >= next => {
                self.state = State::Waiting {
                    sent: now,
                    deadline: now + self.timeout,
                    attempts: 1,
                };
                Action::Send
            }
            State::Waiting {
                sent,
                deadline,
                attempts,
            } if now >= deadline => {
                if attempts <= self.retries {
                    self.state = State::Waiting {
                        sent,
                        deadline: now + self.timeout,
                        attempts: attempts + 1,
                    };
                    Action::Send
                } else {
                    self.state = State::Idle {
                        next: (sent + self.every).max(now),
                    };
                    self.silent = true;
                    Action::GaveUp
                }
            }
            _ => Action::Nothing,
        }
    }

    /// A reply (any complete frame) arrived. Returns `true` when the device
    /// had been silent before.
    pub fn on_reply(&mut self, now: Instant) -> bool {
        if let State::Waiting { sent, .. } = self.state {
            self.state = State::Idle {
                next: (sent + self.every).max(now),
            };
        }
        std::mem::take(&mut self.silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RequestSpec {
        toml::from_str("command = \"*wei?\\n\"\nevery_ms = 1000\ntimeout_ms = 200\nretries = 2")
            .unwrap()
    }

    #[test]
    fn sends_at_once_then_every_period_after_replies() {
        let t0 = Instant::now();
        let mut p = Poller::new(&spec(), t0);
        assert_eq!(p.on_timer(t0), Action::Send);
        assert_eq!(p.wakeup(), t0 + Duration::from_millis(200));
        assert!(!p.on_reply(t0 + Duration::from_millis(50)));
        assert_eq!(p.wakeup(), t0 + Duration::from_millis(1000));
        assert_eq!(p.on_timer(t0 + Duration::from_millis(500)), Action::Nothing);
        assert_eq!(p.on_timer(t0 + Duration::from_millis(1000)), Action::Send);
    }

    #[test]
    fn retries_then_gives_up_and_recovers() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Poller::new(&spec(), t0);
        assert_eq!(p.on_timer(t0), Action::Send);
        assert_eq!(p.on_timer(ms(200)), Action::Send, "retry 1");
        assert_eq!(p.on_timer(ms(400)), Action::Send, "retry 2");
        assert_eq!(p.on_timer(ms(600)), Action::GaveUp);
        assert!(p.silent);
        assert_eq!(
            p.wakeup(),
            ms(1000),
            "next cycle one period after the first send"
        );
        assert_eq!(p.on_timer(ms(1000)), Action::Send);
        assert!(p.on_reply(ms(1100)), "answering again is reported");
        assert!(!p.silent);
    }
}
