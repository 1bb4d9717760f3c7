//! The slab layer's operations, as methods of the [`Slabs`] view: creating, destroying and
//! shrinking caches; the object allocation and free paths through the per-CPU sheaves and the
//! per-node partial lists; making, poisoning and discarding slabs (TYPESAFE_BY_RCU slabs after
//! a grace period); /proc/slabinfo. The cache's layout and free-list encoding are in
//! [`super::cache`]; how the pieces fit is in [`super::cache`]'s header.
//!
//! This file is the allocator itself, so it keeps the slab layer's `unsafe` about object
//! memory, slab descriptors and caches (typed objects for the layers above are in
//! [`super::obj`]).
//!
//! # Invariants
//! Every `// SAFETY:` comment of this file cites these as "invariant n".
//! 1. **Object memory.** An object address a cache hands out, or a free path accepts after
//!    its checks, is a slot of a live slab of that cache in direct-mapped memory; the free
//!    pointer (`freeptr`) and the debug state word lie inside its stride, 8-aligned.
//! 2. **Slab words.** A page word of kind `Slab` names the live descriptor of the slab the page
//!    belongs to; a slab's pages are re-stamped before its descriptor is freed, and its
//!    descriptor comes from the TYPESAFE_BY_RCU slab-descriptor cache (or is the first slot of
//!    a self-hosted slab). A caller that owns an object of the slab keeps slab and descriptor
//!    alive: a slab is discarded only when no object is in use.
//! 3. **A slab's cache.** `Slab.cache` names the slab's cache, which is alive while the slab is:
//!    a cache is destroyed only with no live object, after all its slabs are freed.
//! 4. **Caches.** A cache is alive while it is on the machine's cache list (destroy unlinks it
//!    under the list's lock before freeing it); a permanent cache (kmalloc's, the descriptor
//!    and bootstrap caches, those of `new_cache_forever`) is never destroyed, so a `Kept` of
//!    it is valid for the machine's life.
//! 5. **Bootstrap.** The two bootstrap caches live in boot-allocator memory the machine never
//!    frees; a self-hosted slab's first slot, zeroed with the slab, is its descriptor.
//! 6. **Fresh objects.** An object just taken from a cache is owned by the caller alone, and
//!    the cache's layout sized and aligned it for what the caller writes (a `SlabCache` in the
//!    cache of caches, a `Slab` in the slab-descriptor cache, `len` bytes of kmalloc).
//! 7. **Per-CPU entries.** After `attach_percpu`, a cache's `percpu` points to `nr_cpus`
//!    initialised `CpuSheaves` in pages that the cache alone owns and frees only when it is
//!    destroyed. Every other mutable part of a cache is behind a lock or an atomic; the
//!    entries' owner-only parts are touched only by the holder of that CPU's token (the
//!    invariants of [`super::sheaf`]), so a `&SlabCache` may be used from any CPU.

use core::fmt;
use core::ptr::NonNull;

use crate::base::addr::{Pfn, PAGE_SIZE};
use crate::base::cpu::Cpu;
use crate::base::fault::FaultSite;
use crate::base::gfp::Gfp;
use crate::base::layout::MAX_NODES;
use crate::base::list::{Linked, Links, List};
use crate::base::platform::Platform;
use crate::base::sync::{AtomicUsize, Ordering};
use crate::memmap::desc::DescPtr;
use crate::memmap::desc_ref::Kept;
use crate::memmap::tag::Tag;
use crate::memmap::word::{PageKind, Word};
use crate::page_alloc::AllocError;
use crate::slab::sheaf::{flush_all, CpuSheaves, Fill};
use crate::slab::Slabs;

use super::cache::*;
use super::handle::CacheRef;

impl<'a, P: Platform> Slabs<'a, P> {
    #[inline]
    fn slab_desc_cache(&self) -> &'a SlabCache {
        self.state.boot.slab_desc.get().expect("bootstrap caches are built before the view")
    }

    #[inline]
    fn kmem_cache_cache(&self) -> &'a SlabCache {
        self.state.boot.kmem_cache.get().expect("bootstrap caches are built before the view")
    }

    /// Links a cache into the machine's list of caches.
    pub(crate) fn register_cache(&self, c: &SlabCache) {
        let r = self.state.caches.lock().push_front(c);
        debug_assert!(r.is_ok(), "cache {} registered twice", c.name);
    }

    /// Calls `f` for every cache.
    pub(crate) fn for_each_cache(&self, mut f: impl FnMut(&SlabCache)) {
        for c in self.state.caches.lock().iter() {
            f(c);
        }
    }

    /// Creates a cache that is never destroyed (`destroy_cache` refuses it), held as a
    /// [`Kept`] (for the crate's own caches that live as long as the machine).
    pub(crate) fn new_cache_forever(
        &self,
        cpu: &Cpu<'_>,
        args: &CacheArgs,
        family: CacheFamily,
    ) -> Result<Kept<SlabCache>, AllocError> {
        let c = self.new_cache_with(cpu, args, family, true)?;
        // SAFETY: permanent, so never destroyed (invariant 4).
        Ok(unsafe { Kept::new(c) })
    }

    /// Another [`Kept`] of a permanent cache (kmalloc's size table holds its caches twice);
    /// `None` for a cache that can be destroyed.
    pub(crate) fn keep_permanent(c: &SlabCache) -> Option<Kept<SlabCache>> {
        // SAFETY: permanent, so never destroyed (invariant 4).
        c.permanent.then(|| unsafe { Kept::new(c) })
    }

    /// A second handle to one of this machine's user caches (the checked function behind
    /// [`PhysMem::cache_ref`](crate::PhysMem::cache_ref), whose contract callers keep: the cache
    /// is not destroyed while the creator's handle is used, and only owned objects are freed
    /// through it); the crate's own caches and kmalloc's are refused with
    /// [`SlabError::NotUserCache`].
    pub(crate) fn cache_ref_owned(&self, cache: &'a SlabCache) -> Result<CacheRef<'a, P>, SlabError> {
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
    /// crate's own) to the page allocator; see [`PhysMem::shrink_cache`](crate::PhysMem::shrink_cache). Returns pages freed.
    pub(crate) fn shrink_any_cache(&self, cpu: &Cpu<'_>, cache: &SlabCache) -> u64 {
        self.shrink_cache_inner(cpu, cache, false)
    }

    /// Creates a cache. Its `SlabCache` struct is an object of the cache of caches.
    pub(crate) fn create_cache(&self, cpu: &Cpu<'_>, args: CacheArgs) -> Result<CacheRef<'a, P>, AllocError> {
        let c = self.new_cache_in(cpu, &args, CacheFamily::User)?;
        Ok(CacheRef { slabs: *self, cache: c })
    }

    /// Creates one of the crate's own caches ([`CacheFamily::Internal`]).
    #[cfg(any(test, feature = "pgtable"))]
    pub(crate) fn new_cache(&self, cpu: &Cpu<'_>, args: &CacheArgs) -> Result<&'a SlabCache, AllocError> {
        self.new_cache_in(cpu, args, CacheFamily::Internal)
    }

    pub(crate) fn new_cache_in(
        &self,
        cpu: &Cpu<'_>,
        args: &CacheArgs,
        family: CacheFamily,
    ) -> Result<&'a SlabCache, AllocError> {
        self.new_cache_with(cpu, args, family, false)
    }

    fn new_cache_with(
        &self,
        cpu: &Cpu<'_>,
        args: &CacheArgs,
        family: CacheFamily,
        permanent: bool,
    ) -> Result<&'a SlabCache, AllocError> {
        let mut c =
            SlabCache::layout(args, self.pages.config().debug_checks, false).ok_or(AllocError::InvalidOrder(0))?;
        c.family = family;
        c.kfree_hit_ok = family == CacheFamily::Kmalloc && c.hit_ok;
        c.permanent = permanent;
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
        // SlabCache, owned by us (invariant 6).
        unsafe { obj.as_ptr().write(c) };
        // SAFETY: just initialised; lives until destroy_cache frees it, after unlinking it from
        // the cache list (invariant 4).
        let c = unsafe { &*obj.as_ptr() };
        self.register_cache(c);
        Ok(c)
    }

    /// Destroys a cache with no live objects: flushes its sheaves, frees its slabs (after a
    /// grace period for TYPESAFE_BY_RCU caches) and its per-CPU memory.
    pub(crate) fn destroy_cache(&self, cpu: &Cpu<'_>, cache: CacheRef<'_, P>) -> Result<(), SlabError> {
        let c = cache.cache;
        if c.family == CacheFamily::Kmalloc || c.permanent {
            return Err(SlabError::NotUserCache(c.name));
        }
        if c.live_objects() != 0 {
            return Err(SlabError::Busy(c.live_objects()));
        }
        // Every CPU's cached objects go home first (waiting, bounded, for busy CPUs); a CPU
        // that does not answer leaves the cache as it was.
        if !self.flush_sheaves(cpu, c, true) {
            let busy = (0..c.nr_cpus).find(|&i| !c.sheaves(i).is_empty()).unwrap_or(0);
            return Err(SlabError::CpuBusy(busy));
        }
        self.state.caches.lock().retain(|n| !core::ptr::eq(n, c));
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

    /// Returns every CPU's sheaves of `c` to the slabs ([`flush_all`]): with `wait`, waits
    /// (bounded) for busy CPUs and returns whether all answered; without, busy CPUs flush at
    /// their next operation on `c`.
    fn flush_sheaves(&self, cpu: &Cpu<'_>, c: &SlabCache, wait: bool) -> bool {
        flush_all(self.pages.cpus(), cpu, |i| c.sheaves(i), |objs| self.flush(cpu, c, objs), wait)
    }

    fn shrink_cache_inner(&self, cpu: &Cpu<'_>, c: &SlabCache, all: bool) -> u64 {
        // `all` (destroy) has flushed and waited already.
        self.flush_sheaves(cpu, c, false);
        let mut freed = 0;
        for node in 0..MAX_NODES {
            // Empty slabs move to a local list under the node lock (slab item S2) and are
            // discarded after it is dropped.
            let mut victims = List::<Slab>::new();
            {
                let mut g = c.nodes[node].lock();
                let n = &mut *g;
                let mut all_slabs = core::mem::take(&mut n.partial);
                while let Some(s) = all_slabs.pop_front() {
                    let r = if s.inuse.load(Ordering::Relaxed) == 0 || all {
                        debug_assert!(s.inuse.load(Ordering::Relaxed) == 0);
                        n.nr_slabs -= 1;
                        n.free_objs -= c.objects as u64;
                        victims.push_back(s)
                    } else {
                        n.partial.push_back(s)
                    };
                    debug_assert!(r.is_ok(), "a slab just popped is unlinked");
                }
            }
            while let Some(s) = victims.pop_front() {
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
    #[inline]
    pub(crate) fn cache_alloc(&self, cpu: &Cpu<'_>, c: &SlabCache) -> Result<NonNull<u8>, AllocError> {
        self.cache_alloc_at(cpu, c, FaultSite::Slab)
    }

    /// Allocates one object of `c` with its first `len` bytes (at most the object size) zeroed.
    pub(crate) fn cache_alloc_zeroed(
        &self,
        cpu: &Cpu<'_>,
        c: &SlabCache,
        len: usize,
    ) -> Result<NonNull<u8>, AllocError> {
        let p = self.cache_alloc(cpu, c)?;
        // SAFETY: a fresh object of at least `c.size` bytes, ours (invariant 6).
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0, len.min(c.size)) };
        Ok(p)
    }

    /// Allocates one object of `c`; fault injection sees it as an allocation at `site`.
    ///
    /// The hit path (no fault injection armed, no debug state word, an object in this CPU's
    /// main sheaf) is inline: one branch for both checks' loads, the token check, a pop and
    /// the free-pointer clear. Everything else is [`Slabs::cache_alloc_slow`].
    #[inline(always)]
    pub(crate) fn cache_alloc_at(
        &self,
        cpu: &Cpu<'_>,
        c: &SlabCache,
        site: FaultSite,
    ) -> Result<NonNull<u8>, AllocError> {
        if c.hit_ok && !self.pages.fault().enabled() {
            // `cpu` is this machine's token for CPU `id` (checked by cpu_id), so this thread
            // owns the entry (sheaf.rs invariant 1).
            let id = self.pages.cpu_id(cpu);
            if let Some(obj) = c.sheaves(id).try_alloc(cpu) {
                // Allocated: the slot no longer decodes as free (see "always-on double-free
                // check").
                c.freeptr_of(obj).store(0, Ordering::Relaxed);
                // SAFETY: object addresses are inside direct-mapped slab pages, never zero
                // (invariant 1).
                return Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) });
            }
        }
        self.cache_alloc_slow(cpu, c, site)
    }

    /// [`Slabs::cache_alloc_at`] off the hit path: fault injection, the debug state word, an
    /// empty main sheaf, a pending flush ticket.
    #[inline(never)]
    fn cache_alloc_slow(self, cpu: &Cpu<'_>, c: &SlabCache, site: FaultSite) -> Result<NonNull<u8>, AllocError> {
        if self.pages.fault().should_fail(site) {
            return Err(AllocError::Injected);
        }
        // `cpu` is this machine's token for CPU `id` (checked by cpu_id), so this thread owns the
        // entry (sheaf.rs invariant 1).
        let id = self.pages.cpu_id(cpu);
        let obj = c
            .sheaves(id)
            .alloc(cpu, |f| self.refill(cpu, c, f), |objs| self.flush(cpu, c, objs))?
            .ok_or(AllocError::NoMemory { order: c.order })?;
        // Allocated: the slot no longer decodes as free (see "always-on double-free check").
        c.freeptr_of(obj).store(0, Ordering::Relaxed);
        if let Some(st) = c.state_of(obj) {
            let prev = st.swap(STATE_ALLOC ^ obj, Ordering::AcqRel);
            debug_assert_eq!(prev, STATE_FREE, "a free object was overwritten (use after free)");
        }
        // SAFETY: object addresses are inside direct-mapped slab pages, never zero (invariant 1).
        Ok(unsafe { NonNull::new_unchecked(obj as *mut u8) })
    }

    /// The cache of a live slab (one the caller found through a page word and keeps alive,
    /// e.g. by owning one of its objects).
    #[inline]
    pub(crate) fn cache_of(&self, slab: &Slab) -> &'a SlabCache {
        // SAFETY: a slab's cache is alive while the slab is (invariant 3).
        unsafe { &*(slab.cache.load(Ordering::Acquire) as *const SlabCache) }
    }

    /// The descriptor a `Slab` page word names, for a caller that owns an object of that slab
    /// (the checked free paths, whose callers own the object they free).
    #[inline]
    pub(crate) fn slab_owned(&self, d: DescPtr<Slab>) -> &'a Slab {
        // SAFETY: the slab of an owned object is alive (invariant 2).
        unsafe { &*(d.addr() as *const Slab) }
    }

    /// The slab a page word names if it is a `Slab` word (the tag and a non-zero address,
    /// as [`Word::kind`] decodes it, without decoding the rest), for a caller that owns an
    /// object in that page (the checked free paths).
    #[inline(always)]
    pub(crate) fn slab_of_word(&self, w: Word) -> Option<&'a Slab> {
        // The Slab tag with a non-zero address above it: the word with the tag cleared (by
        // xor, which leaves the address when the tag matches) is a non-zero address with
        // clear low bits.
        let addr = w.raw() ^ Tag::Slab as u64;
        if addr & 0xF != 0 || addr == 0 {
            return None;
        }
        // SAFETY: a Slab word names the live descriptor of its slab, which the caller's object
        // keeps alive (invariant 2).
        Some(unsafe { &*(addr as usize as *const Slab) })
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
            PageKind::Slab(d) => Ok((self.slab_owned(d), pfn)),
            _ => Err(SlabError::NotSlab(addr, v.word.tag())),
        }
    }

    /// Validates that `addr` is the start of an object of `c`; returns its offset from the
    /// slab's first object.
    fn check_object(&self, c: &SlabCache, addr: usize) -> Result<usize, SlabError> {
        let (slab, pfn) = self.slab_at(addr)?;
        self.check_in_slab(c, slab, addr, pfn)
    }

    /// Validates that `addr`, in page `pfn` of `slab`, is the start of an object of `c`;
    /// returns its offset from the slab's first object.
    #[inline]
    fn check_in_slab(&self, c: &SlabCache, slab: &Slab, addr: usize, pfn: Pfn) -> Result<usize, SlabError> {
        if slab.cache.load(Ordering::Acquire) != c as *const SlabCache as usize {
            return Err(SlabError::WrongCache { addr, owner: self.cache_of(slab).name });
        }
        Self::object_rel(c, slab, addr, pfn)
    }

    /// Validates that `addr`, in page `pfn` of `slab` (a slab of `c`), is the start of an
    /// object; returns its offset from the slab's first object.
    #[inline(always)]
    fn object_rel(c: &SlabCache, slab: &Slab, addr: usize, pfn: Pfn) -> Result<usize, SlabError> {
        // The slab is one direct-mapped block, so its base is `addr`'s page minus the page's
        // position in the slab (no second trip through the platform's mapping).
        let page_in_slab = pfn.0.wrapping_sub(slab.flags.pfn().0) as usize;
        let off = page_in_slab.wrapping_mul(PAGE_SIZE).wrapping_add(addr & (PAGE_SIZE - 1));
        // Offset from the first object: inside the object area and on an object boundary.
        let rel = off.wrapping_sub(c.obj_lo);
        if rel >= c.obj_span || !c.is_obj_start(rel) {
            return Err(SlabError::InteriorPointer(addr));
        }
        Ok(rel)
    }

    /// Frees an object of `c`, checked.
    pub(crate) fn cache_free(&self, cpu: &Cpu<'_>, c: &SlabCache, obj: NonNull<u8>) -> Result<(), SlabError> {
        let rel = self.check_object(c, obj.as_ptr() as usize)?;
        self.cache_free_checked(cpu, c, obj.as_ptr() as usize, rel)
    }

    /// Frees an object found in `slab`, a slab of `c` (kfree has resolved the slab from the
    /// page word and `c` from the slab, so the cache needs no second check).
    #[inline(always)]
    pub(crate) fn cache_free_in(
        &self,
        cpu: &Cpu<'_>,
        c: &SlabCache,
        slab: &Slab,
        obj: NonNull<u8>,
        pfn: Pfn,
    ) -> Result<(), SlabError> {
        let rel = Self::object_rel(c, slab, obj.as_ptr() as usize, pfn)?;
        self.cache_free_checked(cpu, c, obj.as_ptr() as usize, rel)
    }

    /// The free hit path of an object found in `slab`, a slab of `c` (a cache without debug
    /// state words: the caller checked `c.hit_ok`): `true` if it freed `addr` into this
    /// CPU's main sheaf; `false`, with nothing changed, when the pointer is not an object's
    /// start, the object looks free already, or the main sheaf has no room (or a flush
    /// ticket is pending): the caller then takes a path with every check and its error.
    #[inline(always)]
    pub(crate) fn cache_free_hit(&self, cpu: &Cpu<'_>, c: &SlabCache, slab: &Slab, addr: usize, pfn: Pfn) -> bool {
        debug_assert!(c.hit_ok, "the caller checks for debug state words");
        let Ok(rel) = Self::object_rel(c, slab, addr, pfn) else { return false };
        let slot = c.freeptr_of(addr);
        // The slot's mask, once: it decodes the slot here and is the "free, no successor"
        // encoding stored below.
        let mix = c.free_mix(addr);
        if c.looks_free_mixed(addr, slot.load(Ordering::Relaxed) ^ mix, rel) {
            return false;
        }
        // A foreign token panics here, before the object's state changes (with a double
        // free, in the slow path, whose token check comes first).
        let cpu_id = self.pages.cpu_id(cpu);
        // `cpu` is this machine's token for CPU `cpu_id`, so this thread owns the entry
        // (sheaf.rs invariant 1).
        if !c.sheaves(cpu_id).try_free(cpu, addr) {
            return false;
        }
        // Pushed; the slot now decodes as free (`encode_free(addr, 0)`). The owner alone reads
        // the sheaf until it hands the object out again, so the order of the two stores is the
        // owner's own business.
        slot.store(mix, Ordering::Relaxed);
        true
    }

    #[inline(always)]
    fn cache_free_checked(&self, cpu: &Cpu<'_>, c: &SlabCache, addr: usize, rel: usize) -> Result<(), SlabError> {
        // A foreign token panics here, before the object's state changes.
        let cpu_id = self.pages.cpu_id(cpu);
        // Always on: a slot that decodes as free means the object is free already (in some
        // CPU's sheaf or on its slab's free list). A plain load and store, no atomic
        // read-modify-write on the hot path: two frees of one object racing on two CPUs
        // (a breach of the raw free's contract that no safe code can commit) may both pass.
        let slot = c.freeptr_of(addr);
        if c.looks_free(addr, slot.load(Ordering::Relaxed), rel) {
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
        // `cpu` is this machine's token for CPU `cpu_id` (checked by cpu_id), so this thread owns
        // the entry (sheaf.rs invariant 1).
        if !c.sheaves(cpu_id).try_free(cpu, addr) {
            self.sheaf_free_slow(cpu, c, cpu_id, addr);
        }
        Ok(())
    }

    /// A free the main sheaf cannot take at once (full, or a flush ticket pending).
    #[inline(never)]
    fn sheaf_free_slow(self, cpu: &Cpu<'_>, c: &SlabCache, cpu_id: usize, addr: usize) {
        // The caller checked that `cpu` is this machine's token for CPU `cpu_id` (sheaf.rs
        // invariant 1).
        c.sheaves(cpu_id).free(cpu, addr, |objs| self.flush(cpu, c, objs));
    }

    /// Returns objects to their slabs.
    fn flush(&self, cpu: &Cpu<'_>, c: &SlabCache, objs: impl Iterator<Item = usize>) {
        // Slabs emptied here, off every list of their node (slab items S1 and S2), discarded
        // once no node lock is held.
        let mut discard = List::<Slab>::new();
        for obj in objs {
            let slab = self.slab_of(obj).expect("objects in sheaves are slab objects");
            let node = self.slab_node(slab);
            let mut n = c.nodes[node].lock();
            // A hardware-poisoned slab (crate::health::hwpoison) is off the partial list for good:
            // its freed objects are lost, and it is retired once its last object is freed.
            let poisoned = slab.flags.flags() & crate::memmap::desc::PG_HWPOISON != 0;
            if poisoned {
                if slab.inuse.fetch_sub(1, Ordering::Relaxed) == 1 {
                    n.nr_slabs -= 1;
                    let r = discard.push_back(slab);
                    debug_assert!(r.is_ok(), "a poisoned slab is on no list");
                }
                continue;
            }
            c.freeptr_of(obj).store(c.encode_free(obj, slab.freelist.load(Ordering::Relaxed)), Ordering::Relaxed);
            slab.freelist.store(obj, Ordering::Relaxed);
            let inuse = slab.inuse.load(Ordering::Relaxed);
            n.free_objs += 1;
            if inuse == c.objects {
                // Was full, so on no list (slab item S2).
                let r = n.partial.push_front(slab);
                debug_assert!(r.is_ok(), "a full slab is on no list");
            }
            let discarded = inuse == 1 && n.partial.len() as u64 > MIN_PARTIAL;
            if discarded {
                // Unlinked while this object still counts as in use (slab item S2).
                let on = slab.partial_unlink(&mut n.partial);
                debug_assert!(on, "a slab with free objects is on its partial list");
                n.nr_slabs -= 1;
                n.free_objs -= c.objects as u64;
            }
            slab.inuse.fetch_sub(1, Ordering::Relaxed);
            if discarded {
                let r = discard.push_back(slab);
                debug_assert!(r.is_ok(), "unlinked just above");
            }
        }
        while let Some(slab) = discard.pop_front() {
            self.discard_slab(cpu, c, self.slab_node(slab), slab);
        }
    }

    fn slab_node(&self, slab: &Slab) -> usize {
        self.pages.memmap().region_of(slab.flags.pfn()).map_or(0, |r| r.node as usize)
    }

    /// Fills the CPU's main sheaf from partial slabs, making a new slab if none has free
    /// objects.
    fn refill(&self, cpu: &Cpu<'_>, c: &SlabCache, s: &mut Fill<'_>) -> Result<(), AllocError> {
        let mut node = self.node_of(cpu);
        loop {
            {
                let mut g = c.nodes[node].lock();
                let n = &mut *g;
                while !s.is_full() {
                    let Some(slab) = n.partial.front() else { break };
                    while !s.is_full() {
                        let obj = slab.freelist.load(Ordering::Relaxed);
                        if obj == 0 {
                            break;
                        }
                        slab.freelist
                            .store(c.encode_free(obj, c.freeptr_of(obj).load(Ordering::Relaxed)), Ordering::Relaxed);
                        slab.inuse.fetch_add(1, Ordering::Relaxed);
                        n.free_objs -= 1;
                        s.push(obj);
                    }
                    if slab.freelist.load(Ordering::Relaxed) == 0 {
                        n.partial.pop_front();
                    }
                }
            }
            if s.len() > 0 {
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
            let r = n.partial.push_front(slab);
            debug_assert!(r.is_ok(), "a new slab is on no list");
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
            // Slab (all atomics) (invariant 5).
            unsafe { &*(base as *const Slab) }
        } else {
            match self.cache_alloc_at(cpu, self.slab_desc_cache(), FaultSite::Desc) {
                // SAFETY: a fresh object of the slab-descriptor cache: zeroed or a former Slab,
                // both valid (all atomics), and ours (invariant 6).
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
                // SAFETY: obj is a fresh object slot inside our slab, never zero (invariant 1).
                ctor(unsafe { NonNull::new_unchecked(obj as *mut u8) });
            }
            let next = if i + 1 < c.objects as usize { obj + c.stride } else { 0 };
            c.freeptr_of(obj).store(c.encode_free(obj, next), Ordering::Relaxed);
            if let Some(st) = c.state_of(obj) {
                st.store(STATE_FREE, Ordering::Relaxed);
            }
        }
        desc.fresh_links();
        desc.flags.init(0, c.order, pfn);
        desc.cache.store(c as *const SlabCache as usize, Ordering::Relaxed);
        desc.freelist.store(first, Ordering::Relaxed);
        desc.inuse.store(0, Ordering::Relaxed);
        desc.objects.store(c.objects, Ordering::Relaxed);
        let w = Word::desc(DescPtr::from_ref(desc));
        self.pages.stamp_block(pfn, c.order, w);
        Ok(desc)
    }

    /// Marks the slab of page `pfn` hardware-poisoned (crate::health::hwpoison): no object is allocated
    /// from it again, objects freed into it are lost, and once the last one is freed its pages
    /// become `HwPoison` instead of going back to the allocator (after a grace period for
    /// TYPESAFE_BY_RCU caches).
    #[cfg(feature = "health")]
    pub(crate) fn poison_slab(&self, cpu: &Cpu<'_>, slab: &Slab, pfn: Pfn) -> SlabPoison {
        // The caller (memory_failure) found the slab through a Slab page word at a point where
        // nothing frees it meanwhile.
        let c = self.cache_of(slab);
        // Objects of this slab sitting in CPU sheaves would still be handed out: return every
        // sheaf's objects to their slabs first (a busy CPU returns them at its next operation
        // on the cache, before it hands out another object).
        self.flush_sheaves(cpu, c, false);
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
            if slab.flags.flags() & crate::memmap::desc::PG_HWPOISON != 0 {
                return SlabPoison::Already;
            }
            let on_partial = n.partial.iter().any(|s| core::ptr::eq(s, slab));
            if slab.freelist.load(Ordering::Relaxed) != 0 && !on_partial {
                // Empty and waiting for a grace period before its pages are freed.
                return SlabPoison::Gone;
            }
            slab.flags.set(crate::memmap::desc::PG_HWPOISON);
            if on_partial {
                n.partial.retain(|s| !core::ptr::eq(s, slab));
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
            let r = n.rcu_pending.push_front(s);
            debug_assert!(r.is_ok(), "a discarded slab is on no list");
            n.rcu_cookie = Some(self.pages.rcu().start_grace_period());
            return;
        }
        self.free_slab_pages(cpu, c, s);
    }

    fn free_slab_pages(&self, cpu: &Cpu<'_>, c: &SlabCache, s: &Slab) {
        debug_assert!(!s.list.is_linked(), "a slab is freed off every list (slab item S3)");
        let pfn = s.flags.pfn();
        let poisoned = s.flags.flags() & crate::memmap::desc::PG_HWPOISON != 0;
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
                    Some(ck) if !n.rcu_pending.is_empty() && self.pages.rcu().poll(ck) => {
                        n.rcu_cookie = None;
                        core::mem::take(&mut n.rcu_pending)
                    }
                    _ => List::new(),
                }
            };
            while let Some(s) = list.pop_front() {
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
            empty += n.partial.iter().filter(|s| s.inuse.load(Ordering::Relaxed) == 0).count() as u64;
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

/// The per-CPU array of a cache (invariant 7).
impl SlabCache {
    pub(super) fn attach_percpu(&mut self, base: NonNull<u8>, pfn: Pfn, order: u32, nr_cpus: usize) {
        let p = base.cast::<CpuSheaves>();
        for i in 0..nr_cpus {
            // SAFETY: the caller gives 2^order pages at `base`, enough for nr_cpus entries
            // (percpu_order), page-aligned (so aligned for the entries), owned by this cache
            // alone: this establishes invariant 7.
            unsafe { p.as_ptr().add(i).write(CpuSheaves::new()) };
        }
        self.percpu = p;
        self.nr_cpus = nr_cpus;
        self.percpu_pfn = pfn;
        self.percpu_order = order;
    }

    #[inline]
    pub(super) fn sheaves(&self, cpu: usize) -> &CpuSheaves {
        assert!(cpu < self.nr_cpus);
        // SAFETY: invariant 7: initialised for every cpu < nr_cpus (checked above), lives with
        // the cache.
        unsafe { &*self.percpu.as_ptr().add(cpu) }
    }
}

// SAFETY: invariant 7: percpu points to memory the cache owns; every mutable part is behind a
// lock, an atomic or the owning CPU's token.
unsafe impl Send for SlabCache {}
// SAFETY: invariant 7, as above.
unsafe impl Sync for SlabCache {}

impl SlabBoot {
    /// Builds the cache of caches and the self-hosting slab-descriptor cache in `pages` boot
    /// pages at `pfn`.
    pub(crate) fn build<P: Platform>(p: &P, pfn: Pfn, nr_cpus: usize, debug: bool) -> Option<SlabBoot> {
        let base = p.direct_map(pfn)?;
        let pc_order = SlabCache::percpu_order(nr_cpus);
        // Aligned as the type (a cache line: the hit paths' fields share one).
        let kc_args = CacheArgs {
            align: core::mem::align_of::<SlabCache>(),
            ..CacheArgs::new("kmem_cache", core::mem::size_of::<SlabCache>())
        };
        let mut kc = SlabCache::layout(&kc_args, debug, false)?;
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
        kc.permanent = true;
        sd.permanent = true;
        let kcp = base.cast::<SlabCache>();
        // SAFETY: the boot page at pfn is ours, page-aligned, and two SlabCache structs fit in
        // it (asserted in cache.rs) (invariant 5).
        unsafe {
            kcp.as_ptr().write(kc);
            kcp.as_ptr().add(1).write(sd);
        }
        // SAFETY: just written; boot memory lives as long as the machine, and both caches are
        // permanent (invariants 4 and 5).
        let (kc, sd) = unsafe { (Kept::new(kcp.as_ref()), Kept::new(&*kcp.as_ptr().add(1))) };
        Some(SlabBoot { kmem_cache: kc, slab_desc: sd })
    }
}

/// The words the allocator keeps inside object slots (invariant 1).
impl SlabCache {
    #[inline]
    pub(super) fn freeptr_of(&self, obj: usize) -> &AtomicUsize {
        // SAFETY: obj is an object slot of this cache inside a live slab (callers get it from
        // a freelist or a validated free); freeptr + 8 <= stride and is 8-aligned (invariant 1).
        unsafe { &*((obj + self.freeptr) as *const AtomicUsize) }
    }

    #[inline]
    pub(super) fn state_of(&self, obj: usize) -> Option<&AtomicUsize> {
        // SAFETY: as freeptr_of; the state word lies inside the slot when debug is on (invariant 1).
        self.state_off.map(|off| unsafe { &*((obj + off) as *const AtomicUsize) })
    }
}

// SAFETY: `links` returns the `links` field every time (Linked item 1); a cache is freed only by
// `destroy_cache`, after it left the machine's cache list under that list's lock (invariant 4;
// Linked item 2).
unsafe impl Linked for SlabCache {
    fn links(&self) -> &Links {
        &self.links
    }
}
