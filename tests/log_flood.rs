//! Logs a hostile or broken instrument cannot flood: random bytes and
//! corrupt frames storm two serial ports of the real binary, at the
//! production log level; each device logs a bounded number of lines, no
//! line carries a frame's bytes, and an ID card's number appears nowhere.

mod common;

use std::time::{Duration, Instant};

use common::{enable_status, status_report, wait_for_port, write_config, Daemon, DeviceEntry};
use fitedge::sim::Pty;

/// The ID card reader profile's reference frame with its XOR byte
/// corrupted: a checksum failure that carries a name, an address and an ID
/// number.
const BAD_CARD: &str = "AAAAAA9669010800009001000000205F094E2000200020002000200020002000200020002000200020002000310030003100310039003400390031003200330031001753AC4E025E1C4ECE573A536F66715C4D5257883400F753200020002000200020002000200020002000200020002000200020002000200020002000200020002000200020003100310030003100300035003100390034003900310032003300310030003000320058001753AC4E025E6C51895B405C1C4ECE570652405C2000200020002000200032003000310035003000310030003100320030003300350030003100300031002000200020002000200020002000200020002000200020002000200020002000200020007B";
/// The vertical-jump mat's reference frame with a wrong CRC.
const BAD_JUMP: &str = "A55A07316E1403000000BDDB";
/// The card's ID number as it stands in the frame (UCS-2), and as text.
const ID_UCS2: &str = "310031003000310030003500310039003400390031003200330031003000300032005800";
const ID_TEXT: &str = "11010519491231002X";

/// Writes `frame` and some line noise to `pty` until `until`.
fn storm(
    mut pty: Pty,
    frame: &'static str,
    until: Instant,
    seed: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let frame = fitedge::codec::parse_hex(frame).unwrap();
        let mut rng = fastrand::Rng::with_seed(seed);
        while Instant::now() < until {
            let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(64).collect();
            if pty.write_frame(&frame).is_err() || pty.write_frame(&noise).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_storm_of_bad_frames_logs_a_few_lines_and_no_frame() {
    let dir = tempfile::tempdir().unwrap();
    let card = Pty::open().unwrap();
    let jump = Pty::open().unwrap();
    let config = write_config(
        dir.path(),
        common::free_port(),
        &[
            DeviceEntry {
                id: "card-1",
                profile: "id-card-reader-sam",
                port: &card.path,
            },
            DeviceEntry {
                id: "jump-1",
                profile: "vertical-jump-header-crc16",
                port: &jump.path,
            },
        ],
    );
    let status = enable_status(&config);
    let mut daemon = Daemon::start_with_env(&config, 0, &[("FITEDGE_LOG", "info".into())]);
    // The daemon logs "Serial port opened." at info: wait for both.
    wait_for_port(&daemon);
    let both = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        daemon.log_text().matches("Serial port opened.").count() >= 2
    });
    assert!(both, "{}", daemon.log_text());

    let until = Instant::now() + Duration::from_secs(4);
    let storms = [
        storm(card, BAD_CARD, until, 1),
        storm(jump, BAD_JUMP, until, 2),
    ];
    for s in storms {
        s.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let report = status_report(status);
    let devices = &report["health"]["counters"]["devices"];
    let bad = |id: &str| devices[id]["frames_bad"].as_u64().unwrap_or(0);
    daemon.stop();
    let log = daemon.log_text();
    assert!(
        bad("card-1") >= 100 && bad("jump-1") >= 100,
        "the storm reached the decoders: {} and {} bad frames",
        bad("card-1"),
        bad("jump-1")
    );
    for device in ["card-1", "jump-1"] {
        let lines = log
            .lines()
            .filter(|l| l.contains("Frame rejected.") && l.contains(device))
            .count();
        assert!(
            (1..=2).contains(&lines),
            "{device}: {lines} rejection lines for {} bad frames",
            bad(device)
        );
    }
    assert!(
        !log.contains("hex="),
        "no frame bytes at info level:\n{log}"
    );
    for secret in [ID_UCS2, &ID_UCS2.to_lowercase(), ID_TEXT] {
        assert!(!log.contains(secret), "the card's number is in the log");
    }
    assert!(
        log.len() < 32 * 1024,
        "{} bytes of log for {} bad frames",
        log.len(),
        bad("card-1") + bad("jump-1")
    );
    println!(
        "log flood: {} bad frames, {} log lines, {} bytes",
        bad("card-1") + bad("jump-1"),
        log.lines().count(),
        log.len()
    );
}
