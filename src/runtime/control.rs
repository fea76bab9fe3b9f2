//! How a run stops: a failure anywhere stops every worker with one message; a stop request
//! (SIGINT/SIGTERM) stops reading and lets the sinks flush. Side files report their write errors.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Shared by the workers of a process and the thread that started them.
#[derive(Debug, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Control {
    /// A control whose stop requests come from `stop` (set by a signal handler).
    pub fn new(stop: Arc<AtomicBool>) -> Control {
        Control { stop, ..Control::default() }
    }

    /// Records a failure (the first one is the run's message) and stops every worker.
    pub fn fail(&self, message: impl Into<String>) {
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert_with(|| message.into());
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// True once any worker or sink failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first failure.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// True once a stop was requested (the run then ends without reading further).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Requests a stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

static LAST_PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default panic output (a message per thread, with backtraces) with nothing: the
/// runtime catches a worker's panic and reports it once, with its location, and the panics that
/// follow it in other threads (broken connections) say nothing new. For binaries only.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        if let (Some(l), Ok(mut slot)) = (info.location(), LAST_PANIC_LOCATION.lock()) {
            slot.get_or_insert_with(|| format!("{}:{}", l.file(), l.line()));
        }
    }));
}

/// Where the first panic happened (when [`quiet_panics`] is installed).
pub fn last_panic_location() -> Option<String> {
    LAST_PANIC_LOCATION.lock().ok().and_then(|l| l.clone())
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a worker panicked".to_string()
    }
}

/// A side output file (alerts, scores, dead letters, late events) shared by a process's workers. A
/// write that fails fails the run, naming the file; nothing is dropped silently.
#[derive(Clone, Debug)]
pub struct SideFile {
    what: &'static str,
    path: PathBuf,
    out: Arc<Mutex<Option<BufWriter<File>>>>,
    control: Arc<Control>,
}

impl SideFile {
    /// Creates `path` (with a header line, if any); an error names the file.
    pub fn create(
        what: &'static str,
        path: &Path,
        header: Option<&str>,
        control: Arc<Control>,
    ) -> Result<SideFile, String> {
        let described = |e: std::io::Error| format!("{what} {}: {e}", path.display());
        let mut out = BufWriter::new(File::create(path).map_err(described)?);
        if let Some(h) = header {
            writeln!(out, "{h}").map_err(described)?;
        }
        Ok(SideFile { what, path: path.to_path_buf(), out: Arc::new(Mutex::new(Some(out))), control })
    }

    fn error(&self, e: std::io::Error) -> String {
        format!("writing the {} {}: {e}", self.what, self.path.display())
    }

    /// Appends one line. A write error fails the run (the file is closed; later lines are refused).
    pub fn line(&self, line: &str) {
        let Ok(mut guard) = self.out.lock() else { return };
        let Some(out) = guard.as_mut() else { return };
        if let Err(e) = writeln!(out, "{line}") {
            guard.take();
            self.control.fail(self.error(e));
        }
    }

    /// Flushes what was written so far (the file stays open).
    pub fn flush(&self) {
        let Ok(mut guard) = self.out.lock() else { return };
        let Some(out) = guard.as_mut() else { return };
        if let Err(e) = out.flush() {
            guard.take();
            self.control.fail(self.error(e));
        }
    }

    /// Flushes and closes the file.
    pub fn close(&self) -> Result<(), String> {
        let Ok(mut guard) = self.out.lock() else { return Ok(()) };
        let Some(mut out) = guard.take() else { return Ok(()) };
        out.flush().map_err(|e| self.error(e))
    }
}

impl crate::alert::AlertSink for SideFile {
    fn name(&self) -> &str {
        self.what
    }

    fn send(&self, alert: &crate::alert::Alert) {
        self.line(&alert.to_json());
    }

    fn finish(&self, _grace: std::time::Duration) -> Result<Option<String>, String> {
        self.close().map(|()| None)
    }

    fn sync(&self, _timeout: std::time::Duration) -> Result<(), String> {
        self.flush();
        Ok(())
    }
}
