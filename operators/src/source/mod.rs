//! Sources: line decoders and streaming file readers (pure), and the `FileSource` and
//! `SyntheticSource` operators.

pub mod decode;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod reader;
pub mod synthetic;

pub use decode::{DecodeError, Format};
pub use file::{file_source, FileSourceSpec};
pub use reader::{BoundedOutOfOrderness, FileReader, InputFile, InputLimits, ReaderSpec, Rejected};
pub use synthetic::{synthetic_source, SharedLabels, SyntheticSpec};

/// Flow control shared by the sources: a source remembers the watermark after each batch it sent and
/// stops reading while the dataflow (its probe) is more than `max_ahead` batches behind, which bounds
/// memory when one source runs ahead of the others.
#[derive(Debug)]
pub(crate) struct FlowControl {
    probe: Option<timely::dataflow::ProbeHandle<u64>>,
    sent: std::collections::VecDeque<u64>,
    max_ahead: usize,
}

impl FlowControl {
    pub(crate) fn new(probe: Option<timely::dataflow::ProbeHandle<u64>>, max_ahead: usize) -> Self {
        FlowControl { probe, sent: Default::default(), max_ahead }
    }

    /// True while the dataflow lags too far behind what was sent.
    pub(crate) fn throttled(&mut self) -> bool {
        let Some(probe) = &self.probe else { return false };
        if self.sent.len() > self.max_ahead {
            if let Some(&old) = self.sent.front() {
                if probe.less_than(&old) {
                    return true;
                }
                self.sent.pop_front();
            }
        }
        false
    }

    /// Records a batch sent with the watermark `wm`.
    pub(crate) fn sent(&mut self, wm: u64) {
        self.sent.push_back(wm);
    }
}
