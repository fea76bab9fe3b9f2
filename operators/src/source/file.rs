//! The `FileSource` operator: replays files on every worker, holding a capability at the watermark.

use super::decode::Format;
use super::reader::{FileReader, InputFile, InputLimits, ReaderSpec, Rejected};
use crate::event::{LobEvent, Timed};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// Files whose watermark is this far (or the out-of-orderness bound, if larger) ahead of the slowest
/// file of the same worker pause until it catches up.
pub const ALIGNMENT_SLACK_NS: u64 = 1_000_000_000;

/// Options of [`file_source`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSourceSpec {
    /// The files, in a fixed order (their index goes into each event's `seq`).
    pub files: Vec<InputFile>,
    /// Out-of-orderness bound of the watermark, in ns.
    pub bound_ns: u64,
    /// Lines read per activation (over all of a worker's files).
    pub batch_lines: usize,
    /// Lines per chunk when a file is shared by several workers.
    pub chunk_lines: u64,
    /// Share files among workers by chunks when there are fewer files than workers.
    pub split_files: bool,
    /// Flow control: stop reading while the dataflow lags this many batches behind this source.
    pub max_batches_ahead: usize,
    /// Line length and time-jump limits.
    pub limits: InputLimits,
}

impl FileSourceSpec {
    /// Defaults for a list of files and a bound.
    pub fn new(files: Vec<InputFile>, bound_ns: u64) -> Self {
        FileSourceSpec {
            files,
            bound_ns,
            batch_lines: 1 << 15,
            chunk_lines: 1 << 14,
            split_files: true,
            max_batches_ahead: 8,
            limits: InputLimits::default(),
        }
    }

    /// Which files (and which share of each) worker `index` of `peers` reads.
    pub fn assignment(&self, index: usize, peers: usize) -> Vec<(InputFile, ReaderSpec)> {
        let stripe = self.split_files && self.files.len() < peers;
        let mut out = Vec::new();
        for (i, file) in self.files.iter().enumerate() {
            let base = ReaderSpec {
                file_index: i as u32,
                stride: 1,
                offset: 0,
                chunk_lines: self.chunk_lines,
                bound_ns: self.bound_ns,
                limits: self.limits,
            };
            if stripe && file.format != Format::JsonLines {
                out.push((file.clone(), ReaderSpec { stride: peers as u32, offset: index as u32, ..base }));
            } else if i % peers == index {
                out.push((file.clone(), base));
            }
        }
        out
    }
}

/// Reads files into `(events, rejected lines)`.
///
/// Each worker reads its share (see [`FileSourceSpec::assignment`]) and holds a capability at the
/// smallest watermark of its files (max event time seen minus the bound), so the dataflow's frontier is
/// the watermark. A worker reads its files in step: a file more than [`ALIGNMENT_SLACK_NS`] (or the
/// bound) ahead of its slowest file waits. At the end of its files a worker drops its capabilities. When a `probe` is given, a
/// worker stops reading while the probe's frontier lags more than `max_batches_ahead` of its own
/// batches behind, which bounds memory when one worker runs ahead of the others.
///
/// # Examples
/// ```
/// use lobsentry_operators::source::{file_source, FileSourceSpec, InputFile};
/// use lobsentry_operators::testing::captured;
/// use timely::dataflow::operators::Capture;
/// let dir = std::env::temp_dir().join(format!("lobsentry-doc-file-source-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("events.csv");
/// std::fs::write(&path, "ts_ns,instrument,type,order_id,size,price,side\n5,A,1,1,10,100,1\noops\n").unwrap();
/// let spec = FileSourceSpec::new(vec![InputFile::guess(&path).unwrap()], 0);
/// let (events, errors) = timely::example(move |scope| {
///     let (ok, err) = file_source(scope, spec, None);
///     (ok.capture(), err.capture())
/// });
/// assert_eq!(captured(events).into_iter().count(), 1);
/// let errors: Vec<_> = captured(errors).into_iter().collect();
/// assert_eq!(errors[0].line, 3);
/// ```
pub fn file_source<'scope>(
    scope: Scope<'scope, u64>,
    spec: FileSourceSpec,
    probe: Option<ProbeHandle<u64>>,
) -> (StreamVec<'scope, u64, Timed<LobEvent>>, StreamVec<'scope, u64, Rejected>) {
    let mut builder = OperatorBuilder::new("FileSource".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (events_out, events) = builder.new_output();
    let (errors_out, errors) = builder.new_output();
    let mut events_out = OutputBuilder::from(events_out);
    let mut errors_out = OutputBuilder::from(errors_out);
    let assignment = spec.assignment(scope.index(), scope.peers());

    builder.build(move |mut caps| {
        let mut errors_cap: Option<Capability<u64>> = caps.pop();
        let mut events_cap: Option<Capability<u64>> = caps.pop();
        let mut readers: Vec<FileReader> = Vec::new();
        let mut open_errors: Vec<Rejected> = Vec::new();
        for (input, reader_spec) in assignment {
            match FileReader::open(input.clone(), reader_spec) {
                Ok(r) => readers.push(r),
                Err(e) => open_errors.push(Rejected {
                    origin: input.path.display().to_string(),
                    line: 0,
                    reason: format!("cannot open: {e}"),
                    text: String::new(),
                    raw: None,
                }),
            }
        }
        let mut batch: Vec<Timed<LobEvent>> = Vec::new();
        let mut rejected: Vec<Rejected> = open_errors;
        let mut flow = super::FlowControl::new(probe, spec.max_batches_ahead);
        move |_frontiers| {
            let (Some(ev_cap), Some(err_cap)) = (events_cap.as_mut(), errors_cap.as_mut()) else { return };
            // Flow control: wait while the dataflow is far behind what this worker already sent.
            if flow.throttled() {
                activator.activate();
                return;
            }
            // Watermark alignment: files far ahead of the slowest one wait for it, so events of one
            // file are not buffered downstream while another file is still far behind.
            let slowest = readers.iter().map(|r| r.watermark()).min().unwrap_or(0);
            let limit = slowest.saturating_add(spec.bound_ns.max(ALIGNMENT_SLACK_NS));
            let active = readers.iter().filter(|r| r.watermark() <= limit).count().max(1);
            let share = (spec.batch_lines / active).max(1);
            for reader in readers.iter_mut().filter(|r| r.watermark() <= limit) {
                reader.read_batch(share, &mut batch, &mut rejected);
            }
            if !batch.is_empty() {
                events_out.activate().session(&*ev_cap).give_container(&mut batch);
                batch.clear();
            }
            if !rejected.is_empty() {
                errors_out.activate().session(&*err_cap).give_container(&mut rejected);
                rejected.clear();
            }
            readers.retain(|r| !r.is_done());
            match readers.iter().map(|r| r.watermark()).min() {
                Some(wm) => {
                    if wm > *ev_cap.time() {
                        ev_cap.downgrade(&wm);
                        err_cap.downgrade(&wm);
                    }
                    flow.sent(wm);
                    activator.activate();
                }
                None => {
                    events_cap = None;
                    errors_cap = None;
                }
            }
        }
    });
    (events, errors)
}
