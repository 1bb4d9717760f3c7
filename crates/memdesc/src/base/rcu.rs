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
//!
//! Invariants:
//! 1. The RCU owns the [`CpuSet`] whose tokens may enter it; [`Rcu::read_lock`] takes only its
//!    own tokens (checked in every build: a foreign token panics, [`Rcu::try_read_lock`]
//!    returns [`ForeignCpu`]), so a slot is used by the one thread holding that CPU's token.
//! 2. An [`RcuGuard`] borrows the token it was taken with: the CPU cannot be released (and
//!    claimed by another thread) while the section is open, and the guard is `!Send`, so the
//!    slot's `nesting` count is only ever touched by one thread at a time.
//!
//! A guard cannot outlive its token:
//!
//! ```compile_fail,E0505
//! let rcu = memdesc::base::rcu::Rcu::new(1);
//! let cpu = rcu.cpus().claim(0).unwrap();
//! let g = rcu.read_lock(&cpu);
//! drop(cpu); // would let another thread claim CPU 0 while this section is open
//! drop(g);
//! ```
//!
//! nor move to another thread:
//!
//! ```compile_fail,E0277
//! let rcu = memdesc::base::rcu::Rcu::new(1);
//! let cpu = rcu.cpus().claim(0).unwrap();
//! let g = rcu.read_lock(&cpu);
//! std::thread::scope(|s| {
//!     s.spawn(move || drop(g));
//! });
//! ```

use crate::base::cpu::{Cpu, CpuSet, ForeignCpu, MAX_CPUS};
use crate::base::sync::{fence, mutation, spin_hint, AtomicU32, AtomicU64, Mutation, Ordering};

const ACTIVE: u64 = 1;

#[repr(align(64))]
struct Slot {
    /// `epoch << 1 | ACTIVE` while inside a read-side section, 0 outside.
    state: AtomicU64,
    nesting: AtomicU32,
}

/// The RCU state of one machine, with the CPUs that may enter it.
pub struct Rcu {
    cpus: CpuSet,
    epoch: AtomicU64,
    slots: [Slot; MAX_CPUS],
}

/// A grace period started by [`Rcu::start_grace_period`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpCookie(pub(crate) u64);

/// Proof of being inside a read-side critical section; ends it when dropped.
///
/// References obtained under the guard (e.g. [`crate::memmap::desc::DescPtr::get`]) live no longer
/// than it. It borrows the CPU token it was taken with (invariant 2).
pub struct RcuGuard<'a> {
    rcu: &'a Rcu,
    cpu: &'a Cpu<'a>,
}

impl Rcu {
    /// A fresh RCU state (epoch 1, no readers) for `nr_cpus` CPUs (clamped to
    /// 1..=[`MAX_CPUS`]). Its CPUs are claimed through [`Rcu::cpus`]; a machine's RCU is
    /// [`crate::PhysMem::rcu`] and its CPUs are the machine's.
    pub fn new(nr_cpus: usize) -> Self {
        Rcu {
            cpus: CpuSet::new(nr_cpus),
            epoch: AtomicU64::new(1),
            slots: core::array::from_fn(|_| Slot { state: AtomicU64::new(0), nesting: AtomicU32::new(0) }),
        }
    }

    /// The CPUs that may enter this RCU.
    #[inline]
    pub fn cpus(&self) -> &CpuSet {
        &self.cpus
    }

    /// Enters a read-side critical section on `cpu` (nests).
    ///
    /// ```
    /// use memdesc::base::rcu::Rcu;
    /// let rcu = Rcu::new(1);
    /// let cpu = rcu.cpus().claim(0).unwrap();
    /// let g = rcu.read_lock(&cpu);
    /// let cookie = rcu.start_grace_period();
    /// assert!(!rcu.poll(cookie)); // our reader holds it off
    /// drop(g);
    /// assert!(rcu.poll(cookie));
    /// ```
    ///
    /// # Panics
    ///
    /// If `cpu` belongs to another machine (another `Rcu`'s set): entering with it would share
    /// a slot with the real holder of that CPU and let grace periods end under a live reader.
    /// [`Rcu::try_read_lock`] reports it as an error instead.
    #[inline]
    #[track_caller]
    pub fn read_lock<'a>(&'a self, cpu: &'a Cpu<'a>) -> RcuGuard<'a> {
        let id = cpu.id_in(&self.cpus);
        self.enter(id, cpu)
    }

    /// [`Rcu::read_lock`] that returns [`ForeignCpu`] for a token of another machine.
    ///
    /// ```
    /// use memdesc::{base::rcu::Rcu, ForeignCpu};
    /// let (mine, other) = (Rcu::new(1), Rcu::new(1));
    /// let foreign = other.cpus().claim(0).unwrap();
    /// assert_eq!(mine.try_read_lock(&foreign).err(), Some(ForeignCpu { id: 0 }));
    /// let cpu = mine.cpus().claim(0).unwrap();
    /// assert!(mine.try_read_lock(&cpu).is_ok());
    /// ```
    #[inline]
    pub fn try_read_lock<'a>(&'a self, cpu: &'a Cpu<'a>) -> Result<RcuGuard<'a>, ForeignCpu> {
        if !cpu.belongs_to(&self.cpus) {
            return Err(ForeignCpu { id: cpu.id() });
        }
        Ok(self.enter(cpu.id(), cpu))
    }

    #[inline]
    fn enter<'a>(&'a self, id: usize, cpu: &'a Cpu<'a>) -> RcuGuard<'a> {
        let slot = &self.slots[id];
        // Only the token holder touches `nesting`; Relaxed is enough.
        let n = slot.nesting.load(Ordering::Relaxed);
        slot.nesting.store(n + 1, Ordering::Relaxed);
        if n == 0 {
            let e = self.epoch.load(Ordering::Relaxed);
            slot.state.store(e << 1 | ACTIVE, Ordering::Relaxed);
            // Pairs with the fence in `start_grace_period`/`poll`: either the writer sees our
            // slot, or our later loads see everything it did before its fence.
            // (The loom build can remove it, to check that the model catches its absence.)
            if !mutation::active(Mutation::RcuReaderNoFence) {
                fence(Ordering::SeqCst);
            }
        }
        RcuGuard { rcu: self, cpu }
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
        self.rcu.read_unlock(self.cpu.id());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn nesting_and_polling() {
        let rcu = Rcu::new(2);
        let c0 = rcu.cpus().claim(0).unwrap();
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

    #[test]
    fn foreign_tokens_are_refused() {
        let (a, b) = (Rcu::new(1), Rcu::new(1));
        let (a0, b0) = (a.cpus().claim(0).unwrap(), b.cpus().claim(0).unwrap());
        let g = a.read_lock(&a0);
        let cookie = a.start_grace_period();
        assert_eq!(a.try_read_lock(&b0).err(), Some(ForeignCpu { id: 0 }));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(a.read_lock(&b0))));
        assert!(r.is_err(), "a foreign token entered the RCU");
        assert!(!a.poll(cookie), "the real reader of CPU 0 still holds the grace period");
        drop(g);
        assert!(a.poll(cookie));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;

    /// A reader dereferences a shared pointer under RCU while a writer unpublishes it,
    /// waits for a grace period and "frees" it (poisons it). The reader must never see poison:
    /// a reader inside its section holds off the grace period.
    #[test]
    fn loom_rcu_reader_never_sees_freed() {
        reader_never_sees_freed();
    }

    /// The same model with the reader's fence after publishing its slot removed must fail
    /// (the writer's poll can miss the reader while the reader misses the unpublish).
    #[test]
    #[should_panic(expected = "read a freed object")]
    fn loom_rcu_reader_never_sees_freed_fails_without_reader_fence() {
        crate::base::sync::mutation::with(Mutation::RcuReaderNoFence, reader_never_sees_freed);
    }

    fn reader_never_sees_freed() {
        loom::model(|| {
            let rcu = Arc::new(Rcu::new(2));
            // Two "objects": 1 is live, the published index says which one readers use.
            let objs = Arc::new([AtomicUsize::new(100), AtomicUsize::new(200)]);
            let published = Arc::new(AtomicUsize::new(0));

            let reader = {
                let (rcu, objs, published) = (rcu.clone(), objs.clone(), published.clone());
                loom::thread::spawn(move || {
                    let cpu = rcu.cpus().claim(1).unwrap();
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
