//! Launcher errors.

/// Everything the launcher reports as a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// Timely could not start or a worker failed.
    #[error("dataflow: {0}")]
    Timely(String),
    /// Input data that a command cannot use.
    #[error("{0}")]
    Data(String),
}

/// Maps an I/O error to [`Error::Io`] naming the path.
pub fn io_at(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{}: {e}", path.display()))
}
