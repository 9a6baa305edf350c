//! The `fitedge` command: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = fitedge::cli::Cli::parse();
    fitedge::cli::init_logging(&cli);
    fitedge::cli::run(cli)
}
