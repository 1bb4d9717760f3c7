//! `memdesc replay [DIR] [--memmap flat|two-level] [--json] [--svg FILE]`: drives the
//! project's allocators with a real Linux kernel's allocation stream, captured by
//! `memdesc capture` (layout of `../shared/data/traces`: `start/`, `end/`, `events.txt.zst`).
//! Without DIR: the bundled sample `samples/small`.
//!
//! # The simulated machine
//! Same zones and size as the traced machine: one region per maximal run of present pfns of
//! the start snapshot's zones (holes inside a zone span are left out; if that makes too many
//! regions, the smallest gaps are kept as reserved ranges instead), booted with
//! [`memdesc_host::boot`] over a `MAP_NORESERVE` mapping (only touched memory costs host RAM).
//!
//! # Start state
//! The start snapshot's census ([`memdesc_linux::census_runs`]) hands every pfn over as part
//! of one run: free and not-yet-initialised pages stay free (deferred initialisation hands
//! those to the allocator on demand), anon/file groups become folios of their order on the
//! LRU, every other allocated group (slab, page table, reserved, other kernel memory) becomes
//! a raw block of its order. Linux's slab pages are raw *stand-ins*: the objects on them were
//! allocated before the trace and are not known, so they stay until Linux frees the page.
//!
//! # pfns: a pfn → pfn map
//! The simulated allocator chooses its own pfns; replay keeps a map from each traced pfn to the
//! allocation (entry) that covers it (every pfn of a block points to its entry, so a partial
//! free of a split block is found too). A traced free releases the pages it names; the
//! simulated block is freed when its last traced page is. Placement therefore differs from the
//! traced machine: the start state is packed by the simulated allocator, so with the two-level
//! memmap fewer areas are split than the real placement needs; the flat memmap's cost does not
//! depend on placement.
//!
//! # Two placements
//! Both are reported, labelled: *memdesc's own placement* is what the simulated machine's
//! two-level memmap really splits ([`Sample::split_areas`]; the bytes of a
//! `--memmap two-level` run use it). The *traced placement* is computed from the pfn map
//! itself, which holds every live traced allocation at the pfns Linux used: per 2 MiB area a
//! count of covered pfns, and an area is split unless nothing covers it, one folio of order
//! ≥ 9 covers all of it, or all of it is reserved ([`Sample::traced_split_areas`],
//! [`Sample::traced_two_level`]). At the start of the trace it equals `memdesc estimate`'s
//! split count on the start snapshot, except that areas mixing free and not-yet-initialised
//! pages count as uniform here (they are all free to the allocator).
//!
//! # Events
//! * `mm_page_alloc` / `mm_page_free`: raw blocks by order and migratetype. A block is
//!   *retyped* into an anon or file folio of the same order when `mm_lru_insertion` or
//!   `mm_filemap_add_to_page_cache` names its pfn (free the raw block, allocate the folio:
//!   the per-CPU list hands the same pages straight back).
//! * **Linux's own slab pages are not counted twice**: our slab allocates its own pages for
//!   the `kmalloc`/`kmem_cache_*` objects it replays, so a page allocation whose GFP flags carry
//!   SLUB's signature ([`linux_slab_page`]: `__GFP_NORETRY` with `__GFP_NOWARN` or
//!   `GFP_NOWAIT`, `__GFP_COMP`, not movable) is skipped, and so is its free; the end of the
//!   run checks that signature against the end snapshot's `KPF_SLAB` bits.
//! * `kmalloc`, `kfree`, `kmem_cache_alloc/free`: objects through the slab, matched by the
//!   kernel's hashed pointers; `kmem_cache_alloc` goes to a cache of that name (and object
//!   size) created on first use. Large kmalloc (> 8 KiB) is skipped: Linux takes its pages
//!   with `mm_page_alloc`, which is replayed.
//! * `mm_filemap_add/delete_from_page_cache`: per-file [`AddressSpaceRef`]s keyed by
//!   (dev, inode), at the event's index.
//! * `alloc_vmap_area` / `free_vmap_area_noflush`: an area of the same size less its guard
//!   page from one [`VmallocSpace`] (`vmalloc::<Unmappable>`, `vfree_area`), so its pages carry
//!   `VmallocUnmappable` words with [`VmallocDesc`] descriptors and are mapped by PTEs of a
//!   kernel address space. vmalloc takes its order-0 pages in bulk, which Linux does not trace
//!   as `mm_page_alloc`, but frees them one by one with `mm_page_free`: those frees are counted
//!   unmatched. A refused area counts one allocation failure, and its free is skipped with
//!   that reason.
//! * `page_pool_state_hold` of a pfn the replay does not know (page_pool also allocates in
//!   bulk) takes an order-0 block from one [`PagePool`] (a [`Netmem`] descriptor, `NetPool`
//!   words); the page's `mm_page_free` puts it back ([`pp_put_pfn`]: into the pool's ring of
//!   one block, or to the page allocator when the ring is full), and `page_pool_state_release`
//!   is skipped. Every traced pool shares the one simulated pool.
//!
//! Every line is accounted for: replayed, skipped with a reason, or a header/blank/lost marker.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use memdesc::cpu::Cpu;
use memdesc::desc::{CachedDescriptor, Folio, MappableDesc, Netmem, PtDesc, VmallocDesc, Z3foldDesc, Zspage};
use memdesc::folio::{FolioKind, FolioRef};

/// The reference a replay entry holds on `f` (kept raw in the entry, as a C caller keeps a
/// pfn), lent as a [`FolioRef`] that is not dropped.
///
/// # Safety
/// The entry holds one reference on `f` and keeps it.
unsafe fn lent(f: &Folio) -> std::mem::ManuallyDrop<FolioRef<'_>> {
    // SAFETY: the caller's promise; ManuallyDrop never gives the reference up.
    std::mem::ManuallyDrop::new(unsafe { FolioRef::from_raw(f) })
}
use memdesc::kmalloc::KMALLOC_MAX_CACHE_SIZE;
use memdesc::layout::MAX_REGIONS;
use memdesc::page_pool::{pp_put_pfn, PagePool, PoolParams};
use memdesc::pagecache::AddressSpaceRef;
use memdesc::pgtable::{MmKind, MmRef};
use memdesc::vmalloc::{Unmappable, VmArea, VmallocSpace};
use memdesc::{CacheArgs, CacheRef, Config, Gfp, MemmapLayout, MemoryLayout, Pfn, RegionSpec, PAGE_SIZE};
use memdesc_host::{SimMachine, SimPlatform};
use memdesc_linux::census::{census_runs, Census, CensusOptions, Kind, Run};
use memdesc_linux::trace::{Event, EventKind, Gfp as LinuxGfp, TraceReader, TraceStats};
use memdesc_linux::Snapshot;
use serde_json::{json, Value};

/// Which memmap the simulated machine uses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemmapArg {
    /// One word per 4 KiB page.
    #[default]
    Flat,
    /// One word per 2 MiB area, per-page words only where an area is split.
    TwoLevel,
}

/// Arguments of `memdesc replay`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReplayArgs {
    /// A trace directory (start/, end/, events.txt[.zst]); default: the bundled sample.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The simulated machine's memmap.
    #[arg(long, value_enum, default_value_t = MemmapArg::Flat)]
    pub memmap: MemmapArg,
    /// Print stable JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a line chart of metadata bytes over the trace (Linux vs memdesc) to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// The bundled sample trace, relative to the repository root.
pub const SAMPLE_TRACE: &str = "samples/small";

/// Where the bundled sample trace is (the lookup of [`crate::data_dirs`]).
pub fn sample_dir() -> Option<PathBuf> {
    crate::data_dirs::bundled(SAMPLE_TRACE, "start")
}

/// Whether a page allocation is one of SLUB's slab allocations, by its GFP flags: SLUB asks
/// for its preferred slab order with `__GFP_NOWARN | __GFP_NORETRY` (printed inside
/// `GFP_NOWAIT` where that applies) and always `__GFP_COMP`; slab pages are never movable.
/// Readahead also uses `__GFP_NORETRY`, but its pages are movable.
pub fn linux_slab_page(gfp: &LinuxGfp<'_>, migratetype: i32) -> bool {
    let mut noretry = false;
    let mut nowarn = false;
    let mut comp = false;
    for f in gfp.names() {
        match f {
            "__GFP_NORETRY" => noretry = true,
            "__GFP_NOWARN" | "GFP_NOWAIT" => nowarn = true,
            "__GFP_COMP" => comp = true,
            "__GFP_MOVABLE" | "__GFP_HIGHMEM" | "GFP_HIGHUSER_MOVABLE" | "GFP_HIGHUSER" => return false,
            _ => {}
        }
    }
    noretry && nowarn && comp && migratetype != 1
}

/// Whether a page allocation looks like a page-table page (`GFP_PGTABLE_USER`/`_KERNEL`:
/// `GFP_KERNEL[_ACCOUNT] | __GFP_ZERO`, order 0, unmovable); only used to label raw pages.
fn page_table_page(gfp: &LinuxGfp<'_>, order: u32, migratetype: i32) -> bool {
    order == 0
        && migratetype == 0
        && gfp.contains("__GFP_ZERO")
        && (gfp.0.starts_with("GFP_KERNEL_ACCOUNT") || gfp.0.starts_with("GFP_KERNEL|"))
}

fn sim_gfp(gfp: &LinuxGfp<'_>, migratetype: i32) -> Gfp {
    let mut g = match migratetype {
        1 => Gfp::MOVABLE,
        2 => Gfp::RECLAIMABLE,
        _ => Gfp::KERNEL,
    };
    for f in gfp.names() {
        match f {
            "__GFP_DMA32" | "GFP_DMA32" => g = g | Gfp::DMA32,
            "__GFP_DMA" | "GFP_DMA" => g = g | Gfp::DMA,
            _ => {}
        }
    }
    g
}

/// Identity-ish hasher for keys that are already well mixed (the kernel's hashed pointers) or
/// small (pfns, inode numbers): one multiply.
#[derive(Default, Clone, Copy)]
struct MixHasher(u64);
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
type Fast = BuildHasherDefault<MixHasher>;

/// What the simulated machine holds for one traced allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
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

struct Entry<'m> {
    head: u64,
    order: u32,
    /// Traced pages not yet freed.
    live: u32,
    /// From the start snapshot.
    pre: bool,
    what: What,
    sim: Pfn,
    folio: Option<&'m Folio>,
    /// (address space, index) while in the simulated page cache.
    cached: Option<(u32, u64)>,
}

struct Obj {
    ptr: NonNull<u8>,
    /// Index into `caches`; `u32::MAX` for kmalloc.
    cache: u32,
}

const KMALLOC: u32 = u32::MAX;

/// Linux's cache of xarray (radix tree) nodes. Most of them index the page cache, which the
/// replay rebuilds with its own `AddressSpace` trees, so they are skipped rather than counted
/// twice (the few nodes of other xarrays are left out with them).
const XA_NODE: &str = "radix_tree_node";

/// A sample of the metadata bytes.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sample {
    /// Events replayed so far.
    pub events: u64,
    /// Linux: 64 B per page.
    pub linux: u64,
    /// memdesc: words (memmap) + descriptor and slab-descriptor memory.
    pub memdesc: u64,
    /// Of that, the memmap.
    pub words: u64,
    /// Two-level areas split on the simulated machine (memdesc's own placement; 0 with the
    /// flat memmap).
    pub split_areas: u64,
    /// Two-level areas that would be split with the traced machine's placement (the pfns the
    /// trace names): an area is uniform when no traced allocation covers it, when one folio
    /// of order ≥ 9 covers all of it, or when all of it is reserved.
    pub traced_split_areas: u64,
    /// memdesc with a two-level memmap and the traced placement: one word per 2 MiB area of
    /// the traced pfn space, a 512-word table per traced split area, and the same descriptor
    /// slabs as `memdesc`.
    pub traced_two_level: u64,
}

/// One descriptor cache of the simulated machine at the end of the replay: its real geometry
/// and what it holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DescCache {
    /// Cache name.
    pub name: &'static str,
    /// `size_of` of the descriptor.
    pub object_bytes: usize,
    /// Distance between objects in a slab.
    pub stride: usize,
    /// Objects per slab (for `slab_desc`: besides the slab's own descriptor).
    pub objects_per_slab: u32,
    /// Slab order.
    pub slab_order: u32,
    /// Slabs.
    pub slabs: u64,
    /// Objects in use (handed out or in per-CPU sheaves).
    pub active_objects: u64,
    /// Object slots in all slabs.
    pub objects: u64,
    /// Bytes of the slabs: what `memdesc` charges for this cache.
    pub bytes: u64,
}

/// The replay engine over one booted machine.
pub struct Replayer<'m> {
    m: &'m SimMachine,
    cpu: Cpu<'m>,
    index: Vec<u32>,
    entries: Vec<Entry<'m>>,
    free_entries: Vec<u32>,
    objs: HashMap<u64, Obj, Fast>,
    large: HashMap<u64, (), Fast>,
    caches: Vec<CacheRef<'m, SimPlatform>>,
    cache_by_name: HashMap<String, u32, Fast>,
    spaces: Vec<AddressSpaceRef<'m, SimPlatform>>,
    space_of: HashMap<(u32, u32, u64), u32, Fast>,
    vmalloc: &'m VmallocSpace<'m, SimPlatform>,
    pool: &'m PagePool<'m, SimPlatform>,
    /// Traced vmap area start → the simulated area (`None`: the simulated machine refused it).
    vmaps: HashMap<u64, Option<VmArea<Unmappable>>, Fast>,
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
    start_free: Vec<u64>,
    /// Errors the simulated allocators returned for a replayed operation (must be 0).
    pub sim_errors: BTreeMap<String, u64>,
    /// Metadata samples.
    pub samples: Vec<Sample>,
    linux_bytes: u64,
    desc_names: Vec<&'static str>,
    events_done: u64,
    /// Per 2 MiB area of the traced pfn space: pfns covered by a live traced allocation.
    area_occ: Vec<u16>,
    /// Per area: split under the traced placement (as of the last refresh).
    area_split: Vec<bool>,
    /// Per area: changed since the last refresh.
    area_dirty: Vec<bool>,
    dirty: Vec<u32>,
    /// Areas split under the traced placement (as of the last refresh).
    traced_split: u64,
}

/// pfns per two-level area (2 MiB).
const AREA: usize = 512;

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

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// Aligned power-of-two blocks (order ≤ `max`) covering `[s, s + len)`.
fn blocks(s: u64, len: u64, max: u32) -> impl Iterator<Item = (u64, u32)> {
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
            entries: vec![Entry {
                head: 0,
                order: 0,
                live: 0,
                pre: false,
                what: What::Lost,
                sim: Pfn(0),
                folio: None,
                cached: None,
            }],
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

    fn sim_error(&mut self, what: &str, e: impl std::fmt::Display) {
        *self.sim_errors.entry(format!("{what}: {e}")).or_insert(0) += 1;
    }

    /// Points traced pfn `p` at entry `i` (0: none), keeping the per-area counts.
    fn set_slot(&mut self, p: usize, i: u32) {
        let old = std::mem::replace(&mut self.index[p], i);
        let a = p / AREA;
        match (old == 0, i == 0) {
            (true, false) => self.area_occ[a] += 1,
            (false, true) => self.area_occ[a] -= 1,
            _ => {}
        }
        self.mark(a);
    }

    fn mark(&mut self, a: usize) {
        if !self.area_dirty[a] {
            self.area_dirty[a] = true;
            self.dirty.push(a as u32);
        }
    }

    /// Whether area `a` needs a table under the traced placement.
    fn traced_area_split(&self, a: usize) -> bool {
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
    fn refresh_traced(&mut self) {
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

    fn entry_at(&self, pfn: u64) -> Option<u32> {
        match self.index.get(pfn as usize) {
            Some(&i) if i != 0 => Some(i),
            _ => None,
        }
    }

    /// Records a new entry for the traced block `[head, head + 2^order)`.
    fn insert(&mut self, head: u64, order: u32, pre: bool, what: What, sim: Pfn, folio: Option<&'m Folio>) {
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
    fn release(&mut self, e: Entry<'m>) {
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
                if let Err(err) = unsafe { pp_put_pfn(self.m, &self.cpu, e.sim) } {
                    self.sim_error("page_pool put", err);
                }
            }
            What::LinuxSlab | What::Lost => {}
        }
    }

    /// Drops traced pages `[a, b)` of entry `i` from the map; frees the simulated block when
    /// none is left.
    fn drop_pages(&mut self, i: u32, a: u64, b: u64) {
        for p in a..b {
            self.set_slot(p as usize, 0);
        }
        let e = &mut self.entries[i as usize];
        e.live -= (b - a) as u32;
        if e.live == 0 {
            let e = std::mem::replace(
                &mut self.entries[i as usize],
                Entry {
                    head: 0,
                    order: 0,
                    live: 0,
                    pre: false,
                    what: What::Lost,
                    sim: Pfn(0),
                    folio: None,
                    cached: None,
                },
            );
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

    fn skip(&mut self, kind: EventKind, reason: &'static str) {
        self.skipped_by_kind[kind as usize] += 1;
        *self.skipped.entry(reason).or_insert(0) += 1;
    }

    fn done(&mut self, kind: EventKind) {
        self.replayed[kind as usize] += 1;
    }

    /// Frees traced pages `[pfn, pfn + 2^order)`.
    fn page_free(&mut self, kind: EventKind, pfn: u64, order: u32) {
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

    fn page_alloc(&mut self, pfn: u64, order: u32, migratetype: i32, gfp: &LinuxGfp<'_>) {
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
    fn folio_at(&mut self, pfn: u64, fk: FolioKind) -> Result<u32, &'static str> {
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

    fn space(&mut self, dev: (u32, u32), ino: u64) -> Option<u32> {
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

    fn cache(&mut self, name: &str, size: usize) -> Option<u32> {
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

    fn obj_alloc(&mut self, kind: EventKind, ptr: u64, r: Result<NonNull<u8>, memdesc::AllocError>, cache: u32) {
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

    fn obj_release(&mut self, o: Obj) {
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

    fn obj_free(&mut self, kind: EventKind, ptr: u64) {
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
    fn vmap_alloc(&mut self, addr: u64, size: u64) {
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

    fn vmap_release(&mut self, area: Option<VmArea<Unmappable>>) {
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
    fn slab_pages(&self) -> (u64, u64) {
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

/// Builds the simulated machine's layout from the start snapshot: one region per run of
/// present pfns (holes left out), merged across the smallest gaps (kept reserved) when there
/// would be too many regions.
pub fn layout_from_runs(runs: &[Run], memmap: MemmapLayout) -> Result<MemoryLayout> {
    let mut regions: Vec<(u64, u64)> = Vec::new();
    for r in runs.iter().filter(|r| r.kind != Kind::Hole) {
        match regions.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.start + r.len,
            _ => regions.push((r.start.max(1), r.start + r.len)),
        }
    }
    regions.retain(|r| r.0 < r.1);
    let mut gaps = Vec::new();
    // Zone boundaries split regions again; leave room for that.
    while regions.len() > MAX_REGIONS - 8 {
        let i = (0..regions.len() - 1).min_by_key(|&i| regions[i + 1].0 - regions[i].1).expect("two regions");
        gaps.push((regions[i].1, regions[i + 1].0));
        regions[i].1 = regions[i + 1].1;
        regions.remove(i + 1);
    }
    let mut l = MemoryLayout::new();
    for (s, e) in regions {
        l.add_region(RegionSpec { start: Pfn(s), end: Pfn(e), node: 0, mapped: true, layout: memmap })
            .map_err(|e| anyhow::anyhow!("simulated layout: {e:?}"))?;
    }
    for (s, e) in gaps {
        l.reserve(Pfn(s), Pfn(e)).map_err(|e| anyhow::anyhow!("simulated layout: {e:?}"))?;
    }
    Ok(l)
}

/// Everything `memdesc replay` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The trace directory.
    pub source: String,
    /// Memmap layout.
    pub memmap: MemmapArg,
    /// Line and event counts of the reader.
    pub stats: TraceStats,
    /// Replayed per event type.
    pub replayed: [u64; EventKind::COUNT],
    /// Skipped per event type.
    pub skipped_by_kind: [u64; EventKind::COUNT],
    /// Skip reasons (unknown events included).
    pub skipped: BTreeMap<String, u64>,
    /// Failed simulated allocations.
    pub alloc_failures: u64,
    /// Frees of pfns no allocation covers.
    pub unmatched_frees: u64,
    /// Frees of start-snapshot allocations.
    pub pre_trace_frees: u64,
    /// Frees of part of a block.
    pub partial_frees: u64,
    /// See [`Replayer::stale_start_pages`].
    pub stale_start_pages: u64,
    /// See [`Replayer::lost_free_pages`].
    pub lost_free_pages: u64,
    /// See [`Replayer::lost_object_frees`].
    pub lost_object_frees: u64,
    /// Errors of the simulated allocators (must be empty).
    pub sim_errors: BTreeMap<String, u64>,
    /// Seconds: boot, start state, events (decompression and parsing included).
    pub boot_seconds: f64,
    /// Seconds building the start state.
    pub start_seconds: f64,
    /// Seconds replaying the events (wall clock).
    pub replay_seconds: f64,
    /// CPU seconds of the replaying thread over the same span (excludes time spent waiting
    /// for a CPU on a loaded host).
    pub replay_cpu_seconds: f64,
    /// Of that, the host kernel's time (mostly faulting in simulated memory the allocators
    /// touch for the first time: a cost of the simulation, not of memdesc).
    pub replay_host_sys_seconds: f64,
    /// Pages of the simulated machine (regions).
    pub machine_pages: u64,
    /// Metadata samples.
    pub samples: Vec<Sample>,
    /// End-state rows: (kind, replay pages, end snapshot pages, explanation).
    pub end_rows: Vec<(String, u64, Option<u64>, &'static str)>,
    /// Free blocks by order: simulated (after draining per-CPU lists) and end buddyinfo.
    pub free_blocks: (Vec<u64>, Option<Vec<u64>>),
    /// Live Linux slab pages at the end (skipped by signature) and how many of them the end
    /// snapshot flags SLAB.
    pub slab_signature: (u64, u64),
    /// Raw (non-slab) trace pages live at the end that the end snapshot flags SLAB.
    pub slab_missed: u64,
    /// The largest per-pfn disagreements (replay kind, end snapshot kind, pages): a pfn the
    /// replay holds as one kind where the end snapshot's own flags say another.
    pub confusion: Vec<((&'static str, &'static str), u64)>,
    /// The simulated machine's largest slab caches at the end (name, pages, active objects,
    /// objects).
    pub slab_caches: Vec<(String, u64, u64, u64)>,
    /// The descriptor caches at the end, with their real geometry.
    pub descriptor_caches: Vec<DescCache>,
    /// 2 MiB areas of the traced pfn space (for the traced placement's two-level cost).
    pub traced_areas: u64,
}

impl Report {
    /// Events replayed, all types.
    pub fn replayed_total(&self) -> u64 {
        self.replayed.iter().sum()
    }
    /// Events skipped, unknown events included.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
    /// Lines accounted for: replayed + skipped + headers + blank + lost markers.
    pub fn accounted_lines(&self) -> u64 {
        self.replayed_total() + self.skipped_total() + self.stats.headers + self.stats.blank + self.stats.lost_markers
    }
    /// Events per second over the replay, decompression and parsing included.
    pub fn events_per_sec(&self) -> f64 {
        (self.stats.events + self.stats.unknown) as f64 / self.replay_seconds.max(1e-9)
    }
    /// Events per CPU second of the replaying thread.
    pub fn events_per_cpu_sec(&self) -> f64 {
        (self.stats.events + self.stats.unknown) as f64 / self.replay_cpu_seconds.max(1e-9)
    }
}

/// The first pfn and the order of the pages a page event names (`None` for other events).
fn event_pages(ev: &Event<'_>) -> Option<(u64, u32)> {
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

fn open_trace(dir: &Path) -> Result<TraceReader<Box<dyn std::io::Read>>> {
    for name in ["events.txt.zst", "events.txt"] {
        let p = dir.join(name);
        if p.exists() {
            let r = TraceReader::open(&p).with_context(|| format!("opening {}", p.display()))?;
            return Ok(r);
        }
    }
    bail!("{}: no events.txt.zst or events.txt", dir.display())
}

fn expected_events(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("README")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("events:")).and_then(|v| v.trim().parse().ok())
}

/// Replays the trace in `dir`. `progress`: draw a progress bar on stderr.
pub fn replay(dir: &Path, memmap: MemmapArg, progress: bool) -> Result<Report> {
    let start = Snapshot::read_dir(&dir.join("start")).with_context(|| format!("reading {}/start", dir.display()))?;
    let end = Snapshot::read_dir(&dir.join("end")).ok();
    let mut runs = Vec::new();
    let census: Census = census_runs(&start.kpage, &start.zoneinfo, CensusOptions::default(), &mut |r| runs.push(r));
    let layout_kind = match memmap {
        MemmapArg::Flat => MemmapLayout::Flat,
        MemmapArg::TwoLevel => MemmapLayout::TwoLevel,
    };
    let layout = layout_from_runs(&runs, layout_kind)?;
    let nr_cpus = start.cpus.unwrap_or(2).clamp(1, 64) as usize;
    let config = Config { nr_cpus, debug_checks: false, ..Config::default() };
    let t = Instant::now();
    let m = memdesc_host::boot(&layout, config).map_err(|e| anyhow::anyhow!("booting the simulated machine: {e}"))?;
    let boot_seconds = t.elapsed().as_secs_f64();
    let pfns = start.kpage.len().max(end.as_ref().map_or(0, |e| e.kpage.len()));
    let linux_bytes = census.total * 64;
    let cpu = m.cpus().claim(0).context("claiming CPU 0 to set up the kernel allocators")?;
    let caches = m.mm_caches(&cpu).map_err(|e| anyhow::anyhow!("mm caches of the replay: {e}"))?;
    let kmm = caches.mm_create(&cpu, MmKind::Kernel).map_err(|e| anyhow::anyhow!("kernel mm of the replay: {e}"))?;
    let kernel = Kernel::new(&m, &cpu, &kmm)?;
    drop(cpu);
    let mut r = Replayer::new(&m, &kernel, pfns, linux_bytes)?;
    let t = Instant::now();
    r.load_start(&runs);
    drop(runs);
    let start_seconds = t.elapsed().as_secs_f64();
    r.sample();

    let mut reader = open_trace(dir)?;
    let bar = if progress {
        let b = match expected_events(dir) {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template("replay {bar:40} {pos}/{len} events {per_sec} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        Some(b)
    } else {
        None
    };
    const SAMPLE_EVERY: u64 = 4096;
    let t = Instant::now();
    let cpu0 = crate::measure::thread_cpu_time();
    let sys0 = crate::measure::thread_sys_time().unwrap_or_default();
    let mut n = 0u64;
    while let Some(rec) = reader.next_record()? {
        r.event(&rec.event);
        n += 1;
        if n.is_multiple_of(SAMPLE_EVERY) {
            r.sample();
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
    }
    let replay_seconds = t.elapsed().as_secs_f64();
    let replay_cpu_seconds = (crate::measure::thread_cpu_time() - cpu0).as_secs_f64();
    let replay_host_sys_seconds =
        crate::measure::thread_sys_time().map_or(0.0, |s| s.saturating_sub(sys0).as_secs_f64());
    r.sample();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let stats = reader.stats().clone();
    let mut skipped: BTreeMap<String, u64> = r.skipped.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    for (name, c) in &stats.unknown_by_name {
        *skipped.entry(format!("unknown event {name}")).or_insert(0) += c;
    }

    // End state.
    m.drain_all();
    let mut pages = [0u64; Kind::COUNT];
    let mut linux_slab_live = (0u64, 0u64);
    let mut slab_missed = 0u64;
    let end_flags = |pfn: u64| end.as_ref().map(|e| e.kpage.flags(pfn));
    let mut seen = vec![false; r.entries.len()];
    for (pfn, &i) in r.index.iter().enumerate() {
        if i == 0 || seen[i as usize] {
            continue;
        }
        seen[i as usize] = true;
        let e = &r.entries[i as usize];
        let live = e.live as u64;
        match e.what {
            What::Raw(k) => {
                pages[k as usize] += live;
                if !e.pre && end_flags(pfn as u64).is_some_and(|f| f.has(memdesc_linux::kpf::KPF_SLAB)) {
                    slab_missed += live;
                }
            }
            What::Folio(FolioKind::Anon) => pages[Kind::Anon as usize] += live,
            What::Folio(FolioKind::File) => pages[Kind::File as usize] += live,
            What::LinuxSlab => {
                linux_slab_live.0 += live;
                let (h, o) = (e.head, e.order);
                for p in h..h + (1u64 << o) {
                    if end_flags(p).is_some_and(|f| f.has(memdesc_linux::kpf::KPF_SLAB)) {
                        linux_slab_live.1 += 1;
                    }
                }
            }
            What::NetPool => pages[Kind::Other as usize] += live,
            What::Lost => {}
        }
    }
    // Per pfn: what the replay holds there against what the end snapshot's flags say.
    let mut confusion: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    if let Some(e) = &end {
        let n = r.index.len().min(e.kpage.len() as usize);
        for pfn in 0..n {
            let theirs = memdesc_linux::census::base_kind(e.kpage.flags(pfn as u64));
            let i = r.index[pfn];
            let ours = if i == 0 {
                "free"
            } else {
                match r.entries[i as usize].what {
                    What::Raw(k) => k.name(),
                    What::Folio(FolioKind::Anon) => "anon",
                    What::Folio(FolioKind::File) => "file",
                    What::LinuxSlab => "slab",
                    What::NetPool => "other",
                    What::Lost => "lost",
                }
            };
            let theirs = theirs.name();
            let same = ours == theirs || (ours == "free" && theirs == "other" && e.kpage.flags(pfn as u64).is_empty());
            if !same {
                *confusion.entry((ours, theirs)).or_insert(0) += 1;
            }
        }
    }
    let mut confusion: Vec<((&'static str, &'static str), u64)> = confusion.into_iter().collect();
    confusion.sort_by_key(|c| std::cmp::Reverse(c.1));
    confusion.truncate(10);
    let vmalloc_pages: u64 = r.vmalloc.stats().pages;
    let (desc_slab, our_slab) = r.slab_pages();
    let mut slab_caches: Vec<(String, u64, u64, u64)> = Vec::new();
    m.for_each_cache(|c| {
        let i = m.slab_info(c);
        slab_caches.push((c.name().to_string(), i.num_slabs * i.pagesperslab as u64, i.active_objs, i.num_objs));
    });
    slab_caches.sort_by_key(|c| std::cmp::Reverse(c.1));
    slab_caches.truncate(12);
    let end_census = end.as_ref().map(|e| Census::from_snapshot(e, CensusOptions::default()));
    let endk = |k: Kind| end_census.as_ref().map(|c| c.pages[k]);
    let free = m.nr_free_pages();
    let end_rows: Vec<(String, u64, Option<u64>, &'static str)> = vec![
        ("free".into(), free, endk(Kind::Free).zip(endk(Kind::Uninit)).map(|(a, b)| a + b),
         "Linux: free + not yet initialised (deferred init; free in the replay). The replay's own memmap (memdesc_metadata) comes out of free memory; memory Linux allocated outside the traced window (between the start snapshot and the first event, or between the last event and the end snapshot: no page event names it) is free here (see the disagreements below)"),
        ("anon".into(), pages[Kind::Anon as usize], endk(Kind::Anon),
         "folios typed by mm_lru_insertion (flag a) or anon in the start snapshot; pages allocated outside the traced window are free in the replay"),
        ("file".into(), pages[Kind::File as usize], endk(Kind::File),
         "folios typed by mm_filemap_add_to_page_cache or mm_lru_insertion, or file in the start snapshot; pages allocated outside the traced window are free in the replay"),
        ("slab".into(), our_slab + pages[Kind::Slab as usize], endk(Kind::Slab),
         "our slab's pages for the replayed objects plus Linux's start-state slab pages still live; objects allocated before the trace are unknown, so their frees free nothing and partial slabs pack differently"),
        ("page_table".into(), pages[Kind::PageTable as usize], endk(Kind::PageTable),
         "start-state page tables plus trace pages whose GFP flags look like page tables (GFP_KERNEL[_ACCOUNT]|__GFP_ZERO, order 0); the replay's own kernel page tables (mapping its vmalloc areas) are in no row"),
        ("reserved".into(), pages[Kind::Reserved as usize] + m.reserved_pages().saturating_sub(m.boot_pages()), endk(Kind::Reserved),
         "start-state reserved pages, plus the gaps between regions the simulated layout keeps reserved"),
        ("other".into(), pages[Kind::Other as usize] + pages[Kind::ZeroPage as usize] + pages[Kind::Offline as usize] + pages[Kind::HwPoison as usize] + vmalloc_pages,
         endk(Kind::Other).map(|o| o + endk(Kind::ZeroPage).unwrap_or(0) + endk(Kind::Offline).unwrap_or(0) + endk(Kind::HwPoison).unwrap_or(0)),
         "raw kernel pages, page_pool pages (netmem) and the pages of live vmalloc areas (VmallocDesc); page-table pages the GFP heuristic missed land here"),
        ("memdesc_metadata".into(), desc_slab + m.boot_pages(), None,
         "memdesc's memmap (boot allocator) and descriptor caches; Linux's struct pages sit in memory it reports as reserved or outside the zones"),
    ];
    let mut sim_blocks = vec![0u64; m.config().max_order as usize + 1];
    for z in m.zones() {
        for (o, per_mt) in m.free_blocks(z).iter().enumerate().take(sim_blocks.len()) {
            sim_blocks[o] += per_mt.iter().sum::<u64>();
        }
    }
    let end_blocks = end.as_ref().and_then(|e| e.buddyinfo.as_ref()).map(|b| b.blocks_by_order());
    Ok(Report {
        source: crate::data_dirs::display(dir),
        memmap,
        stats,
        replayed: r.replayed,
        skipped_by_kind: r.skipped_by_kind,
        skipped,
        alloc_failures: r.alloc_failures,
        unmatched_frees: r.unmatched_frees,
        pre_trace_frees: r.pre_trace_frees,
        partial_frees: r.partial_frees,
        stale_start_pages: r.stale_start_pages,
        lost_free_pages: r.lost_free_pages,
        lost_object_frees: r.lost_object_frees,
        sim_errors: r.sim_errors.clone(),
        boot_seconds,
        start_seconds,
        replay_seconds,
        replay_cpu_seconds,
        replay_host_sys_seconds,
        machine_pages: layout.present_pages(),
        samples: r.samples.clone(),
        end_rows,
        free_blocks: (sim_blocks, end_blocks),
        slab_signature: linux_slab_live,
        slab_missed,
        confusion,
        slab_caches,
        descriptor_caches: r.descriptor_caches(),
        traced_areas: r.area_occ.len() as u64,
    })
}

/// The stable JSON of a report. Besides the counts: `bytes` (`peak_linux`, `peak_memdesc`,
/// `memdesc_includes`, `memmap`, `two_level_placement`: `"memdesc"` when `peak_memdesc` is a
/// two-level figure, in memdesc's own placement, else null;
/// `peak_memdesc_two_level_traced_placement`, `samples`), `split_areas_peak`
/// (`memdesc_placement`: null with the flat memmap; `traced_placement`), `two_level` (both
/// placements with what each is), `descriptor_caches` (real geometry and occupancy).
pub fn to_json(r: &Report) -> Value {
    let by_type: serde_json::Map<String, Value> = EventKind::ALL
        .iter()
        .map(|k| {
            let i = *k as usize;
            (k.tracepoint().to_string(), json!({ "replayed": r.replayed[i], "skipped": r.skipped_by_kind[i] }))
        })
        .collect();
    let peak_linux = r.samples.iter().map(|s| s.linux).max().unwrap_or(0);
    let peak_memdesc = r.samples.iter().map(|s| s.memdesc).max().unwrap_or(0);
    let two = r.memmap == MemmapArg::TwoLevel;
    let own_split_peak = r.samples.iter().map(|s| s.split_areas).max().unwrap_or(0);
    let traced_split_peak = r.samples.iter().map(|s| s.traced_split_areas).max().unwrap_or(0);
    let traced_peak = r.samples.iter().map(|s| s.traced_two_level).max().unwrap_or(0);
    let end_pages: serde_json::Map<String, Value> = r
        .end_rows
        .iter()
        .map(|(k, ours, theirs, why)| (k.clone(), json!({ "replay": ours, "end_snapshot": theirs, "why": why })))
        .collect();
    json!({
        "source": r.source,
        "memmap": match r.memmap { MemmapArg::Flat => "flat", MemmapArg::TwoLevel => "two_level" },
        "machine_pages": r.machine_pages,
        "lines": {
            "total": r.stats.lines,
            "events": r.stats.events,
            "unknown": r.stats.unknown,
            "headers": r.stats.headers,
            "blank": r.stats.blank,
            "lost_markers": r.stats.lost_markers,
            "lost_events": r.stats.lost_events,
            "accounted": r.accounted_lines(),
        },
        "events": {
            "total": r.stats.events + r.stats.unknown,
            "replayed": r.replayed_total(),
            "by_type": by_type,
        },
        "skipped": { "total": r.skipped_total(), "by_reason": r.skipped },
        "events_per_sec": r.events_per_sec(),
        "events_per_cpu_sec": r.events_per_cpu_sec(),
        "seconds": { "boot": r.boot_seconds, "start_state": r.start_seconds, "replay": r.replay_seconds, "replay_cpu": r.replay_cpu_seconds, "replay_host_sys": r.replay_host_sys_seconds },
        "alloc_failures": r.alloc_failures,
        "unmatched_frees": r.unmatched_frees,
        "pre_trace_frees": r.pre_trace_frees,
        "partial_frees": r.partial_frees,
        "stale_start_pages": r.stale_start_pages,
        "lost_free_pages": r.lost_free_pages,
        "lost_object_frees": r.lost_object_frees,
        "sim_errors": r.sim_errors,
        "bytes": {
            "peak_linux": peak_linux,
            "peak_memdesc": peak_memdesc,
            "memdesc_includes": MEMDESC_INCLUDES,
            "memmap": if two { "two_level" } else { "flat" },
            "two_level_placement": if two { Some(MEMDESC_PLACEMENT) } else { None },
            "peak_memdesc_two_level_traced_placement": traced_peak,
            "samples": r.samples,
        },
        "split_areas_peak": {
            "memdesc_placement": if two { Some(own_split_peak) } else { None },
            "traced_placement": traced_split_peak,
        },
        "two_level": {
            "areas": r.traced_areas,
            "placement_of_peak_memdesc": if two { Some(MEMDESC_PLACEMENT) } else { None },
            "memdesc_placement": {
                "what": "the pfns memdesc's own allocator chose on the simulated machine (packs allocations into few 2 MiB areas)",
                "split_areas_peak": if two { Some(own_split_peak) } else { None },
                "peak_bytes": if two { Some(peak_memdesc) } else { None },
            },
            "traced_placement": {
                "what": TRACED_PLACEMENT,
                "split_areas_start": r.samples.first().map_or(0, |s| s.traced_split_areas),
                "split_areas_peak": traced_split_peak,
                "split_areas_end": r.samples.last().map_or(0, |s| s.traced_split_areas),
                "peak_bytes": traced_peak,
            },
        },
        "descriptor_caches": r.descriptor_caches,
        "end": {
            "pages": end_pages,
            "free_blocks_by_order": { "replay": r.free_blocks.0, "end_buddyinfo": r.free_blocks.1 },
            "slab_caches": r.slab_caches.iter().map(|(n, p, a, o)| json!({ "name": n, "pages": p, "active_objs": a, "num_objs": o })).collect::<Vec<_>>(),
            "disagreements": r.confusion.iter().map(|((a, b), n)| json!({ "replay": a, "end_snapshot": b, "pages": n })).collect::<Vec<_>>(),
            "linux_slab_signature": { "live_pages": r.slab_signature.0, "end_snapshot_slab": r.slab_signature.1, "raw_pages_end_snapshot_slab": r.slab_missed },
        },
    })
}

/// What replay's memdesc figure includes.
pub const MEMDESC_INCLUDES: &str =
    "the simulated machine's memmap (words; for the two-level memmap its area words and \
     the tables of split areas) plus every slab page of the descriptor caches (folio, ptdesc, vmalloc, netmem, zspage, \
     z3fold, mappable) and of slab_desc (the slab descriptors of every slab): real object stride, partial slabs and \
     slack included";

/// The name of memdesc's own placement in the JSON.
pub const MEMDESC_PLACEMENT: &str = "memdesc";

/// What the traced placement is.
pub const TRACED_PLACEMENT: &str = "the pfns the traced Linux kernel used (start snapshot and every traced page \
     event): an area is split unless no live allocation covers it, one folio of order >= 9 covers all of it, or all \
     of it is reserved; the cost is one word per 2 MiB area of the traced pfn space, a 512-word table per split area \
     and the same descriptor slabs as the replay";

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// The human-readable table.
pub fn to_table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "memdesc replay of {} ({} memmap, {:.1} GiB simulated machine)",
        r.source,
        match r.memmap {
            MemmapArg::Flat => "flat",
            MemmapArg::TwoLevel => "two-level",
        },
        r.machine_pages as f64 * PAGE_SIZE as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        o,
        "lines {} = {} replayed + {} skipped + {} header/blank/lost ({})",
        r.stats.lines,
        r.replayed_total(),
        r.skipped_total(),
        r.stats.headers + r.stats.blank + r.stats.lost_markers,
        if r.accounted_lines() == r.stats.lines { "all accounted for" } else { "MISMATCH" }
    );
    let _ = writeln!(
        o,
        "time: boot {:.2} s, start state {:.2} s, events {:.2} s, CPU {:.2} s of which host kernel {:.2} s ({:.2} M events/s; {:.2} M per CPU second; decompression and parsing included)\n",
        r.boot_seconds,
        r.start_seconds,
        r.replay_seconds,
        r.replay_cpu_seconds,
        r.replay_host_sys_seconds,
        r.events_per_sec() / 1e6,
        r.events_per_cpu_sec() / 1e6
    );
    let _ = writeln!(o, "{:<36} {:>10} {:>10}", "event", "replayed", "skipped");
    for k in EventKind::ALL {
        let i = k as usize;
        if r.replayed[i] + r.skipped_by_kind[i] > 0 {
            let _ = writeln!(o, "{:<36} {:>10} {:>10}", k.tracepoint(), r.replayed[i], r.skipped_by_kind[i]);
        }
    }
    let _ = writeln!(o, "\nskipped, by reason:");
    for (why, n) in &r.skipped {
        let _ = writeln!(o, "  {n:>9}  {why}");
    }
    let _ = writeln!(
        o,
        "\nallocation failures {}   unmatched frees {}   frees of pre-trace pages {} (expected)   partial frees {}",
        r.alloc_failures, r.unmatched_frees, r.pre_trace_frees, r.partial_frees
    );
    let _ = writeln!(
        o,
        "pages allocated that the start snapshot showed allocated (freed before the trace began, or on a per-CPU list) {}; lost frees: pages {}, objects/areas {}",
        r.stale_start_pages, r.lost_free_pages, r.lost_object_frees
    );
    for (e, n) in &r.sim_errors {
        let _ = writeln!(o, "  simulated allocator error x{n}: {e}");
    }
    let _ = writeln!(o, "\nend state, pages by kind       replay   end snapshot       diff");
    for (k, ours, theirs, why) in &r.end_rows {
        match theirs {
            Some(t) => {
                let _ = writeln!(o, "  {k:<22} {ours:>12} {t:>14} {:>+10}", *ours as i64 - *t as i64);
            }
            None => {
                let _ = writeln!(o, "  {k:<22} {ours:>12} {:>14}", "-");
            }
        }
        let _ = writeln!(o, "      {why}");
    }
    let _ = writeln!(
        o,
        "  Linux slab pages skipped by GFP signature, live at the end: {} ({} flagged SLAB in the end snapshot); raw trace pages flagged SLAB there: {}",
        r.slab_signature.0, r.slab_signature.1, r.slab_missed
    );
    let _ = writeln!(o, "  largest per-pfn disagreements (replay kind -> end snapshot kind: pages):");
    for ((a, b), n) in &r.confusion {
        let _ = writeln!(o, "    {a:>10} -> {b:<10} {n:>9}");
    }
    let _ = writeln!(o, "\nfree blocks by order (replay after draining per-CPU lists / end buddyinfo):");
    for (k, n) in r.free_blocks.0.iter().enumerate() {
        let theirs = r.free_blocks.1.as_ref().and_then(|v| v.get(k)).map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(o, "  order {k:>2}: {n:>9} {theirs:>9}");
    }
    let peak_linux = r.samples.iter().map(|s| s.linux).max().unwrap_or(0);
    let peak = r.samples.iter().map(|s| s.memdesc).max().unwrap_or(0);
    let first = r.samples.first().map_or(0, |s| s.memdesc);
    let last = r.samples.last().map_or(0, |s| s.memdesc);
    let _ = writeln!(
        o,
        "\nmetadata: Linux {:.1} MiB (64 B/page); memdesc start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB (words + descriptor slabs): {:.1}x less",
        mib(peak_linux),
        mib(first),
        mib(peak),
        mib(last),
        peak_linux as f64 / peak.max(1) as f64
    );
    let _ = writeln!(o, "  memdesc includes {MEMDESC_INCLUDES}");
    let peak_split = |f: fn(&Sample) -> u64| r.samples.iter().map(f).max().unwrap_or(0);
    if r.memmap == MemmapArg::TwoLevel {
        let _ = writeln!(
            o,
            "two-level memmap, MEMDESC'S OWN PLACEMENT (the simulated allocator's pfns; it packs allocations into few 2 MiB areas, unlike Linux): peak {} split areas of {}; the figures above use it",
            peak_split(|s| s.split_areas),
            r.traced_areas
        );
    }
    let traced_peak = peak_split(|s| s.traced_two_level);
    let _ = writeln!(
        o,
        "two-level memmap, TRACED PLACEMENT (the pfns Linux used): split areas start {}, peak {}, end {} of {}; memdesc peak {:.1} MiB ({:.3}x Linux)",
        r.samples.first().map_or(0, |s| s.traced_split_areas),
        peak_split(|s| s.traced_split_areas),
        r.samples.last().map_or(0, |s| s.traced_split_areas),
        r.traced_areas,
        mib(traced_peak),
        traced_peak as f64 / peak_linux.max(1) as f64
    );
    let _ = writeln!(o, "\ndescriptor caches at the end (real geometry of the simulated machine's slab):");
    let _ = writeln!(
        o,
        "  {:<14} {:>7} {:>7} {:>9} {:>6} {:>8} {:>10} {:>10} {:>10}",
        "cache", "object", "stride", "per slab", "order", "slabs", "in use", "slots", "MiB"
    );
    for c in &r.descriptor_caches {
        let _ = writeln!(
            o,
            "  {:<14} {:>7} {:>7} {:>9} {:>6} {:>8} {:>10} {:>10} {:>10.2}",
            c.name,
            c.object_bytes,
            c.stride,
            c.objects_per_slab,
            c.slab_order,
            c.slabs,
            c.active_objects,
            c.objects,
            mib(c.bytes)
        );
    }
    o
}

/// Writes the line chart of metadata over the replay: memdesc's metadata as a fraction of
/// Linux's (whose 64 B per page is constant, 1 on this scale) on the left axis, the same in
/// MiB on the right axis; the legend sits above the lines. A lower panel shows how each
/// memdesc line changed since the start of the trace, in KiB, where the upper one is too coarse.
pub fn write_svg(r: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("{e:?}");
    let xmax = r.samples.last().map_or(1, |s| s.events).max(1) as f64;
    let linux = r.samples.iter().map(|s| s.linux).max().unwrap_or(1).max(1);
    let ratio = |b: u64| b as f64 / linux as f64;
    type Pick = fn(&Sample) -> u64;
    let two = r.memmap == MemmapArg::TwoLevel;
    let own: &str = if two {
        "memdesc, two-level memmap, memdesc's own placement (words + descriptor slabs)"
    } else {
        "memdesc, flat memmap (words + descriptor slabs)"
    };
    // Drawn in this order, the wide line first so that lines on top of it stay visible.
    let lines: [(&str, Pick, RGBColor, u32); 3] = [
        ("memdesc, two-level memmap, traced (Linux) placement", |s| s.traced_two_level, RGBColor(240, 160, 60), 5),
        (own, |s| s.memdesc, RGBColor(40, 110, 190), 2),
        ("memdesc memmap words only", |s| s.words, RGBColor(80, 150, 60), 2),
    ];
    let top =
        r.samples.iter().flat_map(|s| lines.iter().map(move |l| ratio((l.1)(s)))).fold(0.0f64, f64::max).max(1e-3)
            * 1.6;
    let root = SVGBackend::new(path, (1000, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(540);
    let name = Path::new(&r.source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!(
                "replay of {name} ({} events, {} memmap): memdesc's page metadata vs Linux's {:.0} MiB",
                r.stats.events + r.stats.unknown,
                if two { "two-level" } else { "flat" },
                mib(linux)
            ),
            ("sans-serif", 19),
        )
        .margin(16)
        .x_label_area_size(42)
        .y_label_area_size(80)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(|e| err(&e))?
        .set_secondary_coord(0f64..xmax, 0f64..top * mib(linux));
    chart
        .configure_mesh()
        .x_desc("events replayed")
        .y_desc("fraction of Linux's memmap (Linux = 1, off scale)")
        .x_label_formatter(&|v| format!("{:.0}", v))
        .y_label_formatter(&|v| format!("{:.3}", v))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("MiB")
        .y_label_formatter(&|v| if top * mib(linux) >= 20.0 { format!("{:.0}", v) } else { format!("{:.1}", v) })
        .draw()
        .map_err(|e| err(&e))?;
    for (label, f, c, w) in lines {
        chart
            .draw_series(LineSeries::new(r.samples.iter().map(|s| (s.events as f64, ratio(f(s)))), c.stroke_width(w)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(w)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;

    // Lower panel: change since the first sample, KiB.
    let kib = |s: &Sample, f: Pick| (f(s) as f64 - r.samples.first().map_or(0, f) as f64) / 1024.0;
    let (mut dlo, mut dhi) = (0.0f64, 0.0f64);
    for s in &r.samples {
        for l in &lines {
            let d = kib(s, l.1);
            dlo = dlo.min(d);
            dhi = dhi.max(d);
        }
    }
    let pad = ((dhi - dlo) * 0.15).max(1.0);
    let mut delta = ChartBuilder::on(&lower)
        .caption("change since the start of the trace", ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(42)
        .y_label_area_size(80)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (dlo - pad)..(dhi + pad))
        .map_err(|e| err(&e))?;
    delta
        .configure_mesh()
        .x_desc("events replayed")
        .y_desc("KiB")
        .x_label_formatter(&|v| format!("{:.0}", v))
        .y_label_formatter(&|v| format!("{:.0}", v))
        .draw()
        .map_err(|e| err(&e))?;
    for (_, f, c, w) in lines {
        delta
            .draw_series(LineSeries::new(r.samples.iter().map(|s| (s.events as f64, kib(s, f))), c.stroke_width(w)))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Runs `memdesc replay`.
pub fn run(args: &ReplayArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => sample_dir().with_context(|| {
            format!(
                "the bundled sample (samples/small) was not found; give a trace directory, or {}",
                crate::data_dirs::lookup_hint()
            )
        })?,
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let r = replay(&dir, args.memmap, progress)?;
    // The report first: a chart that cannot be written must not throw it away.
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
    } else {
        print!("{}", to_table(&r));
    }
    if let Some(p) = &args.svg {
        crate::data_dirs::write_chart(p, |p| write_svg(&r, p))?;
        if !args.json {
            println!("chart written to {}", p.display());
        }
    }
    Ok(())
}

/// Reads every record of `dir`'s trace without replaying it: (events, wall seconds, CPU
/// seconds). `memdesc bench` reports it next to the replay, to show how much of the replay's
/// time is decompression and parsing.
pub fn parse_only(dir: &Path) -> Result<(u64, f64, f64)> {
    let mut reader = open_trace(dir)?;
    let t = Instant::now();
    let cpu0 = crate::measure::thread_cpu_time();
    let mut n = 0u64;
    while let Some(rec) = reader.next_record()? {
        n += std::hint::black_box(&rec.event).kind() as u64 & 1;
    }
    std::hint::black_box(n);
    let s = reader.stats();
    Ok((s.events + s.unknown, t.elapsed().as_secs_f64(), (crate::measure::thread_cpu_time() - cpu0).as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slub_signature_on_real_gfp_strings() {
        let slab = [
            ("__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC", 2),
            ("GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 2),
            ("GFP_NOWAIT|__GFP_NORETRY|__GFP_COMP|__GFP_THISNODE", 0),
            ("GFP_NOFS|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 0),
        ];
        for (g, mt) in slab {
            assert!(linux_slab_page(&LinuxGfp(g), mt), "{g}");
        }
        let not_slab = [
            // Readahead: __GFP_NORETRY too, but movable.
            ("GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL", 1),
            ("GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 1),
            ("GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP", 1),
            ("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP", 0),
            ("GFP_NOWAIT", 0),
            ("none", 0),
        ];
        for (g, mt) in not_slab {
            assert!(!linux_slab_page(&LinuxGfp(g), mt), "{g}");
        }
        assert!(page_table_page(&LinuxGfp("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"), 0, 0));
        assert!(!page_table_page(&LinuxGfp("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"), 1, 0));
        assert_eq!(sim_gfp(&LinuxGfp("GFP_KERNEL|__GFP_DMA32"), 0), Gfp::DMA32);
        assert_eq!(sim_gfp(&LinuxGfp("GFP_HIGHUSER_MOVABLE"), 1), Gfp::MOVABLE);
    }

    #[test]
    fn blocks_are_aligned_and_cover_the_run() {
        let v: Vec<_> = blocks(3, 13, 10).collect();
        assert_eq!(v, vec![(3, 0), (4, 2), (8, 3)]);
        let v: Vec<_> = blocks(0, 5000, 10).collect();
        assert_eq!(v.iter().map(|&(_, k)| 1u64 << k).sum::<u64>(), 5000);
        assert!(v.iter().all(|&(p, k)| p % (1 << k) == 0 && k <= 10));
        assert_eq!(blocks(7, 0, 10).count(), 0);
    }

    #[test]
    fn layout_leaves_holes_out_and_merges_when_too_many() {
        let run = |start, len, kind| Run { start, len, kind };
        let runs = [
            run(1, 100, Kind::Reserved),
            run(101, 4000, Kind::Free),
            run(4101, 1000, Kind::Hole),
            run(5101, 3000, Kind::Anon),
        ];
        let l = layout_from_runs(&runs, MemmapLayout::Flat).unwrap();
        assert_eq!(l.present_pages(), 100 + 4000 + 3000);
        assert!(l.reserved().is_empty());
        // 100 regions separated by holes of growing size: merged across the smallest gaps.
        let mut many = Vec::new();
        for i in 0..100u64 {
            let s = i * 10_000;
            many.push(run(s + 1, 1000, Kind::Free));
            many.push(run(s + 1001, 1 + i, Kind::Hole));
        }
        let l = layout_from_runs(&many, MemmapLayout::Flat).unwrap();
        assert!(!l.reserved().is_empty());
        let free: Vec<_> = many.iter().filter(|r| r.kind == Kind::Free).collect();
        for (s, e) in l.reserved() {
            assert!(free.iter().all(|r| r.start + r.len <= s.0 || e.0 <= r.start), "only gaps are reserved");
        }
        let avail: u64 = l.present_pages() - l.reserved().iter().map(|(s, e)| e.0 - s.0).sum::<u64>();
        assert_eq!(avail, 100 * 1000);
    }

    /// The traced placement's split areas follow the traced pfns: a page in an area splits it,
    /// a whole-area raw block too, a whole-area folio does not, and frees make areas uniform.
    #[test]
    fn traced_placement_split_areas() {
        let m = memdesc_host::boot(
            &MemoryLayout::pc(1, MemmapLayout::Flat),
            Config { debug_checks: true, ..Config::default() },
        )
        .unwrap();
        let cpu = m.cpus().claim(0).unwrap();
        let caches = m.mm_caches(&cpu).unwrap();
        let kmm = caches.mm_create(&cpu, MmKind::Kernel).unwrap();
        let kernel = Kernel::new(&m, &cpu, &kmm).unwrap();
        drop(cpu);
        let mut r = Replayer::new(&m, &kernel, 1 << 18, 64 << 18).unwrap();
        let last = |r: &mut Replayer<'_>| {
            r.sample();
            *r.samples.last().unwrap()
        };
        assert_eq!(last(&mut r).traced_split_areas, 0);
        let alloc = |pfn, order| Event::PageAlloc {
            pfn: Some(pfn),
            order,
            migratetype: 1,
            gfp: LinuxGfp("GFP_HIGHUSER_MOVABLE|__GFP_COMP"),
        };
        // One page in area 8 (pfns 0x1000..0x1200).
        r.event(&alloc(0x1000, 0));
        r.event(&alloc(0x1001, 0));
        assert_eq!(last(&mut r).traced_split_areas, 1);
        // A raw order-9 block covering area 9: split (only a folio or reserved memory is uniform).
        r.event(&alloc(0x1200, 9));
        assert_eq!(last(&mut r).traced_split_areas, 2);
        // Typed as an anon folio: one 2 MiB folio, the area word describes it.
        use memdesc_linux::trace::LruFlags;
        r.event(&Event::LruInsertion { pfn: 0x1200, lru: 0, flags: LruFlags { anon: true, ..LruFlags::default() } });
        let s = last(&mut r);
        assert_eq!(s.traced_split_areas, 1);
        // Cost: a word per area of the traced pfn space, one table, the descriptor slabs.
        assert_eq!(s.traced_two_level, (1u64 << 18) / 512 * 8 + 4096 + (s.memdesc - s.words));
        // Freeing part of the folio splits its area; freeing the rest of everything unsplits.
        r.event(&Event::PageFree { pfn: 0x1200, order: 0 });
        assert_eq!(last(&mut r).traced_split_areas, 2);
        r.event(&Event::PageFree { pfn: 0x1000, order: 0 });
        r.event(&Event::PageFree { pfn: 0x1001, order: 0 });
        assert_eq!(last(&mut r).traced_split_areas, 1);
        for p in 0x1201..0x1400 {
            r.event(&Event::PageFree { pfn: p, order: 0 });
        }
        assert_eq!(last(&mut r).traced_split_areas, 0);
        assert!(r.sim_errors.is_empty(), "{:?}", r.sim_errors);
        assert_eq!(r.samples.iter().map(|s| s.traced_split_areas).max(), Some(2));
        // The flat machine has no two-level areas of its own.
        assert!(r.samples.iter().all(|s| s.split_areas == 0));
        let caches = r.descriptor_caches();
        let folio = caches.iter().find(|c| c.name == "folio").expect("folio cache");
        assert!(folio.stride >= folio.object_bytes && folio.objects_per_slab > 0);
        assert_eq!(folio.bytes, folio.slabs * ((PAGE_SIZE as u64) << folio.slab_order));
    }

    /// The engine on a small machine with hand-made events: retyping, partial frees, the slab
    /// signature, objects, the page cache (byte offsets), page_pool holds, and the accounting.
    #[test]
    fn engine_on_synthetic_events() {
        use memdesc_linux::trace::{LruFlags, PageCacheEvent};
        let m = memdesc_host::boot(
            &MemoryLayout::pc(1, MemmapLayout::Flat),
            Config { debug_checks: true, ..Config::default() },
        )
        .unwrap();
        let free0 = m.nr_free_pages();
        let cpu = m.cpus().claim(0).unwrap();
        let caches = m.mm_caches(&cpu).unwrap();
        let kmm = caches.mm_create(&cpu, MmKind::Kernel).unwrap();
        let kernel = Kernel::new(&m, &cpu, &kmm).unwrap();
        drop(cpu);
        let mut r = Replayer::new(&m, &kernel, 1 << 18, 64 << 18).unwrap();
        let alloc =
            |pfn, order, mt, gfp| Event::PageAlloc { pfn: Some(pfn), order, migratetype: mt, gfp: LinuxGfp(gfp) };
        // A file page: allocated raw, added to the page cache at byte offset 8192 (index 2),
        // put on the LRU, deleted, freed.
        r.event(&alloc(0x1000, 0, 1, "GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_COMP"));
        let pc = PageCacheEvent { dev_major: 254, dev_minor: 0, ino: 7, pfn: 0x1000, offset: 8192, order: 0 };
        r.event(&Event::FilemapAdd(pc));
        let i = r.entry_at(0x1000).unwrap();
        assert_eq!(r.entries[i as usize].what, What::Folio(FolioKind::File));
        assert_eq!(r.entries[i as usize].cached, Some((0, 2)));
        assert_eq!(
            r.spaces[0].lookup(&r.cpu, 2).map(|f| f.flags.pfn()),
            r.entries[i as usize].folio.map(|f| f.flags.pfn())
        );
        r.event(&Event::LruInsertion { pfn: 0x1000, lru: 2, flags: LruFlags::default() });
        r.event(&Event::FilemapDelete(pc));
        r.event(&Event::PageFree { pfn: 0x1000, order: 0 });
        assert!(r.entry_at(0x1000).is_none());
        // An anon order-2 folio typed by the LRU, freed whole.
        r.event(&alloc(0x2000, 2, 1, "GFP_HIGHUSER_MOVABLE|__GFP_COMP"));
        r.event(&Event::LruInsertion { pfn: 0x2000, lru: 0, flags: LruFlags { anon: true, ..LruFlags::default() } });
        assert_eq!(r.entries[r.entry_at(0x2003).unwrap() as usize].what, What::Folio(FolioKind::Anon));
        r.event(&Event::PageFree { pfn: 0x2000, order: 2 });
        // A raw order-1 block freed page by page (split): the block goes back after the second.
        r.event(&alloc(0x3000, 1, 0, "GFP_KERNEL"));
        r.event(&Event::PageFree { pfn: 0x3001, order: 0 });
        assert!(r.entry_at(0x3000).is_some());
        r.event(&Event::PageFree { pfn: 0x3000, order: 0 });
        assert!(r.entry_at(0x3000).is_none());
        assert_eq!(r.partial_frees, 2);
        // A Linux slab page: skipped both ways.
        r.event(&alloc(0x4000, 1, 2, "GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"));
        r.event(&Event::PageFree { pfn: 0x4000, order: 1 });
        // Objects: kmalloc/kfree, a named cache, a pre-trace free, kfree(NULL), large kmalloc.
        r.event(&Event::Kmalloc {
            call_site: "f",
            ptr: 0xabc,
            bytes_req: 50,
            bytes_alloc: 64,
            gfp: LinuxGfp("GFP_KERNEL"),
            node: -1,
        });
        r.event(&Event::KmemCacheAlloc {
            call_site: "f",
            ptr: 0xdef,
            name: Some("dentry"),
            bytes_req: 192,
            bytes_alloc: 192,
            gfp: LinuxGfp("GFP_KERNEL"),
            node: -1,
        });
        assert_eq!(r.caches.len(), 1);
        r.event(&Event::Kfree { call_site: "f", ptr: 0xabc });
        r.event(&Event::KmemCacheFree { call_site: "f", ptr: 0xdef, name: Some("dentry") });
        r.event(&Event::Kfree { call_site: "f", ptr: 0x999 });
        r.event(&Event::Kfree { call_site: "f", ptr: 0 });
        r.event(&Event::Kmalloc {
            call_site: "f",
            ptr: 0x777,
            bytes_req: 20000,
            bytes_alloc: 32768,
            gfp: LinuxGfp("GFP_KERNEL"),
            node: -1,
        });
        r.event(&Event::Kfree { call_site: "f", ptr: 0x777 });
        // A page_pool page allocated in bulk (no page event), then freed.
        r.event(&Event::PagePoolHold { pool: 1, netmem: 2, pfn: 0x5000, hold: 1 });
        let i = r.entry_at(0x5000).unwrap();
        assert_eq!(r.entries[i as usize].what, What::NetPool);
        let np = r.entries[i as usize].sim;
        assert!(matches!(m.memmap().load(m.platform(), np).unwrap().word.kind(), memdesc::word::PageKind::NetPool(_)));
        assert_eq!(r.pool.stats().live, 1);
        r.event(&Event::PagePoolRelease { pool: 1, netmem: 2, pfn: 0x5000, release: 1 });
        r.event(&Event::PageFree { pfn: 0x5000, order: 0 });
        // A free nobody allocated; a vmap area.
        r.event(&Event::PageFree { pfn: 0x6000, order: 0 });
        r.event(&Event::AllocVmapArea {
            addr: 0x1000_0000,
            size: 5 * 4096,
            align: 1,
            vstart: 0,
            vend: u64::MAX,
            failed: false,
        });
        assert_eq!(r.pool.stats().live, 0, "the page's free puts the netmem back");
        let a = r.vmaps[&0x1000_0000].as_ref().unwrap();
        assert_eq!(a.nr_pages(), 4, "less the guard page");
        let vp = r.vmalloc.pfn_at(a, 3).unwrap();
        assert_eq!(m.memmap().load(m.platform(), vp).unwrap().word.tag(), Some(memdesc::word::Tag::VmallocUnmappable));
        assert_eq!(r.vmalloc.vmalloc_to_pfn(a.addr() + 3 * PAGE_SIZE), Ok(vp), "mapped by a kernel PTE");
        assert_eq!(r.vmalloc.stats(), memdesc::vmalloc::VmallocStats { areas: 1, pages: 4 });
        r.event(&Event::FreeVmapArea { va_start: 0x1000_0000, nr_lazy: 0, nr_lazy_max: 0 });
        assert_eq!(r.vmalloc.stats().areas, 0);
        r.event(&Event::FreeVmapArea { va_start: 0x1000_0000, nr_lazy: 0, nr_lazy_max: 0 });
        assert_eq!(r.skipped.get("vmap area free: allocated before the trace"), Some(&1));

        assert_eq!(r.alloc_failures, 0);
        assert_eq!(r.unmatched_frees, 1);
        assert!(r.sim_errors.is_empty(), "{:?}", r.sim_errors);
        let replayed: u64 = r.replayed.iter().sum();
        let skipped: u64 = r.skipped.values().sum();
        assert_eq!(replayed + skipped, r.events_done);
        assert_eq!(r.skipped_by_kind.iter().sum::<u64>(), skipped);
        for why in [
            "kfree(NULL)",
            "object free: allocated before the trace",
            "page alloc: Linux slab page (our slab allocates its own)",
        ] {
            assert_eq!(r.skipped.get(why), Some(&1), "{why}: {:?}", r.skipped);
        }
        // Every page is back: only slab pages of the caches and the page cache's own
        // structures remain outside the free lists.
        r.sample();
        assert!(r.samples[0].memdesc >= m.memmap().bytes());
        let (desc, other) = r.slab_pages();
        m.drain_all();
        assert!(m.nr_free_pages() + desc + other + 16 >= free0, "pages leaked: {} of {free0}", m.nr_free_pages());
    }
}
