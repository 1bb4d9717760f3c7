//! THE one module that turns a descriptor address (a `usize` from a page word, a list link or
//! a field) into a reference. Every reference it makes lives no longer than the thing that
//! keeps the descriptor alive:
//!
//! | what keeps it alive | API | safe? |
//! |---|---|---|
//! | an RCU read section (descriptors are `TYPESAFE_BY_RCU`) | [`rcu`] / [`rcu_addr`] | yes, for a [`DescPtr`] decoded from a word; `unsafe` for a bare address |
//! | the structure that stores the address (a lock-protected table, a VMA's `mm`) | [`Kept<T>`] | `unsafe` to store, safe to read: the reference borrows the field |
//! | a held lock under which the descriptor is freed | [`locked`] | `unsafe`: the caller names the lock |
//! | a pin or reference count the caller holds | [`pinned`] | `unsafe`: the caller names the pin |
//!
//! and [`from_addr`], the raw cast every other path is built on (unbounded lifetime, for
//! code that can state no better owner; new code should not need it).
//!
//! # Invariants
//! 1. **Typed addresses.** A non-zero address given to this module, or stored in a [`Kept`], is
//!    the address of a `T` (aligned, initialised) that is alive when the reference is made.
//! 2. **Lifetime = keeper.** The reference's lifetime is bounded by a borrow of what keeps the
//!    `T` alive: the RCU guard (descriptor memory stays a `T` until a grace period after it is
//!    freed, [`Descriptor`] item 3, and the guard holds off that grace period), the lock guard,
//!    the pin, or the `Kept` field itself.
//! 3. **Kept fields change only through `&mut`.** A [`Kept`] is written only through
//!    `&mut self`, so no reference read through `&self` survives a change; and its target is
//!    freed only after the field was cleared or replaced (its `unsafe` constructors' contract).
//! 4. **Shared access only.** The references are shared (`&T`); descriptor fields are atomics
//!    or immutable ([`Descriptor`] item 2), so concurrent writers through other references are
//!    not data races.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::marker::PhantomData;

use crate::base::rcu::RcuGuard;
use crate::memmap::desc::{DescPtr, Descriptor};

/// The raw cast: the `T` at `addr`, for `'a`.
///
/// # Safety
/// `addr` is the address of a live, initialised, aligned `T` that stays alive and is not
/// written except through shared-access-safe fields (atomics) for `'a` (invariants 1, 2, 4).
#[inline]
pub unsafe fn from_addr<'a, T>(addr: usize) -> &'a T {
    debug_assert!(addr != 0 && addr.is_multiple_of(core::mem::align_of::<T>()), "descriptor address {addr:#x}");
    // SAFETY: the caller's contract is exactly what `&*` needs.
    unsafe { &*(addr as *const T) }
}

/// A descriptor decoded from a page word, for the guard's read section. Revalidate (take a
/// reference, re-read the word) before trusting what it says: the descriptor may have been
/// freed and reused for another page of the same kind meanwhile.
#[inline]
pub fn rcu<'g, T: Descriptor>(guard: &'g RcuGuard<'_>, p: DescPtr<T>) -> &'g T {
    p.get(guard)
}

/// The descriptor at a bare address under RCU (a value read from a descriptor's field, such as
/// a folio's `mapping` naming an anon_vma in a `TYPESAFE_BY_RCU` cache).
///
/// # Safety
/// `addr` was, at some point during the guard's read section, the address of a live `T`
/// allocated from `T`'s `TYPESAFE_BY_RCU` cache (invariants 1 and 2: it then stays a `T`
/// until the section ends).
#[inline]
pub unsafe fn rcu_addr<'g, T: Descriptor>(_guard: &'g RcuGuard<'_>, addr: usize) -> &'g T {
    // SAFETY: type-stable memory held by the read section (Descriptor item 3, invariant 2).
    unsafe { from_addr(addr) }
}

/// The `T` at `addr` while the lock whose guard is `guard` stays held (the result borrows
/// `guard`).
///
/// # Safety
/// `addr` is the address of a live `T` (found under this lock: in a page word, a list or a
/// table the lock protects), and `T`s of that kind are freed only by a holder of this same
/// lock instance (invariants 1 and 2).
#[inline]
pub unsafe fn locked<T, G>(guard: &G, addr: usize) -> &T {
    let _ = guard;
    // SAFETY: alive while the lock is held, by the caller's contract; the result borrows the
    // guard, so it cannot outlive the hold.
    unsafe { from_addr(addr) }
}

/// The `T` at `addr` while the caller holds `pin` (a reference count, a mapcount, a handle);
/// the result borrows `pin`.
///
/// # Safety
/// `pin` keeps the `T` at `addr` alive while it is borrowed (invariants 1 and 2).
#[inline]
pub unsafe fn pinned<T, Pin: ?Sized>(pin: &Pin, addr: usize) -> &T {
    let _ = pin;
    // SAFETY: alive while the pin is held, by the caller's contract.
    unsafe { from_addr(addr) }
}

/// An address stored in a structure that keeps its target alive (a lock-protected table's
/// entry, a VMA's `mm`, a record's `next`): reading it is safe, and the reference borrows the
/// field, so it ends before the field can change (invariant 3).
#[repr(transparent)]
pub struct Kept<T> {
    addr: usize,
    _marker: PhantomData<*const T>,
}

// SAFETY: a Kept hands out `&T` only; moving or sharing it across threads is sound when `T` is
// `Sync` (invariant 4).
unsafe impl<T: Sync> Send for Kept<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Kept<T> {}

impl<T> core::fmt::Debug for Kept<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Kept({:#x})", self.addr)
    }
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept::NONE
    }
}

impl<T> Kept<T> {
    /// No target.
    pub const NONE: Kept<T> = Kept { addr: 0, _marker: PhantomData };

    /// Keeps `t`.
    ///
    /// # Safety
    /// `t` stays alive at least until this value is dropped or changed through
    /// [`Kept::set`] (invariant 3): whoever frees it first clears the field.
    #[inline]
    pub unsafe fn new(t: &T) -> Kept<T> {
        Kept { addr: t as *const T as usize, _marker: PhantomData }
    }

    /// Replaces the target.
    ///
    /// # Safety
    /// As [`Kept::new`], for `t`.
    #[inline]
    pub unsafe fn set(&mut self, t: Option<&T>) {
        self.addr = t.map_or(0, |t| t as *const T as usize);
    }

    /// Clears the field (before its old target is freed).
    #[inline]
    pub fn clear(&mut self) {
        self.addr = 0;
    }

    /// The target, for as long as the field is borrowed.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        // SAFETY: a non-zero address was stored from a live `&T` that stays alive until the
        // field changes, which needs `&mut self`, which the returned borrow excludes
        // (invariants 1 and 3).
        (self.addr != 0).then(|| unsafe { from_addr(self.addr) })
    }

    /// The address (0 for none), for comparisons and for storing in a word.
    #[inline]
    pub fn addr(&self) -> usize {
        self.addr
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::rcu::Rcu;
    use crate::base::sync::{AtomicU32, Ordering};
    use crate::memmap::desc::Folio;
    use std::boxed::Box;

    fn zeroed_folio() -> Box<Folio> {
        // SAFETY: every field of a Folio is an atomic integer, for which all-zero is valid.
        Box::new(unsafe { core::mem::MaybeUninit::<Folio>::zeroed().assume_init() })
    }

    #[test]
    fn rcu_paths_read_the_descriptor_for_the_guard() {
        let f = zeroed_folio();
        f.index.store(42, Ordering::Relaxed);
        let rcu = Rcu::new(1);
        let cpu = rcu.cpus().claim(0).unwrap();
        let g = rcu.read_lock(&cpu);
        assert_eq!(rcu_fn(&g, DescPtr::from_ref(&*f)).index(), 42);
        // SAFETY: `f` is a live Folio for the whole section.
        let r: &Folio = unsafe { rcu_addr(&g, &*f as *const Folio as usize) };
        assert_eq!(r.index(), 42);
        drop(g);
    }
    fn rcu_fn<'g>(g: &'g RcuGuard<'_>, p: DescPtr<Folio>) -> &'g Folio {
        rcu(g, p)
    }

    #[test]
    fn locked_and_pinned_borrow_their_keeper() {
        let lock = crate::base::sync::SpinLock::new(());
        let v = Box::new(AtomicU32::new(7));
        let addr = &*v as *const AtomicU32 as usize;
        let g = lock.lock();
        // SAFETY: `v` lives past the guard and is freed by no one meanwhile.
        let r: &AtomicU32 = unsafe { locked(&g, addr) };
        assert_eq!(r.load(Ordering::Relaxed), 7);
        drop(g);
        let pin = 1u8;
        // SAFETY: as above; `pin` stands for a reference the test holds.
        let p: &AtomicU32 = unsafe { pinned(&pin, addr) };
        assert_eq!(p.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn kept_reads_through_its_field_and_clears() {
        let (a, b) = (Box::new(1u64), Box::new(2u64));
        // SAFETY: both boxes outlive `k`.
        let mut k = unsafe { Kept::new(&*a) };
        assert_eq!(k.get(), Some(&1));
        assert_eq!(k.addr(), &*a as *const u64 as usize);
        // SAFETY: as above.
        unsafe { k.set(Some(&*b)) };
        assert_eq!(k.get(), Some(&2));
        k.clear();
        assert_eq!((k.get(), k.addr()), (None, 0));
        assert!(Kept::<u64>::default().get().is_none());
        assert_eq!(core::mem::size_of::<Kept<Folio>>(), core::mem::size_of::<usize>());
    }
}
