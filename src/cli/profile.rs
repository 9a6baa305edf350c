//! `fitedge profile check|test`: validate profiles and run their `[[test]]`
//! cases.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::problem::{render, Problem};
use crate::profile::{self, Profile};

use super::EXIT_CONFIG;

pub(super) fn load_profiles(
    paths: &[PathBuf],
) -> Result<Vec<Result<Profile, Vec<Problem>>>, Problem> {
    Ok(profile::collect_paths(paths)?
        .iter()
        .map(|p| Profile::load(p))
        .collect())
}

pub(super) fn profile_check(paths: &[PathBuf]) -> ExitCode {
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

pub(super) fn profile_test(paths: &[PathBuf]) -> ExitCode {
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
