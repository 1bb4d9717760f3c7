//! z3fold: up to three objects — *first*, *middle* and *last* — in one order-0 page, with
//! opaque handles, map/unmap, and compaction of the middle object.
//!
//! # Layout
//!
//! A page is 64 chunks of 64 bytes (Linux's z3fold chunk size; unlike Linux there is no
//! in-page header: the page's [`Z3foldDesc`], which its word (`Tag::Z3fold`) points to,
//! holds the layout). The first object starts at chunk 0, the last ends at chunk 64, and the
//! middle object sits anywhere between them (right after the first when placed). The
//! descriptor packs the three byte sizes (0 = absent), the middle's start chunk and the count
//! of mapped objects into one word; the middle object's handle index is kept beside it, so
//! compaction can turn the middle into the first or last object by rewriting that handle's
//! entry.
//!
//! Pages with room are kept on 64 lists indexed by the largest object (in chunks) that still
//! fits (`lists[0]` holds full pages); an allocation takes the page with the least room that
//! fits (best fit), or a new page.
//!
//! Handles use zsmalloc's handle table (location: pfn and which of the three objects);
//! a stale, doubly freed or never issued handle is refused precisely.
//!
//! # Compaction
//!
//! [`Z3foldPool::compact`] moves each page's middle object: to the start (becoming the first
//! object) when there is no first, else to the end (becoming the last) when there is no last,
//! else right after the first object, so the free chunks join into one run. Pages with a
//! mapped object are left alone.
//!
//! # Locking
//!
//! One spin lock per pool; a mapping counts itself in its page's descriptor under the lock
//! and is released under it, and compaction skips pages whose count is non-zero, so a
//! mapping's bytes never move. Objects never straddle pages, so a mapping is a window on the
//! page.
//!
//! This module touches its pool state and handle chunks (kmalloc memory), its descriptors
//! (the `z3fold_desc` descriptor cache), the contents of its pages, and their words.

use core::ops::{Deref, DerefMut};

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{pool_desc_fresh, pool_desc_held, pool_desc_unlink, pool_state, pool_window, DescPtr, Z3foldDesc};
use crate::gfp::Gfp;
use crate::list::List;
use crate::page_access::PageAccess;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::pools::zs_handle::{Handle, HandleFault, HandleId, HandleTable, E_LOST, E_MAPPED, IDX_SHIFT, PFN_SHIFT};
use crate::pools::zsmalloc::{page_free, take_replacement, ZsMigrateError};
use crate::pools::{PoolHost, Pools};
use crate::rcu::RcuGuard;
use crate::slab::KObj;
use crate::sync::{Ordering, SpinLock};
use crate::word::{PageKind, Word};

/// Bytes per chunk.
pub const Z3_CHUNK: usize = 64;
/// Chunks per page.
pub const Z3_NCHUNKS: usize = PAGE_SIZE / Z3_CHUNK;
/// Largest object.
pub const Z3_MAX_ALLOC: usize = PAGE_SIZE;

const SIZE_BITS: u32 = 13;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;
const MS_SHIFT: u32 = 39;
const MAPPED_SHIFT: u32 = 46;

/// Which of a page's three objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buddy {
    /// Starts at chunk 0.
    First = 0,
    /// Between the other two.
    Middle = 1,
    /// Ends at the end of the page.
    Last = 2,
}

impl Buddy {
    fn from_bits(b: u64) -> Buddy {
        match b & 3 {
            0 => Buddy::First,
            1 => Buddy::Middle,
            _ => Buddy::Last,
        }
    }
}

/// Why a z3fold operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Z3Error {
    /// Size 0 or above [`Z3_MAX_ALLOC`].
    InvalidSize(usize),
    /// The handle was never issued by this pool.
    BadHandle(HandleId),
    /// The handle's object was already freed.
    DoubleFree(HandleId),
    /// The handle's object was freed and its table slot reused since.
    StaleHandle(HandleId),
    /// The object is mapped: unmap it first.
    Mapped(HandleId),
    /// The object is already mapped.
    AlreadyMapped(HandleId),
    /// The handle table is full.
    TooManyHandles,
    /// The page allocator or slab ran out.
    NoMemory(AllocError),
    /// A page without a direct mapping was handed out.
    NoDirectMap(Pfn),
    /// The object's page was retired by a hardware memory error: its contents are gone (it
    /// can still be freed).
    Lost(HandleId),
}

impl core::fmt::Display for Z3Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Z3Error::InvalidSize(s) => write!(f, "object size {s} is not in 1..={Z3_MAX_ALLOC}"),
            Z3Error::BadHandle(h) => write!(f, "handle {:#x} was never issued by this pool", h.raw()),
            Z3Error::DoubleFree(h) => write!(f, "double free of handle {:#x}", h.raw()),
            Z3Error::StaleHandle(h) => write!(f, "handle {:#x} was freed and its slot reused", h.raw()),
            Z3Error::Mapped(h) => write!(f, "handle {:#x} is mapped", h.raw()),
            Z3Error::AlreadyMapped(h) => write!(f, "handle {:#x} is already mapped", h.raw()),
            Z3Error::TooManyHandles => write!(f, "handle table full"),
            Z3Error::NoMemory(e) => write!(f, "{e}"),
            Z3Error::NoDirectMap(p) => write!(f, "pfn {p} has no direct mapping"),
            Z3Error::Lost(h) => write!(f, "handle {:#x}: its object was lost to a memory error", h.raw()),
        }
    }
}

impl core::error::Error for Z3Error {}

impl From<AllocError> for Z3Error {
    fn from(e: AllocError) -> Self {
        Z3Error::NoMemory(e)
    }
}

/// The unpacked layout word of a page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Layout {
    sizes: [usize; 3],
    /// Start chunk of the middle object.
    ms: usize,
    mapped: u32,
}

fn chunks(size: usize) -> usize {
    size.div_ceil(Z3_CHUNK)
}

impl Layout {
    fn load(d: &Z3foldDesc) -> Layout {
        let w = d.chunks.load(Ordering::Relaxed);
        Layout {
            sizes: [
                (w & SIZE_MASK) as usize,
                (w >> SIZE_BITS & SIZE_MASK) as usize,
                (w >> (2 * SIZE_BITS) & SIZE_MASK) as usize,
            ],
            ms: (w >> MS_SHIFT & 0x7F) as usize,
            mapped: (w >> MAPPED_SHIFT & 0xFF) as u32,
        }
    }
    fn store(&self, d: &Z3foldDesc) {
        let w = self.sizes[0] as u64
            | (self.sizes[1] as u64) << SIZE_BITS
            | (self.sizes[2] as u64) << (2 * SIZE_BITS)
            | (self.ms as u64) << MS_SHIFT
            | (self.mapped as u64) << MAPPED_SHIFT;
        d.chunks.store(w, Ordering::Relaxed);
    }
    fn c(&self, b: Buddy) -> usize {
        chunks(self.sizes[b as usize])
    }
    /// Start chunk of object `b`.
    fn start(&self, b: Buddy) -> usize {
        match b {
            Buddy::First => 0,
            Buddy::Middle => self.ms,
            Buddy::Last => Z3_NCHUNKS - self.c(Buddy::Last),
        }
    }
    fn is_empty(&self) -> bool {
        self.sizes == [0; 3]
    }
    /// Where an object of `need` chunks would go: (which, start chunk).
    fn place(&self, need: usize) -> Option<(Buddy, usize)> {
        let (f, m, l) = (self.c(Buddy::First), self.c(Buddy::Middle), self.c(Buddy::Last));
        let end_before_last = Z3_NCHUNKS - l;
        if f == 0 {
            let limit = if m > 0 { self.ms } else { end_before_last };
            if need <= limit {
                return Some((Buddy::First, 0));
            }
        }
        if l == 0 {
            let from = if m > 0 { self.ms + m } else { f };
            if need <= Z3_NCHUNKS - from {
                return Some((Buddy::Last, Z3_NCHUNKS - need));
            }
        }
        if m == 0 && (f > 0 || l > 0) && need <= end_before_last - f {
            return Some((Buddy::Middle, f));
        }
        None
    }
    /// The largest object (in chunks) that still fits.
    fn room(&self) -> usize {
        (1..=Z3_NCHUNKS).rev().find(|&n| self.place(n).is_some()).unwrap_or(0)
    }
}

struct Inner<'m> {
    /// `lists[n]`: pages whose largest fitting object is `n` chunks (0: full).
    lists: [List<Z3foldDesc>; Z3_NCHUNKS + 1],
    handles: HandleTable<'m>,
    pages: u64,
    objects: u64,
    bytes: u64,
}

struct PoolState<'m> {
    lock: SpinLock<Inner<'m>>,
}

/// Pool figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Z3Stats {
    /// Live objects.
    pub objects: u64,
    /// Bytes of live objects.
    pub object_bytes: u64,
    /// Pages.
    pub pages: u64,
    /// Bytes outside the pages: descriptors, handle-table chunks, pool state.
    pub metadata_bytes: u64,
}

/// What a compaction run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Z3CompactStats {
    /// Middle objects moved.
    pub objects_moved: u64,
    /// Middle objects that became a first or last object.
    pub promoted: u64,
}

/// A z3fold pool of one machine. Give it back with [`Z3foldPool::destroy`]; a pool that is
/// merely dropped keeps its pages.
pub struct Z3foldPool<'m, P: Platform> {
    mem: Pools<'m, P>,
    /// Reached only through its spin lock; freed by `destroy`.
    state: KObj<'m, PoolState<'m>>,
}

/// Links a page at the front of a room list (it is on none: pool item P3 of `desc.rs`).
fn link(list: &mut List<Z3foldDesc>, d: &Z3foldDesc) {
    let r = list.push_front(d);
    debug_assert!(r.is_ok(), "z3fold page already on a list");
}

/// Takes a page off the room list its layout names (pool item P3 of `desc.rs`).
fn unlink(list: &mut List<Z3foldDesc>, d: &Z3foldDesc) {
    let r = pool_desc_unlink(d, list);
    debug_assert!(r, "z3fold page on no list");
}

/// Bits per handle index in `Z3foldDesc::handles` (handle indices are below
/// [`crate::pools::zs_handle::ZS_MAX_HANDLES`] = 2^19).
const HIDX_BITS: u32 = 21;
const _: () = assert!(crate::pools::zs_handle::ZS_MAX_HANDLES <= 1 << HIDX_BITS);

/// The handle-table index of object `b` of the page (meaningful while it is present).
fn handle_index(d: &Z3foldDesc, b: Buddy) -> usize {
    (d.handles.load(Ordering::Relaxed) >> (HIDX_BITS * b as u32) & ((1 << HIDX_BITS) - 1)) as usize
}

fn set_handle_index(d: &Z3foldDesc, b: Buddy, i: usize) {
    let sh = HIDX_BITS * b as u32;
    let w = d.handles.load(Ordering::Relaxed) & !(((1u64 << HIDX_BITS) - 1) << sh);
    d.handles.store(w | (i as u64) << sh, Ordering::Relaxed);
}

/// A resolved handle.
#[derive(Clone, Copy)]
struct Loc {
    d: DescPtr<Z3foldDesc>,
    which: Buddy,
    entry: u64,
}

impl<'m, P: Platform> Z3foldPool<'m, P> {
    /// Creates a pool.
    pub fn new(mem: &'m impl PoolHost<P>, cpu: &Cpu<'_>) -> Result<Self, Z3Error> {
        let mem = mem.pools();
        let inner = Inner {
            lists: [const { List::new() }; Z3_NCHUNKS + 1],
            handles: HandleTable::new(0),
            pages: 0,
            objects: 0,
            bytes: 0,
        };
        let mut state = mem.slabs().kobj(cpu, PoolState { lock: SpinLock::new(inner) })?;
        // Handles carry a tag derived from the state's address, known now.
        let addr = state.as_ptr().as_ptr() as usize;
        state.lock.get_mut().handles.set_owner(addr);
        Ok(Z3foldPool { mem, state })
    }

    fn state(&self) -> &PoolState<'m> {
        &self.state
    }

    /// Pool figures.
    pub fn stats(&self) -> Z3Stats {
        let g = self.state().lock.lock();
        let st = self.mem.slabs().ksize(self.state.as_ptr().cast()).unwrap_or(core::mem::size_of::<PoolState>()) as u64;
        Z3Stats {
            objects: g.objects,
            object_bytes: g.bytes,
            pages: g.pages,
            metadata_bytes: g.pages * core::mem::size_of::<Z3foldDesc>() as u64
                + (g.handles.chunks() * PAGE_SIZE) as u64
                + st,
        }
    }

    /// Allocates an object of `size` bytes (1..=[`Z3_MAX_ALLOC`]).
    pub fn malloc(&self, cpu: &Cpu<'_>, size: usize) -> Result<Handle, Z3Error> {
        if size == 0 || size > Z3_MAX_ALLOC {
            return Err(Z3Error::InvalidSize(size));
        }
        let need = chunks(size);
        let rg = self.mem.rcu().read_lock(cpu);
        let mut g = self.state().lock.lock();
        let hidx = g.handles.alloc(self.mem, cpu).map_err(|e| e.map_or(Z3Error::TooManyHandles, Z3Error::NoMemory))?;
        let d = match (need..=Z3_NCHUNKS).find(|&n| !g.lists[n].is_empty()) {
            Some(n) => {
                let d = g.lists[n].pop_front().expect("a non-empty list");
                // For the read section rather than the list's borrow: the state changes below.
                DescPtr::from_ref(d).get(&rg)
            }
            None => match self.page_new(cpu) {
                Ok(d) => {
                    g.pages += 1;
                    d
                }
                Err(e) => {
                    g.handles.release(hidx);
                    return Err(e);
                }
            },
        };
        let mut l = Layout::load(d);
        let (which, start) = l.place(need).expect("the page was listed with room for it");
        l.sizes[which as usize] = size;
        if which == Buddy::Middle {
            l.ms = start;
        }
        set_handle_index(d, which, hidx);
        l.store(d);
        link(&mut g.lists[l.room()], d);
        g.objects += 1;
        g.bytes += size as u64;
        Ok(Handle(g.handles.set(hidx, which as u64 | d.flags.pfn().0 << (PFN_SHIFT - IDX_SHIFT))))
    }

    fn resolve(&self, g: &Inner<'_>, h: HandleId) -> Result<Loc, Z3Error> {
        let entry = g.handles.check(h).map_err(|f| match f {
            HandleFault::Bad => Z3Error::BadHandle(h),
            HandleFault::Stale => Z3Error::StaleHandle(h),
            HandleFault::Freed => Z3Error::DoubleFree(h),
        })?;
        let pfn = Pfn(entry >> PFN_SHIFT);
        let d = match self.mem.memmap().load(self.mem.platform(), pfn).map(|v| v.word.kind()) {
            Some(PageKind::Z3fold(d)) => d,
            _ => return Err(Z3Error::BadHandle(h)),
        };
        Ok(Loc { d, which: Buddy::from_bits(entry >> IDX_SHIFT), entry })
    }

    /// Frees an object (refused precisely for bad, stale, doubly freed or mapped handles).
    pub fn free(&self, cpu: &Cpu<'_>, h: Handle) -> Result<(), Z3Error> {
        let h = h.id();
        let rg = self.mem.rcu().read_lock(cpu);
        let mut g = self.state().lock.lock();
        let loc = self.resolve(&g, h)?;
        if loc.entry & E_MAPPED != 0 {
            return Err(Z3Error::Mapped(h));
        }
        let d = loc.d.get(&rg);
        let mut l = Layout::load(d);
        unlink(&mut g.lists[l.room()], d);
        g.objects -= 1;
        g.bytes -= l.sizes[loc.which as usize] as u64;
        l.sizes[loc.which as usize] = 0;
        if loc.which == Buddy::Middle {
            l.ms = 0;
        }
        l.store(d);
        g.handles.release(h.index());
        if l.is_empty() {
            g.pages -= 1;
            self.page_free(cpu, d);
        } else {
            link(&mut g.lists[l.room()], d);
        }
        Ok(())
    }

    /// Size in bytes of `h`'s object.
    pub fn size_of(&self, h: &Handle) -> Result<usize, Z3Error> {
        let g = self.state().lock.lock();
        let loc = self.resolve(&g, h.id())?;
        Ok(Layout::load(pool_desc_held(loc.d, &*g)).sizes[loc.which as usize])
    }

    /// Which object of its page `h` names, and the page.
    pub fn location(&self, h: &Handle) -> Result<(Pfn, Buddy), Z3Error> {
        let g = self.state().lock.lock();
        let loc = self.resolve(&g, h.id())?;
        Ok((pool_desc_held(loc.d, &*g).flags.pfn(), loc.which))
    }

    /// Maps an object for reading.
    pub fn map_read<'a>(&'a self, h: &'a Handle) -> Result<Z3Read<'a, 'm, P>, Z3Error> {
        Ok(Z3Read(self.map(h.id())?))
    }

    /// Maps an object for reading and writing.
    pub fn map_write<'a>(&'a self, h: &'a Handle) -> Result<Z3Write<'a, 'm, P>, Z3Error> {
        Ok(Z3Write(self.map(h.id())?))
    }

    fn map(&self, h: HandleId) -> Result<Z3Mapping<'_, 'm, P>, Z3Error> {
        let mut g = self.state().lock.lock();
        let loc = self.resolve(&g, h)?;
        if loc.entry & E_LOST != 0 {
            return Err(Z3Error::Lost(h));
        }
        if loc.entry & E_MAPPED != 0 {
            return Err(Z3Error::AlreadyMapped(h));
        }
        let d = pool_desc_held(loc.d, &*g);
        let mut l = Layout::load(d);
        let pfn = d.flags.pfn();
        // The object's bytes become the mapping's (pool item P2 of `desc.rs`), counted in the
        // layout word below under the lock.
        let window = pool_window(self.mem.platform(), pfn, l.start(loc.which) * Z3_CHUNK, l.sizes[loc.which as usize])
            .ok_or(Z3Error::NoDirectMap(pfn))?;
        l.mapped += 1;
        l.store(d);
        *g.handles.get_mut(h.index()).expect("resolved") |= E_MAPPED;
        Ok(Z3Mapping { pool: self, h, d: loc.d, window })
    }

    fn unmap(&self, m: &Z3Mapping<'_, 'm, P>) {
        let mut g = self.state().lock.lock();
        if let Some(e) = g.handles.get_mut(m.h.index()) {
            *e &= !E_MAPPED;
        }
        // The mapped count kept the page ours (frees of a mapped object are refused).
        let d = pool_desc_held(m.d, &*g);
        let mut l = Layout::load(d);
        l.mapped -= 1;
        l.store(d);
    }

    /// Moves middle objects to make room (see the module docs). Returns what moved.
    pub fn compact(&self) -> Z3CompactStats {
        let mut st = Z3CompactStats::default();
        let mut g = self.state().lock.lock();
        // Collect every page with a movable middle first (moving changes lists), last found
        // first.
        let mut todo = List::<Z3foldDesc>::new();
        for n in 0..=Z3_NCHUNKS {
            let mut keep = List::new();
            while let Some(d) = g.lists[n].pop_front() {
                let l = Layout::load(d);
                let f = l.c(Buddy::First);
                let l_c = l.c(Buddy::Last);
                let movable = l.sizes[1] != 0 && l.mapped == 0 && (f == 0 || l_c == 0 || l.ms != f);
                let r = if movable { todo.push_front(d) } else { keep.push_back(d) };
                debug_assert!(r.is_ok(), "just unlinked");
            }
            g.lists[n].append(&mut keep);
        }
        while let Some(d) = todo.pop_front() {
            let mut l = Layout::load(d);
            let (m, size) = (l.c(Buddy::Middle), l.sizes[1]);
            let (to, becomes) = if l.sizes[0] == 0 {
                (0, Buddy::First)
            } else if l.sizes[2] == 0 {
                (Z3_NCHUNKS - m, Buddy::Last)
            } else {
                (l.c(Buddy::First), Buddy::Middle)
            };
            // The whole page is the lock holder's: no object of it is mapped (pool item P2).
            let mut page =
                pool_window(self.mem.platform(), d.flags.pfn(), 0, PAGE_SIZE).expect("z3fold pages are direct-mapped");
            page.copy_within(l.ms * Z3_CHUNK, to * Z3_CHUNK, size).expect("objects lie inside their page");
            st.objects_moved += 1;
            if becomes == Buddy::Middle {
                l.ms = to;
            } else {
                let hidx = handle_index(d, Buddy::Middle);
                set_handle_index(d, becomes, hidx);
                let e = g.handles.get_mut(hidx).expect("the middle object's handle");
                *e = (*e & !(3 << IDX_SHIFT)) | (becomes as u64) << IDX_SHIFT;
                l.sizes[becomes as usize] = size;
                l.sizes[1] = 0;
                l.ms = 0;
                st.promoted += 1;
            }
            l.store(d);
            link(&mut g.lists[l.room()], d);
        }
        st
    }

    /// Frees every page, the handle table and the pool state (live objects are discarded;
    /// mappings borrow the pool, so none is live).
    pub fn destroy(self, cpu: &Cpu<'_>) {
        {
            let mut g = self.state().lock.lock();
            for n in 0..=Z3_NCHUNKS {
                while let Some(d) = g.lists[n].pop_front() {
                    self.page_free(cpu, d);
                }
            }
            g.handles.destroy(self.mem, cpu);
            g.pages = 0;
        }
        // A pfn scanner may still be about to take our lock (pool item P4 of `desc.rs`).
        self.mem.rcu().synchronize();
        let Z3foldPool { mem, state } = self;
        let _: PoolState<'_> = mem.slabs().kobj_free(cpu, state);
    }

    fn page_new(&self, cpu: &Cpu<'_>) -> Result<&'m Z3foldDesc, Z3Error> {
        let d = self.mem.slabs().alloc_desc::<Z3foldDesc>(cpu)?;
        pool_desc_fresh(d);
        // What a lockless reader of the word may read is set before the word names it.
        d.chunks.store(0, Ordering::Relaxed);
        d.handles.store(0, Ordering::Relaxed);
        d.pool.store(self.state.as_ptr().as_ptr() as usize, Ordering::Release);
        let w = Word::desc(DescPtr::from_ref(d));
        let pfn = match self.mem.pages().alloc_with(cpu, 0, Gfp::MOVABLE, |_| w) {
            Ok(p) => p,
            Err(e) => {
                self.mem.slabs().free_desc(cpu, d);
                return Err(e.into());
            }
        };
        d.flags.init(0, 0, pfn);
        if self.mem.platform().direct_map(pfn).is_none() {
            self.page_free(cpu, d);
            return Err(Z3Error::NoDirectMap(pfn));
        }
        Ok(d)
    }

    fn page_free(&self, cpu: &Cpu<'_>, d: &Z3foldDesc) {
        page_free(self.mem, cpu, d.flags.pfn());
        self.mem.slabs().free_desc(cpu, d);
    }
}

/// Migrates the z3fold page `pfn` to a newly allocated page, for a pfn scanner that knows
/// nothing but the pfn: the word leads to the [`Z3foldDesc`], the descriptor to its pool. The
/// descriptor stays; the entries of the page's objects are rewritten (handles never change).
/// Returns the new pfn; the old page goes back to the page allocator. Refused with
/// [`ZsMigrateError::Busy`] while an object of the page is mapped.
pub fn z3fold_migrate_page<P: Platform>(
    mem: &impl PoolHost<P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
) -> Result<Pfn, ZsMigrateError> {
    move_page(mem.pools(), cpu, pfn, None, false).map(|r| r.0)
}

/// As [`z3fold_migrate_page`], to a page the caller owns: an order-0 raw allocation of this
/// machine, which the pool owns on success and the caller again on error (memory
/// compaction's free scanner). Checked as `zs_migrate_page_to`: the target must be a raw
/// order-0 allocation and the page must still belong to the pool its word names.
#[cfg(feature = "health")]
pub(crate) fn z3fold_migrate_page_to<P: Platform>(
    mem: &impl PoolHost<P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    target: Pfn,
) -> Result<Pfn, ZsMigrateError> {
    move_page(mem.pools(), cpu, pfn, Some(target), false).map(|r| r.0)
}

/// Retires the z3fold page `pfn` after a hardware memory error: a zeroed page takes its
/// place under the same descriptor, every object on it is marked lost ([`Z3Error::Lost`]
/// when mapped; freeing still works), and the old page is stamped `HwPoison`. Returns the
/// objects lost.
#[cfg(feature = "health")]
pub(crate) fn z3fold_poison_page<P: Platform>(
    mem: &impl PoolHost<P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
) -> Result<u32, ZsMigrateError> {
    move_page(mem.pools(), cpu, pfn, None, true).map(|r| r.1)
}

fn move_page<P: Platform>(
    mem: Pools<'_, P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    target: Option<Pfn>,
    poison: bool,
) -> Result<(Pfn, u32), ZsMigrateError> {
    let guard = mem.rcu().read_lock(cpu);
    let v = mem.memmap().load(mem.platform(), pfn).ok_or(ZsMigrateError::OutOfRange(pfn))?;
    let PageKind::Z3fold(d) = v.word.kind() else { return Err(ZsMigrateError::NotZsmalloc(pfn)) };
    let pool_addr = d.get(&guard).pool.load(Ordering::Acquire);
    if pool_addr == 0 {
        return Err(ZsMigrateError::NotZsmalloc(pfn));
    }
    // The word named this descriptor inside our RCU read section; descriptors are
    // TYPESAFE_BY_RCU and a pool frees its state only after a grace period
    // (`Z3foldPool::destroy`), which our guard holds off (pool item P4 of `desc.rs`).
    // Everything is re-checked under the pool's lock.
    let state = pool_state::<PoolState<'_>>(&guard, pool_addr);
    let r = move_locked(mem, state, &guard, cpu, pfn, d, target, poison);
    drop(guard);
    r
}

#[allow(clippy::too_many_arguments)]
fn move_locked<'m, P: Platform>(
    mem: Pools<'m, P>,
    state: &PoolState<'m>,
    rg: &RcuGuard<'_>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    dp: DescPtr<Z3foldDesc>,
    target: Option<Pfn>,
    poison: bool,
) -> Result<(Pfn, u32), ZsMigrateError> {
    let mut g = state.lock.lock();
    match mem.memmap().load(mem.platform(), pfn).map(|v| v.word.kind()) {
        Some(PageKind::Z3fold(d2)) if d2 == dp => {}
        _ => return Err(ZsMigrateError::NotZsmalloc(pfn)),
    }
    let d = dp.get(rg);
    if d.pool.load(Ordering::Relaxed) != state as *const PoolState<'_> as usize {
        return Err(ZsMigrateError::NotZsmalloc(pfn));
    }
    let l = Layout::load(d);
    if l.mapped != 0 {
        return Err(ZsMigrateError::Busy(pfn));
    }
    let new = take_replacement(mem, cpu, pfn, Word::desc(DescPtr::from_ref(d)), target, poison)?;
    let mut lost = 0;
    for b in [Buddy::First, Buddy::Middle, Buddy::Last] {
        if l.sizes[b as usize] == 0 {
            continue;
        }
        let e = g.handles.get_mut(handle_index(d, b)).expect("a present object's handle");
        *e = (*e & ((1 << PFN_SHIFT) - 1)) | new.0 << PFN_SHIFT;
        if poison {
            *e |= E_LOST;
            lost += 1;
        }
    }
    d.flags.init(0, 0, new);
    if poison {
        mem.pages().retire_poisoned_block(pfn, 0);
    } else {
        page_free(mem, cpu, pfn);
    }
    Ok((new, lost))
}

struct Z3Mapping<'a, 'm, P: Platform> {
    pool: &'a Z3foldPool<'m, P>,
    h: HandleId,
    d: DescPtr<Z3foldDesc>,
    /// The object's bytes (they never straddle pages).
    window: PageAccess<'m, P>,
}

impl<P: Platform> Drop for Z3Mapping<'_, '_, P> {
    fn drop(&mut self) {
        self.pool.unmap(self);
    }
}

/// A read mapping of a z3fold object; unmaps on drop.
pub struct Z3Read<'a, 'm, P: Platform>(Z3Mapping<'a, 'm, P>);
/// A write mapping of a z3fold object; unmaps on drop.
pub struct Z3Write<'a, 'm, P: Platform>(Z3Mapping<'a, 'm, P>);

impl<P: Platform> Deref for Z3Read<'_, '_, P> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.window.bytes()
    }
}

impl<P: Platform> Deref for Z3Write<'_, '_, P> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.window.bytes()
    }
}

impl<P: Platform> DerefMut for Z3Write<'_, '_, P> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.window.bytes_mut()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn placement_prefers_first_then_last_then_middle() {
        let mut l = Layout::default();
        assert_eq!(l.room(), Z3_NCHUNKS);
        assert_eq!(l.place(10), Some((Buddy::First, 0)));
        l.sizes[0] = 10 * Z3_CHUNK;
        assert_eq!(l.place(10), Some((Buddy::Last, Z3_NCHUNKS - 10)));
        l.sizes[2] = 10 * Z3_CHUNK - 1;
        assert_eq!(l.place(44), Some((Buddy::Middle, 10)));
        assert_eq!(l.place(45), None);
        assert_eq!(l.room(), 44);
        l.sizes[1] = 5;
        l.ms = 10;
        assert_eq!(l.room(), 0, "three objects: full");
    }
}
