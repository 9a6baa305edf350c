//! A simulated height/weight station on a pseudo-terminal.
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

/// A height/weight station writing a frame every few milliseconds while
/// `running`; remembers the subject of every frame written.
pub struct Station {
    running: Arc<AtomicBool>,
    written: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Station {
    pub fn start(mut pty: fitedge::sim::Pty) -> Station {
        let running = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let written: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, s, w) = (running.clone(), stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(3);
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                if r.load(Ordering::Relaxed) {
                    n += 1;
                    let frame = fitedge::sim::Instrument::HeightWeight.frame(n, &mut rng);
                    if pty.write_frame(&frame.bytes).is_ok() {
                        w.lock().unwrap().push(psn(&frame.subject));
                    }
                }
                std::thread::sleep(Duration::from_millis(4));
            }
        });
        Station {
            running,
            written,
            stop,
            thread: Some(thread),
        }
    }

    pub fn pause(&self) {
        self.running.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
    }

    pub fn resume(&self) {
        self.running.store(true, Ordering::Relaxed);
    }

    pub fn written(&self) -> Vec<String> {
        self.written.lock().unwrap().clone()
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
