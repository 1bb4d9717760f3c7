//! One CPU of the torture: the [`Worker`] that owns what its CPU holds ([`Live`] objects, the
//! shared state every CPU sees), draws and runs operations, logs them, and verifies and frees
//! everything at the end; the [`Op`] row type and the [`Outcome`] of an operation.

use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use memdesc::balloon::Balloon;
use memdesc::folio::{FolioError, FolioRef};
use memdesc::hwpoison::PoisonReport;
use memdesc::memmap::desc::{Folio, MappableDesc, PG_LRU};
use memdesc::page_pool::PagePool;
use memdesc::pagecache::AddressSpaceRef;
use memdesc::pgtable::{MmCaches, MmRef, PMD_SIZE};
use memdesc::vmalloc::VmallocSpace;
use memdesc::z3fold::{Z3Error, Z3foldPool};
use memdesc::zsmalloc::{Handle, ZsError, ZsPool};
use memdesc::Cpu;

// Ownership in the torture: a `Live` entry is the one owner of what it names. The owned
// handles (`Pages`, `KBox`, `SlabObj`, zsmalloc `Handle`) are turned into raw values when an
// entry is pushed and rebuilt (`from_raw`) only by whoever took the entry off its CPU's list,
// once, to free it or (zsmalloc) to borrow it for a mapping: the SAFETY comments below cite
// this rule.

use memdesc::base::page_access::{PageAccess, ReadOnly};
use memdesc::kmalloc::KBox;
use memdesc::slab::SlabObj;
use memdesc::{AllocError, CacheRef, Gfp, Pages, Pfn, PAGE_SIZE};

use crate::torture::config::*;
use crate::torture::pattern::*;
use crate::{SimMachine, SimPlatform};

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
pub(crate) struct File<'m> {
    pub(crate) id: u64,
    pub(crate) space: AddressSpaceRef<'m, SimPlatform>,
}

/// What all CPUs share.
pub struct Shared<'m> {
    pub(crate) caches: Vec<CacheRef<'m, SimPlatform>>,
    pub(crate) sizes: Vec<usize>,
    pub(crate) exchange: Mutex<Vec<Live<'m>>>,
    pub(crate) shared_file: File<'m>,
    pub(crate) mms: &'m MmCaches<'m, SimPlatform>,
    pub(crate) vm: VmallocSpace<'m, SimPlatform>,
    pub(crate) pool: PagePool<'m, SimPlatform>,
    pub(crate) zs: ZsPool<'m, SimPlatform>,
    pub(crate) z3: Z3foldPool<'m, SimPlatform>,
    pub(crate) balloon: Balloon<'m, SimPlatform>,
    /// Ranges taken offline by `offline` and not yet onlined.
    pub(crate) offlined: Mutex<Vec<(Pfn, Pfn)>>,
    /// What the poison phase of the current quiescent point did (see [`POISON_HOOK`]).
    pub(crate) poison_events: Mutex<Vec<PoisonReport>>,
    pub(crate) stop: AtomicBool,
    pub(crate) threads: usize,
    pub(crate) seed: u64,
}

// SAFETY: CacheRef and AddressSpaceRef are references to a machine whose caches and address
// spaces are internally synchronised (locks and atomics); the Live records in the exchange are
// behind a mutex.
unsafe impl Sync for Shared<'_> {}

pub(crate) const LOG_LEN: usize = 64;

/// One entry of the op log.
#[derive(Clone, Copy, Default)]
pub(crate) struct LogEntry {
    pub(crate) seq: u64,
    pub(crate) op: &'static str,
    pub(crate) arg: u64,
    pub(crate) outcome: u8,
}

/// A CPU of the torture.
pub struct Worker<'m, 'c, 's> {
    /// The machine.
    pub m: &'m SimMachine,
    /// This CPU.
    pub cpu: &'c Cpu<'m>,
    pub(crate) shared: &'s Shared<'m>,
    pub(crate) rng: u64,
    pub(crate) script: &'s [u8],
    pub(crate) script_pos: usize,
    pub(crate) scripted: bool,
    /// Objects held.
    pub live: Vec<Live<'m>>,
    pub(crate) live_pages: u64,
    pub(crate) max_live_pages: u64,
    pub(crate) next_id: u64,
    pub(crate) files: Vec<File<'m>>,
    /// Bytes found corrupted.
    pub corrupted: u64,
    pub(crate) arg: u64,
    pub(crate) log: [LogEntry; LOG_LEN],
    pub(crate) seq: u64,
    pub(crate) log_hash: u64,
    pub(crate) messages: Vec<String>,
    pub(crate) first_violation_log: Option<Vec<String>>,
    pub(crate) violations: u64,
    pub(crate) poisoned: u64,
    pub(crate) poison_ignored: u64,
    pub(crate) poison_refused: u64,
    pub(crate) poison_lost: u64,
    /// Poison injections drawn since the last quiescent point.
    pub(crate) pending_poison: u64,
    /// This CPU's address space (a process), its anon and pfn VMAs cut into free 2 MiB slots.
    pub(crate) mm: Option<MmRef<'s, SimPlatform>>,
    /// Forks of `mm`, sharing its folios until destroyed.
    pub(crate) children: Vec<MmRef<'s, SimPlatform>>,
    pub(crate) slots: Vec<u64>,
    pub(crate) dev_slots: Vec<u64>,
    pub(crate) stats: Vec<OpStat>,
}

/// Start and 2 MiB slots of each CPU's anon VMA, and of its pfn VMA.
pub(crate) const ANON_BASE: u64 = 0x4000_0000;
pub(crate) const ANON_SLOTS: u64 = 48;
pub(crate) const DEV_BASE: u64 = 0x8000_0000;
pub(crate) const DEV_SLOTS: u64 = 16;

/// What a CPU reports when it is done.
pub(crate) struct WorkerResult {
    pub(crate) ops: u64,
    pub(crate) violations: u64,
    pub(crate) corrupted: u64,
    pub(crate) poisoned: u64,
    pub(crate) poison_ignored: u64,
    pub(crate) poison_refused: u64,
    pub(crate) poison_lost: u64,
    pub(crate) messages: Vec<String>,
    pub(crate) first_violation_log: Option<Vec<String>>,
    pub(crate) log_tail: Vec<String>,
    pub(crate) log_hash: u64,
    pub(crate) stats: Vec<OpStat>,
}

impl<'m, 'c, 's> Worker<'m, 'c, 's> {
    pub(crate) fn new(
        m: &'m SimMachine,
        cpu: &'c Cpu<'m>,
        shared: &'s Shared<'m>,
        seed: u64,
        max_live_pages: u64,
        ops: &[Op],
    ) -> Self {
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
            stats: ops.iter().map(|o| OpStat { name: o.name, ..OpStat::default() }).collect(),
        }
    }

    pub(crate) fn result(self) -> WorkerResult {
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
    pub(crate) fn exhausted(&self) -> bool {
        self.scripted && self.script_pos >= self.script.len()
    }

    /// A random number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.rand() as u128 * n as u128) >> 64) as u64
    }

    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        mix(self.shared.seed ^ mix(self.next_id.wrapping_mul(64).wrapping_add(self.cpu.id() as u64 + 1)))
    }

    pub(crate) fn key(id: u64, pfn_or_index: u64) -> u64 {
        mix(id ^ pfn_or_index.wrapping_mul(GAMMA))
    }

    /// Records the argument of the current op for the log.
    pub fn arg(&mut self, a: u64) {
        self.arg = a;
    }

    /// Runs `f` on page `pfn`'s 4 KiB, mapped through the direct map or a local mapping.
    ///
    /// # Safety
    /// The worker has the page to itself for the call (it owns it, or holds the lock of the
    /// fresh folio it is in): [`PageAccess::new`].
    pub(crate) unsafe fn with_page<R>(&self, pfn: Pfn, f: impl FnOnce(&mut PageAccess<'m, SimPlatform>) -> R) -> R {
        // SAFETY: the caller's contract.
        f(&mut unsafe { PageAccess::new(self.m.platform(), pfn) }.expect("allocated memory is mappable"))
    }

    /// Runs `f` on page `pfn`'s 4 KiB, read-only.
    ///
    /// # Safety
    /// Nobody writes the page during the call (the worker owns it, or pins an up-to-date
    /// page-cache folio): [`PageAccess::new_read_only`].
    pub(crate) unsafe fn with_page_ro<R>(
        &self,
        pfn: Pfn,
        f: impl FnOnce(&PageAccess<'m, SimPlatform, ReadOnly>) -> R,
    ) -> R {
        // SAFETY: the caller's contract.
        f(&unsafe { PageAccess::new_read_only(self.m.platform(), pfn) }.expect("allocated memory is mappable"))
    }

    /// Runs `f` on bytes `off..off + len` of page `pfn` (a page_pool fragment: other
    /// fragments of the page belong to other workers).
    ///
    /// # Safety
    /// The worker has those bytes to itself for the call: [`PageAccess::new_range`].
    pub(crate) unsafe fn with_range<R>(
        &self,
        pfn: Pfn,
        off: usize,
        len: usize,
        f: impl FnOnce(&mut PageAccess<'m, SimPlatform>) -> R,
    ) -> R {
        // SAFETY: the caller's contract.
        f(&mut unsafe { PageAccess::new_range(self.m.platform(), pfn, off, len) }
            .expect("a mappable fragment inside its page"))
    }

    /// Fills every page of `[pfn, pfn + 2^order)` with the pattern of `id`; with `zeroed`,
    /// first counts bytes that are not zero as corrupted.
    pub fn fill_pages(&mut self, pfn: Pfn, order: u32, id: u64, zeroed: bool) {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let q = pfn.add(i);
            // SAFETY: the caller owns the page.
            bad += unsafe {
                self.with_page(q, |a| {
                    let z = if zeroed { nonzero(a.bytes()) } else { 0 };
                    fill(a.bytes_mut(), Self::key(id, q.0));
                    z
                })
            };
        }
        self.corrupted += bad;
    }

    /// Allocates a raw block and holds it, pattern-filled (the page ops' common path).
    pub fn alloc_held_pages(&mut self, order: u32, gfp: Gfp) -> Outcome {
        match self.m.alloc_pages(self.cpu, order, gfp) {
            Ok(p) => {
                let (pfn, order) = p.into_raw();
                let id = self.new_id();
                self.fill_pages(pfn, order, id, gfp.contains(Gfp::ZERO));
                self.push(Live::Pages { pfn, order, id });
                Outcome::Done
            }
            Err(e) => alloc_outcome(e),
        }
    }

    /// Verifies the pattern of `id` in every page of the block; returns corrupted bytes.
    pub fn verify_pages(&mut self, pfn: Pfn, order: u32, id: u64) -> u64 {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let q = pfn.add(i);
            // SAFETY: the caller owns or pins the page; nobody writes it meanwhile.
            bad += unsafe { self.with_page_ro(q, |a| verify(a.bytes(), Self::key(id, q.0))) };
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
            bad += unsafe {
                self.with_page(pfn.add(i), |a| {
                    let z = if zeroed { nonzero(a.bytes()) } else { 0 };
                    fill(a.bytes_mut(), k);
                    z
                })
            };
        }
        self.corrupted += bad;
    }

    /// Verifies what [`Worker::fill_idx`] wrote; returns corrupted bytes.
    pub fn verify_idx(&mut self, pfn: Pfn, order: u32, id: u64, off: u64) -> u64 {
        let mut bad = 0;
        for i in 0..1u64 << order {
            let k = Self::key(id, off + i);
            // SAFETY: as above; nobody writes the page meanwhile.
            bad += unsafe { self.with_page_ro(pfn.add(i), |a| verify(a.bytes(), k)) };
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
    pub(crate) unsafe fn held(f: &'m Folio) -> std::mem::ManuallyDrop<FolioRef<'m>> {
        // SAFETY: the caller holds a reference, which the ManuallyDrop never gives up.
        std::mem::ManuallyDrop::new(unsafe { FolioRef::from_raw(f) })
    }

    /// Takes another reference to a folio this CPU holds one of: a clone of a held reference,
    /// kept raw. No waiting: a holder's count is never frozen.
    ///
    /// # Safety
    /// This CPU holds a reference on `f`.
    pub(crate) unsafe fn get_owned(&self, f: &'m Folio) {
        // SAFETY: the caller's promise.
        let held = unsafe { Self::held(f) };
        let _ = held.get().into_raw();
    }

    /// Drops one of the references this CPU holds on `f` with `folio_put`. No retry: a
    /// refused put is the error it is.
    ///
    /// # Safety
    /// This CPU holds a reference on `f` and gives it up here.
    pub(crate) unsafe fn put_owned(&self, f: &'m Folio) -> Result<bool, FolioError> {
        // SAFETY: the caller's promise: the reference is adopted once and put.
        self.m.folio_put(self.cpu, unsafe { FolioRef::from_raw(f) })
    }

    /// Drops the lock [`Worker::lock_folio`] took.
    pub fn unlock_folio(&self, f: &Folio) {
        self.m.folio_unlock(f);
    }

    /// Verifies `buf` against the object pattern of `id`; returns corrupted bytes.
    pub(crate) fn verify_buf(&mut self, buf: &[u8], id: u64) -> u64 {
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
                let bad = unsafe { self.with_range(pfn, off, len, |a| verify(a.bytes(), k)) };
                self.corrupted += bad;
                // SAFETY: this entry held one pool reference and was taken off the list.
                match unsafe { m.pp_put_pfn(self.cpu, pfn) } {
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

    pub(crate) fn violation(&mut self, msg: String) {
        self.violations += 1;
        if self.messages.len() < 8 {
            self.messages.push(format!("cpu {}: {msg}", self.cpu.id()));
        }
        if self.first_violation_log.is_none() {
            self.first_violation_log = Some(self.log_tail());
        }
    }

    pub(crate) fn log_tail(&self) -> Vec<String> {
        let n = (self.seq as usize).min(LOG_LEN);
        (0..n)
            .map(|k| {
                let e = self.log[(self.seq as usize - n + k) % LOG_LEN];
                format!("cpu {} #{} {} arg={:#x} -> {}", self.cpu.id(), e.seq, e.op, e.arg, e.outcome as char)
            })
            .collect()
    }

    pub(crate) fn run_one(&mut self, table: &[Op], weights: &[u32], total_weight: u64) {
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
    pub(crate) fn local_check(&mut self) {
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

    pub(crate) fn file(&mut self) -> &File<'m> {
        if self.shared.threads > 1 && self.below(4) == 0 || self.files.is_empty() {
            &self.shared.shared_file
        } else {
            let i = self.below(self.files.len() as u64) as usize;
            &self.files[i]
        }
    }
}

pub(crate) fn is_alloc_failure(e: AllocError) -> bool {
    matches!(e, AllocError::NoMemory { .. } | AllocError::Injected)
}

pub(crate) fn alloc_outcome(e: AllocError) -> Outcome {
    if is_alloc_failure(e) {
        Outcome::Failed
    } else {
        Outcome::Violation(format!("unexpected allocation error {e}"))
    }
}
