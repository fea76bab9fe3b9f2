//! Aligned, event-time checkpoints of operator state.
//!
//! A checkpoint is taken at a *barrier* `B = k * interval + 1` (event time, ns). Sources emit only
//! records ordered before the barrier and hold their capability at `B` until the checkpoint is
//! complete; records at or after `B` wait in the source (and are part of its state). When a worker's
//! probe frontier reaches exactly `B`, every record before `B` has been processed by every operator
//! and no record at or after `B` exists anywhere in the dataflow, and no window ends at `B` (window
//! ends are multiples of the slide, `B` is one past such a multiple), so nothing is in flight: the
//! worker serialises the state of each registered operator ([`StateRegistry`]) between two steps
//! and writes it as one part file. When the parts of all workers exist the checkpoint is complete
//! (a `COMPLETE` marker), and the sources move on to the next barrier.
//!
//! Files: `<dir>/ckpt-<barrier>/part-<worker>.bin` (bincode 1.3, written to a temporary name, then
//! renamed) and `<dir>/ckpt-<barrier>/COMPLETE`. A restart reads the latest complete checkpoint; each
//! operator gets its own state back when it registers ([`StateRegistry::register`]).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// State an operator can save and be rebuilt from.
pub trait Snapshot {
    /// The operator's state, serialised.
    fn snapshot(&mut self) -> Result<Vec<u8>, String>;
}

impl<F: FnMut() -> Result<Vec<u8>, String>> Snapshot for F {
    fn snapshot(&mut self) -> Result<Vec<u8>, String> {
        self()
    }
}

/// Serialises a value with bincode 1.3.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(value).map_err(|e| e.to_string())
}

/// Deserialises a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| e.to_string())
}

#[derive(Default)]
struct RegistryInner {
    operators: Vec<(String, Box<dyn Snapshot>)>,
    restore: BTreeMap<String, Vec<u8>>,
    barrier: Option<Rc<Barrier>>,
}

/// The stateful operators of one worker (worker-local, not `Send`). Operators register in the order
/// the dataflow is built, which is the same on every run of the same program, so the names match
/// across restarts.
#[derive(Clone, Default)]
pub struct StateRegistry {
    inner: Rc<RefCell<RegistryInner>>,
}

impl std::fmt::Debug for StateRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("StateRegistry")
            .field("operators", &inner.operators.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("restoring", &inner.restore.len())
            .finish()
    }
}

impl StateRegistry {
    /// An empty registry (a fresh start).
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry that hands each operator the state a checkpoint part recorded for it.
    pub fn restoring(part: &Part) -> Self {
        let registry = Self::new();
        registry.inner.borrow_mut().restore = part.operators.iter().cloned().collect();
        registry
    }

    /// Registers an operator's state under `kind` (made unique by a counter: `book#0`, `book#1`, ...)
    /// and returns the state to restore it from, if the checkpoint has one.
    pub fn register(&self, kind: &str, state: impl Snapshot + 'static) -> Option<Vec<u8>> {
        let mut inner = self.inner.borrow_mut();
        let n = inner.operators.iter().filter(|(name, _)| name.split('#').next() == Some(kind)).count();
        let name = format!("{kind}#{n}");
        let restored = inner.restore.remove(&name);
        inner.operators.push((name, Box::new(state)));
        restored
    }

    /// Names of the registered operators, in order.
    pub fn names(&self) -> Vec<String> {
        self.inner.borrow().operators.iter().map(|(n, _)| n.clone()).collect()
    }

    /// States in the checkpoint that no operator claimed (the dataflow changed since it was taken).
    pub fn unclaimed(&self) -> Vec<String> {
        self.inner.borrow().restore.keys().cloned().collect()
    }

    /// Serialises every registered operator.
    pub fn snapshot_all(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut inner = self.inner.borrow_mut();
        let mut out = Vec::with_capacity(inner.operators.len());
        for (name, op) in inner.operators.iter_mut() {
            out.push((name.clone(), op.snapshot().map_err(|e| format!("{name}: {e}"))?));
        }
        Ok(out)
    }

    /// The barrier the sources of this worker follow (created on first use).
    pub fn barrier(&self) -> Rc<Barrier> {
        self.inner.borrow_mut().barrier.get_or_insert_with(|| Rc::new(Barrier::disabled())).clone()
    }

    /// Sets the barrier schedule (before the sources are built).
    pub fn set_barrier(&self, barrier: Barrier) {
        self.inner.borrow_mut().barrier = Some(Rc::new(barrier));
    }
}

/// Where the sources of a worker must stop: the next checkpoint barrier, shared between the sources
/// and the worker loop that takes the checkpoint.
#[derive(Debug)]
pub struct Barrier {
    interval_ns: u64,
    /// The barrier sources must not pass (`u64::MAX` when checkpoints are off).
    next: Cell<u64>,
    /// The smallest watermark the sources of this worker reported since the last checkpoint
    /// (`u64::MAX`: none, or all done).
    watermark: Cell<u64>,
    /// A time beyond everything the sources of this worker emitted and at or past their
    /// capabilities: a barrier pulled in ([`Coordinator::with_max_wait`]) may not be below it.
    reached: Cell<u64>,
}

impl Barrier {
    /// No checkpoints: sources never stop.
    pub fn disabled() -> Self {
        Barrier { interval_ns: 0, next: Cell::new(u64::MAX), watermark: Cell::new(u64::MAX), reached: Cell::new(0) }
    }

    /// Barriers every `interval_ns` of event time, the first one after `resume_from` (the barrier of
    /// the checkpoint restored from, or 0).
    ///
    /// ```
    /// use lobsentry_operators::checkpoint::Barrier;
    /// let b = Barrier::every(10, 0);
    /// assert_eq!(b.next(), 11);
    /// b.move_to(b.after(b.next()));
    /// assert_eq!(b.next(), 21);
    /// assert_eq!(Barrier::every(10, 21).next(), 31);
    /// ```
    pub fn every(interval_ns: u64, resume_from: u64) -> Self {
        assert!(interval_ns > 1, "checkpoint interval must exceed 1 ns");
        let b = Barrier { interval_ns, next: Cell::new(0), watermark: Cell::new(u64::MAX), reached: Cell::new(0) };
        b.next.set(b.after(resume_from));
        b
    }

    /// The barrier sources must not pass now.
    pub fn next(&self) -> u64 {
        self.next.get()
    }

    /// True when checkpoints are on.
    pub fn enabled(&self) -> bool {
        self.interval_ns > 0
    }

    /// The first barrier after `ts`.
    pub fn after(&self, ts: u64) -> u64 {
        if self.interval_ns == 0 {
            return u64::MAX;
        }
        (ts / self.interval_ns + 1).saturating_mul(self.interval_ns).saturating_add(1)
    }

    /// Moves to a barrier agreed by all workers (from a complete checkpoint).
    pub fn move_to(&self, next: u64) {
        if self.interval_ns > 0 && next > self.next.get() {
            self.next.set(next);
        }
    }

    /// A source's current watermark (the coordinator records the smallest in the checkpoint, so
    /// empty barriers can be skipped).
    pub fn report_watermark(&self, wm: u64) {
        self.watermark.set(wm);
    }

    /// The last reported source watermark.
    pub fn source_watermark(&self) -> u64 {
        self.watermark.get()
    }

    /// A source emitted records ordered before `t`, or holds its capability at `t`: a barrier
    /// pulled in must not be below it.
    pub fn note_reached(&self, t: u64) {
        if t > self.reached.get() {
            self.reached.set(t);
        }
    }

    /// The first barrier on the `grid` (`k * grid + 1`) at or after everything the sources reached,
    /// and not after the current barrier: where this worker's sources can stop at once.
    ///
    /// ```
    /// use lobsentry_operators::checkpoint::Barrier;
    /// let b = Barrier::every(3600, 0);
    /// b.note_reached(25);
    /// assert_eq!(b.freeze_point(10), 31);
    /// b.note_reached(31);
    /// assert_eq!(b.freeze_point(10), 31, "a capability at a grid point stays there");
    /// b.note_reached(4000);
    /// assert_eq!(b.freeze_point(10), b.next(), "never past the barrier already in force");
    /// ```
    pub fn freeze_point(&self, grid: u64) -> u64 {
        let grid = grid.max(2);
        let r = self.reached.get().max(1);
        let k = (r - 1).div_ceil(grid);
        k.saturating_mul(grid).saturating_add(1).min(self.next.get())
    }
}

/// One worker's share of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The barrier.
    pub barrier: u64,
    /// This worker's index.
    pub worker: usize,
    /// Workers in the run.
    pub peers: usize,
    /// A fingerprint of the inputs and dataflow the checkpoint belongs to.
    pub job: String,
    /// Operator states by registered name.
    pub operators: Vec<(String, Vec<u8>)>,
}

/// The checkpoint directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    /// Complete checkpoints to keep (older ones are deleted).
    pub retain: usize,
}

impl CheckpointStore {
    /// A store in `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        Ok(CheckpointStore { dir, retain: 2 })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ckpt_dir(&self, barrier: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{barrier:020}"))
    }

    /// Writes a worker's part atomically (temporary file, fsync, rename), with its source watermark
    /// beside it. Returns its size in bytes.
    pub fn write_part_with_watermark(&self, part: &Part, watermark: u64) -> std::io::Result<u64> {
        let dir = self.ckpt_dir(part.barrier);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("watermark-{}", part.worker)), watermark.to_string())?;
        self.write_part(part)
    }

    /// The smallest source watermark the parts recorded (`u64::MAX` when none did).
    pub fn min_watermark(&self, barrier: u64, peers: usize) -> u64 {
        let dir = self.ckpt_dir(barrier);
        (0..peers)
            .filter_map(|w| std::fs::read_to_string(dir.join(format!("watermark-{w}"))).ok())
            .filter_map(|t| t.trim().parse::<u64>().ok())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Writes a worker's part atomically (temporary file, fsync, rename). Returns its size in bytes.
    pub fn write_part(&self, part: &Part) -> std::io::Result<u64> {
        use std::io::Write;
        let dir = self.ckpt_dir(part.barrier);
        std::fs::create_dir_all(&dir)?;
        let bytes = seal(&encode(part).map_err(std::io::Error::other)?);
        let tmp = dir.join(format!(".part-{}.tmp", part.worker));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("part-{}.bin", part.worker)))?;
        Ok(bytes.len() as u64)
    }

    /// True when all `peers` parts of the checkpoint at `barrier` exist.
    pub fn all_parts(&self, barrier: u64, peers: usize) -> bool {
        let dir = self.ckpt_dir(barrier);
        (0..peers).all(|w| dir.join(format!("part-{w}.bin")).exists())
    }

    /// Marks the checkpoint complete (atomically), recording the barrier that follows it, and deletes
    /// complete checkpoints beyond [`CheckpointStore::retain`] and incomplete ones older than it.
    pub fn mark_complete(&self, barrier: u64, next: u64) -> std::io::Result<()> {
        let dir = self.ckpt_dir(barrier);
        let tmp = dir.join(".COMPLETE.tmp");
        std::fs::write(&tmp, next.to_string())?;
        std::fs::rename(&tmp, dir.join("COMPLETE"))?;
        let mut complete = self.complete()?;
        complete.retain(|b| *b != barrier);
        let keep_from = complete.len().saturating_sub(self.retain.saturating_sub(1));
        for old in &complete[..keep_from] {
            let _ = std::fs::remove_dir_all(self.ckpt_dir(*old));
        }
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            if let Some(b) = parse_dir(&entry.file_name().to_string_lossy()) {
                if b < barrier && !entry.path().join("COMPLETE").exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(())
    }

    /// A file of the pull of barrier `barrier` after the complete checkpoint `after`: the pair never
    /// repeats (the barrier after a pulled checkpoint may be the one that was pulled in).
    fn pull_path(&self, what: &str, (after, barrier): (u64, u64), worker: Option<usize>) -> PathBuf {
        let name = match worker {
            Some(w) => format!("{what}-{after:020}-{barrier:020}-{w}"),
            None => format!("{what}-{after:020}-{barrier:020}"),
        };
        self.dir.join("pull").join(name)
    }

    fn write_pull(&self, path: &Path, value: u64) -> std::io::Result<()> {
        let dir = self.dir.join("pull");
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("pull")));
        std::fs::write(&tmp, value.to_string())?;
        std::fs::rename(&tmp, path)
    }

    fn read_pull(&self, path: &Path) -> Option<u64> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Forgets every barrier pull (process 0 at start, before the workers agree on the job: a pull
    /// a killed run left behind must not steer this one; worker 0 after each checkpoint).
    pub fn clear_pulls(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.dir.join("pull")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The barrier after a complete checkpoint (`None` while it is not complete).
    pub fn next_after(&self, barrier: u64) -> Option<u64> {
        std::fs::read_to_string(self.ckpt_dir(barrier).join("COMPLETE")).ok()?.trim().parse().ok()
    }

    /// True once the checkpoint at `barrier` is marked complete.
    pub fn is_complete(&self, barrier: u64) -> bool {
        self.ckpt_dir(barrier).join("COMPLETE").exists()
    }

    /// Barriers of the complete checkpoints, oldest first.
    pub fn complete(&self) -> std::io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            if let Some(b) = parse_dir(&entry.file_name().to_string_lossy()) {
                if entry.path().join("COMPLETE").exists() {
                    out.push(b);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The latest complete checkpoint's barrier.
    pub fn latest(&self) -> std::io::Result<Option<u64>> {
        Ok(self.complete()?.last().copied())
    }

    /// Reads one worker's part of a checkpoint.
    pub fn read_part(&self, barrier: u64, worker: usize) -> Result<Part, String> {
        let path = self.ckpt_dir(barrier).join(format!("part-{worker}.bin"));
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let body = unseal(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let part: Part = decode(body).map_err(|e| format!("{}: {e}", path.display()))?;
        if part.barrier != barrier || part.worker != worker {
            return Err(format!(
                "{}: holds barrier {} of worker {}, not barrier {barrier} of worker {worker}",
                path.display(),
                part.barrier,
                part.worker
            ));
        }
        Ok(part)
    }
}

/// The first bytes of a checkpoint part (format 2: with a CRC-32 of the body).
const MAGIC: &[u8; 8] = b"LSCKPT06";

/// A part's file: magic, CRC-32 of the body (LE), body length (LE), body.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a part's file, checked against its length and checksum.
fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("not a lobsentry checkpoint part of this version (no LSCKPT06 header)".into());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let body = &bytes[20..];
    if body.len() as u64 != len {
        return Err(format!("truncated: {} bytes of {len}", body.len()));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(format!("damaged: checksum {actual:08x}, recorded {crc:08x}"));
    }
    Ok(body)
}

/// A finished checkpoint, as one worker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    /// Its barrier.
    pub barrier: u64,
    /// Bytes this worker wrote.
    pub bytes: u64,
    /// Time this worker spent serialising and writing its part.
    pub write: std::time::Duration,
    /// Time from its part being written to the checkpoint being complete.
    pub align: std::time::Duration,
}

/// Drives checkpoints from a worker's loop: call [`Coordinator::poll`] between steps.
#[derive(Debug)]
pub struct Coordinator {
    store: CheckpointStore,
    registry: StateRegistry,
    barrier: Rc<Barrier>,
    worker: usize,
    peers: usize,
    job: String,
    written: Option<(u64, u64, std::time::Duration, std::time::Instant)>,
    pull: Option<Pull>,
}

/// The wall-clock bound on the time between checkpoints ([`Coordinator::with_max_wait`]).
#[derive(Debug)]
struct Pull {
    max_wait: std::time::Duration,
    grid: u64,
    /// The last checkpoint completed or barrier pulled (or the start).
    since: std::time::Instant,
    /// The last look for a request.
    checked: std::time::Instant,
    /// The round (last complete checkpoint, barrier pulled) this worker answered and waits on (its
    /// sources stopped early).
    frozen: Option<(u64, u64)>,
    /// The last round answered, or the barrier it decided (each answered once).
    answered: Option<(u64, u64)>,
    /// The round worker 0 opened and has not decided yet.
    open: Option<(u64, u64)>,
    /// The last complete checkpoint (names the pulls after it).
    after: u64,
}

impl Coordinator {
    /// A coordinator for worker `worker` of `peers`, over the operators registered in `registry`.
    pub fn new(store: CheckpointStore, registry: StateRegistry, worker: usize, peers: usize, job: String) -> Self {
        let barrier = registry.barrier();
        Coordinator { store, registry, barrier, worker, peers, job, written: None, pull: None }
    }

    /// Bounds the wall-clock time between checkpoints: when none has completed for `max_wait`
    /// (event time crawling, or a long `interval`), the next barrier is pulled in to just past what
    /// the sources have emitted, on the `grid` (a multiple of every window length, so no window
    /// ends at it). All workers, of every process, agree on it through the store:
    ///
    /// 1. worker 0 writes a request for the barrier in force, `B`;
    /// 2. every worker stops its sources at its [`Barrier::freeze_point`] `F_w <= B` (or answers
    ///    `B` when its part at `B` is already written) and writes `F_w`;
    /// 3. worker 0 decides `B' = max F_w` once every answer is in; every worker moves its barrier to
    ///    `B'` (at or past its own `F_w`, so nothing emitted is beyond it), and the checkpoint is
    ///    taken there as at any barrier, once the watermark passes it.
    ///
    /// The checkpoint still needs the watermark to pass `B'`: a stream whose event time stands
    /// still gets none (it has nothing new to save either).
    ///
    /// `restored` is the barrier of the checkpoint the run resumed from (0 for none).
    pub fn with_max_wait(mut self, max_wait: std::time::Duration, grid: u64, restored: u64) -> Self {
        let now = std::time::Instant::now();
        self.pull = Some(Pull {
            max_wait,
            grid,
            since: now,
            checked: now,
            frozen: None,
            answered: None,
            open: None,
            after: restored,
        });
        self
    }

    /// The barrier pull protocol ([`Coordinator::with_max_wait`]); true while this worker waits
    /// for a decision (no part may be written meanwhile).
    fn pull_step(&mut self) -> Result<bool, String> {
        let Some(pull) = self.pull.as_mut() else { return Ok(false) };
        let store = &self.store;
        let err = |e: std::io::Error| format!("checkpoint barrier pull: {e}");
        // Worker 0 decides the round it opened once every worker has answered.
        if let Some(round) = pull.open {
            let answers: Vec<Option<u64>> =
                (0..self.peers).map(|w| store.read_pull(&store.pull_path("freeze", round, Some(w)))).collect();
            if answers.iter().all(Option::is_some) {
                let decided = answers.into_iter().flatten().max().unwrap_or(round.1);
                store.write_pull(&store.pull_path("decided", round, None), decided).map_err(err)?;
                pull.open = None;
            }
        }
        if let Some(round) = pull.frozen {
            let Some(decided) = store.read_pull(&store.pull_path("decided", round, None)) else { return Ok(true) };
            self.barrier.next.set(decided);
            pull.frozen = None;
            // The checkpoint at `decided` waits for the watermark now: no new pull before another
            // max-wait.
            pull.since = std::time::Instant::now();
            pull.answered = Some((round.0, decided));
            return Ok(false);
        }
        if pull.checked.elapsed() < std::time::Duration::from_millis(20) {
            return Ok(false);
        }
        pull.checked = std::time::Instant::now();
        let b = self.barrier.next();
        let round = (pull.after, b);
        if pull.answered == Some(round) || b == u64::MAX {
            return Ok(false);
        }
        let request = store.pull_path("request", round, None);
        if request.exists() {
            pull.answered = Some(round);
            if self.written.is_some() {
                // This worker's part at `b` is written: the decision can only be `b` (no answer is
                // past it), so there is nothing to wait for.
                store.write_pull(&store.pull_path("freeze", round, Some(self.worker)), b).map_err(err)?;
                return Ok(false);
            }
            let f = self.barrier.freeze_point(pull.grid);
            self.barrier.next.set(f);
            store.write_pull(&store.pull_path("freeze", round, Some(self.worker)), f).map_err(err)?;
            pull.frozen = Some(round);
            return Ok(true);
        }
        if self.worker == 0 && self.written.is_none() && pull.since.elapsed() >= pull.max_wait {
            store.write_pull(&request, b).map_err(err)?;
            pull.open = Some(round);
        }
        Ok(false)
    }

    /// Takes this worker's part when `frontier` (the worker's probe, after every operator) stands
    /// exactly at the barrier; completes the checkpoint when every part is there (worker 0); moves
    /// the barrier on once it is complete. Returns the checkpoint completed by this call, if any.
    pub fn poll(&mut self, frontier: Option<u64>) -> Result<Option<Completed>, String> {
        if !self.barrier.enabled() {
            return Ok(None);
        }
        if self.pull_step()? {
            return Ok(None);
        }
        let b = self.barrier.next();
        match self.written {
            None => {
                if frontier != Some(b) {
                    return Ok(None);
                }
                let started = std::time::Instant::now();
                let operators = self.registry.snapshot_all()?;
                let part =
                    Part { barrier: b, worker: self.worker, peers: self.peers, job: self.job.clone(), operators };
                let bytes = self
                    .store
                    .write_part_with_watermark(&part, self.barrier.source_watermark())
                    .map_err(|e| format!("checkpoint {b}: {e}"))?;
                self.written = Some((b, bytes, started.elapsed(), std::time::Instant::now()));
                Ok(None)
            }
            Some((wb, bytes, write, at)) => {
                debug_assert_eq!(wb, b);
                if self.worker == 0 && !self.store.is_complete(b) && self.store.all_parts(b, self.peers) {
                    // Barriers up to the slowest source's watermark would be empty: skip them.
                    let wm = self.store.min_watermark(b, self.peers);
                    let next = self.barrier.after(wm.max(b));
                    self.store.mark_complete(b, next).map_err(|e| format!("checkpoint {b}: {e}"))?;
                }
                match self.store.next_after(b) {
                    Some(next) => {
                        self.barrier.move_to(next);
                        self.written = None;
                        if let Some(pull) = self.pull.as_mut() {
                            pull.since = std::time::Instant::now();
                            pull.after = b;
                            pull.open = None;
                            if self.worker == 0 {
                                // Every worker has answered and left the pulls before this one.
                                self.store.clear_pulls().map_err(|e| format!("checkpoint barrier pull: {e}"))?;
                            }
                        }
                        Ok(Some(Completed { barrier: b, bytes, write, align: at.elapsed() }))
                    }
                    None => Ok(None),
                }
            }
        }
    }
}

fn parse_dir(name: &str) -> Option<u64> {
    name.strip_prefix("ckpt-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_round_trip() {
        let counter = Rc::new(Cell::new(7u64));
        let reg = StateRegistry::new();
        let c = counter.clone();
        assert!(reg.register("count", move || encode(&c.get())).is_none());
        let c2 = counter.clone();
        reg.register("count", move || encode(&(c2.get() * 2)));
        let parts = reg.snapshot_all().unwrap();
        assert_eq!(parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["count#0", "count#1"]);
        let part = Part { barrier: 11, worker: 0, peers: 1, job: "j".into(), operators: parts };
        let again = StateRegistry::restoring(&part);
        let got: u64 = decode(&again.register("count", || encode(&0u64)).unwrap()).unwrap();
        assert_eq!(got, 7);
        assert_eq!(again.unclaimed(), vec!["count#1".to_string()]);
    }

    #[test]
    fn damaged_parts_are_refused() {
        let dir = std::env::temp_dir().join(format!("lobsentry-ckpt-damage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir).unwrap();
        let part =
            Part { barrier: 7, worker: 0, peers: 1, job: "j".into(), operators: vec![("a".into(), vec![1; 64])] };
        store.write_part(&part).unwrap();
        assert_eq!(store.read_part(7, 0).unwrap(), part);
        let path = dir.join(format!("ckpt-{:020}", 7)).join("part-0.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = store.read_part(7, 0).unwrap_err();
        assert!(err.contains("damaged: checksum"), "{err}");
        std::fs::write(&path, &bytes[..n - 3]).unwrap();
        assert!(store.read_part(7, 0).unwrap_err().contains("truncated"));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(store.read_part(7, 0).unwrap_err().contains("no LSCKPT06 header"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn workers_agree_on_a_pulled_barrier_past_everything_they_emitted() {
        let dir = std::env::temp_dir().join(format!("lobsentry-ckpt-pull-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir).unwrap();
        let wait = std::time::Duration::from_millis(0);
        let barriers: Vec<Rc<Barrier>> = (0..2).map(|_| Rc::new(Barrier::every(1000, 0))).collect();
        let mut workers: Vec<Coordinator> = (0..2)
            .map(|w| {
                let registry = StateRegistry::new();
                registry.inner.borrow_mut().barrier = Some(barriers[w].clone());
                Coordinator::new(store.clone(), registry, w, 2, "j".into()).with_max_wait(wait, 10, 0)
            })
            .collect();
        barriers[0].note_reached(235);
        barriers[1].note_reached(412);
        let mut poll = |w: usize, frontier: u64| {
            std::thread::sleep(std::time::Duration::from_millis(25));
            workers[w].poll(Some(frontier)).unwrap()
        };
        assert!(poll(0, 100).is_none(), "worker 0 asks for a pull");
        assert!(poll(1, 100).is_none(), "worker 1 stops at 421");
        poll(0, 100);
        poll(0, 100);
        poll(1, 100);
        for barrier in &barriers {
            assert_eq!(barrier.next(), 421, "past 412, on the grid of 10, below 1001");
        }
        // The checkpoint is taken at the pulled barrier once the frontier stands there.
        poll(0, 421);
        poll(1, 421);
        let done = poll(0, 421).expect("complete");
        assert_eq!(done.barrier, 421);
        assert_eq!(store.latest().unwrap(), Some(421));
        assert!(!dir.join("pull").exists(), "the pull's files are cleared with the checkpoint");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_completes_and_prunes() {
        let dir = std::env::temp_dir().join(format!("lobsentry-ckpt-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CheckpointStore::new(&dir).unwrap();
        for barrier in [11u64, 21, 31] {
            for worker in 0..2 {
                assert!(!store.all_parts(barrier, 2) || worker == 2);
                let part = Part { barrier, worker, peers: 2, job: "j".into(), operators: vec![] };
                store.write_part(&part).unwrap();
            }
            assert!(store.all_parts(barrier, 2));
            assert!(!store.is_complete(barrier));
            store.mark_complete(barrier, barrier + 10).unwrap();
            assert_eq!(store.next_after(barrier), Some(barrier + 10));
        }
        assert_eq!(store.complete().unwrap(), vec![21, 31], "keeps the last two");
        assert_eq!(store.read_part(31, 1).unwrap().worker, 1);
        // An incomplete later checkpoint is ignored.
        store.write_part(&Part { barrier: 41, worker: 0, peers: 2, job: "j".into(), operators: vec![] }).unwrap();
        assert_eq!(store.latest().unwrap(), Some(31));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
