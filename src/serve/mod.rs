//! The HTTP services of a run: the query API and the metrics / health endpoints.

pub mod api;
pub mod http;
pub mod metrics;
