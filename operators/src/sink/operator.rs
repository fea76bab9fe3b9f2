//! The `WriteWindows` operator: gathers window records on worker 0 and writes them in a
//! deterministic order once the frontier has passed them.

use super::WindowFormat;
use crate::features::WindowFeatures;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

/// Opens the writer; called once, on worker 0 only.
pub type WriterFactory = Box<dyn FnOnce() -> std::io::Result<Box<dyn Write>> + Send>;

/// Writes windows to one writer.
pub trait WriteWindows<'scope> {
    /// Sends every window to worker 0 and writes them in `(window end, instrument, window start)`
    /// order, each batch once the frontier has passed it, so the file is the same for any number of
    /// workers. Write errors are stored in `error` (the first one) and stop further writes; they never
    /// panic. Returns the input stream, for chaining a probe.
    ///
    /// # Examples
    /// ```
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT};
    /// use lobsentry_operators::sink::{WindowFormat, WriteWindows};
    /// use lobsentry_operators::window::Window;
    /// use std::sync::{Arc, Mutex};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// let w = |sym, start| WindowFeatures { instrument: InstrumentId::new(sym).unwrap(),
    ///     window: Window { start, end: start + 10 }, exec_price_range: None, vwap_ticks: None,
    ///     values: [0.0; FEATURE_COUNT] };
    /// let path = std::env::temp_dir().join(format!("lobsentry-doc-sink-{}.csv", std::process::id()));
    /// let p = path.clone();
    /// let error = Arc::new(Mutex::new(None));
    /// let e = error.clone();
    /// timely::example(move |scope| {
    ///     vec![w("B", 0), w("A", 10), w("A", 0)].to_stream(scope)
    ///         .write_windows(WindowFormat::W1Csv, Box::new(move || Ok(Box::new(std::fs::File::create(p)?))), e);
    /// });
    /// let text = std::fs::read_to_string(&path).unwrap();
    /// let firsts: Vec<_> = text.lines().skip(1).map(|l| &l[..4]).collect();
    /// assert_eq!(firsts, vec!["A,0,", "B,0,", "A,10"]);
    /// assert!(error.lock().unwrap().is_none());
    /// ```
    fn write_windows(
        self,
        format: WindowFormat,
        open: WriterFactory,
        error: Arc<Mutex<Option<String>>>,
    ) -> StreamVec<'scope, u64, WindowFeatures>;
}

impl<'scope> WriteWindows<'scope> for StreamVec<'scope, u64, WindowFeatures> {
    fn write_windows(
        self,
        format: WindowFormat,
        open: WriterFactory,
        error: Arc<Mutex<Option<String>>>,
    ) -> StreamVec<'scope, u64, WindowFeatures> {
        let index = self.scope().index();
        let pact = ExchangePact::new(|_: &WindowFeatures| 0u64);
        self.unary_frontier(pact, "WriteWindows", move |_cap, _info| {
            let fail = move |e: String| {
                if let Ok(mut slot) = error.lock() {
                    slot.get_or_insert(e);
                }
            };
            let mut writer: Option<Box<dyn Write>> = None;
            if index == 0 {
                match open() {
                    Ok(mut w) => {
                        let header = format.header().map(|h| h + "\n").unwrap_or_default();
                        match w.write_all(header.as_bytes()) {
                            Ok(()) => writer = Some(w),
                            Err(e) => fail(format!("cannot write the output header: {e}")),
                        }
                    }
                    Err(e) => fail(format!("cannot open the output: {e}")),
                }
            }
            let mut pending: BTreeMap<u64, Vec<WindowFeatures>> = BTreeMap::new();
            let mut text = String::new();
            let mut finished = false;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let mut session = output.session(&cap);
                    for batch in data {
                        // Keyed by window end, not by timestamp: windows closing together may travel
                        // at the earliest end's capability, and which of them do depends on how far
                        // the frontier jumped. A window's timestamp is at most its end, so all windows
                        // ending at E have arrived once the frontier passes E.
                        for w in batch.iter() {
                            pending.entry(w.window.end).or_default().push(w.clone());
                        }
                        session.give_container(batch);
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let mut windows = entry.remove();
                    windows.sort_by(|a, b| {
                        (a.window.end, a.instrument, a.window.start).cmp(&(b.window.end, b.instrument, b.window.start))
                    });
                    text.clear();
                    for w in &windows {
                        format.write(w, &mut text);
                    }
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.write_all(text.as_bytes()) {
                            fail(format!("cannot write the output: {e}"));
                            writer = None;
                        }
                    }
                }
                if frontier.is_empty() && !finished {
                    finished = true;
                    if let Some(mut w) = writer.take() {
                        if let Err(e) = w.flush() {
                            fail(format!("cannot flush the output: {e}"));
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::InstrumentId;
    use crate::features::FEATURE_COUNT;
    use crate::window::Window;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::Input;
    use timely::dataflow::InputHandle;

    /// Windows closing at the same end may arrive at different timestamps (a window operator sends
    /// windows that close together at the earliest end's capability); the file must not depend on it.
    #[test]
    fn order_is_by_window_end_whatever_the_timestamps() {
        let w = |sym, end: u64| WindowFeatures {
            instrument: InstrumentId::new(sym).unwrap(),
            window: Window { start: end - 10, end },
            exec_price_range: None,
            vwap_ticks: None,
            values: [0.0; FEATURE_COUNT],
        };
        let path = std::env::temp_dir().join(format!("lobsentry-sink-order-{}.csv", std::process::id()));
        let p = path.clone();
        let error = Arc::new(Mutex::new(None));
        let e = error.clone();
        timely::execute_directly(move |worker| {
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<WindowFeatures>>>::new();
            worker.dataflow::<u64, _, _>(|scope| {
                let open: WriterFactory = Box::new(move || Ok(Box::new(std::fs::File::create(p)?)));
                scope.input_from(&mut input).write_windows(WindowFormat::W1Csv, open, e);
            });
            // Stamp 10 carries windows ending at 10 and 20; another window ending at 20 comes at 20.
            input.send(w("B", 20));
            input.send(w("A", 10));
            input.advance_to(20);
            input.send(w("A", 20));
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let firsts: Vec<_> = text.lines().skip(1).map(|l| &l[..4]).collect();
        assert_eq!(firsts, vec!["A,0,", "A,10", "B,10"]);
        assert!(error.lock().unwrap().is_none());
    }
}
