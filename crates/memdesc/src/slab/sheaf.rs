//! Sheaves: the per-CPU object caches in front of a slab cache (after Linux 6.18's sheaves).
//!
//! Each CPU has a *main* sheaf and a *spare* sheaf, each a small array of free object
//! addresses. Allocation pops from main; when main is empty it swaps in a non-empty spare, and
//! only when both are empty does the caller refill main from the slabs under the node lock.
//! Free pushes onto main; when main is full it swaps with an empty spare, and only when both
//! are full does the caller flush a sheaf back to the slabs. So most allocations and frees
//! touch one CPU-local array and its uncontended lock, and the slab lists are touched a sheaf
//! at a time. A CPU frees into its own sheaf even objects another CPU allocated (cross-CPU
//! frees); the objects go home to their slab when the sheaf is flushed.
//!
//! This module holds the array logic and the locking protocol around one CPU's pair
//! (`SpinLock<CpuSheaves>`: alloc, free, remote flush); [`crate::slab`] owns the slabs and the
//! node locks.

use crate::sync::SpinLock;

/// Objects per sheaf.
pub const SHEAF_CAPACITY: usize = 32;

/// A fixed-size stack of free object addresses.
#[derive(Clone, Copy)]
pub(crate) struct Sheaf {
    n: usize,
    objs: [usize; SHEAF_CAPACITY],
}

impl Sheaf {
    pub(crate) const EMPTY: Sheaf = Sheaf { n: 0, objs: [0; SHEAF_CAPACITY] };

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.n
    }
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.n == SHEAF_CAPACITY
    }
    #[inline]
    pub(crate) fn push(&mut self, obj: usize) -> bool {
        if self.n == SHEAF_CAPACITY {
            return false;
        }
        self.objs[self.n] = obj;
        self.n += 1;
        true
    }
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<usize> {
        self.n = self.n.checked_sub(1)?;
        Some(self.objs[self.n])
    }
    /// Empties the sheaf, returning what it held.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = usize> + '_ {
        let n = core::mem::replace(&mut self.n, 0);
        self.objs[..n].iter().copied()
    }
}

/// One CPU's pair of sheaves.
pub(crate) struct CpuSheaves {
    pub(crate) main: Sheaf,
    pub(crate) spare: Sheaf,
    /// Objects this CPU handed out and took back (counted here, under the per-CPU lock, so
    /// counting shares no cache line between CPUs; a cross-CPU free makes one CPU's frees
    /// exceed its allocations, the sums stay right).
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
}

impl CpuSheaves {
    pub(crate) const EMPTY: CpuSheaves = CpuSheaves { main: Sheaf::EMPTY, spare: Sheaf::EMPTY, allocs: 0, frees: 0 };

    /// Fast-path allocation: main, else a swapped-in spare. `None`: refill needed.
    #[inline]
    pub(crate) fn alloc(&mut self) -> Option<usize> {
        if let Some(o) = self.main.pop() {
            return Some(o);
        }
        if self.spare.len() > 0 {
            core::mem::swap(&mut self.main, &mut self.spare);
            return self.main.pop();
        }
        None
    }

    /// Fast-path free. `false`: both sheaves are full; flush one and retry.
    #[inline]
    pub(crate) fn free(&mut self, obj: usize) -> bool {
        if self.main.push(obj) {
            return true;
        }
        if self.spare.len() == 0 {
            core::mem::swap(&mut self.main, &mut self.spare);
            return self.main.push(obj);
        }
        false
    }
}

/// The locking protocol around one CPU's sheaves, shared by the slab allocator and the loom
/// models (which drive these functions with a stand-in slab side).
///
/// Lock order: a CPU's sheaves, then the cache's node locks (taken inside `refill`/`flush`).
impl SpinLock<CpuSheaves> {
    /// Allocation on the owning CPU: from the sheaves, else `refill` the main sheaf from the
    /// slabs and pop. `Ok(None)`: the refill found nothing.
    #[inline]
    pub(crate) fn sheaf_alloc<E>(
        &self,
        refill: impl FnOnce(&mut CpuSheaves) -> Result<(), E>,
    ) -> Result<Option<usize>, E> {
        let mut s = self.lock();
        let obj = match s.alloc() {
            Some(o) => Some(o),
            None => {
                refill(&mut s)?;
                s.alloc()
            }
        };
        s.allocs += obj.is_some() as u64;
        Ok(obj)
    }

    /// Free on the current CPU (of an object any CPU allocated): into the sheaves, flushing the
    /// full main sheaf to the slabs first when both are full.
    #[inline]
    pub(crate) fn sheaf_free(&self, obj: usize, flush: impl FnOnce(&mut dyn Iterator<Item = usize>)) {
        let mut s = self.lock();
        s.frees += 1;
        if !s.free(obj) {
            flush(&mut s.main.take_all());
            let ok = s.free(obj);
            debug_assert!(ok, "an empty main sheaf takes the object");
        }
    }

    /// Returns everything in these sheaves to the slabs (shrinking, poisoning). Any CPU may
    /// call it: it takes the sheaves' lock, which is what makes it safe against the owner's
    /// fast path.
    pub(crate) fn sheaf_flush(&self, flush: impl FnOnce(&mut dyn Iterator<Item = usize>)) {
        #[cfg(all(test, loom))]
        if crate::sync::mutation::active(crate::sync::Mutation::SheafFlushDropsLock) {
            // The broken flush the loom model must catch: copy under the lock, return the
            // objects with the lock dropped, then empty the sheaves under the lock again.
            let (main, spare) = {
                let s = self.lock();
                (s.main, s.spare)
            };
            let (mut main, mut spare) = (main, spare);
            flush(&mut main.take_all().chain(spare.take_all()));
            let mut s = self.lock();
            s.main = Sheaf::EMPTY;
            s.spare = Sheaf::EMPTY;
            return;
        }
        let mut s = self.lock();
        let CpuSheaves { main, spare, .. } = &mut *s;
        flush(&mut main.take_all().chain(spare.take_all()));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn main_and_spare() {
        let mut s = CpuSheaves::EMPTY;
        assert_eq!(s.alloc(), None);
        for i in 0..2 * SHEAF_CAPACITY {
            assert!(s.free(i + 1));
        }
        assert!(!s.free(999), "both full: caller must flush");
        assert!(s.main.is_full() && s.spare.is_full());
        let flushed: usize = s.main.take_all().count();
        assert_eq!(flushed, SHEAF_CAPACITY);
        assert!(s.free(999));
        assert_eq!(s.alloc(), Some(999), "LIFO: the hottest object first");
        let mut n = 0;
        while s.alloc().is_some() {
            n += 1;
        }
        assert_eq!(n, SHEAF_CAPACITY);
        assert_eq!(s.main.len() + s.spare.len(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{mutation, Mutation};
    use loom::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// CPU 0 allocates an object (the real `sheaf_alloc`, refilling from a stand-in slab) and
    /// hands it to CPU 1, which frees it into its own sheaves (`sheaf_free`, a cross-CPU free)
    /// while CPU 0 keeps allocating and a third party flushes CPU 1's sheaves back to the slab
    /// (`sheaf_flush`, as shrinking does). Every object ends up in exactly one place.
    fn sheaves_cross_cpu_free_and_flush() {
        loom::model(|| {
            let slab = Arc::new(Mutex::new(std::vec![10usize, 11]));
            let refill = |slab: &Mutex<Vec<usize>>, s: &mut CpuSheaves| -> Result<(), ()> {
                let mut home = slab.lock().unwrap();
                while !s.main.is_full() {
                    let Some(o) = home.pop() else { break };
                    s.main.push(o);
                }
                Ok(())
            };
            let flush = |slab: &Mutex<Vec<usize>>, objs: &mut dyn Iterator<Item = usize>| {
                let mut home = slab.lock().unwrap();
                home.extend(objs);
            };
            let cpu0 = Arc::new(SpinLock::new(CpuSheaves::EMPTY));
            let cpu1 = Arc::new(SpinLock::new(CpuSheaves::EMPTY));
            cpu0.sheaf_free(1, |_| unreachable!());
            cpu0.sheaf_free(2, |_| unreachable!());
            cpu1.sheaf_free(3, |_| unreachable!());
            let obj = cpu0.sheaf_alloc(|s| refill(&slab, s)).unwrap().unwrap();
            let t1 = {
                let (cpu1, slab) = (cpu1.clone(), slab.clone());
                loom::thread::spawn(move || cpu1.sheaf_free(obj, |objs| flush(&slab, objs)))
            };
            let t2 = {
                let (cpu1, slab) = (cpu1.clone(), slab.clone());
                loom::thread::spawn(move || cpu1.sheaf_flush(|objs| flush(&slab, objs)))
            };
            let other = cpu0.sheaf_alloc(|s| refill(&slab, s)).unwrap();
            t1.join().unwrap();
            t2.join().unwrap();
            let mut all = slab.lock().unwrap().clone();
            for c in [&cpu0, &cpu1] {
                c.sheaf_flush(|objs| all.extend(objs));
            }
            all.extend(other);
            all.sort_unstable();
            assert_eq!(all, [1, 2, 3, 10, 11], "an object was lost or is in two places");
        });
    }

    #[test]
    fn loom_sheaves_cross_cpu_free_and_flush() {
        sheaves_cross_cpu_free_and_flush();
    }

    /// The same model with the remote flush dropping the sheaves' lock between taking the
    /// objects and emptying the sheaves must fail.
    #[test]
    #[should_panic(expected = "an object was lost or is in two places")]
    fn loom_sheaves_cross_cpu_free_and_flush_fails_when_flush_drops_the_lock() {
        mutation::with(Mutation::SheafFlushDropsLock, sheaves_cross_cpu_free_and_flush);
    }
}
