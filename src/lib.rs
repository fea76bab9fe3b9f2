//! The `lobsentry` launcher: configuration, CLI commands and the standard pipeline assembled from the
//! operators in [`lobsentry_operators`].

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod eval;
pub mod generate;
pub mod http;
pub mod inject;
pub mod launch;
pub mod metrics;
pub mod metrics_server;
pub mod pipeline;
pub mod produce;
pub mod replay;
pub mod summary;
pub mod webhook;

pub use error::Error;
