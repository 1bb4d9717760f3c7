//! The page cache's index: a radix tree (the part Linux's xarray plays) from a file's page
//! indices to the file folios cached there. This file holds the tree's layout, the walk
//! lockless readers use (validated by [`super::filemap`]) and the write side, which runs
//! under the address space's lock.
//!
//! # The tree
//!
//! A radix tree of 64-way [`Node`]s (`slots: [AtomicUsize; 64]`). The root word packs the root
//! node's address with the tree's height (1..=11 levels; 11 × 6 bits cover every `u64` index);
//! the tree grows a level at a time when an index or a folio does not fit, and shrinks again
//! when removals leave the root with only its first slot in use. A slot holds `0` (nothing
//! cached there), a child node's address with bit 0 set, or a folio descriptor's address
//! (16-byte aligned, low bits clear). Readers never read anything of a node but its slots;
//! a node's one other word (`meta`: the writer's count of used slots, a preallocation link, or
//! the slab's free pointer while free) is writer-only.
//!
//! Nodes come from their own `TYPESAFE_BY_RCU` slab cache and are freed only when empty, so
//! a node that is free or reused still reads as a node whose slots hold only entries a tree
//! stored: never a stale pointer into anything that is not a node or a folio descriptor.
//! The address-space objects come from a plain slab cache (nothing reads them locklessly).
//!
//! Every node or folio reference this module makes from a slot, the root word or a
//! preallocated node is made by `Node::at` / `Node::folio_at` (`machine/raw.rs`, folio
//! section, F5), bounded by what keeps the target alive: the address space whose lock a
//! `Writer` holds, the RCU guard of a lockless walk, the parent node, or the `Chain` that
//! owns a preallocated node.
//!
//! # Large folios
//!
//! A folio of order `o` sits at tree level `o / 6` (where one slot covers `64^level` indices)
//! and occupies the `2^(o % 6)` consecutive slots there that its range covers, each holding the
//! folio's own address: an order-2 folio fills 4 leaf slots, an order-9 folio 8 slots of a
//! level-1 node and no leaf node at all. Its index must be aligned to its size. A lookup stops
//! at the first folio entry on its path, so every covered index finds the folio in one walk.
//!

use core::ptr::NonNull;

use crate::desc::Folio;
use crate::folio::space::{AddressSpace, PageCacheError, LOW_MASK};
use crate::page_alloc::AllocError;
use crate::sync::{fence, AtomicUsize, Ordering, SpinGuard};

/// Index bits consumed per tree level.
pub(super) const BITS: u32 = 6;
/// Slots per node.
pub const FANOUT: usize = 1 << BITS;
/// Most levels a tree has: 11 × 6 bits cover every `u64` index.
pub const MAX_HEIGHT: u32 = 11;
/// Bit 0 of a slot marks a child node.
const NODE_TAG: usize = 1;

/// A 64-way radix-tree node.
#[repr(C, align(16))]
pub struct Node {
    /// `0`, a child node's address | [`NODE_TAG`], or a folio descriptor's address.
    slots: [AtomicUsize; FANOUT],
    /// Writer-only: used slots while in a tree; the next node while preallocated; the slab's
    /// free pointer while free. Readers never read it.
    pub(super) meta: AtomicUsize,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Node>() == 528 && core::mem::align_of::<Node>() == 16);

impl Node {
    /// An empty node outside slab memory (tests and models).
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Node { slots: core::array::from_fn(|_| AtomicUsize::new(0)), meta: AtomicUsize::new(0) }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.load(Ordering::Relaxed) == 0)
    }
}

/// Where tree nodes come from and go back to.
pub(crate) trait NodeAlloc {
    /// A node whose slots are all empty (its `meta` is garbage).
    fn alloc_node(&mut self) -> Result<NonNull<Node>, AllocError>;
    /// Returns an empty node that no tree links to any more (lockless readers may still be
    /// reading it).
    fn free_node(&mut self, node: &Node);
}

#[inline]
pub(super) fn addr_of<T>(r: &T) -> usize {
    r as *const T as usize
}

/// Smallest height (≥ 1) whose tree covers `index`.
#[inline]
fn height_for(index: u64) -> u32 {
    (64 - index.leading_zeros()).div_ceil(BITS).max(1)
}

/// The slot `index` uses in a node at `level`.
#[inline]
fn slot_of(index: u64, level: u32) -> usize {
    ((index >> (BITS * level)) & (FANOUT as u64 - 1)) as usize
}

/// A broken tree invariant found by
/// [`AddressSpaceRef::verify`](super::filemap::AddressSpaceRef::verify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCacheViolation {
    /// What is wrong.
    pub what: &'static str,
    /// The first index of the slot where it was found.
    pub index: u64,
}

impl AddressSpace {
    /// Walks to the entry for `index`: `Ok(0)` for nothing, `Ok(folio address)`, or `Err` if
    /// the walk met something no consistent tree holds (a reused node; only without the lock).
    ///
    /// The caller holds the lock or an RCU read guard for as long as it uses the result.
    pub(super) fn walk(&self, index: u64) -> Result<usize, ()> {
        // The nodes are kept by the caller's lock or guard for the whole walk, which borrows
        // the address space as long (Node::at).
        let r = self.root.load(Ordering::Acquire);
        if r == 0 {
            return Ok(0);
        }
        let h = (r & LOW_MASK) as u32;
        if h == 0 || h > MAX_HEIGHT {
            return Err(());
        }
        if height_for(index) > h {
            return Ok(0);
        }
        let (mut node_addr, mut level) = (r & !LOW_MASK, h - 1);
        loop {
            // node_addr came from the root word or a node entry.
            let node = Node::at(self, node_addr);
            let e = node.slots[slot_of(index, level)].load(Ordering::Acquire);
            if e == 0 || e & NODE_TAG == 0 {
                return Ok(e);
            }
            if level == 0 {
                return Err(());
            }
            node_addr = e & !LOW_MASK;
            level -= 1;
        }
    }

    /// Takes the lock for writing.
    pub(crate) fn writer(&self) -> Writer<'_> {
        Writer { s: self, _guard: self.lock.lock() }
    }
}

/// Nodes preallocated for one operation, linked through `meta`, so a tree change never fails
/// halfway.
pub(super) struct Chain {
    pub(super) head: usize,
}

impl Chain {
    pub(super) fn alloc(be: &mut impl NodeAlloc, n: usize) -> Result<Chain, AllocError> {
        let mut c = Chain { head: 0 };
        for _ in 0..n {
            match be.alloc_node() {
                Ok(p) => {
                    // A node just allocated for this chain.
                    let node = Node::at(&c, p.as_ptr() as usize);
                    node.meta.store(c.head, Ordering::Relaxed);
                    c.head = p.as_ptr() as usize;
                }
                Err(e) => {
                    c.release(be);
                    return Err(e);
                }
            }
        }
        Ok(c)
    }

    /// The address of the next preallocated node, its `meta` zeroed, now the caller's. The
    /// caller counted right.
    fn take(&mut self) -> usize {
        assert!(self.head != 0, "page cache: fewer nodes preallocated than used");
        let addr = self.head;
        // A chain member: a node allocated for this chain, not yet freed or linked.
        let next = {
            let n = Node::at(self, addr);
            let next = n.meta.load(Ordering::Relaxed);
            n.meta.store(0, Ordering::Relaxed);
            next
        };
        self.head = next;
        addr
    }

    pub(super) fn release(mut self, be: &mut impl NodeAlloc) {
        while self.head != 0 {
            let addr = self.take();
            be.free_node(Node::at(&self, addr));
        }
    }
}

/// Write access to an address space: holds its lock.
pub(crate) struct Writer<'a> {
    s: &'a AddressSpace,
    _guard: SpinGuard<'a, ()>,
}

impl<'a> Writer<'a> {
    /// The node at an address of this tree (its root word, a node entry with the tag cleared,
    /// or a node preallocated for this operation), kept by the lock this writer holds.
    fn node(&self, addr: usize) -> &'a Node {
        Node::at(self.s, addr)
    }

    fn root(&self) -> Option<(&'a Node, u32)> {
        let r = self.s.root.load(Ordering::Relaxed);
        (r != 0).then(|| (self.node(r & !LOW_MASK), (r & LOW_MASK) as u32))
    }

    fn child(&self, e: usize) -> &'a Node {
        debug_assert!(e & NODE_TAG != 0);
        self.node(e & !LOW_MASK)
    }

    /// The next preallocated node of `chain`, about to be linked into this tree.
    fn take(&self, chain: &mut Chain) -> &'a Node {
        self.node(chain.take())
    }

    pub(super) fn seq_begin(&self) {
        let s = self.s.seq.load(Ordering::Relaxed);
        debug_assert!(s & 1 == 0);
        self.s.seq.store(s + 1, Ordering::Relaxed);
        // Any reader that sees a store after this fence and then fences sees the odd value.
        fence(Ordering::Release);
    }

    pub(super) fn seq_end(&self) {
        let s = self.s.seq.load(Ordering::Relaxed);
        self.s.seq.store(s + 1, Ordering::Release);
    }

    /// Adds to the counters (two's-complement deltas: pass `x.wrapping_neg()` to subtract).
    pub(super) fn account(&self, pages: u64, folios: u64) {
        let p = self.s.nr_pages.load(Ordering::Relaxed);
        self.s.nr_pages.store(p.wrapping_add(pages), Ordering::Relaxed);
        let f = self.s.nr_folios.load(Ordering::Relaxed);
        self.s.nr_folios.store(f.wrapping_add(folios), Ordering::Relaxed);
    }

    /// Whether `f` is cached in this address space (at its own index).
    pub(crate) fn contains(&self, f: &Folio) -> bool {
        f.mapping.load(Ordering::Acquire) == self.s.addr() && self.s.walk(f.index()) == Ok(addr_of(f))
    }

    /// The first cached folio that overlaps `[first, last]`.
    pub(crate) fn find_next(&self, first: u64, last: u64) -> Option<&'a Folio> {
        let (root, h) = self.root()?;
        if first > last {
            return None;
        }
        self.next_in(root, h - 1, 0, first, last)
    }

    fn next_in(&self, node: &'a Node, level: u32, base: u128, first: u64, last: u64) -> Option<&'a Folio> {
        let shift = BITS * level;
        let start = ((first as u128).saturating_sub(base) >> shift).min(FANOUT as u128) as usize;
        for s in start..FANOUT {
            let lo = base + ((s as u128) << shift);
            if lo > last as u128 {
                break;
            }
            let e = node.slots[s].load(Ordering::Relaxed);
            if e == 0 {
                continue;
            }
            if e & NODE_TAG == 0 {
                // A folio entry read under the lock: cached, kept by the cache's reference.
                return Some(Node::folio_at(self.s, e));
            }
            if level == 0 {
                continue;
            }
            let lo64 = lo as u64; // lo <= last, so it fits
            if let Some(f) = self.next_in(self.child(e), level - 1, lo, first.max(lo64), last) {
                return Some(f);
            }
        }
        None
    }

    /// How tall the tree must be to hold a folio at `index` at tree `level`, and how many new
    /// nodes that takes (new root levels plus missing nodes on the path). The range is free.
    fn nodes_needed(&self, index: u64, level: u32) -> (u32, usize) {
        let need_h = height_for(index).max(level + 1);
        let Some((root, h)) = self.root() else { return (need_h, (need_h - level) as usize) };
        let height = h.max(need_h);
        let count = (height - h) as usize;
        let mut l = height - 1;
        // New root levels: their slot 0 leads down to the old root.
        while l >= h {
            if l == level {
                return (height, count);
            }
            if slot_of(index, l) != 0 {
                return (height, count + (l - level) as usize);
            }
            l -= 1;
        }
        let mut node = root;
        loop {
            if l == level {
                return (height, count);
            }
            let e = node.slots[slot_of(index, l)].load(Ordering::Relaxed);
            if e == 0 || e & NODE_TAG == 0 {
                return (height, count + (l - level) as usize);
            }
            node = self.child(e);
            l -= 1;
        }
    }

    /// Adds root levels until the tree is `height` tall (or creates the root).
    fn grow(&mut self, height: u32, chain: &mut Chain) {
        match self.root() {
            None => {
                let n = self.take(chain);
                self.s.root.store(addr_of(n) | height as usize, Ordering::Release);
            }
            Some((mut top, mut h)) => {
                while h < height {
                    let n = self.take(chain);
                    n.slots[0].store(addr_of(top) | NODE_TAG, Ordering::Relaxed);
                    n.meta.store(1, Ordering::Relaxed);
                    h += 1;
                    self.s.root.store(addr_of(n) | h as usize, Ordering::Release);
                    top = n;
                }
            }
        }
    }

    /// Stores `entry` in every slot a folio of `order` at `index` covers, creating missing
    /// nodes from `chain`. The tree is tall enough and the slots are empty.
    pub(super) fn insert_entry(&mut self, entry: usize, index: u64, order: u32, chain: &mut Chain) {
        let (level, n) = (order / BITS, 1usize << (order % BITS));
        let Some((mut node, h)) = self.root() else {
            debug_assert!(false, "insert_entry into an empty tree");
            return;
        };
        let mut l = h - 1;
        while l > level {
            let s = slot_of(index, l);
            let e = node.slots[s].load(Ordering::Relaxed);
            node = if e == 0 {
                let c = self.take(chain);
                node.slots[s].store(addr_of(c) | NODE_TAG, Ordering::Release);
                node.meta.fetch_add(1, Ordering::Relaxed);
                c
            } else {
                self.child(e)
            };
            l -= 1;
        }
        let s = slot_of(index, level);
        for slot in &node.slots[s..s + n] {
            debug_assert_eq!(slot.load(Ordering::Relaxed), 0);
            slot.store(entry, Ordering::Release);
        }
        node.meta.fetch_add(n, Ordering::Relaxed);
    }

    /// Inserts `f` (whose cache reference the caller has taken) at `index`.
    pub(crate) fn insert(&mut self, be: &mut impl NodeAlloc, f: &Folio, index: u64) -> Result<(), PageCacheError> {
        let order = f.flags.order();
        let span = 1u64 << order;
        if index & (span - 1) != 0 {
            return Err(PageCacheError::Misaligned { index, order });
        }
        let mapping = f.mapping.load(Ordering::Acquire);
        if mapping != 0 {
            return Err(PageCacheError::AlreadyCached { mapping });
        }
        if let Some(g) = self.find_next(index, index + (span - 1)) {
            return Err(PageCacheError::Occupied { index: g.index().max(index) });
        }
        let level = order / BITS;
        let (height, need) = self.nodes_needed(index, level);
        let mut chain = Chain::alloc(be, need).map_err(PageCacheError::NoMemory)?;
        if let Err(mapping) = f.mapping.compare_exchange(0, self.s.addr(), Ordering::AcqRel, Ordering::Acquire) {
            chain.release(be);
            return Err(PageCacheError::AlreadyCached { mapping });
        }
        // Published to readers by the release stores of the slots.
        f.index.store(index, Ordering::Relaxed);
        self.grow(height, &mut chain);
        self.insert_entry(addr_of(f), index, order, &mut chain);
        debug_assert!(chain.head == 0, "page cache: preallocated more nodes than used");
        chain.release(be);
        self.account(span, 1);
        Ok(())
    }

    /// Empties the slots of a folio of `order` at `index` (inside a write section). Frees
    /// nothing.
    pub(super) fn clear_entries(&mut self, index: u64, order: u32, expect: usize) {
        let (level, n) = (order / BITS, 1usize << (order % BITS));
        let Some((mut node, h)) = self.root() else { return };
        let mut l = h - 1;
        while l > level {
            let e = node.slots[slot_of(index, l)].load(Ordering::Relaxed);
            if e & NODE_TAG == 0 {
                debug_assert!(false, "clear_entries: no node on the path");
                return;
            }
            node = self.child(e);
            l -= 1;
        }
        let s = slot_of(index, level);
        for slot in &node.slots[s..s + n] {
            debug_assert_eq!(slot.load(Ordering::Relaxed), expect);
            slot.store(0, Ordering::Release);
        }
        node.meta.fetch_sub(n, Ordering::Relaxed);
    }

    /// Frees the empty nodes on `index`'s path below the root, then an empty root, then
    /// shrinks the tree (inside a write section).
    fn prune(&mut self, be: &mut impl NodeAlloc, index: u64, level: u32) {
        let Some((root, h)) = self.root() else { return };
        let mut path = [0usize; MAX_HEIGHT as usize];
        let mut l = h - 1;
        path[l as usize] = addr_of(root);
        let mut node = root;
        while l > level {
            let e = node.slots[slot_of(index, l)].load(Ordering::Relaxed);
            if e & NODE_TAG == 0 {
                break;
            }
            node = self.child(e);
            l -= 1;
            path[l as usize] = addr_of(node);
        }
        while l < h - 1 {
            // path holds nodes of this tree, read under the lock.
            let n = self.node(path[l as usize]);
            if n.meta.load(Ordering::Relaxed) != 0 {
                break;
            }
            let parent = self.node(path[l as usize + 1]);
            parent.slots[slot_of(index, l + 1)].store(0, Ordering::Release);
            parent.meta.fetch_sub(1, Ordering::Relaxed);
            be.free_node(n);
            l += 1;
        }
        if root.meta.load(Ordering::Relaxed) == 0 {
            self.s.root.store(0, Ordering::Release);
            be.free_node(root);
            return;
        }
        self.shrink(be);
    }

    /// While the root's only entry is a child node in slot 0, makes that child the root.
    pub(super) fn shrink(&mut self, be: &mut impl NodeAlloc) {
        while let Some((root, h)) = self.root() {
            if h <= 1 || root.meta.load(Ordering::Relaxed) != 1 {
                return;
            }
            let e = root.slots[0].load(Ordering::Relaxed);
            if e & NODE_TAG == 0 {
                return;
            }
            self.s.root.store((e & !LOW_MASK) | (h - 1) as usize, Ordering::Release);
            root.slots[0].store(0, Ordering::Relaxed);
            root.meta.store(0, Ordering::Relaxed);
            be.free_node(root);
        }
    }

    /// Removes `f`, which [`Writer::contains`], from the tree; its cache reference is now the
    /// caller's to drop.
    pub(crate) fn remove(&mut self, be: &mut impl NodeAlloc, f: &Folio) {
        let (index, order) = (f.index.load(Ordering::Relaxed), f.flags.order());
        self.seq_begin();
        self.clear_entries(index, order, addr_of(f));
        f.mapping.store(0, Ordering::Release);
        self.prune(be, index, order / BITS);
        self.seq_end();
        self.account((1u64 << order).wrapping_neg(), 1u64.wrapping_neg());
    }

    /// Calls `cb(index, folio)` for every cached folio in index order.
    pub(crate) fn for_each(&self, mut cb: impl FnMut(u64, &Folio)) {
        fn visit(node: &Node, level: u32, base: u128, cb: &mut dyn FnMut(u64, &Folio)) {
            for (s, slot) in node.slots.iter().enumerate() {
                let lo = base + ((s as u128) << (BITS * level));
                let e = slot.load(Ordering::Relaxed);
                if e == 0 {
                    continue;
                }
                if e & NODE_TAG != 0 {
                    if level > 0 {
                        // A node entry read under the lock, kept as long as its parent.
                        visit(Node::at(node, e & !LOW_MASK), level - 1, lo, cb);
                    }
                    continue;
                }
                // A folio entry read under the lock: cached, kept by the cache's reference.
                let f = Node::folio_at(node, e);
                if f.index() as u128 == lo {
                    cb(lo as u64, f);
                }
            }
        }
        if let Some((root, h)) = self.root() {
            visit(root, h - 1, 0, &mut cb);
        }
    }

    /// Checks every tree invariant and the counters.
    pub(crate) fn verify(&self) -> Result<(), PageCacheViolation> {
        fn bad(what: &'static str, index: u128) -> PageCacheViolation {
            PageCacheViolation { what, index: index.min(u64::MAX as u128) as u64 }
        }
        fn visit(
            me: usize,
            node: &Node,
            level: u32,
            base: u128,
            acc: &mut (u64, u64),
        ) -> Result<(), PageCacheViolation> {
            let mut used = 0;
            for (s, slot) in node.slots.iter().enumerate() {
                let lo = base + ((s as u128) << (BITS * level));
                let e = slot.load(Ordering::Relaxed);
                if e == 0 {
                    continue;
                }
                used += 1;
                if lo > u64::MAX as u128 {
                    return Err(bad("entry beyond the index space", lo));
                }
                if e & NODE_TAG != 0 {
                    if level == 0 {
                        return Err(bad("node entry in a leaf", lo));
                    }
                    // A node entry read under the lock, kept as long as its parent.
                    let child = Node::at(node, e & !LOW_MASK);
                    if child.meta.load(Ordering::Relaxed) == 0 {
                        return Err(bad("empty node in the tree", lo));
                    }
                    visit(me, child, level - 1, lo, acc)?;
                    continue;
                }
                // A folio entry read under the lock: cached, kept by the cache's reference.
                let f = Node::folio_at(node, e);
                let order = f.flags.order();
                if order / BITS != level {
                    return Err(bad("folio at the wrong level for its order", lo));
                }
                if f.mapping() != me {
                    return Err(bad("folio's mapping is not this address space", lo));
                }
                if f.counts.refcount() == 0 {
                    return Err(bad("cached folio with no references", lo));
                }
                let fi = f.index() as u128;
                if lo < fi || lo >= fi + (1u128 << order) {
                    return Err(bad("folio's index does not cover its slot", lo));
                }
                if lo == fi {
                    let n = 1usize << (order % BITS);
                    if s + n > FANOUT || node.slots[s..s + n].iter().any(|x| x.load(Ordering::Relaxed) != e) {
                        return Err(bad("large folio missing from a covered slot", lo));
                    }
                    acc.0 += 1 << order;
                    acc.1 += 1;
                }
            }
            if node.meta.load(Ordering::Relaxed) != used {
                return Err(bad("node's used-slot count is wrong", base));
            }
            Ok(())
        }
        let mut acc = (0, 0);
        if let Some((root, h)) = self.root() {
            if h == 0 || h > MAX_HEIGHT {
                return Err(bad("bad height", 0));
            }
            if root.meta.load(Ordering::Relaxed) == 0 {
                return Err(bad("empty root", 0));
            }
            let e0 = root.slots[0].load(Ordering::Relaxed);
            if h > 1 && root.meta.load(Ordering::Relaxed) == 1 && e0 & NODE_TAG != 0 {
                return Err(bad("root could shrink", 0));
            }
            visit(self.s.addr(), root, h - 1, 0, &mut acc)?;
        }
        if acc != (self.s.nr_pages(), self.s.nr_folios()) {
            return Err(bad("page or folio count is wrong", 0));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod test_support {
    use super::*;
    use crate::addr::Pfn;
    use crate::desc::{DescFlags, MapCounts};
    use crate::list::Links;
    use crate::sync::AtomicU32;
    use crate::sync::AtomicU64;
    use std::vec::Vec;

    pub(in crate::folio) fn folio(order: u32, refs: u32) -> Folio {
        let f = Folio {
            flags: DescFlags::zeroed(),
            counts: MapCounts { refcount: AtomicU32::new(refs), mapcount: AtomicU32::new(0) },
            lru: Links::new(),
            mapping: AtomicUsize::new(0),
            index: AtomicU64::new(0),
        };
        f.flags.init(0, order, Pfn(0));
        f
    }

    /// A node pool that reuses the last freed node first (immediate TYPESAFE reuse).
    #[cfg_attr(loom, allow(dead_code))]
    pub(in crate::folio) struct Pool {
        pub(in crate::folio) free: Vec<usize>,
        pub(in crate::folio) live: usize,
    }

    impl Pool {
        pub(in crate::folio) fn new(nodes: &[Node]) -> Pool {
            Pool { free: nodes.iter().rev().map(addr_of).collect(), live: 0 }
        }

        /// A pool of `n` leaked nodes.
        #[cfg(not(loom))]
        pub(in crate::folio) fn boxed(n: usize) -> Pool {
            let nodes: &'static [Node] =
                std::boxed::Box::leak((0..n).map(|_| Node::new()).collect::<Vec<_>>().into_boxed_slice());
            Pool::new(nodes)
        }
    }

    impl NodeAlloc for Pool {
        fn alloc_node(&mut self) -> Result<NonNull<Node>, AllocError> {
            let a = self.free.pop().ok_or(AllocError::NoMemory { order: 0 })?;
            self.live += 1;
            Ok(NonNull::new(a as *mut Node).unwrap())
        }
        fn free_node(&mut self, node: &Node) {
            assert!(node.is_empty());
            self.live -= 1;
            self.free.push(addr_of(node));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::rcu::Rcu;
    use std::vec::Vec;

    #[test]
    fn heights_and_slots() {
        assert_eq!(height_for(0), 1);
        assert_eq!(height_for(63), 1);
        assert_eq!(height_for(64), 2);
        assert_eq!(height_for(u64::MAX), MAX_HEIGHT);
        assert_eq!(slot_of(u64::MAX, 10), 15);
    }

    #[test]
    fn tree_grows_shrinks_and_holds_large_folios() {
        let rcu = Rcu::new(1);
        let cpu = rcu.cpus().claim(0).unwrap();
        let s = AddressSpace::new();
        let mut pool = Pool::boxed(64);
        let folios: Vec<(Folio, u64)> = [(0, 5u64), (0, u64::MAX), (2, 8), (9, 1 << 20), (6, 64), (0, 1 << 40)]
            .map(|(o, i)| (folio(o, 1), i))
            .into();
        for (f, i) in &folios {
            s.writer().insert(&mut pool, f, *i).unwrap();
            s.writer().verify().unwrap();
        }
        assert_eq!(s.height(), MAX_HEIGHT);
        assert_eq!(s.nr_folios(), 6);
        let g = rcu.read_lock(&cpu);
        for (f, i) in &folios {
            for x in [*i, *i + ((1u64 << f.flags.order()) - 1)] {
                let got = s.lookup_rcu(&g, x, |_| panic!("no races here")).unwrap();
                assert!(core::ptr::eq(got, f), "index {x}");
                got.counts.refcount.fetch_sub(1, Ordering::Relaxed);
            }
        }
        assert!(s.lookup_rcu(&g, 12, |_| ()).is_none());
        assert!(s.lookup_rcu(&g, 4, |_| ()).is_none());
        drop(g);
        // Overlaps are refused precisely.
        let extra = folio(3, 1);
        assert_eq!(s.writer().insert(&mut pool, &extra, 8), Err(PageCacheError::Occupied { index: 8 }));
        assert_eq!(s.writer().insert(&mut pool, &extra, 3), Err(PageCacheError::Misaligned { index: 3, order: 3 }));
        assert_eq!(
            s.writer().insert(&mut pool, &folios[0].0, 100),
            Err(PageCacheError::AlreadyCached { mapping: s.addr() })
        );
        // Removing the far-away folios shrinks the tree back.
        for (f, _) in folios.iter().rev() {
            let mut w = s.writer();
            assert!(w.contains(f));
            w.remove(&mut pool, f);
            drop(w);
            s.writer().verify().unwrap();
            if core::ptr::eq(f, &folios[1].0) {
                assert_eq!(s.height(), 1, "only index 5 is left");
            }
        }
        assert_eq!(s.height(), 0);
        assert_eq!(pool.live, 0, "every node went back");
    }

    #[test]
    fn find_next_and_for_each_in_order() {
        let s = AddressSpace::new();
        let mut pool = Pool::boxed(64);
        let fs = [(folio(0, 1), 3u64), (folio(6, 1), 128), (folio(1, 1), 70), (folio(0, 1), 1 << 33)];
        for (f, i) in &fs {
            s.writer().insert(&mut pool, f, *i).unwrap();
        }
        let mut seen = Vec::new();
        s.writer().for_each(|i, _| seen.push(i));
        assert_eq!(seen, [3, 70, 128, 1 << 33]);
        let w = s.writer();
        assert!(core::ptr::eq(w.find_next(4, u64::MAX).unwrap(), &fs[2].0));
        assert!(core::ptr::eq(w.find_next(150, 150).unwrap(), &fs[1].0));
        assert!(w.find_next(192, (1 << 33) - 1).is_none());
        assert!(w.find_next(4, 69).is_none());
    }
}
