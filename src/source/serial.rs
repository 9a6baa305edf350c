//! Serial source: reads a device on a serial port (RS-232, USB-CDC, or a
//! pseudo-terminal in tests) with tokio-serial, and for request/response
//! devices writes the profile's request on its schedule.
//!
//! A port that is missing, vanishes or errors is reopened with backoff; the
//! state change is logged once, not every retry. An unplugged USB adapter
//! shows up as reads returning 0 bytes forever, so 0 means "gone". A new
//! profile (after a reload) takes effect at the next frame boundary.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::poll::{Action, Poller};
use super::{Backoff, DeviceContext};
use crate::config::{Parity, SerialSettings};

/// Why the read loop ended.
enum End {
    Stop,
    Lost(String),
}

/// Reads the device until `shutdown` is cancelled.
pub async fn run(mut ctx: DeviceContext, settings: SerialSettings, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut last_open_error: Option<String> = None;
    loop {
        let opened = match settings.port.resolve() {
            Some(path) => open(&settings, &path)
                .map(|port| (port, path))
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no USB serial adapter {} is plugged in",
                settings.port
            )),
        };
        let (port, path) = match opened {
            Ok(opened) => opened,
            Err(text) => {
                if last_open_error.as_deref() != Some(text.as_str()) {
                    warn!(message = "Serial port unavailable; retrying.", port = %settings.port, error = %text, stage = "source");
                    ctx.stats.set_error(format!("{}: {text}", settings.port));
                    last_open_error = Some(text);
                } else {
                    debug!(message = "Serial port still unavailable.", port = %settings.port);
                }
                if !sleep_or_stop(backoff.next_delay(), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        info!(message = "Serial port opened.", port = %path.display(), baud = settings.baud);
        last_open_error = None;
        backoff.reset();
        ctx.stats.connected.store(true, Relaxed);
        let end = read_port(&mut ctx, port, &shutdown).await;
        ctx.stats.connected.store(false, Relaxed);
        match end {
            End::Stop => return,
            End::Lost(reason) => {
                ctx.stats.set_error(format!("{}: {reason}", path.display()));
                warn!(message = "Serial port lost; reopening.", port = %path.display(), error = %reason, stage = "source");
            }
        }
        if !sleep_or_stop(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

/// Reads (and polls) one open port until it fails or the gateway stops.
async fn read_port(
    ctx: &mut DeviceContext,
    mut port: tokio_serial::SerialStream,
    shutdown: &CancellationToken,
) -> End {
    let mut buf = vec![0u8; 4096];
    let mut decoder = ctx.decoder();
    let now = tokio::time::Instant::now();
    let mut poller = ctx
        .profile
        .borrow()
        .request
        .as_ref()
        .map(|r| Poller::new(r, now));
    let mut request = ctx
        .profile
        .borrow()
        .request
        .as_ref()
        .map(|r| r.bytes())
        .unwrap_or_default();
    let mut reloads = true;
    let mut silent_logged = false;
    loop {
        let wakeup = poller.as_ref().map(Poller::wakeup);
        tokio::select! {
            read = port.read(&mut buf) => match read {
                Ok(0) => return End::Lost("the port returned end of file (device unplugged?)".into()),
                Ok(n) => {
                    let Some(frames) = ctx.ingest(&mut decoder, &buf[..n]).await else { return End::Stop };
                    if let Some(p) = poller.as_mut().filter(|_| frames > 0) {
                        if p.on_reply(tokio::time::Instant::now()) {
                            silent_logged = false;
                            info!(message = "Device answering again.");
                        }
                    }
                }
                Err(e) => return End::Lost(e.to_string()),
            },
            _ = sleep_until(wakeup), if wakeup.is_some() => {
                let Some(p) = poller.as_mut() else { continue };
                match p.on_timer(tokio::time::Instant::now()) {
                    Action::Send => {
                        if let Err(e) = port.write_all(&request).await {
                            return End::Lost(format!("writing the request failed: {e}"));
                        }
                    }
                    Action::GaveUp => {
                        ctx.stats.requests_unanswered.fetch_add(1, Relaxed);
                        ctx.stats.set_error("no reply to the profile's request");
                        if !std::mem::replace(&mut silent_logged, true) {
                            warn!(message = "Device not answering its request; will keep asking.", stage = "source");
                        }
                    }
                    Action::Nothing => {}
                }
            }
            changed = ctx.profile.changed(), if reloads => {
                reloads = changed.is_ok();
                if reloads {
                    decoder = ctx.decoder();
                    let profile = ctx.profile.borrow();
                    poller = profile.request.as_ref().map(|r| Poller::new(r, tokio::time::Instant::now()));
                    request = profile.request.as_ref().map(|r| r.bytes()).unwrap_or_default();
                    info!(message = "Profile reloaded for this device.", profile = %profile.id);
                }
            }
            _ = shutdown.cancelled() => return End::Stop,
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn open(
    settings: &SerialSettings,
    path: &std::path::Path,
) -> tokio_serial::Result<tokio_serial::SerialStream> {
    tokio_serial::new(path.to_string_lossy(), settings.baud)
        .parity(match settings.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Odd => tokio_serial::Parity::Odd,
            Parity::Even => tokio_serial::Parity::Even,
        })
        .data_bits(match settings.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .stop_bits(match settings.stop_bits {
            2 => tokio_serial::StopBits::Two,
            _ => tokio_serial::StopBits::One,
        })
        .open_native_async()
}

/// Sleeps for `delay`; `false` if `shutdown` came first.
async fn sleep_or_stop(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}
