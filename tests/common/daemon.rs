//! The real `fitedge` binary as a child process, and systemd's notify
//! socket for it.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fitedge::record::Record;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::*;

/// The real `fitedge` binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fitedge"))
}

/// The daemon as a child process, logging to `<dir>/gateway-<n>.log`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, n: usize) -> Daemon {
        let log = config.with_file_name(format!("gateway-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = binary()
            .args(["run", "--config"])
            .arg(config)
            .env("FITEDGE_LOG", "info,fitedge=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("fitedge binary starts");
        Daemon { child, log }
    }

    pub fn signal(&mut self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the process to end (bounded); its exit status.
    pub fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then asserts a clean exit within 15 s.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self
            .wait(Duration::from_secs(15))
            .expect("SIGTERM stops the daemon");
        assert!(
            status.success(),
            "clean exit: {status:?}\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running gateway's `/status`, as `fitedge status --json` prints it.
pub fn status_report(address: std::net::SocketAddr) -> serde_json::Value {
    let out = binary()
        .args(["status", "--json", "--address"])
        .arg(address.to_string())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status is JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn wait_for_port(daemon: &Daemon) {
    let opened = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().contains("Serial port opened.")
    });
    assert!(
        opened,
        "daemon opened its port; log:\n{}",
        daemon.log_text()
    );
}

/// A stand-in for systemd's notify socket: collects what the daemon sends.
pub struct NotifySocket {
    pub path: PathBuf,
    pub messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let messages: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => sink.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        if Arc::strong_count(&sink) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        NotifySocket { path, messages }
    }

    /// Times at which the daemon fed the watchdog.
    pub fn watchdog_times(&self) -> Vec<Instant> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.contains("WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn saw(&self, text: &str) -> bool {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains(text))
    }
}

impl Daemon {
    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(config: &Path, n: usize, env: &[(&str, String)]) -> Daemon {
        let log = config.with_file_name(format!("gateway-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = binary();
        command
            .args(["run", "--config"])
            .arg(config)
            .env("FITEDGE_LOG", "info,fitedge=debug")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            command.env(k, v);
        }
        Daemon {
            child: command.spawn().expect("fitedge binary starts"),
            log,
        }
    }
}
