//! The kernel's torture run: every CPU runs a seeded random mix of the core operations
//! (pages of orders 0..=max, kmalloc of every size class, folio references, page-cache
//! insert/lookup/delete under RCU, remote frees handed to another CPU, RCU grace periods,
//! per-CPU list drains), writing a pattern into what it allocates and verifying it before
//! every free. Every `CHECK_EVERY` operations per CPU all CPUs stop at a quiescent point: each
//! checks its own state (held folios' counts, its page cache), then the leader runs the
//! core's checkers and checks that the raw pages in use are exactly the ones the CPUs hold.
//!
//! The host torture engine (`memdesc-host`'s `torture.rs`) needs std (threads, Vec, time);
//! this is the no_std op mix a kernel can run, over the adapter in `mm.rs`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use crate::arch;
use crate::boot::MAX_KCPUS;
use crate::bootinfo::Crash;
use crate::mm::{self, Block, Cpu, FileSpace, Flags, FolioRef, Obj, Pages};
use crate::util::{Barrier, Rng};

const CHECK_EVERY: u64 = 8000;
const LIVE: usize = 256;
const MAILBOX: usize = 64;
const FILE_INDICES: u64 = 256;

/// What one CPU holds.
enum Live {
    Pages(Pages, u64),
    Kmalloc(Obj, usize, u64),
    /// An object of the shared slab cache `SHARED` (freed by whichever CPU ends up with it).
    CacheObj(Obj, u64),
    Folio(FolioRef, u64),
}

struct Mailbox {
    lock: AtomicBool,
    items: UnsafeCell<[Option<Live>; MAILBOX]>,
}

// SAFETY: `items` is touched only under `lock` (acquire/release spin lock). The handles in it
// may be freed on any CPU (remote frees are part of the core's contract).
unsafe impl Sync for Mailbox {}

static MAILBOXES: [Mailbox; MAX_KCPUS] =
    [const { Mailbox { lock: AtomicBool::new(false), items: UnsafeCell::new([const { None }; MAILBOX]) } }; MAX_KCPUS];

impl Mailbox {
    fn with<R>(&self, f: impl FnOnce(&mut [Option<Live>; MAILBOX]) -> R) -> R {
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: the lock is held.
        let r = f(unsafe { &mut *self.items.get() });
        self.lock.store(false, Ordering::Release);
        r
    }
}

/// Totals of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Operations run on all CPUs.
    pub ops: u64,
    /// Allocations that found no memory (expected under pressure, not violations).
    pub failed: u64,
    /// Invariant violations found.
    pub violations: u64,
    /// Quiescent points checked.
    pub checks: u64,
    /// Grace periods seen to complete.
    pub grace_periods: u64,
    /// Objects freed by a CPU other than the one that allocated them.
    pub remote_frees: u64,
    /// Lookups in the shared page cache that found a folio (racing other CPUs' deletes).
    pub shared_hits: u64,
    /// Milliseconds the run took.
    pub ms: u64,
}

static OPS: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static CHECKS: AtomicU64 = AtomicU64::new(0);
static GPS: AtomicU64 = AtomicU64::new(0);
static REMOTE: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static RAW_HELD: [AtomicU64; MAX_KCPUS] = [const { AtomicU64::new(0) }; MAX_KCPUS];
static BARRIER: Barrier = Barrier::new();
static BASE_RAW: AtomicU64 = AtomicU64::new(0);
static CACHE_HELD: [AtomicU64; MAX_KCPUS] = [const { AtomicU64::new(0) }; MAX_KCPUS];

/// Object size of the shared slab cache.
const SHARED_SIZE: usize = 200;

struct Shared(UnsafeCell<Option<mm::Cache>>);
// SAFETY: written only by the leader between two barriers before any CPU reads it and taken
// back after the last barrier; `mm::Cache` operations are themselves safe from any CPU.
unsafe impl Sync for Shared {}
static SHARED: Shared = Shared(UnsafeCell::new(None));

/// A page cache every CPU inserts into, deletes from and looks up in, so lockless lookups race
/// with deletes and frees on other CPUs. Each index is empty, cached or busy (one CPU inserting
/// or deleting it); lookups may run at any time.
struct SharedFile(UnsafeCell<Option<FileSpace>>);
// SAFETY: as for `Shared`; `FileSpace` operations are safe from any CPU (the page cache's own
// locks and RCU).
unsafe impl Sync for SharedFile {}
static SHARED_FILE: SharedFile = SharedFile(UnsafeCell::new(None));
const SHARED_INDICES: usize = 256;
const EMPTY: u8 = 0;
const CACHED: u8 = 1;
const BUSY: u8 = 2;
static SHARED_STATE: [AtomicU8; SHARED_INDICES] = [const { AtomicU8::new(EMPTY) }; SHARED_INDICES];
static SHARED_LOOKUPS: AtomicU64 = AtomicU64::new(0);

fn shared_file() -> Option<&'static FileSpace> {
    // SAFETY: see `SharedFile`: set before the ops start, not changed while they run.
    unsafe { (*SHARED_FILE.0.get()).as_ref() }
}

fn shared_key(i: u64) -> u64 {
    0x5AED_F11E_0000 | i
}

fn shared() -> &'static mm::Cache {
    // SAFETY: see `Shared`: set before the ops start, not changed while they run.
    unsafe { (*SHARED.0.get()).as_ref().expect("shared cache created before the ops") }
}

fn violation(args: core::fmt::Arguments<'_>) {
    let n = VIOLATIONS.fetch_add(1, Ordering::AcqRel);
    if n < 10 {
        crate::kprintln!("TORTURE VIOLATION (cpu {}): {}", arch::cpu_id(), args);
    }
}

fn word(key: u64, i: u64) -> u64 {
    (key ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93)).rotate_left(17)
}

fn stamp_page(w: &mut [u64; 512], p: u64, key: u64) {
    for i in 0..8 {
        w[i] = word(key, p * 512 + i as u64);
        w[504 + i] = word(key, p * 512 + 504 + i as u64);
    }
}

/// Stamps 16 words of every page of an owned block (first and last 8).
fn stamp(b: &mut Pages, key: u64) {
    for p in 0..1u64 << b.order() {
        mm::write_page(b, p, |w| stamp_page(w, p, key));
    }
}

/// Stamps a folio nobody else can reach yet.
///
/// # Safety
/// As for [`mm::write_folio_page`]: a new folio with only the caller's reference, not yet in a
/// page cache or mapped.
unsafe fn stamp_folio(f: &FolioRef, key: u64) {
    for p in 0..1u64 << f.order() {
        // SAFETY: the caller's contract.
        unsafe { mm::write_folio_page(f, p, |w| stamp_page(w, p, key)) };
    }
}

fn stamped(b: &impl Block, key: u64) -> bool {
    (0..1u64 << b.block_order()).all(|p| {
        mm::read_page(b, p, |w| {
            (0..8).all(|i| w[i] == word(key, p * 512 + i as u64) && w[504 + i] == word(key, p * 512 + 504 + i as u64))
        })
    })
}

fn obj_fill(o: &Obj, size: usize, key: u64) {
    let p = o.ptr();
    for i in 0..size / 8 {
        // SAFETY: a live object of at least `size` bytes owned by the caller; kmalloc objects
        // of 8 bytes and more are 8-aligned.
        unsafe { p.cast::<u64>().add(i).write(word(key, i as u64)) };
    }
    for i in size / 8 * 8..size {
        // SAFETY: as above.
        unsafe { p.add(i).write(key as u8) };
    }
}

fn obj_ok(o: &Obj, size: usize, key: u64) -> bool {
    let p = o.ptr();
    // SAFETY: as in `obj_fill`.
    (0..size / 8).all(|i| unsafe { p.cast::<u64>().add(i).read() } == word(key, i as u64))
        && (size / 8 * 8..size).all(|i| unsafe { p.add(i).read() } == key as u8)
}

struct Worker<'c> {
    cpu: &'c Cpu,
    id: usize,
    n: usize,
    rng: Rng,
    live: [Option<Live>; LIVE],
    nlive: usize,
    live_pages: u64,
    max_pages: u64,
    raw_pages: u64,
    cache_objs: u64,
    space: Option<FileSpace>,
    cached: [u64; (FILE_INDICES / 64) as usize],
    gp: Option<mm::Gp>,
    next_key: u64,
    ops: u64,
}

impl Worker<'_> {
    fn key(&mut self) -> u64 {
        self.next_key += 1;
        (self.id as u64) << 48 | self.next_key
    }

    fn push(&mut self, l: Live) {
        let pages = match &l {
            Live::Pages(p, _) => {
                self.raw_pages += 1 << p.order();
                1 << p.order()
            }
            Live::Kmalloc(..) => 0,
            Live::CacheObj(..) => {
                self.cache_objs += 1;
                0
            }
            Live::Folio(f, _) => 1 << f.order(),
        };
        self.live_pages += pages;
        let slot = self.live.iter().position(|s| s.is_none()).expect("caller checked room");
        self.live[slot] = Some(l);
        self.nlive += 1;
        RAW_HELD[self.id].store(self.raw_pages, Ordering::Relaxed);
        CACHE_HELD[self.id].store(self.cache_objs, Ordering::Relaxed);
    }

    fn take_random(&mut self) -> Option<Live> {
        if self.nlive == 0 {
            return None;
        }
        let start = self.rng.below(LIVE as u64) as usize;
        for k in 0..LIVE {
            let i = (start + k) % LIVE;
            if let Some(l) = self.live[i].take() {
                self.nlive -= 1;
                match &l {
                    Live::Pages(p, _) => {
                        self.live_pages -= 1 << p.order();
                        self.raw_pages -= 1 << p.order();
                    }
                    Live::Kmalloc(..) => {}
                    Live::CacheObj(..) => self.cache_objs -= 1,
                    Live::Folio(f, _) => self.live_pages -= 1 << f.order(),
                }
                RAW_HELD[self.id].store(self.raw_pages, Ordering::Relaxed);
                CACHE_HELD[self.id].store(self.cache_objs, Ordering::Relaxed);
                return Some(l);
            }
        }
        None
    }

    /// Verifies and frees an object (this CPU's or one handed over).
    fn release(&mut self, l: Live, remote: bool) {
        match l {
            Live::Pages(p, key) => {
                if !stamped(&p, key) {
                    violation(format_args!("order-{} block at pfn {:#x} was overwritten", p.order(), p.pfn()));
                }
                if let Err(e) = mm::free_pages(self.cpu, p) {
                    violation(format_args!("free_pages of an owned block refused: {e}"));
                }
            }
            Live::Kmalloc(o, size, key) => {
                if !obj_ok(&o, size, key) {
                    violation(format_args!("kmalloc object of {size} bytes was overwritten"));
                }
                if let Err(e) = mm::kfree(self.cpu, o) {
                    violation(format_args!("kfree of an owned object refused: {e}"));
                }
            }
            Live::CacheObj(o, key) => {
                if !obj_ok(&o, SHARED_SIZE, key) {
                    violation(format_args!("slab cache object was overwritten"));
                }
                if let Err(e) = shared().free(self.cpu, o) {
                    violation(format_args!("slab cache free of an owned object refused: {e}"));
                }
            }
            Live::Folio(f, key) => {
                if !stamped(&f, key) {
                    violation(format_args!("folio at pfn {:#x} was overwritten", f.pfn()));
                }
                match mm::folio_put(self.cpu, f) {
                    Ok(true) => {}
                    Ok(false) => violation(format_args!("the last reference's put did not free the folio")),
                    Err(e) => violation(format_args!("folio_put refused: {e}")),
                }
            }
        }
        if remote {
            REMOTE.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn oom(&self, e: mm::MmError, what: &str) {
        if e.oom {
            FAILED.fetch_add(1, Ordering::Relaxed);
        } else {
            violation(format_args!("{what}: unexpected error {e}"));
        }
    }

    fn drain_mailbox(&mut self) {
        let mut got: [Option<Live>; MAILBOX] = [const { None }; MAILBOX];
        MAILBOXES[self.id].with(|b| {
            for (g, s) in got.iter_mut().zip(b.iter_mut()) {
                *g = s.take();
            }
        });
        for l in got.iter_mut().filter_map(|g| g.take()) {
            self.release(l, true);
        }
    }

    fn is_cached(&self, i: u64) -> bool {
        self.cached[(i / 64) as usize] & 1 << (i % 64) != 0
    }

    fn set_cached(&mut self, i: u64, on: bool) {
        if on {
            self.cached[(i / 64) as usize] |= 1 << (i % 64);
        } else {
            self.cached[(i / 64) as usize] &= !(1 << (i % 64));
        }
    }

    fn file_key(&self, i: u64) -> u64 {
        0xF11E_0000_0000 | (self.id as u64) << 24 | i
    }

    fn op(&mut self) {
        let full = self.nlive >= LIVE - 1 || self.live_pages >= self.max_pages;
        let r = self.rng.below(100);
        match r {
            // Pages of every order (mostly small), with assorted flags.
            0..=21 if !full => {
                let order = match self.rng.below(16) {
                    0..=8 => 0,
                    9..=11 => 1,
                    12 | 13 => self.rng.below(4) as u32,
                    _ => self.rng.below(mm::max_order() as u64 + 1) as u32,
                };
                let f = Flags {
                    zero: self.rng.below(8) == 0,
                    movable: self.rng.below(2) == 0,
                    dma32: self.rng.below(16) == 0,
                    atomic: self.rng.below(16) == 0,
                    guard: false,
                };
                match mm::alloc_pages(self.cpu, order, f) {
                    Ok(mut p) => {
                        if f.zero && !mm::read_page(&p, 0, |w| w.iter().all(|x| *x == 0)) {
                            violation(format_args!("a zeroed page is not zero"));
                        }
                        let key = self.key();
                        stamp(&mut p, key);
                        self.push(Live::Pages(p, key));
                    }
                    Err(e) => self.oom(e, "alloc_pages"),
                }
            }
            // kmalloc, every size class.
            22..=41 if !full => {
                let size = match self.rng.below(8) {
                    0..=5 => 1 + self.rng.below(256) as usize,
                    6 => 1 + self.rng.below(2048) as usize,
                    _ => 1 + self.rng.below(8192) as usize,
                };
                if self.rng.below(4) == 0 {
                    match shared().alloc(self.cpu) {
                        Ok(o) => {
                            let key = self.key();
                            obj_fill(&o, SHARED_SIZE, key);
                            self.push(Live::CacheObj(o, key));
                        }
                        Err(e) => self.oom(e, "slab cache alloc"),
                    }
                    return;
                }
                match mm::kmalloc(self.cpu, size, false) {
                    Ok(o) => {
                        let key = self.key();
                        obj_fill(&o, size, key);
                        self.push(Live::Kmalloc(o, size, key));
                    }
                    Err(e) => self.oom(e, "kmalloc"),
                }
            }
            // Folios: allocate, or take and drop a reference on a held one.
            42..=49 if !full => match mm::folio_alloc(self.cpu, self.rng.below(4) as u32, false, Flags::default()) {
                Ok(f) => {
                    let key = self.key();
                    // SAFETY: a new folio with our one reference, never published.
                    unsafe { stamp_folio(&f, key) };
                    let g = mm::folio_get(&f);
                    if f.refcount() < 2 {
                        violation(format_args!("folio_get did not count"));
                    }
                    match mm::folio_put(self.cpu, g) {
                        Ok(false) => {}
                        r => violation(format_args!("put of a second reference: {r:?}")),
                    }
                    self.push(Live::Folio(f, key));
                }
                Err(e) => self.oom(e, "folio_alloc"),
            },
            // Frees (also taken when full).
            0..=61 => {
                if let Some(l) = self.take_random() {
                    self.release(l, false);
                }
            }
            // Remote free: hand an object to another CPU.
            62..=69 => {
                if self.n > 1 {
                    if let Some(l) = self.take_random() {
                        let to = (self.id + 1 + self.rng.below(self.n as u64 - 1) as usize) % self.n;
                        let back = MAILBOXES[to].with(|b| match b.iter_mut().find(|s| s.is_none()) {
                            Some(s) => {
                                *s = Some(l);
                                None
                            }
                            None => Some(l),
                        });
                        if let Some(l) = back {
                            self.release(l, false);
                        }
                    }
                }
                self.drain_mailbox();
            }
            // Page cache: insert, lockless lookup, delete; this CPU's file, then the shared one.
            70..=80 => self.file_op(),
            81..=91 => self.shared_file_op(),
            // RCU grace periods.
            92..=96 => match self.gp {
                Some(g) if mm::gp_done(g) => {
                    GPS.fetch_add(1, Ordering::Relaxed);
                    self.gp = None;
                }
                Some(_) => {}
                None => self.gp = Some(mm::gp_start()),
            },
            // Per-CPU list drains (every CPU's, from here).
            _ => {
                if self.rng.below(8) == 0 {
                    mm::drain_all();
                }
            }
        }
    }

    fn file_op(&mut self) {
        let Some(space) = &self.space else { return };
        let i = self.rng.below(FILE_INDICES);
        let key = self.file_key(i);
        match self.rng.below(3) {
            0 if !self.is_cached(i) => match mm::folio_alloc(self.cpu, 0, true, Flags::default()) {
                Ok(f) => {
                    // SAFETY: a new folio with our one reference, not yet inserted.
                    unsafe { stamp_folio(&f, key) };
                    let r = space.insert(self.cpu, &f, i);
                    if let Err(e) = mm::folio_put(self.cpu, f) {
                        violation(format_args!("put after insert: {e}"));
                    }
                    match r {
                        Ok(()) => self.set_cached(i, true),
                        Err(e) => self.oom(e, "page cache insert"),
                    }
                }
                Err(e) => self.oom(e, "file folio"),
            },
            1 if self.is_cached(i) => {
                let Some(f) = space.lookup(self.cpu, i) else {
                    violation(format_args!("cached index {i} not found"));
                    return;
                };
                let r = space.delete(self.cpu, &f);
                if !stamped(&f, key) {
                    violation(format_args!("cached folio at index {i} was overwritten"));
                }
                match (r, mm::folio_put(self.cpu, f)) {
                    (Ok(false), Ok(true)) => self.set_cached(i, false),
                    (r, p) => violation(format_args!("delete/put of index {i}: {r:?} {p:?}")),
                }
            }
            _ => {
                let got = space.lookup(self.cpu, i);
                match (got, self.is_cached(i)) {
                    (Some(f), true) => {
                        if !stamped(&f, key) {
                            violation(format_args!("cached folio at index {i} was overwritten"));
                        }
                        if !matches!(mm::folio_put(self.cpu, f), Ok(false)) {
                            violation(format_args!("put of a looked-up folio freed it"));
                        }
                    }
                    (None, false) => {}
                    (Some(f), false) => {
                        violation(format_args!("uncached index {i} found a folio"));
                        let _ = mm::folio_put(self.cpu, f);
                    }
                    (None, true) => violation(format_args!("cached index {i} not found")),
                }
            }
        }
    }

    fn shared_file_op(&mut self) {
        let Some(space) = shared_file() else { return };
        let i = self.rng.below(SHARED_INDICES as u64);
        let st = &SHARED_STATE[i as usize];
        match self.rng.below(4) {
            0 => {
                if st.compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed).is_err() {
                    return;
                }
                let mut now = EMPTY;
                match mm::folio_alloc(self.cpu, 0, true, Flags::default()) {
                    Ok(f) => {
                        // SAFETY: a new folio with our one reference, not yet inserted.
                        unsafe { stamp_folio(&f, shared_key(i)) };
                        match space.insert(self.cpu, &f, i) {
                            Ok(()) => now = CACHED,
                            Err(e) => self.oom(e, "shared page cache insert"),
                        }
                        if let Err(e) = mm::folio_put(self.cpu, f) {
                            violation(format_args!("put after a shared insert: {e}"));
                        }
                    }
                    Err(e) => self.oom(e, "shared file folio"),
                }
                st.store(now, Ordering::Release);
            }
            1 => {
                if st.compare_exchange(CACHED, BUSY, Ordering::Acquire, Ordering::Relaxed).is_err() {
                    return;
                }
                let mut now = CACHED;
                match space.lookup(self.cpu, i) {
                    None => violation(format_args!("shared index {i} is cached but not found")),
                    Some(f) => {
                        match space.delete(self.cpu, &f) {
                            Ok(_) => now = EMPTY,
                            Err(e) => violation(format_args!("delete of shared index {i}: {e}")),
                        }
                        // Another CPU's lookup may still hold a reference: either put may free it.
                        if let Err(e) = mm::folio_put(self.cpu, f) {
                            violation(format_args!("put after a shared delete: {e}"));
                        }
                    }
                }
                st.store(now, Ordering::Release);
            }
            _ => {
                // Lockless lookup racing inserts, deletes and frees on the other CPUs: whatever
                // it returns must be the folio cached at that index, still intact.
                if let Some(f) = space.lookup(self.cpu, i) {
                    SHARED_LOOKUPS.fetch_add(1, Ordering::Relaxed);
                    if !stamped(&f, shared_key(i)) {
                        violation(format_args!("a lookup of shared index {i} returned another page"));
                    }
                    if let Err(e) = mm::folio_put(self.cpu, f) {
                        violation(format_args!("put after a shared lookup: {e}"));
                    }
                }
            }
        }
    }

    /// This CPU's checks at a quiescent point.
    fn local_check(&mut self) {
        for l in self.live.iter().flatten() {
            if let Live::Folio(f, _) = l {
                if f.refcount() != 1 || f.mapcount() != 0 {
                    violation(format_args!("held folio: refcount {} mapcount {}", f.refcount(), f.mapcount()));
                }
            }
        }
        if let Some(s) = &self.space {
            if let Err(e) = s.verify() {
                violation(format_args!("page cache tree: {e}"));
            }
            let n: u64 = self.cached.iter().map(|w| w.count_ones() as u64).sum();
            if s.nr_pages() != n {
                violation(format_args!("page cache holds {} pages, {} inserted", s.nr_pages(), n));
            }
        }
    }

    fn teardown(&mut self) {
        while let Some(l) = self.take_random() {
            self.release(l, false);
        }
        if let Some(s) = self.space.take() {
            let n: u64 = self.cached.iter().map(|w| w.count_ones() as u64).sum();
            let dropped = s.destroy(self.cpu);
            if dropped != n {
                violation(format_args!("destroying the page cache dropped {dropped} folios, {n} cached"));
            }
            self.cached = [0; (FILE_INDICES / 64) as usize];
        }
    }
}

/// The leader's check at a quiescent point.
fn global_check(cpu: &Cpu, n: usize) {
    CHECKS.fetch_add(1, Ordering::Relaxed);
    match mm::check_all(cpu) {
        Ok(h) => {
            let held: u64 = RAW_HELD[..n].iter().map(|a| a.load(Ordering::Relaxed)).sum();
            let base = BASE_RAW.load(Ordering::Relaxed);
            if h.raw != base + held {
                violation(format_args!("raw pages in use {} != {} at start + {} held by the CPUs", h.raw, base, held));
            }
            if let Some(s) = shared_file() {
                if let Err(e) = s.verify() {
                    violation(format_args!("shared page cache tree: {e}"));
                }
                let cached = SHARED_STATE.iter().filter(|s| s.load(Ordering::Relaxed) == CACHED).count() as u64;
                if s.nr_pages() != cached {
                    violation(format_args!("shared page cache holds {} pages, {cached} inserted", s.nr_pages()));
                }
            }
            let objs: u64 = CACHE_HELD[..n].iter().map(|a| a.load(Ordering::Relaxed)).sum();
            // SAFETY: see `Shared` (read at a quiescent point).
            if let Some(c) = unsafe { (*SHARED.0.get()).as_ref() } {
                if c.live() != objs {
                    violation(format_args!("shared slab cache counts {} live objects, the CPUs hold {objs}", c.live()));
                }
            }
        }
        Err(e) => violation(format_args!("checker: {e}")),
    }
}

/// Runs the torture on every CPU (all `n` call it) for `ms` milliseconds. The leader (CPU 0)
/// returns the report.
pub fn run(cpu: &Cpu, n: usize, ms: u64, seed: u64, crash: Option<Crash>) -> Option<Report> {
    let report_every_ms = 1000;
    let id = cpu.id();
    let leader = id == 0;
    let max_pages = (mm::nr_free_pages() / 4 / n as u64).clamp(64, 1 << 16);
    let mut w = Worker {
        cpu,
        id,
        n,
        rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
        live: [const { None }; LIVE],
        nlive: 0,
        live_pages: 0,
        max_pages,
        raw_pages: 0,
        cache_objs: 0,
        space: None,
        cached: [0; (FILE_INDICES / 64) as usize],
        gp: None,
        next_key: 0,
        ops: 0,
    };
    match mm::file_create(cpu) {
        Ok(s) => w.space = Some(s),
        Err(e) => violation(format_args!("address_space_create: {e}")),
    }
    // The baseline, at a quiescent point (every CPU has created its page cache).
    BARRIER.wait(n as u32);
    if leader {
        match mm::file_create(cpu) {
            // SAFETY: see `SharedFile`: the leader writes it while the others wait.
            Ok(f) => unsafe { *SHARED_FILE.0.get() = Some(f) },
            Err(e) => violation(format_args!("address_space_create: {e}")),
        }
        match mm::cache_create(cpu, "torture_shared", SHARED_SIZE) {
            // SAFETY: see `Shared`: the leader writes it while the others wait at the barrier.
            Ok(c) => unsafe { *SHARED.0.get() = Some(c) },
            Err(e) => violation(format_args!("cache_create: {e}")),
        }
        mm::drain_all();
        match mm::check_all(cpu) {
            Ok(h) => BASE_RAW.store(h.raw, Ordering::Relaxed),
            Err(e) => violation(format_args!("checker before torture: {e}")),
        }
    }
    BARRIER.wait(n as u32);
    let t0 = arch::rdtsc();
    let mut last_report = 0;
    loop {
        for _ in 0..CHECK_EVERY {
            w.op();
        }
        w.ops += CHECK_EVERY;
        OPS.fetch_add(CHECK_EVERY, Ordering::Relaxed);
        if leader && w.ops == CHECK_EVERY {
            match crash {
                Some(Crash::Leak) => {
                    crate::kprintln!("  crash=leak: allocating a page the CPUs do not count");
                    if let Ok(p) = mm::alloc_pages(cpu, 0, Flags::default()) {
                        let _ = p.into_raw();
                    }
                }
                Some(Crash::Scribble) => {
                    if let Some(Live::Pages(p, _)) = w.live.iter_mut().flatten().find(|l| matches!(l, Live::Pages(..)))
                    {
                        crate::kprintln!("  crash=scribble: overwriting a word of the block at pfn {:#x}", p.pfn());
                        mm::write_page(p, 0, |x| x[3] ^= 1);
                    }
                }
                _ => {}
            }
        }
        // Quiescent point: nobody hands over objects after this barrier.
        BARRIER.wait(n as u32);
        w.drain_mailbox();
        w.local_check();
        BARRIER.wait(n as u32);
        if leader {
            global_check(cpu, n);
            let el = arch::tsc_ns(arch::rdtsc() - t0) / 1_000_000;
            if el >= last_report + report_every_ms {
                last_report = el;
                crate::kprintln!(
                    "  torture: {} ms, {} ops, {} checks, {} violations",
                    el,
                    OPS.load(Ordering::Relaxed),
                    CHECKS.load(Ordering::Relaxed),
                    VIOLATIONS.load(Ordering::Relaxed)
                );
            }
            STOP.store(el >= ms, Ordering::Release);
        }
        BARRIER.wait(n as u32);
        if STOP.load(Ordering::Acquire) {
            break;
        }
    }
    let el_ms = arch::tsc_ns(arch::rdtsc() - t0) / 1_000_000;
    w.teardown();
    BARRIER.wait(n as u32);
    w.drain_mailbox();
    BARRIER.wait(n as u32);
    if !leader {
        return None;
    }
    mm::drain_all();
    global_check(cpu, n);
    // SAFETY: see `SharedFile`: every other CPU is past its last use (the barrier above).
    if let Some(f) = unsafe { (*SHARED_FILE.0.get()).take() } {
        let cached = SHARED_STATE.iter().filter(|s| s.swap(EMPTY, Ordering::Relaxed) == CACHED).count() as u64;
        let dropped = f.destroy(cpu);
        if dropped != cached {
            violation(format_args!("destroying the shared page cache dropped {dropped} folios, {cached} cached"));
        }
    }
    mm::drain_all();
    global_check(cpu, n);
    // SAFETY: see `Shared`: every other CPU is past its last use (the barrier above).
    if let Some(c) = unsafe { (*SHARED.0.get()).take() } {
        if let Err(e) = c.destroy(cpu) {
            violation(format_args!("destroying the shared slab cache: {e}"));
        }
    }
    Some(Report {
        ops: OPS.load(Ordering::Relaxed),
        failed: FAILED.load(Ordering::Relaxed),
        violations: VIOLATIONS.load(Ordering::Relaxed),
        checks: CHECKS.load(Ordering::Relaxed),
        grace_periods: GPS.load(Ordering::Relaxed),
        remote_frees: REMOTE.load(Ordering::Relaxed),
        shared_hits: SHARED_LOOKUPS.load(Ordering::Relaxed),
        ms: el_ms,
    })
}
