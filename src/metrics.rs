//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo feature `metrics`):
//! install any recorder (Prometheus, StatsD, OpenTelemetry) and the client reports to it.
//! Names and units follow the Prometheus conventions; every name is a constant here.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `sfstream_events_delivered_total` | counter | `channel` | events handed to subscriptions |
//! | `sfstream_event_bytes_received_total` | counter | `channel` | bytes of those events' JSON |
//! | `sfstream_pending_events` | gauge | | events delivered, not yet taken (at each round trip and pause) |
//! | `sfstream_connect_round_trips_total` | counter | `outcome` (`ok`, `error`) | `/meta/connect` requests |
//! | `sfstream_connect_duration_seconds` | histogram | | their duration (a long poll: up to the server's 110 s hold) |
//! | `sfstream_rehandshakes_total` | counter | | sessions lost and handshaken again |
//! | `sfstream_relogins_total` | counter | | access tokens refreshed after the server rejected one |
//! | `sfstream_replay_gaps_total` | counter | `channel` | replay ids outside the retention window |
//! | `sfstream_stalls_total` | counter | `channel` | stalled subscriptions resubscribed |
//! | `sfstream_marker_writes_total` | counter | `outcome` (`ok`, `error`) | replay markers written to the storage |
//! | `sfstream_marker_write_duration_seconds` | histogram | | their duration |
//! | `sfstream_marker_lag` | gauge | `channel` | newest delivered replay id minus newest stored (at each round trip and write) |
//! | `sfstream_backpressure_pause_duration_seconds` | histogram | | each backpressure pause (its sum: time paused) |
//!
//! Per-event work is a counter update per run of same-channel events in a response, never
//! more; with the feature off every hook compiles to nothing.
//!
//! ```no_run
//! # fn f() -> Result<(), Box<dyn std::error::Error>> {
//! // Any `metrics` recorder; here metrics-exporter-prometheus without its HTTP listener.
//! // let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! // ... serve handle.render() at /metrics (examples/metrics.rs).
//! # Ok(()) }
//! ```

// Without the feature the module is private and its names unused.
#![cfg_attr(not(feature = "metrics"), allow(unreachable_pub, dead_code))]
/// Events handed to subscriptions, per `channel`.
pub const EVENTS_DELIVERED: &str = "sfstream_events_delivered_total";
/// Bytes of delivered events' JSON, per `channel`.
pub const EVENT_BYTES_RECEIVED: &str = "sfstream_event_bytes_received_total";
/// Events delivered and not yet taken by a consumer.
pub const PENDING_EVENTS: &str = "sfstream_pending_events";
/// `/meta/connect` round trips, per `outcome`.
pub const CONNECT_ROUND_TRIPS: &str = "sfstream_connect_round_trips_total";
/// Duration of `/meta/connect` round trips.
pub const CONNECT_DURATION: &str = "sfstream_connect_duration_seconds";
/// Rehandshakes.
pub const REHANDSHAKES: &str = "sfstream_rehandshakes_total";
/// Re-logins after the server rejected the access token.
pub const RELOGINS: &str = "sfstream_relogins_total";
/// Replay gaps, per `channel`.
pub const REPLAY_GAPS: &str = "sfstream_replay_gaps_total";
/// Stalled subscriptions resubscribed, per `channel`.
pub const STALLS: &str = "sfstream_stalls_total";
/// Replay marker writes, per `outcome`.
pub const MARKER_WRITES: &str = "sfstream_marker_writes_total";
/// Duration of replay marker writes.
pub const MARKER_WRITE_DURATION: &str = "sfstream_marker_write_duration_seconds";
/// Newest delivered replay id minus newest stored, per `channel`.
pub const MARKER_LAG: &str = "sfstream_marker_lag";
/// Backpressure pauses and their length.
pub const BACKPRESSURE_PAUSE_DURATION: &str = "sfstream_backpressure_pause_duration_seconds";

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

#[cfg(feature = "metrics")]
mod on {
    use super::*;
    use crate::event::Event;
    use ::metrics::histogram;
    use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
    use std::time::Duration;

    fn outcome(ok: bool) -> &'static str {
        if ok { "ok" } else { "error" }
    }

    /// Describe every metric to the installed recorder (units and help texts).
    pub(crate) fn describe() {
        describe_counter!(
            EVENTS_DELIVERED,
            Unit::Count,
            "Events handed to subscriptions"
        );
        describe_counter!(
            EVENT_BYTES_RECEIVED,
            Unit::Bytes,
            "Bytes of delivered events' JSON"
        );
        describe_gauge!(
            PENDING_EVENTS,
            Unit::Count,
            "Events delivered, not yet taken"
        );
        describe_counter!(
            CONNECT_ROUND_TRIPS,
            Unit::Count,
            "/meta/connect round trips"
        );
        describe_histogram!(CONNECT_DURATION, Unit::Seconds, "/meta/connect duration");
        describe_counter!(REHANDSHAKES, Unit::Count, "Sessions handshaken again");
        describe_counter!(
            RELOGINS,
            Unit::Count,
            "Access tokens refreshed after a rejection"
        );
        describe_counter!(
            REPLAY_GAPS,
            Unit::Count,
            "Replay ids outside the retention window"
        );
        describe_counter!(STALLS, Unit::Count, "Stalled subscriptions resubscribed");
        describe_counter!(MARKER_WRITES, Unit::Count, "Replay marker writes");
        describe_histogram!(
            MARKER_WRITE_DURATION,
            Unit::Seconds,
            "Replay marker write duration"
        );
        describe_gauge!(MARKER_LAG, "Newest delivered replay id minus newest stored");
        describe_histogram!(
            BACKPRESSURE_PAUSE_DURATION,
            Unit::Seconds,
            "Backpressure pauses"
        );
    }

    /// Events about to be handed out: one update per run of same-channel events.
    pub(crate) fn delivered(events: &[Event]) {
        let mut i = 0;
        while i < events.len() {
            let channel = events[i].channel();
            let (mut n, mut bytes) = (0u64, 0u64);
            while i < events.len() && events[i].channel() == channel {
                n += 1;
                bytes += events[i].data().get().len() as u64;
                i += 1;
            }
            counter!(EVENTS_DELIVERED, "channel" => channel.to_owned()).increment(n);
            counter!(EVENT_BYTES_RECEIVED, "channel" => channel.to_owned()).increment(bytes);
        }
    }

    pub(crate) fn pending(n: usize) {
        gauge!(PENDING_EVENTS).set(n as f64);
    }

    pub(crate) fn connect(duration: Duration, ok: bool) {
        counter!(CONNECT_ROUND_TRIPS, "outcome" => outcome(ok)).increment(1);
        histogram!(CONNECT_DURATION).record(duration.as_secs_f64());
    }

    pub(crate) fn rehandshake() {
        counter!(REHANDSHAKES).increment(1);
    }

    pub(crate) fn relogin() {
        counter!(RELOGINS).increment(1);
    }

    pub(crate) fn replay_gap(channel: &str) {
        counter!(REPLAY_GAPS, "channel" => channel.to_owned()).increment(1);
    }

    pub(crate) fn stall(channel: &str) {
        counter!(STALLS, "channel" => channel.to_owned()).increment(1);
    }

    pub(crate) fn marker_write(duration: Duration, ok: bool) {
        counter!(MARKER_WRITES, "outcome" => outcome(ok)).increment(1);
        histogram!(MARKER_WRITE_DURATION).record(duration.as_secs_f64());
    }

    pub(crate) fn marker_lag(channel: &str, lag: i64) {
        gauge!(MARKER_LAG, "channel" => channel.to_owned()).set(lag as f64);
    }

    pub(crate) fn paused(duration: Duration) {
        histogram!(BACKPRESSURE_PAUSE_DURATION).record(duration.as_secs_f64());
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    use crate::event::Event;
    use std::time::Duration;

    pub(crate) fn describe() {}
    pub(crate) fn delivered(_: &[Event]) {}
    pub(crate) fn pending(_: usize) {}
    pub(crate) fn connect(_: Duration, _: bool) {}
    pub(crate) fn rehandshake() {}
    pub(crate) fn relogin() {}
    pub(crate) fn replay_gap(_: &str) {}
    pub(crate) fn stall(_: &str) {}
    pub(crate) fn marker_write(_: Duration, _: bool) {}
    pub(crate) fn marker_lag(_: &str, _: i64) {}
    pub(crate) fn paused(_: Duration) {}
}
