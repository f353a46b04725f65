//! The end-to-end tests: the real `thermo` binary with real services on loopback, one module per
//! area, in one test binary (one link after an edit instead of one per file).
//!
//! Run one area with a name filter: `cargo test --workspace --test e2e -- cold::` (or `agent_spool::`, `cold_store::`, `intake::`, `limits::`, `logs::`, `otlp::`, `pipeline::`, `prom::`, `prom_differential::`, `remote_write::`,
//! `series_registry::`, `standalone::`, `browser::`, `loadgen::`, `vmalert::`). `support` starts the services and holds the tests'
//! clock.

mod support;

mod agent_spool;
mod auth;
mod browser;
mod cold;
mod cold_store;
mod hot_store;
mod intake;
mod kafka_partitions;
mod limits;
mod loadgen;
mod logs;
mod otlp;
mod pipeline;
mod prom;
mod prom_differential;
mod remote_write;
mod series_registry;
mod standalone;
mod tls;
mod vmalert;
