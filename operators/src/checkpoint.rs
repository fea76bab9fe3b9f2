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
}

impl Barrier {
    /// No checkpoints: sources never stop.
    pub fn disabled() -> Self {
        Barrier { interval_ns: 0, next: Cell::new(u64::MAX), watermark: Cell::new(u64::MAX) }
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
        let b = Barrier { interval_ns, next: Cell::new(0), watermark: Cell::new(u64::MAX) };
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
const MAGIC: &[u8; 8] = b"LSCKPT02";

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
        return Err("not a lobsentry checkpoint part of this version (no LSCKPT02 header)".into());
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
}

impl Coordinator {
    /// A coordinator for worker `worker` of `peers`, over the operators registered in `registry`.
    pub fn new(store: CheckpointStore, registry: StateRegistry, worker: usize, peers: usize, job: String) -> Self {
        let barrier = registry.barrier();
        Coordinator { store, registry, barrier, worker, peers, job, written: None }
    }

    /// Takes this worker's part when `frontier` (the worker's probe, after every operator) stands
    /// exactly at the barrier; completes the checkpoint when every part is there (worker 0); moves
    /// the barrier on once it is complete. Returns the checkpoint completed by this call, if any.
    pub fn poll(&mut self, frontier: Option<u64>) -> Result<Option<Completed>, String> {
        if !self.barrier.enabled() {
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
        assert!(store.read_part(7, 0).unwrap_err().contains("no LSCKPT02 header"));
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
