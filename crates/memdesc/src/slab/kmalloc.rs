//! kmalloc: general-purpose kernel allocations by size, served by size-class slab caches up
//! to 8 KiB and straight from the page allocator above that ("large kmalloc", an undescribed
//! page kind whose head word records the order). `kfree` and `ksize` find the owner from the
//! pointer's page word in O(1).
//!
//! [`PhysMem::kmalloc`](crate::PhysMem::kmalloc) returns an owned [`KBox`] that [`PhysMem::kfree`](crate::PhysMem::kfree) consumes. The raw
//! interface ([`PhysMem::kmalloc_raw`](crate::PhysMem::kmalloc_raw), the ownership-vouching [`PhysMem::kfree_raw`](crate::PhysMem::kfree_raw)) takes and gives
//! pointers for code that keeps them (C callers, traces). Either free accepts only kmalloc
//! memory: an object of a descriptor cache, a user cache or another internal cache is refused
//! with [`SlabError::NotKmalloc`], and a double free with [`SlabError::DoubleFree`] (always on,
//! see [`crate::slab`]).
//!
//! A `KBox` cannot be freed twice or turned into a descriptor's address by safe code:
//!
//! ```compile_fail,E0308
//! # fn f<P: memdesc::Platform>(mem: &memdesc::PhysMem<P>, cpu: &memdesc::Cpu<'_>, folio: &memdesc::memmap::desc::Folio) {
//! // kfree takes a KBox, which only kmalloc makes: a descriptor's address does not type-check.
//! mem.kfree(cpu, core::ptr::NonNull::from(folio).cast::<u8>()).unwrap();
//! # }
//! ```
//!
//! ```compile_fail,E0382
//! # fn f<P: memdesc::Platform>(mem: &memdesc::PhysMem<P>, cpu: &memdesc::Cpu<'_>) {
//! let b = mem.kmalloc(cpu, 64, memdesc::Gfp::KERNEL).unwrap();
//! mem.kfree(cpu, b).unwrap();
//! mem.kfree(cpu, b).unwrap(); // error[E0382]: use of moved value: `b`
//! # }
//! ```

use core::ptr::NonNull;

use crate::base::addr::PAGE_SIZE;
use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::platform::Platform;
#[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
use crate::memmap::desc::{CachedDescriptor, Folio, NR_DESC_KINDS};
use crate::memmap::desc_ref::Kept;
use crate::memmap::word::{PageKind, Subtype};
use crate::page_alloc::AllocError;
use crate::slab::{
    CacheArgs, CacheFamily, KmallocTables, SlabCache, SlabError, Slabs, KMALLOC_SMALL_MAX, KMALLOC_SMALL_SLOTS,
};

/// The size classes, as Linux's (including 96 and 192).
pub const KMALLOC_SIZES: [usize; NR_KMALLOC] = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
/// Number of size classes (defined beside the slab layer's state, which holds one cache per
/// class).
pub use super::NR_KMALLOC;
/// Largest size served by a slab cache.
pub const KMALLOC_MAX_CACHE_SIZE: usize = 8192;
const NAMES: [&str; NR_KMALLOC] = [
    "kmalloc-8",
    "kmalloc-16",
    "kmalloc-32",
    "kmalloc-64",
    "kmalloc-96",
    "kmalloc-128",
    "kmalloc-192",
    "kmalloc-256",
    "kmalloc-512",
    "kmalloc-1k",
    "kmalloc-2k",
    "kmalloc-4k",
    "kmalloc-8k",
];

/// Memory from [`PhysMem::kmalloc`](crate::PhysMem::kmalloc): owns it until [`PhysMem::kfree`](crate::PhysMem::kfree) consumes it.
///
/// Not `Clone`: one allocation, one owner. Dropping it leaks the memory (freeing needs a
/// [`Cpu`], which `Drop` has not; see [`crate::page_alloc::pages`] invariant 3 for the same choice).
#[must_use = "dropping a KBox leaks the memory; free it with PhysMem::kfree"]
#[derive(Debug, PartialEq, Eq)]
pub struct KBox {
    ptr: NonNull<u8>,
    machine: u32,
}

impl KBox {
    /// The memory's address (valid until it is freed; at least the size asked for).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    /// Gives up the handle for the raw pointer: free it with [`PhysMem::kfree_raw`](crate::PhysMem::kfree_raw) (or make a
    /// handle again with [`KBox::from_raw`]).
    #[inline]
    pub fn into_raw(self) -> NonNull<u8> {
        self.ptr
    }
    /// A handle for memory of `machine` (the public constructor, `KBox::from_raw`, takes the
    /// machine and lives in `machine/raw.rs`, with the handle's `Send`/`Sync`).
    #[inline]
    pub(crate) fn new(ptr: NonNull<u8>, machine: u32) -> KBox {
        KBox { ptr, machine }
    }
}

/// The size class serving `size` bytes (size 0 gets the smallest class).
#[inline]
pub fn kmalloc_index(size: usize) -> Option<usize> {
    if size > KMALLOC_MAX_CACHE_SIZE {
        return None;
    }
    Some(match size {
        0..=8 => 0,
        9..=16 => 1,
        17..=32 => 2,
        33..=64 => 3,
        65..=96 => 4,
        97..=128 => 5,
        129..=192 => 6,
        193..=256 => 7,
        _ => 8 + (size - 1).ilog2() as usize - 8,
    })
}

impl<'a, P: Platform> Slabs<'a, P> {
    /// Creates the size classes and fills the size table (slot `size.div_ceil(8)` names the
    /// class serving `size`).
    pub(crate) fn create_kmalloc_caches(&self) -> Result<KmallocTables, AllocError> {
        let cpu = self.pages.cpus().claim_any().ok_or(AllocError::NoMemory { order: 0 })?;
        let mut out = [Kept::NONE; NR_KMALLOC];
        for (i, &size) in KMALLOC_SIZES.iter().enumerate() {
            let align = if size.is_power_of_two() { size.min(PAGE_SIZE) } else { 8 };
            let args = CacheArgs { align, ..CacheArgs::new(NAMES[i], size) };
            out[i] = self.new_cache_forever(&cpu, &args, CacheFamily::Kmalloc)?;
        }
        let mut small = [Kept::NONE; KMALLOC_SMALL_SLOTS];
        for (slot, k) in small.iter_mut().enumerate() {
            // kmalloc's caches are permanent, so they outlive the table.
            if let Some(c) = kmalloc_index(slot * 8).and_then(|i| out[i].get()) {
                *k = Self::keep_permanent(c).ok_or(AllocError::InvalidOrder(0))?;
            }
        }
        Ok((out, small))
    }

    /// The cache serving `size` bytes; `None` above [`KMALLOC_MAX_CACHE_SIZE`] (and before boot
    /// made the caches). Sizes up to [`KMALLOC_SMALL_MAX`] by one table load.
    #[inline(always)]
    fn kmalloc_cache_for(&self, size: usize) -> Option<&'a SlabCache> {
        let k = if size <= KMALLOC_SMALL_MAX {
            &self.state.kmalloc_small[size.div_ceil(8)]
        } else {
            &self.state.kmalloc[kmalloc_index(size)?]
        };
        k.get()
    }

    /// Allocates `size` bytes (see the crate-level example; `memdesc_host::boot` gives a
    /// machine to try it on). The [`KBox`] owns the memory; free it with [`PhysMem::kfree`](crate::PhysMem::kfree).
    #[inline(always)]
    pub(crate) fn kmalloc(&self, cpu: &Cpu<'_>, size: usize, gfp: Gfp) -> Result<KBox, AllocError> {
        let ptr = self.kmalloc_raw(cpu, size, gfp)?;
        Ok(KBox { ptr, machine: self.pages.machine_id() })
    }

    /// As [`PhysMem::kmalloc`](crate::PhysMem::kmalloc), returning the address instead of a handle. Safe: the caller
    /// owns the memory and gives it back with [`PhysMem::kfree_raw`](crate::PhysMem::kfree_raw) (or wraps it with
    /// [`KBox::from_raw`]); losing the pointer leaks it.
    #[inline(always)]
    pub(crate) fn kmalloc_raw(&self, cpu: &Cpu<'_>, size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        let Some(c) = self.kmalloc_cache_for(size) else {
            return self.kmalloc_large(cpu, size, gfp);
        };
        let p =
            if gfp.contains(Gfp::ZERO) { self.cache_alloc_zeroed(cpu, c, size)? } else { self.cache_alloc(cpu, c)? };
        Ok(p)
    }

    /// kmalloc above [`KMALLOC_MAX_CACHE_SIZE`]: whole pages from the page allocator.
    #[inline(never)]
    fn kmalloc_large(self, cpu: &Cpu<'_>, size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        if size <= KMALLOC_MAX_CACHE_SIZE {
            // Only before boot has made the caches.
            return Err(AllocError::NoMemory { order: 0 });
        }
        let order = (size.div_ceil(PAGE_SIZE)).next_power_of_two().trailing_zeros();
        // kmalloc memory is used through its address: never from unmapped memory, so a
        // caller's MOVABLE flag is dropped (Gfp::may_be_unmapped).
        let pfn = self.pages.alloc_with(cpu, order, gfp.without(Gfp::MOVABLE), |rm| {
            crate::page_alloc::zone::Buddy::<P>::undescribed(rm, Subtype::LargeKmalloc, order)
        })?;
        let p = match self.pages.platform().direct_map(pfn) {
            Some(p) => p,
            None => {
                // Unreachable with the zone rule; a platform that withdrew the map gets an
                // error, not a panic.
                match self.pages.check_and_claim(pfn, order, |s| s == Subtype::LargeKmalloc) {
                    Ok(rm) => self.pages.free_claimed(cpu, rm, pfn, order),
                    Err(e) => debug_assert!(false, "fresh block refused: {e:?}"),
                }
                return Err(AllocError::NoMemory { order });
            }
        };
        Ok(p)
    }

    /// Frees memory from [`PhysMem::kmalloc`](crate::PhysMem::kmalloc), consuming its handle. Checked as
    /// [`PhysMem::kfree_raw`](crate::PhysMem::kfree_raw); a handle of another machine is refused with
    /// [`SlabError::OutOfRange`]. A refused free keeps the memory allocated (leaked).
    #[inline(always)]
    pub(crate) fn kfree(&self, cpu: &Cpu<'_>, obj: KBox) -> Result<(), SlabError> {
        if obj.machine != self.pages.machine_id() {
            return Err(SlabError::OutOfRange(obj.ptr.as_ptr() as usize));
        }
        // A KBox of this machine owns its memory, and consuming it here ends that ownership.
        self.kfree_owned(cpu, obj.ptr)
    }

    /// Frees kmalloc memory by address; the caller owns it (the checked function behind
    /// [`PhysMem::kfree_raw`](crate::PhysMem::kfree_raw), whose contract callers of this one
    /// keep). Checked: an address outside the machine, in a page that is neither a kmalloc
    /// slab nor a large kmalloc block (a descriptor cache's object, a user cache's, a folio,
    /// free memory, …: [`SlabError::NotKmalloc`] or [`SlabError::NotSlab`]), an interior
    /// pointer and a double free (in release builds too, whichever CPU freed it first) are
    /// refused and change nothing.
    ///
    /// The hit path (a kmalloc object in the memmap's largest flat region, found through that
    /// region's direct-map window, no debug state word, room in this CPU's main sheaf, every
    /// check passed) is inline and calls nothing;
    /// anything else, refusals included, starts over in [`Slabs::kfree_slow`] (the hit path
    /// changes nothing until every check has passed).
    #[inline(always)]
    pub(crate) fn kfree_owned(&self, cpu: &Cpu<'_>, ptr: NonNull<u8>) -> Result<(), SlabError> {
        if self.kfree_hit(cpu, ptr) {
            return Ok(());
        }
        self.kfree_slow(cpu, ptr)
    }

    /// kfree's hit path: `true` if it freed `ptr`, `false` (nothing changed) to take the slow
    /// path.
    #[inline(always)]
    fn kfree_hit(&self, cpu: &Cpu<'_>, ptr: NonNull<u8>) -> bool {
        let addr = ptr.as_ptr() as usize;
        // The pfn `virt_to_pfn` would give, for the largest region's direct map.
        let Some((pfn, w)) = self.pages.memmap().load_hot_addr(addr) else { return false };
        let Some(slab) = self.slab_of_word(w) else { return false };
        // The caller owns the object, which keeps its slab and cache alive.
        let c = self.cache_of(slab);
        // One flag: a kmalloc cache without debug state words.
        c.kfree_hit_ok && self.cache_free_hit(cpu, c, slab, addr, pfn)
    }

    /// [`Slabs::kfree_owned`] off the hit path: every check, every refusal.
    #[inline(never)]
    fn kfree_slow(self, cpu: &Cpu<'_>, ptr: NonNull<u8>) -> Result<(), SlabError> {
        let addr = ptr.as_ptr() as usize;
        let pfn = self.pages.platform().virt_to_pfn(ptr).ok_or(SlabError::OutOfRange(addr))?;
        let v = self.pages.memmap().load(self.pages.platform(), pfn).ok_or(SlabError::OutOfRange(addr))?;
        // The common case first, inline: the page word names the slab (its tag tested, not
        // the whole word decoded), the slab its cache.
        if let Some(slab) = self.slab_of_word(v.word) {
            // The caller owns the object, which keeps its slab and cache alive.
            let c = self.cache_of(slab);
            if c.family != CacheFamily::Kmalloc {
                return Err(Self::not_kmalloc(addr, c));
            }
            return self.cache_free_in(cpu, c, slab, ptr, pfn);
        }
        self.kfree_other(cpu, ptr, pfn, v.word)
    }

    #[cold]
    fn not_kmalloc(addr: usize, c: &SlabCache) -> SlabError {
        SlabError::NotKmalloc { addr, cache: c.name() }
    }

    /// kfree of an address whose page is not a slab page: a large kmalloc block, or refused.
    #[inline(never)]
    fn kfree_other(
        self,
        cpu: &Cpu<'_>,
        ptr: NonNull<u8>,
        pfn: crate::base::addr::Pfn,
        word: crate::memmap::word::Word,
    ) -> Result<(), SlabError> {
        let addr = ptr.as_ptr() as usize;
        match word.kind() {
            PageKind::Undescribed(u) if u.subtype == Subtype::LargeKmalloc => {
                if addr & (PAGE_SIZE - 1) != 0 {
                    return Err(SlabError::InteriorPointer(addr));
                }
                let rm = self
                    .pages
                    .check_and_claim(pfn, u.order as u32, |s| s == Subtype::LargeKmalloc)
                    .map_err(SlabError::Page)?;
                self.pages.free_claimed(cpu, rm, pfn, u.order as u32);
                Ok(())
            }
            PageKind::Undescribed(u) if u.subtype == Subtype::Tail => {
                Err(match self.pages.free_block_containing_pfn(pfn) {
                    Some(_) => SlabError::NotSlab(addr, word.tag()),
                    None => SlabError::InteriorPointer(addr),
                })
            }
            _ => Err(SlabError::NotSlab(addr, word.tag())),
        }
    }

    /// Usable size of a kmalloc allocation.
    pub(crate) fn ksize(&self, ptr: NonNull<u8>) -> Result<usize, SlabError> {
        let addr = ptr.as_ptr() as usize;
        let pfn = self.pages.platform().virt_to_pfn(ptr).ok_or(SlabError::OutOfRange(addr))?;
        let v = self.pages.memmap().load(self.pages.platform(), pfn).ok_or(SlabError::OutOfRange(addr))?;
        match v.word.kind() {
            PageKind::Slab(_) => {
                let slab = self.slab_of(addr)?;
                Ok(self.cache_of(slab).usable_size())
            }
            PageKind::Undescribed(u) if u.subtype == Subtype::LargeKmalloc => Ok(PAGE_SIZE << u.order),
            _ => Err(SlabError::NotSlab(addr, v.word.tag())),
        }
    }
}

/// The descriptor caches (one TYPESAFE_BY_RCU cache per [`CachedDescriptor`] kind), created at
/// boot like kmalloc's: every subsystem with a descriptor allocates it here (built with the
/// features that have descriptors).
#[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
impl<'a, P: Platform> Slabs<'a, P> {
    pub(crate) fn create_desc_caches(&self) -> Result<[Kept<SlabCache>; NR_DESC_KINDS], AllocError> {
        use crate::memmap::desc::{MappableDesc, Netmem, PtDesc, VmallocDesc, Z3foldDesc, Zspage};
        fn args<T: CachedDescriptor>() -> CacheArgs {
            CacheArgs {
                align: 16,
                typesafe_by_rcu: true,
                freeptr_offset: Some(T::FREEPTR_OFFSET),
                ..CacheArgs::new(T::CACHE_NAME, core::mem::size_of::<T>())
            }
        }
        let all = [
            args::<Folio>(),
            args::<PtDesc>(),
            args::<VmallocDesc>(),
            args::<Netmem>(),
            args::<Zspage>(),
            args::<Z3foldDesc>(),
            args::<MappableDesc>(),
        ];
        let cpu = self.pages.cpus().claim_any().ok_or(AllocError::NoMemory { order: 0 })?;
        let mut out = [Kept::NONE; NR_DESC_KINDS];
        for (i, a) in all.iter().enumerate() {
            out[i] = self.new_cache_forever(&cpu, a, CacheFamily::Internal)?;
        }
        Ok(out)
    }

    pub(super) fn desc_cache<T: CachedDescriptor>(&self) -> &'a SlabCache {
        self.state.desc_caches[T::KIND].get().expect("descriptor caches exist after boot")
    }

    /// Returns a descriptor to its cache.
    pub(crate) fn free_desc<T: CachedDescriptor>(&self, cpu: &Cpu<'_>, d: &T) {
        let r = self.cache_free(cpu, self.desc_cache::<T>(), NonNull::from(d).cast());
        debug_assert!(r.is_ok(), "descriptor free: {r:?}");
    }
}
