//! Read-copy-update for the core: an epoch scheme with per-CPU reader slots, usable without std.
//!
//! A reader publishes "I am inside a read-side section that began in epoch E" in its CPU's slot
//! and follows it with a full fence; a writer that has unlinked an object starts a grace period
//! by advancing the global epoch (then a full fence), and the grace period is over when every
//! CPU is either outside a read-side section or inside one that began in the new epoch. The two
//! fences make the usual guarantee: either the writer sees the reader's slot, or the reader sees
//! the unlink. Nesting is counted per CPU.
//!
//! Grace periods are split into [`Rcu::start_grace_period`] (returns a cookie) and
//! [`Rcu::poll`], so callers can defer frees without blocking (descriptor caches return pages
//! this way), and [`Rcu::synchronize`] waits for one.
//!
//! This module touches only its own atomics.

use crate::cpu::{Cpu, MAX_CPUS};
use crate::sync::{fence, spin_hint, AtomicU32, AtomicU64, Ordering};

const ACTIVE: u64 = 1;

#[repr(align(64))]
struct Slot {
    /// `epoch << 1 | ACTIVE` while inside a read-side section, 0 outside.
    state: AtomicU64,
    nesting: AtomicU32,
}

/// The RCU state of one machine.
pub struct Rcu {
    epoch: AtomicU64,
    slots: [Slot; MAX_CPUS],
}

/// A grace period started by [`Rcu::start_grace_period`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpCookie(pub(crate) u64);

/// Proof of being inside a read-side critical section; ends it when dropped.
///
/// References obtained under the guard (e.g. [`crate::desc::DescPtr::get`]) live no longer
/// than it.
pub struct RcuGuard<'a> {
    rcu: &'a Rcu,
    cpu: usize,
}

impl Default for Rcu {
    fn default() -> Self {
        Self::new()
    }
}

impl Rcu {
    /// A fresh RCU state (epoch 1, no readers).
    pub fn new() -> Self {
        Rcu {
            epoch: AtomicU64::new(1),
            slots: core::array::from_fn(|_| Slot { state: AtomicU64::new(0), nesting: AtomicU32::new(0) }),
        }
    }

    /// Enters a read-side critical section on `cpu` (nests).
    ///
    /// ```
    /// use memdesc::{cpu::CpuSet, rcu::Rcu};
    /// let (cpus, rcu) = (CpuSet::new(1), Rcu::new());
    /// let cpu = cpus.claim(0).unwrap();
    /// let g = rcu.read_lock(&cpu);
    /// let cookie = rcu.start_grace_period();
    /// assert!(!rcu.poll(cookie)); // our reader holds it off
    /// drop(g);
    /// assert!(rcu.poll(cookie));
    /// ```
    #[inline]
    pub fn read_lock<'a>(&'a self, cpu: &Cpu<'_>) -> RcuGuard<'a> {
        let slot = &self.slots[cpu.id()];
        // Only the token holder touches `nesting`; Relaxed is enough.
        let n = slot.nesting.load(Ordering::Relaxed);
        slot.nesting.store(n + 1, Ordering::Relaxed);
        if n == 0 {
            let e = self.epoch.load(Ordering::Relaxed);
            slot.state.store(e << 1 | ACTIVE, Ordering::Relaxed);
            // Pairs with the fence in `start_grace_period`/`poll`: either the writer sees our
            // slot, or our later loads see everything it did before its fence.
            fence(Ordering::SeqCst);
        }
        RcuGuard { rcu: self, cpu: cpu.id() }
    }

    fn read_unlock(&self, cpu: usize) {
        let slot = &self.slots[cpu];
        let n = slot.nesting.load(Ordering::Relaxed);
        slot.nesting.store(n - 1, Ordering::Relaxed);
        if n == 1 {
            // Release: our reads inside the section happen before a writer sees us leave.
            slot.state.store(0, Ordering::Release);
        }
    }

    /// Starts a grace period for everything unlinked before this call.
    pub fn start_grace_period(&self) -> GpCookie {
        let new = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        fence(Ordering::SeqCst);
        GpCookie(new)
    }

    /// Whether the grace period `cookie` has elapsed: no CPU is still in a read-side section
    /// that began before it.
    pub fn poll(&self, cookie: GpCookie) -> bool {
        fence(Ordering::SeqCst);
        self.slots.iter().all(|s| {
            let st = s.state.load(Ordering::Acquire);
            st & ACTIVE == 0 || (st >> 1) >= cookie.0
        })
    }

    /// Waits for a full grace period. Must not be called inside a read-side section of the
    /// calling CPU (it would wait for itself forever).
    pub fn synchronize(&self) {
        let c = self.start_grace_period();
        while !self.poll(c) {
            spin_hint();
        }
    }
}

impl Drop for RcuGuard<'_> {
    fn drop(&mut self) {
        self.rcu.read_unlock(self.cpu);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::cpu::CpuSet;

    #[test]
    fn nesting_and_polling() {
        let cpus = CpuSet::new(2);
        let rcu = Rcu::new();
        let c0 = cpus.claim(0).unwrap();
        let g1 = rcu.read_lock(&c0);
        let g2 = rcu.read_lock(&c0);
        let cookie = rcu.start_grace_period();
        drop(g2);
        assert!(!rcu.poll(cookie), "outer section still holds the grace period");
        drop(g1);
        assert!(rcu.poll(cookie));
        // A reader that starts after the grace period began does not hold it off.
        let cookie = rcu.start_grace_period();
        let _g = rcu.read_lock(&c0);
        assert!(rcu.poll(cookie));
        let later = rcu.start_grace_period();
        assert!(!rcu.poll(later));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::cpu::CpuSet;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;

    /// A reader dereferences a shared pointer under RCU while a writer unpublishes it,
    /// waits for a grace period and "frees" it (poisons it). The reader must never see poison.
    #[test]
    fn loom_rcu_reader_never_sees_freed() {
        loom::model(|| {
            let cpus = Arc::new(CpuSet::new(2));
            let rcu = Arc::new(Rcu::new());
            // Two "objects": 1 is live, the published index says which one readers use.
            let objs = Arc::new([AtomicUsize::new(100), AtomicUsize::new(200)]);
            let published = Arc::new(AtomicUsize::new(0));

            let reader = {
                let (cpus, rcu, objs, published) = (cpus.clone(), rcu.clone(), objs.clone(), published.clone());
                loom::thread::spawn(move || {
                    let cpu = cpus.claim(1).unwrap();
                    let _g = rcu.read_lock(&cpu);
                    let i = published.load(Ordering::Acquire);
                    let v = objs[i].load(Ordering::Relaxed);
                    assert_ne!(v, 0, "read a freed object");
                })
            };

            // Writer: switch readers to object 1, wait a grace period, free object 0.
            published.store(1, Ordering::Release);
            rcu.synchronize();
            objs[0].store(0, Ordering::Relaxed);
            reader.join().unwrap();
        });
    }
}
