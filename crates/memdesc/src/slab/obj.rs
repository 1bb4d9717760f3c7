//! Typed objects in slab memory: the one place where a slab or kmalloc object becomes a `T`.
//!
//! | type | what it owns | made by | freed by |
//! |---|---|---|---|
//! | [`KObj<'m, T>`] | one `T` in kmalloc memory (a typed `KBox`) | `mem.slabs().kobj(cpu, value)` | `mem.slabs().kobj_free(cpu, obj) -> T` |
//! | [`KArray<'m, T>`] | `len` `T: Copy` in kmalloc memory | `mem.slabs().karray(cpu, len, fill)` | `mem.slabs().karray_free(cpu, arr)` |
//! | [`CacheObj<'m, T>`] | one `T` in an object of a slab cache made for `T` | `mem.slabs().obj_alloc(cpu, ObjCache<T>, value)` | `mem.slabs().obj_free(cpu, obj) -> T` |
//!
//! (`mem.slabs()` is the crate-private slab view of a machine, [`Slabs`]; these are crate
//! APIs for the layers above.)
//!
//! [`ObjCache<'m, T>`] is a cache checked (or created) for `T`: `slabs.new_obj_cache::<T>(cpu,
//! args)` creates one (size and alignment taken from `T`), `slabs.obj_cache::<T>(cache)` checks
//! an existing cache of this machine (size, alignment, not `TYPESAFE_BY_RCU`) and refuses a
//! mismatch with [`SlabError::Layout`].
//!
//! All three handles are owners, like `Box`: `Deref`/`DerefMut` (`KArray`: bounds-checked
//! [`KArray::get`]/[`KArray::set`] and [`KArray::as_slice`]/[`KArray::as_mut_slice`]), `Send`/`Sync`
//! when `T` is (declared in `machine/raw.rs`), not `Clone`. Freeing needs a [`Cpu`], which `Drop`
//! has not: dropping a handle leaks the memory and does not drop the `T` (safe, as
//! `mem::forget`). The `'m` lifetime borrows the machine, so no handle outlives it. A handle
//! freed through another machine than the one that made it is not freed: the value is still
//! returned and the memory stays allocated (leaked) — the typed error-free API the callers want,
//! at the price of a leak on a misuse that the lifetime cannot rule out.
//!
//! Objects of `TYPESAFE_BY_RCU` caches (descriptors, anon_vmas) are not owned values — lockless
//! readers may read them after the free — so they are not `CacheObj`s: the descriptor caches
//! hand out `&T` through `Slabs::alloc_desc` (below, invariant 5), and `obj_cache` refuses such
//! a cache.
//!
//! # Invariants
//! 1. **Owned.** The pointer of a `KObj`/`KArray`/`CacheObj` is an object allocated by the
//!    machine recorded in the handle (`machine`): from kmalloc (`KObj`, `KArray`) or from the
//!    handle's cache (`CacheObj`). Nothing else names it: the allocator hands an object to one
//!    caller, the handle is not `Clone`, and the object is freed only by the function that
//!    consumes the handle. So `&self` gives shared and `&mut self` exclusive access.
//! 2. **Layout.** The object holds a `T` (`KArray`: `len` `T`s) and is aligned for it: a kmalloc
//!    request is sized by `kmalloc_request` (at least the size; for an alignment above 8 a
//!    power of two at least the alignment, served by a class whose objects are aligned to their
//!    size, or by page-aligned large kmalloc); a `CacheObj`'s cache passed `ObjCache`'s check
//!    (object size ≥ `size_of::<T>()`, objects aligned to `align_of::<T>()`: slabs are
//!    page-aligned and the stride is a multiple of the object alignment). Alignments above a
//!    page are refused at compile time.
//! 3. **Initialised.** The `T` (every element of a `KArray`) is written before the handle is
//!    made and read out (`ptr::read`) only by the consuming free, after which the pointer is
//!    gone.
//! 4. **Not type-stable.** An `ObjCache` never names a `TYPESAFE_BY_RCU` cache, so no lockless
//!    reader may still hold a reference into a `CacheObj` when `&mut` access or the free happens.
//! 5. **Descriptor objects.** An object of a descriptor kind's cache (`alloc_desc`) is always a
//!    valid `T`: the cache is `TYPESAFE_BY_RCU`, laid out for `T` (16-byte aligned), its slabs
//!    are zeroed and its objects are only ever `T`s (all atomics: [`crate::desc::Descriptor`]
//!    items 2 and 3), and it is permanent, so the reference may live as long as the machine.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// The users are the folio, mm and pools layers, converting in parallel (issue 13); the tests
// (machine/slab.rs) use every item. Remove once the layers above call these.
#![cfg_attr(not(test), allow(dead_code))]

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::addr::PAGE_SIZE;
use crate::cpu::Cpu;
use crate::gfp::Gfp;
use crate::page_alloc::AllocError;
use crate::platform::Platform;

use super::cache::{CacheArgs, SlabCache, SlabError};
use super::Slabs;

/// The kmalloc request for `size` bytes aligned to `align` (invariant 2): `size` when `align`
/// is at most 8 (every class is 8-aligned), else the next power of two of `max(size, align)`
/// (a power-of-two class is aligned to its size; above the largest class, large kmalloc is
/// page-aligned). `None` on overflow.
#[inline]
pub(crate) fn kmalloc_request(size: usize, align: usize) -> Option<usize> {
    if align <= 8 {
        Some(size)
    } else {
        size.max(align).checked_next_power_of_two()
    }
}

/// Compile-time refusal of alignments kmalloc and slab caches cannot give (invariant 2).
struct AlignOk<T>(PhantomData<T>);
impl<T> AlignOk<T> {
    const CHECK: () = assert!(core::mem::align_of::<T>() <= PAGE_SIZE, "alignment above a page");
}

/// One `T` in kmalloc memory, owned (module header): `Deref`/`DerefMut` to the `T`; free it
/// with `Slabs::kobj_free`, which returns the value. Dropping it leaks the memory and the value.
#[must_use = "dropping a KObj leaks the object; free it with kobj_free"]
pub struct KObj<'m, T> {
    ptr: NonNull<T>,
    machine: u32,
    _owns: PhantomData<(&'m (), T)>,
}

/// `len` values of `T` in kmalloc memory, owned (module header): bounds-checked
/// [`get`](KArray::get)/[`set`](KArray::set), or the slice. Free it with `Slabs::karray_free`.
#[must_use = "dropping a KArray leaks the memory; free it with karray_free"]
pub struct KArray<'m, T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    machine: u32,
    _owns: PhantomData<(&'m (), T)>,
}

/// A slab cache of this machine checked (or created) for objects of type `T` (module header).
/// `Copy`: it is a typed reference to the cache.
pub struct ObjCache<'m, T> {
    cache: &'m SlabCache,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjCache<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for ObjCache<'_, T> {}

/// One `T` in an object of a slab cache, owned (module header): `Deref`/`DerefMut` to the `T`;
/// free it with `Slabs::obj_free`, which returns the value.
#[must_use = "dropping a CacheObj leaks the object; free it with obj_free"]
pub struct CacheObj<'m, T> {
    ptr: NonNull<T>,
    cache: &'m SlabCache,
    machine: u32,
    _owns: PhantomData<T>,
}

/// An index outside a [`KArray`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    /// The index asked for.
    pub index: usize,
    /// The array's length.
    pub len: usize,
}

impl core::fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "index {} outside an array of {}", self.index, self.len)
    }
}

impl core::error::Error for OutOfBounds {}

impl<T> KObj<'_, T> {
    /// The object's address (for identity and for tables that record it; valid until freed).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<T> {
        self.ptr
    }
}

impl<'m, T> KObj<'m, T> {
    /// Gives the object up for a shared reference for the machine's lifetime, like
    /// `Box::leak`: no handle frees it any more, and its `T` is never dropped. A shared owner
    /// (page_pool's core, freed by the last of its users) frees the memory by address with the
    /// checked `Slabs::kfree_owned` once nothing reaches it.
    pub fn leak(self) -> &'m T {
        // SAFETY: the handle owned an initialised T (invariants 1 and 3) and is consumed here,
        // so no free through a handle ends the reference; the memory stays allocated while the
        // machine lives unless freed by address by an owner that no longer uses it.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Deref for KObj<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: an owned, aligned, initialised T (invariants 1–3), borrowed through `&self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for KObj<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` is the one owner's exclusive borrow (invariant 1).
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for KObj<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("KObj").field(&**self).finish()
    }
}

impl<T: Copy> KArray<'_, T> {
    /// Number of elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the array has no element.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Element `i`, or `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<T> {
        self.as_slice().get(i).copied()
    }
    /// Sets element `i`; an index past the end is refused and changes nothing.
    #[inline]
    pub fn set(&mut self, i: usize, v: T) -> Result<(), OutOfBounds> {
        let len = self.len;
        *self.as_mut_slice().get_mut(i).ok_or(OutOfBounds { index: i, len })? = v;
        Ok(())
    }
    /// The elements.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialised, aligned Ts owned by this handle (invariants 1–3).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    /// The elements, mutably.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`; `&mut self` is the owner's exclusive borrow (invariant 1).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
    /// The array's address (valid until freed).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<T> {
        self.ptr
    }
}

impl<T: Copy + core::fmt::Debug> core::fmt::Debug for KArray<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'m, T> ObjCache<'m, T> {
    /// The cache.
    #[inline]
    pub fn cache(&self) -> &'m SlabCache {
        self.cache
    }

    /// Whether objects of `c` can hold a `T` (invariants 2 and 4).
    fn fits(c: &SlabCache) -> bool {
        let obj_align = (1usize << c.stride.trailing_zeros()).min(PAGE_SIZE);
        !c.typesafe && c.size >= core::mem::size_of::<T>() && obj_align >= core::mem::align_of::<T>()
    }
}

impl<T> CacheObj<'_, T> {
    /// The object's address (valid until freed).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<T> {
        self.ptr
    }
    /// The cache the object belongs to.
    #[inline]
    pub fn cache(&self) -> &SlabCache {
        self.cache
    }
}

impl<T> Deref for CacheObj<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: an owned, aligned, initialised T of a non-type-stable cache (invariants 1–4).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for CacheObj<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` is the owner's exclusive borrow and no lockless
        // reader can hold the object (invariants 1 and 4).
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for CacheObj<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("CacheObj").field(&self.cache.name).field(&**self).finish()
    }
}

impl<'a, P: Platform> Slabs<'a, P> {
    /// Kmalloc memory for `bytes` bytes aligned to `align` (invariant 2).
    fn kmalloc_for(&self, cpu: &Cpu<'_>, bytes: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let req = kmalloc_request(bytes, align).ok_or(AllocError::NoMemory { order: u32::MAX })?;
        let p = self.kmalloc_raw(cpu, req, Gfp::KERNEL)?;
        debug_assert!((p.as_ptr() as usize).is_multiple_of(align), "kmalloc({req}) not {align}-aligned");
        Ok(p)
    }

    /// Gives kmalloc memory back (the caller owns it: invariant 1); on a refusal the memory
    /// stays allocated.
    fn kfree_obj(&self, cpu: &Cpu<'_>, machine: u32, p: NonNull<u8>) {
        if machine != self.pages.machine_id() {
            return;
        }
        let r = self.kfree_owned(cpu, p);
        debug_assert!(r.is_ok(), "typed kmalloc free: {r:?}");
    }

    /// Moves `value` into kmalloc memory. On failure the value is dropped.
    pub(crate) fn kobj<T>(&self, cpu: &Cpu<'_>, value: T) -> Result<KObj<'a, T>, AllocError> {
        let () = AlignOk::<T>::CHECK;
        let p = self.kmalloc_for(cpu, core::mem::size_of::<T>(), core::mem::align_of::<T>())?.cast::<T>();
        // SAFETY: fresh kmalloc memory owned by this call, sized and aligned for a T
        // (invariants 1 and 2); writing it makes invariant 3 hold.
        unsafe { p.as_ptr().write(value) };
        Ok(KObj { ptr: p, machine: self.pages.machine_id(), _owns: PhantomData })
    }

    /// Frees a [`KObj`], returning its value (module header: another machine's handle leaks its
    /// memory).
    pub(crate) fn kobj_free<T>(&self, cpu: &Cpu<'_>, obj: KObj<'_, T>) -> T {
        // SAFETY: an initialised T owned by `obj` (invariants 1 and 3); the handle is consumed
        // here, so nothing reads the memory after the free below.
        let value = unsafe { obj.ptr.as_ptr().read() };
        self.kfree_obj(cpu, obj.machine, obj.ptr.cast());
        value
    }

    /// `len` copies of `fill` in kmalloc memory.
    pub(crate) fn karray<T: Copy>(&self, cpu: &Cpu<'_>, len: usize, fill: T) -> Result<KArray<'a, T>, AllocError> {
        let () = AlignOk::<T>::CHECK;
        let bytes = len.checked_mul(core::mem::size_of::<T>()).ok_or(AllocError::NoMemory { order: u32::MAX })?;
        let p = self.kmalloc_for(cpu, bytes, core::mem::align_of::<T>())?.cast::<T>();
        for i in 0..len {
            // SAFETY: i < len, inside the fresh allocation sized and aligned for `len` Ts
            // (invariant 2), owned by this call (invariant 1).
            unsafe { p.as_ptr().add(i).write(fill) };
        }
        Ok(KArray { ptr: p, len, machine: self.pages.machine_id(), _owns: PhantomData })
    }

    /// Frees a [`KArray`] (module header: another machine's handle leaks its memory).
    pub(crate) fn karray_free<T: Copy>(&self, cpu: &Cpu<'_>, arr: KArray<'_, T>) {
        self.kfree_obj(cpu, arr.machine, arr.ptr.cast());
    }

    /// Checks that `cache` (a cache of this machine) can hold `T`s as owned objects: large and
    /// aligned enough, not `TYPESAFE_BY_RCU`; else [`SlabError::Layout`].
    pub(crate) fn obj_cache<T>(&self, cache: &'a SlabCache) -> Result<ObjCache<'a, T>, SlabError> {
        let () = AlignOk::<T>::CHECK;
        if ObjCache::<T>::fits(cache) {
            Ok(ObjCache { cache, _t: PhantomData })
        } else {
            Err(SlabError::Layout {
                cache: cache.name,
                size: core::mem::size_of::<T>(),
                align: core::mem::align_of::<T>(),
            })
        }
    }

    /// Creates a cache for `T`s: `args` gives the name, a minimum alignment and `reclaimable`;
    /// the size and alignment come from `T`, and `ctor`, `typesafe_by_rcu` and
    /// `freeptr_offset` are cleared (owned objects, invariant 4).
    pub(crate) fn new_obj_cache<T>(&self, cpu: &Cpu<'_>, args: CacheArgs) -> Result<ObjCache<'a, T>, AllocError> {
        let () = AlignOk::<T>::CHECK;
        let args = CacheArgs {
            size: core::mem::size_of::<T>().max(1),
            align: args.align.max(core::mem::align_of::<T>()),
            ctor: None,
            typesafe_by_rcu: false,
            freeptr_offset: None,
            ..args
        };
        let cache = self.new_cache_in(cpu, &args, super::CacheFamily::Internal)?;
        debug_assert!(ObjCache::<T>::fits(cache), "cache {} laid out for its type", cache.name);
        Ok(ObjCache { cache, _t: PhantomData })
    }

    /// Moves `value` into a fresh object of `cache`. On failure the value is dropped.
    pub(crate) fn obj_alloc<T>(
        &self,
        cpu: &Cpu<'_>,
        cache: ObjCache<'a, T>,
        value: T,
    ) -> Result<CacheObj<'a, T>, AllocError> {
        let p = self.cache_alloc(cpu, cache.cache)?.cast::<T>();
        // SAFETY: a fresh object of a cache checked for T (invariant 2), owned by this call
        // (invariant 1); writing it makes invariant 3 hold.
        unsafe { p.as_ptr().write(value) };
        Ok(CacheObj { ptr: p, cache: cache.cache, machine: self.pages.machine_id(), _owns: PhantomData })
    }

    /// Allocates a descriptor of kind `T` from its TYPESAFE_BY_RCU cache (the one typed object
    /// that is not owned: module header). Its memory is zero or a former `T` with refcount 0;
    /// the caller initialises it before a word points to it.
    #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
    pub(crate) fn alloc_desc<T: crate::desc::CachedDescriptor>(&self, cpu: &Cpu<'_>) -> Result<&'a T, AllocError> {
        let p = self.cache_alloc_at(cpu, self.desc_cache::<T>(), crate::fault::FaultSite::Desc)?;
        // SAFETY: an object of T's descriptor cache: zeroed or a former T, a valid T that lives
        // as long as the machine (invariant 5).
        Ok(unsafe { &*(p.as_ptr() as *const T) })
    }

    /// Frees a [`CacheObj`], returning its value (module header: another machine's handle
    /// leaks its memory).
    pub(crate) fn obj_free<T>(&self, cpu: &Cpu<'_>, obj: CacheObj<'_, T>) -> T {
        // SAFETY: an initialised T owned by `obj` (invariants 1 and 3); the handle is consumed
        // here, and no lockless reader holds the object (invariant 4).
        let value = unsafe { obj.ptr.as_ptr().read() };
        if obj.machine == self.pages.machine_id() {
            let r = self.cache_free(cpu, obj.cache, obj.ptr.cast());
            debug_assert!(r.is_ok(), "typed object free: {r:?}");
        }
        value
    }
}
