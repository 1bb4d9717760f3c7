//! The torture engine behind `memdesc torture`: every thread is a CPU of one simulated machine
//! running a seeded random mix of every operation the system has, writing a known pattern into
//! every byte it allocates and verifying it before every free, with fault injection, quiescent
//! invariant checks and a per-CPU operation log.
//!
//! # Operations are a table
//!
//! [`OPS`] lists every operation as an [`Op`]: a name, a weight, and a function
//! `fn(&mut Worker) -> Outcome`. A worker picks an op by weight, runs it and logs it. Objects
//! an op allocates are [`Live`] records on the worker's list, each with an `id` from which its
//! byte pattern derives; the free ops pick one, verify its pattern ([`Worker::verify`]) and free
//! it. **A new subsystem plugs in** (page tables, vmalloc, page_pool, zsmalloc/z3fold,
//! compaction, hwpoison, balloon/offline) by:
//!
//! 1. adding a [`Live`] variant for the objects it hands out, with its arm in
//!    [`Worker::release`] (verify the pattern, free, expect `Ok`) and in [`Live::pages`];
//! 2. adding its rows to [`OPS`]: an allocating op that fills the memory with
//!    [`Worker::fill`] and pushes the `Live`, a freeing op that calls [`Worker::release`], and
//!    any op that only exercises it (compaction, balloon inflate/deflate, range offlining: ops
//!    that hold nothing afterwards just return an [`Outcome`]);
//! 3. if it has invariants of its own, checking them in `Worker::local_check` (per CPU, at
//!    every quiescent point) or in `global_check` (leader only);
//! 4. hwpoison: fill in [`POISON_HOOK`], which the engine calls with probability
//!    `poison_rate` per op and whose poisoned pages it reports as `poisoned_pages`. Until that
//!    subsystem lands the hook is `None` and `poisoned_pages` is honestly 0.
//!
//! # Reproducibility
//!
//! Worker `i` draws from a generator seeded by `(seed, i)`, the machine's fault injector from
//! `seed`, and quiescent points come every [`TortureConfig::check_every`] operations per CPU,
//! never on a timer, so with one thread the whole run is a function of the seed: the log hash
//! ([`TortureReport::log_hash`]) and tail repeat exactly.
//!
//! This module touches only the machine it boots, through the public API.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use memdesc::cpu::Cpu;
use memdesc::desc::{Folio, PG_LRU};
use memdesc::fault::{FaultConfig, FaultSites};
use memdesc::folio::{FolioError, FolioKind};
use memdesc::pagecache::{AddressSpaceRef, PageCacheError};
use memdesc::{
    AllocError, CacheArgs, CacheRef, Config, FreeError, Gfp, MemmapLayout, MemoryLayout, Pfn, Platform, RegionSpec,
    SlabCache, PAGE_SIZE,
};

use crate::{SimMachine, SimPlatform};

/// Settings of a torture run.
#[derive(Clone, Debug)]
pub struct TortureConfig {
    /// CPUs, one thread each.
    pub threads: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Stop at the first quiescent point after this long (None: only `max_ops`).
    pub duration: Option<Duration>,
    /// Stop after this many operations per CPU (None: only `duration`).
    pub max_ops: Option<u64>,
    /// Fault-injection rate at every allocation site.
    pub fail_rate: f64,
    /// Rate of hwpoison injection per operation (see [`POISON_HOOK`]).
    pub poison_rate: f64,
    /// Operations per CPU between quiescent points.
    pub check_every: u64,
    /// Pages one CPU may hold before it prefers frees.
    pub max_live_pages: u64,
    /// Shared with a progress display: total operations so far.
    pub progress: Option<std::sync::Arc<AtomicU64>>,
    /// Run only the ops with these names (empty: all of [`OPS`]).
    pub only: Vec<String>,
    /// Draw every choice from these bytes instead of the seeded generator, on one CPU, and
    /// stop when they run out (fuzzing and property tests: see [`run_script`]).
    pub script: Option<Vec<u8>>,
}

impl Default for TortureConfig {
    fn default() -> Self {
        TortureConfig {
            threads: 2,
            seed: 1,
            duration: Some(Duration::from_secs(10)),
            max_ops: None,
            fail_rate: 0.0,
            poison_rate: 0.0,
            check_every: 100_000,
            max_live_pages: 8192,
            progress: None,
            only: Vec::new(),
            script: None,
        }
    }
}

/// Per-operation counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStat {
    /// The op's name.
    pub name: &'static str,
    /// Times it ran.
    pub runs: u64,
    /// Times it failed the way it may (allocation failure, injected or not).
    pub failed: u64,
    /// Times it had nothing to act on.
    pub skipped: u64,
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct TortureReport {
    /// The seed.
    pub seed: u64,
    /// CPUs.
    pub threads: usize,
    /// Operations run, all CPUs.
    pub ops: u64,
    /// Invariant violations and unexpected results.
    pub violations: u64,
    /// Pages neither free nor owned after everything was freed.
    pub lost_pages: u64,
    /// Bytes that did not hold their pattern when verified.
    pub corrupted_bytes: u64,
    /// Failures the fault injector injected.
    pub injected_failures: u64,
    /// Pages poisoned by the hwpoison hook.
    pub poisoned_pages: u64,
    /// Quiescent points checked.
    pub checks: u64,
    /// Wall time of the operations.
    pub elapsed: Duration,
    /// Per-op counts, in [`OPS`] order.
    pub per_op: Vec<OpStat>,
    /// The first violations, described.
    pub messages: Vec<String>,
    /// The op-log tail of the CPU that saw the first violation (or CPU 0's at the end).
    pub log_tail: Vec<String>,
    /// Hash of CPU 0's whole op log: equal for equal single-CPU runs.
    pub log_hash: u64,
    /// Whether hwpoison injection was available (see [`POISON_HOOK`]).
    pub poison_available: bool,
}

/// The result of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// An allocation failed (out of memory or injected): allowed.
    Failed,
    /// Nothing to act on.
    Skipped,
    /// Something that must not happen.
    Violation(String),
}

/// One row of the operation table.
pub struct Op {
    /// Name in logs and statistics.
    pub name: &'static str,
    /// Relative frequency.
    pub weight: u32,
    /// The operation.
    pub run: fn(&mut Worker<'_, '_, '_>) -> Outcome,
}

/// hwpoison injection: poisons a page of the machine and returns how many pages it poisoned.
/// `None` until the hwpoison subsystem exists (see the module docs).
pub type PoisonHook = fn(&mut Worker<'_, '_, '_>) -> Result<u64, String>;

/// The hwpoison plug-in point: not available yet, so `poisoned_pages` is 0.
pub const POISON_HOOK: Option<PoisonHook> = None;

/// An object a CPU holds.
#[derive(Clone, Copy)]
pub enum Live<'m> {
    /// Raw pages from `alloc_pages`.
    Pages {
        /// First pfn.
        pfn: Pfn,
        /// Order.
        order: u32,
        /// Pattern id.
        id: u64,
    },
    /// A kmalloc allocation.
    Kmalloc {
        /// The memory.
        ptr: NonNull<u8>,
        /// Bytes asked for.
        size: usize,
        /// Pattern id.
        id: u64,
    },
    /// An object of one of the torture's slab caches.
    Obj {
        /// Index into the shared caches.
        cache: usize,
        /// The object.
        ptr: NonNull<u8>,
        /// Pattern id.
        id: u64,
    },
    /// An anon or file folio (not in a page cache) with `refs` references held.
    Folio {
        /// The folio.
        f: &'m Folio,
        /// References this CPU holds.
        refs: u32,
        /// Pattern id (per page: with the pfn).
        id: u64,
    },
}

// SAFETY: a Live names memory of the machine that exactly one CPU owns; handing it to another
// CPU (the exchange) transfers that ownership.
unsafe impl Send for Live<'_> {}

impl Live<'_> {
    /// Pages it holds (for the live-memory budget).
    pub fn pages(&self) -> u64 {
        match self {
            Live::Pages { order, .. } => 1 << order,
            Live::Kmalloc { size, .. } => (*size as u64).div_ceil(PAGE_SIZE as u64),
            Live::Obj { .. } => 0,
            Live::Folio { f, .. } => 1 << f.flags.order(),
        }
    }
}

/// One file of the page cache and its pattern id.
struct File<'m> {
    id: u64,
    space: AddressSpaceRef<'m, SimPlatform>,
}

/// What all CPUs share.
pub struct Shared<'m> {
    caches: Vec<CacheRef<'m, SimPlatform>>,
    sizes: Vec<usize>,
    exchange: Mutex<Vec<Live<'m>>>,
    shared_file: File<'m>,
    stop: AtomicBool,
    threads: usize,
    seed: u64,
}

// SAFETY: CacheRef and AddressSpaceRef are references to a machine whose caches and address
// spaces are internally synchronised (locks and atomics); the Live records in the exchange are
// behind a mutex.
unsafe impl Sync for Shared<'_> {}

const LOG_LEN: usize = 64;

/// One entry of the op log.
#[derive(Clone, Copy, Default)]
struct LogEntry {
    seq: u64,
    op: &'static str,
    arg: u64,
    outcome: u8,
}

/// A CPU of the torture.
pub struct Worker<'m, 'c, 's> {
    /// The machine.
    pub m: &'m SimMachine,
    /// This CPU.
    pub cpu: &'c Cpu<'m>,
    shared: &'s Shared<'m>,
    rng: u64,
    script: &'s [u8],
    script_pos: usize,
    scripted: bool,
    /// Objects held.
    pub live: Vec<Live<'m>>,
    live_pages: u64,
    max_live_pages: u64,
    next_id: u64,
    files: Vec<File<'m>>,
    /// Bytes found corrupted.
    pub corrupted: u64,
    arg: u64,
    log: [LogEntry; LOG_LEN],
    seq: u64,
    log_hash: u64,
    messages: Vec<String>,
    first_violation_log: Option<Vec<String>>,
    violations: u64,
    poisoned: u64,
    stats: Vec<OpStat>,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the pattern of `key` into `len` bytes at `p`.
///
/// # Safety
/// `p..p+len` is memory the caller owns.
unsafe fn fill_raw(p: *mut u8, len: usize, key: u64) {
    let words = len / 8;
    for i in 0..words {
        // SAFETY: inside the caller's memory.
        unsafe { p.add(i * 8).cast::<u64>().write_unaligned(key.wrapping_add((i as u64).wrapping_mul(GAMMA))) };
    }
    let last = key.wrapping_add((words as u64).wrapping_mul(GAMMA)).to_le_bytes();
    for (j, b) in last.iter().enumerate().take(len - words * 8) {
        // SAFETY: as above.
        unsafe { p.add(words * 8 + j).write(*b) };
    }
}

/// Bytes of `len` at `p` that do not hold the pattern of `key`.
///
/// # Safety
/// As [`fill_raw`].
unsafe fn verify_raw(p: *const u8, len: usize, key: u64) -> u64 {
    let words = len / 8;
    let mut bad = 0;
    for i in 0..words {
        let want = key.wrapping_add((i as u64).wrapping_mul(GAMMA));
        // SAFETY: inside the caller's memory.
        let got = unsafe { p.add(i * 8).cast::<u64>().read_unaligned() };
        if got != want {
            bad += (got ^ want).to_le_bytes().iter().filter(|&&b| b != 0).count() as u64;
        }
    }
    let last = key.wrapping_add((words as u64).wrapping_mul(GAMMA)).to_le_bytes();
    for (j, b) in last.iter().enumerate().take(len - words * 8) {
        // SAFETY: as above.
        bad += (unsafe { p.add(words * 8 + j).read() } != *b) as u64;
    }
    bad
}

/// Bytes of `len` at `p` that are not zero.
///
/// # Safety
/// As [`fill_raw`].
unsafe fn nonzero_raw(p: *const u8, len: usize) -> u64 {
    // SAFETY: the caller's memory.
    unsafe { std::slice::from_raw_parts(p, len) }.iter().filter(|&&b| b != 0).count() as u64
}

/// What a CPU reports when it is done.
struct WorkerResult {
    ops: u64,
    violations: u64,
    corrupted: u64,
    poisoned: u64,
    messages: Vec<String>,
    first_violation_log: Option<Vec<String>>,
    log_tail: Vec<String>,
    log_hash: u64,
    stats: Vec<OpStat>,
}

impl<'m, 'c, 's> Worker<'m, 'c, 's> {
    fn new(m: &'m SimMachine, cpu: &'c Cpu<'m>, shared: &'s Shared<'m>, seed: u64, max_live_pages: u64) -> Self {
        Worker {
            m,
            cpu,
            shared,
            rng: mix(seed ^ mix(cpu.id() as u64 + 1)),
            script: &[],
            script_pos: 0,
            scripted: false,
            live: vec![],
            live_pages: 0,
            max_live_pages,
            next_id: 0,
            files: vec![],
            corrupted: 0,
            arg: 0,
            log: [LogEntry::default(); LOG_LEN],
            seq: 0,
            log_hash: 0,
            messages: vec![],
            first_violation_log: None,
            violations: 0,
            poisoned: 0,
            stats: OPS.iter().map(|o| OpStat { name: o.name, ..OpStat::default() }).collect(),
        }
    }

    fn result(self) -> WorkerResult {
        WorkerResult {
            ops: self.seq,
            violations: self.violations,
            corrupted: self.corrupted,
            poisoned: self.poisoned,
            log_tail: self.log_tail(),
            messages: self.messages,
            first_violation_log: self.first_violation_log,
            log_hash: self.log_hash,
            stats: self.stats,
        }
    }

    /// A random number (from the script's next bytes when scripted).
    pub fn rand(&mut self) -> u64 {
        if self.scripted {
            let end = (self.script_pos + 8).min(self.script.len());
            let mut b = [0u8; 8];
            b[..end - self.script_pos].copy_from_slice(&self.script[self.script_pos..end]);
            self.script_pos = end;
            return u64::from_le_bytes(b).wrapping_mul(GAMMA) ^ self.script_pos as u64;
        }
        self.rng = self.rng.wrapping_add(GAMMA);
        mix(self.rng)
    }

    /// Whether a script drives this CPU and is used up.
    fn exhausted(&self) -> bool {
        self.scripted && self.script_pos >= self.script.len()
    }

    /// A random number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.rand() as u128 * n as u128) >> 64) as u64
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        mix(self.shared.seed ^ mix(self.next_id.wrapping_mul(64).wrapping_add(self.cpu.id() as u64 + 1)))
    }

    fn key(id: u64, pfn_or_index: u64) -> u64 {
        mix(id ^ pfn_or_index.wrapping_mul(GAMMA))
    }

    /// Records the argument of the current op for the log.
    pub fn arg(&mut self, a: u64) {
        self.arg = a;
    }

    /// Runs `f` on page `pfn`'s 4 KiB, mapped through the direct map or a local mapping.
    fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(*mut u8) -> R) -> R {
        let p = self.m.platform();
        if let Some(a) = p.direct_map(pfn) {
            return f(a.as_ptr());
        }
        let a = p.map_local(pfn).expect("allocated memory is mappable");
        let r = f(a.as_ptr());
        p.unmap_local(pfn, a);
        r
    }

    /// Fills every page of `[pfn, pfn + 2^order)` with the pattern of `id`; with `zeroed`,
    /// first counts bytes that are not zero as corrupted.
    pub fn fill_pages(&mut self, pfn: Pfn, order: u32, id: u64, zeroed: bool) {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let q = pfn.add(i);
            // SAFETY: the caller owns the page.
            bad += self.with_page(q, |a| unsafe {
                let z = if zeroed { nonzero_raw(a, PAGE_SIZE) } else { 0 };
                fill_raw(a, PAGE_SIZE, Self::key(id, q.0));
                z
            });
        }
        self.corrupted += bad;
    }

    /// Verifies the pattern of `id` in every page of the block; returns corrupted bytes.
    pub fn verify_pages(&mut self, pfn: Pfn, order: u32, id: u64) -> u64 {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let q = pfn.add(i);
            // SAFETY: the caller owns or pins the page.
            bad += self.with_page(q, |a| unsafe { verify_raw(a, PAGE_SIZE, Self::key(id, q.0)) });
        }
        self.corrupted += bad;
        bad
    }

    /// Fills `len` bytes of an object with the pattern of `id` (zero check as for pages).
    pub fn fill(&mut self, p: NonNull<u8>, len: usize, id: u64, zeroed: bool) {
        // SAFETY: the caller owns the object's `len` bytes.
        unsafe {
            if zeroed {
                self.corrupted += nonzero_raw(p.as_ptr(), len);
            }
            fill_raw(p.as_ptr(), len, Self::key(id, 0));
        }
    }

    /// Verifies an object's pattern; returns corrupted bytes.
    pub fn verify(&mut self, p: NonNull<u8>, len: usize, id: u64) -> u64 {
        // SAFETY: the caller owns the object's `len` bytes.
        let bad = unsafe { verify_raw(p.as_ptr(), len, Self::key(id, 0)) };
        self.corrupted += bad;
        bad
    }

    /// Holds `l`.
    pub fn push(&mut self, l: Live<'m>) {
        self.live_pages += l.pages();
        self.live.push(l);
    }

    /// Takes a random held object matching `pred`, if any (looks at a few).
    pub fn take(&mut self, pred: impl Fn(&Live<'m>) -> bool) -> Option<Live<'m>> {
        if self.live.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let i = self.below(self.live.len() as u64) as usize;
            if pred(&self.live[i]) {
                let l = self.live.swap_remove(i);
                self.live_pages -= l.pages();
                return Some(l);
            }
        }
        None
    }

    /// Whether this CPU holds more than its budget.
    pub fn over_budget(&self, extra: u64) -> bool {
        self.live_pages + extra > self.max_live_pages
    }

    /// Verifies and frees a held object.
    pub fn release(&mut self, l: Live<'m>) -> Outcome {
        let m = self.m;
        match l {
            Live::Pages { pfn, order, id } => {
                self.arg(pfn.0);
                self.verify_pages(pfn, order, id);
                match m.free_pages(self.cpu, pfn, order) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("free_pages({pfn}, {order}) of a live block: {e}")),
                }
            }
            Live::Kmalloc { ptr, size, id } => {
                self.arg(size as u64);
                self.verify(ptr, size, id);
                match m.kfree(self.cpu, ptr) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("kfree of a live {size}-byte object: {e}")),
                }
            }
            Live::Obj { cache, ptr, id } => {
                self.arg(cache as u64);
                let size = self.shared.sizes[cache];
                self.verify(ptr, size, id);
                match self.shared.caches[cache].free(self.cpu, ptr) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("free of a live object of cache {cache}: {e}")),
                }
            }
            Live::Folio { f, refs, id } => {
                let (pfn, order) = (f.flags.pfn(), f.flags.order());
                self.arg(pfn.0);
                self.verify_pages(pfn, order, id);
                if f.flags.flags() & PG_LRU != 0 {
                    m.lru_del(f);
                }
                for i in 0..refs {
                    match m.folio_put(self.cpu, f) {
                        // With other CPUs, a lockless reader's pin may make its put the last.
                        Ok(freed) if freed == (i + 1 == refs) || (self.shared.threads > 1 && !freed) => {}
                        r => {
                            return Outcome::Violation(format!("folio_put {} of {refs} of {pfn}: {r:?}", i + 1));
                        }
                    }
                }
                Outcome::Done
            }
        }
    }

    fn violation(&mut self, msg: String) {
        self.violations += 1;
        if self.messages.len() < 8 {
            self.messages.push(format!("cpu {}: {msg}", self.cpu.id()));
        }
        if self.first_violation_log.is_none() {
            self.first_violation_log = Some(self.log_tail());
        }
    }

    fn log_tail(&self) -> Vec<String> {
        let n = (self.seq as usize).min(LOG_LEN);
        (0..n)
            .map(|k| {
                let e = self.log[(self.seq as usize - n + k) % LOG_LEN];
                format!("cpu {} #{} {} arg={:#x} -> {}", self.cpu.id(), e.seq, e.op, e.arg, e.outcome as char)
            })
            .collect()
    }

    fn run_one(&mut self, table: &[Op], weights: &[u32], total_weight: u64) {
        let mut r = self.below(total_weight);
        let mut idx = 0;
        for (i, &wt) in weights.iter().enumerate() {
            if r < wt as u64 {
                idx = i;
                break;
            }
            r -= wt as u64;
        }
        self.arg = 0;
        let out = (table[idx].run)(self);
        let st = &mut self.stats[idx];
        st.runs += 1;
        let c = match &out {
            Outcome::Done => b'+',
            Outcome::Failed => {
                st.failed += 1;
                b'f'
            }
            Outcome::Skipped => {
                st.skipped += 1;
                b'-'
            }
            Outcome::Violation(_) => b'!',
        };
        let e = LogEntry { seq: self.seq, op: table[idx].name, arg: self.arg, outcome: c };
        self.log[self.seq as usize % LOG_LEN] = e;
        self.seq += 1;
        self.log_hash = mix(self.log_hash ^ (idx as u64) ^ self.arg.rotate_left(17) ^ ((c as u64) << 56));
        if let Outcome::Violation(msg) = out {
            self.violation(format!("{}: {msg}", table[idx].name));
        }
    }

    /// Per-CPU checks at a quiescent point: held folios' references, own files' trees and
    /// cached folios' references (the cache's one only).
    fn local_check(&mut self) {
        let mut errs = vec![];
        for l in &self.live {
            if let Live::Folio { f, refs, .. } = l {
                if f.counts.refcount() != *refs {
                    errs.push(format!(
                        "folio at {} has refcount {}, holders {refs}",
                        f.flags.pfn(),
                        f.counts.refcount()
                    ));
                }
            }
        }
        let files: Vec<&File<'_>> = if self.cpu.id() == 0 {
            self.files.iter().chain(std::iter::once(&self.shared.shared_file)).collect()
        } else {
            self.files.iter().collect()
        };
        for file in files {
            if let Err(v) = file.space.verify() {
                errs.push(format!("page cache of file {:#x}: {v:?}", file.id));
            }
            file.space.for_each(|i, f| {
                if f.counts.refcount() != 1 {
                    errs.push(format!("cached folio at index {i} has refcount {}, cache holds 1", f.counts.refcount()));
                }
            });
        }
        for e in errs {
            self.violation(e);
        }
    }

    fn file(&mut self) -> &File<'m> {
        if self.shared.threads > 1 && self.below(4) == 0 || self.files.is_empty() {
            &self.shared.shared_file
        } else {
            let i = self.below(self.files.len() as u64) as usize;
            &self.files[i]
        }
    }
}

fn is_alloc_failure(e: AllocError) -> bool {
    matches!(e, AllocError::NoMemory { .. } | AllocError::Injected)
}

fn alloc_outcome(e: AllocError) -> Outcome {
    if is_alloc_failure(e) {
        Outcome::Failed
    } else {
        Outcome::Violation(format!("unexpected allocation error {e}"))
    }
}

const GFPS: [Gfp; 9] = [
    Gfp::KERNEL,
    Gfp::MOVABLE,
    Gfp::RECLAIMABLE,
    Gfp::ATOMIC,
    Gfp::HIGH,
    Gfp::DMA32,
    Gfp::DMA,
    Gfp::NOWARN,
    Gfp::HIGHUSER_MOVABLE,
];

fn random_order(w: &mut Worker<'_, '_, '_>) -> u32 {
    match w.below(100) {
        0..=49 => 0,
        50..=79 => 1 + w.below(3) as u32,
        80..=97 => 4 + w.below(5) as u32,
        _ => 9 + w.below(2) as u32,
    }
}

fn op_page_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = random_order(w);
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let mut gfp = GFPS[w.below(GFPS.len() as u64) as usize];
    let zero = w.below(4) == 0;
    if zero {
        gfp = gfp | Gfp::ZERO;
    }
    w.arg(order as u64 | (gfp.bits() as u64) << 8);
    match w.m.alloc_pages(w.cpu, order, gfp) {
        Ok(pfn) => {
            let id = w.new_id();
            w.fill_pages(pfn, order, id, zero);
            w.push(Live::Pages { pfn, order, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

fn op_page_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Pages { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Refused frees of a held block: wrong order, a tail page. Nothing may change.
fn op_page_misuse(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l) = w.take(|l| matches!(l, Live::Pages { order, .. } if *order >= 1)) else { return Outcome::Skipped };
    let Live::Pages { pfn, order, .. } = l else { unreachable!("filtered") };
    w.arg(pfn.0);
    let a = w.m.free_pages(w.cpu, pfn, order - 1);
    let b = w.m.free_pages(w.cpu, pfn.add(1), 0);
    w.push(l);
    match (a, b) {
        (Err(FreeError::WrongOrder { .. }), Err(FreeError::NotHead(_))) => Outcome::Done,
        r => Outcome::Violation(format!("refused frees of {pfn} order {order}: {r:?}")),
    }
}

fn kmalloc_size(w: &mut Worker<'_, '_, '_>) -> usize {
    match w.below(100) {
        0..=69 => 1 + w.below(256) as usize,
        70..=96 => 1 + w.below(8192) as usize,
        _ => 8193 + w.below(65536 - 8192) as usize,
    }
}

fn op_kmalloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = kmalloc_size(w);
    if w.over_budget(16) {
        return op_free_any(w);
    }
    let zero = w.below(4) == 0;
    w.arg(size as u64);
    match w.m.kmalloc(w.cpu, size, if zero { Gfp::ZERO } else { Gfp::KERNEL }) {
        Ok(ptr) => {
            match w.m.ksize(ptr) {
                Ok(k) if k >= size => {}
                r => return Outcome::Violation(format!("ksize of a {size}-byte kmalloc: {r:?}")),
            }
            let id = w.new_id();
            w.fill(ptr, size, id, zero);
            w.push(Live::Kmalloc { ptr, size, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

fn op_kfree(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Kmalloc { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

fn op_cache_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let cache = w.below(w.shared.caches.len() as u64) as usize;
    w.arg(cache as u64);
    match w.shared.caches[cache].alloc(w.cpu) {
        Ok(ptr) => {
            let id = w.new_id();
            w.fill(ptr, w.shared.sizes[cache], id, false);
            w.push(Live::Obj { cache, ptr, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

fn op_cache_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Obj { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

fn op_cache_alloc_bulk(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let cache = w.below(w.shared.caches.len() as u64) as usize;
    let n = 1 + w.below(16) as usize;
    w.arg(cache as u64 | (n as u64) << 8);
    let mut out = vec![None; n];
    match w.shared.caches[cache].alloc_bulk(w.cpu, &mut out) {
        Ok(()) => {
            for o in out {
                let Some(ptr) = o else { return Outcome::Violation("alloc_bulk left a slot empty".into()) };
                let id = w.new_id();
                w.fill(ptr, w.shared.sizes[cache], id, false);
                w.push(Live::Obj { cache, ptr, id });
            }
            Outcome::Done
        }
        Err(e) => {
            if out.iter().any(Option::is_some) {
                return Outcome::Violation("a failed alloc_bulk kept objects".into());
            }
            alloc_outcome(e)
        }
    }
}

fn op_cache_free_bulk(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(first) = w.take(|l| matches!(l, Live::Obj { .. })) else { return Outcome::Skipped };
    let Live::Obj { cache, .. } = first else { unreachable!("filtered") };
    let mut objs = vec![first];
    for _ in 0..w.below(16) {
        match w.take(|l| matches!(l, Live::Obj { cache: c, .. } if *c == cache)) {
            Some(l) => objs.push(l),
            None => break,
        }
    }
    w.arg(cache as u64 | (objs.len() as u64) << 8);
    let size = w.shared.sizes[cache];
    let mut ptrs = vec![];
    for l in objs {
        if let Live::Obj { ptr, id, .. } = l {
            w.verify(ptr, size, id);
            ptrs.push(ptr);
        }
    }
    match w.shared.caches[cache].free_bulk(w.cpu, &ptrs) {
        Ok(()) => Outcome::Done,
        Err((i, e)) => Outcome::Violation(format!("free_bulk refused live object {i}: {e}")),
    }
}

fn op_cache_shrink(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let cache = w.below(w.shared.caches.len() as u64) as usize;
    w.arg(cache as u64);
    w.m.shrink_cache(w.cpu, &w.shared.caches[cache]);
    Outcome::Done
}

fn op_folio_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = match w.below(100) {
        0..=59 => 0,
        60..=97 => 1 + w.below(4) as u32,
        _ => 9,
    };
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let kind = if w.below(2) == 0 { FolioKind::Anon } else { FolioKind::File };
    let zero = w.below(4) == 0;
    w.arg(order as u64);
    let gfp = if zero { Gfp::MOVABLE | Gfp::ZERO } else { Gfp::MOVABLE };
    match w.m.folio_alloc(w.cpu, order, gfp, kind) {
        Ok(f) => {
            if f.counts.refcount() != 1 || f.flags.order() != order {
                return Outcome::Violation(format!("fresh folio: refcount {} order {}", f.counts.refcount(), order));
            }
            let id = w.new_id();
            w.fill_pages(f.flags.pfn(), order, id, zero);
            if w.below(2) == 0 {
                w.m.lru_add(f);
            }
            w.push(Live::Folio { f, refs: 1, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

fn op_folio_put(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Folio { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Takes or drops an extra reference.
fn op_folio_ref(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(Live::Folio { f, refs, id }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    w.arg(f.flags.pfn().0);
    let refs = if refs > 1 && w.below(2) == 0 {
        match w.m.folio_put(w.cpu, f) {
            Ok(false) => refs - 1,
            r => return Outcome::Violation(format!("put of one of {refs} references: {r:?}")),
        }
    } else if refs < 4 {
        w.m.folio_get(f);
        refs + 1
    } else {
        refs
    };
    w.push(Live::Folio { f, refs, id });
    Outcome::Done
}

/// LRU add/delete/rotate and the flag operations.
fn op_folio_flags(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l @ Live::Folio { f, .. }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    let what = w.below(5);
    w.arg(f.flags.pfn().0 | what << 56);
    let on = f.flags.flags() & PG_LRU != 0;
    let ok = match what {
        0 => w.m.lru_add(f) != on,
        1 => w.m.lru_del(f) == on,
        2 => w.m.lru_rotate(f) == on,
        3 => {
            if w.m.folio_trylock(f) {
                let again = w.m.folio_trylock(f);
                w.m.folio_unlock(f);
                !again
            } else {
                false
            }
        }
        _ => {
            w.m.folio_mark_dirty(f);
            if w.m.folio_start_writeback(f) {
                w.m.folio_end_writeback(f);
            }
            true
        }
    };
    w.push(l);
    if ok {
        Outcome::Done
    } else {
        Outcome::Violation(format!("folio flag op {what} on {} (lru {on})", f.flags.pfn()))
    }
}

/// Splits a held folio with its references frozen, as any caller racing lockless readers must.
fn op_folio_split(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l) = w.take(|l| matches!(l, Live::Folio { f, .. } if f.flags.order() >= 1)) else {
        return Outcome::Skipped;
    };
    let Live::Folio { f, refs, id } = l else { unreachable!("filtered") };
    let order = f.flags.order();
    let new_order = w.below(order as u64) as u32;
    w.arg(f.flags.pfn().0 | (new_order as u64) << 56);
    if !w.m.folio_ref_freeze(f, refs) {
        // A lockless reader holds a pin right now.
        w.push(l);
        return Outcome::Skipped;
    }
    let mut pieces = vec![];
    let r = w.m.folio_split(w.cpu, f, new_order, |p| pieces.push(p as *const Folio));
    let m = w.m;
    match r {
        Ok(()) => {
            if pieces.len() != 1 << (order - new_order) {
                return Outcome::Violation(format!("split into {} pieces", pieces.len()));
            }
            for p in pieces {
                // SAFETY: a piece of our split: a live folio descriptor frozen at 0.
                let p = unsafe { &*p };
                m.folio_ref_unfreeze(p, refs);
                w.push(Live::Folio { f: p, refs, id });
            }
            Outcome::Done
        }
        Err(e) => {
            m.folio_ref_unfreeze(f, refs);
            w.push(l);
            match e {
                FolioError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
                // Splitting a 2 MiB folio of a two-level region below 2 MiB is refused.
                FolioError::BadOrder => Outcome::Skipped,
                e => Outcome::Violation(format!("split of order {order} to {new_order}: {e}")),
            }
        }
    }
}

/// Indices a torture file uses (small, so inserts collide and lookups hit).
const FILE_INDICES: u64 = 2048;

fn pc_order(w: &mut Worker<'_, '_, '_>) -> u32 {
    match w.below(100) {
        0..=69 => 0,
        70..=98 => 1 + w.below(3) as u32,
        _ => 6,
    }
}

/// Inserts a fresh file folio, its pages patterned by (file, index), and drops the caller's
/// reference: the cache holds the only one.
fn op_pc_insert(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = pc_order(w);
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let index = (w.below(FILE_INDICES) >> order) << order;
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(index | (order as u64) << 56);
    let f = match w.m.folio_alloc(w.cpu, order, Gfp::MOVABLE, FolioKind::File) {
        Ok(f) => f,
        Err(e) => return alloc_outcome(e),
    };
    let pfn = f.flags.pfn();
    for i in 0..1u64 << order {
        let q = pfn.add(i);
        let k = Worker::key(fid, index + i);
        // SAFETY: a page of our fresh folio.
        w.with_page(q, |a| unsafe { fill_raw(a, PAGE_SIZE, k) });
    }
    let file = w.file_by_space(space);
    let r = file.space.insert(w.cpu, f, index);
    let put = w.m.folio_put(w.cpu, f);
    match (r, put) {
        (Ok(()), Ok(false)) => Outcome::Done,
        (Err(PageCacheError::Occupied { .. }), Ok(true)) => Outcome::Skipped,
        (Err(PageCacheError::NoMemory(e)), Ok(true)) if is_alloc_failure(e) => Outcome::Failed,
        r => Outcome::Violation(format!("insert at {index} order {order}: {r:?}")),
    }
}

impl<'m> Worker<'m, '_, '_> {
    fn file_by_space(&self, space: *const memdesc::pagecache::AddressSpace) -> &File<'m> {
        if std::ptr::eq(self.shared.shared_file.space.space(), space) {
            &self.shared.shared_file
        } else {
            self.files.iter().find(|f| std::ptr::eq(f.space.space(), space)).expect("a file of this CPU")
        }
    }

    /// Verifies the pages of a cached folio that the caller pins.
    fn verify_cached(&mut self, fid: u64, f: &Folio) -> u64 {
        let (pfn, order, index) = (f.flags.pfn(), f.flags.order(), f.index());
        let mut bad = 0;
        for i in 0..1u64 << order {
            let k = Self::key(fid, index + i);
            // SAFETY: a page of a folio we pin.
            bad += self.with_page(pfn.add(i), |a| unsafe { verify_raw(a, PAGE_SIZE, k) });
        }
        self.corrupted += bad;
        bad
    }
}

fn op_pc_lookup(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let index = w.below(FILE_INDICES);
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(index);
    let found = w.file_by_space(space).space.lookup(w.cpu, index);
    let Some(f) = found else { return Outcome::Skipped };
    let (fi, order) = (f.index(), f.flags.order());
    let mut out = Outcome::Done;
    if !(fi..fi + (1 << order)).contains(&index) {
        out = Outcome::Violation(format!("lookup({index}) found a folio at {fi} of order {order}"));
    }
    w.verify_cached(fid, f);
    if let Err(e) = w.m.folio_put(w.cpu, f) {
        out = Outcome::Violation(format!("put of a lookup reference: {e}"));
    }
    out
}

fn op_pc_delete(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let index = w.below(FILE_INDICES);
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(index);
    let file = w.file_by_space(space);
    let Some(f) = file.space.lookup(w.cpu, index) else { return Outcome::Skipped };
    let r = file.space.delete(w.cpu, f);
    w.verify_cached(fid, f);
    let shared = w.shared.threads > 1;
    let put = w.m.folio_put(w.cpu, f);
    match (r, put) {
        (Ok(false), Ok(_)) => Outcome::Done,
        // Another CPU deleted or truncated it first.
        (Err(PageCacheError::NotCached), Ok(_)) if shared => Outcome::Skipped,
        r => Outcome::Violation(format!("delete at {index}: {r:?}")),
    }
}

fn op_pc_truncate(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let start = w.below(FILE_INDICES);
    let len = 1 + w.below(256);
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(start | len << 32);
    let file = w.file_by_space(space);
    // Verify what is about to go (under the file's lock: nothing removes it meanwhile).
    let mut bad = 0;
    let m = w.m;
    file.space.for_each(|i, f| {
        let order = f.flags.order();
        if i + (1 << order) > start && i < start + len {
            for k in 0..1u64 << order {
                let key = Worker::key(fid, i + k);
                let q = f.flags.pfn().add(k);
                let p = m.platform();
                bad += match p.direct_map(q) {
                    // SAFETY: a page of a cached folio; the cache's reference keeps it.
                    Some(a) => unsafe { verify_raw(a.as_ptr(), PAGE_SIZE, key) },
                    None => {
                        let a = p.map_local(q).expect("mappable");
                        // SAFETY: as above.
                        let b = unsafe { verify_raw(a.as_ptr(), PAGE_SIZE, key) };
                        p.unmap_local(q, a);
                        b
                    }
                };
            }
        }
    });
    w.corrupted += bad;
    let file = w.file_by_space(space);
    let st = file.space.truncate(w.cpu, start..start + len);
    if st.unreleased != 0 {
        return Outcome::Violation(format!("truncate left {} references unreleased", st.unreleased));
    }
    if st.folios == 0 {
        Outcome::Skipped
    } else {
        Outcome::Done
    }
}

/// Descriptor lookup under RCU from a random pfn, as a pfn walker does: pin the folio the word
/// names, re-check the word, read it, and drop the pin with `folio_put` (which frees the folio
/// if its owner let go meanwhile).
fn op_rcu_lookup(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
    let (start, end) = regions[w.below(regions.len() as u64) as usize];
    let pfn = start.add(w.below(end.0 - start.0));
    w.arg(pfn.0);
    let load = || m.memmap().load(m.platform(), pfn).map(|v| v.word);
    let pinned = {
        let g = m.rcu().read_lock(w.cpu);
        let Some(word) = load() else { return Outcome::Skipped };
        let Some(d) = memdesc::lookup::folio(word.kind()) else { return Outcome::Skipped };
        let f = d.get(&g);
        if !f.counts.try_get() {
            return Outcome::Skipped;
        }
        // SAFETY: pinned: the descriptor stays a live folio until our put, beyond the guard.
        let f: &Folio = unsafe { &*(f as *const Folio) };
        (f, load() == Some(word))
    };
    let (f, owns) = pinned;
    let mut out = Outcome::Done;
    if owns {
        let (fp, order) = (f.flags.pfn(), f.flags.order());
        if pfn < fp || pfn >= fp.add(1 << order) {
            out = Outcome::Violation(format!("pfn {pfn} names a pinned folio covering {fp}+{order}"));
        }
    }
    if let Err(e) = m.folio_put(w.cpu, f) {
        out = Outcome::Violation(format!("dropping an RCU pin: {e}"));
    }
    out
}

fn op_drain(w: &mut Worker<'_, '_, '_>) -> Outcome {
    if w.below(8) == 0 {
        w.m.drain_all();
    } else {
        w.m.drain_cpu(w.cpu.id());
    }
    Outcome::Done
}

/// Hands a held object to the exchange and takes one another CPU left there (remote frees).
fn op_exchange(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let mine = w.take(|_| true);
    let theirs = {
        let mut x = w.shared.exchange.lock().unwrap();
        let t = if x.is_empty() { None } else { Some(x.swap_remove(0)) };
        if let Some(l) = mine {
            x.push(l);
        }
        t
    };
    match theirs {
        Some(l) => {
            w.push(l);
            Outcome::Done
        }
        None => Outcome::Skipped,
    }
}

fn op_free_any(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|_| true) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Every operation, with its weight. See the module docs for how a subsystem adds its rows.
pub const OPS: &[Op] = &[
    Op { name: "page_alloc", weight: 10, run: op_page_alloc },
    Op { name: "page_free", weight: 9, run: op_page_free },
    Op { name: "page_misuse", weight: 1, run: op_page_misuse },
    Op { name: "kmalloc", weight: 12, run: op_kmalloc },
    Op { name: "kfree", weight: 11, run: op_kfree },
    Op { name: "cache_alloc", weight: 10, run: op_cache_alloc },
    Op { name: "cache_free", weight: 9, run: op_cache_free },
    Op { name: "cache_alloc_bulk", weight: 2, run: op_cache_alloc_bulk },
    Op { name: "cache_free_bulk", weight: 2, run: op_cache_free_bulk },
    Op { name: "cache_shrink", weight: 1, run: op_cache_shrink },
    Op { name: "folio_alloc", weight: 8, run: op_folio_alloc },
    Op { name: "folio_put", weight: 7, run: op_folio_put },
    Op { name: "folio_ref", weight: 3, run: op_folio_ref },
    Op { name: "folio_flags", weight: 3, run: op_folio_flags },
    Op { name: "folio_split", weight: 2, run: op_folio_split },
    Op { name: "pc_insert", weight: 6, run: op_pc_insert },
    Op { name: "pc_lookup", weight: 8, run: op_pc_lookup },
    Op { name: "pc_delete", weight: 2, run: op_pc_delete },
    Op { name: "pc_truncate", weight: 2, run: op_pc_truncate },
    Op { name: "rcu_lookup", weight: 6, run: op_rcu_lookup },
    Op { name: "drain", weight: 1, run: op_drain },
    Op { name: "exchange", weight: 2, run: op_exchange },
    Op { name: "free_any", weight: 1, run: op_free_any },
];

/// The torture machine: 448 MiB over two nodes mixing both memmap layouts, DMA/DMA32 zones,
/// firmware holes and reserved ranges, and 64 MiB of Movable memory without a direct map.
pub fn torture_layout() -> MemoryLayout {
    let mut l = MemoryLayout::new();
    let spec = |s: u64, e: u64, node, mapped, layout| RegionSpec { start: Pfn(s), end: Pfn(e), node, mapped, layout };
    l.add_region(spec(1, 0x9f, 0, true, MemmapLayout::Flat)).expect("layout");
    l.add_region(spec(0x100, 0x10000, 0, true, MemmapLayout::TwoLevel)).expect("layout");
    l.add_region(spec(0x10000, 0x18000, 1, true, MemmapLayout::Flat)).expect("layout");
    l.add_region(spec(0x10_0000, 0x10_4000, 1, false, MemmapLayout::Flat)).expect("layout");
    l.movable_from(Pfn(0x10_0000));
    l.reserve(Pfn(0x100), Pfn(0x200)).expect("layout");
    l.reserve(Pfn(0x1000), Pfn(0x1400)).expect("layout");
    l.reserve(Pfn(0x2345), Pfn(0x2350)).expect("layout");
    l
}

/// Runs the op table driven by `script` (every choice is drawn from its bytes) on one CPU of
/// the torture machine, with invariant checks every 64 ops and at the end, and fault injection
/// at `fail_rate`: the body of the `api_ops` fuzz target and of the suite's property test.
/// Any input must end clean (no violation, lost page or corrupted byte).
pub fn run_script(script: &[u8], fail_rate: f64) -> TortureReport {
    let cfg = TortureConfig {
        threads: 1,
        seed: 0x5C41,
        duration: None,
        max_ops: None,
        fail_rate,
        check_every: 64,
        max_live_pages: 4096,
        script: Some(script.to_vec()),
        ..TortureConfig::default()
    };
    run(&cfg).expect("the torture machine boots")
}

/// Free pages with every cache shrunk (after a grace period for TYPESAFE_BY_RCU caches) and
/// every per-CPU list drained: the figure that must come back after everything is freed.
pub fn settled_free_pages(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let mut last = u64::MAX;
    // Shrinking one cache frees slab descriptors into another: repeat until nothing moves.
    for _ in 0..8 {
        let mut caches = Vec::new();
        m.for_each_cache(|c| caches.push(c as *const SlabCache));
        for c in caches {
            // SAFETY: caches live until destroyed, which only their creators do, not while
            // this runs (the caller holds the machine quiescent).
            m.shrink_cache(cpu, &m.cache_ref(unsafe { &*c }));
        }
        m.drain_all();
        let now = m.nr_free_pages();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Live slab objects in every cache of the machine.
pub fn live_slab_objects(m: &SimMachine) -> u64 {
    let mut n = 0;
    m.for_each_cache(|c| n += c.live_objects());
    n
}

fn per_cache_objects(m: &SimMachine) -> Vec<(&'static str, u64)> {
    let mut v = vec![];
    m.for_each_cache(|c| v.push((c.name(), c.live_objects())));
    v
}

fn ctor_pattern(p: NonNull<u8>) {
    // SAFETY: a fresh object slot of the 192-byte cache.
    unsafe { p.as_ptr().write_bytes(0x5a, 8) };
}

/// Runs a torture (see the module docs).
pub fn run(cfg: &TortureConfig) -> Result<TortureReport, String> {
    let threads = if cfg.script.is_some() { 1 } else { cfg.threads.clamp(1, memdesc::cpu::MAX_CPUS) };
    let m = crate::boot(&torture_layout(), Config { nr_cpus: threads, debug_checks: true, ..Config::default() })
        .map_err(|e| e.to_string())?;
    let boot_cpu = m.cpus().claim(0).expect("cpu 0");
    let caches_args = [
        CacheArgs::new("torture-24", 24),
        CacheArgs { ctor: Some(ctor_pattern), ..CacheArgs::new("torture-192-ctor", 192) },
        CacheArgs { typesafe_by_rcu: true, ..CacheArgs::new("torture-1000-rcu", 1000) },
        CacheArgs { reclaimable: true, ..CacheArgs::new("torture-3000", 3000) },
    ];
    // Baselines with the caches created and every cache settled.
    let mut caches = vec![];
    let mut sizes = vec![];
    for a in caches_args {
        sizes.push(a.size);
        caches.push(m.create_cache(&boot_cpu, a).map_err(|e| format!("torture setup: {e}"))?);
    }
    let free0 = settled_free_pages(&m, &boot_cpu);
    let objs0 = live_slab_objects(&m);
    let per_cache0 = per_cache_objects(&m);
    let shared_space = m.address_space_create(&boot_cpu).map_err(|e| format!("torture setup: {e}"))?;
    drop(boot_cpu);
    let shared = Shared {
        caches,
        sizes,
        exchange: Mutex::new(Vec::new()),
        shared_file: File { id: mix(cfg.seed ^ 0xF11E), space: shared_space },
        stop: AtomicBool::new(false),
        threads,
        seed: cfg.seed,
    };
    if cfg.fail_rate > 0.0 {
        m.fault().configure(FaultConfig { rate: cfg.fail_rate, seed: cfg.seed, sites: FaultSites::ALL });
    }
    let weights: Vec<u32> = OPS
        .iter()
        .map(|o| if cfg.only.is_empty() || cfg.only.iter().any(|n| n == o.name) { o.weight } else { 0 })
        .collect();
    let total_weight: u64 = weights.iter().map(|&w| w as u64).sum();
    if total_weight == 0 {
        return Err(format!("no operation named {:?}", cfg.only));
    }
    let weights = &weights;
    let barrier = Barrier::new(threads);
    let checks = AtomicU64::new(0);
    let global_violations = Mutex::new((0u64, Vec::<String>::new()));
    let start = Instant::now();
    let elapsed = Mutex::new(Duration::ZERO);
    let poison_rate = cfg.poison_rate;
    let threshold = (poison_rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let (shared, barrier, checks, gv, elapsed, m) =
                    (&shared, &barrier, &checks, &global_violations, &elapsed, &m);
                let progress = cfg.progress.clone();
                s.spawn(move || {
                    let cpu = m.cpus().claim(id).expect("one CPU per thread");
                    let mut w = Worker::new(m, &cpu, shared, cfg.seed, cfg.max_live_pages);
                    if let Some(script) = &cfg.script {
                        w.script = script;
                        w.scripted = true;
                    }
                    for k in 0..2 {
                        match m.address_space_create(&cpu) {
                            Ok(space) => w.files.push(File { id: mix(cfg.seed ^ mix((id * 2 + k) as u64 + 7)), space }),
                            Err(e) if is_alloc_failure(e) => {}
                            Err(e) => w.violation(format!("address_space_create: {e}")),
                        }
                    }
                    let mut done = 0u64;
                    loop {
                        let mut n = cfg.check_every.max(1);
                        if let Some(max) = cfg.max_ops {
                            n = n.min(max.saturating_sub(done));
                        }
                        for i in 0..n {
                            if w.exhausted() {
                                break;
                            }
                            if threshold != 0 && w.rand() < threshold {
                                if let Some(hook) = POISON_HOOK {
                                    match hook(&mut w) {
                                        Ok(p) => w.poisoned += p,
                                        Err(e) => w.violation(format!("hwpoison: {e}")),
                                    }
                                }
                            }
                            w.run_one(OPS, weights, total_weight);
                            if i % 1024 == 1023 {
                                if let Some(p) = &progress {
                                    p.fetch_add(1024, Ordering::Relaxed);
                                }
                            }
                        }
                        if let Some(p) = &progress {
                            p.fetch_add(n % 1024, Ordering::Relaxed);
                        }
                        done += n;
                        // Quiescent point: every CPU stops, checks its own state, then the
                        // leader checks the machine and decides whether to go on.
                        barrier.wait();
                        w.local_check();
                        if barrier.wait().is_leader() {
                            global_check(m, gv);
                            checks.fetch_add(1, Ordering::Relaxed);
                            let out_of_time = cfg.duration.is_some_and(|d| start.elapsed() >= d);
                            let out_of_ops = cfg.max_ops.is_some_and(|max| done >= max) || w.exhausted();
                            if out_of_time
                                || out_of_ops
                                || (cfg.duration.is_none() && cfg.max_ops.is_none() && cfg.script.is_none())
                            {
                                shared.stop.store(true, Ordering::Relaxed);
                                *elapsed.lock().unwrap() = start.elapsed();
                            }
                        }
                        barrier.wait();
                        if shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    // Tear down: free everything this CPU holds and its files.
                    while let Some(l) = w.live.pop() {
                        if let Outcome::Violation(msg) = w.release(l) {
                            w.violation(format!("teardown: {msg}"));
                        }
                    }
                    for f in std::mem::take(&mut w.files) {
                        let fid = f.id;
                        let mut cached = vec![];
                        f.space.for_each(|_, folio| cached.push(folio as *const Folio));
                        for c in cached {
                            // SAFETY: cached folios live while cached; nobody else uses this file now.
                            w.verify_cached(fid, unsafe { &*c });
                        }
                        let st = f.space.destroy(&cpu);
                        if st.unreleased != 0 {
                            w.violation(format!("destroy left {} references", st.unreleased));
                        }
                    }
                    w.live_pages = 0;
                    w.result()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("torture thread panicked")).collect()
    });
    let elapsed = *elapsed.lock().unwrap();
    m.fault().disable();
    let cpu = m.cpus().claim(0).expect("cpu 0");
    let mut report = TortureReport {
        seed: cfg.seed,
        threads,
        elapsed,
        checks: checks.load(Ordering::Relaxed),
        injected_failures: m.fault().injected(),
        poison_available: POISON_HOOK.is_some(),
        per_op: OPS.iter().map(|o| OpStat { name: o.name, ..OpStat::default() }).collect(),
        ..TortureReport::default()
    };
    let (gv, gmsgs) = std::mem::take(&mut *global_violations.lock().unwrap());
    report.violations += gv;
    report.messages.extend(gmsgs);
    for w in &results {
        report.ops += w.ops;
        report.violations += w.violations;
        report.corrupted_bytes += w.corrupted;
        report.poisoned_pages += w.poisoned;
        report.messages.extend(w.messages.iter().cloned());
        for (a, b) in report.per_op.iter_mut().zip(&w.stats) {
            a.runs += b.runs;
            a.failed += b.failed;
            a.skipped += b.skipped;
        }
        if report.log_tail.is_empty() {
            if let Some(t) = &w.first_violation_log {
                report.log_tail = t.clone();
            }
        }
    }
    report.log_hash = results[0].log_hash;
    if report.log_tail.is_empty() {
        report.log_tail = results[0].log_tail.clone();
    }
    // What CPUs left in the exchange, then the shared file, then the torture's caches.
    {
        let mut last = Worker::new(&m, &cpu, &shared, cfg.seed, u64::MAX);
        let left: Vec<_> = std::mem::take(&mut *shared.exchange.lock().unwrap());
        for l in left {
            if let Outcome::Violation(msg) = last.release(l) {
                last.violation(format!("teardown: {msg}"));
            }
        }
        report.corrupted_bytes += last.corrupted;
        report.violations += last.violations;
        report.messages.extend(last.messages.iter().cloned());
    }
    let Shared { caches, shared_file, .. } = shared;
    let st = shared_file.space.destroy(&cpu);
    if st.unreleased != 0 {
        report.violations += 1;
        report.messages.push(format!("destroy of the shared file left {} references", st.unreleased));
    }
    let free_end = settled_free_pages(&m, &cpu);
    let objs_end = live_slab_objects(&m);
    if objs_end != objs0 {
        report.violations += 1;
        let now = per_cache_objects(&m);
        let diff: Vec<_> = now
            .iter()
            .filter(|(n, c)| per_cache0.iter().find(|(n0, _)| n0 == n).map_or(0, |x| x.1) != *c)
            .map(|(n, c)| format!("{n}: {} -> {c}", per_cache0.iter().find(|(n0, _)| n0 == n).map_or(0, |x| x.1)))
            .collect();
        report.messages.push(format!("slab objects: {objs0} live at the start, {objs_end} at the end ({diff:?})"));
    }
    report.lost_pages = free0.saturating_sub(free_end);
    if free_end > free0 {
        report.violations += 1;
        report.messages.push(format!("{} more pages free at the end than at the start", free_end - free0));
    }
    let mut gvm = Mutex::new((0u64, Vec::new()));
    global_check(&m, &gvm);
    let (gv, gmsgs) = std::mem::take(gvm.get_mut().unwrap());
    report.violations += gv;
    report.messages.extend(gmsgs);
    for c in caches {
        if let Err(e) = m.destroy_cache(&cpu, c) {
            report.violations += 1;
            report.messages.push(format!("destroy_cache: {e}"));
        }
    }
    Ok(report)
}

/// The machine-wide checks at a quiescent point: the allocator and every descriptor.
fn global_check(m: &SimMachine, out: &Mutex<(u64, Vec<String>)>) {
    let mut o = out.lock().unwrap();
    if let Err(v) = m.check(|_, _, _| {}) {
        o.0 += 1;
        if o.1.len() < 8 {
            o.1.push(format!("check: {v}"));
        }
    }
    if let Err(v) = m.check_descriptors() {
        o.0 += 1;
        if o.1.len() < 8 {
            o.1.push(format!("check_descriptors: {v}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_detects_every_changed_byte() {
        let mut buf = vec![0u8; 37];
        // SAFETY: our buffer.
        unsafe {
            fill_raw(buf.as_mut_ptr(), 37, 99);
            assert_eq!(verify_raw(buf.as_ptr(), 37, 99), 0);
            buf[3] ^= 1;
            buf[36] ^= 0xff;
            assert_eq!(verify_raw(buf.as_ptr(), 37, 99), 2);
            assert!(verify_raw(buf.as_ptr(), 37, 0xDEAD_BEEF_1234_5678) > 30, "another object's pattern");
        }
    }

    #[test]
    fn op_weights_are_positive_and_names_unique() {
        let mut names: Vec<_> = OPS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPS.len());
        assert!(OPS.iter().all(|o| o.weight > 0));
    }
}
