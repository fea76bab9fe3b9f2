//! Sources: line decoders and streaming file readers (pure), and the `FileSource` and
//! `SyntheticSource` operators.

pub mod decode;
pub mod file;
pub mod kafka;
pub mod reader;
pub mod synthetic;

pub use decode::{DecodeError, Format};
pub use file::{file_source, FileSourceSpec};
pub use reader::{BoundedOutOfOrderness, FileReader, InputFile, ReaderSpec, Rejected};
pub use synthetic::{synthetic_source, SharedLabels, SyntheticSpec};
