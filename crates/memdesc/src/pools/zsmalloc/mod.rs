//! zsmalloc: a pool of small objects (compressed pages, typically) packed into **zspages** of
//! 1–8 order-0 pages, with opaque handles, mapping of objects that straddle two pages,
//! compaction, and migration of single component pages for memory compaction.
//!
//! # Layout
//!
//! - **Size classes.** An object of `size` bytes takes a slot of `size + 8` bytes (an 8-byte
//!   header) rounded up to the pool's class step, at least 32. For every slot size the pool
//!   picks the zspage length, up to its most pages per zspage, that wastes the fewest bytes
//!   (fewer pages on a tie), and merges consecutive slot sizes whose zspages hold the same
//!   number of objects in the same number of pages into the larger one (they would waste
//!   nothing by sharing it). The defaults — step 8 bytes, up to 8 pages per zspage — are what
//!   the density bench (`memdesc bench --only zsmalloc`) measured best; the issue's 1–4 pages
//!   leave up to 1/(objects per zspage) of every zspage unused for objects just above a
//!   breakpoint (`ZsPool::with_config` still builds such pools; see `docs/ARCHITECTURE.md`).
//!   A class whose zspage holds one object (slots above 2 KiB that pack no better in longer
//!   zspages) is **huge**: one page, no in-object header (the header lives in the
//!   descriptor), so objects of up to a whole page — incompressible pages stored as-is — fit.
//! - **Words.** Every component page's word is `Tag::Zsmalloc` pointing to the one
//!   [`Zspage`] descriptor (no head/tail pages); the descriptor names the pool, so a pfn
//!   scanner reaches the pool from the word alone ([`zs_migrate_page`]).
//! - **Objects** are numbered within their zspage; object `i` starts at byte `i × slot` of the
//!   zspage's concatenated pages. Its header says *allocated, size, handle index*; a free
//!   object's header links the zspage's free list. An object may live in a zspage of a larger
//!   class than its size's (compaction puts it there); its zspage's class is what counts.
//! - **Handles** are indices into a handle table (plus a generation, so a stale or doubly
//!   freed handle is refused precisely); a table entry holds the object's location (pfn of
//!   the zspage's first page, object index). Compaction and migration rewrite entries, never
//!   handles. The table is two-level: 4 KiB chunks of entries from kmalloc, found through a
//!   directory inside the pool state.
//!
//! # Compaction
//!
//! [`ZsPool::compact`] first works class by class: while the free slots of a class's other
//! partial zspages can take every object of its least used one, it moves them into the
//! fullest ones and frees the emptied zspage — afterwards a class has the fewest zspages its
//! objects fit in. Then, smallest class first, it empties each class's last sparse zspage into
//! the free slots of larger classes when they have room for all its objects (a slot holds any
//! object up to its size; the free slots are pool pages already, so pool pages only go down).
//! It reports the objects moved and the pages freed.
//!
//! # Locking and mapping
//!
//! One spin lock per pool guards classes, zspage lists, free lists, headers and the handle
//! table. [`ZsPool::map_read`]/[`ZsPool::map_write`] take it briefly to mark the handle mapped
//! and count the mapping in its zspage (`Zspage::mapped`), then give access without the lock:
//! a `PageAccess` window on the page when the object lies in one page, or a kmalloc'd copy
//! when it straddles two (written back when a write mapping is dropped, before the count
//! drops). Compaction and migration run under the lock and never move a zspage whose count is
//! non-zero, so a mapping's bytes stay where they are; freeing a mapped handle is refused.
//!
//! Zspage references: from a class list while the lock is held; across changes to the pool
//! state (allocation, free, compaction, migration) under an RCU read section, as a
//! [`DescPtr`] decoded from a word or a handle's entry (descriptors are type-stable, and the
//! lock keeps them the pool's); briefly under the lock through `pool_desc_held` (the
//! pool-owned descriptors of `memmap/desc.rs`, items P1–P4). Header and object bytes go
//! through `PageAccess` windows (`pool_window`, item P2).
//!
//! # What this module touches
//!
//! Its pool state, handle chunks and copy buffers (kmalloc memory), its zspage descriptors
//! (the `zspage` descriptor cache), the contents of its component pages, and their words.

mod compact;
mod map;
mod migrate;
mod verify;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{pool_desc_fresh, pool_desc_held, pool_desc_unlink, pool_window, DescPtr, Zspage};
use crate::gfp::Gfp;
use crate::list::List;
use crate::page_access::PageAccess;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::pools::zs_handle::{HandleFault, HandleTable, E_LOST, E_MAPPED, IDX_SHIFT, PFN_SHIFT};
use crate::pools::{PoolHost, Pools};
use crate::slab::KObj;
use crate::sync::{Ordering, SpinLock};
use crate::word::{PageKind, Word};

pub use crate::pools::zs_handle::{Handle, HandleId, ZS_MAX_HANDLES};
pub use map::{ZsRead, ZsWrite};
pub(crate) use migrate::page_free;
#[cfg(feature = "z3fold")]
pub(crate) use migrate::take_replacement;
pub use migrate::zs_migrate_page;
#[cfg(feature = "health")]
pub(crate) use migrate::zs_migrate_page_to;
#[cfg(feature = "health")]
pub(crate) use migrate::zs_poison_page;

/// Most pages in a zspage (the descriptor has room for this many pfns).
pub const ZS_MAX_PAGES: usize = 8;
/// Pages per zspage a pool uses at most unless configured otherwise: chosen by measurement
/// (see `docs/ARCHITECTURE.md`).
pub const DEFAULT_MAX_PAGES: usize = 8;
/// Bytes of the in-object header (allocated bit, size, handle index).
pub const ZS_HEADER: usize = 8;
/// Smallest slot.
pub const ZS_MIN_SLOT: usize = 32;
/// Largest object.
pub const ZS_MAX_ALLOC: usize = PAGE_SIZE;
/// The default class step, chosen by measurement (see `docs/ARCHITECTURE.md`).
pub const DEFAULT_CLASS_STEP: usize = 8;
/// Smallest class step a pool accepts.
pub const MIN_CLASS_STEP: usize = 8;
/// Most slot sizes (step 8 up to a page).
const MAX_SLOTS: usize = PAGE_SIZE / MIN_CLASS_STEP + 1;
/// Most size classes after merging, for every step and zspage length a pool accepts (at most
/// 178, at step 8 with 8-page zspages: `tests::every_configuration_fits_max_classes`). The
/// class table and its lists are sized by it, which keeps the pool state in one 64 KiB
/// kmalloc object.
const MAX_CLASSES: usize = 256;
const NO_OBJ: u32 = u32::MAX;

const IDX_MASK: u64 = 0x3FF;
const _: () = assert!(ZS_MAX_PAGES * PAGE_SIZE / ZS_MIN_SLOT <= IDX_MASK as usize + 1);

// Object header: bit 0 allocated, bits 1..13 size - 1, bits 13..64 handle index. A free
// object's header holds the next free object index in bits 32..64.
const H_ALLOC: u64 = 1;

/// Why a zsmalloc operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZsError {
    /// Size 0 or above [`ZS_MAX_ALLOC`].
    InvalidSize(usize),
    /// The class step is not a multiple of 8 between 8 and 256.
    InvalidStep(usize),
    /// The zspage length is not in 1..=[`ZS_MAX_PAGES`].
    InvalidMaxPages(usize),
    /// The handle was never issued by this pool.
    BadHandle(HandleId),
    /// The handle's object was already freed.
    DoubleFree(HandleId),
    /// The handle's object was freed and its table slot reused since.
    StaleHandle(HandleId),
    /// The object is mapped: unmap it first.
    Mapped(HandleId),
    /// The object is already mapped (one mapping per object at a time).
    AlreadyMapped(HandleId),
    /// The handle table is full ([`ZS_MAX_HANDLES`]).
    TooManyHandles,
    /// The page allocator, slab or kmalloc ran out.
    NoMemory(AllocError),
    /// A page without a direct mapping was handed out (zspages need one).
    NoDirectMap(Pfn),
    /// The object's bytes were on a page a hardware memory error retired: its contents are
    /// gone (it can still be freed).
    Lost(HandleId),
}

impl core::fmt::Display for ZsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ZsError::InvalidSize(s) => write!(f, "object size {s} is not in 1..={ZS_MAX_ALLOC}"),
            ZsError::InvalidStep(s) => write!(f, "class step {s} is not a multiple of 8 in 8..=256"),
            ZsError::InvalidMaxPages(n) => write!(f, "zspage length {n} is not in 1..={ZS_MAX_PAGES}"),
            ZsError::BadHandle(h) => write!(f, "handle {:#x} was never issued by this pool", h.0),
            ZsError::DoubleFree(h) => write!(f, "double free of handle {:#x}", h.0),
            ZsError::StaleHandle(h) => write!(f, "handle {:#x} was freed and its slot reused", h.0),
            ZsError::Mapped(h) => write!(f, "handle {:#x} is mapped", h.0),
            ZsError::AlreadyMapped(h) => write!(f, "handle {:#x} is already mapped", h.0),
            ZsError::TooManyHandles => write!(f, "handle table full"),
            ZsError::NoMemory(e) => write!(f, "{e}"),
            ZsError::NoDirectMap(p) => write!(f, "pfn {p} has no direct mapping"),
            ZsError::Lost(h) => write!(f, "handle {:#x}: its object was lost to a memory error", h.raw()),
        }
    }
}

impl core::error::Error for ZsError {}

impl From<AllocError> for ZsError {
    fn from(e: AllocError) -> Self {
        ZsError::NoMemory(e)
    }
}

/// An invariant [`ZsPool::verify`] found broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZsCorruption {
    /// Index of the class.
    pub class: usize,
    /// First pfn of the zspage (0 for class-wide counters).
    pub pfn: Pfn,
    /// What is wrong.
    pub what: &'static str,
}

/// Why a component page could not be migrated. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZsMigrateError {
    /// The pfn is in no memory region.
    OutOfRange(Pfn),
    /// The page is not (any more) a zsmalloc component page.
    NotZsmalloc(Pfn),
    /// An object of its zspage is mapped right now; try again later.
    Busy(Pfn),
    /// No page to migrate to.
    NoMemory(AllocError),
    /// The target page of a migration is not a raw order-0 allocation.
    BadTarget(Pfn),
}

impl core::fmt::Display for ZsMigrateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ZsMigrateError::OutOfRange(p) => write!(f, "pfn {p} is not in any memory region"),
            ZsMigrateError::NotZsmalloc(p) => write!(f, "pfn {p} is not a zsmalloc page"),
            ZsMigrateError::Busy(p) => write!(f, "pfn {p} belongs to a zspage with mapped objects"),
            ZsMigrateError::NoMemory(e) => write!(f, "{e}"),
            ZsMigrateError::BadTarget(p) => write!(f, "target pfn {p} is not a raw order-0 allocation"),
        }
    }
}

impl core::error::Error for ZsMigrateError {}

/// One size class.
#[derive(Clone, Copy)]
struct Class {
    /// Slot size in bytes (header included unless huge).
    slot: u32,
    /// Pages per zspage.
    pages: u32,
    /// Objects per zspage.
    objs: u32,
    zspages: u64,
    objects: u64,
    bytes: u64,
}

impl Class {
    const EMPTY: Class = Class { slot: 0, pages: 0, objs: 0, zspages: 0, objects: 0, bytes: 0 };
    fn huge(&self) -> bool {
        self.objs == 1
    }
    fn data_off(&self) -> usize {
        if self.huge() {
            0
        } else {
            ZS_HEADER
        }
    }
}

/// The zspages of one class (pool item P3 of `desc.rs`: a zspage is on `partial` while it has
/// a free object, on `full` otherwise).
struct ClassLists {
    partial: List<Zspage>,
    full: List<Zspage>,
}

impl ClassLists {
    const EMPTY: ClassLists = ClassLists { partial: List::new(), full: List::new() };
}

/// What the lock protects.
struct Inner<'m> {
    step: usize,
    max_pages: usize,
    nr_classes: usize,
    /// Slot size / step → class index.
    size_index: [u16; MAX_SLOTS],
    classes: [Class; MAX_CLASSES],
    lists: [ClassLists; MAX_CLASSES],
    handles: HandleTable<'m>,
    live_handles: u64,
    mapped: u64,
    /// A page of the pool was poisoned: rebuilt headers carry upper-bound sizes since, so
    /// class byte counters are upper bounds too (moves and frees use the header's size).
    poisoned: bool,
}

/// The pool state, in kmalloc memory; zspage descriptors point to it.
pub(crate) struct PoolState<'m> {
    lock: SpinLock<Inner<'m>>,
}

/// Pool figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZsStats {
    /// Live objects.
    pub objects: u64,
    /// Bytes of live objects (the sizes asked for).
    pub object_bytes: u64,
    /// Zspages.
    pub zspages: u64,
    /// Component pages.
    pub pages: u64,
    /// Size classes after merging.
    pub classes: u64,
    /// Bytes of bookkeeping outside the pages: zspage descriptors, handle-table chunks and
    /// the pool state.
    pub metadata_bytes: u64,
}

/// What a compaction run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZsCompactStats {
    /// Objects moved to other zspages.
    pub objects_moved: u64,
    /// Pages returned to the page allocator (from emptied zspages).
    pub pages_freed: u64,
}

/// A geometry of one class, for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZsClassInfo {
    /// Slot size in bytes.
    pub slot: u32,
    /// Pages per zspage.
    pub pages: u32,
    /// Objects per zspage.
    pub objs: u32,
    /// Live objects.
    pub objects: u64,
    /// Zspages.
    pub zspages: u64,
    /// Bytes of live objects (the sizes asked for).
    pub bytes: u64,
}

/// A zsmalloc pool of one machine.
///
/// Give it back with [`ZsPool::destroy`]; a pool that is merely dropped keeps its pages (as a
/// kernel that never calls `zs_destroy_pool` would).
///
/// ```
/// use memdesc::{zsmalloc::ZsPool, PhysMem, Platform};
/// fn demo<P: Platform>(mem: &PhysMem<P>) {
///     let cpu = mem.cpus().claim(0).unwrap();
///     let pool = ZsPool::new(mem, &cpu).unwrap();
///     let h = pool.malloc(&cpu, 1000).unwrap();
///     pool.map_write(&cpu, &h).unwrap().copy_from_slice(&[7; 1000]);
///     assert_eq!(pool.map_read(&cpu, &h).unwrap()[999], 7);
///     pool.free(&cpu, h).unwrap(); // consumes the handle: it cannot be used again
///     pool.destroy(&cpu);
/// }
/// ```
///
/// (A raw value rebuilt with [`Handle::from_raw`] after the free is refused: the handle table
/// keeps a generation. `crates/memdesc-host/tests/zsmalloc.rs` runs all of this on a machine.)
pub struct ZsPool<'m, P: Platform> {
    mem: Pools<'m, P>,
    /// Reached only through its spin lock; freed by `destroy`.
    state: KObj<'m, PoolState<'m>>,
}

/// A pool's machine and state, borrowed: what the byte helpers and migration work on, for the
/// owning [`ZsPool`] or for a pool reached from a page word under RCU (migration).
#[derive(Clone, Copy)]
struct PoolRef<'a, 'm, P: Platform> {
    mem: Pools<'m, P>,
    state: &'a PoolState<'m>,
}

/// Where an object is, resolved under the lock.
#[derive(Clone, Copy)]
struct Loc {
    zs: DescPtr<Zspage>,
    idx: u32,
    class: usize,
    size: usize,
}

impl Inner<'_> {
    fn class_of_size(&self, size: usize) -> usize {
        let slot = (size + ZS_HEADER).max(ZS_MIN_SLOT).next_multiple_of(self.step).min(PAGE_SIZE);
        self.size_index[slot / self.step] as usize
    }
}

/// Builds the class table for `step`: returns (classes, size index, count).
fn build_classes(inner: &mut Inner<'_>) {
    let step = inner.step;
    let mut n = 0usize;
    let mut slot = PAGE_SIZE;
    while slot >= ZS_MIN_SLOT.next_multiple_of(step) {
        let (mut best_p, mut best_waste) = (1u32, usize::MAX);
        for p in 1..=inner.max_pages {
            let waste = (p * PAGE_SIZE) % slot;
            // Compare waste per byte without floats: waste/p*PAGE against best.
            if best_waste == usize::MAX || waste * (best_p as usize) < best_waste * p {
                best_p = p as u32;
                best_waste = waste;
            }
        }
        let mut objs = (best_p as usize * PAGE_SIZE / slot) as u32;
        if objs == 1 {
            best_p = 1;
            objs = 1;
        }
        let merge = n > 0 && inner.classes[n - 1].pages == best_p && inner.classes[n - 1].objs == objs;
        if !merge {
            // Never reached for an accepted step and zspage length (MAX_CLASSES' test).
            assert!(n < MAX_CLASSES, "more size classes than MAX_CLASSES");
            inner.classes[n] = Class { slot: slot as u32, pages: best_p, objs, ..Class::EMPTY };
            n += 1;
        }
        inner.size_index[slot / step] = (n - 1) as u16;
        slot -= step;
    }
    // Slots below the minimum use the smallest class.
    let smallest = inner.size_index[ZS_MIN_SLOT.div_ceil(step)];
    for s in 0..ZS_MIN_SLOT.div_ceil(step) {
        inner.size_index[s] = smallest;
    }
    inner.nr_classes = n;
}

impl<'m, P: Platform> ZsPool<'m, P> {
    /// Creates a pool with the default class step and zspage length.
    pub fn new(mem: &'m impl PoolHost<P>, cpu: &Cpu<'_>) -> Result<Self, ZsError> {
        Self::with_config(mem, cpu, DEFAULT_CLASS_STEP, DEFAULT_MAX_PAGES)
    }

    /// Creates a pool whose size classes are `step` bytes apart (a multiple of 8, 8..=256).
    pub fn with_step(mem: &'m impl PoolHost<P>, cpu: &Cpu<'_>, step: usize) -> Result<Self, ZsError> {
        Self::with_config(mem, cpu, step, DEFAULT_MAX_PAGES)
    }

    /// Creates a pool with class step `step` whose zspages have at most `max_pages` pages
    /// (1..=[`ZS_MAX_PAGES`]).
    pub fn with_config(
        mem: &'m impl PoolHost<P>,
        cpu: &Cpu<'_>,
        step: usize,
        max_pages: usize,
    ) -> Result<Self, ZsError> {
        let mem = mem.pools();
        if !(MIN_CLASS_STEP..=256).contains(&step) || !step.is_multiple_of(8) {
            return Err(ZsError::InvalidStep(step));
        }
        if !(1..=ZS_MAX_PAGES).contains(&max_pages) {
            return Err(ZsError::InvalidMaxPages(max_pages));
        }
        let mut inner = Inner {
            step,
            max_pages,
            nr_classes: 0,
            size_index: [0; MAX_SLOTS],
            classes: [Class::EMPTY; MAX_CLASSES],
            lists: [const { ClassLists::EMPTY }; MAX_CLASSES],
            handles: HandleTable::new(0),
            live_handles: 0,
            mapped: 0,
            poisoned: false,
        };
        build_classes(&mut inner);
        let mut state = mem.slabs().kobj(cpu, PoolState { lock: SpinLock::new(inner) })?;
        // Handles carry a tag derived from the state's address, known now.
        let addr = state.as_ptr().as_ptr() as usize;
        state.lock.get_mut().handles.set_owner(addr);
        Ok(ZsPool { mem, state })
    }

    fn state(&self) -> &PoolState<'m> {
        &self.state
    }

    /// The address of the pool state (what zspage descriptors name).
    fn state_addr(&self) -> usize {
        self.state.as_ptr().as_ptr() as usize
    }

    /// The pool's state and machine as a borrowed [`PoolRef`].
    fn r(&self) -> PoolRef<'_, 'm, P> {
        PoolRef { mem: self.mem, state: &self.state }
    }

    /// Geometry and occupancy of every class (after merging), smallest slot first.
    pub fn classes(&self, mut f: impl FnMut(ZsClassInfo)) {
        let g = self.state().lock.lock();
        for c in g.classes[..g.nr_classes].iter().rev() {
            f(ZsClassInfo {
                slot: c.slot,
                pages: c.pages,
                objs: c.objs,
                objects: c.objects,
                zspages: c.zspages,
                bytes: c.bytes,
            });
        }
    }

    /// Pool figures.
    pub fn stats(&self) -> ZsStats {
        let g = self.state().lock.lock();
        let mut s = ZsStats { classes: g.nr_classes as u64, ..ZsStats::default() };
        for c in &g.classes[..g.nr_classes] {
            s.objects += c.objects;
            s.object_bytes += c.bytes;
            s.zspages += c.zspages;
            s.pages += c.zspages * c.pages as u64;
        }
        let chunks = g.handles.chunks() as u64;
        let state = self.mem.slabs().ksize(self.state.as_ptr().cast()).unwrap_or(core::mem::size_of::<PoolState>());
        s.metadata_bytes = s.zspages * core::mem::size_of::<Zspage>() as u64 + chunks * PAGE_SIZE as u64 + state as u64;
        s
    }

    /// Allocates an object of `size` bytes (1..=[`ZS_MAX_ALLOC`]); its contents are
    /// unspecified until written through [`ZsPool::map_write`].
    pub fn malloc(&self, cpu: &Cpu<'_>, size: usize) -> Result<Handle, ZsError> {
        if size == 0 || size > ZS_MAX_ALLOC {
            return Err(ZsError::InvalidSize(size));
        }
        // Zspage references live under this read section (descriptors are type-stable), so
        // they do not borrow the lock guard and the pool state can change around them.
        let rg = self.mem.rcu().read_lock(cpu);
        let mut g = self.state().lock.lock();
        let ci = g.class_of_size(size);
        let hidx = self.handle_alloc(cpu, &mut g)?;
        let zs = match g.lists[ci].partial.front().map(DescPtr::from_ref) {
            Some(p) => p.get(&rg),
            None => match self.zspage_new(cpu, &mut g, ci) {
                Ok(z) => z,
                Err(e) => {
                    self.handle_release(&mut g, hidx);
                    return Err(e);
                }
            },
        };
        let class = g.classes[ci];
        let idx = zs.freelist.load(Ordering::Relaxed);
        debug_assert_ne!(idx, NO_OBJ, "a partial zspage has a free object");
        let header = H_ALLOC | ((size as u64 - 1) << 1) | (hidx as u64) << 13;
        if class.huge() {
            zs.freelist.store(NO_OBJ, Ordering::Relaxed);
            zs.pages[1].store(header, Ordering::Relaxed);
        } else {
            let off = idx as usize * class.slot as usize;
            let next = (self.read_u64(zs, off) >> 32) as u32;
            zs.freelist.store(next, Ordering::Relaxed);
            self.write_u64(zs, off, header);
        }
        let inuse = zs.inuse.load(Ordering::Relaxed) + 1;
        zs.inuse.store(inuse, Ordering::Relaxed);
        if inuse == class.objs {
            let l = &mut g.lists[ci];
            unlink(&mut l.partial, zs);
            link(&mut l.full, zs);
        }
        let c = &mut g.classes[ci];
        c.objects += 1;
        c.bytes += size as u64;
        g.live_handles += 1;
        Ok(Handle(g.handles.set(hidx, idx as u64 | zs.flags.pfn().0 << (PFN_SHIFT - IDX_SHIFT))))
    }

    /// Frees an object. Refused with a precise error for a handle this pool never issued, one
    /// already freed, one freed and reused, or one that is mapped (all reachable only through
    /// a handle rebuilt from its raw value). A refused handle is consumed all the same.
    pub fn free(&self, cpu: &Cpu<'_>, h: Handle) -> Result<(), ZsError> {
        let h = h.0;
        let rg = self.mem.rcu().read_lock(cpu);
        let mut g = self.state().lock.lock();
        let loc = self.resolve(&g, h)?;
        if g.handles.get(h.index()).is_some_and(|e| e & E_MAPPED != 0) {
            return Err(ZsError::Mapped(h));
        }
        self.obj_release(cpu, &mut g, loc.zs.get(&rg), loc);
        self.handle_release(&mut g, h.index());
        g.live_handles -= 1;
        Ok(())
    }

    /// Size in bytes of the object `h` names.
    pub fn size_of(&self, h: &Handle) -> Result<usize, ZsError> {
        let g = self.state().lock.lock();
        Ok(self.resolve(&g, h.0)?.size)
    }

    /// The pfns of the zspage holding `h`'s object (tests and scanners).
    pub fn pages_of(&self, h: &Handle, out: &mut [Pfn; ZS_MAX_PAGES]) -> Result<usize, ZsError> {
        let g = self.state().lock.lock();
        let loc = self.resolve(&g, h.0)?;
        let zs = pool_desc_held(loc.zs, &*g);
        let n = g.classes[loc.class].pages as usize;
        for (i, o) in out.iter_mut().enumerate().take(n) {
            *o = Pfn(zs.pages[i].load(Ordering::Relaxed));
        }
        Ok(n)
    }

    /// Frees every zspage, the handle table and the pool state. Live objects are discarded
    /// (their handles become invalid with the pool). Guards borrow the pool, so none is live.
    pub fn destroy(self, cpu: &Cpu<'_>) {
        {
            let rg = self.mem.rcu().read_lock(cpu);
            let mut g = self.state().lock.lock();
            for ci in 0..g.nr_classes {
                for full in [false, true] {
                    loop {
                        let l = &g.lists[ci];
                        let Some(p) = (if full { l.full.front() } else { l.partial.front() }).map(DescPtr::from_ref)
                        else {
                            break;
                        };
                        self.zspage_free(cpu, &mut g, ci, p.get(&rg), full);
                    }
                }
                g.classes[ci].objects = 0;
                g.classes[ci].bytes = 0;
            }
            g.handles.destroy(self.mem, cpu);
        }
        // A pfn scanner that read one of our words before they were reset may still be about
        // to take our lock: wait for it to leave its RCU read section before freeing it (pool
        // item P4 of `desc.rs`).
        self.mem.rcu().synchronize();
        let ZsPool { mem, state } = self;
        let _: PoolState<'_> = mem.slabs().kobj_free(cpu, state);
    }

    // -- internals ------------------------------------------------------------------------

    /// Resolves a handle to its object, checking it.
    fn resolve(&self, g: &Inner<'_>, h: HandleId) -> Result<Loc, ZsError> {
        let e = g.handles.check(h).map_err(|f| match f {
            HandleFault::Bad => ZsError::BadHandle(h),
            HandleFault::Stale => ZsError::StaleHandle(h),
            HandleFault::Freed => ZsError::DoubleFree(h),
        })?;
        let pfn = Pfn(e >> PFN_SHIFT);
        let idx = ((e >> IDX_SHIFT) & IDX_MASK) as u32;
        let d = self.zspage_at(pfn).expect("an allocated entry names a zspage page");
        let zs = pool_desc_held(d, g);
        let ci = zs.class.load(Ordering::Relaxed) as usize;
        let class = g.classes[ci];
        let header = if class.huge() {
            zs.pages[1].load(Ordering::Relaxed)
        } else {
            self.read_u64(zs, idx as usize * class.slot as usize)
        };
        debug_assert_eq!(header & H_ALLOC, H_ALLOC);
        debug_assert_eq!((header >> 13) as usize, h.index());
        Ok(Loc { zs: d, idx, class: ci, size: ((header >> 1) & 0xFFF) as usize + 1 })
    }

    /// The zspage a pfn's word names (read under the pool lock, so it is stable).
    fn zspage_at(&self, pfn: Pfn) -> Option<DescPtr<Zspage>> {
        match self.mem.memmap().load(self.mem.platform(), pfn)?.word.kind() {
            PageKind::Zsmalloc(d) => Some(d),
            _ => None,
        }
    }

    fn handle_alloc(&self, cpu: &Cpu<'_>, g: &mut Inner<'m>) -> Result<usize, ZsError> {
        g.handles.alloc(self.mem, cpu).map_err(|e| e.map_or(ZsError::TooManyHandles, ZsError::NoMemory))
    }

    fn handle_release(&self, g: &mut Inner<'m>, i: usize) {
        g.handles.release(i);
    }

    /// Frees object `loc.idx` of `zs` and, if the zspage empties, the zspage.
    fn obj_release(&self, cpu: &Cpu<'_>, g: &mut Inner<'m>, zs: &Zspage, loc: Loc) {
        let class = g.classes[loc.class];
        let head = zs.freelist.load(Ordering::Relaxed);
        if class.huge() {
            zs.pages[1].store(0, Ordering::Relaxed);
        } else {
            self.write_u64(zs, loc.idx as usize * class.slot as usize, (head as u64) << 32);
        }
        zs.freelist.store(loc.idx, Ordering::Relaxed);
        let inuse = zs.inuse.load(Ordering::Relaxed);
        zs.inuse.store(inuse - 1, Ordering::Relaxed);
        let c = &mut g.classes[loc.class];
        c.objects -= 1;
        // Saturating: an object whose header a memory error destroyed has an upper-bound size.
        c.bytes = c.bytes.saturating_sub(loc.size as u64);
        if inuse == class.objs {
            // Full → partial (a zspage about to be freed too: zspage_free takes it off).
            let l = &mut g.lists[loc.class];
            unlink(&mut l.full, zs);
            link(&mut l.partial, zs);
        }
        if inuse == 1 {
            self.zspage_free(cpu, g, loc.class, zs, false);
        }
    }

    /// Makes a zspage for class `ci`, puts it on the partial list.
    fn zspage_new(&self, cpu: &Cpu<'_>, g: &mut Inner<'m>, ci: usize) -> Result<&'m Zspage, ZsError> {
        let class = g.classes[ci];
        let zs = self.mem.slabs().alloc_desc::<Zspage>(cpu)?;
        pool_desc_fresh(zs);
        // Everything a lockless pfn scanner reads (the pool) is set before a word names the
        // zspage; the rest is only read under the pool lock, which we hold.
        zs.pool.store(self.state_addr(), Ordering::Release);
        zs.class.store(ci as u32, Ordering::Relaxed);
        zs.mapped.store(0, Ordering::Relaxed);
        let w = Word::desc(DescPtr::from_ref(zs));
        let mut got = 0usize;
        let mut err = None;
        for i in 0..class.pages as usize {
            match self.mem.pages().alloc_with(cpu, 0, Gfp::MOVABLE, |_| w) {
                Ok(pfn) => {
                    zs.pages[i].store(pfn.0, Ordering::Relaxed);
                    got += 1;
                    if self.mem.platform().direct_map(pfn).is_none() {
                        err = Some(ZsError::NoDirectMap(pfn));
                        break;
                    }
                }
                Err(e) => {
                    err = Some(e.into());
                    break;
                }
            }
        }
        if let Some(e) = err {
            for i in 0..got {
                self.page_free(cpu, Pfn(zs.pages[i].load(Ordering::Relaxed)));
            }
            self.mem.slabs().free_desc(cpu, zs);
            return Err(e);
        }
        for i in class.pages as usize..ZS_MAX_PAGES {
            zs.pages[i].store(0, Ordering::Relaxed);
        }
        zs.flags.init(0, 0, Pfn(zs.pages[0].load(Ordering::Relaxed)));
        zs.inuse.store(0, Ordering::Relaxed);
        zs.freelist.store(0, Ordering::Relaxed);
        if !class.huge() {
            for i in 0..class.objs {
                let next = if i + 1 == class.objs { NO_OBJ } else { i + 1 };
                self.write_u64(zs, i as usize * class.slot as usize, (next as u64) << 32);
            }
        }
        link(&mut g.lists[ci].partial, zs);
        g.classes[ci].zspages += 1;
        Ok(zs)
    }

    /// Takes an empty (or, in destroy, any) zspage off its list and frees it.
    fn zspage_free(&self, cpu: &Cpu<'_>, g: &mut Inner<'m>, ci: usize, zs: &Zspage, on_full: bool) {
        let l = &mut g.lists[ci];
        unlink(if on_full { &mut l.full } else { &mut l.partial }, zs);
        let c = &mut g.classes[ci];
        c.zspages -= 1;
        for i in 0..c.pages as usize {
            self.page_free(cpu, Pfn(zs.pages[i].load(Ordering::Relaxed)));
        }
        self.mem.slabs().free_desc(cpu, zs);
    }

    fn page_free(&self, cpu: &Cpu<'_>, pfn: Pfn) {
        page_free(self.mem, cpu, pfn);
    }

    fn window(&self, zs: &Zspage, off: usize, len: usize) -> PageAccess<'m, P> {
        self.r().window(zs, off, len)
    }

    fn read_u64(&self, zs: &Zspage, off: usize) -> u64 {
        self.r().read_u64(zs, off)
    }

    fn write_u64(&self, zs: &Zspage, off: usize, v: u64) {
        self.r().write_u64(zs, off, v)
    }

    fn copy_out(&self, zs: &Zspage, off: usize, dst: &mut [u8]) {
        self.r().copy_out(zs, off, dst)
    }

    fn copy_in(&self, zs: &Zspage, off: usize, src: &[u8]) {
        self.r().copy_in(zs, off, src)
    }
}

impl<'m, P: Platform> PoolRef<'_, 'm, P> {
    /// A window on zspage bytes `off..off + len` (within one page), for the lock holder on
    /// bytes of no mapped object, or for the mapping of the object they hold (pool item P2 of
    /// `desc.rs`).
    fn window(&self, zs: &Zspage, off: usize, len: usize) -> PageAccess<'m, P> {
        let pfn = Pfn(zs.pages[off / PAGE_SIZE].load(Ordering::Relaxed));
        pool_window(self.mem.platform(), pfn, off % PAGE_SIZE, len)
            .expect("zspage pages are direct-mapped (checked at allocation) and headers stay in one page")
    }

    /// Reads the 8-byte header or free link at `off` (8-aligned, so within one page; the
    /// caller holds the pool lock).
    fn read_u64(&self, zs: &Zspage, off: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.window(zs, off, 8).bytes());
        u64::from_ne_bytes(b)
    }

    fn write_u64(&self, zs: &Zspage, off: usize, v: u64) {
        self.window(zs, off, 8).bytes_mut().copy_from_slice(&v.to_ne_bytes());
    }

    /// Copies zspage bytes `off..off + dst.len()` out, across page boundaries (the bytes of an
    /// object the caller holds: under the lock, or through its mapping).
    fn copy_out(&self, zs: &Zspage, off: usize, dst: &mut [u8]) {
        let mut done = 0;
        while done < dst.len() {
            let o = off + done;
            let n = (PAGE_SIZE - o % PAGE_SIZE).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(self.window(zs, o, n).bytes());
            done += n;
        }
    }

    /// Copies `src` into zspage bytes `off..`, across page boundaries (as `copy_out`).
    fn copy_in(&self, zs: &Zspage, off: usize, src: &[u8]) {
        let mut done = 0;
        while done < src.len() {
            let o = off + done;
            let n = (PAGE_SIZE - o % PAGE_SIZE).min(src.len() - done);
            self.window(zs, o, n).bytes_mut().copy_from_slice(&src[done..done + n]);
            done += n;
        }
    }
}

/// Links a zspage at the front of a class list (it is on none: pool item P3 of `desc.rs`).
fn link(list: &mut List<Zspage>, zs: &Zspage) {
    let r = list.push_front(zs);
    debug_assert!(r.is_ok(), "zspage already on a list");
}

/// Takes a zspage off the class list its fullness names (pool item P3 of `desc.rs`).
fn unlink(list: &mut List<Zspage>, zs: &Zspage) {
    let r = pool_desc_unlink(zs, list);
    debug_assert!(r, "zspage on no list");
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn inner(step: usize) -> Inner<'static> {
        let mut i = Inner {
            step,
            max_pages: ZS_MAX_PAGES,
            nr_classes: 0,
            size_index: [0; MAX_SLOTS],
            classes: [Class::EMPTY; MAX_CLASSES],
            lists: [const { ClassLists::EMPTY }; MAX_CLASSES],
            handles: HandleTable::new(0),
            live_handles: 0,
            mapped: 0,
            poisoned: false,
        };
        build_classes(&mut i);
        i
    }

    #[test]
    fn every_configuration_fits_max_classes() {
        for step in (MIN_CLASS_STEP..=256).step_by(8) {
            for max_pages in 1..=ZS_MAX_PAGES {
                let mut i = inner(8);
                i.step = step;
                i.max_pages = max_pages;
                build_classes(&mut i);
                assert!(i.nr_classes <= MAX_CLASSES, "step {step}, {max_pages} pages: {}", i.nr_classes);
            }
        }
        assert!(core::mem::size_of::<PoolState<'_>>() <= 64 << 10, "{}", core::mem::size_of::<PoolState<'_>>());
    }

    #[test]
    fn classes_cover_every_size_and_merge() {
        for step in [8, 16, 32, 64] {
            let i = inner(step);
            assert!(i.nr_classes < PAGE_SIZE / step, "merging happened for step {step}");
            for size in 1..=ZS_MAX_ALLOC {
                let c = i.classes[i.class_of_size(size)];
                assert!(size + c.data_off() <= c.slot as usize, "size {size} fits its class (step {step})");
                assert!(c.objs as usize * c.slot as usize <= c.pages as usize * PAGE_SIZE);
                assert!((1..=ZS_MAX_PAGES as u32).contains(&c.pages));
                assert!((c.slot as usize).is_multiple_of(8), "headers stay 8-aligned");
            }
            // The biggest objects (incompressible pages) take a one-object, one-page class.
            let c = i.classes[i.class_of_size(PAGE_SIZE)];
            assert_eq!((c.objs, c.pages, c.slot), (1, 1, PAGE_SIZE as u32));
        }
    }
}
