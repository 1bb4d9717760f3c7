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
//! This module holds only the array logic; [`crate::slab`] owns the locks and the slabs.

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
    use crate::sync::SpinLock;
    use loom::sync::{Arc, Mutex};

    /// CPU 0 allocates an object and hands it to CPU 1, which frees it into its own sheaf
    /// (a cross-CPU free) while CPU 0 keeps allocating and a third party flushes CPU 1's
    /// sheaves back to the "slab". Every object ends up in exactly one place.
    #[test]
    fn loom_sheaves_cross_cpu_free_and_flush() {
        loom::model(|| {
            let slab = Arc::new(Mutex::new(std::vec![10usize, 11]));
            let cpu0 = Arc::new(SpinLock::new(CpuSheaves::EMPTY));
            let cpu1 = Arc::new(SpinLock::new(CpuSheaves::EMPTY));
            {
                let mut s = cpu0.lock();
                assert!(s.free(1) && s.free(2));
            }
            let obj = cpu0.lock().alloc().unwrap();
            let t1 = {
                let (cpu1, slab) = (cpu1.clone(), slab.clone());
                loom::thread::spawn(move || {
                    assert!(cpu1.lock().free(obj));
                    // Flush (as shrink or a drain would).
                    let mut s = cpu1.lock();
                    let mut home = slab.lock().unwrap();
                    home.extend(s.main.take_all());
                    home.extend(s.spare.take_all());
                })
            };
            let other = cpu0.lock().alloc();
            t1.join().unwrap();
            let mut all = slab.lock().unwrap().clone();
            all.extend(cpu0.lock().main.take_all());
            all.extend(cpu1.lock().main.take_all());
            if let Some(o) = other {
                all.push(o);
            }
            all.sort_unstable();
            assert_eq!(all, [1, 2, 10, 11]);
        });
    }
}
