//! lobsentry's integration tests: one binary, one module per area.
//!
//! * `windows`: W1 windows against a sort-and-group oracle; late-event accounting; 1 vs 2 workers;
//!   input permuted within the out-of-orderness bound.
//! * `inputs`: malformed input of every reader goes to the dead-letter file with file:line.
//! * `real_data`: LOBSTER replays and the full pipeline on ../shared/data.
//! * `cli`: the commands as a user types them.
//! * `model`: the shipped ONNX model through the real ONNX Runtime, and `lobsentry eval`.
//! * `kafka`: the Kafka source and writers against librdkafka's mock cluster and the tansu broker;
//!   SIGKILL and restart with checkpoints.
//! * `alerts`: email alerts against a real SMTP server (STARTTLS, login, rate limit).
//! * `analytics`: the query API against a naive oracle (1 and 2 workers, a 2-process cluster), bad
//!   requests, the webhook sink against a local server.
//! * `observability`: metrics, a real Prometheus scraping a 2-process cluster, cluster output.
//! * `store`: the PostgreSQL history against a real server (initdb + pg_ctl here).
//! * `runtime`: mismatched and broken clusters, failed writes, SIGTERM, secrets in `check-config`.

mod util;

mod alerts;
mod analytics;
mod cli;
mod inputs;
mod kafka;
mod model;
mod observability;
mod real_data;
mod runtime;
mod store;
mod windows;
