//! Serial source: reads a device on a serial port (RS-232, USB-CDC, or a
//! pseudo-terminal in tests) with tokio-serial.
//!
//! A port that is missing, vanishes or errors is reopened with backoff; the
//! state change is logged once, not every retry. An unplugged USB adapter
//! shows up as reads returning 0 bytes forever, so 0 means "gone".

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Backoff, DeviceContext};
use crate::config::{Parity, SerialSettings};
use crate::profile::DeviceDecoder;

/// Reads the device until `shutdown` is cancelled.
pub async fn run(ctx: DeviceContext, settings: SerialSettings, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut last_open_error: Option<String> = None;
    let mut buf = vec![0u8; 4096];
    loop {
        let mut port = match open(&settings) {
            Ok(port) => port,
            Err(e) => {
                let text = e.to_string();
                if last_open_error.as_deref() != Some(text.as_str()) {
                    warn!(message = "Serial port unavailable; retrying.", port = %settings.port.display(), error = %text, stage = "source");
                    ctx.stats
                        .set_error(format!("{}: {text}", settings.port.display()));
                    last_open_error = Some(text);
                } else {
                    debug!(message = "Serial port still unavailable.", port = %settings.port.display());
                }
                if !sleep_or_stop(backoff.next_delay(), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        info!(message = "Serial port opened.", port = %settings.port.display(), baud = settings.baud);
        last_open_error = None;
        backoff.reset();
        ctx.stats.connected.store(true, Relaxed);
        let mut decoder = DeviceDecoder::new(&ctx.profile, ctx.decode.clone());
        let reason = loop {
            tokio::select! {
                read = port.read(&mut buf) => match read {
                    Ok(0) => break "the port returned end of file (device unplugged?)".to_string(),
                    Ok(n) => {
                        if !ctx.ingest(&mut decoder, &buf[..n]).await {
                            return;
                        }
                    }
                    Err(e) => break e.to_string(),
                },
                _ = shutdown.cancelled() => {
                    ctx.stats.connected.store(false, Relaxed);
                    return;
                }
            }
        };
        ctx.stats.connected.store(false, Relaxed);
        ctx.stats
            .set_error(format!("{}: {reason}", settings.port.display()));
        warn!(message = "Serial port lost; reopening.", port = %settings.port.display(), error = %reason, stage = "source");
        drop(port);
        if !sleep_or_stop(backoff.next_delay(), &shutdown).await {
            return;
        }
    }
}

fn open(settings: &SerialSettings) -> tokio_serial::Result<tokio_serial::SerialStream> {
    let path = settings.port.to_string_lossy();
    tokio_serial::new(path, settings.baud)
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
