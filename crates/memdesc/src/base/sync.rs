//! Synchronisation primitives for the core: the atomics we use (swapped for `loom`'s under
//! `--cfg loom`, so the same code is model-checked) and a small test-and-test-and-set spin lock.
//!
//! This module may touch nothing but atomics; it is the only place that chooses between
//! `core::sync::atomic` and `loom`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// A deliberate break of one concurrency guard, switched on only by the loom tests that check a
/// model fails without that guard (see [`mutation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // variants are only named by the loom build
pub(crate) enum Mutation {
    /// `Rcu::read_lock` omits the fence after publishing its slot.
    RcuReaderNoFence,
    /// `check_and_claim` stores the tail word instead of compare-exchanging it.
    FreeClaimNoCas,
    /// A lockless read of a split two-level area trusts the table word without re-reading
    /// the area word.
    TwoLevelNoRecheck,
    /// The lockless two-level read and the unsplit omit their fences.
    TwoLevelNoFences,
    /// A remote flush of a CPU's sheaves drops their lock between taking the objects and
    /// emptying the sheaves.
    SheafFlushDropsLock,
    /// `CpuSet::borrow` takes a CPU without checking that nobody holds it.
    CpuBorrowIgnoresOwner,
}

/// The mutation switch. In the loom test build it is a thread-local (loom runs a model's
/// threads as coroutines on the test's own OS thread, so tests running in parallel do not see
/// each other's switch); in every other build [`mutation::active`] is a constant `false`.
pub(crate) mod mutation {
    use super::Mutation;

    #[cfg(all(test, loom))]
    std::thread_local! {
        static ACTIVE: core::cell::Cell<Option<Mutation>> = const { core::cell::Cell::new(None) };
    }

    /// Whether `m` is switched on (always `false` outside the loom tests).
    #[inline(always)]
    pub(crate) fn active(m: Mutation) -> bool {
        #[cfg(all(test, loom))]
        return ACTIVE.with(|a| a.get() == Some(m));
        #[cfg(not(all(test, loom)))]
        {
            let _ = m;
            false
        }
    }

    /// Runs `f` with `m` switched on.
    #[cfg(all(test, loom))]
    pub(crate) fn with<R>(m: Mutation, f: impl FnOnce() -> R) -> R {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                ACTIVE.with(|a| a.set(None));
            }
        }
        ACTIVE.with(|a| a.set(Some(m)));
        let _reset = Reset;
        f()
    }
}

/// Spin-wait hint; under loom it yields to the model scheduler so spinning terminates.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// A test-and-test-and-set spin lock protecting a `T`.
///
/// Used for zone locks (shared by all CPUs) and per-CPU list locks (taken by their own CPU on
/// the fast path and by another CPU only to drain). It does not disable interrupts: the
/// simulated machine has none, and a kernel port would wrap it.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out at most one guard at a time, so `&SpinLock<T>` only gives
// exclusive access to `T` to one thread at a time; `T: Send` is enough for that.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A new, unlocked lock.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// A new, unlocked lock.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Self { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Spins until the lock is ours.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        loop {
            if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return SpinGuard { lock: self };
            }
            while self.locked.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| SpinGuard { lock: self })
    }

    /// Exclusive access without locking, through `&mut self`.
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Proof that a [`SpinLock`] is held; unlocks on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while `locked` is true and was set by us, so no other
        // guard (and thus no other reference to the value) exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only live reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
