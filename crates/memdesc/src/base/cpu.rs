//! CPUs as explicit contexts.
//!
//! A [`Cpu`] token is proof that the holder runs "on" that CPU: at most one token per CPU id
//! exists at a time, and the token is `!Sync`, so per-CPU data reached through it is touched by
//! one thread at a time. In a kernel the token would stand for "preemption disabled on this
//! CPU"; on the simulated machine each thread claims one.
//!
//! Invariants:
//! 1. A [`CpuSet`] is created only inside the crate, by the owner that checks tokens against it
//!    (a machine's [`crate::base::rcu::Rcu`], which [`crate::PhysMem`] owns). Safe code outside the
//!    crate can get tokens only by claiming them from a machine.
//! 2. A [`Cpu`] borrows its set, so its set outlives it and cannot move while it exists; two
//!    live sets never share an address, so `ptr::eq` on the set names the machine.
//! 3. Every entry point that reaches per-CPU state through a token checks (3a: release builds
//!    too) that the token belongs to its own set and panics otherwise (`foreign_cpu`): a
//!    token of another machine is a programming error, never silently used.
//! 4. The token is `Send` (a thread may hand its CPU to another, as a kernel migrates a task
//!    with its context) but `!Sync`: `&Cpu` cannot be shared between threads, and everything
//!    borrowing it (an [`crate::base::rcu::RcuGuard`]) is `!Send`, so one CPU's state is touched by
//!    one thread at a time.
//!
//! Sharing a token between threads does not compile:
//!
//! ```compile_fail,E0277
//! fn needs_sync<T: Sync>(_: &T) {}
//! fn check(cpu: &memdesc::Cpu<'_>) {
//!     needs_sync(cpu); // `Cpu` is !Sync: two threads cannot hold one CPU at once
//! }
//! ```
//!
//! Sets are not constructible outside the crate (tokens cannot be forged):
//!
//! ```compile_fail,E0624
//! let set = memdesc::base::cpu::CpuSet::new(1);
//! ```

use core::cell::Cell;
use core::marker::PhantomData;

use crate::base::sync::{AtomicBool, Ordering};

/// Most CPUs a machine may have.
pub const MAX_CPUS: usize = 64;

/// The set of CPUs of one machine and which of them are claimed.
pub struct CpuSet {
    nr: usize,
    claimed: [AtomicBool; MAX_CPUS],
}

impl CpuSet {
    /// A set of `nr` CPUs (clamped to 1..=[`MAX_CPUS`]). Crate-private (invariant 1).
    pub(crate) fn new(nr: usize) -> Self {
        CpuSet { nr: nr.clamp(1, MAX_CPUS), claimed: core::array::from_fn(|_| AtomicBool::new(false)) }
    }

    /// Number of CPUs.
    #[inline]
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// Claims CPU `id`; `None` if it does not exist or is already claimed.
    pub fn claim(&self, id: usize) -> Option<Cpu<'_>> {
        if id >= self.nr {
            return None;
        }
        self.claimed[id].compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| Cpu {
            id,
            set: self,
            _not_sync: PhantomData,
        })
    }

    /// Claims any free CPU.
    pub fn claim_any(&self) -> Option<Cpu<'_>> {
        (0..self.nr).find_map(|id| self.claim(id))
    }
}

/// Proof of running on one CPU. Released when dropped.
pub struct Cpu<'a> {
    id: usize,
    set: &'a CpuSet,
    _not_sync: PhantomData<Cell<()>>,
}

impl Cpu<'_> {
    /// The CPU number.
    #[inline]
    pub fn id(&self) -> usize {
        self.id
    }

    /// Whether this token belongs to `set`.
    #[inline]
    pub fn belongs_to(&self, set: &CpuSet) -> bool {
        core::ptr::eq(self.set, set)
    }

    /// The CPU number after checking that the token belongs to `set` (invariant 3); panics
    /// through [`foreign_cpu`] otherwise. One pointer compare.
    #[inline]
    #[track_caller]
    pub(crate) fn id_in(&self, set: &CpuSet) -> usize {
        if !self.belongs_to(set) {
            foreign_cpu(self.id);
        }
        self.id
    }
}

/// A token of another machine was handed to this one.
///
/// Reported when a [`Cpu`] claimed from one machine's [`CpuSet`] is passed to another machine
/// (or another [`crate::base::rcu::Rcu`]): see [`crate::base::rcu::Rcu::try_read_lock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignCpu {
    /// The id of the foreign token.
    pub id: usize,
}

impl core::fmt::Display for ForeignCpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Cpu token {} belongs to another machine", self.id)
    }
}

impl core::error::Error for ForeignCpu {}

/// Panics for a token of another machine (invariant 3). Out of line so the check on the fast
/// path is a compare and a not-taken branch.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn foreign_cpu(id: usize) -> ! {
    panic!("{}", ForeignCpu { id })
}

impl core::fmt::Debug for Cpu<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Cpu({})", self.id)
    }
}

impl Drop for Cpu<'_> {
    fn drop(&mut self) {
        self.set.claimed[self.id].store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_token_per_cpu() {
        let set = CpuSet::new(2);
        let a = set.claim(0).unwrap();
        assert!(set.claim(0).is_none());
        let b = set.claim_any().unwrap();
        assert_eq!(b.id(), 1);
        assert!(set.claim_any().is_none());
        assert!(set.claim(2).is_none());
        drop(a);
        assert_eq!(set.claim_any().unwrap().id(), 0);
        assert!(b.belongs_to(&set));
    }
}
