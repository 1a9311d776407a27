//! herald-core: what the API, the worker and the scheduler share.
//!
//! Layers point down: [`domain`] (ids and parsed values) → [`store`] (sqlx functions) →
//! [`services`] (one use case each) → the transports in the other crates. [`queue`] is the
//! Redis queue engine; [`providers`] are who messages are handed to.

pub mod batch;
pub mod binary;
pub mod config;
pub mod db;
pub mod domain;
pub mod metrics;
pub mod providers;
pub mod queue;
pub mod ratelimit;
pub mod schedule;
pub mod services;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod views;

pub use config::Config;

/// Installs the process-wide TLS crypto provider (ring) once; reqwest and sqlx use it.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
