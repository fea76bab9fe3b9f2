//! Helpers for tests and doc examples.

use std::sync::mpsc::Receiver;
use timely::dataflow::operators::capture::Event;

/// Everything a `capture()` received, in arrival order (timely's `extract` sorts and needs `Ord`).
pub fn captured<T, D>(rx: Receiver<Event<T, Vec<D>>>) -> Vec<D> {
    let mut out = Vec::new();
    for event in rx.try_iter() {
        if let Event::Messages(_, data) = event {
            out.extend(data);
        }
    }
    out
}

/// Like [`captured`], with each record's timestamp.
pub fn captured_timed<T: Clone, D>(rx: Receiver<Event<T, Vec<D>>>) -> Vec<(T, D)> {
    let mut out = Vec::new();
    for event in rx.try_iter() {
        if let Event::Messages(stamp, data) = event {
            let time = stamp.into_elements().into_iter().next();
            if let Some(time) = time {
                out.extend(data.into_iter().map(|d| (time.clone(), d)));
            }
        }
    }
    out
}
