//! Sheaves: the per-CPU object caches in front of a slab cache (after Linux 6.18's sheaves).
//!
//! Each CPU has a *main* sheaf and a *spare* sheaf, each a small array of free object
//! addresses. Allocation pops from main; when main is empty it takes over a non-empty spare's
//! objects, and only when both are empty does the caller refill main from the slabs under the
//! node lock. Free pushes onto main; when main is full it moves its objects to an empty spare,
//! and only when both
//! are full does the caller flush a sheaf back to the slabs. A CPU frees into its own sheaf
//! even objects another CPU allocated (cross-CPU frees); the objects go home to their slab
//! when the sheaf is flushed.
//!
//! The owner touches its sheaves with no lock and no atomic read-modify-write: its [`Cpu`]
//! token is the proof that no one else does, and every field is a relaxed atomic the owner
//! reads and writes with plain loads and stores (the same machine moves as plain fields, and a
//! racing reader is defined behaviour). Anyone else who needs a CPU's objects back
//! (shrinking, destroying a cache, poisoning a slab) flushes them through `flush_all`: an idle
//! CPU's sheaves by borrowing its token, a busy CPU's by *ticket* (the requester bumps the
//! CPU's request counter; the owner returns everything at its next operation on the cache and
//! acknowledges), as Linux's `flush_all` runs a function on each CPU.

//! This module holds the per-CPU entry and that protocol; [`crate::slab`] owns the slabs and
//! the node locks and passes the refill and flush steps in as closures.
//!
//! # Invariants
//! 1. The owner-only fields of a `CpuSheaves` (the object arrays, the
//!    last ticket served, and the stores to `len` and `moved`) are written only by the entry's
//!    *owner*: the thread holding the [`Cpu`] token whose id is the entry's index, of the
//!    machine whose cache holds the entry (its own token, or an idle CPU's token borrowed with
//!    [`CpuSet::claim`]). Tokens are unique per id and `!Sync` ([`crate::base::cpu`] invariants
//!    2–4), so there is at most one owner at a time. Every owner operation takes the token as
//!    its witness (`_owner: &Cpu`); the slab layer keeps the rule by reaching an entry only
//!    through the token's id. Breaking the rule cannot make this module misbehave as Rust
//!    (every field is atomic), only hand an object out twice, which is what the loom model's
//!    broken twin shows.
//! 2. `len[i]` is the number of objects in sheaf `i`, stored (Release) only by the owner: a
//!    CPU that reads 0 for both (Acquire) knows the sheaves were empty after the owner's last
//!    operation it synchronised with.
//! 3. Tickets: a requester takes ticket `t` by incrementing `req`; at the start of every
//!    operation the owner compares `req` with the last ticket it served and, if it is newer,
//!    returns every object it holds to the slabs and only then stores that `req` value in
//!    `ack` (Release). So `ack >= t` (read with Acquire) means every object the sheaves held
//!    when `t` was taken is home, and the requester sees the slabs' new state. `ack` only
//!    grows (one owner at a time, each storing a `req` value it read after the last one).
//! 4. `moved` is objects moved from the slabs into the sheaves minus objects moved back
//!    (wrapping), stored only by the owner, and only on the slow paths (refill, flush). So
//!    allocations minus frees through the entry is `moved - len[0] - len[1]` (each allocation
//!    takes one object out of the sheaves, each free puts one in), with nothing counted on the
//!    fast paths.

use crate::base::cpu::{Cpu, CpuSet};
use crate::base::sync::{spin_hint, AtomicU64, AtomicUsize, Ordering};

/// Objects per sheaf (a power of two: indices are masked, not bounds-checked).
pub const SHEAF_CAPACITY: usize = 32;
const _: () = assert!(SHEAF_CAPACITY.is_power_of_two());

/// Spins a flush waits for a busy CPU's acknowledgement before giving up (about a
/// millisecond per thousand; bounded so a CPU held by a thread that never returns to the
/// allocator makes [`flush_all`] fail instead of hang).
#[cfg(not(loom))]
const FLUSH_SPINS: usize = 1 << 20;
/// Under loom the wait is unbounded: the model's owner thread always ends (releasing its
/// token), and loom's scheduler makes a yielding waiter let it run.
#[cfg(loom)]
const FLUSH_SPINS: usize = usize::MAX;

/// One owner-written field (invariant 1): a load and a store, never a read-modify-write.
#[inline(always)]
fn get(a: &AtomicUsize) -> usize {
    a.load(Ordering::Relaxed)
}
#[inline(always)]
fn set(a: &AtomicUsize, v: usize) {
    a.store(v, Ordering::Relaxed)
}

/// One CPU's pair of sheaves of one cache, on cache lines of its own (128 bytes: a line and
/// the neighbour the adjacent-line prefetcher pulls in), so CPUs never share a line.
#[repr(C, align(128))]
pub(crate) struct CpuSheaves {
    /// Objects in each sheaf (invariant 2).
    len: [AtomicUsize; 2],
    /// Objects moved in from the slabs minus objects moved back (invariant 4).
    moved: AtomicU64,
    /// Flush tickets taken and acknowledged (invariant 3).
    req: AtomicU64,
    ack: AtomicU64,
    /// The last ticket served (owner-only, invariants 1 and 3).
    served: AtomicU64,
    /// The sheaves' objects (owner-only, invariant 1).
    objs: [[AtomicUsize; SHEAF_CAPACITY]; 2],
}

#[cfg(not(loom))]
const _: () = assert!(
    core::mem::align_of::<CpuSheaves>() == 128 && core::mem::size_of::<CpuSheaves>().is_multiple_of(128),
    "per-CPU sheaves share no cache line"
);

/// The main sheaf being refilled (handed to the refill step).
pub(crate) struct Fill<'a> {
    objs: &'a [AtomicUsize; SHEAF_CAPACITY],
    n: usize,
}

impl Fill<'_> {
    /// Objects in the sheaf.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.n
    }
    /// Whether it takes no more.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.n == SHEAF_CAPACITY
    }
    /// Adds an object; `false` if full.
    #[inline]
    pub(crate) fn push(&mut self, obj: usize) -> bool {
        if self.n == SHEAF_CAPACITY {
            return false;
        }
        set(&self.objs[self.n], obj);
        self.n += 1;
        true
    }
}

impl CpuSheaves {
    /// An empty entry.
    pub(crate) fn new() -> Self {
        CpuSheaves {
            len: [AtomicUsize::new(0), AtomicUsize::new(0)],
            moved: AtomicU64::new(0),
            req: AtomicU64::new(0),
            ack: AtomicU64::new(0),
            served: AtomicU64::new(0),
            objs: core::array::from_fn(|_| core::array::from_fn(|_| AtomicUsize::new(0))),
        }
    }

    /// Owner: `d` more objects moved in from the slabs (wrapping: negative for a flush)
    /// (invariant 4).
    #[inline(always)]
    fn moved_in(&self, d: u64) {
        self.moved.store(self.moved.load(Ordering::Relaxed).wrapping_add(d), Ordering::Release);
    }

    /// Sheaf 0 is always the main sheaf and sheaf 1 the spare: the hit paths read the main
    /// sheaf's length with no load before it (the slow paths move objects between the two).
    const MAIN: usize = 0;
    const SPARE: usize = 1;

    /// Owner: serves a ticket posted since the last one served (invariant 3).
    #[inline(always)]
    fn serve_if_asked(&self, flush: &mut dyn FnMut(&mut dyn Iterator<Item = usize>)) {
        if self.asked() {
            self.serve(flush);
        }
    }

    /// The owner's hit path of an allocation (`_owner` is its token, invariant 1): pops the
    /// main sheaf's newest object. `None` when the main sheaf is empty or a flush ticket is
    /// pending: the caller then takes [`CpuSheaves::alloc`], which serves the ticket first
    /// (invariant 3). No closure, no spill: the slab layer inlines this into kmalloc.
    #[inline(always)]
    pub(crate) fn try_alloc(&self, _owner: &Cpu<'_>) -> Option<usize> {
        if self.asked() {
            return None;
        }
        self.pop()
    }

    /// Owner: pops the main sheaf's newest object, `None` if it is empty.
    #[inline(always)]
    fn pop(&self) -> Option<usize> {
        let m = Self::MAIN;
        let n = get(&self.len[m]);
        if n == 0 {
            return None;
        }
        self.len[m].store(n - 1, Ordering::Release);
        Some(get(&self.objs[m][(n - 1) & (SHEAF_CAPACITY - 1)]))
    }

    /// The owner's hit path of a free (`_owner` is its token, invariant 1): pushes `obj` onto
    /// the main sheaf and returns `true`; `false` (nothing changed) when the main sheaf is full
    /// or a flush ticket is pending: the caller then takes [`CpuSheaves::free`]. One load of
    /// the main sheaf's length for the check and the push.
    #[inline(always)]
    pub(crate) fn try_free(&self, _owner: &Cpu<'_>, obj: usize) -> bool {
        if self.asked() {
            return false;
        }
        let m = Self::MAIN;
        let n = get(&self.len[m]);
        if n >= SHEAF_CAPACITY {
            return false;
        }
        set(&self.objs[m][n & (SHEAF_CAPACITY - 1)], obj);
        self.len[m].store(n + 1, Ordering::Release);
        true
    }

    /// The owner (`_owner` is its token, invariant 1) pushes `obj` onto the main sheaf; call
    /// it only with room in the main sheaf.
    #[inline(always)]
    fn push(&self, _owner: &Cpu<'_>, obj: usize) {
        let m = Self::MAIN;
        let n = get(&self.len[m]);
        debug_assert!(n < SHEAF_CAPACITY, "push without room");
        set(&self.objs[m][n & (SHEAF_CAPACITY - 1)], obj);
        self.len[m].store(n + 1, Ordering::Release);
    }

    /// Owner: whether a flush ticket was posted since the last one served (invariant 3).
    #[inline(always)]
    fn asked(&self) -> bool {
        self.req.load(Ordering::Acquire) != self.served.load(Ordering::Relaxed)
    }

    /// Allocation by the owner (`_owner` is its token, invariant 1): from the sheaves, else
    /// `refill` the main sheaf from the slabs and pop. Serves a pending flush ticket first
    /// (with `flush`). `Ok(None)`: the refill found nothing.
    #[inline]
    pub(crate) fn alloc<E>(
        &self,
        owner: &Cpu<'_>,
        refill: impl FnOnce(&mut Fill<'_>) -> Result<(), E>,
        mut flush: impl FnMut(&mut dyn Iterator<Item = usize>),
    ) -> Result<Option<usize>, E> {
        if let Some(obj) = self.try_alloc(owner) {
            return Ok(Some(obj));
        }
        // The main sheaf is empty now either way: it was, or serving a ticket emptied both.
        self.serve_if_asked(&mut flush);
        self.alloc_slow(refill)
    }

    /// The main sheaf is empty: take the spare's objects, or refill.
    #[cold]
    fn alloc_slow<E>(&self, refill: impl FnOnce(&mut Fill<'_>) -> Result<(), E>) -> Result<Option<usize>, E> {
        let k = get(&self.len[Self::SPARE]);
        if k != 0 {
            self.move_objs(Self::SPARE, Self::MAIN, k);
        } else {
            let m = Self::MAIN;
            let mut fill = Fill { objs: &self.objs[m], n: 0 };
            let r = refill(&mut fill);
            self.moved_in(fill.n as u64);
            self.len[m].store(fill.n, Ordering::Release);
            r?;
        }
        Ok(self.pop())
    }

    /// Owner: moves the `k` objects of sheaf `from` into the empty sheaf `to`. The
    /// destination's length is stored before the source's is cleared, so a reader of both
    /// lengths (invariant 2) never sees the sheaves empty while they hold objects.
    fn move_objs(&self, from: usize, to: usize, k: usize) {
        for (d, o) in self.objs[to].iter().zip(&self.objs[from][..k]) {
            set(d, get(o));
        }
        self.len[to].store(k, Ordering::Release);
        self.len[from].store(0, Ordering::Release);
    }

    /// Free by the owner (`_owner` is its token, invariant 1) of an object any CPU allocated:
    /// into the sheaves, flushing the full main sheaf to the slabs first when both are full.
    /// Serves a pending flush ticket first.
    #[inline]
    pub(crate) fn free(&self, owner: &Cpu<'_>, obj: usize, mut flush: impl FnMut(&mut dyn Iterator<Item = usize>)) {
        if self.try_free(owner, obj) {
            return;
        }
        self.serve_if_asked(&mut flush);
        if get(&self.len[Self::MAIN]) < SHEAF_CAPACITY {
            self.push(owner, obj);
            return;
        }
        self.free_slow(obj, flush)
    }

    /// The main sheaf is full: move its objects to an empty spare, or flush main.
    #[cold]
    fn free_slow(&self, obj: usize, mut flush: impl FnMut(&mut dyn Iterator<Item = usize>)) {
        let m = Self::MAIN;
        if get(&self.len[Self::SPARE]) == 0 {
            self.move_objs(m, Self::SPARE, SHEAF_CAPACITY);
        } else {
            flush(&mut self.objs[m].iter().map(get));
            self.moved_in((SHEAF_CAPACITY as u64).wrapping_neg());
            self.len[m].store(0, Ordering::Release);
        }
        set(&self.objs[m][0], obj);
        self.len[m].store(1, Ordering::Release);
    }

    /// Owner: returns every object to the slabs and acknowledges the newest ticket
    /// (invariant 3).
    #[cold]
    #[inline(never)]
    fn serve(&self, flush: &mut dyn FnMut(&mut dyn Iterator<Item = usize>)) {
        let t = self.req.load(Ordering::Acquire);
        #[cfg(all(test, loom))]
        if crate::base::sync::mutation::active(crate::base::sync::Mutation::SheafAckBeforeFlush) {
            // The broken order the loom model must catch: acknowledge, then return the objects.
            self.ack.store(t, Ordering::Release);
        }
        let (n0, n1) = (get(&self.len[0]), get(&self.len[1]));
        flush(&mut self.objs[0][..n0].iter().map(get).chain(self.objs[1][..n1].iter().map(get)));
        self.moved_in(((n0 + n1) as u64).wrapping_neg());
        self.len[0].store(0, Ordering::Release);
        self.len[1].store(0, Ordering::Release);
        self.served.store(t, Ordering::Relaxed);
        self.ack.store(t, Ordering::Release);
    }

    /// Owner (`_owner` is its token, invariant 1): returns every object to the slabs (serving
    /// any ticket).
    pub(crate) fn drain(&self, _owner: &Cpu<'_>, mut flush: impl FnMut(&mut dyn Iterator<Item = usize>)) {
        self.serve(&mut flush)
    }

    /// Whether both sheaves were empty after the owner's last operation (invariant 2).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len[0].load(Ordering::Acquire) == 0 && self.len[1].load(Ordering::Acquire) == 0
    }

    /// Allocations minus frees through this entry (wrapping; invariant 4). Exact when the
    /// owner is not in an operation (a snapshot otherwise).
    #[inline]
    pub(crate) fn net(&self) -> u64 {
        let moved = self.moved.load(Ordering::Acquire);
        moved
            .wrapping_sub(self.len[0].load(Ordering::Acquire) as u64)
            .wrapping_sub(self.len[1].load(Ordering::Acquire) as u64)
    }

    /// Takes a flush ticket (invariant 3).
    fn post(&self) -> u64 {
        self.req.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether ticket `t` was served (invariant 3).
    fn acked(&self, t: u64) -> bool {
        self.ack.load(Ordering::Acquire) >= t
    }
}

/// Returns every CPU's sheaves of one cache to its slabs, as the holder of `me` (a token of
/// `cpus`): its own directly, an idle CPU's by borrowing its token, a busy CPU's by ticket
/// (invariant 3). `entry(i)` is CPU `i`'s entry of the cache; `flush` returns objects to the
/// slabs. With `wait`, waits (bounded) for the busy CPUs' acknowledgements and returns whether
/// every CPU's sheaves were flushed; without, leaves the tickets for the owners' next
/// operations and returns whether every CPU's sheaves were flushed already.
pub(crate) fn flush_all<'c>(
    cpus: &CpuSet,
    me: &Cpu<'_>,
    entry: impl Fn(usize) -> &'c CpuSheaves,
    mut flush: impl FnMut(&mut dyn Iterator<Item = usize>),
    wait: bool,
) -> bool {
    let mine = me.id_in(cpus);
    // `me` is this machine's token for CPU `mine`: this thread owns its entry (invariant 1).
    entry(mine).drain(me, &mut flush);
    let mut tickets = [0u64; crate::base::cpu::MAX_CPUS];
    let mut pending = 0u64;
    for (i, ticket) in tickets.iter_mut().enumerate().take(cpus.nr()) {
        let e = entry(i);
        if i == mine || e.is_empty() {
            continue;
        }
        #[cfg(all(test, loom))]
        if crate::base::sync::mutation::active(crate::base::sync::Mutation::SheafFlushSkipsTicket) {
            // The broken flush the loom model must catch: empty a busy CPU's sheaves directly,
            // with the wrong token (invariant 1 broken on purpose).
            e.drain(me, &mut flush);
            continue;
        }
        *ticket = e.post();
        if let Some(borrowed) = cpus.claim(i) {
            // The borrowed token makes this thread CPU i's owner until it drops.
            e.drain(&borrowed, &mut flush);
            continue;
        }
        pending |= 1 << i;
    }
    if !wait {
        return pending == 0;
    }
    let mut spins = 0usize;
    loop {
        let mut rest = pending;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let e = entry(i);
            if e.acked(tickets[i]) {
                pending &= !(1 << i);
            } else if let Some(borrowed) = cpus.claim(i) {
                e.drain(&borrowed, &mut flush);
                pending &= !(1 << i);
            }
        }
        if pending == 0 || spins == FLUSH_SPINS {
            return pending == 0;
        }
        // Two CPUs flushing the same cache at once wait for each other: answer ours.
        entry(mine).serve_if_asked(&mut flush);
        spin_hint();
        spins += 1;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn main_and_spare() {
        let set = CpuSet::new(1);
        let cpu = set.claim(0).unwrap();
        let s = CpuSheaves::new();
        let home = core::cell::RefCell::new(std::vec::Vec::new());
        let flush = |objs: &mut dyn Iterator<Item = usize>| home.borrow_mut().extend(objs);
        // `cpu` is CPU 0's token and `s` is CPU 0's entry (invariant 1).
        assert_eq!(s.alloc(&cpu, |_| Ok::<(), ()>(()), flush), Ok(None), "refill found nothing");
        for i in 0..2 * SHEAF_CAPACITY {
            s.free(&cpu, i + 1, |_| unreachable!("both sheaves take the first 64 objects"));
        }
        assert!(!s.is_empty());
        s.free(&cpu, 999, flush);
        assert_eq!(home.borrow().len(), SHEAF_CAPACITY, "both full: the main sheaf went home");
        assert_eq!(s.alloc(&cpu, |_| Ok::<(), ()>(()), flush), Ok(Some(999)), "LIFO: the hottest object first");
        let mut n = 0;
        while s.alloc(&cpu, |_| Ok::<(), ()>(()), flush).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, SHEAF_CAPACITY);
        assert!(s.is_empty());
        assert_eq!(s.net(), (SHEAF_CAPACITY as u64 + 1).wrapping_sub(2 * SHEAF_CAPACITY as u64 + 1));
        // A refill fills main; a ticket from elsewhere is served at the next operation.
        let got = s.alloc(
            &cpu,
            |f| {
                while f.push(7000 + f.len()) {}
                Ok::<(), ()>(())
            },
            flush,
        );
        assert_eq!(got, Ok(Some(7000 + SHEAF_CAPACITY - 1)));
        let t = s.post();
        assert!(!s.acked(t));
        home.borrow_mut().clear();
        s.free(&cpu, 5, flush);
        assert!(s.acked(t));
        assert_eq!(home.borrow().len(), SHEAF_CAPACITY - 1, "the ticket returned the refilled objects");
        drop(cpu);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::base::sync::{mutation, AtomicBool, Mutation};
    use loom::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// The stand-in slab side: the objects at home, and a log of every object a flush returned.
    struct Home {
        objs: Vec<usize>,
        returned: Vec<usize>,
    }

    fn refill(home: &Mutex<Home>, f: &mut Fill<'_>) -> Result<(), ()> {
        let mut h = home.lock().unwrap();
        while !f.is_full() {
            let Some(o) = h.objs.pop() else { break };
            f.push(o);
        }
        Ok(())
    }

    fn flush(home: &Mutex<Home>, objs: &mut dyn Iterator<Item = usize>) {
        let mut h = home.lock().unwrap();
        for o in objs {
            h.objs.push(o);
            h.returned.push(o);
        }
    }

    /// CPU 1's owner (the real `alloc`/`free`, no lock) allocates, frees an object another CPU
    /// allocated, says so, and frees another, while CPU 0 flushes every CPU's sheaves with
    /// the real [`flush_all`] (ticket while CPU 1 is busy, borrowed token once its thread has
    /// let go). An acknowledged flush has returned everything CPU 1 held when it was asked, and
    /// every object ends up in exactly one place (an object handed out twice, or returned
    /// twice, is what two threads writing one entry at once would cause).
    fn owner_against_remote_flush() {
        // The ack-before-flush twin needs three preemptions to show; the suite's default bound
        // is two, so this model sets its own.
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let set = Arc::new(CpuSet::new(2));
            let entries = Arc::new([CpuSheaves::new(), CpuSheaves::new()]);
            let home = Arc::new(Mutex::new(Home { objs: std::vec![10, 11], returned: Vec::new() }));
            let freed = Arc::new(AtomicBool::new(false));
            let t = {
                let (set, entries, home, freed) = (set.clone(), entries.clone(), home.clone(), freed.clone());
                loom::thread::spawn(move || {
                    let cpu = set.claim(1).unwrap();
                    let e = &entries[1];
                    // This thread holds CPU 1's token and `e` is CPU 1's entry.
                    let a = e.alloc(&cpu, |f| refill(&home, f), |o| flush(&home, o)).unwrap().unwrap();
                    e.free(&cpu, 1, |o| flush(&home, o));
                    freed.store(true, Ordering::Release);
                    e.free(&cpu, 2, |o| flush(&home, o));
                    drop(cpu);
                    a
                })
            };
            let cpu0 = set.claim(0).unwrap();
            let saw = freed.load(Ordering::Acquire);
            assert!(flush_all(&set, &cpu0, |i| &entries[i], |o| flush(&home, o), true), "the flush was answered");
            if saw {
                assert!(home.lock().unwrap().returned.contains(&1), "an acknowledged flush left an object in a sheaf");
            }
            let out = t.join().unwrap();
            assert!(flush_all(&set, &cpu0, |i| &entries[i], |o| flush(&home, o), false), "CPU 1 is idle");
            let mut all = home.lock().unwrap().objs.clone();
            all.push(out);
            all.sort_unstable();
            assert_eq!(all, [1, 2, 10, 11], "an object was lost or is in two places");
        });
    }

    #[test]
    fn loom_sheaves_owner_against_remote_flush() {
        owner_against_remote_flush();
    }

    /// The same model with the remote flush emptying a busy CPU's sheaves itself (no ticket)
    /// must fail: two threads write the entry at once and an object ends up in two places.
    #[test]
    #[should_panic(expected = "an object was lost or is in two places")]
    fn loom_sheaves_owner_against_remote_flush_fails_without_the_ticket() {
        mutation::with(Mutation::SheafFlushSkipsTicket, owner_against_remote_flush);
    }

    /// The same model with the owner acknowledging a ticket before returning the objects must
    /// fail: the requester sees an acknowledged flush that has not happened.
    #[test]
    #[should_panic(expected = "an acknowledged flush left an object in a sheaf")]
    fn loom_sheaves_owner_against_remote_flush_fails_when_ack_comes_first() {
        mutation::with(Mutation::SheafAckBeforeFlush, owner_against_remote_flush);
    }
}
