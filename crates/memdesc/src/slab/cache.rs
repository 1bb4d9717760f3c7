//! The slab allocator: object caches whose slabs are described by [`Slab`] descriptors that
//! every page of the slab points to. One implementation serves kmalloc, user caches, and the
//! descriptor caches of the memdesc design (including the cache of slab descriptors itself).
//!
//! - **Layout**: a slab is 2^order pages (order 0..=3, chosen per cache to keep waste under
//!   1/16, 1/8 or 1/4 of the slab, in that order of preference). Objects are `stride` bytes
//!   apart; a free object holds the address of the next free object at `freeptr` bytes into
//!   its slot — at the end of the slot for `TYPESAFE_BY_RCU` caches unless the creator names a
//!   field that lockless readers never trust (Linux's `freeptr_offset`).
//! - **Fast path**: per-CPU [sheaves](crate::sheaf) behind a per-CPU lock; the node lock and
//!   the partial list are touched only to refill or flush a sheaf.
//! - **Partial lists per node** hold slabs with free objects; full slabs are on no list; at
//!   most [`MIN_PARTIAL`] empty slabs stay cached per node, the rest go back to the page
//!   allocator, and [`PhysMem::shrink_cache`] returns them all.
//! - **TYPESAFE_BY_RCU**: a freed object is only ever reused as an object of the same cache,
//!   and a slab's pages go back to the page allocator only after an RCU grace period, so a
//!   lockless reader may still read an object it found before it was freed (and must
//!   revalidate, see [`crate::lookup`]).
//! - **Bootstrap**: the cache of slab descriptors hosts its own: the first object of each of
//!   its slabs is that slab's descriptor, so making a slab descriptor never needs a slab
//!   descriptor. The cache of caches and the slab-descriptor cache are themselves placed by
//!   the boot allocator.
//! - **Checked frees**: a pointer into a non-slab page, an interior pointer, a pointer of
//!   another cache, and a double free return a [`SlabError`] and change nothing. Debug mode
//!   ([`Config::debug_checks`](crate::Config)) adds one state word after each object.
//! - **Always-on double-free check**: a free object's free-pointer slot holds its successor
//!   *encoded* with a per-cache key mixed with the object's address (`next ^ key(obj)`, as
//!   Linux's hardened freelists); an object in a sheaf holds the encoding of "no successor".
//!   Allocation clears the slot, so a free finds a value that decodes to 0 or to an object
//!   of the same slab only if the object is already free (in any CPU's sheaf or on the slab's
//!   free list) — or, with odds of about `objects / 2^64`, if the owner stored exactly such a
//!   value there; then the free is refused and the object kept, never handed out twice. Cost:
//!   one store per allocation, one load, two multiplies and a store per free, on a line the
//!   caller just touched, no atomic read-modify-write. Two frees of one object racing on two
//!   CPUs (a breach of the raw free's contract no safe code can commit: a `KBox` or
//!   `SlabObj` is freed once) may both pass; a free after a free never does.
//! - **Families** ([`CacheFamily`]): kmalloc caches, caches users create, and the crate's own
//!   (descriptor caches, the cache of caches, …). [`PhysMem::kfree_raw`] frees only kmalloc
//!   objects, and only user caches can be reached through a [`CacheRef`], so no safe or
//!   documented path frees a live descriptor.
//! - **Owned objects**: [`CacheRef::alloc`] returns a [`SlabObj`] that [`CacheRef::free`]
//!   consumes; [`crate::kmalloc::KBox`] is kmalloc's.

use core::fmt;
use core::ptr::NonNull;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::DescPtr;
use crate::fault::FaultSite;
use crate::gfp::Gfp;
use crate::layout::MAX_NODES;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::rcu::GpCookie;
use crate::slab::sheaf::CpuSheaves;
use crate::slab::Slabs;
use crate::sync::{AtomicUsize, Ordering, SpinLock};
use crate::word::{PageKind, Tag, Word};

/// Empty slabs kept per node before freeing to the page allocator.
pub const MIN_PARTIAL: u64 = 5;
/// Largest slab order.
pub const MAX_SLAB_ORDER: u32 = 3;

const STATE_FREE: usize = 0x6b6b_6b6b_0000_f4ee;
/// Multiplier of the free-pointer encoding (the 64-bit golden ratio: odd, well mixed).
const FREE_MIX: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seed of per-cache free-pointer keys (a plain counter, core's atomic even under loom: no
/// protocol depends on it).
static FREE_KEY_SEED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0x2545_f491_4f6c_dd1d);

/// The family of a cache: which free paths may reach its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheFamily {
    /// A kmalloc size class: objects are freed with [`PhysMem::kfree`].
    Kmalloc,
    /// A cache created with [`PhysMem::create_cache`]: objects are freed through its
    /// [`CacheRef`].
    User,
    /// The crate's own caches (descriptor caches of folios, slabs, page tables, …, the cache of
    /// caches, page-cache nodes): no public free reaches their objects.
    Internal,
}
const STATE_ALLOC: usize = 0xa110_ca7e_0000_0000;

/// The slab descriptor (defined with the other descriptor types: the page word names it in
/// every build).
pub use crate::desc::Slab;

/// What `poison_slab` did.
#[cfg(feature = "health")]
pub(crate) enum SlabPoison {
    /// Flagged: the cache's name, objects in use (lost), objects per slab.
    Poisoned { cache: &'static str, inuse: u32, objects: u32 },
    /// Already poisoned.
    Already,
    /// The page stopped being (a live part of) this slab: look at its word again.
    Gone,
}

/// Parameters of a new cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheArgs {
    /// Name in slabinfo.
    pub name: &'static str,
    /// Object size in bytes.
    pub size: usize,
    /// Alignment (a power of two; at least 8).
    pub align: usize,
    /// Run once on every object when its slab is made (not on every allocation).
    pub ctor: Option<fn(NonNull<u8>)>,
    /// Freed objects are reused only by this cache and slabs are freed only after a grace
    /// period; slab pages are zeroed so never-used objects read as zero.
    pub typesafe_by_rcu: bool,
    /// Where the free pointer may live inside a free object (a field lockless readers never
    /// trust and the constructor does not set); `None` puts it after the object for
    /// `TYPESAFE_BY_RCU` caches and caches with a constructor.
    pub freeptr_offset: Option<usize>,
    /// Slab pages are reclaimable (grouped with reclaimable pageblocks).
    pub reclaimable: bool,
}

impl CacheArgs {
    /// A plain cache of `size`-byte objects aligned to 8.
    pub const fn new(name: &'static str, size: usize) -> Self {
        CacheArgs { name, size, align: 8, ctor: None, typesafe_by_rcu: false, freeptr_offset: None, reclaimable: false }
    }
}

/// Why a slab operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlabError {
    /// The address is not in any page the machine has.
    OutOfRange(usize),
    /// The page is not a slab page (it is free, reserved, a folio, …).
    NotSlab(usize, Option<Tag>),
    /// The address is inside an object, not its start.
    InteriorPointer(usize),
    /// The object is not a kmalloc object (it belongs to a descriptor cache, a user cache or
    /// another internal cache): `kfree` refuses it.
    NotKmalloc {
        /// The address.
        addr: usize,
        /// The cache it belongs to.
        cache: &'static str,
    },
    /// The cache is not a user cache: it cannot be reached through a [`CacheRef`].
    NotUserCache(&'static str),
    /// The object belongs to another cache.
    WrongCache {
        /// The address.
        addr: usize,
        /// The cache it belongs to.
        owner: &'static str,
    },
    /// The object is already free.
    DoubleFree(usize),
    /// The cache still has live objects and cannot be destroyed.
    Busy(u64),
    /// A large kmalloc free failed a page check.
    Page(crate::FreeError),
}

impl fmt::Display for SlabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlabError::OutOfRange(a) => write!(f, "{a:#x} is not in the machine's memory"),
            SlabError::NotSlab(a, t) => write!(f, "{a:#x} is not slab memory (page kind {t:?})"),
            SlabError::InteriorPointer(a) => write!(f, "{a:#x} points inside an object"),
            SlabError::WrongCache { addr, owner } => write!(f, "{addr:#x} belongs to cache {owner}"),
            SlabError::NotKmalloc { addr, cache } => {
                write!(f, "{addr:#x} is an object of cache {cache}, not a kmalloc object")
            }
            SlabError::NotUserCache(name) => write!(f, "cache {name} is the allocator's own"),
            SlabError::DoubleFree(a) => write!(f, "double free of object {a:#x}"),
            SlabError::Busy(n) => write!(f, "cache still has {n} live objects"),
            SlabError::Page(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SlabError {}

/// Per-node slab lists of a cache.
pub(crate) struct CacheNode {
    partial: usize,
    nr_partial: u64,
    nr_slabs: u64,
    free_objs: u64,
    rcu_pending: usize,
    rcu_cookie: Option<GpCookie>,
}

impl CacheNode {
    const EMPTY: CacheNode =
        CacheNode { partial: 0, nr_partial: 0, nr_slabs: 0, free_objs: 0, rcu_pending: 0, rcu_cookie: None };
}

/// A slab cache (`kmem_cache`). Lives in slab or boot memory at a fixed address, since slab
/// descriptors point back to it.
pub struct SlabCache {
    name: &'static str,
    size: usize,
    obj_size: usize,
    stride: usize,
    /// `ceil(2^32 / stride)`: object index by multiply and shift instead of a division.
    stride_recip: u64,
    order: u32,
    objects: u32,
    first_obj: u32,
    freeptr: usize,
    state_off: Option<usize>,
    ctor: Option<fn(NonNull<u8>)>,
    typesafe: bool,
    self_hosted: bool,
    family: CacheFamily,
    /// Key of the free-pointer encoding (see the module's "always-on double-free check").
    free_key: u64,
    gfp: Gfp,
    nodes: [SpinLock<CacheNode>; MAX_NODES],
    percpu: NonNull<SpinLock<CpuSheaves>>,
    nr_cpus: usize,
    percpu_pfn: Pfn,
    percpu_order: u32,
    next: AtomicUsize,
}

// SAFETY: percpu points to memory owned by the cache; every mutable part is behind a lock or
// atomic.
unsafe impl Send for SlabCache {}
// SAFETY: as above.
unsafe impl Sync for SlabCache {}

/// One row of /proc/slabinfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabInfo {
    /// Cache name.
    pub name: &'static str,
    /// Objects not on slab freelists (handed out or in sheaves).
    pub active_objs: u64,
    /// Objects in all slabs.
    pub num_objs: u64,
    /// Object size.
    pub objsize: usize,
    /// Objects per slab.
    pub objperslab: u32,
    /// Pages per slab.
    pub pagesperslab: u32,
    /// Slabs with at least one object in use.
    pub active_slabs: u64,
    /// Slabs.
    pub num_slabs: u64,
}

/// Chooses the slab order for objects of `stride` bytes: the smallest order whose waste is at
/// most 1/16 of the slab, else 1/8, else 1/4, else the least wasteful.
fn slab_order(stride: usize, reserved_first: bool) -> (u32, u32) {
    let fit = |order: u32| {
        let bytes = PAGE_SIZE << order;
        let n = bytes / stride;
        let usable = n.saturating_sub(reserved_first as usize);
        (usable as u32, bytes - n * stride)
    };
    for frac in [16, 8, 4] {
        for order in 0..=MAX_SLAB_ORDER {
            let (n, waste) = fit(order);
            if n >= 1 && waste * frac <= PAGE_SIZE << order {
                return (order, n);
            }
        }
    }
    (0..=MAX_SLAB_ORDER)
        .filter(|&o| fit(o).0 >= 1)
        .min_by_key(|&o| (fit(o).1 * 1000) / (PAGE_SIZE << o))
        .map(|o| (o, fit(o).0))
        .unwrap_or((MAX_SLAB_ORDER, fit(MAX_SLAB_ORDER).0))
}

impl SlabCache {
    /// Lays out a cache; `percpu` must hold `nr_cpus` sheaf pairs.
    fn layout(args: &CacheArgs, debug: bool, self_hosted: bool) -> Option<SlabCache> {
        let align = args.align.max(8).next_power_of_two();
        if args.size == 0 || args.size > (PAGE_SIZE << MAX_SLAB_ORDER) / 2 {
            return None;
        }
        let obj_size = args.size.next_multiple_of(align);
        // Constructed state and TYPESAFE_BY_RCU readers must survive a free: keep the pointer out.
        let external_freeptr = (args.typesafe_by_rcu || args.ctor.is_some()) && args.freeptr_offset.is_none();
        let mut stride = obj_size;
        let freeptr = match args.freeptr_offset {
            Some(off) if off + 8 <= args.size && off % 8 == 0 => off,
            Some(_) => return None,
            None if external_freeptr => {
                stride += 8;
                obj_size
            }
            None => 0,
        };
        let state_off = debug.then(|| {
            let off = stride;
            stride += 8;
            off
        });
        let stride = stride.next_multiple_of(align);
        let (order, objects) = slab_order(stride, self_hosted);
        if objects == 0 {
            return None;
        }
        let mut gfp = if args.reclaimable { Gfp::RECLAIMABLE } else { Gfp::KERNEL };
        if args.typesafe_by_rcu || self_hosted {
            gfp = gfp | Gfp::ZERO;
        }
        Some(SlabCache {
            name: args.name,
            size: args.size,
            obj_size,
            stride,
            stride_recip: (1u64 << 32).div_ceil(stride as u64),
            order,
            objects,
            first_obj: self_hosted as u32,
            freeptr,
            state_off,
            ctor: args.ctor,
            typesafe: args.typesafe_by_rcu,
            self_hosted,
            family: CacheFamily::Internal,
            free_key: {
                // splitmix64 of a counter: distinct, well-mixed keys per cache.
                let mut z = FREE_KEY_SEED.fetch_add(FREE_MIX, core::sync::atomic::Ordering::Relaxed);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            },
            gfp,
            nodes: core::array::from_fn(|_| SpinLock::new(CacheNode::EMPTY)),
            percpu: NonNull::dangling(),
            nr_cpus: 0,
            percpu_pfn: Pfn(0),
            percpu_order: 0,
            next: AtomicUsize::new(0),
        })
    }

    /// Bytes of per-CPU sheaves for `nr_cpus` CPUs, as a page order.
    fn percpu_order(nr_cpus: usize) -> u32 {
        let bytes = nr_cpus * core::mem::size_of::<SpinLock<CpuSheaves>>();
        bytes.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros()
    }

    fn attach_percpu(&mut self, base: NonNull<u8>, pfn: Pfn, order: u32, nr_cpus: usize) {
        let p = base.cast::<SpinLock<CpuSheaves>>();
        for i in 0..nr_cpus {
            // SAFETY: the caller gives 2^order pages at `base`, enough for nr_cpus entries
            // (percpu_order), page-aligned, owned by this cache alone.
            unsafe { p.as_ptr().add(i).write(SpinLock::new(CpuSheaves::EMPTY)) };
        }
        self.percpu = p;
        self.nr_cpus = nr_cpus;
        self.percpu_pfn = pfn;
        self.percpu_order = order;
    }

    #[inline]
    fn sheaves(&self, cpu: usize) -> &SpinLock<CpuSheaves> {
        assert!(cpu < self.nr_cpus);
        // SAFETY: initialised for every cpu < nr_cpus in attach_percpu; lives with the cache.
        unsafe { &*self.percpu.as_ptr().add(cpu) }
    }

    /// The name.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// The object size asked for.
    pub fn object_size(&self) -> usize {
        self.size
    }
    /// Usable bytes per object (`ksize`).
    pub fn usable_size(&self) -> usize {
        self.obj_size
    }
    /// Distance between objects in a slab.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Slab order.
    pub fn order(&self) -> u32 {
        self.order
    }
    /// Objects per slab.
    pub fn objects_per_slab(&self) -> u32 {
        self.objects
    }
    /// Whether the cache is TYPESAFE_BY_RCU.
    pub fn typesafe_by_rcu(&self) -> bool {
        self.typesafe
    }
    /// The cache's family: which free paths reach its objects.
    pub fn family(&self) -> CacheFamily {
        self.family
    }
    /// Objects allocated and not yet freed by users.
    pub fn live_objects(&self) -> u64 {
        let (mut allocs, mut frees) = (0u64, 0u64);
        for cpu in 0..self.nr_cpus {
            let s = self.sheaves(cpu).lock();
            allocs += s.allocs;
            frees += s.frees;
        }
        allocs - frees
    }

    #[inline]
    fn freeptr_of(&self, obj: usize) -> &AtomicUsize {
        // SAFETY: obj is an object slot of this cache inside a live slab (callers get it from
        // a freelist or a validated free); freeptr + 8 <= stride and is 8-aligned.
        unsafe { &*((obj + self.freeptr) as *const AtomicUsize) }
    }

    /// `off / stride` for offsets inside a slab, by multiply and shift: exact because offsets
    /// are below 2^17 and strides at most 2^15 (the rounding error stays under 1/stride).
    #[inline]
    fn obj_index(&self, off: usize) -> usize {
        debug_assert!(off < PAGE_SIZE << MAX_SLAB_ORDER);
        ((off as u64 * self.stride_recip) >> 32) as usize
    }

    /// The free-pointer encoding of `next` stored in the free object `obj` (its own inverse).
    #[inline]
    fn encode_free(&self, obj: usize, next: usize) -> usize {
        next ^ ((obj as u64 ^ self.free_key).wrapping_mul(FREE_MIX)) as usize
    }

    /// Whether the free-pointer slot value `v` of `obj` (in the slab at `base`) says the object
    /// is free: it decodes to 0 (no successor: the last of a free list, or in a sheaf) or to
    /// an object of the same slab.
    #[inline]
    fn looks_free(&self, obj: usize, v: usize, base: usize) -> bool {
        let next = self.encode_free(obj, v);
        if next == 0 {
            return true;
        }
        let off = next.wrapping_sub(base);
        if off >= PAGE_SIZE << self.order {
            return false;
        }
        let idx = self.obj_index(off);
        idx * self.stride == off && idx >= self.first_obj as usize && idx < (self.first_obj + self.objects) as usize
    }

    #[inline]
    fn state_of(&self, obj: usize) -> Option<&AtomicUsize> {
        // SAFETY: as freeptr_of; the state word lies inside the slot when debug is on.
        self.state_off.map(|off| unsafe { &*((obj + off) as *const AtomicUsize) })
    }
}

/// A reference to a user cache of a machine, for allocating and freeing its objects.
pub struct CacheRef<'m, P: Platform> {
    slabs: Slabs<'m, P>,
    cache: &'m SlabCache,
}

/// An owned object of a user cache, from [`CacheRef::alloc`]: free it with
/// [`CacheRef::free`], which consumes it. Not `Clone`; dropping it leaks the object (it stays
/// allocated, and the cache cannot be destroyed while it is live).
#[must_use = "dropping a SlabObj leaks the object; free it with CacheRef::free"]
#[derive(Debug, PartialEq, Eq)]
pub struct SlabObj {
    ptr: NonNull<u8>,
    cache: NonNull<SlabCache>,
}

// SAFETY: a SlabObj is a unique token for one object; the allocator's state it names is
// behind locks and atomics, and the pointer is never dereferenced through the handle.
unsafe impl Send for SlabObj {}
// SAFETY: as above; `&SlabObj` only reads the two addresses.
unsafe impl Sync for SlabObj {}

impl SlabObj {
    /// The object's address (valid until the object is freed).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    /// Gives up the handle for the raw pointer; free it with [`CacheRef::free_raw`] (or make
    /// a handle again with [`SlabObj::from_raw`]).
    #[inline]
    pub fn into_raw(self) -> NonNull<u8> {
        self.ptr
    }
    /// Makes the handle of a raw object again.
    ///
    /// # Safety
    /// The caller owns the object: `ptr` came from [`CacheRef::alloc`] or
    /// [`CacheRef::alloc_raw`] of `cache` (and was given up with [`SlabObj::into_raw`] if it
    /// was a handle), has not been freed since, and no other handle or raw owner remains.
    #[inline]
    pub unsafe fn from_raw<P: Platform>(cache: &CacheRef<'_, P>, ptr: NonNull<u8>) -> SlabObj {
        SlabObj { ptr, cache: NonNull::from(cache.cache) }
    }
}

impl<'m, P: Platform> CacheRef<'m, P> {
    /// The cache (borrowed from the handle: `destroy_cache` consumes the handle, so no
    /// reference to a destroyed cache outlives it).
    pub fn cache(&self) -> &SlabCache {
        self.cache
    }

    /// Allocates an object.
    pub fn alloc(&self, cpu: &Cpu<'_>) -> Result<SlabObj, AllocError> {
        let ptr = self.slabs.cache_alloc(cpu, self.cache)?;
        Ok(SlabObj { ptr, cache: NonNull::from(self.cache) })
    }

    /// Allocates an object and returns its address (the caller owns it; see
    /// [`CacheRef::free_raw`]).
    pub fn alloc_raw(&self, cpu: &Cpu<'_>) -> Result<NonNull<u8>, AllocError> {
        self.slabs.cache_alloc(cpu, self.cache)
    }

    /// Frees an object of this cache, consuming its handle. An object of another cache is
    /// refused with [`SlabError::WrongCache`] (and leaked).
    pub fn free(&self, cpu: &Cpu<'_>, obj: SlabObj) -> Result<(), SlabError> {
        if obj.cache != NonNull::from(self.cache) {
            // SAFETY: a SlabObj names the live cache it came from (a cache with a live object
            // cannot be destroyed).
            let owner = unsafe { obj.cache.as_ref() }.name;
            return Err(SlabError::WrongCache { addr: obj.ptr.as_ptr() as usize, owner });
        }
        self.slabs.cache_free(cpu, self.cache, obj.ptr)
    }

    /// Frees an object of this cache by address. Checked: an address outside the cache's
    /// objects, an interior pointer and a double free are refused and change nothing.
    ///
    /// # Safety
    /// The caller owns the object: `obj` came from [`CacheRef::alloc_raw`] of this cache (or
    /// [`SlabObj::into_raw`]), has not been freed since, and nothing uses it after this call.
    /// The checks catch a double free, but not a free of an object somebody else holds.
    pub unsafe fn free_raw(&self, cpu: &Cpu<'_>, obj: NonNull<u8>) -> Result<(), SlabError> {
        self.slabs.cache_free(cpu, self.cache, obj)
    }

    /// Allocates `out.len()` objects; on failure frees what it took and returns the error.
    pub fn alloc_bulk(&self, cpu: &Cpu<'_>, out: &mut [Option<SlabObj>]) -> Result<(), AllocError> {
        for i in 0..out.len() {
            match self.alloc(cpu) {
                Ok(o) => out[i] = Some(o),
                Err(e) => {
                    for slot in out[..i].iter_mut() {
                        if let Some(o) = slot.take() {
                            let _ = self.free(cpu, o);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Frees every object taken out of `objs`; stops at the first refused one and returns its
    /// index (the objects after it stay in `objs`).
    pub fn free_bulk(&self, cpu: &Cpu<'_>, objs: &mut [Option<SlabObj>]) -> Result<(), (usize, SlabError)> {
        for (i, o) in objs.iter_mut().enumerate() {
            if let Some(o) = o.take() {
                self.free(cpu, o).map_err(|e| (i, e))?;
            }
        }
        Ok(())
    }
}

/// Pages and objects of the bootstrap caches placed by the boot allocator.
pub(crate) struct SlabBoot {
    pub(crate) kmem_cache: NonNull<SlabCache>,
    pub(crate) slab_desc: NonNull<SlabCache>,
}

impl SlabBoot {
    /// Boot-allocator pages the two bootstrap caches need: their structs and sheaves.
    pub(crate) fn pages(nr_cpus: usize) -> u64 {
        1 + 2 * (1u64 << SlabCache::percpu_order(nr_cpus))
    }

    /// Builds the cache of caches and the self-hosting slab-descriptor cache in `pages` boot
    /// pages at `pfn`.
    pub(crate) fn build<P: Platform>(p: &P, pfn: Pfn, nr_cpus: usize, debug: bool) -> Option<SlabBoot> {
        let base = p.direct_map(pfn)?;
        let pc_order = SlabCache::percpu_order(nr_cpus);
        let mut kc = SlabCache::layout(&CacheArgs::new("kmem_cache", core::mem::size_of::<SlabCache>()), debug, false)?;
        let mut sd = SlabCache::layout(
            &CacheArgs {
                align: 16,
                typesafe_by_rcu: true,
                freeptr_offset: Some(core::mem::offset_of!(Slab, list)),
                ..CacheArgs::new("slab_desc", core::mem::size_of::<Slab>())
            },
            debug,
            true,
        )?;
        let pc1 = pfn.add(1);
        let pc2 = pc1.add(1 << pc_order);
        kc.attach_percpu(p.direct_map(pc1)?, pc1, pc_order, nr_cpus);
        sd.attach_percpu(p.direct_map(pc2)?, pc2, pc_order, nr_cpus);
        let kcp = base.cast::<SlabCache>();
        // SAFETY: the boot page at pfn is ours; two SlabCache structs fit in 4 KiB (asserted).
        unsafe {
            kcp.as_ptr().write(kc);
            kcp.as_ptr().add(1).write(sd);
        }
        // SAFETY: just written.
        let sdp = unsafe { NonNull::new_unchecked(kcp.as_ptr().add(1)) };
        Some(SlabBoot { kmem_cache: kcp, slab_desc: sdp })
    }
}

#[cfg(not(loom))]
const _: () = assert!(2 * core::mem::size_of::<SlabCache>() <= PAGE_SIZE);

impl<'a, P: Platform> Slabs<'a, P> {
    #[inline]
    fn slab_desc_cache(&self) -> &'a SlabCache {
        // SAFETY: built at boot in boot-allocator memory that lives as long as self.
        unsafe { self.state.boot.slab_desc.as_ref() }
    }

    #[inline]
    fn kmem_cache_cache(&self) -> &'a SlabCache {
        // SAFETY: as slab_desc_cache.
        unsafe { self.state.boot.kmem_cache.as_ref() }
    }

    /// Links a cache into the machine's list of caches.
    pub(crate) fn register_cache(&self, c: &SlabCache) {
        let mut head = self.state.caches.lock();
        c.next.store(*head, Ordering::Relaxed);
        *head = c as *const SlabCache as usize;
    }

    /// Calls `f` for every cache.
    pub(crate) fn for_each_cache(&self, mut f: impl FnMut(&SlabCache)) {
        let head = self.state.caches.lock();
        let mut cur = *head;
        while cur != 0 {
            // SAFETY: the list only holds live caches (destroy unlinks under this lock).
            let c = unsafe { &*(cur as *const SlabCache) };
            f(c);
            cur = c.next.load(Ordering::Relaxed);
        }
    }

    /// A handle to one of this machine's user caches (from [`PhysMem::for_each_cache`]); the
    /// crate's own caches and kmalloc's are refused with [`SlabError::NotUserCache`].
    ///
    /// # Safety
    /// The returned handle is a second handle to a cache whose creator holds one: the caller
    /// ensures the cache is not destroyed (through either handle) while the other is still
    /// used, and frees through it only objects it owns.
    pub(crate) unsafe fn cache_ref(&self, cache: &'a SlabCache) -> Result<CacheRef<'a, P>, SlabError> {
        if cache.family != CacheFamily::User {
            return Err(SlabError::NotUserCache(cache.name));
        }
        Ok(CacheRef { slabs: *self, cache })
    }

    /// A handle to any cache, for the crate's own use.
    #[cfg(feature = "pgtable")]
    pub(crate) fn cache_ref_internal(&self, cache: &'a SlabCache) -> CacheRef<'a, P> {
        CacheRef { slabs: *self, cache }
    }

    /// Returns every empty slab of any cache of this machine (a user's, kmalloc's or the
    /// crate's own) to the page allocator; see [`PhysMem::shrink_cache`]. Returns pages freed.
    pub(crate) fn shrink_any_cache(&self, cpu: &Cpu<'_>, cache: &SlabCache) -> u64 {
        self.shrink_cache_inner(cpu, cache, false)
    }

    /// Creates a cache. Its `SlabCache` struct is an object of the cache of caches.
    pub(crate) fn create_cache(&self, cpu: &Cpu<'_>, args: CacheArgs) -> Result<CacheRef<'a, P>, AllocError> {
        let c = self.new_cache_in(cpu, &args, CacheFamily::User)?;
        Ok(CacheRef { slabs: *self, cache: c })
    }

    /// Creates one of the crate's own caches ([`CacheFamily::Internal`]).
    #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
    pub(crate) fn new_cache(&self, cpu: &Cpu<'_>, args: &CacheArgs) -> Result<&'a SlabCache, AllocError> {
        self.new_cache_in(cpu, args, CacheFamily::Internal)
    }

    pub(crate) fn new_cache_in(
        &self,
        cpu: &Cpu<'_>,
        args: &CacheArgs,
        family: CacheFamily,
    ) -> Result<&'a SlabCache, AllocError> {
        let mut c =
            SlabCache::layout(args, self.pages.config().debug_checks, false).ok_or(AllocError::InvalidOrder(0))?;
        c.family = family;
        let order = SlabCache::percpu_order(self.pages.cpus().nr());
        let pc = self.pages.alloc_internal(cpu, order, Gfp::KERNEL)?;
        // Gfp::KERNEL never comes from unmapped memory (Gfp::may_be_unmapped); a platform
        // without the map anyway gets an error, not a panic.
        let Some(base) = self.pages.platform().direct_map(pc) else {
            let _ = self.pages.free_internal(cpu, pc, order);
            return Err(AllocError::NoMemory { order });
        };
        c.attach_percpu(base, pc, order, self.pages.cpus().nr());
        let obj = match self.cache_alloc(cpu, self.kmem_cache_cache()) {
            Ok(o) => o.cast::<SlabCache>(),
            Err(e) => {
                let _ = self.pages.free_internal(cpu, pc, order);
                return Err(e);
            }
        };
        // SAFETY: obj is a fresh object of the kmem_cache cache, sized and aligned for a
        // SlabCache, owned by us.
        unsafe { obj.as_ptr().write(c) };
        // SAFETY: just initialised; lives until destroy_cache frees it.
        let c = unsafe { &*obj.as_ptr() };
        self.register_cache(c);
        Ok(c)
    }

    /// Destroys a cache with no live objects: flushes its sheaves, frees its slabs (after a
    /// grace period for TYPESAFE_BY_RCU caches) and its per-CPU memory.
    pub(crate) fn destroy_cache(&self, cpu: &Cpu<'_>, cache: CacheRef<'_, P>) -> Result<(), SlabError> {
        let c = cache.cache;
        if c.family == CacheFamily::Kmalloc {
            return Err(SlabError::NotUserCache(c.name));
        }
        if c.live_objects() != 0 {
            return Err(SlabError::Busy(c.live_objects()));
        }
        {
            let mut head = self.state.caches.lock();
            let me = c as *const SlabCache as usize;
            if *head == me {
                *head = c.next.load(Ordering::Relaxed);
            } else {
                let mut cur = *head;
                while cur != 0 {
                    // SAFETY: live caches on the list.
                    let n = unsafe { &*(cur as *const SlabCache) };
                    if n.next.load(Ordering::Relaxed) == me {
                        n.next.store(c.next.load(Ordering::Relaxed), Ordering::Relaxed);
                        break;
                    }
                    cur = n.next.load(Ordering::Relaxed);
                }
            }
        }
        self.shrink_cache_inner(cpu, c, true);
        let (pc, order) = (c.percpu_pfn, c.percpu_order);
        let obj = NonNull::from(c).cast::<u8>();
        self.cache_free(cpu, self.kmem_cache_cache(), obj)?;
        self.pages.free_internal(cpu, pc, order).map_err(SlabError::Page)
    }

    /// Returns every empty slab of `cache` to the page allocator (after a grace period for
    /// TYPESAFE_BY_RCU caches), flushing all CPUs' sheaves first. Returns pages freed.
    pub(crate) fn shrink_cache(&self, cpu: &Cpu<'_>, cache: &CacheRef<'_, P>) -> u64 {
        self.shrink_cache_inner(cpu, cache.cache, false)
    }

    fn shrink_cache_inner(&self, cpu: &Cpu<'_>, c: &SlabCache, all: bool) -> u64 {
        for i in 0..c.nr_cpus {
            c.sheaves(i).sheaf_flush(|objs| self.flush(cpu, c, objs));
        }
        let mut freed = 0;
        for node in 0..MAX_NODES {
            let mut victims = 0usize;
            {
                let mut n = c.nodes[node].lock();
                let mut cur = n.partial;
                while cur != 0 {
                    // SAFETY: slabs on the partial list are live descriptors of this cache.
                    let s = unsafe { &*(cur as *const Slab) };
                    let next = s.list.next.load(Ordering::Relaxed);
                    if s.inuse.load(Ordering::Relaxed) == 0 || all {
                        debug_assert!(s.inuse.load(Ordering::Relaxed) == 0);
                        Self::list_remove(&mut n, s);
                        n.nr_slabs -= 1;
                        n.free_objs -= c.objects as u64;
                        s.list.next.store(victims, Ordering::Relaxed);
                        victims = cur;
                    }
                    cur = next;
                }
            }
            while victims != 0 {
                // SAFETY: unlinked above; ours to discard.
                let s = unsafe { &*(victims as *const Slab) };
                victims = s.list.next.load(Ordering::Relaxed);
                freed += 1 << c.order;
                self.discard_slab(cpu, c, node, s);
            }
        }
        if c.typesafe {
            self.pages.rcu().synchronize();
        }
        self.reap_rcu(cpu, c);
        freed
    }

    fn node_of(&self, cpu: &Cpu<'_>) -> usize {
        let nodes = self.pages.zones().map(|z| z.node() as usize + 1).max().unwrap_or(1);
        cpu.id() % nodes
    }

    /// Allocates one object of `c` (a [`FaultSite::Slab`] site).
    pub(crate) fn cache_alloc(&self, cpu: &Cpu<'_>, c: &SlabCache) -> Result<NonNull<u8>, AllocError> {
        self.cache_alloc_at(cpu, c, FaultSite::Slab)
    }

    /// Allocates one object of `c`; fault injection sees it as an allocation at `site`.
    pub(crate) fn cache_alloc_at(
        &self,
        cpu: &Cpu<'_>,
        c: &SlabCache,
        site: FaultSite,
    ) -> Result<NonNull<u8>, AllocError> {
        if self.pages.fault().should_fail(site) {
            return Err(AllocError::Injected);
        }
        let obj = c
            .sheaves(self.pages.cpu_id(cpu))
            .sheaf_alloc(|s| self.refill(cpu, c, s))?
            .ok_or(AllocError::NoMemory { order: c.order })?;
        // Allocated: the slot no longer decodes as free (see "always-on double-free check").
        c.freeptr_of(obj).store(0, Ordering::Relaxed);
        if let Some(st) = c.state_of(obj) {
            let prev = st.swap(STATE_ALLOC ^ obj, Ordering::AcqRel);
            debug_assert_eq!(prev, STATE_FREE, "a free object was overwritten (use after free)");
        }
        // SAFETY: object addresses are inside direct-mapped slab pages, never zero.
        Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) })
    }

    /// The slab descriptor of the page holding `addr`, checked.
    pub(crate) fn slab_of(&self, addr: usize) -> Result<&'a Slab, SlabError> {
        self.slab_at(addr).map(|(slab, _)| slab)
    }

    /// The slab descriptor of the page holding `addr`, and that page's pfn, checked.
    fn slab_at(&self, addr: usize) -> Result<(&'a Slab, Pfn), SlabError> {
        let ptr = NonNull::new(addr as *mut u8).ok_or(SlabError::OutOfRange(addr))?;
        let pfn = self.pages.platform().virt_to_pfn(ptr).ok_or(SlabError::OutOfRange(addr))?;
        let v = self.pages.memmap().load(self.pages.platform(), pfn).ok_or(SlabError::OutOfRange(addr))?;
        match v.word.kind() {
            // SAFETY: a Slab word points to a live slab descriptor while the page is a slab
            // page; the caller owns an object in it, which keeps the slab alive.
            PageKind::Slab(d) => Ok((unsafe { &*(d.addr() as *const Slab) }, pfn)),
            _ => Err(SlabError::NotSlab(addr, v.word.tag())),
        }
    }

    /// Validates that `addr` is the start of an object of `c`; returns the slab's base address.
    fn check_object(&self, c: &SlabCache, addr: usize) -> Result<usize, SlabError> {
        let (slab, pfn) = self.slab_at(addr)?;
        self.check_in_slab(c, slab, addr, pfn)
    }

    /// Validates that `addr`, in page `pfn` of `slab`, is the start of an object of `c`;
    /// returns the slab's base address.
    fn check_in_slab(&self, c: &SlabCache, slab: &Slab, addr: usize, pfn: Pfn) -> Result<usize, SlabError> {
        if slab.cache.load(Ordering::Acquire) != c as *const SlabCache as usize {
            // SAFETY: a slab's cache pointer names a live cache while the slab exists.
            let owner = unsafe { &*(slab.cache.load(Ordering::Acquire) as *const SlabCache) };
            return Err(SlabError::WrongCache { addr, owner: owner.name });
        }
        // The slab is one direct-mapped block, so its base is `addr`'s page minus the page's
        // position in the slab (no second trip through the platform's mapping).
        let page_in_slab = pfn.0.wrapping_sub(slab.flags.pfn().0) as usize;
        let off = page_in_slab.wrapping_mul(PAGE_SIZE).wrapping_add(addr & (PAGE_SIZE - 1));
        if off >= PAGE_SIZE << c.order {
            return Err(SlabError::InteriorPointer(addr));
        }
        let idx = c.obj_index(off);
        if idx * c.stride != off || idx < c.first_obj as usize || idx >= (c.first_obj + c.objects) as usize {
            return Err(SlabError::InteriorPointer(addr));
        }
        Ok(addr - off)
    }

    /// Frees an object of `c`, checked.
    pub(crate) fn cache_free(&self, cpu: &Cpu<'_>, c: &SlabCache, obj: NonNull<u8>) -> Result<(), SlabError> {
        let base = self.check_object(c, obj.as_ptr() as usize)?;
        self.cache_free_checked(cpu, c, obj.as_ptr() as usize, base)
    }

    /// Frees an object found in `slab` (kfree has already resolved the slab from the word).
    pub(crate) fn cache_free_in(
        &self,
        cpu: &Cpu<'_>,
        c: &SlabCache,
        slab: &Slab,
        obj: NonNull<u8>,
        pfn: Pfn,
    ) -> Result<(), SlabError> {
        let base = self.check_in_slab(c, slab, obj.as_ptr() as usize, pfn)?;
        self.cache_free_checked(cpu, c, obj.as_ptr() as usize, base)
    }

    fn cache_free_checked(&self, cpu: &Cpu<'_>, c: &SlabCache, addr: usize, base: usize) -> Result<(), SlabError> {
        // A foreign token panics here, before the object's state changes.
        let cpu_id = self.pages.cpu_id(cpu);
        // Always on: a slot that decodes as free means the object is free already (in some
        // CPU's sheaf or on its slab's free list). A plain load and store, no atomic
        // read-modify-write on the hot path: two frees of one object racing on two CPUs
        // (a breach of the raw free's contract that no safe code can commit) may both pass.
        let slot = c.freeptr_of(addr);
        if c.looks_free(addr, slot.load(Ordering::Relaxed), base) {
            return Err(SlabError::DoubleFree(addr));
        }
        slot.store(c.encode_free(addr, 0), Ordering::Relaxed);
        if let Some(st) = c.state_of(addr) {
            if st.compare_exchange(STATE_ALLOC ^ addr, STATE_FREE, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // Unreachable unless the object was overwritten after a free; keep it out of
                // circulation rather than guess.
                return Err(SlabError::DoubleFree(addr));
            }
        }
        c.sheaves(cpu_id).sheaf_free(addr, |full| self.flush(cpu, c, full));
        Ok(())
    }

    /// Returns objects to their slabs.
    fn flush(&self, cpu: &Cpu<'_>, c: &SlabCache, objs: impl Iterator<Item = usize>) {
        let mut discard = [0usize; crate::sheaf::SHEAF_CAPACITY * 2];
        let mut nd = 0;
        for obj in objs {
            let slab = self.slab_of(obj).expect("objects in sheaves are slab objects");
            let node = self.slab_node(slab);
            let mut n = c.nodes[node].lock();
            // A hardware-poisoned slab (crate::hwpoison) is off the partial list for good:
            // its freed objects are lost, and it is retired once its last object is freed.
            let poisoned = slab.flags.flags() & crate::desc::PG_HWPOISON != 0;
            if poisoned {
                if slab.inuse.fetch_sub(1, Ordering::Relaxed) == 1 {
                    n.nr_slabs -= 1;
                    discard[nd] = slab as *const Slab as usize;
                    nd += 1;
                }
                continue;
            }
            c.freeptr_of(obj).store(c.encode_free(obj, slab.freelist.load(Ordering::Relaxed)), Ordering::Relaxed);
            slab.freelist.store(obj, Ordering::Relaxed);
            let was_full = slab.inuse.load(Ordering::Relaxed) == c.objects;
            let inuse = slab.inuse.fetch_sub(1, Ordering::Relaxed) - 1;
            n.free_objs += 1;
            if was_full {
                Self::list_push(&mut n, slab);
            }
            if inuse == 0 && n.nr_partial > MIN_PARTIAL {
                Self::list_remove(&mut n, slab);
                n.nr_slabs -= 1;
                n.free_objs -= c.objects as u64;
                discard[nd] = slab as *const Slab as usize;
                nd += 1;
            }
        }
        for &s in &discard[..nd] {
            // SAFETY: unlinked above under the node lock; ours to discard.
            let slab = unsafe { &*(s as *const Slab) };
            self.discard_slab(cpu, c, self.slab_node(slab), slab);
        }
    }

    fn slab_node(&self, slab: &Slab) -> usize {
        self.pages.memmap().region_of(slab.flags.pfn()).map_or(0, |r| r.node as usize)
    }

    fn list_push(n: &mut CacheNode, s: &Slab) {
        let me = s as *const Slab as usize;
        s.list.prev.store(0, Ordering::Relaxed);
        s.list.next.store(n.partial, Ordering::Relaxed);
        if n.partial != 0 {
            // SAFETY: partial-list members are live slab descriptors.
            unsafe { &*(n.partial as *const Slab) }.list.prev.store(me, Ordering::Relaxed);
        }
        n.partial = me;
        n.nr_partial += 1;
    }

    fn list_remove(n: &mut CacheNode, s: &Slab) {
        let (prev, next) = (s.list.prev.load(Ordering::Relaxed), s.list.next.load(Ordering::Relaxed));
        if prev == 0 {
            n.partial = next;
        } else {
            // SAFETY: as list_push.
            unsafe { &*(prev as *const Slab) }.list.next.store(next, Ordering::Relaxed);
        }
        if next != 0 {
            // SAFETY: as list_push.
            unsafe { &*(next as *const Slab) }.list.prev.store(prev, Ordering::Relaxed);
        }
        n.nr_partial -= 1;
    }

    /// Fills the CPU's main sheaf from partial slabs, making a new slab if none has free
    /// objects.
    fn refill(&self, cpu: &Cpu<'_>, c: &SlabCache, s: &mut CpuSheaves) -> Result<(), AllocError> {
        let mut node = self.node_of(cpu);
        loop {
            {
                let mut n = c.nodes[node].lock();
                while !s.main.is_full() && n.partial != 0 {
                    // SAFETY: partial-list members are live slab descriptors of this cache.
                    let slab = unsafe { &*(n.partial as *const Slab) };
                    while !s.main.is_full() {
                        let obj = slab.freelist.load(Ordering::Relaxed);
                        if obj == 0 {
                            break;
                        }
                        slab.freelist
                            .store(c.encode_free(obj, c.freeptr_of(obj).load(Ordering::Relaxed)), Ordering::Relaxed);
                        slab.inuse.fetch_add(1, Ordering::Relaxed);
                        n.free_objs -= 1;
                        s.main.push(obj);
                    }
                    if slab.freelist.load(Ordering::Relaxed) == 0 {
                        Self::list_remove(&mut n, slab);
                    }
                }
            }
            if s.main.len() > 0 {
                return Ok(());
            }
            self.reap_rcu(cpu, c);
            let slab = self.new_slab(cpu, c)?;
            // The page allocator may have fallen back to another node: refill from the node
            // the slab is on (looking only at this CPU's node again would make new slabs until
            // that node ran out of memory).
            node = self.slab_node(slab);
            let mut n = c.nodes[node].lock();
            n.nr_slabs += 1;
            n.free_objs += c.objects as u64;
            Self::list_push(&mut n, slab);
        }
    }

    /// Makes a slab: pages, descriptor, free list, constructor, and Slab words on every page.
    fn new_slab(&self, cpu: &Cpu<'_>, c: &SlabCache) -> Result<&'a Slab, AllocError> {
        let pfn = self.pages.alloc_internal(cpu, c.order, c.gfp)?;
        // Slab gfp is KERNEL or RECLAIMABLE, never from unmapped memory (Gfp::may_be_unmapped).
        let Some(base) = self.pages.platform().direct_map(pfn) else {
            let _ = self.pages.free_internal(cpu, pfn, c.order);
            return Err(AllocError::NoMemory { order: c.order });
        };
        let base = base.as_ptr() as usize;
        let desc: &Slab = if c.self_hosted {
            // SAFETY: the first object slot of the fresh, zeroed slab; all-zero is a valid
            // Slab (all atomics).
            unsafe { &*(base as *const Slab) }
        } else {
            match self.cache_alloc_at(cpu, self.slab_desc_cache(), FaultSite::Desc) {
                // SAFETY: an object of the slab-descriptor cache: zeroed or a former Slab.
                Ok(o) => unsafe { &*(o.as_ptr() as *const Slab) },
                Err(e) => {
                    let _ = self.pages.free_internal(cpu, pfn, c.order);
                    return Err(e);
                }
            }
        };
        let first = base + c.first_obj as usize * c.stride;
        for i in 0..c.objects as usize {
            let obj = first + i * c.stride;
            if let Some(ctor) = c.ctor {
                // SAFETY: obj is a fresh object slot inside our slab.
                ctor(unsafe { NonNull::new_unchecked(obj as *mut u8) });
            }
            let next = if i + 1 < c.objects as usize { obj + c.stride } else { 0 };
            c.freeptr_of(obj).store(c.encode_free(obj, next), Ordering::Relaxed);
            if let Some(st) = c.state_of(obj) {
                st.store(STATE_FREE, Ordering::Relaxed);
            }
        }
        desc.flags.init(0, c.order, pfn);
        desc.cache.store(c as *const SlabCache as usize, Ordering::Relaxed);
        desc.freelist.store(first, Ordering::Relaxed);
        desc.inuse.store(0, Ordering::Relaxed);
        desc.objects.store(c.objects, Ordering::Relaxed);
        let w = Word::desc(DescPtr::from_ref(desc));
        self.pages.stamp_block(pfn, c.order, w);
        Ok(desc)
    }

    /// Marks the slab of page `pfn` hardware-poisoned (crate::hwpoison): no object is allocated
    /// from it again, objects freed into it are lost, and once the last one is freed its pages
    /// become `HwPoison` instead of going back to the allocator (after a grace period for
    /// TYPESAFE_BY_RCU caches).
    #[cfg(feature = "health")]
    pub(crate) fn poison_slab(&self, cpu: &Cpu<'_>, slab: &Slab, pfn: Pfn) -> SlabPoison {
        // SAFETY: a slab names its live cache while it exists, and the caller (memory_failure)
        // found the slab through a Slab page word at a point where nothing frees it meanwhile.
        let c = unsafe { &*(slab.cache.load(Ordering::Acquire) as *const SlabCache) };
        // Objects of this slab sitting in CPU sheaves would still be handed out: return every
        // sheaf's objects to their slabs first.
        for i in 0..c.nr_cpus {
            c.sheaves(i).sheaf_flush(|objs| self.flush(cpu, c, objs));
        }
        let node = self.slab_node(slab);
        let inuse;
        {
            let mut n = c.nodes[node].lock();
            // The flush may have emptied and discarded the slab.
            let still = matches!(self.pages.memmap().load(self.pages.platform(), pfn).map(|v| v.word.kind()),
                Some(PageKind::Slab(d)) if d.addr() == slab as *const Slab as usize);
            if !still {
                return SlabPoison::Gone;
            }
            if slab.flags.flags() & crate::desc::PG_HWPOISON != 0 {
                return SlabPoison::Already;
            }
            let me = slab as *const Slab as usize;
            let mut on_partial = false;
            let mut cur = n.partial;
            while cur != 0 {
                if cur == me {
                    on_partial = true;
                    break;
                }
                // SAFETY: partial-list members are live slab descriptors of this cache.
                cur = unsafe { &*(cur as *const Slab) }.list.next.load(Ordering::Relaxed);
            }
            if slab.freelist.load(Ordering::Relaxed) != 0 && !on_partial {
                // Empty and waiting for a grace period before its pages are freed.
                return SlabPoison::Gone;
            }
            slab.flags.set(crate::desc::PG_HWPOISON);
            if on_partial {
                Self::list_remove(&mut n, slab);
            }
            inuse = slab.inuse.load(Ordering::Relaxed);
            n.free_objs -= (c.objects - inuse) as u64;
            slab.freelist.store(0, Ordering::Relaxed);
            if inuse == 0 {
                n.nr_slabs -= 1;
            }
        }
        if inuse == 0 {
            self.discard_slab(cpu, c, node, slab);
        }
        SlabPoison::Poisoned { cache: c.name, inuse, objects: c.objects }
    }

    /// Frees an empty slab's pages (after a grace period for TYPESAFE_BY_RCU caches).
    fn discard_slab(&self, cpu: &Cpu<'_>, c: &SlabCache, node: usize, s: &Slab) {
        if c.typesafe {
            let mut n = c.nodes[node].lock();
            s.list.next.store(n.rcu_pending, Ordering::Relaxed);
            n.rcu_pending = s as *const Slab as usize;
            n.rcu_cookie = Some(self.pages.rcu().start_grace_period());
            return;
        }
        self.free_slab_pages(cpu, c, s);
    }

    fn free_slab_pages(&self, cpu: &Cpu<'_>, c: &SlabCache, s: &Slab) {
        let pfn = s.flags.pfn();
        let poisoned = s.flags.flags() & crate::desc::PG_HWPOISON != 0;
        self.pages.stamp_block(pfn, c.order, Word::TAIL);
        if poisoned {
            if !c.self_hosted {
                let r = self.cache_free(cpu, self.slab_desc_cache(), NonNull::from(s).cast::<u8>());
                debug_assert!(r.is_ok(), "slab descriptor free: {r:?}");
            }
            self.pages.retire_poisoned_block(pfn, c.order);
            return;
        }
        let rm = self.pages.memmap().region_map(self.pages.memmap().region_index(pfn).expect("slab pfn"));
        if !c.self_hosted {
            let obj = NonNull::from(s).cast::<u8>();
            let r = self.cache_free(cpu, self.slab_desc_cache(), obj);
            debug_assert!(r.is_ok(), "slab descriptor free: {r:?}");
        }
        self.pages.free_claimed(cpu, rm, pfn, c.order);
    }

    /// Frees the slabs of `c` whose grace period has elapsed.
    fn reap_rcu(&self, cpu: &Cpu<'_>, c: &SlabCache) {
        if !c.typesafe {
            return;
        }
        for node in 0..MAX_NODES {
            let mut list = {
                let mut n = c.nodes[node].lock();
                match n.rcu_cookie {
                    Some(ck) if n.rcu_pending != 0 && self.pages.rcu().poll(ck) => {
                        n.rcu_cookie = None;
                        core::mem::replace(&mut n.rcu_pending, 0)
                    }
                    _ => 0,
                }
            };
            while list != 0 {
                // SAFETY: slabs on the pending list are unlinked and ours.
                let s = unsafe { &*(list as *const Slab) };
                list = s.list.next.load(Ordering::Relaxed);
                self.free_slab_pages(cpu, c, s);
            }
        }
    }

    /// The slabinfo row of a cache.
    pub(crate) fn slab_info(&self, c: &SlabCache) -> SlabInfo {
        let (mut slabs, mut free, mut empty) = (0, 0, 0);
        for node in &c.nodes {
            let n = node.lock();
            slabs += n.nr_slabs;
            free += n.free_objs;
            let mut cur = n.partial;
            while cur != 0 {
                // SAFETY: partial-list members are live.
                let s = unsafe { &*(cur as *const Slab) };
                empty += (s.inuse.load(Ordering::Relaxed) == 0) as u64;
                cur = s.list.next.load(Ordering::Relaxed);
            }
        }
        let num = slabs * c.objects as u64;
        SlabInfo {
            name: c.name,
            active_objs: num - free,
            num_objs: num,
            objsize: c.obj_size,
            objperslab: c.objects,
            pagesperslab: 1 << c.order,
            active_slabs: slabs - empty,
            num_slabs: slabs,
        }
    }

    /// Writes every cache in the format of Linux's /proc/slabinfo (version 2.1 columns).
    pub(crate) fn write_slabinfo(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "slabinfo - version: 2.1")?;
        writeln!(
            out,
            "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : slabdata <active_slabs> <num_slabs> <sharedavail>"
        )?;
        let mut res = Ok(());
        self.for_each_cache(|c| {
            let i = self.slab_info(c);
            if res.is_ok() {
                res = writeln!(
                    out,
                    "{:<17} {:>6} {:>6} {:>6} {:>4} {:>4} : slabdata {:>6} {:>6} {:>6}",
                    i.name,
                    i.active_objs,
                    i.num_objs,
                    i.objsize,
                    i.objperslab,
                    i.pagesperslab,
                    i.active_slabs,
                    i.num_slabs,
                    0
                );
            }
        });
        res
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The multiply-and-shift object index equals the division at every boundary, for every
    /// stride a cache can have (multiples of 8 up to half the largest slab, plus the extra
    /// free-pointer and debug words).
    #[test]
    fn obj_index_matches_division() {
        for size in (8..=(PAGE_SIZE << MAX_SLAB_ORDER) / 2).step_by(8) {
            for extra in [0, 8, 16] {
                let args = CacheArgs::new("t", size);
                let Some(mut c) = SlabCache::layout(&args, false, false) else { continue };
                c.stride = size + extra;
                c.stride_recip = (1u64 << 32).div_ceil(c.stride as u64);
                let slab_bytes = PAGE_SIZE << MAX_SLAB_ORDER;
                let mut k = 0;
                while k * c.stride < slab_bytes {
                    for off in [k * c.stride, k * c.stride + 1, (k + 1) * c.stride - 1] {
                        if off < slab_bytes {
                            assert_eq!(c.obj_index(off), off / c.stride, "stride {} off {off}", c.stride);
                        }
                    }
                    k += 1;
                }
            }
        }
    }
}
