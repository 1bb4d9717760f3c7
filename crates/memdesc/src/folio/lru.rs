//! The LRU lists: one per node, holding anon and file folios together (their LRU links are
//! at the same offset because they are one type), linked through [`Folio`]'s LRU links
//! under the list's lock. A folio is on a list exactly while it has `PG_LRU` set.

use super::{Folios, LruList};
use crate::desc::{Folio, PG_LRU};
use crate::platform::Platform;
use crate::sync::Ordering;

impl<'a, P: Platform> Folios<'a, P> {
    fn lru_of(&self, f: &Folio) -> &'a crate::sync::SpinLock<LruList> {
        let node = self.pages.memmap().region_of(f.flags.pfn()).map_or(0, |r| r.node as usize);
        &self.state.lru[node]
    }

    /// Adds the folio to the tail of its node's LRU list (anon and file share it).
    /// Returns false if it was already on an LRU list.
    pub(crate) fn lru_add(&self, f: &Folio) -> bool {
        let mut l = self.lru_of(f).lock();
        if f.flags.set(PG_LRU) & PG_LRU != 0 {
            return false;
        }
        Self::lru_link_tail(&mut l, f);
        true
    }

    /// Removes the folio from its LRU list; returns false if it was not on one.
    pub(crate) fn lru_del(&self, f: &Folio) -> bool {
        let mut l = self.lru_of(f).lock();
        if f.flags.flags() & PG_LRU == 0 {
            return false;
        }
        Self::lru_unlink(&mut l, f);
        f.flags.clear(PG_LRU);
        true
    }

    /// Moves the folio to the tail of its LRU list (recently used).
    pub(crate) fn lru_rotate(&self, f: &Folio) -> bool {
        let mut l = self.lru_of(f).lock();
        if f.flags.flags() & PG_LRU == 0 {
            return false;
        }
        Self::lru_unlink(&mut l, f);
        Self::lru_link_tail(&mut l, f);
        true
    }

    /// Calls `f` for each folio on `node`'s LRU list, oldest first.
    pub(crate) fn lru_for_each(&self, node: usize, mut f: impl FnMut(&Folio)) {
        let l = self.state.lru[node].lock();
        let mut cur = l.head;
        while cur != 0 {
            // SAFETY: folios on the list are live (they are removed before their last put).
            let folio = unsafe { &*(cur as *const Folio) };
            f(folio);
            cur = folio.lru.next.load(Ordering::Relaxed);
        }
    }

    /// Folios on `node`'s LRU list.
    pub(crate) fn lru_len(&self, node: usize) -> u64 {
        self.state.lru[node].lock().nr
    }

    fn lru_link_tail(l: &mut LruList, f: &Folio) {
        let me = f as *const Folio as usize;
        f.lru.next.store(0, Ordering::Relaxed);
        f.lru.prev.store(l.tail, Ordering::Relaxed);
        if l.tail != 0 {
            // SAFETY: list members are live folios.
            unsafe { &*(l.tail as *const Folio) }.lru.next.store(me, Ordering::Relaxed);
        } else {
            l.head = me;
        }
        l.tail = me;
        l.nr += 1;
    }

    fn lru_unlink(l: &mut LruList, f: &Folio) {
        let (prev, next) = (f.lru.prev.load(Ordering::Relaxed), f.lru.next.load(Ordering::Relaxed));
        if prev == 0 {
            l.head = next;
        } else {
            // SAFETY: list members are live folios.
            unsafe { &*(prev as *const Folio) }.lru.next.store(next, Ordering::Relaxed);
        }
        if next == 0 {
            l.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { &*(next as *const Folio) }.lru.prev.store(prev, Ordering::Relaxed);
        }
        l.nr -= 1;
    }
}
