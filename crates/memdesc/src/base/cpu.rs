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
//! 5. A CPU is in one claim state: free, owned (claimed by a thread with [`CpuSet::claim`]) or
//!    borrowed (claimed for a moment by another CPU's drain, `CpuSet::borrow`). Every state
//!    change from free is a compare-and-swap, so at most one token per CPU exists whichever way
//!    it was made; a borrow never waits for an owner and an owner's claim waits out a borrow
//!    (borrowers run a bounded drain and drop the token).
//! 6. Remote requests (`Request`): another CPU asks the owner to do something (drain its page
//!    lists, flush its sheaves) by bumping the CPU's request counter for that kind
//!    (`CpuSet::request`); whoever holds the token next (the owner at its next operation,
//!    `Cpu::pending`, or a borrower, `CpuSet::on_cpu`) does the work and then publishes
//!    the request count it served (`Cpu::ack`, a release store). A requester whose ticket is
//!    acknowledged sees everything the work did. The owner's check is one load of its own
//!    cache line; nothing on the owner's path is a compare-and-swap.
//!
//! So per-CPU data that only the holder of its CPU's token touches needs no lock: the token is
//! the lock (claimed once, not per operation), and remote work goes through 5 and 6.
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

use crate::base::sync::{spin_hint, AtomicU32, AtomicU8, Ordering};

/// Most CPUs a machine may have.
pub const MAX_CPUS: usize = 64;

/// Claim states (invariant 5).
const FREE: u8 = 0;
const OWNED: u8 = 1;
const BORROWED: u8 = 2;

/// Kinds of work another CPU may ask a CPU's owner to do (invariant 6). Each kind has its own
/// counters, so a page-list drain is never mistaken for a sheaf flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // `Slab` is used by the slab layer's fast path
pub(crate) enum Request {
    /// Give every page on this CPU's per-CPU lists back to the buddy lists.
    Pages = 0,
    /// Flush this CPU's slab sheaves.
    Slab = 1,
}
const NR_REQUESTS: usize = 2;

/// What [`CpuSet::on_cpu`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remote {
    /// The CPU was free: the work ran here on a borrowed token.
    Borrowed,
    /// The owner did the work at one of its operations and acknowledged it.
    Acked,
    /// The owner did not answer within the wait (idle, or it is the caller itself).
    Busy,
}

/// One CPU's claim state and request counters, on a line of its own so that one CPU's owner
/// checking its requests shares nothing with another's.
#[repr(align(128))]
struct Slot {
    state: AtomicU8,
    /// Requests made, per kind (bumped by requesters).
    asked: [AtomicU32; NR_REQUESTS],
    /// Requests served, per kind (stored by the token holder after the work).
    done: [AtomicU32; NR_REQUESTS],
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::align_of::<Slot>() >= 64 && core::mem::size_of::<Slot>().is_multiple_of(64));

/// Slots held by a set: loom models use few CPUs, and its atomics are large.
#[cfg(not(loom))]
const SLOTS: usize = MAX_CPUS;
#[cfg(loom)]
const SLOTS: usize = 4;

/// The set of CPUs of one machine and which of them are claimed.
pub struct CpuSet {
    nr: usize,
    slots: [Slot; SLOTS],
}

impl CpuSet {
    /// A set of `nr` CPUs (clamped to 1..=[`MAX_CPUS`]). Crate-private (invariant 1).
    pub(crate) fn new(nr: usize) -> Self {
        CpuSet {
            nr: nr.clamp(1, SLOTS),
            slots: core::array::from_fn(|_| Slot {
                state: AtomicU8::new(FREE),
                asked: core::array::from_fn(|_| AtomicU32::new(0)),
                done: core::array::from_fn(|_| AtomicU32::new(0)),
            }),
        }
    }

    /// Number of CPUs.
    #[inline]
    pub fn nr(&self) -> usize {
        self.nr
    }

    fn token(&self, id: usize) -> Cpu<'_> {
        Cpu { id, set: self, _not_sync: PhantomData }
    }

    /// Claims CPU `id`; `None` if it does not exist or is already claimed. A CPU borrowed for
    /// a drain is waited for (invariant 5: borrows are short).
    pub fn claim(&self, id: usize) -> Option<Cpu<'_>> {
        if id >= self.nr {
            return None;
        }
        let state = &self.slots[id].state;
        loop {
            match state.compare_exchange(FREE, OWNED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(self.token(id)),
                Err(BORROWED) => spin_hint(),
                Err(_) => return None,
            }
        }
    }

    /// Claims any free CPU.
    pub fn claim_any(&self) -> Option<Cpu<'_>> {
        (0..self.nr).find_map(|id| self.claim(id))
    }

    /// Whether CPU `id` is claimed (owned or borrowed) now.
    pub fn is_claimed(&self, id: usize) -> bool {
        id < self.nr && self.slots[id].state.load(Ordering::Relaxed) != FREE
    }

    /// Borrows CPU `id` if nobody holds it (invariant 5): a token for a remote drain, never
    /// waiting. `None` if the CPU is owned or borrowed, or does not exist.
    pub(crate) fn borrow(&self, id: usize) -> Option<Cpu<'_>> {
        if id >= self.nr {
            return None;
        }
        let state = &self.slots[id].state;
        #[cfg(all(test, loom))]
        if crate::base::sync::mutation::active(crate::base::sync::Mutation::CpuBorrowIgnoresOwner) {
            // The broken borrow the models must catch: takes the CPU whoever holds it.
            state.store(BORROWED, Ordering::Relaxed);
            return Some(self.token(id));
        }
        state.compare_exchange(FREE, BORROWED, Ordering::Acquire, Ordering::Relaxed).ok().map(|_| self.token(id))
    }

    /// Asks CPU `id`'s token holder for the work of kind `r` (invariant 6); returns the ticket
    /// that [`CpuSet::served`] answers.
    pub(crate) fn request(&self, id: usize, r: Request) -> u32 {
        self.slots[id].asked[r as usize].fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// Whether the request with `ticket` on CPU `id` was served. Acquire: the caller then sees
    /// what the work did.
    pub(crate) fn served(&self, id: usize, r: Request, ticket: u32) -> bool {
        let done = self.slots[id].done[r as usize].load(Ordering::Acquire);
        (done.wrapping_sub(ticket) as i32) >= 0
    }

    /// Runs `work` with CPU `id`'s token: at once on a borrowed token if the CPU is free;
    /// otherwise asks its owner (kind `r`) and waits up to `spins` rounds for the
    /// acknowledgement, borrowing the CPU if it becomes free meanwhile. If an earlier request
    /// is still unanswered it does not wait at all (repeated drains of an idle CPU cost one
    /// wait, not one each). A caller holding CPU
    /// `id` itself must do the work with its own token instead (it would wait for itself and
    /// get [`Remote::Busy`]).
    pub(crate) fn on_cpu(&self, id: usize, r: Request, spins: u32, mut work: impl FnMut(&Cpu<'_>)) -> Remote {
        if id >= self.nr {
            return Remote::Borrowed;
        }
        let mut ticket = None;
        for _ in 0..=spins {
            if let Some(cpu) = self.borrow(id) {
                // The owner may have served our request and left just before the borrow.
                if ticket.is_some_and(|t| self.served(id, r, t)) {
                    return Remote::Acked;
                }
                // Requests made before the borrow are served by this run of `work`.
                let asked = self.slots[id].asked[r as usize].load(Ordering::Acquire);
                work(&cpu);
                cpu.ack(r, asked);
                return Remote::Borrowed;
            }
            match ticket {
                None => {
                    // An earlier request still unanswered: the owner is not serving (idle, or
                    // waiting on the caller). Post ours for its next operation, do not wait again.
                    let slot = &self.slots[id];
                    let outstanding =
                        slot.asked[r as usize].load(Ordering::Relaxed) != slot.done[r as usize].load(Ordering::Acquire);
                    ticket = Some(self.request(id, r));
                    if outstanding {
                        return Remote::Busy;
                    }
                }
                Some(t) if self.served(id, r, t) => return Remote::Acked,
                Some(_) => spin_hint(),
            }
        }
        Remote::Busy
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

    /// The latest request of kind `r` not yet served on this CPU, if any (invariant 6): the
    /// owner calls this at each operation, does the work when it gets `Some(asked)`, then
    /// [`Cpu::ack`]s `asked`. Two loads of this CPU's own slot, no read-modify-write.
    #[inline]
    pub(crate) fn pending(&self, r: Request) -> Option<u32> {
        let slot = &self.set.slots[self.id];
        let asked = slot.asked[r as usize].load(Ordering::Acquire);
        (asked != slot.done[r as usize].load(Ordering::Relaxed)).then_some(asked)
    }

    /// Publishes that the requests of kind `r` up to `asked` are served (a release store: the
    /// requester that sees it sees the work). Only the token holder writes `done`.
    pub(crate) fn ack(&self, r: Request, asked: u32) {
        let done = &self.set.slots[self.id].done[r as usize];
        // Never move backwards past a later acknowledgement.
        if (asked.wrapping_sub(done.load(Ordering::Relaxed)) as i32) > 0 {
            done.store(asked, Ordering::Release);
        }
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
        self.set.slots[self.id].state.store(FREE, Ordering::Release);
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

    #[test]
    fn borrow_only_a_free_cpu_and_claim_waits_it_out() {
        let set = CpuSet::new(2);
        let owned = set.claim(0).unwrap();
        assert!(set.borrow(0).is_none(), "an owned CPU is never borrowed");
        let b = set.borrow(1).unwrap();
        assert!(set.is_claimed(1));
        assert!(set.borrow(1).is_none(), "one token per CPU");
        drop(b);
        assert!(!set.is_claimed(1));
        assert_eq!(set.claim_any().unwrap().id(), 1);
        drop(owned);
    }

    #[test]
    fn requests_are_served_by_the_owner_or_a_borrower() {
        let set = CpuSet::new(2);
        let owner = set.claim(0).unwrap();
        assert_eq!(owner.pending(Request::Pages), None);
        let t = set.request(0, Request::Pages);
        assert!(!set.served(0, Request::Pages, t));
        assert_eq!(owner.pending(Request::Slab), None, "kinds are separate");
        let asked = owner.pending(Request::Pages).expect("request seen by the owner");
        owner.ack(Request::Pages, asked);
        assert!(set.served(0, Request::Pages, t));
        assert_eq!(owner.pending(Request::Pages), None);
        // The owner cannot be borrowed: an unanswered request is reported busy.
        assert_eq!(set.on_cpu(0, Request::Pages, 3, |_| unreachable!("owned CPU borrowed")), Remote::Busy);
        // A free CPU is borrowed and its earlier requests are served by the borrower.
        let t1 = set.request(1, Request::Slab);
        let mut ran = 0;
        assert_eq!(set.on_cpu(1, Request::Slab, 3, |cpu| ran += cpu.id()), Remote::Borrowed);
        assert_eq!(ran, 1);
        assert!(set.served(1, Request::Slab, t1));
        assert!(!set.is_claimed(1));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::base::sync::{mutation, Mutation};
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;

    /// A stand-in for per-CPU data guarded only by the token: read-modify-write as two plain
    /// steps (a load and a store), as an owner's lock-free fast path does.
    fn bump(x: &AtomicU64) {
        let v = x.load(Ordering::Relaxed);
        x.store(v + 1, Ordering::Relaxed);
    }

    /// The owner works on its CPU's data (checking requests between operations) while another
    /// CPU runs work there through `on_cpu`. Every update survives: the token is a lock.
    fn owner_and_remote_work() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let set = Arc::new(CpuSet::new(1));
            let data = Arc::new(AtomicU64::new(0));
            let remote = {
                let (set, data) = (set.clone(), data.clone());
                loom::thread::spawn(move || set.on_cpu(0, Request::Pages, 2, |_| bump(&data)))
            };
            let mut own = 0;
            if let Some(cpu) = set.claim(0) {
                for _ in 0..2 {
                    if let Some(asked) = cpu.pending(Request::Pages) {
                        bump(&data);
                        cpu.ack(Request::Pages, asked);
                    }
                    bump(&data);
                    own += 1;
                }
            }
            let r = remote.join().unwrap();
            let remote_runs = (r != Remote::Busy) as u64;
            // A busy answer may still have been served later by nobody: only count served work.
            let total = data.load(Ordering::Relaxed);
            assert!(
                total == own + remote_runs || (r == Remote::Busy && total == own + 1),
                "an update was lost: {total} after {own} owner and {remote_runs} remote runs"
            );
        });
    }

    #[test]
    fn loom_cpu_token_is_the_lock() {
        owner_and_remote_work();
    }

    /// The same model with a borrow that ignores the owner must lose an update.
    #[test]
    #[should_panic(expected = "lost")]
    fn loom_cpu_token_is_the_lock_fails_when_borrow_ignores_owner() {
        mutation::with(Mutation::CpuBorrowIgnoresOwner, owner_and_remote_work);
    }
}
