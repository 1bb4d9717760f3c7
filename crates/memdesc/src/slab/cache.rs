//! A slab cache (`kmem_cache`): its layout (object size, stride, slab order, where the free
//! pointer lives, the debug state word), its per-node lists and per-CPU sheaves, and the
//! encoding of its free lists. The operations on caches and objects are the slab layer's view
//! methods in [`super::alloc`]; the handles users hold are in [`super::handle`].
//!
//! The slab allocator: object caches whose slabs are described by [`Slab`] descriptors that
//! every page of the slab points to. One implementation serves kmalloc, user caches, and the
//! descriptor caches of the memdesc design (including the cache of slab descriptors itself).
//!
//! - **Layout**: a slab is 2^order pages (order 0..=3, chosen per cache to keep waste under
//!   1/16, 1/8 or 1/4 of the slab, in that order of preference). Objects are `stride` bytes
//!   apart; a free object holds the address of the next free object at `freeptr` bytes into
//!   its slot — at the end of the slot for `TYPESAFE_BY_RCU` caches unless the creator names a
//!   field that lockless readers never trust (Linux's `freeptr_offset`).
//! - **Fast path**: per-CPU [sheaves](crate::slab::sheaf), touched by their CPU with no lock (its
//!   `Cpu` token is the proof); the node lock and the partial list are touched only to refill
//!   or flush a sheaf, and other CPUs get a CPU's objects back by ticket ([`super::sheaf`]).
//! - **Partial lists per node** hold slabs with free objects; full slabs are on no list; at
//!   most [`MIN_PARTIAL`] empty slabs stay cached per node, the rest go back to the page
//!   allocator, and [`PhysMem::shrink_cache`](crate::PhysMem::shrink_cache) returns them all.
//! - **TYPESAFE_BY_RCU**: a freed object is only ever reused as an object of the same cache,
//!   and a slab's pages go back to the page allocator only after an RCU grace period, so a
//!   lockless reader may still read an object it found before it was freed (and must
//!   revalidate, see [`crate::memmap::lookup`]).
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
//!   Allocation clears the slot, so a free finds a value that decodes to 0 or to an address
//!   in the same slab's object slots only if the object is already free (in any CPU's sheaf
//!   or on the slab's free list) — or, with odds of about `slab bytes / 2^64`, if the owner
//!   stored exactly such a value there; then the free is refused and the object kept, never handed out twice. Cost:
//!   one store per allocation, one load, one multiply, two compares and a store per free, on
//!   a line the caller just touched, no atomic read-modify-write. Two frees of one object racing on two
//!   CPUs (a breach of the raw free's contract no safe code can commit: a `KBox` or
//!   `SlabObj` is freed once) may both pass; a free after a free never does.
//! - **Families** ([`CacheFamily`]): kmalloc caches, caches users create, and the crate's own
//!   (descriptor caches, the cache of caches, …). [`PhysMem::kfree_raw`](crate::PhysMem::kfree_raw) frees only kmalloc
//!   objects, and only user caches can be reached through a [`CacheRef`](super::handle::CacheRef), so no safe or
//!   documented path frees a live descriptor.
//! - **Owned objects**: [`CacheRef::alloc`](super::handle::CacheRef::alloc) returns a [`SlabObj`](super::handle::SlabObj) that [`CacheRef::free`](super::handle::CacheRef::free)
//!   consumes; [`crate::slab::kmalloc::KBox`] is kmalloc's.

use core::fmt;
use core::ptr::NonNull;

use crate::base::addr::{Pfn, PAGE_SIZE};
use crate::base::gfp::Gfp;
use crate::base::layout::MAX_NODES;
use crate::base::list::{Links, List};
use crate::base::rcu::GpCookie;
use crate::base::sync::SpinLock;
use crate::memmap::desc_ref::Kept;
use crate::memmap::word::Tag;
use crate::slab::sheaf::CpuSheaves;

/// Empty slabs kept per node before freeing to the page allocator.
pub const MIN_PARTIAL: u64 = 5;
/// Largest slab order.
pub const MAX_SLAB_ORDER: u32 = 3;

pub(super) const STATE_FREE: usize = 0x6b6b_6b6b_0000_f4ee;
/// Multiplier of the free-pointer encoding (the 64-bit golden ratio: odd, well mixed).
pub(super) const FREE_MIX: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seed of per-cache free-pointer keys (a plain counter, core's atomic even under loom: no
/// protocol depends on it).
static FREE_KEY_SEED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0x2545_f491_4f6c_dd1d);

/// The family of a cache: which free paths may reach its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheFamily {
    /// A kmalloc size class: objects are freed with [`PhysMem::kfree`](crate::PhysMem::kfree).
    Kmalloc,
    /// A cache created with [`PhysMem::create_cache`](crate::PhysMem::create_cache): objects are freed through its
    /// [`CacheRef`](super::handle::CacheRef).
    User,
    /// The crate's own caches (descriptor caches of folios, slabs, page tables, …, the cache of
    /// caches, page-cache nodes): no public free reaches their objects.
    Internal,
}
pub(super) const STATE_ALLOC: usize = 0xa110_ca7e_0000_0000;

/// The slab descriptor (defined with the other descriptor types: the page word names it in
/// every build).
pub use crate::memmap::desc::Slab;

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
    /// The cache is not a user cache: it cannot be reached through a [`CacheRef`](super::handle::CacheRef).
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
    /// A CPU (its token held by a thread that did not come back to this cache in time) still
    /// holds objects of the cache in its sheaves: the cache was not destroyed. It flushes them
    /// at its next operation on the cache.
    CpuBusy(usize),
    /// A large kmalloc free failed a page check.
    Page(crate::FreeError),
    /// The cache's objects cannot hold the type asked for (too small, too little aligned, or
    /// `TYPESAFE_BY_RCU`): see [`super::obj::ObjCache`].
    Layout {
        /// The cache.
        cache: &'static str,
        /// Size of the type.
        size: usize,
        /// Alignment of the type.
        align: usize,
    },
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
            SlabError::CpuBusy(cpu) => write!(f, "CPU {cpu} did not return its cached objects in time"),
            SlabError::Page(e) => write!(f, "{e}"),
            SlabError::Layout { cache, size, align } => {
                write!(f, "cache {cache} cannot hold owned objects of {size} bytes aligned to {align}")
            }
        }
    }
}

impl core::error::Error for SlabError {}

/// Per-node slab lists of a cache.
pub(crate) struct CacheNode {
    /// Slabs with free objects (and at most [`MIN_PARTIAL`] empty ones), newest first.
    pub(super) partial: List<Slab>,
    pub(super) nr_slabs: u64,
    pub(super) free_objs: u64,
    /// Empty slabs of a TYPESAFE_BY_RCU cache waiting for the grace period of `rcu_cookie`.
    pub(super) rcu_pending: List<Slab>,
    pub(super) rcu_cookie: Option<GpCookie>,
}

impl CacheNode {
    pub(super) const EMPTY: CacheNode =
        CacheNode { partial: List::new(), nr_slabs: 0, free_objs: 0, rcu_pending: List::new(), rcu_cookie: None };
}

/// A slab cache (`kmem_cache`). Lives in slab or boot memory at a fixed address, since slab
/// descriptors point back to it. Cache-line aligned, the fields the hit paths read first.
#[repr(C, align(64))]
pub struct SlabCache {
    // First cache line: everything the kmalloc/kfree hit paths read.
    pub(super) percpu: NonNull<CpuSheaves>,
    pub(super) nr_cpus: usize,
    pub(super) freeptr: usize,
    /// Key of the free-pointer encoding (see the module's "always-on double-free check").
    pub(super) free_key: u64,
    /// Offset of the first object in a slab (`first_obj * stride`).
    pub(super) obj_lo: usize,
    /// Bytes of a slab's object slots (`objects * stride`): object `i` starts at
    /// `obj_lo + i * stride` for offsets below `obj_lo + obj_span`.
    pub(super) obj_span: usize,
    /// `ceil(2^32 / stride)`: the object-start test by one multiply instead of a division
    /// ([`SlabCache::is_obj_start`]).
    pub(super) stride_recip: u64,
    /// No debug state word: the allocation and free hit paths may serve this cache (the
    /// `state_off.is_none()` the hit paths ask, kept beside their other fields).
    pub(super) hit_ok: bool,
    /// A kmalloc cache with `hit_ok`: kfree's hit path may free its objects (one flag for
    /// the family and the state-word checks).
    pub(super) kfree_hit_ok: bool,
    pub(super) stride: usize,
    pub(super) state_off: Option<usize>,
    pub(super) family: CacheFamily,
    pub(super) typesafe: bool,
    pub(super) self_hosted: bool,
    /// Never destroyed (kmalloc's, the descriptor caches, the bootstrap caches and those of
    /// `Slabs::new_cache_forever`): `destroy_cache` refuses it, so a `Kept` of it stays valid.
    pub(super) permanent: bool,
    pub(super) order: u32,
    pub(super) objects: u32,
    pub(super) first_obj: u32,
    pub(super) percpu_order: u32,
    pub(super) name: &'static str,
    pub(super) size: usize,
    pub(super) obj_size: usize,
    pub(super) ctor: Option<fn(NonNull<u8>)>,
    pub(super) gfp: Gfp,
    pub(super) percpu_pfn: Pfn,
    /// Links on the machine's list of caches.
    pub(super) links: Links,
    pub(super) nodes: [SpinLock<CacheNode>; MAX_NODES],
}

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
    pub(super) fn layout(args: &CacheArgs, debug: bool, self_hosted: bool) -> Option<SlabCache> {
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
            obj_lo: self_hosted as usize * stride,
            obj_span: objects as usize * stride,
            freeptr,
            hit_ok: state_off.is_none(),
            kfree_hit_ok: false,
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
            permanent: false,
            links: Links::new(),
        })
    }

    /// Bytes of per-CPU sheaves for `nr_cpus` CPUs, as a page order.
    pub(super) fn percpu_order(nr_cpus: usize) -> u32 {
        let bytes = nr_cpus * core::mem::size_of::<CpuSheaves>();
        bytes.div_ceil(PAGE_SIZE).next_power_of_two().trailing_zeros()
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
        // Each CPU's count is allocations minus frees there (wrapping: a CPU that frees what
        // another allocated goes below zero); the sum is exact.
        (0..self.nr_cpus).fold(0u64, |sum, cpu| sum.wrapping_add(self.sheaves(cpu).net()))
    }

    /// Whether the offset `rel` (below [`PAGE_SIZE`] `<< MAX_SLAB_ORDER`) from the first
    /// object is a multiple of the stride, by one multiply: with `R = ceil(2^32 / stride)`
    /// and `rel = k * stride + r` (`r < stride`), `rel * R mod 2^32` is `k * e + r * R`
    /// where `e = stride * R - 2^32 < stride`; offsets and strides are at most 2^15 (a slab
    /// is at most 32 KiB), so `(k + 1) * e < 2^16 < 2^17 <= R` and the sum does not wrap: it
    /// is below `R` exactly when `r == 0`.
    #[inline(always)]
    pub(super) fn is_obj_start(&self, rel: usize) -> bool {
        debug_assert!(rel < PAGE_SIZE << MAX_SLAB_ORDER);
        ((rel as u64).wrapping_mul(self.stride_recip) as u32) < self.stride_recip as u32
    }

    /// The free-pointer encoding of `next` stored in the free object `obj` (its own inverse).
    #[inline]
    pub(super) fn encode_free(&self, obj: usize, next: usize) -> usize {
        next ^ self.free_mix(obj)
    }

    /// The mask [`SlabCache::encode_free`] applies to `obj`'s free pointer (also the encoding
    /// of "no successor"): computed once where a path both checks and writes the slot.
    #[inline(always)]
    pub(super) fn free_mix(&self, obj: usize) -> usize {
        ((obj as u64 ^ self.free_key).wrapping_mul(FREE_MIX)) as usize
    }

    /// Whether the free-pointer slot value `v` of `obj` (`rel` bytes after its slab's first
    /// object) says the object is free: it decodes to 0 (no successor: the last of a free
    /// list, or in a sheaf) or to an address inside the same slab's object slots (a successor
    /// on the free list: `next - first object < obj_span`, where the first object is
    /// `obj - rel`). One multiply, a subtract, an add and two compares.
    #[inline(always)]
    pub(super) fn looks_free(&self, obj: usize, v: usize, rel: usize) -> bool {
        self.looks_free_mixed(obj, v ^ self.free_mix(obj), rel)
    }

    /// [`SlabCache::looks_free`] of the decoded slot value `next` (`v ^ free_mix(obj)`).
    #[inline(always)]
    pub(super) fn looks_free_mixed(&self, obj: usize, next: usize, rel: usize) -> bool {
        next == 0 || next.wrapping_sub(obj).wrapping_add(rel) < self.obj_span
    }
}

/// Pages and objects of the bootstrap caches placed by the boot allocator.
pub(crate) struct SlabBoot {
    pub(crate) kmem_cache: Kept<SlabCache>,
    pub(crate) slab_desc: Kept<SlabCache>,
}

impl SlabBoot {
    /// Boot-allocator pages the two bootstrap caches need: their structs and sheaves.
    pub(crate) fn pages(nr_cpus: usize) -> u64 {
        1 + 2 * (1u64 << SlabCache::percpu_order(nr_cpus))
    }
}

#[cfg(not(loom))]
const _: () = assert!(2 * core::mem::size_of::<SlabCache>() <= PAGE_SIZE);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The one-multiply object-start test equals `off % stride == 0` at and around every
    /// boundary, for every stride a cache can have (multiples of 8 up to half the largest
    /// slab, plus the extra free-pointer and debug words, and large alignments' padding up
    /// to the whole slab).
    #[test]
    fn obj_start_matches_division() {
        for size in (8..=(PAGE_SIZE << MAX_SLAB_ORDER) / 2).step_by(8) {
            for extra in [0, 8, 16, 4096, 8192, 16384] {
                if size + extra > PAGE_SIZE << MAX_SLAB_ORDER {
                    continue;
                }
                let args = CacheArgs::new("t", size);
                let Some(mut c) = SlabCache::layout(&args, false, false) else { continue };
                c.stride = size + extra;
                c.stride_recip = (1u64 << 32).div_ceil(c.stride as u64);
                let slab_bytes = PAGE_SIZE << MAX_SLAB_ORDER;
                let mut k = 0;
                while k * c.stride < slab_bytes {
                    let s = c.stride;
                    for off in [k * s, k * s + 1, k * s + 8, k * s + s / 2, (k + 1) * s - 8, (k + 1) * s - 1] {
                        if off < slab_bytes {
                            assert_eq!(c.is_obj_start(off), off % s == 0, "stride {s} off {off}");
                        }
                    }
                    k += 1;
                }
            }
        }
    }
}
