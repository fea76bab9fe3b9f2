//! The `lobsentry` launcher: configuration, the runtime that wires the standard dataflow from the
//! operators in [`lobsentry_operators`], the HTTP services and the commands.
//!
//! Modules depend in one direction: [`config`] -> [`alert`], [`metrics`], [`summary`] -> [`runtime`]
//! -> [`serve`] -> [`cmd`].

pub mod alert;
pub mod cmd;
pub mod config;
pub mod error;
pub mod metrics;
pub mod runtime;
pub mod serve;
pub mod summary;

pub use error::Error;
