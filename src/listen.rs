//! Accepting TCP connections on a box that may run out of descriptors:
//! a failed `accept` (`EMFILE` above all) pauses, from 10 ms doubling to
//! 1 s, instead of spinning on a listener that stays readable, and is
//! logged at most once per 10 s with a count of what was left out.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::backoff::LogLimit;

/// A listener whose `accept` never fails and never spins.
pub struct Acceptor {
    listener: TcpListener,
    /// What listens, for the log ("LAN broker", "status endpoint").
    what: &'static str,
    pause: Duration,
    log: LogLimit,
}

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl Acceptor {
    pub fn new(listener: TcpListener, what: &'static str) -> Acceptor {
        Acceptor {
            listener,
            what,
            pause: FIRST_PAUSE,
            log: LogLimit::new(Duration::from_secs(10)),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection; errors are waited out.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.pause = FIRST_PAUSE;
                    return accepted;
                }
                Err(e) => {
                    if let Some(suppressed) = self.log.allow() {
                        warn!(message = "Cannot accept connections; pausing.", listener = self.what, error = %e, pause_ms = self.pause.as_millis() as u64, suppressed);
                    }
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }
}
