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
//! it. The table covers the page allocator (all orders and flags, guard pages), kmalloc and
//! slab caches, folios (refs, LRU, flags, split), the page cache, descriptor lookup under RCU,
//! page tables (anon folios mapped into each CPU's own `Mm` by PTEs or a PMD, `split_pmd`,
//! forks that share them, destroyed later; mappable driver memory in a pfn VMA), vmalloc,
//! page_pool blocks and fragments, zsmalloc and z3fold objects with pool compaction and
//! `zs_migrate_page` under them, zone compaction, balloon inflate/deflate and offlining /
//! onlining of flat ranges (an unmovable page in the range is a clean failure, counted as
//! `failed`). Each CPU's `Mm` has an anon VMA and a pfn VMA cut into 2 MiB slots, one mapping
//! per slot. **A new subsystem plugs in** by:
//!
//! 1. adding a [`Live`] variant for the objects it hands out, with its arm in
//!    [`Worker::release`] (verify the pattern, free, expect `Ok`) and in [`Live::pages`];
//! 2. adding its rows to [`OPS`]: an allocating op that fills the memory with
//!    [`Worker::fill`] and pushes the `Live`, a freeing op that calls [`Worker::release`], and
//!    any op that only exercises it (ops that hold nothing afterwards just return an
//!    [`Outcome`]);
//! 3. if it has invariants of its own, checking them in `Worker::local_check` (per CPU, at
//!    every quiescent point) or in `global_check` (leader only);
//! 4. if `memory_failure` can destroy its objects, dropping them in `Worker::drop_poisoned`.
//!
//! # Patterns and moving memory
//!
//! A pattern is a window of a fixed 128 KiB pseudo-random source chosen by the key (one
//! `memcpy` to fill, one `memcmp` to verify, so debug builds run fast too). Raw pages are keyed
//! by pfn; folios, mapped memory and objects by their id and page index, because compaction,
//! offlining and migration move folios. A folio moves only while nobody but the page cache and
//! its mappings holds a reference (migration takes its own and freezes at the expected count),
//! so a folio this CPU holds stays put; the owner still touches its pages under the folio lock
//! ([`Worker::lock_folio`]), and the split op needs that lock.
//!
//! # Folio references
//!
//! A CPU keeps the references it holds on a [`Live`] folio in raw form (`FolioRef::into_raw`,
//! as a C-like caller keeps pfns) and takes or drops one only through the typed API: a
//! `FolioRef` adopted from it, cloned (`folio_get`) or put (`folio_put`). Nothing waits for a
//! frozen count or retries a refused put: a reference a migration or split took from under its
//! holder would show as a refused put or a wrong count at the next quiescent check. The
//! `folio_clone`, `rcu_lookup` (`folio_try_get` from a random pfn), `pc_lookup` and
//! `folio_migrate` ops take and drop references while other CPUs migrate, split and compact;
//! `folio_hot` has every CPU either reference or migrate one shared folio, so the two meet
//! constantly.
//!
//! # hwpoison
//!
//! [`POISON_HOOK`] calls `memory_failure` at a uniformly random pfn of the machine (any kind of
//! page, as a machine check picks it). Each op draws with probability `poison_rate`; the draws
//! are injected at the next quiescent point, one CPU at a time with the others stopped, and
//! then every CPU drops the held objects the events destroyed (`poison_lost_objects`): a
//! poisoned folio's surviving pieces are verified and put, the poisoned piece put unverified
//! (its last put retires it), a poisoned slab's objects freed unverified (which retires the
//! slab when empty). `poisoned_pages` counts pages retired (now or at the owner's last put);
//! calls that left kernel memory in place are `poison_ignored`, typed refusals (two-level
//! region, kinds whose handler is not wired, busy, already poisoned) `poison_refused`, neither
//! a violation. At the end `lost_pages` leaves out the pages whose word is `HwPoison`
//! (`hwpoison_pages`), and every other page must be back.
//!
//! # Invariants at quiescent points
//!
//! Per CPU: held folios' refcounts equal the references taken; every mapped folio's mapcount
//! equals the entries the reverse map finds (`rmap_walk` over this CPU's mm and its forks) and
//! its refcount those entries plus the owner's; files' trees verify and cached folios hold
//! exactly the cache's reference. Leader: the allocator checker, `check_descriptors` (every
//! block descriptor kind against its words) and the zsmalloc pool's own `verify`.
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
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use memdesc::balloon::Balloon;
use memdesc::cpu::Cpu;
use memdesc::desc::{Folio, MappableDesc, PG_LRU};
use memdesc::fault::{FaultConfig, FaultSites};
use memdesc::folio::{FolioError, FolioKind, FolioRef};
use memdesc::hwpoison::{PoisonAction, PoisonError, PoisonReport, PoisonedKind};
use memdesc::migrate::MigrateError;
use memdesc::offline::OfflineError;
use memdesc::page_pool::{pp_put_pfn, PagePool, PoolError, PoolParams};
use memdesc::pagecache::{AddressSpaceRef, PageCacheError};
use memdesc::pgtable::{MapError, MmCaches, MmKind, MmRef, PMD_SIZE};
use memdesc::vmalloc::{Unmappable, VmallocError, VmallocSpace};
use memdesc::z3fold::{Z3Error, Z3foldPool};
use memdesc::zsmalloc::{zs_migrate_page, Handle, ZsError, ZsMigrateError, ZsPool, ZS_MAX_PAGES};

// Ownership in the torture: a `Live` entry is the one owner of what it names. The owned
// handles (`Pages`, `KBox`, `SlabObj`, zsmalloc `Handle`) are turned into raw values when an
// entry is pushed and rebuilt (`from_raw`) only by whoever took the entry off its CPU's list,
// once, to free it or (zsmalloc) to borrow it for a mapping: the SAFETY comments below cite
// this rule.
use memdesc::kmalloc::KBox;
use memdesc::slab::SlabObj;
use memdesc::{
    AllocError, CacheArgs, CacheRef, Config, FreeError, Gfp, MemmapLayout, MemoryLayout, Pages, Pfn, Platform,
    RegionSpec, SlabCache, PAGE_SIZE,
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
    /// Harness self-test: CPU `.0` panics after `.1` operations, to check that a worker's
    /// panic ends the run promptly with an error instead of leaving the others waiting at the
    /// next quiescent point.
    pub inject_panic: Option<(usize, u64)>,
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
            inject_panic: None,
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
    /// Pages the hwpoison hook retired (at once or when their owner let go): the poisoned page,
    /// or a whole slab for a slab page. Pages `memory_failure` left in place (kernel memory)
    /// are `poison_ignored`, refused calls `poison_refused`.
    pub poisoned_pages: u64,
    /// `memory_failure` calls that left kernel memory in place (reserved, raw, page tables…).
    pub poison_ignored: u64,
    /// `memory_failure` calls refused with a typed error (two-level region, a kind whose
    /// handler is not wired, busy, already poisoned): counted, not violations.
    pub poison_refused: u64,
    /// Pages whose word is `HwPoison` at the end (left out of `lost_pages`).
    pub hwpoison_pages: u64,
    /// Held objects the poison destroyed, dropped as lost (not verified, not leaked).
    pub poison_lost_objects: u64,
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

/// hwpoison injection: poisons a page of the machine and returns how many pages it retired
/// (an `Err` is a violation). It records what it did in the shared event list, from which every
/// CPU drops the objects the poison destroyed.
pub type PoisonHook = fn(&mut Worker<'_, '_, '_>) -> Result<u64, String>;

/// The hwpoison plug-in point: `memory_failure` at a uniformly random pfn of the machine (any
/// kind of page, as a machine check picks). Each op draws with probability `poison_rate`;
/// the draws are injected at the next quiescent point, one CPU at a time with the others
/// stopped, so that the owner of a hit object drops it as lost (a split folio's surviving
/// pieces verified and put, a poisoned slab's objects freed unverified) before it touches it
/// again. Kinds `memory_failure` refuses with a typed error are counted (`poison_refused`).
pub const POISON_HOOK: Option<PoisonHook> = Some(poison_random_pfn);

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
    /// An anon or file folio (not in a page cache) with `refs` references held, kept raw
    /// (see the module docs). Its references pin it: migration does not move it. Its owner
    /// still reads and writes its pages under the folio lock ([`Worker::lock_folio`]).
    Folio {
        /// The folio.
        f: &'m Folio,
        /// References this CPU holds.
        refs: u32,
        /// Its order when taken (the budget; a poison split changes the folio's).
        order: u32,
        /// Pattern id (per page: with `off` + the page's index, not the pfn, which moves).
        id: u64,
        /// Index of the folio's first page in the allocation it was split from.
        off: u64,
    },
    /// An anon folio mapped into this CPU's address space at `va` (a 2 MiB slot), by PTEs or
    /// one PMD; the CPU keeps its own reference besides the entries'.
    Mapped {
        /// The folio.
        f: &'m Folio,
        /// Start of its slot.
        va: u64,
        /// Order.
        order: u32,
        /// Mapped by a PMD (not split since).
        pmd: bool,
        /// Pattern id (per page index).
        id: u64,
    },
    /// Mappable driver memory mapped into this CPU's address space at `va` (a 2 MiB slot of
    /// its pfn VMA); the driver's reference is held.
    MapDev {
        /// The descriptor.
        d: &'m MappableDesc,
        /// Start of its slot.
        va: u64,
        /// Order.
        order: u32,
        /// Pattern id (per page index).
        id: u64,
    },
    /// A vmalloc area of the shared vmalloc space.
    Vmalloc {
        /// Its address.
        va: usize,
        /// Bytes asked for.
        size: usize,
        /// Pattern id.
        id: u64,
    },
    /// A page_pool block or fragment (one pool reference).
    Net {
        /// The block's pfn.
        pfn: Pfn,
        /// Offset in the block.
        off: usize,
        /// Bytes.
        len: usize,
        /// Pattern id.
        id: u64,
    },
    /// A zsmalloc object of the shared pool.
    Zs {
        /// Handle ([`Handle::into_raw`]).
        h: u64,
        /// Bytes.
        size: usize,
        /// Pattern id.
        id: u64,
    },
    /// A z3fold object of the shared pool.
    Z3 {
        /// Handle ([`Handle::into_raw`]).
        h: u64,
        /// Bytes.
        size: usize,
        /// Pattern id.
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
            Live::Folio { order, .. } | Live::Mapped { order, .. } | Live::MapDev { order, .. } => 1 << order,
            Live::Vmalloc { size, .. } => (*size as u64).div_ceil(PAGE_SIZE as u64),
            Live::Net { len, .. } => (*len as u64).div_ceil(PAGE_SIZE as u64),
            Live::Zs { .. } | Live::Z3 { .. } => 0,
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
    mms: &'m MmCaches<'m, SimPlatform>,
    vm: VmallocSpace<'m, SimPlatform>,
    pool: PagePool<'m, SimPlatform>,
    zs: ZsPool<'m, SimPlatform>,
    z3: Z3foldPool<'m, SimPlatform>,
    balloon: Balloon<'m, SimPlatform>,
    /// Ranges taken offline by `offline` and not yet onlined.
    offlined: Mutex<Vec<(Pfn, Pfn)>>,
    /// What the poison phase of the current quiescent point did (see [`POISON_HOOK`]).
    poison_events: Mutex<Vec<PoisonReport>>,
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
    poison_ignored: u64,
    poison_refused: u64,
    poison_lost: u64,
    /// Poison injections drawn since the last quiescent point.
    pending_poison: u64,
    /// This CPU's address space (a process), its anon and pfn VMAs cut into free 2 MiB slots.
    mm: Option<MmRef<'s, SimPlatform>>,
    /// Forks of `mm`, sharing its folios until destroyed.
    children: Vec<MmRef<'s, SimPlatform>>,
    slots: Vec<u64>,
    dev_slots: Vec<u64>,
    stats: Vec<OpStat>,
}

/// Start and 2 MiB slots of each CPU's anon VMA, and of its pfn VMA.
const ANON_BASE: u64 = 0x4000_0000;
const ANON_SLOTS: u64 = 48;
const DEV_BASE: u64 = 0x8000_0000;
const DEV_SLOTS: u64 = 16;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes of the pattern source; a key's pattern is a window of it.
const PAT_LEN: usize = 1 << 17;
/// Window offsets: a key picks one of this many; windows are at most `PAT_LEN - PAT_SPAN`.
const PAT_SPAN: usize = 1 << 16;
/// Longest window: longer memory is patterned in chunks, each with its own key.
const PAT_CHUNK: usize = PAT_LEN - PAT_SPAN;

/// The pattern source: 128 KiB of pseudo-random bytes, the same for every run. A key's pattern
/// is the window starting at `key % PAT_SPAN`, so filling and verifying are one `memcpy` and
/// one `memcmp` (fast in debug builds too, where a per-word loop is not); two keys share a
/// window with probability 2^-16 per page or object.
fn pattern_source() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| (0..PAT_LEN / 8).flat_map(|i| mix(i as u64 ^ 0x7061_7474).to_le_bytes()).collect())
}

/// Zeroes to compare against.
static ZEROES: [u8; PAT_CHUNK] = [0; PAT_CHUNK];

/// The window of chunk `c` of `key`'s pattern, `len` bytes.
fn window(key: u64, c: usize, len: usize) -> &'static [u8] {
    let o = (mix(key ^ (c as u64).wrapping_mul(GAMMA)) % PAT_SPAN as u64) as usize;
    &pattern_source()[o..o + len]
}

/// Writes the pattern of `key` into `len` bytes at `p`.
///
/// # Safety
/// `p..p+len` is memory the caller owns.
unsafe fn fill_raw(p: *mut u8, len: usize, key: u64) {
    for c in 0..len.div_ceil(PAT_CHUNK) {
        let n = (len - c * PAT_CHUNK).min(PAT_CHUNK);
        // SAFETY: inside the caller's memory; the window is another allocation.
        unsafe { std::ptr::copy_nonoverlapping(window(key, c, n).as_ptr(), p.add(c * PAT_CHUNK), n) };
    }
}

/// Bytes of `got` that differ from `want` (equal lengths).
fn diff_bytes(got: &[u8], want: &[u8]) -> u64 {
    if got == want {
        return 0;
    }
    got.iter().zip(want).filter(|(a, b)| a != b).count() as u64
}

/// Bytes of `len` at `p` that do not hold the pattern of `key`.
///
/// # Safety
/// As [`fill_raw`].
unsafe fn verify_raw(p: *const u8, len: usize, key: u64) -> u64 {
    let mut bad = 0;
    for c in 0..len.div_ceil(PAT_CHUNK) {
        let n = (len - c * PAT_CHUNK).min(PAT_CHUNK);
        // SAFETY: inside the caller's memory.
        let got = unsafe { std::slice::from_raw_parts(p.add(c * PAT_CHUNK), n) };
        bad += diff_bytes(got, window(key, c, n));
    }
    bad
}

/// Bytes of `len` at `p` that are not zero.
///
/// # Safety
/// As [`fill_raw`].
unsafe fn nonzero_raw(p: *const u8, len: usize) -> u64 {
    let mut bad = 0;
    for c in 0..len.div_ceil(PAT_CHUNK) {
        let n = (len - c * PAT_CHUNK).min(PAT_CHUNK);
        // SAFETY: the caller's memory.
        let got = unsafe { std::slice::from_raw_parts(p.add(c * PAT_CHUNK), n) };
        bad += diff_bytes(got, &ZEROES[..n]);
    }
    bad
}

/// What a CPU reports when it is done.
struct WorkerResult {
    ops: u64,
    violations: u64,
    corrupted: u64,
    poisoned: u64,
    poison_ignored: u64,
    poison_refused: u64,
    poison_lost: u64,
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
            poison_ignored: 0,
            poison_refused: 0,
            poison_lost: 0,
            pending_poison: 0,
            mm: None,
            children: vec![],
            slots: vec![],
            dev_slots: vec![],
            stats: OPS.iter().map(|o| OpStat { name: o.name, ..OpStat::default() }).collect(),
        }
    }

    fn result(self) -> WorkerResult {
        WorkerResult {
            ops: self.seq,
            violations: self.violations,
            corrupted: self.corrupted,
            poisoned: self.poisoned,
            poison_ignored: self.poison_ignored,
            poison_refused: self.poison_refused,
            poison_lost: self.poison_lost,
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

    /// Fills the pages of a block that may move with the pattern of `id` by page index from
    /// `off` (zero check as for [`Worker::fill_pages`]).
    pub fn fill_idx(&mut self, pfn: Pfn, order: u32, id: u64, off: u64, zeroed: bool) {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let k = Self::key(id, off + i);
            // SAFETY: the caller owns the page (and holds the folio lock if it is a folio).
            bad += self.with_page(pfn.add(i), |a| unsafe {
                let z = if zeroed { nonzero_raw(a, PAGE_SIZE) } else { 0 };
                fill_raw(a, PAGE_SIZE, k);
                z
            });
        }
        self.corrupted += bad;
    }

    /// Verifies what [`Worker::fill_idx`] wrote; returns corrupted bytes.
    pub fn verify_idx(&mut self, pfn: Pfn, order: u32, id: u64, off: u64) -> u64 {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let k = Self::key(id, off + i);
            // SAFETY: as above.
            bad += self.with_page(pfn.add(i), |a| unsafe { verify_raw(a, PAGE_SIZE, k) });
        }
        self.corrupted += bad;
        bad
    }

    /// Takes `f`'s lock (which migration will not move a folio under either) until
    /// [`Worker::unlock_folio`]. Only migration takes a torture folio's lock besides its
    /// owner, briefly.
    pub fn lock_folio(&self, f: &Folio) {
        while !self.m.folio_trylock(f) {
            std::hint::spin_loop();
        }
    }

    /// One of this CPU's raw references on `f`, lent as a typed [`FolioRef`] that is not
    /// dropped (the reference stays this CPU's).
    ///
    /// # Safety
    /// This CPU holds a reference on `f` (a [`Live`] record counts it).
    unsafe fn held(f: &'m Folio) -> std::mem::ManuallyDrop<FolioRef<'m>> {
        // SAFETY: the caller holds a reference, which the ManuallyDrop never gives up.
        std::mem::ManuallyDrop::new(unsafe { FolioRef::from_raw(f) })
    }

    /// Takes another reference to a folio this CPU holds one of: a clone of a held reference,
    /// kept raw. No waiting: a holder's count is never frozen.
    ///
    /// # Safety
    /// This CPU holds a reference on `f`.
    unsafe fn get_owned(&self, f: &'m Folio) {
        // SAFETY: the caller's promise.
        let held = unsafe { Self::held(f) };
        let _ = held.get().into_raw();
    }

    /// Drops one of the references this CPU holds on `f` with `folio_put`. No retry: a
    /// refused put is the error it is.
    ///
    /// # Safety
    /// This CPU holds a reference on `f` and gives it up here.
    unsafe fn put_owned(&self, f: &'m Folio) -> Result<bool, FolioError> {
        // SAFETY: the caller's promise: the reference is adopted once and put.
        self.m.folio_put(self.cpu, unsafe { FolioRef::from_raw(f) })
    }

    /// Drops the lock [`Worker::lock_folio`] took.
    pub fn unlock_folio(&self, f: &Folio) {
        self.m.folio_unlock(f);
    }

    /// Verifies `buf` against the object pattern of `id`; returns corrupted bytes.
    fn verify_buf(&mut self, buf: &[u8], id: u64) -> u64 {
        // SAFETY: our buffer.
        let bad = unsafe { verify_raw(buf.as_ptr(), buf.len(), Self::key(id, 0)) };
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

    /// Takes a random held object matching `pred`, looking at all of them (for kinds that
    /// are a small share of the live set).
    pub fn take_scan(&mut self, pred: impl Fn(&Live<'m>) -> bool) -> Option<Live<'m>> {
        let n = self.live.len();
        if n == 0 {
            return None;
        }
        let s = self.below(n as u64) as usize;
        let i = (0..n).map(|k| (s + k) % n).find(|&i| pred(&self.live[i]))?;
        let l = self.live.swap_remove(i);
        self.live_pages -= l.pages();
        Some(l)
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
                // SAFETY: this entry owned the block and was taken off the list (the torture's
                // ownership rule above).
                match m.free_pages(self.cpu, unsafe { Pages::from_raw(m, pfn, order) }) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("free_pages({pfn}, {order}) of a live block: {e}")),
                }
            }
            Live::Kmalloc { ptr, size, id } => {
                self.arg(size as u64);
                self.verify(ptr, size, id);
                // SAFETY: as above.
                match m.kfree(self.cpu, unsafe { KBox::from_raw(m, ptr) }) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("kfree of a live {size}-byte object: {e}")),
                }
            }
            Live::Obj { cache, ptr, id } => {
                self.arg(cache as u64);
                let size = self.shared.sizes[cache];
                self.verify(ptr, size, id);
                let c = &self.shared.caches[cache];
                // SAFETY: as above; the entry names the cache the object came from.
                match c.free(self.cpu, unsafe { SlabObj::from_raw(c, ptr) }) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("free of a live object of cache {cache}: {e}")),
                }
            }
            Live::Folio { f, refs, id, off, .. } => {
                self.lock_folio(f);
                let (pfn, order) = (f.flags.pfn(), f.flags.order());
                self.arg(pfn.0);
                self.verify_idx(pfn, order, id, off);
                self.unlock_folio(f);
                if f.flags.flags() & PG_LRU != 0 {
                    m.lru_del(f);
                }
                for i in 0..refs {
                    // SAFETY: this CPU holds `refs` references on the folio (Live::Folio).
                    match unsafe { self.put_owned(f) } {
                        // With other CPUs, a lockless reader's pin may make its put the last.
                        Ok(freed) if freed == (i + 1 == refs) || (self.shared.threads > 1 && !freed) => {}
                        r => {
                            return Outcome::Violation(format!("folio_put {} of {refs} of {pfn}: {r:?}", i + 1));
                        }
                    }
                }
                Outcome::Done
            }
            Live::Mapped { f, va, order, id, .. } => {
                self.arg(va);
                self.lock_folio(f);
                self.verify_idx(f.flags.pfn(), order, id, 0);
                self.unlock_folio(f);
                let Some(mm) = &self.mm else { return Outcome::Violation("a mapped folio without an mm".into()) };
                if let Err(e) = mm.unmap(self.cpu, va, PMD_SIZE) {
                    return Outcome::Violation(format!("unmap of a mapped slot at {va:#x}: {e}"));
                }
                self.slots.push(va);
                // Forks may still map it.
                // SAFETY: the owner's reference (Live::Mapped).
                match unsafe { self.put_owned(f) } {
                    Ok(_) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("put of a mapped folio's reference: {e}")),
                }
            }
            Live::MapDev { d, va, order, id } => {
                self.arg(va);
                self.verify_idx(d.flags.pfn(), order, id, 0);
                let Some(mm) = &self.mm else { return Outcome::Violation("mapped driver memory without an mm".into()) };
                if let Err(e) = mm.unmap(self.cpu, va, PMD_SIZE) {
                    return Outcome::Violation(format!("unmap of driver memory at {va:#x}: {e}"));
                }
                self.dev_slots.push(va);
                // SAFETY: this entry held the driver's reference and was taken off the list.
                match unsafe { m.mappable_put_raw(self.cpu, d) } {
                    Ok(_) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("mappable_put of mapped driver memory: {e}")),
                }
            }
            Live::Vmalloc { va, size, id } => {
                self.arg(size as u64);
                let mut buf = vec![0u8; size];
                if let Err(e) = self.shared.vm.read(va, &mut buf) {
                    return Outcome::Violation(format!("read of a live vmalloc area {va:#x}+{size}: {e}"));
                }
                self.verify_buf(&buf, id);
                // SAFETY: this entry owned the area and was taken off the list.
                match unsafe { self.shared.vm.vfree(self.cpu, va) } {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("vfree of a live area {va:#x}: {e}")),
                }
            }
            Live::Net { pfn, off, len, id } => {
                self.arg(pfn.0);
                let k = Self::key(id, 0);
                // SAFETY: our fragment of a block we hold a pool reference to.
                let bad = self.with_page(pfn, |a| unsafe { verify_raw(a.add(off), len, k) });
                self.corrupted += bad;
                // SAFETY: this entry held one pool reference and was taken off the list.
                match unsafe { pp_put_pfn(m, self.cpu, pfn) } {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("put of a live page_pool reference of {pfn}: {e}")),
                }
            }
            Live::Zs { h, size, id } => {
                self.arg(size as u64);
                let zs = &self.shared.zs;
                // SAFETY: this entry owned the object and was taken off the list.
                let h = unsafe { Handle::from_raw(h) };
                // Mapping an object that straddles pages takes a bounce buffer, which fault
                // injection may refuse: retry.
                let mut tries = 0;
                let bad = loop {
                    match zs.map_read(self.cpu, &h) {
                        // SAFETY: the object's bytes, mapped.
                        Ok(r) => break unsafe { verify_raw(r.as_ptr(), size, Self::key(id, 0)) },
                        Err(ZsError::NoMemory(e)) if is_alloc_failure(e) && tries < 1000 => tries += 1,
                        // Its bytes were on a page `memory_failure` retired: lost, not corrupt.
                        Err(ZsError::Lost(_)) => {
                            self.poison_lost += 1;
                            break 0;
                        }
                        Err(e) => return Outcome::Violation(format!("zs map_read of a live object: {e}")),
                    }
                };
                self.corrupted += bad;
                match zs.free(self.cpu, h) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("zs free of a live object: {e}")),
                }
            }
            Live::Z3 { h, size, id } => {
                self.arg(size as u64);
                let z3 = &self.shared.z3;
                // SAFETY: as above.
                let h = unsafe { Handle::from_raw(h) };
                let bad = match z3.map_read(&h) {
                    // SAFETY: the object's bytes, mapped.
                    Ok(r) => unsafe { verify_raw(r.as_ptr(), size, Self::key(id, 0)) },
                    // Its page was retired by `memory_failure`: lost, not corrupt.
                    Err(Z3Error::Lost(_)) => {
                        self.poison_lost += 1;
                        0
                    }
                    Err(e) => return Outcome::Violation(format!("z3fold map_read of a live object: {e}")),
                };
                self.corrupted += bad;
                match z3.free(self.cpu, h) {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Violation(format!("z3fold free of a live object: {e}")),
                }
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
            if let Live::Mapped { f, va, .. } = l {
                // Mapcount equals the entries the reverse map finds in every mm (this CPU's
                // and its forks').
                let n = self.m.rmap_walk(self.cpu, f, |_, _, _| {});
                if n != f.counts.mapcount() || n == 0 {
                    errs.push(format!("folio mapped at {va:#x}: mapcount {}, rmap finds {n}", f.counts.mapcount()));
                }
                if f.counts.refcount() != n + 1 {
                    errs.push(format!(
                        "folio mapped at {va:#x}: refcount {}, {n} entries + the owner",
                        f.counts.refcount()
                    ));
                }
            }
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
        Ok(p) => {
            let (pfn, order) = p.into_raw();
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
    // SAFETY: this entry owns the whole block (taken off the list, pushed back below); the
    // wrong order and the tail pfn break only the shape part of the raw free's contract, which
    // its word check refuses before anything changes — what this op asserts.
    let (a, b) = unsafe { (w.m.free_pages_raw(w.cpu, pfn, order - 1), w.m.free_pages_raw(w.cpu, pfn.add(1), 0)) };
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
        Ok(b) => {
            let ptr = b.into_raw();
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
        Ok(o) => {
            let ptr = o.into_raw();
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
    let mut out: Vec<Option<SlabObj>> = (0..n).map(|_| None).collect();
    match w.shared.caches[cache].alloc_bulk(w.cpu, &mut out) {
        Ok(()) => {
            for o in out {
                let Some(o) = o else { return Outcome::Violation("alloc_bulk left a slot empty".into()) };
                let ptr = o.into_raw();
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
    let c = &w.shared.caches[cache];
    for l in objs {
        if let Live::Obj { ptr, id, .. } = l {
            w.verify(ptr, size, id);
            // SAFETY: the entry owned the object and was taken off the list.
            ptrs.push(Some(unsafe { SlabObj::from_raw(c, ptr) }));
        }
    }
    match w.shared.caches[cache].free_bulk(w.cpu, &mut ptrs) {
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
            // Kept raw in the Live record (see the module docs).
            let f = f.into_raw();
            if f.counts.refcount() != 1 || f.flags.order() != order {
                return Outcome::Violation(format!("fresh folio: refcount {} order {}", f.counts.refcount(), order));
            }
            let id = w.new_id();
            w.lock_folio(f);
            w.fill_idx(f.flags.pfn(), order, id, 0, zero);
            w.unlock_folio(f);
            if w.below(2) == 0 {
                w.m.lru_add(f);
            }
            w.push(Live::Folio { f, refs: 1, order, id, off: 0 });
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
    let Some(Live::Folio { f, refs, order, id, off }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    w.arg(f.flags.pfn().0);
    let refs = if refs > 1 && w.below(2) == 0 {
        // SAFETY: one of the `refs` this CPU holds.
        match unsafe { w.put_owned(f) } {
            Ok(false) => refs - 1,
            r => return Outcome::Violation(format!("put of one of {refs} references: {r:?}")),
        }
    } else if refs < 4 {
        // SAFETY: this CPU holds `refs` ≥ 1.
        unsafe { w.get_owned(f) };
        refs + 1
    } else {
        refs
    };
    w.push(Live::Folio { f, refs, order, id, off });
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
            // Migration may hold the lock for a moment: wait for it.
            w.lock_folio(f);
            let again = w.m.folio_trylock(f);
            w.m.folio_unlock(f);
            !again
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

/// Splits a held folio under its lock: the split freezes the count at the caller's one
/// reference, so this CPU first gives back its extra ones; another CPU's pin (a pfn walker's
/// `folio_try_get`) makes it refuse with `Busy`.
fn op_folio_split(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l) = w.take(|l| matches!(l, Live::Folio { f, .. } if f.flags.order() >= 1)) else {
        return Outcome::Skipped;
    };
    let Live::Folio { f, refs, id, off, order: budget } = l else { unreachable!("filtered") };
    let order = f.flags.order();
    let new_order = w.below(order as u64) as u32;
    w.arg(f.flags.pfn().0 | (new_order as u64) << 56);
    for i in 1..refs {
        // SAFETY: one of the `refs` this CPU holds; the last stays.
        if let Err(e) = unsafe { w.put_owned(f) } {
            return Outcome::Violation(format!("put {i} of {refs} before a split: {e}"));
        }
    }
    w.lock_folio(f);
    // SAFETY: the one reference this CPU now holds.
    let held = unsafe { Worker::held(f) };
    let mut pieces = vec![];
    let r = w.m.folio_split(w.cpu, &held, new_order, |p| pieces.push(p.into_raw()));
    w.unlock_folio(f);
    match r {
        Ok(()) => {
            if pieces.len() + 1 != 1 << (order - new_order) {
                return Outcome::Violation(format!("split into {} pieces", pieces.len() + 1));
            }
            // Held by us, the pieces do not move.
            let first = f.flags.pfn();
            w.push(Live::Folio { f, refs: 1, order: new_order, id, off });
            for p in pieces {
                if p.counts.refcount() == 0 || p.flags.flags() & memdesc::desc::PG_LOCKED != 0 {
                    return Outcome::Violation(format!("split piece at {}: refcount 0 or locked", p.flags.pfn()));
                }
                let poff = off + (p.flags.pfn().0 - first.0);
                w.push(Live::Folio { f: p, refs: 1, order: new_order, id, off: poff });
            }
            Outcome::Done
        }
        Err(e) => {
            w.push(Live::Folio { f, refs: 1, order: budget, id, off });
            match e {
                FolioError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
                // Splitting a 2 MiB folio of a two-level region below 2 MiB is refused; another
                // CPU's transient pin makes the freeze fail.
                FolioError::BadOrder | FolioError::Busy => Outcome::Skipped,
                e => Outcome::Violation(format!("split of order {order} to {new_order}: {e}")),
            }
        }
    }
}

/// Takes and drops references on a held folio through `FolioRef`s: clones (`folio_get`), some
/// dropped (a drop that is not the last releases its count) and some put, while other CPUs
/// migrate, split (their own) and compact around it.
fn op_folio_clone(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l @ Live::Folio { f, refs, .. }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    w.arg(f.flags.pfn().0);
    let n = 1 + w.below(4) as u32;
    // SAFETY: this CPU holds `refs` ≥ 1 references on f.
    let held = unsafe { Worker::held(f) };
    let clones: Vec<FolioRef<'_>> = (0..n).map(|_| FolioRef::clone(&held)).collect();
    let mut out = Outcome::Done;
    // Other CPUs' pins may add to it, never take from it.
    if f.counts.refcount() < refs + n {
        out = Outcome::Violation(format!("{refs} held + {n} clones, refcount {}", f.counts.refcount()));
    }
    for (i, c) in clones.into_iter().enumerate() {
        if !FolioRef::ptr_eq(&c, &held) {
            out = Outcome::Violation("a clone names another folio".into());
        }
        if i % 2 == 0 {
            drop(c);
        } else if let Err(e) = w.m.folio_put(w.cpu, c) {
            out = Outcome::Violation(format!("put of a clone: {e}"));
        }
    }
    w.push(l);
    out
}

/// Migrates a folio to new memory, as compaction and offlining do, while its holders get and
/// put it on other CPUs: the folio at a random pfn (if its word names one), or a folio cached
/// in a file (the shared file's are looked up by every CPU meanwhile). A folio held by anyone
/// but its page cache and mappings is refused (`Busy`).
fn op_folio_migrate(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let pfn = if w.below(2) == 0 {
        let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
        let (start, end) = regions[w.below(regions.len() as u64) as usize];
        start.add(w.below(end.0 - start.0))
    } else {
        let index = w.below(FILE_INDICES);
        let space = w.file().space.space() as *const _;
        let Some(f) = w.file_by_space(space).space.lookup(w.cpu, index) else { return Outcome::Skipped };
        let pfn = f.flags.pfn();
        if let Err(e) = m.folio_put(w.cpu, f) {
            return Outcome::Violation(format!("put of a lookup reference: {e}"));
        }
        pfn
    };
    w.arg(pfn.0);
    let Some(v) = m.memmap().load(m.platform(), pfn) else { return Outcome::Skipped };
    if memdesc::lookup::folio(v.word.kind()).is_none() {
        return Outcome::Skipped;
    }
    match m.migrate_page(w.cpu, pfn, Gfp::MOVABLE) {
        Ok(_) => Outcome::Done,
        Err(MigrateError::NoTarget(a)) if is_alloc_failure(a) => Outcome::Failed,
        Err(MigrateError::NoTarget(a)) => Outcome::Violation(format!("migrate_page({pfn}): {a}")),
        Err(_) => Outcome::Skipped,
    }
}

/// The shared file's index of the "hot" folio every CPU hammers with `folio_hot`, beyond the
/// indices the page-cache ops touch (so only the final destroy removes it).
const HOT_INDEX: u64 = 1 << 20;

/// One order-0 folio of the shared file that every CPU either reads through references (lookup,
/// clone, verify, drop one and put the other) or migrates, so reference gets and puts meet
/// migration's freeze on the same folio all the time. A migration that borrowed a holder's
/// reference, or froze while one is held, shows as a count the quiescent check rejects, a
/// refused or early-freeing put, or corrupted bytes.
fn op_folio_hot(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let fid = w.shared.shared_file.id;
    let space = &w.shared.shared_file.space;
    let f = match space.lookup(w.cpu, HOT_INDEX) {
        Some(f) => f,
        None => {
            let f = match m.folio_alloc(w.cpu, 0, Gfp::MOVABLE, FolioKind::File) {
                Ok(f) => f,
                Err(e) => return alloc_outcome(e),
            };
            let k = Worker::key(fid, HOT_INDEX);
            // SAFETY: the page of our fresh folio.
            w.with_page(f.flags.pfn(), |a| unsafe { fill_raw(a, PAGE_SIZE, k) });
            let r = w.shared.shared_file.space.insert(w.cpu, &f, HOT_INDEX);
            return match (r, m.folio_put(w.cpu, f)) {
                (Ok(()), Ok(false)) => Outcome::Done,
                // Another CPU inserted it first.
                (Err(PageCacheError::Occupied { .. }), Ok(true)) => Outcome::Skipped,
                (Err(PageCacheError::NoMemory(e)), Ok(true)) if is_alloc_failure(e) => Outcome::Failed,
                r => Outcome::Violation(format!("insert of the hot folio: {r:?}")),
            };
        }
    };
    w.arg(f.flags.pfn().0);
    if w.below(2) == 0 {
        let pfn = f.flags.pfn();
        if let Err(e) = m.folio_put(w.cpu, f) {
            return Outcome::Violation(format!("put of a lookup reference: {e}"));
        }
        return match m.migrate_page(w.cpu, pfn, Gfp::MOVABLE) {
            Ok(_) | Err(MigrateError::Busy(_)) => Outcome::Done,
            Err(MigrateError::NoTarget(a)) if is_alloc_failure(a) => Outcome::Failed,
            Err(e) => Outcome::Violation(format!("migrate_page of the hot folio: {e}")),
        };
    }
    let mut out = Outcome::Done;
    // Several get/put rounds, each verifying the data, so they keep meeting the other CPUs'
    // migrations of this folio.
    for _ in 0..8 {
        w.verify_cached(fid, &f);
        let extra = f.clone();
        w.verify_cached(fid, &extra);
        if f.counts.refcount() < 3 {
            out = Outcome::Violation(format!("the cache + two references held, refcount {}", f.counts.refcount()));
        }
        if w.below(2) == 0 {
            drop(extra);
        } else if let Err(e) = m.folio_put(w.cpu, extra) {
            out = Outcome::Violation(format!("put of a clone of the hot folio: {e}"));
        }
    }
    match m.folio_put(w.cpu, f) {
        Ok(false) => out,
        r => Outcome::Violation(format!("put of the hot folio with the cache holding it: {r:?}")),
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
    let r = file.space.insert(w.cpu, &f, index);
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
    w.verify_cached(fid, &f);
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
    let r = file.space.delete(w.cpu, &f);
    w.verify_cached(fid, &f);
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

/// Descriptor lookup from a random pfn, as a pfn walker does: `folio_try_get` (under RCU: pin
/// the folio the word names unless its count is zero or frozen, re-check the word), read it,
/// clone and drop the reference, and put it (which frees the folio if its owner let go
/// meanwhile).
fn op_rcu_lookup(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
    let (start, end) = regions[w.below(regions.len() as u64) as usize];
    let pfn = start.add(w.below(end.0 - start.0));
    w.arg(pfn.0);
    let Some(f) = m.folio_try_get(w.cpu, pfn) else { return Outcome::Skipped };
    let mut out = Outcome::Done;
    let (fp, order) = (f.flags.pfn(), f.flags.order());
    if pfn < fp || pfn >= fp.add(1 << order) {
        out = Outcome::Violation(format!("pfn {pfn} names a pinned folio covering {fp}+{order}"));
    }
    let extra = f.clone();
    if f.counts.refcount() < 2 {
        out = Outcome::Violation(format!("two references held on {fp}, refcount {}", f.counts.refcount()));
    }
    drop(extra);
    if let Err(e) = m.folio_put(w.cpu, f) {
        out = Outcome::Violation(format!("dropping a pfn walker's reference: {e}"));
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
    // Mappings belong to this CPU's mm: they stay.
    let mine = w.take(|l| !matches!(l, Live::Mapped { .. } | Live::MapDev { .. }));
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

// ---- Page tables: folios mapped into each CPU's address space, forks, split_pmd. ----

fn map_outcome(e: MapError) -> Outcome {
    match e {
        MapError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
        MapError::Split(FolioError::NoMemory(a)) if is_alloc_failure(a) => Outcome::Failed,
        e => Outcome::Violation(format!("unexpected map error {e}")),
    }
}

/// Maps a fresh patterned anon folio into a free 2 MiB slot of this CPU's mm: by PTEs (order
/// 0–4) or by one PMD (order 9).
fn op_mm_map(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let pmd = w.below(8) == 0;
    let order = if pmd { 9 } else { w.below(5) as u32 };
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    if w.mm.is_none() || w.slots.is_empty() {
        return Outcome::Skipped;
    }
    let f = match w.m.folio_alloc(w.cpu, order, Gfp::MOVABLE, FolioKind::Anon) {
        Ok(f) => f,
        Err(e) => return alloc_outcome(e),
    };
    let i = w.below(w.slots.len() as u64) as usize;
    let va = w.slots.swap_remove(i);
    w.arg(va | order as u64);
    let id = w.new_id();
    w.lock_folio(&f);
    w.fill_idx(f.flags.pfn(), order, id, 0, false);
    w.unlock_folio(&f);
    let mm = w.mm.as_ref().expect("checked");
    let r = if pmd { mm.map_folio_pmd(w.cpu, va, &f) } else { mm.map_folio(w.cpu, va, &f) };
    match r {
        Ok(()) => {
            // The owner's reference, kept raw in the Live record.
            w.push(Live::Mapped { f: f.into_raw(), va, order, pmd, id });
            Outcome::Done
        }
        Err(e) => {
            w.slots.push(va);
            let put = w.m.folio_put(w.cpu, f);
            match (map_outcome(e), put) {
                (o, Ok(true)) => o,
                (_, r) => Outcome::Violation(format!("put of a folio whose map failed with {e}: {r:?}")),
            }
        }
    }
}

fn op_mm_unmap(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take_scan(|l| matches!(l, Live::Mapped { .. } | Live::MapDev { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Splits a PMD mapping into 512 PTEs (the folio's mapcount grows by 511).
fn op_mm_split_pmd(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(Live::Mapped { f, va, order, id, .. }) = w.take_scan(|l| matches!(l, Live::Mapped { pmd: true, .. }))
    else {
        return Outcome::Skipped;
    };
    w.arg(va);
    let before = f.counts.mapcount();
    let r = w.mm.as_ref().expect("a mapped folio's mm").split_pmd(va);
    let (pmd, out) = match r {
        // Forks and other CPUs' RCU pins do not change this mm's entries.
        Ok(()) if f.counts.mapcount() == before + 511 => (false, Outcome::Done),
        Ok(()) => (false, Outcome::Violation(format!("split_pmd: mapcount {before} -> {}", f.counts.mapcount()))),
        // Someone split it already: a `memory_failure` whose folio split was then refused
        // (an injected allocation failure) splits the PMD mappings first, as Linux does.
        // Fine if the folio is still mapped here, now by PTEs.
        Err(MapError::NotHuge(_)) => match w.mm.as_ref().expect("a mapped folio's mm").translate(va) {
            Some((e, false)) if e.pfn() == f.flags.pfn() => (false, Outcome::Done),
            other => (false, Outcome::Violation(format!("split_pmd: no PMD at {va:#x}, entry {other:?}"))),
        },
        Err(e) => (true, map_outcome(e)),
    };
    w.push(Live::Mapped { f, va, order, pmd, id });
    out
}

/// Forks this CPU's mm (every mapped folio becomes shared), keeping at most two children.
fn op_mm_fork(w: &mut Worker<'_, '_, '_>) -> Outcome {
    // A fork copies every table of the mm: rarely.
    if w.below(8) != 0 {
        return Outcome::Skipped;
    }
    if w.children.len() >= 2 {
        return op_mm_child_drop(w);
    }
    let Some(mm) = &w.mm else { return Outcome::Skipped };
    match mm.fork(w.cpu) {
        Ok(child) => {
            w.children.push(child);
            Outcome::Done
        }
        Err(e) => map_outcome(e),
    }
}

/// Destroys a fork: the folios it shared drop back to the parent's mappings only.
fn op_mm_child_drop(w: &mut Worker<'_, '_, '_>) -> Outcome {
    if w.children.is_empty() {
        return Outcome::Skipped;
    }
    let i = w.below(w.children.len() as u64) as usize;
    let child = w.children.swap_remove(i);
    child.destroy(w.cpu);
    Outcome::Done
}

/// Mappable driver memory: allocated, patterned, mapped into a slot of the pfn VMA.
fn op_dev_map(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = w.below(4) as u32;
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    if w.mm.is_none() || w.dev_slots.is_empty() {
        return Outcome::Skipped;
    }
    let d = match w.m.mappable_alloc(w.cpu, order, Gfp::KERNEL, 0x70_0000 + w.cpu.id()) {
        // The Live entry keeps the reference (the torture's ownership rule).
        Ok(d) => d.into_raw(),
        Err(e) => return alloc_outcome(e),
    };
    let i = w.below(w.dev_slots.len() as u64) as usize;
    let va = w.dev_slots.swap_remove(i);
    w.arg(va | order as u64);
    let id = w.new_id();
    w.fill_idx(d.flags.pfn(), order, id, 0, false);
    match w.mm.as_ref().expect("checked").map_mappable(w.cpu, va, d) {
        Ok(()) => {
            w.push(Live::MapDev { d, va, order, id });
            Outcome::Done
        }
        Err(e) => {
            w.dev_slots.push(va);
            // SAFETY: `d` was allocated just above with one reference, ours, and its mapping
            // failed: the reference is given up here.
            match (map_outcome(e), unsafe { w.m.mappable_put_raw(w.cpu, d) }) {
                (o, Ok(true)) => o,
                (_, r) => Outcome::Violation(format!("put of driver memory whose map failed with {e}: {r:?}")),
            }
        }
    }
}

// ---- vmalloc ----

fn op_vmalloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = match w.below(100) {
        0..=79 => 1 + w.below(3 * PAGE_SIZE as u64) as usize,
        _ => 1 + w.below(64 * 1024) as usize,
    };
    if w.over_budget(size.div_ceil(PAGE_SIZE) as u64) {
        return op_free_any(w);
    }
    let zero = w.below(4) == 0;
    w.arg(size as u64);
    let vm = &w.shared.vm;
    match vm.vmalloc::<Unmappable>(w.cpu, size, if zero { Gfp::KERNEL | Gfp::ZERO } else { Gfp::KERNEL }) {
        Ok(area) => {
            let va = area.addr();
            let id = w.new_id();
            let mut buf = vec![0u8; size];
            if zero {
                if let Err(e) = vm.read(va, &mut buf) {
                    return Outcome::Violation(format!("read of a fresh area: {e}"));
                }
                w.corrupted += buf.iter().filter(|&&b| b != 0).count() as u64;
            }
            // SAFETY: our buffer.
            unsafe { fill_raw(buf.as_mut_ptr(), size, Worker::key(id, 0)) };
            if let Err(e) = vm.write(va, &buf) {
                return Outcome::Violation(format!("write of a fresh area: {e}"));
            }
            // The area's pages are vmalloc pages of this area, in order.
            for i in 0..area.nr_pages() {
                match vm.pfn_at(&area, i) {
                    Ok(p) if vm.vmalloc_to_pfn(va + i * PAGE_SIZE) == Ok(p) => {}
                    r => return Outcome::Violation(format!("page {i} of area {va:#x}: {r:?}")),
                }
            }
            // Freed by address (`vfree`), like a caller that kept only the pointer.
            let _ = area;
            w.push(Live::Vmalloc { va, size, id });
            Outcome::Done
        }
        Err(VmallocError::NoMemory(e) | VmallocError::PageTable(MapError::NoMemory(e))) if is_alloc_failure(e) => {
            Outcome::Failed
        }
        Err(VmallocError::NoVirtualSpace { .. }) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("vmalloc({size}): {e}")),
    }
}

fn op_vfree(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Vmalloc { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

// ---- page_pool ----

fn pool_outcome(e: PoolError) -> Outcome {
    match e {
        PoolError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
        e => Outcome::Violation(format!("page_pool: {e}")),
    }
}

/// A whole block or a fragment from the shared pool, patterned.
fn op_pp_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    if w.over_budget(1) {
        return op_free_any(w);
    }
    let frag = w.below(2) == 0;
    let (pfn, off, len) = if frag {
        let size = 1 + w.below(2048) as usize;
        w.arg(size as u64);
        match w.shared.pool.alloc_frag(w.cpu, size) {
            Ok(f) => {
                let (off, len) = (f.offset(), f.len());
                (f.into_raw(), off, len)
            }
            Err(e) => return pool_outcome(e),
        }
    } else {
        match w.shared.pool.alloc(w.cpu) {
            Ok(n) => (n.into_raw(), 0, w.shared.pool.block_size()),
            Err(e) => return pool_outcome(e),
        }
    };
    if off + len > PAGE_SIZE {
        return Outcome::Violation(format!("fragment {off}+{len} of an order-0 block"));
    }
    w.arg(pfn.0);
    let id = w.new_id();
    let k = Worker::key(id, 0);
    // SAFETY: our fragment (or block) of a block we hold a reference to.
    w.with_page(pfn, |a| unsafe { fill_raw(a.add(off), len, k) });
    w.push(Live::Net { pfn, off, len, id });
    Outcome::Done
}

fn op_pp_put(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Net { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

// ---- zsmalloc and z3fold ----

fn zs_size(w: &mut Worker<'_, '_, '_>) -> usize {
    match w.below(100) {
        0..=59 => 1 + w.below(512) as usize,
        _ => 1 + w.below(PAGE_SIZE as u64) as usize,
    }
}

fn op_zs_malloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = zs_size(w);
    w.arg(size as u64);
    let zs = &w.shared.zs;
    match zs.malloc(w.cpu, size) {
        Ok(h) => {
            let id = w.new_id();
            // SAFETY: the object's bytes, mapped for writing.
            let mapped =
                zs.map_write(w.cpu, &h).map(|mut o| unsafe { fill_raw(o.as_mut_ptr(), size, Worker::key(id, 0)) });
            match mapped {
                Ok(()) => {}
                Err(ZsError::NoMemory(e)) if is_alloc_failure(e) => {
                    return match zs.free(w.cpu, h) {
                        Ok(()) => Outcome::Failed,
                        Err(e) => Outcome::Violation(format!("free of an unmapped fresh object: {e}")),
                    };
                }
                Err(e) => return Outcome::Violation(format!("map_write of a fresh object: {e}")),
            }
            w.push(Live::Zs { h: h.into_raw(), size, id });
            Outcome::Done
        }
        Err(ZsError::NoMemory(e)) if is_alloc_failure(e) => Outcome::Failed,
        Err(ZsError::TooManyHandles) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("zs_malloc({size}): {e}")),
    }
}

fn op_zs_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Zs { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

fn op_zs_compact(w: &mut Worker<'_, '_, '_>) -> Outcome {
    w.shared.zs.compact(w.cpu);
    Outcome::Done
}

/// Migrates a component page of a held object's zspage (the pfn-driven path compaction
/// takes); other CPUs may be reading or freeing objects of the same zspage meanwhile.
fn op_zs_migrate(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l @ Live::Zs { h, .. }) = w.take(|l| matches!(l, Live::Zs { .. })) else { return Outcome::Skipped };
    w.push(l);
    let mut pages = [Pfn(0); ZS_MAX_PAGES];
    // SAFETY: a transient handle for a read-only query; the entry (pushed back above) stays
    // the owner and this copy is given up right after.
    let h = unsafe { Handle::from_raw(h) };
    let r = w.shared.zs.pages_of(&h, &mut pages);
    let _ = h.into_raw();
    let n = match r {
        Ok(n) => n,
        Err(e) => return Outcome::Violation(format!("pages_of a live object: {e}")),
    };
    let pfn = pages[w.below(n as u64) as usize];
    w.arg(pfn.0);
    match zs_migrate_page(w.m, w.cpu, pfn) {
        Ok(_) => Outcome::Done,
        Err(ZsMigrateError::NoMemory(e)) if is_alloc_failure(e) => Outcome::Failed,
        // A CPU has an object of it mapped, or it was freed/compacted away meanwhile.
        Err(ZsMigrateError::Busy(_) | ZsMigrateError::NotZsmalloc(_)) => Outcome::Skipped,
        Err(e) => Outcome::Violation(format!("zs_migrate_page({pfn}): {e}")),
    }
}

fn op_z3_malloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = zs_size(w);
    w.arg(size as u64);
    let z3 = &w.shared.z3;
    match z3.malloc(w.cpu, size) {
        Ok(h) => {
            let id = w.new_id();
            match z3.map_write(&h) {
                // SAFETY: the object's bytes, mapped for writing.
                Ok(mut o) => unsafe { fill_raw(o.as_mut_ptr(), size, Worker::key(id, 0)) },
                Err(e) => return Outcome::Violation(format!("z3fold map_write of a fresh object: {e}")),
            }
            w.push(Live::Z3 { h: h.into_raw(), size, id });
            Outcome::Done
        }
        Err(Z3Error::NoMemory(e)) if is_alloc_failure(e) => Outcome::Failed,
        Err(Z3Error::TooManyHandles) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("z3fold malloc({size}): {e}")),
    }
}

fn op_z3_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Z3 { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

fn op_z3_compact(w: &mut Worker<'_, '_, '_>) -> Outcome {
    w.shared.z3.compact();
    Outcome::Done
}

// ---- compaction, balloon, offlining, guard pages ----

/// Compacts a random zone: folios only their page cache and mappings hold move; held ones are
/// skipped (`Busy`).
fn op_compact(w: &mut Worker<'_, '_, '_>) -> Outcome {
    // A whole-zone scan: rarely.
    if w.below(64) != 0 {
        return Outcome::Skipped;
    }
    let m = w.m;
    let n = m.zones().count() as u64;
    let i = w.below(n) as usize;
    w.arg(i as u64);
    let zone = m.zones().nth(i).expect("in range");
    m.compact_zone(w.cpu, zone);
    Outcome::Done
}

fn op_balloon(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let n = 1 + w.below(64);
    w.arg(n);
    let b = &w.shared.balloon;
    if w.below(2) == 0 && b.stats().pages < 4096 {
        b.inflate(w.cpu, n);
    } else {
        b.deflate(w.cpu, n);
    }
    Outcome::Done
}

/// The flat regions offlining may take (aligned to `2^max_order` pages).
const OFFLINE_RANGES: [(u64, u64); 2] = [(0x8000, 0x10000), (0x10_0000, 0x10_4000)];

/// Offlines 1–2 max-order blocks of a flat region (at most two ranges offline at a time), or
/// onlines one. Something unmovable in the range is a clean failure, not a violation.
fn op_offline(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let block = 1u64 << m.config().max_order;
    let online = w.below(2) == 0;
    let mut list = w.shared.offlined.lock().unwrap();
    if online || list.len() >= 2 {
        if list.is_empty() {
            return Outcome::Skipped;
        }
        let i = w.below(list.len() as u64) as usize;
        let (s, e) = list.swap_remove(i);
        w.arg(s.0 | 1 << 63);
        return match m.online_range(s, e) {
            Ok(_) => Outcome::Done,
            Err(err) => Outcome::Violation(format!("online_range({s}, {e}) of an offline range: {err}")),
        };
    }
    let (rs, re) = OFFLINE_RANGES[w.below(2) as usize];
    let len = block * (1 + w.below(2));
    let start = Pfn(rs + w.below((re - rs - len) / block + 1) * block);
    let end = start.add(len);
    w.arg(start.0);
    if list.iter().any(|&(s, e)| s < end && start < e) {
        return Outcome::Skipped;
    }
    match m.offline_range(w.cpu, start, end) {
        Ok(_) => {
            list.push((start, end));
            Outcome::Done
        }
        Err(OfflineError::Unmovable { .. } | OfflineError::AlreadyIsolated(_)) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("offline_range({start}, {end}): {e}")),
    }
}

/// A raw allocation between two guard pages; freed by `page_free` like any block.
fn op_guard_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = w.below(4) as u32;
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let zero = w.below(4) == 0;
    w.arg(order as u64);
    let gfp = if zero { Gfp::KERNEL | Gfp::GUARD | Gfp::ZERO } else { Gfp::KERNEL | Gfp::GUARD };
    match w.m.alloc_pages(w.cpu, order, gfp) {
        Ok(p) => {
            let (pfn, order) = p.into_raw();
            let id = w.new_id();
            w.fill_pages(pfn, order, id, zero);
            w.push(Live::Pages { pfn, order, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

impl<'m> Worker<'m, '_, '_> {
    /// Creates this CPU's mm with its anon and pfn VMAs (retrying injected failures).
    fn setup_mm(&mut self) {
        for _ in 0..64 {
            let Ok(mm) = self.shared.mms.mm_create(self.cpu, MmKind::User) else { continue };
            if mm.mmap_anon(self.cpu, ANON_BASE, ANON_SLOTS * PMD_SIZE).is_ok()
                && mm.mmap_pfn(self.cpu, DEV_BASE, DEV_SLOTS * PMD_SIZE).is_ok()
            {
                self.mm = Some(mm);
                self.slots = (0..ANON_SLOTS).rev().map(|i| ANON_BASE + i * PMD_SIZE).collect();
                self.dev_slots = (0..DEV_SLOTS).rev().map(|i| DEV_BASE + i * PMD_SIZE).collect();
                return;
            }
            mm.destroy(self.cpu);
        }
    }

    /// The folio whose word page `pfn` holds; the caller holds a reference to it.
    fn folio_at(&self, pfn: Pfn) -> Option<&'m Folio> {
        let m = self.m;
        let word = m.memmap().load(m.platform(), pfn)?.word;
        let d = memdesc::lookup::folio(word.kind())?;
        let g = m.rcu().read_lock(self.cpu);
        let f = d.get(&g);
        // SAFETY: the caller holds a reference: the descriptor stays this folio beyond the guard.
        Some(unsafe { &*(f as *const Folio) })
    }

    /// Drops a folio allocation hit by poison at `bad` as lost: every piece the handler split
    /// it into loses `refs` references (the poisoned piece's last put retires it); the other
    /// pieces' pages are verified first (their contents survive).
    fn drop_lost_folio(&mut self, start: Pfn, order: u32, refs: u32, id: u64, off: u64, bad: Pfn) {
        let mut i = 0;
        while i < 1u64 << order {
            let p = start.add(i);
            let Some(piece) = self.folio_at(p) else {
                self.violation(format!("page {p} of a poisoned held folio is no folio"));
                return;
            };
            let po = piece.flags.order();
            if !(p..p.add(1 << po)).contains(&bad) {
                self.verify_idx(p, po, id, off + i);
            }
            if piece.flags.flags() & PG_LRU != 0 {
                self.m.lru_del(piece);
            }
            for _ in 0..refs {
                // SAFETY: the split copied each of this CPU's `refs` references onto every
                // piece (memory_failure's split keeps every holder's).
                if let Err(e) = unsafe { self.put_owned(piece) } {
                    self.violation(format!("put of a poisoned folio's piece {p}: {e}"));
                }
            }
            i += 1 << po;
        }
    }

    /// Drops from `list` the objects this quiescent point's poison events destroyed.
    fn drop_poisoned(&mut self, list: &mut Vec<Live<'m>>) {
        let events: Vec<PoisonReport> = self.shared.poison_events.lock().unwrap().clone();
        for ev in events {
            if ev.action == PoisonAction::Ignored {
                continue;
            }
            let bad = ev.pfn;
            let slab = match ev.kind {
                PoisonedKind::Slab { .. } => {
                    let o = ev.pages_lost.trailing_zeros();
                    Some((bad.align_down(o), bad.align_down(o).add(1 << o)))
                }
                _ => None,
            };
            let p = self.m.platform();
            let mut k = 0;
            while k < list.len() {
                let hit = match list[k] {
                    Live::Folio { f, order, .. } | Live::Mapped { f, order, .. } => {
                        let s = f.flags.pfn();
                        (s..s.add(1 << order)).contains(&bad)
                    }
                    Live::Kmalloc { ptr, .. } | Live::Obj { ptr, .. } => match (slab, p.virt_to_pfn(ptr)) {
                        (Some((s, e)), Some(q)) => s <= q && q < e,
                        _ => false,
                    },
                    _ => false,
                };
                if !hit {
                    k += 1;
                    continue;
                }
                let l = list.swap_remove(k);
                self.poison_lost += 1;
                match l {
                    Live::Folio { f, refs, order, id, off } => {
                        self.drop_lost_folio(f.flags.pfn(), order, refs, id, off, bad);
                    }
                    Live::Mapped { f, va, order, id, .. } => {
                        // Whatever the handler did to the mapping, this slot goes.
                        if let Some(mm) = &self.mm {
                            let _ = mm.unmap(self.cpu, va, PMD_SIZE);
                        }
                        self.slots.push(va);
                        self.drop_lost_folio(f.flags.pfn(), order, 1, id, 0, bad);
                    }
                    // Objects of a poisoned slab: their contents are lost; freeing them is
                    // how the slab empties and retires.
                    Live::Kmalloc { ptr, .. } => {
                        // SAFETY: the entry owned the object and was taken off the list.
                        if let Err(e) = self.m.kfree(self.cpu, unsafe { KBox::from_raw(self.m, ptr) }) {
                            self.violation(format!("kfree of an object of a poisoned slab: {e}"));
                        }
                    }
                    Live::Obj { cache, ptr, .. } => {
                        let c = &self.shared.caches[cache];
                        // SAFETY: as above.
                        if let Err(e) = c.free(self.cpu, unsafe { SlabObj::from_raw(c, ptr) }) {
                            self.violation(format!("free of an object of a poisoned slab: {e}"));
                        }
                    }
                    _ => unreachable!("only hit kinds are taken"),
                }
            }
        }
    }

    /// [`Worker::drop_poisoned`] on this CPU's own objects.
    fn drop_poisoned_own(&mut self) {
        let mut live = std::mem::take(&mut self.live);
        self.drop_poisoned(&mut live);
        self.live_pages = live.iter().map(Live::pages).sum();
        self.live = live;
    }
}

/// The hwpoison hook: a machine check at a uniformly random pfn of the machine's regions.
fn poison_random_pfn(w: &mut Worker<'_, '_, '_>) -> Result<u64, String> {
    let m = w.m;
    let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
    let total: u64 = regions.iter().map(|(s, e)| e.0 - s.0).sum();
    let mut r = w.below(total);
    let mut pfn = regions[0].0;
    for (s, e) in regions {
        if r < e.0 - s.0 {
            pfn = s.add(r);
            break;
        }
        r -= e.0 - s.0;
    }
    w.arg(pfn.0);
    match m.memory_failure(w.cpu, pfn) {
        Ok(rep) => {
            w.shared.poison_events.lock().unwrap().push(rep);
            if rep.action == PoisonAction::Ignored {
                w.poison_ignored += 1;
                Ok(0)
            } else {
                Ok(rep.pages_lost)
            }
        }
        Err(e @ (PoisonError::Corrupt(..) | PoisonError::OutOfRange(_) | PoisonError::NotPoisoned(_))) => {
            Err(format!("memory_failure({pfn}): {e}"))
        }
        Err(_) => {
            w.poison_refused += 1;
            Ok(0)
        }
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
    Op { name: "folio_clone", weight: 3, run: op_folio_clone },
    Op { name: "folio_migrate", weight: 2, run: op_folio_migrate },
    Op { name: "folio_hot", weight: 4, run: op_folio_hot },
    Op { name: "pc_insert", weight: 6, run: op_pc_insert },
    Op { name: "pc_lookup", weight: 8, run: op_pc_lookup },
    Op { name: "pc_delete", weight: 2, run: op_pc_delete },
    Op { name: "pc_truncate", weight: 2, run: op_pc_truncate },
    Op { name: "rcu_lookup", weight: 6, run: op_rcu_lookup },
    Op { name: "drain", weight: 1, run: op_drain },
    Op { name: "exchange", weight: 2, run: op_exchange },
    Op { name: "free_any", weight: 1, run: op_free_any },
    Op { name: "mm_map", weight: 5, run: op_mm_map },
    Op { name: "mm_unmap", weight: 5, run: op_mm_unmap },
    Op { name: "mm_split_pmd", weight: 1, run: op_mm_split_pmd },
    Op { name: "mm_fork", weight: 1, run: op_mm_fork },
    Op { name: "mm_child_drop", weight: 1, run: op_mm_child_drop },
    Op { name: "dev_map", weight: 2, run: op_dev_map },
    Op { name: "vmalloc", weight: 4, run: op_vmalloc },
    Op { name: "vfree", weight: 4, run: op_vfree },
    Op { name: "pp_alloc", weight: 5, run: op_pp_alloc },
    Op { name: "pp_put", weight: 5, run: op_pp_put },
    Op { name: "zs_malloc", weight: 5, run: op_zs_malloc },
    Op { name: "zs_free", weight: 5, run: op_zs_free },
    Op { name: "zs_compact", weight: 1, run: op_zs_compact },
    Op { name: "zs_migrate", weight: 2, run: op_zs_migrate },
    Op { name: "z3_malloc", weight: 4, run: op_z3_malloc },
    Op { name: "z3_free", weight: 4, run: op_z3_free },
    Op { name: "z3_compact", weight: 1, run: op_z3_compact },
    Op { name: "compact", weight: 1, run: op_compact },
    Op { name: "balloon", weight: 1, run: op_balloon },
    Op { name: "offline", weight: 1, run: op_offline },
    Op { name: "guard_alloc", weight: 2, run: op_guard_alloc },
];

/// The torture machine: 448 MiB over two nodes mixing both memmap layouts, DMA/DMA32 zones,
/// firmware holes and reserved ranges, and 64 MiB of Movable memory without a direct map.
pub fn torture_layout() -> MemoryLayout {
    let mut l = MemoryLayout::new();
    let spec = |s: u64, e: u64, node, mapped, layout| RegionSpec { start: Pfn(s), end: Pfn(e), node, mapped, layout };
    l.add_region(spec(1, 0x9f, 0, true, MemmapLayout::Flat)).expect("layout");
    l.add_region(spec(0x100, 0x10000, 0, true, MemmapLayout::Flat)).expect("layout");
    l.add_region(spec(0x10000, 0x18000, 1, true, MemmapLayout::TwoLevel)).expect("layout");
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
            m.shrink_any_cache(cpu, unsafe { &*c });
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

/// The quiescent-point barrier: like `std::sync::Barrier`, but a worker that panics aborts
/// it ([`AbortOnPanic`]), and every wait, then or later, returns `Err(Aborted)` instead of
/// waiting forever for a CPU that will never arrive.
struct QuiescentBarrier {
    n: usize,
    state: Mutex<BarrierState>,
    cv: Condvar,
}

#[derive(Default)]
struct BarrierState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

/// Another worker panicked: the run is over.
struct Aborted;

impl QuiescentBarrier {
    fn new(n: usize) -> Self {
        QuiescentBarrier { n, state: Mutex::new(BarrierState::default()), cv: Condvar::new() }
    }

    /// Waits for every worker; `Ok(true)` for one of them (the leader).
    fn wait(&self) -> Result<bool, Aborted> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.aborted {
            return Err(Aborted);
        }
        st.arrived += 1;
        if st.arrived == self.n {
            st.arrived = 0;
            st.generation += 1;
            self.cv.notify_all();
            return Ok(true);
        }
        let gen = st.generation;
        while st.generation == gen && !st.aborted {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.generation == gen {
            return Err(Aborted);
        }
        Ok(false)
    }

    fn is_aborted(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).aborted
    }

    fn abort(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).aborted = true;
        self.cv.notify_all();
    }
}

/// Aborts the barrier if dropped while its worker unwinds from a panic.
struct AbortOnPanic<'a>(&'a QuiescentBarrier);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// The message of a worker's panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs a torture (see the module docs).
///
/// A worker that panics ends the run: the others leave at their next quiescent point (their
/// barrier is aborted) without tearing down, and this returns `Err` with the panic message
/// and the seed.
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
    // Page tables' caches, the kernel address space and the vmalloc space over it live
    // through the baselines (their caches are settled like the others).
    let setup = |e: &dyn std::fmt::Display| format!("torture setup: {e}");
    let mms = m.mm_caches(&boot_cpu).map_err(|e| setup(&e))?;
    let kmm = mms.mm_create(&boot_cpu, MmKind::Kernel).map_err(|e| setup(&e))?;
    let vm = VmallocSpace::new(&m, &boot_cpu, &kmm).map_err(|e| setup(&e))?;
    let free0 = settled_free_pages(&m, &boot_cpu);
    let objs0 = live_slab_objects(&m);
    let per_cache0 = per_cache_objects(&m);
    let shared_space = m.address_space_create(&boot_cpu).map_err(|e| format!("torture setup: {e}"))?;
    let pool = PagePool::new(&m, &boot_cpu, PoolParams::default()).map_err(|e| setup(&e))?;
    let zs = ZsPool::new(&m, &boot_cpu).map_err(|e| setup(&e))?;
    let z3 = Z3foldPool::new(&m, &boot_cpu).map_err(|e| setup(&e))?;
    drop(boot_cpu);
    let shared = Shared {
        caches,
        sizes,
        exchange: Mutex::new(Vec::new()),
        shared_file: File { id: mix(cfg.seed ^ 0xF11E), space: shared_space },
        mms: &mms,
        vm,
        pool,
        zs,
        z3,
        balloon: Balloon::new(&m),
        offlined: Mutex::new(Vec::new()),
        poison_events: Mutex::new(Vec::new()),
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
    let barrier = QuiescentBarrier::new(threads);
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
                    let _abort = AbortOnPanic(barrier);
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
                    w.setup_mm();
                    let mut done = 0u64;
                    // Err: another worker panicked; leave without tearing down.
                    let wait = || barrier.wait().map_err(|Aborted| ());
                    'run: loop {
                        let mut n = cfg.check_every.max(1);
                        if let Some(max) = cfg.max_ops {
                            n = n.min(max.saturating_sub(done));
                        }
                        for i in 0..n {
                            if w.exhausted() {
                                break;
                            }
                            if threshold != 0 && w.rand() < threshold {
                                w.pending_poison += 1;
                            }
                            w.run_one(OPS, weights, total_weight);
                            if cfg.inject_panic == Some((id, done + i + 1)) {
                                panic!("injected worker panic (TortureConfig::inject_panic)");
                            }
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
                        let Ok(_) = wait() else { break 'run };
                        if let Some(hook) = POISON_HOOK.filter(|_| threshold != 0) {
                            // One CPU at a time injects what it drew, the others stopped, so
                            // every owner of a hit object learns of it before touching it.
                            for k in 0..threads {
                                if k == id {
                                    for _ in 0..std::mem::take(&mut w.pending_poison) {
                                        match hook(&mut w) {
                                            Ok(p) => w.poisoned += p,
                                            Err(e) => w.violation(format!("hwpoison: {e}")),
                                        }
                                    }
                                }
                                let Ok(_) = wait() else { break 'run };
                            }
                            w.drop_poisoned_own();
                            if id == 0 {
                                let mut x = std::mem::take(&mut *shared.exchange.lock().unwrap());
                                w.drop_poisoned(&mut x);
                                *shared.exchange.lock().unwrap() = x;
                            }
                            let Ok(_) = wait() else { break 'run };
                        }
                        w.local_check();
                        let Ok(leader) = wait() else { break 'run };
                        if leader {
                            shared.poison_events.lock().unwrap().clear();
                            global_check(m, gv);
                            if let Err(v) = shared.zs.verify() {
                                let mut o = gv.lock().unwrap();
                                o.0 += 1;
                                o.1.push(format!("zsmalloc verify: {v:?}"));
                            }
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
                        let Ok(_) = wait() else { break 'run };
                        if shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    if barrier.is_aborted() {
                        return w.result();
                    }
                    // Tear down: free everything this CPU holds, its mms and its files.
                    while let Some(l) = w.live.pop() {
                        if let Outcome::Violation(msg) = w.release(l) {
                            w.violation(format!("teardown: {msg}"));
                        }
                    }
                    for c in std::mem::take(&mut w.children) {
                        c.destroy(&cpu);
                    }
                    if let Some(mm) = w.mm.take() {
                        mm.destroy(&cpu);
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
        // Every worker is joined (a panicked one too), so the scope itself does not panic.
        handles.into_iter().enumerate().map(|(id, h)| h.join().map_err(|p| (id, panic_message(&*p)))).collect()
    });
    let panics: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().err()).map(|(id, msg)| format!("CPU {id}: {msg}")).collect();
    if !panics.is_empty() {
        return Err(format!("torture worker panicked (seed {}): {}", cfg.seed, panics.join("; ")));
    }
    let results: Vec<WorkerResult> = results.into_iter().flatten().collect();
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
        report.poison_ignored += w.poison_ignored;
        report.poison_refused += w.poison_refused;
        report.poison_lost_objects += w.poison_lost;
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
    let Shared { caches, shared_file, vm, pool, zs, z3, balloon, offlined, .. } = shared;
    let st = shared_file.space.destroy(&cpu);
    if st.unreleased != 0 {
        report.violations += 1;
        report.messages.push(format!("destroy of the shared file left {} references", st.unreleased));
    }
    let mut teardown = |what: String| {
        report.violations += 1;
        report.messages.push(format!("teardown: {what}"));
    };
    for (s, e) in offlined.into_inner().unwrap() {
        if let Err(err) = m.online_range(s, e) {
            teardown(format!("online_range({s}, {e}): {err}"));
        }
    }
    while balloon.stats().pages > 0 {
        if balloon.deflate(&cpu, u64::MAX) == 0 {
            teardown(format!("balloon keeps {} pages", balloon.stats().pages));
            break;
        }
    }
    zs.destroy(&cpu);
    z3.destroy(&cpu);
    if let Err((_, e)) = pool.try_destroy(&cpu) {
        teardown(format!("page_pool destroy: {e}"));
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
    // Poisoned pages never come back: they are accounted apart from lost ones.
    report.hwpoison_pages = m.undescribed_stats().hwpoison_pages;
    report.lost_pages = free0.saturating_sub(free_end).saturating_sub(report.hwpoison_pages);
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
    if let Err((_, e)) = vm.destroy(&cpu) {
        report.violations += 1;
        report.messages.push(format!("vmalloc space destroy: {e}"));
    }
    kmm.destroy(&cpu);
    if let Err(e) = mms.destroy(&cpu) {
        report.violations += 1;
        report.messages.push(format!("mm caches destroy: {e}"));
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
        // Longer than a window: chunks, each checked.
        let n = PAT_CHUNK * 2 + 100;
        let mut big = vec![0u8; n];
        // SAFETY: our buffer.
        unsafe {
            assert_eq!(nonzero_raw(big.as_ptr(), n), 0);
            fill_raw(big.as_mut_ptr(), n, 5);
            assert_eq!(verify_raw(big.as_ptr(), n, 5), 0);
            big[PAT_CHUNK + 1] ^= 0x10;
            big[n - 1] ^= 1;
            assert_eq!(verify_raw(big.as_ptr(), n, 5), 2);
            assert!(nonzero_raw(big.as_ptr(), n) > n as u64 / 2);
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
