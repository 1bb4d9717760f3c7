//! The raw interface: every public `unsafe fn` entry point of the crate that takes a pfn or a
//! pointer instead of an owned handle, and the `unsafe impl Send/Sync` of the owned handles.
//!
//! Each raw function is a thin wrapper over a crate-private *checked* function of its layer
//! (named `*_owned` or `*_checked`, documented "the caller owns …") that the safe APIs and the
//! internal callers use; the raw function adds nothing but its contract. Keeping them in one
//! file lets a reviewer audit the whole raw surface in one place.
//!
//! # Invariants
//! 1. A raw function's `# Safety` section states exactly what the caller gives up or proves
//!    (ownership of a pfn range, an object, a reference count); the function does nothing the
//!    checked function it wraps would not do for an owner.
//! 2. The checked function still validates everything it can see (pfn range, page kind, order,
//!    cache identity) and returns a typed error for what it catches; the contract covers only
//!    what the memmap cannot tell (who owns the thing).
//! 3. An owned handle is `Send`/`Sync` only when what it names is reached solely through the
//!    machine's own synchronisation (the memmap's atomic words, locks, per-CPU claims).
//!
//! Sections, one per layer; each layer's helper adds code only to its own section.

// ---- page_alloc ----

// Paths are written out (no `use` lines) so that the sections' imports cannot collide.

impl<P: crate::platform::Platform> crate::machine::PhysMem<P> {
    /// Frees raw memory by pfn and order. Checked: a double free, a free of a tail page, of
    /// the wrong order, of reserved or poisoned memory, of another kind's pages or of the
    /// crate's internal pages ([`FreeError::Internal`](crate::FreeError::Internal)) returns an
    /// error and changes nothing.
    ///
    /// # Safety
    /// The caller owns the block: `pfn` heads a block of exactly `order` pages that this
    /// machine handed out through [`PhysMem::alloc_pages_raw`](crate::PhysMem::alloc_pages_raw)
    /// (or [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) followed by
    /// [`Pages::into_raw`](crate::Pages::into_raw)), it has not been freed since, nobody else
    /// holds a [`Pages`](crate::Pages) for it, and nothing uses its memory after this call.
    /// The word checks cannot tell the owner from anyone else: a free of somebody else's
    /// block passes them and makes that block's memory the next allocation's.
    #[inline]
    pub unsafe fn free_pages_raw(
        &self,
        cpu: &crate::cpu::Cpu<'_>,
        pfn: crate::addr::Pfn,
        order: u32,
    ) -> Result<(), crate::page_alloc::FreeError> {
        // Invariant 1: the caller's contract is `free_pages_owned`'s precondition, word for
        // word; invariant 2: it checks the word, order and kind itself.
        self.pages.free_pages_owned(cpu, pfn, order)
    }
}

impl crate::page_alloc::pages::Pages {
    /// Makes the handle of a raw block again.
    ///
    /// # Safety
    /// The caller owns the block: `pfn` heads a block of exactly `order` that was allocated by
    /// `mem` with [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) or
    /// [`PhysMem::alloc_pages_raw`](crate::PhysMem::alloc_pages_raw), has not been freed
    /// since, and no other `Pages` or raw owner of it remains (this handle becomes the only
    /// one).
    #[inline]
    pub unsafe fn from_raw<P: crate::platform::Platform>(
        mem: &crate::machine::PhysMem<P>,
        pfn: crate::addr::Pfn,
        order: u32,
    ) -> Self {
        // Invariant 1: the handle only records what the caller vouches for; freeing it is
        // still checked (invariant 2).
        Self::new(pfn, order, mem.machine_id())
    }
}

// ---- slab ----

#[cfg(feature = "slab")]
mod slab {
    use core::ptr::NonNull;

    use crate::kmalloc::KBox;
    use crate::slab::{CacheObj, CacheRef, KArray, KObj, SlabCache, SlabError, SlabObj};

    impl<P: crate::platform::Platform> crate::machine::PhysMem<P> {
        /// Frees kmalloc memory by address. Checked: an address outside the machine, in a page
        /// that is neither a kmalloc slab nor a large kmalloc block (a descriptor cache's object,
        /// a user cache's, a folio, free memory, …: [`SlabError::NotKmalloc`] or
        /// [`SlabError::NotSlab`]), an interior pointer and a double free (in release builds too,
        /// whichever CPU freed it first) are refused and change nothing.
        ///
        /// # Safety
        /// The caller owns the memory: `ptr` came from [`PhysMem::kmalloc_raw`](crate::machine::PhysMem::kmalloc_raw)
        /// of this machine (or [`KBox::into_raw`]), has not been freed since, and nothing uses it
        /// after this call. The checks catch a double free but cannot tell the owner of a live
        /// object from anyone else: freeing another owner's object hands it out again while still
        /// in use.
        #[inline]
        pub unsafe fn kfree_raw(&self, cpu: &crate::cpu::Cpu<'_>, ptr: NonNull<u8>) -> Result<(), SlabError> {
            self.slabs().kfree_owned(cpu, ptr)
        }

        /// A handle to one of this machine's user caches (from
        /// [`PhysMem::for_each_cache`](crate::machine::PhysMem::for_each_cache)); the crate's own caches and
        /// kmalloc's are refused with [`SlabError::NotUserCache`].
        ///
        /// # Safety
        /// The returned handle is a second handle to a cache whose creator holds one: the caller
        /// ensures the cache is not destroyed (through either handle) while the other is still
        /// used, and frees through it only objects it owns.
        #[inline]
        pub unsafe fn cache_ref<'m>(&'m self, cache: &'m SlabCache) -> Result<CacheRef<'m, P>, SlabError> {
            self.slabs().cache_ref_owned(cache)
        }
    }

    impl KBox {
        /// Makes the handle of raw kmalloc memory again.
        ///
        /// # Safety
        /// The caller owns the memory: `ptr` came from [`PhysMem::kmalloc_raw`](crate::machine::PhysMem::kmalloc_raw)
        /// of `mem` (or [`KBox::into_raw`]), has not been freed since, and no other handle or raw
        /// owner remains.
        #[inline]
        pub unsafe fn from_raw<P: crate::platform::Platform>(
            mem: &crate::machine::PhysMem<P>,
            ptr: NonNull<u8>,
        ) -> KBox {
            KBox::new(ptr, mem.machine_id())
        }
    }

    impl SlabObj {
        /// Makes the handle of a raw object again.
        ///
        /// # Safety
        /// The caller owns the object: `ptr` came from [`CacheRef::alloc`] or
        /// [`CacheRef::alloc_raw`] of `cache` (and was given up with [`SlabObj::into_raw`] if it
        /// was a handle), has not been freed since, and no other handle or raw owner remains.
        #[inline]
        pub unsafe fn from_raw<P: crate::platform::Platform>(cache: &CacheRef<'_, P>, ptr: NonNull<u8>) -> SlabObj {
            SlabObj::new_owned(cache, ptr)
        }
    }

    impl<P: crate::platform::Platform> CacheRef<'_, P> {
        /// Frees an object of this cache by address. Checked: an address outside the cache's
        /// objects, an interior pointer and a double free are refused and change nothing.
        ///
        /// # Safety
        /// The caller owns the object: `obj` came from [`CacheRef::alloc_raw`] of this cache (or
        /// [`SlabObj::into_raw`]), has not been freed since, and nothing uses it after this call.
        /// The checks catch a double free, but not a free of an object somebody else holds.
        #[inline]
        pub unsafe fn free_raw(&self, cpu: &crate::cpu::Cpu<'_>, obj: NonNull<u8>) -> Result<(), SlabError> {
            self.free_owned(cpu, obj)
        }
    }

    // SAFETY: a KBox is a unique token for one allocation (item 3): it never dereferences its
    // pointer, and the allocator state a free touches is behind locks and atomics.
    unsafe impl Send for KBox {}
    // SAFETY: as above; `&KBox` only reads the address.
    unsafe impl Sync for KBox {}
    // SAFETY: a SlabObj is a unique token for one object (item 3); the pointers are compared, never
    // dereferenced through the handle, and the cache state a free touches is behind locks and
    // atomics.
    unsafe impl Send for SlabObj {}
    // SAFETY: as above; `&SlabObj` only reads the two addresses.
    unsafe impl Sync for SlabObj {}
    // SAFETY: a KObj owns its T like a Box (slab/obj.rs invariant 1): sending it sends the T, and
    // the free reaches the allocator only through its locks and atomics (item 3).
    unsafe impl<T: Send> Send for KObj<'_, T> {}
    // SAFETY: `&KObj` gives only `&T` (slab/obj.rs invariant 1).
    unsafe impl<T: Sync> Sync for KObj<'_, T> {}
    // SAFETY: as KObj, for `len` Ts.
    unsafe impl<T: Copy + Send> Send for KArray<'_, T> {}
    // SAFETY: as KObj, for `len` Ts.
    unsafe impl<T: Copy + Sync> Sync for KArray<'_, T> {}
    // SAFETY: as KObj; the cache it names is `Sync` (its state is behind locks and atomics).
    unsafe impl<T: Send> Send for CacheObj<'_, T> {}
    // SAFETY: as KObj.
    unsafe impl<T: Sync> Sync for CacheObj<'_, T> {}
}

// ---- folio ----

// ---- mm ----

// ---- pools ----

#[cfg(feature = "zsmalloc")]
impl crate::pools::zs_handle::Handle {
    /// Rebuilds a zsmalloc or z3fold handle from [`Handle::into_raw`](Self::into_raw). A value
    /// the pool never issued, or one whose object was freed, is refused by the pool with a
    /// precise error (the handle table keeps a generation per slot), but a stale value whose
    /// slot's generation came round again would name another owner's object.
    ///
    /// # Safety
    /// The caller owns the object: `raw` came from `into_raw` of a live object of the pool it
    /// will be used with, and no other handle or raw copy of it will be used (item 1).
    #[inline]
    pub const unsafe fn from_raw(raw: u64) -> Self {
        Self::from_raw_owned(raw)
    }
}

#[cfg(feature = "page_pool")]
impl<P: crate::platform::Platform> super::PhysMem<P> {
    /// Puts one reference of the page_pool block holding `pfn`, found from the page word (for
    /// a caller that kept only the page). Refused precisely for a page that is not a pool page
    /// or whose `pp_ref_count` is already zero (item 2).
    ///
    /// # Safety
    /// The caller holds a reference to the block at `pfn` (a `NetmemRef` or `Frag` it gave up
    /// with `into_raw`, or one it was handed by raw code) and gives it up: a put of a
    /// reference somebody else holds passes the count check and recycles a block still in use
    /// (item 1).
    pub unsafe fn pp_put_pfn(
        &self,
        cpu: &crate::cpu::Cpu<'_>,
        pfn: crate::Pfn,
    ) -> Result<(), crate::pools::page_pool::PoolError> {
        crate::pools::page_pool::pp_put_pfn_owned(self, cpu, pfn)
    }
}

#[cfg(feature = "vmalloc")]
impl<P: crate::platform::Platform> crate::pools::vmalloc::VmallocSpace<'_, P> {
    /// Frees the area starting at `va`. Refused, with nothing changed, for an address that is
    /// not an area's start, a recently freed start or an area with a page still mapped to user
    /// space (item 2; `vfree_area` is the safe form).
    ///
    /// # Safety
    /// The caller owns the area starting at `va` (it came from `vmalloc` and its `VmArea` was
    /// given up with `into_raw`, or the caller is that handle's owner freeing by address) and
    /// nothing uses it after this call. The checks refuse addresses that start no live area,
    /// but cannot tell the owner of a live area from anyone else (item 1).
    pub unsafe fn vfree(
        &self,
        cpu: &crate::cpu::Cpu<'_>,
        va: usize,
    ) -> Result<(), crate::pools::vmalloc::VmallocError> {
        self.vfree_owned(cpu, va)
    }

    /// Copies `data` into the area holding `va`; `va..va + len` must lie inside one live area
    /// (an error otherwise, nothing written; item 2). `write_area` is the safe form.
    ///
    /// # Safety
    /// The caller owns the area holding `va` (it holds its `VmArea`, or gave the handle up with
    /// `into_raw` and keeps the address as its owner): the check cannot tell the owner from
    /// anyone else, so a write by another party would overwrite bytes that area's owner relies
    /// on (item 1).
    pub unsafe fn write(&self, va: usize, data: &[u8]) -> Result<(), crate::pools::vmalloc::VmallocError> {
        self.write_owned(va, data)
    }
}

// ---- health ----
