//! A bank built with decider: the example to read first, and to copy.
//!
//! - [`account`] and [`transfer`]: the domain, as pure deciders with their specifications.
//! - [`process`]: the transfer process manager that moves money between accounts, compensating
//!   when the destination refuses.
//! - [`read_model`]: balances and ledgers, kept by a projection runner.
//! - [`bank`]: the application that wires them to a store; [`http`] and [`demo`] use it.
//! - [`store_url`]: the `--store` URL, and whether this build has the store it names (features
//!   `sqlite` and `postgres`, on by default, and `eventstoredb`).
//! - [`metrics`]: `GET /metrics`, the process's metrics in Prometheus' text format.
//! - `otlp` (feature `otlp`): span export over OTLP, parented from the events' trace contexts.
//!
//! `cargo run -p banking -- demo` runs a scripted day at the bank on the in-memory store;
//! `cargo run -p banking -- serve` serves the HTTP API (see the README).

// Amounts are minor units written the way money reads: `100_00` is 100.00.
#![allow(clippy::inconsistent_digit_grouping)]

pub mod account;
pub mod bank;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod money;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod process;
pub mod read_model;
pub mod store_url;
pub mod transfer;
