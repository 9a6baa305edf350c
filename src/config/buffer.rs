//! The `[buffer]` section: the durable outbox's place and limits.

use std::path::Path;
use std::time::Duration;

use super::raw::RawBuffer;
use super::{resolve, span, Buffer};
use crate::problem::{Problem, SourceText};

/// Validates `[buffer]` (or its defaults, when the file leaves it out).
pub(super) fn check_buffer(
    src: &SourceText,
    base: &Path,
    b: &RawBuffer,
    problems: &mut Vec<Problem>,
) -> Buffer {
    let max_records = *b.max_records.get_ref();
    if !(16..=100_000_000).contains(&max_records) {
        problems.push(src.problem(
            span(&b.max_records),
            format!("buffer max_records = {max_records} is outside 16..=100000000"),
            "size it for a week of readings; 200000 is the default",
        ));
    }
    let max_record_bytes = *b.max_record_bytes.get_ref();
    if !(512..=1024 * 1024).contains(&max_record_bytes) {
        problems.push(src.problem(
            span(&b.max_record_bytes),
            format!("buffer max_record_bytes = {max_record_bytes} is outside 512..=1048576"),
            "16384 is the default",
        ));
    }
    let cache_bytes = *b.cache_bytes.get_ref();
    if !(1024 * 1024..=1024 * 1024 * 1024).contains(&cache_bytes) {
        problems.push(src.problem(
            span(&b.cache_bytes),
            format!("buffer cache_bytes = {cache_bytes} is outside 1 MiB..=1 GiB"),
            "8388608 (8 MiB) suits a 512 MB box",
        ));
    }
    if let Some(max_bytes) = &b.max_bytes {
        if *max_bytes.get_ref() < 64 * 1024 {
            problems.push(src.problem(
                span(max_bytes),
                format!("buffer max_bytes = {} is under 64 KiB", max_bytes.get_ref()),
                "size it for the backlog of a long outage, e.g. 268435456 (256 MiB)",
            ));
        }
    }
    if let Some(hours) = &b.max_age_hours {
        if *hours.get_ref() == 0 {
            problems.push(src.problem(
                span(hours),
                "buffer max_age_hours = 0 would drop every record",
                "remove it to keep records until delivered, or set the hours",
            ));
        }
    }
    let flush_window_ms = *b.flush_window_ms.get_ref();
    if flush_window_ms > 10_000 {
        problems.push(src.problem(
            span(&b.flush_window_ms),
            format!("buffer flush_window_ms = {flush_window_ms} is over 10 s"),
            "a power cut loses up to this window of readings; 0-1000 ms is usual",
        ));
    }
    Buffer {
        dir: resolve(base, b.dir.get_ref()),
        max_records,
        max_record_bytes,
        full_policy: b.full_policy,
        cache_bytes,
        max_bytes: b.max_bytes.as_ref().map(|m| *m.get_ref()),
        max_age: (b.max_age_hours.as_ref()).map(|h| Duration::from_secs(h.get_ref() * 3600)),
        flush_window: Duration::from_millis(flush_window_ms),
    }
}
