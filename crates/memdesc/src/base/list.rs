//! THE intrusive doubly-linked list of the core: one type, [`List`], for every list whose
//! nodes are descriptors or other objects the list does not own (slab partial lists, the folio
//! LRU, zsmalloc's and z3fold's class lists, the VMAs of an rmap list), like Linux's
//! `list_head`.
//!
//! A node embeds one [`Links`] per kind of list it can be on, and names it through the
//! `unsafe` trait [`Linked`]. The list keeps head, tail and length; each node's links hold the
//! addresses of its neighbours (atomics, so that a lockless reader that happens to look at a
//! descriptor's links never races, and so that a slab may reuse the field as a free pointer).
//!
//! # Invariants
//! Every `unsafe` block of this module cites these by number.
//! 1. **Addresses are live nodes of the same list.** `head`, `tail` and every neighbour address
//!    stored in the [`Links`] of a node that is on a [`List`] are addresses of live `T`s that
//!    are on that same list, in list order; `len` counts them.
//! 2. **One list at a time, claimed atomically.** A node's links are *unlinked* (`prev == 0`)
//!    or belong to exactly one list. A list takes an unlinked node only by compare-exchanging
//!    its `prev` away from 0 ([`List::push_front`], [`List::push_back`]), so two lists
//!    guarded by different locks can never both take it; a node leaves a list only by that
//!    list's own operations, which store `prev = 0` last (Release).
//! 3. **Changes through `&mut List`.** Every operation that changes links takes `&mut self`:
//!    the list is owned, or lives behind the lock that protects it (`SpinLock<List<T>>`), so
//!    one CPU at a time changes the links of the nodes on a list. Operations that take a node
//!    the caller found elsewhere ([`List::remove`], [`List::move_to_back`],
//!    [`List::move_to_front`]) are `unsafe`: the caller vouches the node is on *this* list (a
//!    node of another list is guarded by another lock; unlinking it here would race with
//!    that lock's holder).
//! 4. **Nodes outlive their membership** ([`Linked`] safety item 2): a node stays a valid `T`
//!    while it is on a list, and it is freed only by a party that took it off its list or saw
//!    it unlinked while holding that list's lock. References a list hands out ([`List::iter`],
//!    [`List::front`], [`List::pop_front`], ...) live no longer than the borrow of the list,
//!    that is than the lock hold, so they never dangle.
//! 5. **Addresses are even.** `T` is at least 2-aligned (checked at compile time in
//!    [`List::new`]), so the value 1 ([`HEAD`]) in `prev` can mark "first of its list"
//!    without being a node address.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::base::sync::{AtomicUsize, Ordering};

/// `prev` of a node that is on no list.
const UNLINKED: usize = 0;
/// `prev` of the first node of a list (invariant 5: never a node address).
const HEAD: usize = 1;

/// The two links a node embeds for one kind of list (16 bytes, like a `list_head`).
#[repr(C)]
#[derive(Debug)]
pub struct Links {
    prev: AtomicUsize,
    next: AtomicUsize,
}

// Layout is a contract: a `list_head`'s 16 bytes, the size of the `ListLinks` it replaces in
// every descriptor (so no descriptor grows).
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Links>() == 16 && core::mem::align_of::<Links>() == 8);

impl Default for Links {
    fn default() -> Self {
        Links::new()
    }
}

impl Links {
    /// Unlinked links.
    pub fn new() -> Links {
        Links { prev: AtomicUsize::new(UNLINKED), next: AtomicUsize::new(0) }
    }

    /// Whether the node is on a list (of this kind). Exact under the lock of the list it may
    /// be on; a lockless answer may be stale. The free path of a [`Linked`] kind asserts this
    /// is false (invariant 4).
    pub fn is_linked(&self) -> bool {
        self.prev.load(Ordering::Acquire) != UNLINKED
    }

    /// Puts the links of fresh memory in the unlinked state (a descriptor just allocated from
    /// a cache whose free pointer may have overlapped them).
    ///
    /// # Safety
    /// The node is on no list and no list holds its address (it was never linked since its
    /// memory became a `T`, or it was removed): overwriting links of a node that is on a list
    /// would break invariants 1 and 2 for that list.
    pub unsafe fn reset(&self) {
        self.next.store(0, Ordering::Relaxed);
        self.prev.store(UNLINKED, Ordering::Release);
    }
}

/// A type whose values can be on a [`List`] through one of their [`Links`].
///
/// # Safety
/// Implementors promise:
/// 1. `links` returns the same field of `self` every time (a field, not a temporary);
/// 2. a value stays a valid `T` (not freed, not reused as anything else) while it is on a
///    list, and it is freed only by a party that removed it from its list or observed
///    [`Links::is_linked`] false while holding that list's lock (invariant 4). Descriptor
///    kinds meet this by asserting `!is_linked()` in their one free path, which runs after
///    the owner has taken the node off its list under the list's lock.
pub unsafe trait Linked {
    /// The links this list kind threads through.
    fn links(&self) -> &Links;
}

/// Why a node could not be linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyLinked;

/// An intrusive doubly-linked list of `T`s that it does not own. Keep it behind the lock that
/// protects it: every change takes `&mut self` (invariant 3).
pub struct List<T: Linked> {
    head: usize,
    tail: usize,
    len: usize,
    _marker: PhantomData<*const T>,
}

// SAFETY: a List holds only addresses of `T`s; sending it to another thread hands out `&T`s
// there (through iteration), which is sound when `T: Sync` (invariant 3 serialises changes).
unsafe impl<T: Linked + Sync> Send for List<T> {}
// SAFETY: invariant 3: `&List` only reads the list and hands out `&T`, sound when `T: Sync`.
unsafe impl<T: Linked + Sync> Sync for List<T> {}

impl<T: Linked> Default for List<T> {
    fn default() -> Self {
        List::new()
    }
}

impl<T: Linked> core::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("List").field("len", &self.len).finish()
    }
}

impl<T: Linked> List<T> {
    /// Invariant 5, checked at compile time.
    const ALIGNED: () = assert!(core::mem::align_of::<T>() >= 2, "list nodes must be at least 2-aligned");

    /// An empty list.
    pub const fn new() -> List<T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGNED;
        List { head: 0, tail: 0, len: 0, _marker: PhantomData }
    }

    /// Nodes on the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The node at `addr`, for as long as the list is borrowed.
    #[inline]
    fn node(&self, addr: usize) -> &T {
        debug_assert!(addr != 0 && addr & 1 == 0);
        // SAFETY: callers only pass `head`, `tail` or a neighbour address read from the links
        // of a node on this list, which is a live `T` on this list (invariant 1); it stays
        // alive while `self` is borrowed, since removing it needs `&mut self` (invariants 3, 4).
        unsafe { &*(addr as *const T) }
    }

    /// The first node.
    pub fn front(&self) -> Option<&T> {
        (self.head != 0).then(|| self.node(self.head))
    }

    /// The last node.
    pub fn back(&self) -> Option<&T> {
        (self.tail != 0).then(|| self.node(self.tail))
    }

    /// Links `node` at the front. Fails (and changes nothing) if it is on a list already.
    pub fn push_front(&mut self, node: &T) -> Result<(), AlreadyLinked> {
        let me = node as *const T as usize;
        let l = node.links();
        // Invariant 2: claim the node; HEAD is its final `prev` (it becomes the first).
        l.prev.compare_exchange(UNLINKED, HEAD, Ordering::Acquire, Ordering::Relaxed).map_err(|_| AlreadyLinked)?;
        l.next.store(self.head, Ordering::Relaxed);
        if self.head != 0 {
            self.node(self.head).links().prev.store(me, Ordering::Relaxed);
        } else {
            self.tail = me;
        }
        self.head = me;
        self.len += 1;
        Ok(())
    }

    /// Links `node` at the back. Fails (and changes nothing) if it is on a list already.
    pub fn push_back(&mut self, node: &T) -> Result<(), AlreadyLinked> {
        let me = node as *const T as usize;
        let l = node.links();
        let prev = if self.tail == 0 { HEAD } else { self.tail };
        l.prev.compare_exchange(UNLINKED, prev, Ordering::Acquire, Ordering::Relaxed).map_err(|_| AlreadyLinked)?;
        l.next.store(0, Ordering::Relaxed);
        if self.tail != 0 {
            self.node(self.tail).links().next.store(me, Ordering::Relaxed);
        } else {
            self.head = me;
        }
        self.tail = me;
        self.len += 1;
        Ok(())
    }

    /// Unlinks a node known to be on this list (the body of every removal).
    fn unlink(&mut self, node: &T) {
        let l = node.links();
        let (prev, next) = (l.prev.load(Ordering::Relaxed), l.next.load(Ordering::Relaxed));
        debug_assert!(prev != UNLINKED);
        if prev == HEAD {
            debug_assert_eq!(self.head, node as *const T as usize, "first node of another list");
            self.head = next;
        } else {
            self.node(prev).links().next.store(next, Ordering::Relaxed);
        }
        if next == 0 {
            debug_assert_eq!(self.tail, node as *const T as usize, "last node of another list");
            self.tail = if prev == HEAD { 0 } else { prev };
        } else {
            self.node(next).links().prev.store(prev, Ordering::Relaxed);
        }
        self.len -= 1;
        l.next.store(0, Ordering::Relaxed);
        // Invariant 2: unlinked last, publishing the writes above to the next claimer.
        l.prev.store(UNLINKED, Ordering::Release);
    }

    /// Unlinks and returns the first node.
    pub fn pop_front(&mut self) -> Option<&T> {
        let addr = self.head;
        if addr == 0 {
            return None;
        }
        // SAFETY: `head` is a live node of this list (invariant 1); after the unlink it stays
        // alive while `self` is borrowed: only a party that saw it unlinked under this list's
        // lock may free it, and that lock is held for the borrow (invariant 4).
        let node = unsafe { &*(addr as *const T) };
        self.unlink(node);
        Some(node)
    }

    /// Unlinks and returns the last node.
    pub fn pop_back(&mut self) -> Option<&T> {
        let addr = self.tail;
        if addr == 0 {
            return None;
        }
        // SAFETY: as in `pop_front`, for `tail` (invariants 1 and 4).
        let node = unsafe { &*(addr as *const T) };
        self.unlink(node);
        Some(node)
    }

    /// Unlinks `node`; returns false (changing nothing) if it was on no list.
    ///
    /// # Safety
    /// If `node` is linked, it is on this list (not on another list of the same kind, whose
    /// nodes are guarded by another lock: invariant 3). Typically the caller knows from state
    /// it keeps under the same lock (the folio's `PG_LRU` flag and node; the slab's cache and
    /// fullness).
    pub unsafe fn remove(&mut self, node: &T) -> bool {
        if !node.links().is_linked() {
            return false;
        }
        self.unlink(node);
        true
    }

    /// Moves `node` to the back (an LRU rotation); returns false if it was on no list.
    ///
    /// # Safety
    /// As [`List::remove`].
    pub unsafe fn move_to_back(&mut self, node: &T) -> bool {
        if !node.links().is_linked() {
            return false;
        }
        self.unlink(node);
        self.push_back(node).is_ok()
    }

    /// Moves `node` to the front; returns false if it was on no list.
    ///
    /// # Safety
    /// As [`List::remove`].
    pub unsafe fn move_to_front(&mut self, node: &T) -> bool {
        if !node.links().is_linked() {
            return false;
        }
        self.unlink(node);
        self.push_front(node).is_ok()
    }

    /// Keeps the nodes for which `keep` returns true, unlinking the others in list order
    /// (`keep` may act on a node it rejects, e.g. collect it: it is unlinked right after).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut cur = self.head;
        while cur != 0 {
            // SAFETY: `cur` is `head` or a `next` read from a node of this list before any
            // change to that node, hence a live node of this list (invariants 1 and 3).
            let node = unsafe { &*(cur as *const T) };
            cur = node.links().next.load(Ordering::Relaxed);
            if !keep(node) {
                self.unlink(node);
            }
        }
    }

    /// Moves every node of `other` to the back of this list, in order (a splice).
    pub fn append(&mut self, other: &mut List<T>) {
        if other.head == 0 {
            return;
        }
        if self.tail == 0 {
            self.head = other.head;
        } else {
            self.node(self.tail).links().next.store(other.head, Ordering::Relaxed);
            other.node(other.head).links().prev.store(self.tail, Ordering::Relaxed);
        }
        self.tail = other.tail;
        self.len += other.len;
        other.head = 0;
        other.tail = 0;
        other.len = 0;
    }

    /// The nodes, first to last.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { list: self, cur: self.head }
    }

    /// The first node's address, for callers that store a position (zsmalloc's compaction).
    pub fn front_ptr(&self) -> Option<NonNull<T>> {
        NonNull::new(self.head as *mut T)
    }
}

/// Iterator over a [`List`] ([`List::iter`]).
pub struct Iter<'a, T: Linked> {
    list: &'a List<T>,
    cur: usize,
}

impl<'a, T: Linked> Iterator for Iter<'a, T> {
    type Item = &'a T;
    fn next(&mut self) -> Option<&'a T> {
        if self.cur == 0 {
            return None;
        }
        let node = self.list.node(self.cur);
        self.cur = node.links().next.load(Ordering::Relaxed);
        Some(node)
    }
}

impl<'a, T: Linked> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    #[repr(align(16))]
    struct Node {
        id: usize,
        a: Links,
        b: Links,
    }
    // SAFETY: `links` returns the field `a`; the test nodes live in a Vec that outlives every
    // list (item 2).
    unsafe impl Linked for Node {
        fn links(&self) -> &Links {
            &self.a
        }
    }
    // A second list kind over the same nodes, through the other field.
    #[repr(transparent)]
    struct OnB(Node);
    // SAFETY: as above, field `b`.
    unsafe impl Linked for OnB {
        fn links(&self) -> &Links {
            &self.0.b
        }
    }
    fn as_b(n: &Node) -> &OnB {
        // SAFETY: OnB is repr(transparent) over Node (invariant 4: the same live node).
        unsafe { &*(n as *const Node as *const OnB) }
    }
    fn nodes(n: usize) -> Vec<Node> {
        (0..n).map(|id| Node { id, a: Links::new(), b: Links::new() }).collect()
    }
    fn ids(l: &List<Node>) -> Vec<usize> {
        l.iter().map(|n| n.id).collect()
    }

    #[test]
    fn push_pop_both_ends_and_len() {
        let ns = nodes(4);
        let mut l = List::new();
        assert!(l.is_empty() && l.front().is_none() && l.pop_back().is_none());
        l.push_back(&ns[1]).unwrap();
        l.push_front(&ns[0]).unwrap();
        l.push_back(&ns[2]).unwrap();
        assert_eq!(ids(&l), [0, 1, 2]);
        assert_eq!((l.len(), l.front().unwrap().id, l.back().unwrap().id), (3, 0, 2));
        assert_eq!(l.pop_front().unwrap().id, 0);
        assert_eq!(l.pop_back().unwrap().id, 2);
        assert_eq!(l.pop_back().unwrap().id, 1);
        assert!(l.is_empty() && l.back().is_none());
        assert!(ns.iter().all(|n| !n.a.is_linked()));
    }

    #[test]
    fn a_node_is_on_one_list_per_kind_but_may_be_on_two_kinds() {
        let ns = nodes(2);
        let (mut x, mut y) = (List::<Node>::new(), List::<Node>::new());
        x.push_back(&ns[0]).unwrap();
        assert_eq!(y.push_back(&ns[0]), Err(AlreadyLinked));
        assert_eq!(x.push_front(&ns[0]), Err(AlreadyLinked));
        assert_eq!(ids(&x), [0]);
        assert!(y.is_empty());
        let mut z = List::<OnB>::new();
        z.push_back(as_b(&ns[0])).unwrap();
        assert_eq!(z.len(), 1);
        // SAFETY: invariant 3: ns[0] is on x.
        assert!(unsafe { x.remove(&ns[0]) });
        // SAFETY: invariant 3: it is now on no list of kind A.
        assert!(!unsafe { y.remove(&ns[0]) });
        assert!(ns[0].b.is_linked() && !ns[0].a.is_linked());
        y.push_back(&ns[0]).unwrap();
        assert_eq!(ids(&y), [0]);
    }

    #[test]
    fn remove_rotate_retain_append() {
        let ns = nodes(6);
        let mut l = List::new();
        for n in &ns[..4] {
            l.push_back(n).unwrap();
        }
        // SAFETY: invariant 3: the three nodes are on `l`.
        unsafe {
            assert!(l.remove(&ns[1]));
            assert!(l.move_to_back(&ns[0]));
            assert!(l.move_to_front(&ns[3]));
        }
        assert_eq!(ids(&l), [3, 2, 0]);
        let mut seen = Vec::new();
        l.retain(|n| {
            seen.push(n.id);
            n.id != 2
        });
        assert_eq!((seen, ids(&l)), (std::vec![3, 2, 0], std::vec![3, 0]));
        let mut m = List::new();
        m.push_back(&ns[4]).unwrap();
        m.push_back(&ns[5]).unwrap();
        l.append(&mut m);
        assert_eq!((ids(&l), l.len(), m.len()), (std::vec![3, 0, 4, 5], 4, 0));
        let mut e = List::new();
        e.append(&mut l);
        assert_eq!((ids(&e), l.is_empty()), (std::vec![3, 0, 4, 5], true));
        // Backward links are consistent too: pop from the back.
        let back: Vec<usize> = core::iter::from_fn(|| e.pop_back().map(|n| n.id)).collect();
        assert_eq!(back, [5, 4, 0, 3]);
    }

    #[test]
    fn reset_makes_garbage_links_unlinked() {
        let n = Node { id: 0, a: Links::new(), b: Links::new() };
        n.a.prev.store(0xdead0, Ordering::Relaxed); // a free pointer left by a cache
        assert!(n.a.is_linked());
        // SAFETY: invariant 2: no list holds `n`.
        unsafe { n.a.reset() };
        let mut l = List::new();
        l.push_back(&n).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn two_threads_claim_a_node_once() {
        let ns = nodes(64);
        let wins: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut l = List::new();
                        for n in &ns {
                            let _ = l.push_back(n);
                        }
                        l.len()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(wins.iter().sum::<usize>(), 64);
    }

    #[test]
    fn lists_behind_spin_locks_shuffle_nodes_between_threads() {
        use crate::base::sync::SpinLock;
        let ns = nodes(32);
        let lists = [SpinLock::new(List::<Node>::new()), SpinLock::new(List::<Node>::new())];
        for n in &ns {
            lists[n.id % 2].lock().push_back(n).unwrap();
        }
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (lists, ns) = (&lists, &ns);
                s.spawn(move || {
                    for i in 0..2000usize {
                        let (from, to) = ((t + i) % 2, (t + i + 1) % 2);
                        // Take from one list under its lock, give to the other under its lock:
                        // the node is on no list in between, so the push claims it.
                        let moved = lists[from].lock().pop_front().map(|n| n.id);
                        if let Some(id) = moved {
                            lists[to].lock().push_back(&ns[id]).unwrap();
                        }
                    }
                });
            }
        });
        let (a, b) = (lists[0].lock(), lists[1].lock());
        let mut all: Vec<usize> = a.iter().chain(b.iter()).map(|n| n.id).collect();
        assert_eq!(a.len() + b.len(), 32);
        all.sort_unstable();
        assert_eq!(all, (0..32).collect::<Vec<_>>());
        assert!(ns.iter().all(|n| n.a.is_linked()));
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            PushFront(usize),
            PushBack(usize),
            PopFront,
            PopBack,
            Remove(usize),
            MoveBack(usize),
            MoveFront(usize),
            RetainNot(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0..8usize).prop_map(Op::PushFront),
                (0..8usize).prop_map(Op::PushBack),
                Just(Op::PopFront),
                Just(Op::PopBack),
                (0..8usize).prop_map(Op::Remove),
                (0..8usize).prop_map(Op::MoveBack),
                (0..8usize).prop_map(Op::MoveFront),
                (0..8usize).prop_map(Op::RetainNot),
            ]
        }

        proptest! {
            /// Every operation agrees with a VecDeque of ids, forwards and backwards.
            #[test]
            fn matches_vecdeque(ops in proptest::collection::vec(op(), 0..200)) {
                let ns = nodes(8);
                let mut l = List::new();
                let mut m: VecDeque<usize> = VecDeque::new();
                for o in ops {
                    match o {
                        Op::PushFront(i) => {
                            let r = l.push_front(&ns[i]);
                            prop_assert_eq!(r.is_ok(), !m.contains(&i));
                            if r.is_ok() { m.push_front(i) }
                        }
                        Op::PushBack(i) => {
                            let r = l.push_back(&ns[i]);
                            prop_assert_eq!(r.is_ok(), !m.contains(&i));
                            if r.is_ok() { m.push_back(i) }
                        }
                        Op::PopFront => prop_assert_eq!(l.pop_front().map(|n| n.id), m.pop_front()),
                        Op::PopBack => prop_assert_eq!(l.pop_back().map(|n| n.id), m.pop_back()),
                        Op::Remove(i) => {
                            // SAFETY: invariant 3: there is only one list of this kind in the test.
                            let r = unsafe { l.remove(&ns[i]) };
                            prop_assert_eq!(r, m.contains(&i));
                            m.retain(|&x| x != i);
                        }
                        Op::MoveBack(i) => {
                            // SAFETY: as above.
                            let r = unsafe { l.move_to_back(&ns[i]) };
                            prop_assert_eq!(r, m.contains(&i));
                            if r { m.retain(|&x| x != i); m.push_back(i) }
                        }
                        Op::MoveFront(i) => {
                            // SAFETY: as above.
                            let r = unsafe { l.move_to_front(&ns[i]) };
                            prop_assert_eq!(r, m.contains(&i));
                            if r { m.retain(|&x| x != i); m.push_front(i) }
                        }
                        Op::RetainNot(i) => {
                            l.retain(|n| n.id != i);
                            m.retain(|&x| x != i);
                        }
                    }
                    prop_assert_eq!(l.len(), m.len());
                    prop_assert_eq!(ids(&l), m.iter().copied().collect::<Vec<_>>());
                    prop_assert_eq!(l.front().map(|n| n.id), m.front().copied());
                    prop_assert_eq!(l.back().map(|n| n.id), m.back().copied());
                    for (k, n) in ns.iter().enumerate() {
                        prop_assert_eq!(n.a.is_linked(), m.contains(&k));
                    }
                }
                let back: Vec<usize> = core::iter::from_fn(|| l.pop_back().map(|n| n.id)).collect();
                prop_assert_eq!(back, m.iter().rev().copied().collect::<Vec<_>>());
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[repr(align(8))]
    struct N(Links);
    // SAFETY: `links` returns the field; the node lives in an `Arc` that outlives both lists.
    unsafe impl Linked for N {
        fn links(&self) -> &Links {
            &self.0
        }
    }

    /// Two lists under different locks (here: owned by different threads) race to take one
    /// node: exactly one wins (invariant 2); the node stays on the winner's list.
    #[test]
    fn loom_two_lists_claim_a_node_once() {
        loom::model(|| {
            let node = Arc::new(N(Links::new()));
            let theirs = node.clone();
            let t = loom::thread::spawn(move || List::new().push_back(&*theirs).is_ok());
            let mut l = List::new();
            let won = l.push_front(&*node).is_ok();
            let their_win = t.join().unwrap();
            assert!(won != their_win, "exactly one list takes the node");
            assert!(node.0.is_linked());
            if won {
                // Popping publishes the unlink: the node may be claimed again.
                assert!(l.pop_back().is_some());
                assert!(!node.0.is_linked());
                assert!(l.push_back(&*node).is_ok());
            }
        });
    }
}
