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

// ---- memmap ----

impl crate::memmap::Memmap {
    /// Builds the memmap of `layout` alone, in `p`'s memory, with a fresh boot allocator: the
    /// first step of [`PhysMem::boot`](crate::PhysMem::boot), and nothing after it (no
    /// reserved ranges stamped, no free lists). It exists so that the memmap build can be timed
    /// on its own (the `memmap` section of `memdesc bench`); a kernel boots through
    /// [`PhysMem::boot`](crate::PhysMem::boot) and reads its memmap with
    /// [`PhysMem::memmap`](crate::PhysMem::memmap).
    ///
    /// # Safety
    /// Nothing else uses the memory of `p` that the build takes while the returned memmap lives:
    /// no machine runs on `p` and no other memmap built on `p` is alive (every build with a
    /// fresh boot allocator places its arrays at the same addresses, so two live ones would
    /// share their words).
    pub unsafe fn build_alone<P: crate::base::platform::Platform>(
        layout: &crate::base::layout::MemoryLayout,
        p: &P,
    ) -> Result<Self, crate::memmap::MemmapError> {
        // Invariant 1: the caller gives up every other use of the memory the build takes, which
        // is what a boot allocator's ranges need (base::boot invariant 1); invariant 2: the
        // build still checks the layout and the direct map and returns a typed error.
        let mut boot = crate::base::boot::BootAllocator::new(layout)?;
        Self::build(layout, &mut boot, p)
    }
}

#[cfg(all(test, not(loom)))]
mod memmap_tests {
    use crate::base::addr::Pfn;
    use crate::base::boot::BootError;
    use crate::base::layout::{MemmapLayout, MemoryLayout, RegionSpec};
    use crate::base::platform::test_platform::Buf;
    use crate::memmap::word::Word;
    use crate::memmap::{Memmap, MemmapError};

    fn one_region(pages: u64, mapped: bool, layout: MemmapLayout) -> MemoryLayout {
        let mut map = MemoryLayout::new();
        map.add_region(RegionSpec { start: Pfn(0), end: Pfn(pages), node: 0, mapped, layout }).unwrap();
        map
    }

    #[test]
    fn build_alone_builds_a_memmap_of_tail_words() {
        for (layout, span) in [(MemmapLayout::Flat, 0), (MemmapLayout::TwoLevel, 9)] {
            let pages = 2048;
            let map = one_region(pages, true, layout);
            let buf = Buf::leaked(pages);
            // SAFETY: invariant 1, `build_alone`'s contract: `buf` is this test's own memory, no machine runs on
            // it and this is the only memmap built on it.
            let m = unsafe { Memmap::build_alone(&map, &buf) }.unwrap();
            assert!(m.bytes() > 0);
            assert_eq!(m.regions().count(), 1);
            let v = m.load(&buf, Pfn(pages - 1)).unwrap();
            assert_eq!((v.word, v.span_order), (Word::TAIL, span), "{layout:?}");
            assert!(m.load(&buf, Pfn(pages)).is_none(), "past the region");
        }
    }

    #[test]
    fn build_alone_returns_typed_errors() {
        // No mapped memory at all: the boot allocator has nowhere to put the words.
        let map = one_region(2048, false, MemmapLayout::Flat);
        let buf = Buf::leaked(1);
        // SAFETY: as above; the build fails before it writes anything.
        let r = unsafe { Memmap::build_alone(&map, &buf) };
        assert!(matches!(r, Err(MemmapError::Boot(BootError::OutOfMemory { .. }))), "{:?}", r.err());
    }
}

// ---- page_alloc ----

// Paths are written out (no `use` lines) so that the sections' imports cannot collide.

impl<P: crate::base::platform::Platform> crate::machine::PhysMem<P> {
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
        cpu: &crate::base::cpu::Cpu<'_>,
        pfn: crate::base::addr::Pfn,
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
    pub unsafe fn from_raw<P: crate::base::platform::Platform>(
        mem: &crate::machine::PhysMem<P>,
        pfn: crate::base::addr::Pfn,
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

    impl<P: crate::base::platform::Platform> crate::machine::PhysMem<P> {
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
        pub unsafe fn kfree_raw(&self, cpu: &crate::base::cpu::Cpu<'_>, ptr: NonNull<u8>) -> Result<(), SlabError> {
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
        pub unsafe fn from_raw<P: crate::base::platform::Platform>(
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
        pub unsafe fn from_raw<P: crate::base::platform::Platform>(
            cache: &CacheRef<'_, P>,
            ptr: NonNull<u8>,
        ) -> SlabObj {
            SlabObj::new_owned(cache, ptr)
        }
    }

    impl<P: crate::base::platform::Platform> CacheRef<'_, P> {
        /// Frees an object of this cache by address. Checked: an address outside the cache's
        /// objects, an interior pointer and a double free are refused and change nothing.
        ///
        /// # Safety
        /// The caller owns the object: `obj` came from [`CacheRef::alloc_raw`] of this cache (or
        /// [`SlabObj::into_raw`]), has not been freed since, and nothing uses it after this call.
        /// The checks catch a double free, but not a free of an object somebody else holds.
        #[inline]
        pub unsafe fn free_raw(&self, cpu: &crate::base::cpu::Cpu<'_>, obj: NonNull<u8>) -> Result<(), SlabError> {
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

/// The raw parts of the folio layer (which itself has no `unsafe` for these): the public raw
/// adoption of a reference ([`FolioRef::from_raw`], [`PhysMem::folio_ref_from_pfn`]) and the
/// one widening of a held folio to the machine's lifetime that the layer's own references
/// rest on.
///
/// Invariants of this section (cited as F1..F2):
/// - F1. A [`FolioRef`] owns exactly one counted reference; `FolioRef::adopt` (the checked,
///   crate-private constructor) is called only with a count its caller took and hands over.
/// - F2. A folio on which someone holds a counted reference is not freed: its descriptor (slab
///   memory of its machine) stays that folio until the last reference is put, which the
///   folio layer does only through a `FolioRef` it consumes or a count it owns. So a
///   reference to a held folio may live as long as the machine (`'a` of the view), and the
///   folio layer uses it only while it holds the count.
/// - F3. The caches the folio layer keeps (the page cache's node and address-space caches, and
///   every extended folio type's cache) are permanent (`Slabs::new_cache_forever`): their
///   objects are slab memory of the machine for its whole life.
/// - F4. An extended folio type `E` ([`FolioExt`]) has its `Folio` at offset 0, and its
///   cache ([`FolioExtCache`]) holds only `E`s, zero or former ones (FolioExt's contract).
/// - F5. Page-cache trees: the root word and every slot of a tree's nodes hold 0, the address
///   of a node of the page cache's `TYPESAFE_BY_RCU` node cache (tagged, in a slot), or the
///   address of a cached file folio (untagged). The page cache turns such an address (or the
///   address of a node it preallocated for a tree operation, which it owns until it links or
///   frees it) into a reference only through [`Node::at`] / [`Node::folio_at`], with the
///   keeper that keeps it alive for the borrow: the address space whose lock it holds (linked
///   nodes are freed only after being unlinked under that lock; a cached folio is held by the
///   cache's reference), the RCU read guard of a lockless walk (node and folio memory is
///   `TYPESAFE_BY_RCU`: a node or a folio until a grace period after its free), the node the
///   entry was read from (under one of those), or the preallocation chain.
/// - F6. An address space is an object of the page cache's address-space cache, owned by its
///   one handle (`AddressSpaceRef`, holding a `CacheObj`) from `address_space_create` until
///   `AddressSpaceRef::destroy` consumes that handle and frees it; a folio's `mapping` names it while the folio
///   is cached there, and the crate's callers of `space_of` (migration and hwpoison, with the
///   folio pinned) do not destroy that address space meanwhile (Linux holds the folio lock
///   for the same purpose).
#[cfg(feature = "folio")]
mod folio {
    use crate::addr::Pfn;
    use core::ptr::NonNull;

    use crate::cpu::Cpu;
    use crate::desc::{DescPtr, Folio, FolioExt};
    use crate::desc_ref;
    #[cfg(feature = "health")]
    use crate::folio::space::AddressSpace;
    use crate::folio::xarray::Node;
    use crate::folio::{FolioExtCache, FolioRef, Folios};
    use crate::page_alloc::AllocError;
    use crate::platform::Platform;
    use crate::PhysMem;

    impl<'a> FolioRef<'a> {
        /// Adopts a counted reference.
        ///
        /// # Safety
        /// The caller owns one reference count on `folio` (taken and not yet dropped, e.g.
        /// given up by [`FolioRef::into_raw`]) and hands it to the new `FolioRef`, which will
        /// drop it: the caller must not drop it again. `folio` is a live folio of the machine
        /// whose lifetime is `'a`.
        pub unsafe fn from_raw(folio: &'a Folio) -> Self {
            FolioRef::adopt(folio)
        }
    }

    impl<P: Platform> PhysMem<P> {
        /// Adopts a reference the caller owns on the folio whose page `pfn` is (for page-table
        /// code and C-like callers that keep pfns). `None` if the word at `pfn` names no folio.
        ///
        /// # Safety
        /// The caller owns one counted reference on the folio that owns `pfn` (one it took and
        /// has not dropped, e.g. through [`FolioRef::into_raw`]), and gives it to the returned
        /// `FolioRef`; it must not use that count again. While the caller holds it, the folio
        /// cannot be freed, so the word at `pfn` names it (migration changes a folio's pfn only
        /// while the count is frozen, which needs every holder to be accounted for).
        pub unsafe fn folio_ref_from_pfn(&self, pfn: Pfn) -> Option<FolioRef<'_>> {
            self.folios().folio_held_at(pfn).map(FolioRef::adopt)
        }
    }

    impl<'a, P: Platform> Folios<'a, P> {
        /// `f` for the machine's lifetime, for a caller that holds a counted reference on it
        /// and uses the result only while it does (F2).
        pub(crate) fn held(&self, f: &Folio) -> &'a Folio {
            // SAFETY: a held folio stays that folio of this machine until its count is put
            // (F2), and the caller uses the reference only until then; `f` is a live,
            // aligned Folio (desc_ref invariant 1).
            unsafe { desc_ref::from_addr(f as *const Folio as usize) }
        }

        /// The folio a page word names, for a caller that holds a counted reference on it
        /// (F2): while it does, the word names that folio and the descriptor stays it.
        pub(crate) fn held_desc(&self, d: DescPtr<Folio>) -> &'a Folio {
            // SAFETY: as in `held`: the descriptor is a live Folio the caller holds (F2).
            unsafe { desc_ref::from_addr(d.addr()) }
        }

        /// The address space caching `f` (its `mapping`), for a caller that holds `f` cached
        /// or pinned and does not destroy that address space meanwhile (F6); `None` if `f` has
        /// no mapping.
        #[cfg(feature = "health")]
        pub(crate) fn space_of<'f>(&self, f: &'f Folio) -> Option<&'f AddressSpace> {
            let mapping = f.mapping();
            // SAFETY: a file folio's mapping names its live address space, which the caller
            // keeps alive while it uses the reference (F6).
            (mapping != 0).then(|| unsafe { desc_ref::from_addr(mapping) })
        }

        /// A new descriptor of `ext`'s cache, as the folio it embeds (not yet initialised as
        /// one: `folio_init` does that).
        pub(crate) fn alloc_ext_desc<E: FolioExt>(
            &self,
            cpu: &Cpu<'_>,
            ext: &FolioExtCache<E>,
        ) -> Result<&'a Folio, AllocError> {
            let c = ext.cache.get().ok_or(AllocError::NoMemory { order: 0 })?;
            let p: NonNull<u8> = self.slabs().cache_alloc_at(cpu, c, crate::fault::FaultSite::Desc)?;
            // SAFETY: an object of E's cache, a zero or former E (F4) that this call owns,
            // with a Folio at offset 0 (F4); slab memory of the machine (F3), which is `'a`.
            Ok(unsafe { desc_ref::from_addr(p.as_ptr() as usize) })
        }

        /// The extended descriptor around `f`, if `f` was allocated from `ext`'s cache.
        pub(crate) fn folio_ext<'f, E: FolioExt>(&self, ext: &FolioExtCache<E>, f: &'f Folio) -> Option<&'f E> {
            let slab = self.slabs().slab_of(f as *const Folio as usize).ok()?;
            let c = ext.cache.get()?;
            core::ptr::eq(self.slabs().cache_of(slab), c).then(|| {
                // SAFETY: `f` is an object of E's cache, and E has its Folio at offset 0 (F4);
                // the E lives as long as the Folio it embeds (`'f`).
                unsafe { &*(f as *const Folio as *const E) }
            })
        }
    }

    impl Node {
        /// The node at `addr`: a node address the page cache loaded from a tree (root word or
        /// node entry, tag cleared) or preallocated for a tree operation, kept alive for the
        /// borrow of `keeper` (F5).
        #[inline]
        pub(crate) fn at<K: ?Sized>(keeper: &K, addr: usize) -> &Node {
            let _ = keeper;
            // SAFETY: a node of the node cache (or a test pool), kept a Node by `keeper` for
            // the borrow (F5; desc_ref invariants 1 and 2).
            unsafe { desc_ref::from_addr(addr) }
        }

        /// The folio at a folio entry the page cache loaded from a tree, kept alive for the
        /// borrow of `keeper` (F5).
        #[inline]
        pub(crate) fn folio_at<K: ?Sized>(keeper: &K, e: usize) -> &Folio {
            let _ = keeper;
            // SAFETY: a cached file folio's descriptor, kept a Folio by `keeper` for the
            // borrow (F5; desc_ref invariants 1 and 2).
            unsafe { desc_ref::from_addr(e) }
        }
    }
}

// ---- mm ----

/// The raw parts of the address-space layer (which itself has no `unsafe`): the `Linked`
/// promise of VMAs and their one rmap unlink, the addresses VMAs keep, the descriptors it reads
/// from page words and folio `mapping`s, and the raw mappable-memory entry points. Only the
/// address-space layer (`mm/`) calls the crate-private functions of this section.
///
/// Invariants of this section (cited as M1..M7):
/// - M1. The nodes of an rmap list are VMAs: the only `RmapLink`s ever linked are the `rmap`
///   fields of VMAs (their first field, `#[repr(C)]`), each only on its own VMA's rmap list
///   (the anon_vma or `i_mmap` its immutable owner names): `RmapGuard::link` takes a `&Vma` and
///   refuses any other list, and the `&mut List` of `RmapGuard::raw_parts` is used only by
///   `Vma::rmap_unlink` here.
/// - M2. A VMA is freed only by `MmRef::remove_vma`, after `Vma::rmap_unlink` took it off its
///   list under the list's lock (it asserts the links unlinked before the free).
/// - M3. An `Mm` is kept (`Mm::kept`) only by its own VMAs, and `MmRef::destroy` frees every
///   VMA before the `Mm`.
/// - M4. An rmap list is kept (`RmapList::kept`) only by the VMAs linked on it: an anon_vma is
///   freed only with its last VMA, and a file's address space outlives its file VMAs
///   (`AddressSpaceRef::destroy` of a file that VMAs still map truncates it but does not free
///   it).
/// - M5. The address-space layer reads a descriptor from a page word (`mm_desc`) only for a
///   page whose descriptor it keeps alive while it uses the reference: a table of an mm whose
///   page-table lock it holds, a page a live entry maps (the entry holds a reference), a
///   descriptor the caller holds a reference on, or a page it reads inside an RCU read section
///   that lasts until it pins the descriptor with `try_get` (`MmRef::map_pfn` → `map_locked`)
///   and trusts nothing else it reads before (descriptors are TYPESAFE_BY_RCU, `Descriptor`
///   item 3).
/// - M6. A VMA is linked only on its own mm's chain (`VmaGuard::insert` checks its `mm`), and
///   taken off it only by `VmaGuard::take` here, under the mm's lock, which hands it to the one
///   caller that frees it (`MmRef::remove_vma`, after the rmap unlink: M2).
/// - M7. Kernel objects of this layer handed out as shared references (VMAs, anon_vmas) are
///   freed only as M2, M4 and M6 say, by `Mms::vma_free` / `Mms::anon_vma_free`, and an
///   anon_vma's cache is TYPESAFE_BY_RCU: memory it hands out is a zeroed or a former
///   `RmapList` (a zeroed one is a valid, unlocked, empty list).
#[cfg(feature = "pgtable")]
mod mm {
    use crate::cpu::Cpu;
    use crate::desc::{DescPtr, Descriptor, Folio};
    use crate::desc_ref::{self, Kept};
    use crate::list::{Linked, Links};
    use crate::mm::mmap::{Mm, MmCaches, Vma, VmaGuard};
    use crate::mm::rmap::{RmapGuard, RmapLink, RmapList};
    use crate::mm::Mms;
    use crate::page_alloc::AllocError;
    use crate::pagecache::AddressSpace;
    use crate::platform::Platform;
    use crate::rcu::RcuGuard;
    use crate::slab::ObjCache;
    use crate::tag::Tag;

    // SAFETY: `links` returns the field every time (Linked item 1); an RmapLink on a list is
    // a VMA's (M1), freed only after it was unlinked under its list's lock (M2, Linked item 2).
    unsafe impl Linked for RmapLink {
        fn links(&self) -> &Links {
            &self.0
        }
    }

    // SAFETY: `links` returns the `chain` field every time (Linked item 1); a VMA is freed
    // only after `VmaGuard::take` took it off its chain under the mm's lock (M6, Linked item 2).
    unsafe impl Linked for Vma {
        fn links(&self) -> &Links {
            self.chain_links()
        }
    }

    impl<'a> VmaGuard<'a> {
        /// Takes the first VMA of the chain (starting at `start`, if given) off it and hands
        /// it to the caller, who frees it (M6).
        pub(crate) fn take(&mut self, start: Option<u64>) -> Option<&'a Vma> {
            let (mm, vmas) = self.raw_parts();
            let addr = vmas.iter().find(|v| start.is_none_or(|s| v.start() == s))? as *const Vma as usize;
            // SAFETY: a VMA of this mm's chain (just found on it: list.rs invariant 1); it
            // lives until the caller frees it, which only this call's caller does (M6).
            let v: &'a Vma = unsafe { desc_ref::pinned(mm, addr) };
            // SAFETY: `v` is on this list (found on it above), whose lock the guard holds
            // (list.rs invariant 3).
            let removed = unsafe { vmas.remove(v) };
            debug_assert!(removed);
            Some(v)
        }
    }

    impl Mm {
        /// This mm, kept by one of its VMAs.
        pub(crate) fn kept(&self) -> Kept<Mm> {
            // SAFETY: only this mm's VMAs keep it, and they are freed before it (M3).
            unsafe { Kept::new(self) }
        }
    }

    impl RmapList {
        /// This list, kept by a VMA linked on it.
        pub(crate) fn kept(&self) -> Kept<RmapList> {
            // SAFETY: only the VMAs linked on it keep it, and it outlives them (M4).
            unsafe { Kept::new(self) }
        }
    }

    impl<'a, P: Platform> Mms<'a, P> {
        /// Moves `v` into a fresh object of `cache`, shared from then on (its mm's chain, its
        /// rmap list and rmap walkers name it) until `Mms::vma_free` (M7).
        pub(crate) fn vma_alloc(&self, cpu: &Cpu<'_>, cache: ObjCache<'a, Vma>, v: Vma) -> Result<&'a Vma, AllocError> {
            let obj = self.slabs().obj_alloc(cpu, cache, v)?;
            // The object is freed through its address (`vma_free`), not through the handle,
            // which goes out of scope here (a leak, for the handle: no drop runs).
            let addr = obj.as_ptr().as_ptr() as usize;
            // SAFETY: an initialised Vma in an object of a cache checked for it (slab/obj.rs
            // invariants 2 and 3), alive until `vma_free` (M7).
            Ok(unsafe { desc_ref::pinned(self.machine(), addr) })
        }

        /// An anon_vma from `caches`' TYPESAFE_BY_RCU anon_vma cache: zeroed or a former
        /// anon_vma, whose lock is never reinitialised (a walker that raced with its free may
        /// still hold it); alive until `Mms::anon_vma_free` (M7).
        pub(crate) fn anon_vma_alloc(
            &self,
            cpu: &Cpu<'_>,
            caches: &MmCaches<'a, P>,
        ) -> Result<&'a RmapList, AllocError> {
            let p = self.slabs().cache_alloc(cpu, caches.anon_vma_cache())?;
            // SAFETY: an object of the anon_vma cache (sized for an RmapList): a zeroed or a
            // former RmapList, alive until freed as M4 says (M7).
            Ok(unsafe { desc_ref::pinned(self.machine(), p.as_ptr() as usize) })
        }

        /// The descriptor a page word names, for the address-space layer's pages (M5).
        pub(crate) fn mm_desc<T: Descriptor>(&self, d: DescPtr<T>) -> &'a T {
            // SAFETY: the layer keeps the descriptor alive while it uses the reference, or
            // pins it before trusting it (M5); the reference borrows the machine.
            unsafe { desc_ref::pinned(self.machine(), d.addr()) }
        }

        /// Locks the rmap list a folio's `mapping` names (`tag` is the folio's: an anon
        /// folio's mapping is an anon_vma, a file folio's its address space), re-reading
        /// `mapping` under the lock until the two agree; `None` if the folio has no mapping or
        /// its tag has no rmap. The caller holds a reference on `f` (so `tag` and `mapping`
        /// belong to the same folio) and the read section `_rcu`.
        pub(crate) fn lock_mapping_rmap(&self, _rcu: &RcuGuard<'_>, tag: Tag, f: &Folio) -> Option<RmapGuard<'a>> {
            loop {
                let mapping = f.mapping();
                if mapping == 0 {
                    return None;
                }
                let list: &RmapList = match tag {
                    // SAFETY: an anon folio's mapping is an anon_vma of the TYPESAFE_BY_RCU
                    // anon_vma cache, so under the read section it stays an RmapList whose lock
                    // is never reinitialised; once the re-check below finds it still the folio's
                    // mapping, a VMA mapping the folio is linked on it, so it lives while the
                    // lock is held (M4).
                    Tag::AnonFolio => unsafe { desc_ref::pinned(self.machine(), mapping) },
                    // SAFETY: a file folio's mapping is its address space, which outlives its
                    // cached folios and its VMAs (M4).
                    Tag::FileFolio => &unsafe { desc_ref::pinned::<AddressSpace, _>(self.machine(), mapping) }.i_mmap,
                    _ => return None,
                };
                let g = list.lock();
                // `mapping` only changes under this lock (first map, last unmap).
                if f.mapping() == mapping {
                    return Some(g);
                }
            }
        }
    }

    impl Vma {
        /// The VMA whose `rmap` field `l` is, for a link found on an rmap list.
        pub(crate) fn of_link(l: &RmapLink) -> &Vma {
            // SAFETY: the links on an rmap list are VMAs' `rmap` fields (M1), at offset 0 of
            // the `#[repr(C)]` Vma (asserted in mm/mmap.rs); the VMA lives as long as its link is
            // borrowed from the list (M2, list.rs invariant 4).
            unsafe { desc_ref::pinned(l, l as *const RmapLink as usize) }
        }

        /// Takes the VMA off its rmap list, locked as `g`; returns the VMAs left, or `None`
        /// (changing nothing) if `g` is not this VMA's rmap list or the VMA is not linked.
        pub(crate) fn rmap_unlink(&self, g: &mut RmapGuard<'_>) -> Option<usize> {
            let (list, vmas) = g.raw_parts();
            if !self.rmap().is_some_and(|r| core::ptr::eq(r, list)) {
                return None;
            }
            // SAFETY: if linked, the VMA is on its own rmap list (M1), which is `list`, whose
            // lock `g` holds (list.rs invariant 3).
            if !unsafe { vmas.remove(self.rmap_link()) } {
                return None;
            }
            Some(g.count())
        }
    }
}

#[cfg(feature = "pgtable")]
impl<'m> crate::mappable::MappableRef<'m> {
    /// Makes the handle of a reference again.
    ///
    /// # Safety
    /// The caller holds one reference to `desc` (given up with
    /// [`MappableRef::into_raw`](crate::mappable::MappableRef::into_raw), or taken by raw code)
    /// and hands it to the new handle (invariant 1).
    #[inline]
    pub unsafe fn from_raw(desc: &'m crate::desc::MappableDesc) -> Self {
        Self::new_owned(desc)
    }
}

#[cfg(feature = "pgtable")]
impl<P: crate::platform::Platform> super::PhysMem<P> {
    /// Drops a reference; the last one frees the memory. Returns whether it was freed.
    /// Checked: a descriptor with no reference left, one that is not this machine's live
    /// descriptor of its block, and the last put of mapped memory are refused (invariant 2).
    ///
    /// # Safety
    /// The caller holds one reference to `d` (a
    /// [`MappableRef`](crate::mappable::MappableRef) given up with `into_raw`, or one a
    /// page-table entry held) and gives it up: the checks cannot tell the holder of a
    /// reference from anyone else with a `&MappableDesc`, and a put of someone else's reference
    /// frees memory they still use (invariant 1).
    pub unsafe fn mappable_put_raw(
        &self,
        cpu: &crate::cpu::Cpu<'_>,
        d: &crate::desc::MappableDesc,
    ) -> Result<bool, crate::mappable::MappableError> {
        self.mms().mappable_put_owned(cpu, d)
    }
}

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
impl<P: crate::base::platform::Platform> super::PhysMem<P> {
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
        cpu: &crate::base::cpu::Cpu<'_>,
        pfn: crate::Pfn,
    ) -> Result<(), crate::pools::page_pool::PoolError> {
        crate::pools::page_pool::pp_put_pfn_owned(self, cpu, pfn)
    }
}

#[cfg(feature = "vmalloc")]
impl<P: crate::base::platform::Platform> crate::pools::vmalloc::VmallocSpace<'_, P> {
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
        cpu: &crate::base::cpu::Cpu<'_>,
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
