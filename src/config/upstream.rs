//! The `[upstream]` section: the platform broker the gateway forwards to.

use std::time::Duration;

use super::raw::RawUpstream;
use super::{check_id, span, Upstream};
use crate::problem::{Problem, SourceText};

/// Validates `[upstream]`; the password is left for the environment stage.
pub(super) fn check_upstream(
    src: &SourceText,
    up: &RawUpstream,
    gateway_id: &str,
    problems: &mut Vec<Problem>,
) -> Upstream {
    if up.host.get_ref().trim().is_empty() {
        problems.push(src.problem(
            span(&up.host),
            "upstream host is empty",
            "set the platform broker's host name or address",
        ));
    }
    if *up.port.get_ref() == 0 {
        problems.push(src.problem(
            span(&up.port),
            "upstream port 0 is not a port",
            "use the broker's port, usually 1883 or 8883",
        ));
    }
    let keep_alive = *up.keep_alive_seconds.get_ref();
    if !(5..=3600).contains(&keep_alive) {
        problems.push(src.problem(
            span(&up.keep_alive_seconds),
            format!("keep_alive_seconds = {keep_alive} is outside 5..=3600"),
            "30 suits mobile uplinks",
        ));
    }
    let prefix = up.topic_prefix.get_ref();
    if prefix.is_empty()
        || prefix.contains(['+', '#'])
        || prefix.starts_with('/')
        || prefix.ends_with('/')
    {
        problems.push(src.problem(
            span(&up.topic_prefix),
            format!("topic_prefix \"{prefix}\" is not usable in a topic"),
            "use levels separated by '/', without '+', '#' or a leading/trailing '/'",
        ));
    }
    let window = *up.inflight_window.get_ref();
    if !(1..=1000).contains(&window) {
        problems.push(src.problem(
            span(&up.inflight_window),
            format!("inflight_window = {window} is outside 1..=1000"),
            "100 is a good default",
        ));
    }
    let min_ms = *up.reconnect_min_ms.get_ref();
    let max_s = *up.reconnect_max_seconds.get_ref();
    if min_ms == 0 || max_s == 0 || min_ms > max_s * 1000 {
        problems.push(src.problem(
            span(&up.reconnect_min_ms),
            format!("reconnect backoff {min_ms} ms .. {max_s} s is not a range"),
            "set 0 < reconnect_min_ms <= reconnect_max_seconds * 1000",
        ));
    }
    if *up.stall_seconds.get_ref() < 5 {
        problems.push(src.problem(
            span(&up.stall_seconds),
            format!("stall_seconds = {} is under 5", up.stall_seconds.get_ref()),
            "a broker may take a few seconds to acknowledge; 300 is the default",
        ));
    }
    if *up.backlog_per_second.get_ref() == 0 {
        problems.push(src.problem(
            span(&up.backlog_per_second),
            "backlog_per_second = 0 would never drain a backlog",
            "100 drains a week of a busy station in hours without flooding the platform",
        ));
    }
    let client_id = match &up.client_id {
        Some(id) => {
            check_id(src, "client_id", id, problems);
            id.get_ref().clone()
        }
        None => format!("fitedge-{gateway_id}"),
    };
    Upstream {
        host: up.host.get_ref().clone(),
        port: *up.port.get_ref(),
        client_id,
        keep_alive: Duration::from_secs(keep_alive),
        username: up.username.clone(),
        password: None,
        topic_prefix: prefix.clone(),
        inflight_window: window,
        reconnect_min: Duration::from_millis(min_ms),
        reconnect_max: Duration::from_secs(max_s),
        backlog_per_second: *up.backlog_per_second.get_ref(),
        stall: Duration::from_secs(*up.stall_seconds.get_ref()),
        tls: None,
        format: up.format,
    }
}
