//! thermo-core: the pure logic of thermo. No I/O, no async runtime.
//!
//! - [`key`]: canonical metric keys and their validation limits.
//! - [`statsd`]: the StatsD/DogStatsD line parser.
//! - [`window`]: minute and roll-up window arithmetic.
//! - [`aggregate`]: mergeable per-window states (counter, gauge, HDR histogram, set).
//! - [`accumulator`]: the agent's per-minute pre-aggregation.
//! - [`cumulative`]: running totals (OpenTelemetry cumulative sums and histograms) into deltas.
//! - [`buckets`]: bucketed histograms (OpenTelemetry's) into thermo's histogram state.
//! - [`demo`]: realistic demo traffic (StatsD lines of a few services).
//! - [`codec`]: versioned binary formats (agent batches, Kafka records, hot cells).
//! - [`json`]: the JSON ingest form.
//! - [`timefmt`]: unix seconds and RFC 3339 time parameters.
//! - [`query`]: statistics over merged states and the step/group arithmetic of queries.

pub mod accumulator;
pub mod aggregate;
pub mod buckets;
pub mod codec;
pub mod cumulative;
pub mod demo;
pub mod json;
pub mod key;
pub mod query;
pub mod statsd;
pub mod timefmt;
pub mod window;
