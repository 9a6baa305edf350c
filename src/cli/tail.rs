//! `fitedge tail`: a reference subscriber for platform developers and
//! installers. It subscribes to what gateways publish, validates every
//! payload against the schemas, prints readings (a table, or JSON lines) and
//! tells per gateway what a platform must handle: duplicates by id, `seq`
//! gaps within a buffer epoch, epoch changes, gateways gone offline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::config;
use crate::contract::{Notice, Schemas, Tally};
use crate::problem::render;

use super::EXIT_DATA;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The platform's broker, mqtt://HOST:PORT (default: `[upstream]` of the
    /// config, with its TLS and credentials).
    #[arg(long)]
    upstream: Option<String>,
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Only this site.
    #[arg(long)]
    site: Option<String>,
    /// Only this gateway.
    #[arg(long)]
    gateway: Option<String>,
    /// Only this device's readings (with its sub-devices); the checks still
    /// cover the whole gateway.
    #[arg(long)]
    device: Option<String>,
    /// Topic prefix (default: the config's `topic_prefix`, or fitedge).
    #[arg(long)]
    prefix: Option<String>,
    /// JSON lines: each record as received, each notice, then the summary.
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds (default: at Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

pub(super) fn run(args: TailArgs) -> ExitCode {
    let options = match connection(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("fitedge tail: {e:#}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge tail: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tally = runtime.block_on(tail(&args, options));
    summary(&tally, args.json);
    if tally.invalid > 0 {
        ExitCode::from(EXIT_DATA)
    } else {
        ExitCode::SUCCESS
    }
}

/// Where to connect and how: `--upstream`, or the config's `[upstream]`.
fn connection(args: &TailArgs) -> anyhow::Result<(MqttOptions, String)> {
    let id = format!("fitedge-tail-{}-{}", std::process::id(), fastrand::u32(..));
    if let Some(url) = &args.upstream {
        let (host, port) = super::demo::parse_upstream(url)?;
        let prefix = args.prefix.clone().unwrap_or_else(|| "fitedge".into());
        return Ok((MqttOptions::new(id, host, port), prefix));
    }
    let config = config::load(&args.config).map_err(|problems| {
        anyhow::anyhow!(
            "{}\n(or name the broker with --upstream mqtt://HOST:PORT)",
            render(&problems)
        )
    })?;
    let u = config.upstream;
    let mut options = MqttOptions::new(id, u.host, u.port);
    if let Some(user) = u.username {
        options.set_credentials(user, u.password.unwrap_or_default());
    }
    if let Some(tls) = &u.tls {
        options.set_transport(tls.transport());
    }
    Ok((options, args.prefix.clone().unwrap_or(u.topic_prefix)))
}

async fn tail(args: &TailArgs, (mut options, prefix): (MqttOptions, String)) -> Tally {
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let site = args.site.as_deref().unwrap_or("+");
    let gateway = args.gateway.as_deref().unwrap_or("+");
    // A device's sub-devices (`hub.band-07`) are topics of their own, so
    // the device is picked here rather than by the topic filter.
    let filters = [
        format!("{prefix}/{site}/{gateway}/records/#"),
        format!("{prefix}/{site}/{gateway}/status"),
    ];
    let wanted = |device: &str| {
        args.device.as_deref().is_none_or(|d| {
            device == d || device.strip_prefix(d).is_some_and(|r| r.starts_with('.'))
        })
    };
    let schemas = Schemas::new();
    let mut tally = Tally::default();
    let deadline = args
        .seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut last_error = String::new();
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                last_error.clear();
                for filter in &filters {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let (value, problems) = schemas.check(&p.payload);
                if !problems.is_empty() {
                    tally.invalid += 1;
                    say_invalid(&p.topic, &problems, args.json);
                    continue;
                }
                let Some(value) = value else { continue };
                // Every record counts (seq is per gateway); only the
                // wanted device's are shown.
                let notices = if value["schema"] == crate::uplink::STATUS_SCHEMA {
                    tally.status(&value)
                } else {
                    if wanted(text(&value["device_id"])) {
                        show_record(&value, args.json);
                    }
                    tally.record(&value)
                };
                for notice in notices {
                    show_notice(&notice, args.json);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    eprintln!("fitedge tail: cannot reach the broker: {text}; retrying");
                    last_error = text;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = sleep_until(deadline) => break,
                }
            }
        }
    }
    tally
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn show_record(record: &serde_json::Value, json: bool) {
    if json {
        println!("{record}");
        return;
    }
    let values: Vec<String> = record["values"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| format!("{}={} {}", text(&v["metric"]), v["value"], text(&v["unit"])))
        .collect();
    let session = match record["session"]["event"].as_str() {
        Some(event) => format!("session {event}"),
        None => String::new(),
    };
    println!(
        "{:<24}  {:<12}  {:<20}  seq {:>6}  {}{session}",
        text(&record["received_at"]),
        text(&record["gateway_id"]),
        text(&record["device_id"]),
        record["seq"],
        values.join(", "),
    );
}

fn show_notice(notice: &Notice, json: bool) {
    if json {
        println!("{}", serde_json::to_string(notice).unwrap_or_default());
        return;
    }
    match notice {
        Notice::Duplicate { gateway, id } => {
            println!("  {gateway}: record {id} again (a redelivery; drop it by id)")
        }
        Notice::Gap { gateway, from, to } => {
            println!("  {gateway}: seq {from}..={to} not (yet) received")
        }
        Notice::EpochChange { gateway, from, to } => {
            println!("  {gateway}: new buffer epoch {to} (was {from}): seq starts again")
        }
        Notice::Offline { gateway, at } => println!("  {gateway}: offline (status at {at})"),
    }
}

fn say_invalid(topic: &str, problems: &[String], json: bool) {
    if json {
        let line = serde_json::json!({ "event": "invalid", "topic": topic, "problems": problems });
        println!("{line}");
    } else {
        println!("  INVALID payload on {topic}: {}", problems.join("; "));
    }
}

fn summary(tally: &Tally, json: bool) {
    if json {
        let line = serde_json::json!({ "summary": tally });
        println!("{line}");
        return;
    }
    for (gateway, g) in &tally.gateways {
        println!(
            "{gateway}: {} records, {} duplicates, {} missing, {} epoch(s), {}",
            g.records,
            g.duplicates,
            g.missing,
            g.epochs.len(),
            if g.offline { "offline" } else { "online" }
        );
    }
    if tally.invalid > 0 {
        println!("{} payload(s) did not match the schemas", tally.invalid);
    }
}

fn text(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("")
}
