//! Command-line interface: argument parsing and one function per command.
//! Thin over the library; errors become messages and exit codes here.

mod buffer;
mod daemon;
mod decode;
mod demo;
mod profile;
mod scan;
mod status;
mod tail;

pub use daemon::shutdown_signal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{self, Config};
use crate::problem::Problem;
use crate::profile::Profile;

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
    /// Subscribe to what gateways publish upstream: print readings, check
    /// every payload against the schemas, and report duplicates, sequence
    /// gaps, buffer epoch changes and gateways gone offline.
    Tail(tail::TailArgs),
    /// Show a running gateway's uplink, buffer, devices and counters.
    Status {
        /// The status endpoint (default: `[status] listen` of the config).
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
    Export {
        #[command(flatten)]
        args: BufferArgs,
        /// Write the quarantined (unreadable) slots instead.
        #[arg(long)]
        quarantine: bool,
    },
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
        Command::Run { config } => daemon::run_daemon(&config),
        Command::Check { config } => daemon::check(&config),
        Command::Demo(args) => demo::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Profile(ProfileCommand::Check { paths }) => profile::profile_check(&paths),
        Command::Profile(ProfileCommand::Test { paths }) => profile::profile_test(&paths),
        Command::Decode(args) => decode::decode(args),
        Command::Buffer(command) => buffer::buffer(command),
        Command::Tail(args) => tail::run(args),
        Command::Status {
            address,
            config,
            json,
        } => status::status(address, &config, json),
    }
}

/// Loads the config and every profile its devices use, collecting problems.
pub fn load(path: &Path) -> Result<(Config, HashMap<String, Profile>), Vec<Problem>> {
    config::load_with_profiles(path)
}

/// The multi-threaded runtime the daemon and the tools that do I/O run on.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
