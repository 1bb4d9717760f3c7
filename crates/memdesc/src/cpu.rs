//! CPUs as explicit contexts.
//!
//! A [`Cpu`] token is proof that the holder runs "on" that CPU: at most one token per CPU id
//! exists at a time, and the token is `!Sync`, so per-CPU data reached through it is touched by
//! one thread at a time. In a kernel the token would stand for "preemption disabled on this
//! CPU"; on the simulated machine each thread claims one.

use core::cell::Cell;
use core::marker::PhantomData;

use crate::sync::{AtomicBool, Ordering};

/// Most CPUs a machine may have.
pub const MAX_CPUS: usize = 64;

/// The set of CPUs of one machine and which of them are claimed.
pub struct CpuSet {
    nr: usize,
    claimed: [AtomicBool; MAX_CPUS],
}

impl CpuSet {
    /// A set of `nr` CPUs (clamped to 1..=[`MAX_CPUS`]).
    pub fn new(nr: usize) -> Self {
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
