//! Command-line interface: argument parsing and one function per command.
//! Thin over the library; errors become messages and exit codes here.

mod demo;
mod scan;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::codec::{self, parse_hex};
use crate::config::{self, Config};
use crate::gatt;
use crate::problem::{render, Problem};
use crate::profile::{self, Profile};

/// Exit code for a configuration error (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for input data that does not decode (sysexits EX_DATAERR).
pub const EXIT_DATA: u8 = 65;
/// sysexits EX_USAGE: the command line is wrong.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "fitedge",
    version,
    about = "Edge gateway: station instruments to the county platform, durably"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing syntax), e.g. "debug" or "info,fitedge::uplink=debug".
    #[arg(long, global = true, env = "FITEDGE_LOG")]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway daemon.
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the config and every profile it uses; exit 78 on problems.
    Check {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run the whole pipeline on simulated devices and an embedded broker.
    Demo(demo::DemoArgs),
    /// List Bluetooth LE devices advertising nearby and the serial ports,
    /// with the profiles that would match each.
    Scan(scan::ScanArgs),
    /// Check or test device profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Decode a captured frame with a profile and print the values as JSON.
    Decode(DecodeArgs),
    /// Inspect a stopped gateway's buffer.
    #[command(subcommand)]
    Buffer(BufferCommand),
    /// Show a running gateway's uplink, buffer, devices and counters.
    Status {
        /// The status endpoint (default: [status] listen of the config).
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Counts and sizes, as JSON.
    Stats(BufferArgs),
    /// Read every unacknowledged record; exit 65 if any is unreadable.
    Verify(BufferArgs),
    /// Write every unacknowledged record as JSON lines to stdout.
    Export(BufferArgs),
}

#[derive(Debug, Args)]
pub struct BufferArgs {
    /// The buffer directory (default: buffer.dir of the config).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Validate profile files (or every *.toml in directories).
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run every [[test]] case of the profiles.
    Test {
        #[arg(default_value = "device-profiles")]
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "input")]
pub struct DecodeInput {
    /// The frame as hex digits.
    #[arg(long)]
    hex: Option<String>,
    /// The frame as text (escapes \r \n \t \xNN are understood).
    #[arg(long)]
    text: Option<String>,
    /// A capture file of raw bytes.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Profile file to decode with.
    #[arg(long, required_unless_present = "gatt")]
    profile: Option<PathBuf>,
    /// Decode one Bluetooth LE characteristic value (16-bit UUID, e.g.
    /// 2A37) with the built-in codec, or with --profile's gatt settings.
    #[arg(long, value_name = "UUID")]
    gatt: Option<String>,
    #[command(flatten)]
    input: DecodeInput,
}

/// Sets up logging to stderr.
pub fn init_logging(cli: &Cli) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = "info,rumqttd=off,rumqttc=warn";
    let filter = || {
        cli.log
            .as_deref()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new(default))
    };
    // Under systemd, log to the journal with structured fields (the device
    // span's id, profile, record id, stage, error) instead of text.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(journald.with_syslog_identifier("fitedge".into()))
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => run_daemon(&config),
        Command::Check { config } => check(&config),
        Command::Demo(args) => demo::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Profile(ProfileCommand::Check { paths }) => profile_check(&paths),
        Command::Profile(ProfileCommand::Test { paths }) => profile_test(&paths),
        Command::Decode(args) => decode(args),
        Command::Buffer(command) => buffer(command),
        Command::Status {
            address,
            config,
            json,
        } => status(address, &config, json),
    }
}

/// `decode --gatt`: one characteristic value, decoded on its own (a part
/// of a split record shows its own fields and `"continues": true`).
fn decode_gatt(spec: &gatt::Spec, uuid: &str, value: &[u8]) -> ExitCode {
    let Some(characteristic) = gatt::parse_uuid16(uuid) else {
        eprintln!("fitedge decode: --gatt {uuid} is not a 16-bit UUID such as 2A37");
        return ExitCode::from(EXIT_USAGE);
    };
    let codec = match spec.route(characteristic) {
        Ok(codec) => codec,
        Err(e) => {
            eprintln!("fitedge decode: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    let decoded = gatt::decode(codec, value, &spec.options()).and_then(|d| {
        let continues = d.continuation != gatt::Continuation::Complete;
        Ok((
            d.normalize(characteristic, codec, &spec.overrides)?,
            continues,
        ))
    });
    match decoded {
        Ok((m, continues)) => {
            let mut json = serde_json::json!({
                "characteristic": format!("{codec:04X}"),
                "values": m.values,
                "absent": m.absent,
            });
            if let Some(t) = m.device_time {
                json["device_time"] = t.into();
            }
            if !m.attributes.is_empty() {
                json["attributes"] = serde_json::to_value(m.attributes).unwrap_or_default();
            }
            if continues {
                json["continues"] = true.into();
            }
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "fitedge decode: {codec:04X} value {} rejected: {e}",
                codec::hex(value)
            );
            ExitCode::from(EXIT_DATA)
        }
    }
}

/// Loads the config and every profile its devices use, collecting problems.
pub fn load(path: &Path) -> Result<(Config, HashMap<String, Profile>), Vec<Problem>> {
    config::load_with_profiles(path)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run_daemon(path: &Path) -> ExitCode {
    let (config, profiles) = match load(path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!(
                "fitedge: the configuration has problems:\n{}",
                render(&problems)
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = crate::gateway::Handle::default();
    let result = rt.block_on(async move {
        reload_on_sighup(handle.reload.clone());
        crate::gateway::run(config, profiles, handle, shutdown_signal()).await
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(message = "Gateway failed.", error = %e);
            ExitCode::FAILURE
        }
    }
}

/// Notifies `reload` on every SIGHUP (a task on the current runtime).
fn reload_on_sighup(reload: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!(message = "SIGHUP received.");
                    reload.notify_one();
                }
            });
        }
        Err(e) => {
            tracing::warn!(message = "Cannot listen for SIGHUP; profile reload is off.", error = %e)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!(message = "SIGTERM received."),
                _ = int.recv() => tracing::info!(message = "SIGINT received."),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok((config, profiles)) => {
            println!(
                "{}: OK (gateway {}, site {}, {} device(s), {} profile(s))",
                path.display(),
                config.gateway_id,
                config.site_id,
                config.devices.len(),
                profiles.len()
            );
            for device in &config.devices {
                let config::DeviceTransport::Serial(s) = &device.transport else {
                    continue;
                };
                if !s.port.resolve().is_some_and(|p| p.exists()) {
                    println!("note: device \"{}\": serial port {} is not present now; the gateway will wait for it", device.id, s.port);
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}", render(&problems));
            eprintln!("{} problem(s) found.", problems.len());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn load_profiles(paths: &[PathBuf]) -> Result<Vec<Result<Profile, Vec<Problem>>>, Problem> {
    Ok(profile::collect_paths(paths)?
        .iter()
        .map(|p| Profile::load(p))
        .collect())
}

fn profile_check(paths: &[PathBuf]) -> ExitCode {
    let loaded = match load_profiles(paths) {
        Ok(l) => l,
        Err(p) => {
            eprintln!("{p}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut bad = 0;
    for result in &loaded {
        match result {
            Ok(p) => println!("ok    {} ({})", p.id, p.path.display()),
            Err(problems) => {
                bad += 1;
                eprintln!("{}", render(problems));
            }
        }
    }
    println!("{} profile(s) checked, {} with problems", loaded.len(), bad);
    if bad > 0 {
        ExitCode::from(EXIT_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

fn profile_test(paths: &[PathBuf]) -> ExitCode {
    let loaded = match load_profiles(paths) {
        Ok(l) => l,
        Err(p) => {
            eprintln!("{p}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for result in &loaded {
        match result {
            Ok(p) => {
                for outcome in p.run_tests() {
                    match outcome.failure {
                        None => {
                            passed += 1;
                            println!("pass  {} / {}", p.id, outcome.name);
                        }
                        Some(why) => {
                            failed += 1;
                            println!(
                                "FAIL  {} / {} ({}:{}): {why}",
                                p.id,
                                outcome.name,
                                p.path.display(),
                                outcome.line
                            );
                        }
                    }
                }
            }
            Err(problems) => {
                failed += 1;
                println!("FAIL  {}", render(problems));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn decode(args: DecodeArgs) -> ExitCode {
    let profile = match args.profile.as_deref().map(Profile::load).transpose() {
        Ok(p) => p,
        Err(problems) => {
            eprintln!("{}", render(&problems));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let input = if let Some(hex) = &args.input.hex {
        parse_hex(hex).map_err(|e| format!("--hex: {e}"))
    } else if let Some(text) = &args.input.text {
        Ok(unescape(text))
    } else if let Some(file) = &args.input.file {
        std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))
    } else {
        Err("give --hex, --text or --file".to_string())
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => {
            eprintln!("fitedge decode: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    };
    if let Some(uuid) = &args.gatt {
        let spec = match profile.as_ref().map(|p| &p.decode) {
            Some(profile::DecodeSpec::Gatt(spec)) => spec.clone(),
            Some(_) => {
                eprintln!("fitedge decode: --gatt needs a gatt profile, or no --profile for the built-in codec");
                return ExitCode::from(EXIT_USAGE);
            }
            None => gatt::Spec::default(),
        };
        return decode_gatt(&spec, uuid, &input);
    }
    let Some(profile) = profile else {
        eprintln!("fitedge decode: give --profile, or --gatt for a Bluetooth LE value");
        return ExitCode::from(EXIT_USAGE);
    };
    let outcomes = profile.decode_all(&input, &Default::default());
    if outcomes.is_empty() {
        eprintln!(
            "fitedge decode: the input holds no complete frame for profile {}",
            profile.id
        );
        return ExitCode::from(EXIT_DATA);
    }
    let mut ok = true;
    for outcome in outcomes {
        match outcome {
            Ok(m) => {
                let json = serde_json::json!({
                    "profile": profile.id,
                    "values": m.values,
                    "subject_ref": m.subject_ref,
                    "absent": m.absent,
                    "device_time": m.device_time,
                    "attributes": m.attributes,
                });
                println!("{json}");
            }
            Err(f) => {
                ok = false;
                eprintln!(
                    "fitedge decode: frame {} rejected: {}",
                    codec::hex(&f.raw),
                    f.error
                );
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DATA)
    }
}

fn status(address: Option<std::net::SocketAddr>, path: &Path, json: bool) -> ExitCode {
    let address = address
        .or_else(|| config::load(path).ok().and_then(|c| c.status_listen))
        .or_else(|| config::DEFAULT_STATUS.parse().ok());
    let Some(address) = address else {
        eprintln!(
            "fitedge status: the status endpoint is disabled in {}",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    match crate::report::fetch(address) {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", crate::report::render(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fitedge status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn buffer(command: BufferCommand) -> ExitCode {
    let (BufferCommand::Stats(args) | BufferCommand::Verify(args) | BufferCommand::Export(args)) =
        &command;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => match config::load(&args.config) {
            Ok(c) => c.buffer.dir,
            Err(problems) => {
                eprintln!("{}", render(&problems));
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let failed = |e: crate::outbox::OutboxError| {
        eprintln!("fitedge buffer: {e} (is the gateway still running? stop it first)");
        ExitCode::FAILURE
    };
    match command {
        BufferCommand::Stats(_) | BufferCommand::Verify(_) => {
            let report = match crate::outbox::inspect(&dir) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            if let BufferCommand::Stats(_) = command {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            for problem in &report.problems {
                println!("bad   {problem}");
            }
            println!(
                "{}: {} unacknowledged record(s) read, {} unreadable",
                dir.display(),
                report.pending,
                report.problems.len()
            );
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DATA)
            }
        }
        BufferCommand::Export(_) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match crate::outbox::export(&dir, &mut out) {
                Ok(n) => {
                    drop(out);
                    eprintln!(
                        "fitedge buffer: exported {n} record(s) from {}",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
    }
}

/// `\r`, `\n`, `\t`, `\\` and `\xNN` escapes in `--text`.
fn unescape(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let (byte, used) = match bytes[i + 1] {
                b'r' => (Some(b'\r'), 2),
                b'n' => (Some(b'\n'), 2),
                b't' => (Some(b'\t'), 2),
                b'\\' => (Some(b'\\'), 2),
                b'x' => (
                    text.get(i + 2..i + 4)
                        .and_then(|h| u8::from_str_radix(h, 16).ok()),
                    4,
                ),
                _ => (None, 1),
            };
            if let Some(b) = byte {
                out.push(b);
                i += used;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_understands_common_escapes() {
        assert_eq!(unescape(r"A=1\r\n\x02\\"), b"A=1\r\n\x02\\");
        assert_eq!(unescape(r"\q"), b"\\q");
    }
}
