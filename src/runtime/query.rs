//! Queries from the API on their way to this process's first worker.

use lobsentry_operators::analytics::queries::Answer;
use lobsentry_operators::analytics::Query;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

/// What a worker sends back for a query.
#[derive(Debug)]
pub enum Reply {
    /// The dataflow's answer.
    Answer(Answer),
    /// The run stopped before answering.
    Stopped,
}

/// A query waiting for a worker.
#[derive(Debug)]
pub struct Request {
    /// The query.
    pub query: Query,
    /// Where the reply goes.
    pub reply: Sender<Reply>,
}

/// Queries of this process on their way to its first worker.
#[derive(Debug, Default)]
pub struct QueryHub {
    inbox: Mutex<Vec<Request>>,
    closed: AtomicBool,
}

impl QueryHub {
    /// Takes the waiting queries.
    pub fn drain(&self) -> Vec<Request> {
        self.inbox.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }

    /// Refuses new queries from now on and fails the waiting ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for r in self.drain() {
            let _ = r.reply.send(Reply::Stopped);
        }
    }

    /// Queues a query; `None` once the hub is closed.
    pub fn submit(&self, query: Query) -> Option<std::sync::mpsc::Receiver<Reply>> {
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        let (tx, rx) = channel();
        self.inbox.lock().ok()?.push(Request { query, reply: tx });
        Some(rx)
    }
}
