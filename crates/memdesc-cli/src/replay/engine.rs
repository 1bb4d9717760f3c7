//! The replay engine: the [`Replayer`] turns each traced event into calls of the simulated
//! machine's allocators (page allocator, slab, page cache, vmalloc, page_pool) over a pfn →
//! pfn map, and samples the metadata bytes as it goes; [`Kernel`] holds the kernel-side
//! allocators it drives.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr::NonNull;

use anyhow::{Context, Result};
use memdesc::folio::{FolioKind, FolioRef};
use memdesc::memmap::desc::{CachedDescriptor, Folio, MappableDesc, Netmem, PtDesc, VmallocDesc, Z3foldDesc, Zspage};
use memdesc::Cpu;

/// The reference a replay entry holds on `f` (kept raw in the entry, as a C caller keeps a
/// pfn), lent as a [`FolioRef`] that is not dropped.
///
/// # Safety
/// The entry holds one reference on `f` and keeps it.
unsafe fn lent(f: &Folio) -> std::mem::ManuallyDrop<FolioRef<'_>> {
    // SAFETY: the caller's promise; ManuallyDrop never gives the reference up.
    std::mem::ManuallyDrop::new(unsafe { FolioRef::from_raw(f) })
}
use super::gfp::*;
use super::metadata::*;
use memdesc::kmalloc::KMALLOC_MAX_CACHE_SIZE;
use memdesc::page_pool::{PagePool, PoolParams};
use memdesc::pagecache::AddressSpaceRef;
use memdesc::pgtable::MmRef;
use memdesc::vmalloc::{Unmappable, VmArea, VmallocSpace};
use memdesc::{CacheArgs, CacheRef, Gfp, Pfn, PAGE_SIZE};
use memdesc_host::{SimMachine, SimPlatform};
use memdesc_linux::census::{Kind, Run};
use memdesc_linux::trace::{Event, EventKind, Gfp as LinuxGfp};

/// Identity-ish hasher for keys that are already well mixed (the kernel's hashed pointers) or
/// small (pfns, inode numbers): one multiply.
#[derive(Default, Clone, Copy)]
pub(crate) struct MixHasher(u64);
impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}
pub(crate) type Fast = BuildHasherDefault<MixHasher>;

/// What the simulated machine holds for one traced allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum What {
    /// A raw block (`alloc_pages`), labelled for the end-state comparison.
    Raw(Kind),
    /// A folio.
    Folio(FolioKind),
    /// An order-0 block of the replay's page pool (a netmem).
    NetPool,
    /// One of Linux's slab pages from the trace: not allocated (our slab has its own).
    LinuxSlab,
    /// An allocation the simulated machine refused (counted as a failure).
    Lost,
}

pub(crate) struct Entry<'m> {
    pub(crate) head: u64,
    pub(crate) order: u32,
    /// Traced pages not yet freed.
    pub(crate) live: u32,
    /// From the start snapshot.
    pub(crate) pre: bool,
    pub(crate) what: What,
    pub(crate) sim: Pfn,
    pub(crate) folio: Option<&'m Folio>,
    /// (address space, index) while in the simulated page cache.
    pub(crate) cached: Option<(u32, u64)>,
}

impl Entry<'_> {
    /// A slot holding nothing: entry 0 (the index's "no entry") and freed slots.
    pub(crate) const VACANT: Self =
        Entry { head: 0, order: 0, live: 0, pre: false, what: What::Lost, sim: Pfn(0), folio: None, cached: None };
}

pub(crate) struct Obj {
    pub(crate) ptr: NonNull<u8>,
    /// Index into `caches`; `u32::MAX` for kmalloc.
    pub(crate) cache: u32,
}

pub(crate) const KMALLOC: u32 = u32::MAX;

/// Linux's cache of xarray (radix tree) nodes. Most of them index the page cache, which the
/// replay rebuilds with its own `AddressSpace` trees, so they are skipped rather than counted
/// twice (the few nodes of other xarrays are left out with them).
pub(crate) const XA_NODE: &str = "radix_tree_node";

/// The replay engine over one booted machine.
pub struct Replayer<'m> {
    pub(crate) m: &'m SimMachine,
    pub(crate) cpu: Cpu<'m>,
    pub(crate) index: Vec<u32>,
    pub(crate) entries: Vec<Entry<'m>>,
    pub(crate) free_entries: Vec<u32>,
    pub(crate) objs: HashMap<u64, Obj, Fast>,
    pub(crate) large: HashMap<u64, (), Fast>,
    pub(crate) caches: Vec<CacheRef<'m, SimPlatform>>,
    pub(crate) cache_by_name: HashMap<String, u32, Fast>,
    pub(crate) spaces: Vec<AddressSpaceRef<'m, SimPlatform>>,
    pub(crate) space_of: HashMap<(u32, u32, u64), u32, Fast>,
    pub(crate) vmalloc: &'m VmallocSpace<'m, SimPlatform>,
    pub(crate) pool: &'m PagePool<'m, SimPlatform>,
    /// Traced vmap area start → the simulated area (`None`: the simulated machine refused it).
    pub(crate) vmaps: HashMap<u64, Option<VmArea<Unmappable>>, Fast>,
    /// Per event type: replayed.
    pub replayed: [u64; EventKind::COUNT],
    /// Per event type: skipped.
    pub skipped_by_kind: [u64; EventKind::COUNT],
    /// Skip reasons.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Allocations the simulated machine refused.
    pub alloc_failures: u64,
    /// Frees of pfns no allocation covers.
    pub unmatched_frees: u64,
    /// Frees of pages allocated before the trace (from the start snapshot).
    pub pre_trace_frees: u64,
    /// Frees that released only part of a block (split pages, `free_pages_exact`).
    pub partial_frees: u64,
    /// Pages allocated by the trace that the start snapshot showed allocated: freed between
    /// the snapshot and the start of the trace (or sitting on a per-CPU list, which
    /// kpageflags cannot tell from allocated memory). The start-state stand-in is released.
    pub stale_start_pages: u64,
    /// Pages allocated by the trace while an earlier traced allocation still covered them (a
    /// free the trace lost); the old allocation is released first.
    pub lost_free_pages: u64,
    /// Objects or vmap areas allocated at a pointer still live (a lost free).
    pub lost_object_frees: u64,
    /// One bit per pfn: free (or not yet initialised) in the start snapshot.
    pub(crate) start_free: Vec<u64>,
    /// Errors the simulated allocators returned for a replayed operation (must be 0).
    pub sim_errors: BTreeMap<String, u64>,
    /// Metadata samples.
    pub samples: Vec<Sample>,
    pub(crate) linux_bytes: u64,
    pub(crate) desc_names: Vec<&'static str>,
    pub(crate) events_done: u64,
    /// Per 2 MiB area of the traced pfn space: pfns covered by a live traced allocation.
    pub(crate) area_occ: Vec<u16>,
    /// Per area: split under the traced placement (as of the last refresh).
    pub(crate) area_split: Vec<bool>,
    /// Per area: changed since the last refresh.
    pub(crate) area_dirty: Vec<bool>,
    pub(crate) dirty: Vec<u32>,
    /// Areas split under the traced placement (as of the last refresh).
    pub(crate) traced_split: u64,
}

/// pfns per two-level area (2 MiB).
pub(crate) const AREA: usize = 512;

/// The kernel-side allocators the replay drives besides the page allocator, slab and page
/// cache: a kernel address space (Linux's `init_mm`) with one vmalloc space in it, and one
/// page pool. Built before the [`Replayer`], which borrows it, over a kernel mm the caller
/// owns:
///
/// ```ignore
/// let cpu = m.cpus().claim(0)?;
/// let caches = m.mm_caches(&cpu)?;
/// let kmm = caches.mm_create(&cpu, MmKind::Kernel)?;
/// let kernel = Kernel::new(&m, &cpu, &kmm)?;
/// drop(cpu); // the Replayer claims CPU 0
/// let r = Replayer::new(&m, &kernel, pfns, linux_bytes)?;
/// ```
pub struct Kernel<'m> {
    /// Where vmap areas go.
    pub vmalloc: VmallocSpace<'m, SimPlatform>,
    /// Where page_pool pages come from: order 0, a ring of one block.
    pub pool: PagePool<'m, SimPlatform>,
}

impl<'m> Kernel<'m> {
    /// A vmalloc space in the kernel address space `kmm` and a page pool, both of `m`.
    pub fn new(m: &'m SimMachine, cpu: &Cpu<'_>, kmm: &'m MmRef<'m, SimPlatform>) -> Result<Self> {
        let vmalloc =
            VmallocSpace::new(m, cpu, kmm).map_err(|e| anyhow::anyhow!("vmalloc space of the replay: {e}"))?;
        let pool = PagePool::new(m, cpu, PoolParams { order: 0, ring_size: 1, dma_offset: 0, gfp: Gfp::KERNEL })
            .map_err(|e| anyhow::anyhow!("page pool of the replay: {e}"))?;
        Ok(Kernel { vmalloc, pool })
    }
}

pub(crate) fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// Aligned power-of-two blocks (order ≤ `max`) covering `[s, s + len)`.
pub(crate) fn blocks(s: u64, len: u64, max: u32) -> impl Iterator<Item = (u64, u32)> {
    let e = s + len;
    let mut x = s;
    std::iter::from_fn(move || {
        if x >= e {
            return None;
        }
        let mut k = max.min(if x == 0 { 63 } else { x.trailing_zeros() });
        while k > 0 && x + (1u64 << k) > e {
            k -= 1;
        }
        let r = (x, k);
        x += 1u64 << k;
        Some(r)
    })
}

impl<'m> Replayer<'m> {
    /// A replayer over `m`, with a pfn map covering `pfns` traced pfns; `linux_bytes` is what
    /// Linux's memmap costs for the traced machine. vmap areas go to `kernel`'s vmalloc space
    /// and page_pool pages to its pool. Claims CPU 0 (release any claim of it first).
    pub fn new(m: &'m SimMachine, kernel: &'m Kernel<'m>, pfns: u64, linux_bytes: u64) -> Result<Self> {
        let cpu = m.cpus().claim(0).context("claiming CPU 0 of the simulated machine")?;
        let desc_names = vec![
            Folio::CACHE_NAME,
            PtDesc::CACHE_NAME,
            VmallocDesc::CACHE_NAME,
            Netmem::CACHE_NAME,
            Zspage::CACHE_NAME,
            Z3foldDesc::CACHE_NAME,
            MappableDesc::CACHE_NAME,
            "slab_desc",
        ];
        Ok(Replayer {
            m,
            cpu,
            index: vec![0; pfns as usize],
            entries: vec![Entry::VACANT],
            free_entries: Vec::new(),
            objs: HashMap::default(),
            large: HashMap::default(),
            caches: Vec::new(),
            cache_by_name: HashMap::default(),
            spaces: Vec::new(),
            space_of: HashMap::default(),
            vmalloc: &kernel.vmalloc,
            pool: &kernel.pool,
            vmaps: HashMap::default(),
            replayed: [0; EventKind::COUNT],
            skipped_by_kind: [0; EventKind::COUNT],
            skipped: BTreeMap::new(),
            alloc_failures: 0,
            unmatched_frees: 0,
            pre_trace_frees: 0,
            partial_frees: 0,
            stale_start_pages: 0,
            lost_free_pages: 0,
            lost_object_frees: 0,
            start_free: vec![0; (pfns as usize).div_ceil(64)],
            sim_errors: BTreeMap::new(),
            samples: Vec::new(),
            linux_bytes,
            desc_names,
            events_done: 0,
            area_occ: vec![0; (pfns as usize).div_ceil(AREA)],
            area_split: vec![false; (pfns as usize).div_ceil(AREA)],
            area_dirty: vec![false; (pfns as usize).div_ceil(AREA)],
            dirty: Vec::new(),
            traced_split: 0,
        })
    }

    pub(crate) fn sim_error(&mut self, what: &str, e: impl std::fmt::Display) {
        *self.sim_errors.entry(format!("{what}: {e}")).or_insert(0) += 1;
    }

    /// Points traced pfn `p` at entry `i` (0: none), keeping the per-area counts.
    pub(crate) fn set_slot(&mut self, p: usize, i: u32) {
        let old = std::mem::replace(&mut self.index[p], i);
        let a = p / AREA;
        match (old == 0, i == 0) {
            (true, false) => self.area_occ[a] += 1,
            (false, true) => self.area_occ[a] -= 1,
            _ => {}
        }
        self.mark(a);
    }

    pub(crate) fn mark(&mut self, a: usize) {
        if !self.area_dirty[a] {
            self.area_dirty[a] = true;
            self.dirty.push(a as u32);
        }
    }

    /// Whether area `a` needs a table under the traced placement.
    pub(crate) fn traced_area_split(&self, a: usize) -> bool {
        let s = a * AREA;
        let e = (s + AREA).min(self.index.len());
        let occ = self.area_occ[a] as usize;
        if occ == 0 {
            return false;
        }
        if occ < AREA || e - s < AREA {
            return true;
        }
        let first = self.index[s];
        let f = &self.entries[first as usize];
        if f.order >= 9 && matches!(f.what, What::Folio(_)) && self.index[s..e].iter().all(|&i| i == first) {
            return false;
        }
        !self.index[s..e].iter().all(|&i| self.entries[i as usize].what == What::Raw(Kind::Reserved))
    }

    /// Brings the traced-placement split count up to date.
    pub(crate) fn refresh_traced(&mut self) {
        while let Some(a) = self.dirty.pop() {
            let a = a as usize;
            self.area_dirty[a] = false;
            let now = self.traced_area_split(a);
            if now != self.area_split[a] {
                self.area_split[a] = now;
                if now {
                    self.traced_split += 1;
                } else {
                    self.traced_split -= 1;
                }
            }
        }
    }

    pub(crate) fn entry_at(&self, pfn: u64) -> Option<u32> {
        match self.index.get(pfn as usize) {
            Some(&i) if i != 0 => Some(i),
            _ => None,
        }
    }

    /// Records a new entry for the traced block `[head, head + 2^order)`.
    pub(crate) fn insert(&mut self, head: u64, order: u32, pre: bool, what: What, sim: Pfn, folio: Option<&'m Folio>) {
        let end = (head + (1u64 << order)).min(self.index.len() as u64);
        if head >= end {
            // Beyond the pfn map: release straight away (cannot be matched later).
            let e = Entry { head, order, live: 1 << order, pre, what, sim, folio, cached: None };
            self.release(e);
            return;
        }
        let e = Entry { head, order, live: (end - head) as u32, pre, what, sim, folio, cached: None };
        let i = match self.free_entries.pop() {
            Some(i) => {
                self.entries[i as usize] = e;
                i
            }
            None => {
                self.entries.push(e);
                (self.entries.len() - 1) as u32
            }
        };
        for p in head..end {
            let old = self.index[p as usize];
            if old != 0 {
                // A pfn still covered by another entry.
                if self.entries[old as usize].pre {
                    self.stale_start_pages += 1;
                } else {
                    self.lost_free_pages += 1;
                }
                self.drop_pages(old, p, p + 1);
            }
            self.set_slot(p as usize, i);
        }
    }

    /// Releases the simulated memory of an entry.
    pub(crate) fn release(&mut self, e: Entry<'m>) {
        match e.what {
            What::Raw(_) => {
                // SAFETY: the entry table is the one owner of each simulated raw block (from
                // alloc_pages_raw below); an entry is released once, after leaving the table.
                if let Err(err) = unsafe { self.m.free_pages_raw(&self.cpu, e.sim, e.order) } {
                    self.sim_error("free_pages", err);
                }
            }
            What::Folio(_) => {
                if let Some(f) = e.folio {
                    if let Some((s, _)) = e.cached {
                        if let Err(err) = self.spaces[s as usize].delete(&self.cpu, f) {
                            self.sim_error("page cache delete", err);
                        }
                    }
                    self.m.lru_del(f);
                    // SAFETY: the entry's reference, given up here (the entry goes).
                    if let Err(err) = self.m.folio_put(&self.cpu, unsafe { FolioRef::from_raw(f) }) {
                        self.sim_error("folio_put", err);
                    }
                }
            }
            What::NetPool => {
                // SAFETY: the entry holds the one pool reference of its block (taken with
                // `into_raw` when the entry was made) and gives it up here.
                if let Err(err) = unsafe { self.m.pp_put_pfn(&self.cpu, e.sim) } {
                    self.sim_error("page_pool put", err);
                }
            }
            What::LinuxSlab | What::Lost => {}
        }
    }

    /// Drops traced pages `[a, b)` of entry `i` from the map; frees the simulated block when
    /// none is left.
    pub(crate) fn drop_pages(&mut self, i: u32, a: u64, b: u64) {
        for p in a..b {
            self.set_slot(p as usize, 0);
        }
        let e = &mut self.entries[i as usize];
        e.live -= (b - a) as u32;
        if e.live == 0 {
            let e = std::mem::replace(&mut self.entries[i as usize], Entry::VACANT);
            self.free_entries.push(i);
            self.release(e);
        }
    }

    /// Allocates the start state from the start snapshot's runs.
    pub fn load_start(&mut self, runs: &[Run]) {
        let max = self.m.config().max_order;
        for r in runs {
            match r.kind {
                Kind::Free | Kind::Uninit => {
                    for p in r.start..(r.start + r.len).min(self.index.len() as u64) {
                        self.start_free[p as usize / 64] |= 1 << (p % 64);
                    }
                }
                Kind::Hole => {}
                Kind::Anon | Kind::File => {
                    let fk = if r.kind == Kind::Anon { FolioKind::Anon } else { FolioKind::File };
                    for (p, k) in blocks(r.start, r.len, max) {
                        match self.m.folio_alloc(&self.cpu, k, Gfp::MOVABLE, fk) {
                            Ok(f) => {
                                // The entry keeps the reference raw.
                                let f = f.into_raw();
                                self.m.lru_add(f);
                                self.insert(p, k, true, What::Folio(fk), f.flags.pfn(), Some(f));
                            }
                            Err(_) => {
                                self.alloc_failures += 1;
                                self.insert(p, k, true, What::Lost, Pfn(0), None);
                            }
                        }
                    }
                }
                kind => {
                    let gfp = if kind == Kind::Slab { Gfp::RECLAIMABLE } else { Gfp::KERNEL };
                    for (p, k) in blocks(r.start, r.len, max) {
                        match self.m.alloc_pages_raw(&self.cpu, k, gfp) {
                            Ok(s) => self.insert(p, k, true, What::Raw(kind), s, None),
                            Err(_) => {
                                self.alloc_failures += 1;
                                self.insert(p, k, true, What::Lost, Pfn(0), None);
                            }
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn skip(&mut self, kind: EventKind, reason: &'static str) {
        self.skipped_by_kind[kind as usize] += 1;
        *self.skipped.entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn done(&mut self, kind: EventKind) {
        self.replayed[kind as usize] += 1;
    }

    /// Frees traced pages `[pfn, pfn + 2^order)`.
    pub(crate) fn page_free(&mut self, kind: EventKind, pfn: u64, order: u32) {
        let end = pfn.saturating_add(1u64 << order.min(40));
        let Some(first) = self.entry_at(pfn) else {
            self.unmatched_frees += 1;
            let was_free = self.start_free.get(pfn as usize / 64).is_some_and(|w| w >> (pfn % 64) & 1 == 1);
            return self.skip(
                kind,
                if was_free {
                    "page free: unmatched, free in the start snapshot (allocated between the snapshot and the trace start)"
                } else {
                    "page free: unmatched, no live allocation at this pfn (its free was already replayed)"
                },
            );
        };
        let e = &self.entries[first as usize];
        if e.what == What::LinuxSlab {
            let (h, o) = (e.head, e.order);
            self.drop_pages(first, h, h + (1u64 << o));
            return self.skip(kind, "page free: Linux slab page (our slab frees its own pages)");
        }
        if e.pre {
            self.pre_trace_frees += 1;
        }
        let whole = e.head == pfn && e.order == order;
        if !whole {
            self.partial_frees += 1;
        }
        let mut q = pfn;
        while q < end {
            match self.entry_at(q) {
                None => q += 1,
                Some(i) => {
                    let e = &self.entries[i as usize];
                    let b = (e.head + (1u64 << e.order)).min(end).min(self.index.len() as u64);
                    self.drop_pages(i, q, b);
                    q = b;
                }
            }
        }
        self.done(kind);
    }

    pub(crate) fn page_alloc(&mut self, pfn: u64, order: u32, migratetype: i32, gfp: &LinuxGfp<'_>) {
        let kind = EventKind::PageAlloc;
        if linux_slab_page(gfp, migratetype) {
            self.insert(pfn, order, false, What::LinuxSlab, Pfn(0), None);
            return self.skip(kind, "page alloc: Linux slab page (our slab allocates its own)");
        }
        let label = if page_table_page(gfp, order, migratetype) { Kind::PageTable } else { Kind::Other };
        match self.m.alloc_pages_raw(&self.cpu, order, sim_gfp(gfp, migratetype)) {
            Ok(s) => self.insert(pfn, order, false, What::Raw(label), s, None),
            Err(_) => {
                self.alloc_failures += 1;
                self.insert(pfn, order, false, What::Lost, Pfn(0), None);
            }
        }
        self.done(kind);
    }

    /// Makes the block headed by `pfn` a folio of kind `fk` (retyping a raw block). Returns
    /// the entry, or a skip reason.
    pub(crate) fn folio_at(&mut self, pfn: u64, fk: FolioKind) -> Result<u32, &'static str> {
        let Some(i) = self.entry_at(pfn) else { return Err("folio event: pfn not allocated in the replay") };
        let e = &self.entries[i as usize];
        if e.head != pfn {
            return Err("folio event: pfn inside a larger allocation, not its head");
        }
        match e.what {
            What::Folio(_) => Ok(i),
            What::Raw(_) if e.live == 1 << e.order => {
                let (sim, order) = (e.sim, e.order);
                // SAFETY: as in `release`: the entry owns the raw block, which it gives up here
                // (it becomes a folio entry below).
                if let Err(err) = unsafe { self.m.free_pages_raw(&self.cpu, sim, order) } {
                    self.sim_error("free_pages (retype)", err);
                }
                let area = self.entries[i as usize].head as usize / AREA;
                match self.m.folio_alloc(&self.cpu, order, Gfp::MOVABLE, fk) {
                    Ok(f) => {
                        // The entry keeps the reference raw.
                        let f = f.into_raw();
                        // A whole-area folio may make its area uniform.
                        self.mark(area);
                        let e = &mut self.entries[i as usize];
                        e.what = What::Folio(fk);
                        e.folio = Some(f);
                        e.sim = f.flags.pfn();
                        Ok(i)
                    }
                    Err(_) => {
                        self.entries[i as usize].what = What::Lost;
                        self.mark(area);
                        self.alloc_failures += 1;
                        Err("folio event: the folio allocation failed")
                    }
                }
            }
            What::Raw(_) => Err("folio event: block partly freed already"),
            What::LinuxSlab => Err("folio event: pfn is a Linux slab page"),
            What::NetPool => Err("folio event: pfn is a page_pool page"),
            What::Lost => Err("folio event: its allocation failed in the replay"),
        }
    }

    pub(crate) fn space(&mut self, dev: (u32, u32), ino: u64) -> Option<u32> {
        if let Some(&s) = self.space_of.get(&(dev.0, dev.1, ino)) {
            return Some(s);
        }
        match self.m.address_space_create(&self.cpu) {
            Ok(a) => {
                self.spaces.push(a);
                let s = (self.spaces.len() - 1) as u32;
                self.space_of.insert((dev.0, dev.1, ino), s);
                Some(s)
            }
            Err(_) => {
                self.alloc_failures += 1;
                None
            }
        }
    }

    pub(crate) fn cache(&mut self, name: &str, size: usize) -> Option<u32> {
        if let Some(&c) = self.cache_by_name.get(name) {
            return Some(c);
        }
        // Cache names are 'static in the core (slabinfo rows); one leaked string per cache.
        let args = CacheArgs::new(leak(name), size.max(8));
        match self.m.create_cache(&self.cpu, args) {
            Ok(c) => {
                self.caches.push(c);
                let i = (self.caches.len() - 1) as u32;
                self.cache_by_name.insert(name.to_owned(), i);
                Some(i)
            }
            Err(_) => {
                self.alloc_failures += 1;
                None
            }
        }
    }

    pub(crate) fn obj_alloc(
        &mut self,
        kind: EventKind,
        ptr: u64,
        r: Result<NonNull<u8>, memdesc::AllocError>,
        cache: u32,
    ) {
        match r {
            Ok(p) => {
                if let Some(old) = self.objs.insert(ptr, Obj { ptr: p, cache }) {
                    // The trace lost this pointer's free: release the stale object.
                    self.lost_object_frees += 1;
                    self.obj_release(old);
                }
            }
            Err(_) => self.alloc_failures += 1,
        }
        self.done(kind);
    }

    pub(crate) fn obj_release(&mut self, o: Obj) {
        // SAFETY: the object table is the one owner of each object (from alloc_raw or
        // kmalloc_raw); `o` has just left it.
        let r = match self.caches.get(o.cache as usize) {
            Some(c) => unsafe { c.free_raw(&self.cpu, o.ptr) },
            None => unsafe { self.m.kfree_raw(&self.cpu, o.ptr) },
        };
        if let Err(e) = r {
            self.sim_error("slab free", e);
        }
    }

    pub(crate) fn obj_free(&mut self, kind: EventKind, ptr: u64) {
        if ptr == 0 {
            return self.skip(kind, "kfree(NULL)");
        }
        match self.objs.remove(&ptr) {
            Some(o) => {
                self.obj_release(o);
                self.done(kind);
            }
            None if self.large.remove(&ptr).is_some() => {
                self.skip(kind, "large kfree: its pages are freed by the page event")
            }
            None => self.skip(kind, "object free: allocated before the trace"),
        }
    }

    /// A vmap area of the traced kernel as an unmappable area of the vmalloc space (its own
    /// guard page included, as the traced size is).
    pub(crate) fn vmap_alloc(&mut self, addr: u64, size: u64) {
        // The traced size includes the guard page, which has no memory behind it.
        let pages = (size / PAGE_SIZE as u64).saturating_sub(1).max(1);
        let area = match self.vmalloc.vmalloc::<Unmappable>(&self.cpu, pages as usize * PAGE_SIZE, Gfp::KERNEL) {
            Ok(a) => Some(a),
            Err(_) => {
                self.alloc_failures += 1;
                None
            }
        };
        if let Some(old) = self.vmaps.insert(addr, area) {
            self.lost_object_frees += 1;
            self.vmap_release(old);
        }
    }

    pub(crate) fn vmap_release(&mut self, area: Option<VmArea<Unmappable>>) {
        if let Some(a) = area {
            if let Err(e) = self.vmalloc.vfree_area(&self.cpu, a) {
                self.sim_error("vfree", e);
            }
        }
    }

    /// Replays one event. A page event whose order is above the simulated machine's
    /// `max_order`, or whose pages lie beyond the traced machine's last pfn (the start
    /// snapshot's length), is skipped with a reason that says so, never replayed.
    pub fn event(&mut self, ev: &Event<'_>) {
        let kind = ev.kind();
        if let Some((pfn, order)) = event_pages(ev) {
            if order > self.m.config().max_order {
                return self.skip(kind, "rejected: order above MAX_ORDER (not a buddy block)");
            }
            if pfn.checked_add(1u64 << order).is_none_or(|end| end > self.index.len() as u64) {
                return self
                    .skip(kind, "rejected: pfn beyond the traced machine's memory (past the snapshots' last pfn)");
            }
        }
        match *ev {
            Event::PageAlloc { pfn: None, .. } => self.skip(kind, "page alloc: failed in the traced kernel"),
            Event::PageAlloc { pfn: Some(pfn), order, migratetype, ref gfp } => {
                self.page_alloc(pfn, order, migratetype, gfp)
            }
            Event::PageFree { pfn, order } => self.page_free(kind, pfn, order),
            Event::PageFreeBatched { pfn } => self.page_free(kind, pfn, 0),
            Event::Kmalloc { ptr, bytes_alloc, .. } if bytes_alloc as usize > KMALLOC_MAX_CACHE_SIZE => {
                self.large.insert(ptr, ());
                self.skip(kind, "large kmalloc: its pages are replayed by the page event")
            }
            Event::Kmalloc { ptr, bytes_alloc, .. } => {
                let r = self.m.kmalloc_raw(&self.cpu, bytes_alloc.max(1) as usize, Gfp::KERNEL);
                self.obj_alloc(kind, ptr, r, KMALLOC)
            }
            Event::KmemCacheAlloc { name: Some(XA_NODE), .. } | Event::KmemCacheFree { name: Some(XA_NODE), .. } => {
                self.skip(kind, "xarray node: the simulated page cache allocates its own tree nodes")
            }
            Event::Kfree { ptr, .. } | Event::KmemCacheFree { ptr, .. } => self.obj_free(kind, ptr),
            Event::KmemCacheAlloc { ptr, name, bytes_alloc, .. } => {
                let n;
                let name = match name {
                    Some(n) => n,
                    None => {
                        n = format!("size-{bytes_alloc}");
                        &n
                    }
                };
                match self.cache(name, bytes_alloc as usize) {
                    Some(c) => {
                        let r = self.caches[c as usize].alloc_raw(&self.cpu);
                        self.obj_alloc(kind, ptr, r, c)
                    }
                    None => self.done(kind),
                }
            }
            Event::FilemapAdd(pc) => match self.folio_at(pc.pfn, FolioKind::File) {
                Err(why) => self.skip(kind, why),
                Ok(i) => {
                    let e = &self.entries[i as usize];
                    if e.what == What::Folio(FolioKind::Anon) {
                        return self.skip(kind, "page cache add: anon folio (swap cache): kept anon");
                    }
                    if e.cached.is_some() {
                        return self.skip(kind, "page cache add: already cached");
                    }
                    let f = e.folio.expect("folio entry");
                    let Some(s) = self.space((pc.dev_major, pc.dev_minor), pc.ino) else { return self.done(kind) };
                    // The kernel prints the folio's offset in bytes.
                    let index = pc.offset / PAGE_SIZE as u64;
                    // SAFETY: the entry holds its reference and keeps it.
                    let held = unsafe { lent(f) };
                    match self.spaces[s as usize].insert(&self.cpu, &held, index) {
                        Ok(()) => {
                            self.entries[i as usize].cached = Some((s, index));
                            self.done(kind)
                        }
                        Err(e) => {
                            self.sim_error("page cache insert", e);
                            self.done(kind)
                        }
                    }
                }
            },
            Event::FilemapDelete(pc) => {
                let Some(i) = self.entry_at(pc.pfn) else {
                    return self.skip(kind, "page cache delete: pfn not allocated in the replay");
                };
                let e = &self.entries[i as usize];
                let key = (pc.dev_major, pc.dev_minor, pc.ino);
                match (e.cached, e.folio, self.space_of.get(&key)) {
                    (Some((s, idx)), Some(f), Some(&s2)) if s == s2 && idx == pc.offset / PAGE_SIZE as u64 => {
                        if let Err(err) = self.spaces[s as usize].delete(&self.cpu, f) {
                            self.sim_error("page cache delete", err);
                        }
                        self.entries[i as usize].cached = None;
                        self.done(kind)
                    }
                    _ if e.pre => self.skip(kind, "page cache delete: cached before the trace (index unknown)"),
                    _ => self.skip(kind, "page cache delete: not in the simulated page cache"),
                }
            }
            Event::LruInsertion { pfn, flags, .. } => {
                let fk = if flags.anon { FolioKind::Anon } else { FolioKind::File };
                match self.folio_at(pfn, fk) {
                    Ok(i) => {
                        let f = self.entries[i as usize].folio.expect("folio entry");
                        self.m.lru_add(f);
                        self.done(kind)
                    }
                    Err(why) => self.skip(kind, why),
                }
            }
            Event::AllocVmapArea { failed: true, .. } => self.skip(kind, "vmap area: failed in the traced kernel"),
            Event::AllocVmapArea { addr, size, .. } => {
                self.vmap_alloc(addr, size);
                self.done(kind)
            }
            Event::FreeVmapArea { va_start, .. } => match self.vmaps.remove(&va_start) {
                Some(Some(a)) => {
                    self.vmap_release(Some(a));
                    self.done(kind)
                }
                Some(None) => self.skip(kind, "vmap area free: its allocation failed in the replay"),
                None => self.skip(kind, "vmap area free: allocated before the trace"),
            },
            // page_pool takes order-0 pages in bulk (no mm_page_alloc event), so a hold of a pfn
            // the replay does not know takes a block from the replay's pool. Its return to the
            // page allocator is an mm_page_free, which puts the block back (`release`). A hold
            // of a pfn already allocated in the replay (a pool that allocates with a traced
            // page event, or a page of the start state) leaves that allocation as it is.
            Event::PagePoolHold { pfn, .. } => {
                if self.entry_at(pfn).is_none() {
                    match self.pool.alloc(&self.cpu) {
                        Ok(n) => self.insert(pfn, 0, false, What::NetPool, n.into_raw(), None),
                        Err(_) => {
                            self.alloc_failures += 1;
                            self.insert(pfn, 0, false, What::Lost, Pfn(0), None);
                        }
                    }
                }
                self.done(kind)
            }
            Event::PagePoolRelease { .. } => self.skip(kind, "page_pool release: the page's free is its mm_page_free"),
            Event::MigratePages { .. } => self.skip(kind, "migrate_pages summary: the moves appear as page events"),
        }
        self.events_done += 1;
    }

    /// Takes a metadata sample now.
    pub fn sample(&mut self) {
        let words = self.m.memmap().bytes();
        let mut desc = 0u64;
        let names = &self.desc_names;
        let m = self.m;
        m.for_each_cache(|c| {
            if names.contains(&c.name()) {
                let i = m.slab_info(c);
                desc += i.num_slabs * i.pagesperslab as u64 * PAGE_SIZE as u64;
            }
        });
        self.refresh_traced();
        let area_words = self.area_occ.len() as u64 * 8;
        self.samples.push(Sample {
            events: self.events_done,
            linux: self.linux_bytes,
            memdesc: words + desc,
            words,
            split_areas: m.memmap().split_areas(),
            traced_split_areas: self.traced_split,
            traced_two_level: area_words + self.traced_split * (AREA * 8) as u64 + desc,
            free_pages: m.nr_free_pages(),
        });
    }

    /// The geometry and occupancy of the descriptor caches (and `slab_desc`), from the
    /// machine's slab.
    pub fn descriptor_caches(&self) -> Vec<DescCache> {
        let mut v = Vec::new();
        let m = self.m;
        m.for_each_cache(|c| {
            if self.desc_names.contains(&c.name()) {
                let i = m.slab_info(c);
                v.push(DescCache {
                    name: c.name(),
                    object_bytes: c.object_size(),
                    stride: c.stride(),
                    objects_per_slab: c.objects_per_slab(),
                    slab_order: c.order(),
                    slabs: i.num_slabs,
                    active_objects: i.active_objs,
                    objects: i.num_objs,
                    bytes: i.num_slabs * i.pagesperslab as u64 * PAGE_SIZE as u64,
                });
            }
        });
        v
    }

    /// Slab pages of the simulated machine, (descriptor caches, everything else).
    pub(crate) fn slab_pages(&self) -> (u64, u64) {
        let (mut d, mut o) = (0, 0);
        let m = self.m;
        m.for_each_cache(|c| {
            let i = m.slab_info(c);
            let p = i.num_slabs * i.pagesperslab as u64;
            if self.desc_names.contains(&c.name()) {
                d += p;
            } else {
                o += p;
            }
        });
        (d, o)
    }
}

/// The first pfn and the order of the pages a page event names (`None` for other events).
pub(crate) fn event_pages(ev: &Event<'_>) -> Option<(u64, u32)> {
    match *ev {
        Event::PageAlloc { pfn: Some(pfn), order, .. } | Event::PageFree { pfn, order } => Some((pfn, order)),
        Event::PageFreeBatched { pfn }
        | Event::LruInsertion { pfn, .. }
        | Event::PagePoolHold { pfn, .. }
        | Event::PagePoolRelease { pfn, .. } => Some((pfn, 0)),
        Event::FilemapAdd(pc) | Event::FilemapDelete(pc) => Some((pc.pfn, pc.order)),
        _ => None,
    }
}
