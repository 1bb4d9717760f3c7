//! The LRU lists: one per node, holding anon and file folios together (their LRU links are
//! at the same offset because they are one type), each a [`List<Folio>`] behind its lock. A
//! folio is on a list exactly while it has `PG_LRU` set, which changes only under that list's
//! lock: that is how [`Folio::lru_unlink`] knows the folio is on the list it is given.

use crate::desc::{Folio, PG_LRU};
use crate::list::List;
use crate::platform::Platform;
use crate::sync::SpinLock;

use super::Folios;

impl<'a, P: Platform> Folios<'a, P> {
    /// The LRU list of the folio's node.
    fn lru_of(&self, f: &Folio) -> &'a SpinLock<List<Folio>> {
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
        let r = l.push_back(f);
        debug_assert!(r.is_ok(), "a folio without PG_LRU is on no LRU list");
        true
    }

    /// Removes the folio from its LRU list; returns false if it was not on one.
    pub(crate) fn lru_del(&self, f: &Folio) -> bool {
        f.lru_unlink(&mut self.lru_of(f).lock())
    }

    /// Moves the folio to the tail of its LRU list (recently used).
    pub(crate) fn lru_rotate(&self, f: &Folio) -> bool {
        f.lru_move_to_back(&mut self.lru_of(f).lock())
    }

    /// Calls `f` for each folio on `node`'s LRU list, oldest first.
    pub(crate) fn lru_for_each(&self, node: usize, mut f: impl FnMut(&Folio)) {
        self.state.lru[node].lock().iter().for_each(&mut f);
    }

    /// Folios on `node`'s LRU list.
    pub(crate) fn lru_len(&self, node: usize) -> u64 {
        self.state.lru[node].lock().len() as u64
    }
}
