//! Moving a zsmalloc component page: migration for memory compaction
//! ([`zs_migrate_page`], [`zs_migrate_page_to`], reached from the pfn alone through the page's
//! word and its [`Zspage`]), retirement after a hardware memory error (`zs_poison_page`), and
//! the two page helpers z3fold shares (`take_replacement`, `page_free`).

use super::{Class, Inner, PoolRef, PoolState, ZsMigrateError, H_ALLOC, IDX_MASK, NO_OBJ, ZS_HEADER};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{pool_page_fill, pool_state, DescPtr, Zspage};
use crate::gfp::Gfp;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::pools::zs_handle::{E_ALLOC, E_LOST, IDX_SHIFT, PFN_SHIFT};
use crate::pools::{PoolHost, Pools};
use crate::rcu::RcuGuard;
use crate::sync::Ordering;
use crate::word::{PageKind, Word};

/// Takes the page that replaces pool page `pfn` (migration, or retirement after a memory
/// error) and stamps it `w`: a newly allocated movable page, or the caller's raw order-0
/// `target`. Then fills it: a copy of `pfn`, or zeroes when `pfn` is poisoned (never read).
/// A page without a direct mapping is given back (to the caller if it was theirs) and
/// refused. Shared by zsmalloc and z3fold.
///
/// Callers hold their pool's lock and have checked that no object on `pfn` is mapped, so
/// nothing else touches either page during the copy.
pub(crate) fn take_replacement<P: Platform>(
    mem: Pools<'_, P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    w: Word,
    target: Option<Pfn>,
    poison: bool,
) -> Result<Pfn, ZsMigrateError> {
    let new = match target {
        None => mem.pages().alloc_with(cpu, 0, Gfp::MOVABLE, |_| w).map_err(ZsMigrateError::NoMemory)?,
        Some(t) => {
            let rm = mem
                .pages()
                .check_and_claim(t, 0, |s| s == crate::word::Subtype::Unmappable)
                .map_err(|_| ZsMigrateError::BadTarget(t))?;
            mem.memmap().page_word(mem.platform(), rm, t).ok_or(ZsMigrateError::BadTarget(t))?.store(w);
            t
        }
    };
    if !pool_page_fill(mem.platform(), pfn, new, poison) {
        match target {
            None => page_free(mem, cpu, new),
            Some(t) => {
                let rm = mem.memmap().region_map(mem.memmap().region_index(t).expect("target"));
                mem.pages().stamp_block(
                    t,
                    0,
                    crate::page_alloc::PageAllocator::<P>::undesc_word(rm, crate::word::Subtype::Unmappable, 0),
                );
            }
        }
        return Err(ZsMigrateError::NoMemory(AllocError::NoMemory { order: 0 }));
    }
    Ok(new)
}

/// Resets a pool page's word and returns the page to the allocator (zsmalloc and z3fold).
pub(crate) fn page_free<P: Platform>(mem: Pools<'_, P>, cpu: &Cpu<'_>, pfn: Pfn) {
    mem.pages().stamp_block(pfn, 0, Word::TAIL);
    let rm = mem.memmap().region_map(mem.memmap().region_index(pfn).expect("zspage pfn"));
    mem.pages().free_claimed(cpu, rm, pfn, 0);
}

/// Migrates one zsmalloc component page to a newly allocated page, for a pfn scanner that
/// knows nothing but the pfn: the word leads to the [`Zspage`], the zspage to its pool.
/// Returns the new pfn; the old page goes back to the page allocator.
pub fn zs_migrate_page<P: Platform>(mem: &impl PoolHost<P>, cpu: &Cpu<'_>, pfn: Pfn) -> Result<Pfn, ZsMigrateError> {
    migrate(mem.pools(), cpu, pfn, None)
}

/// As [`zs_migrate_page`], to a page the caller owns (memory compaction's free scanner): an
/// order-0 block this machine handed out raw, not freed since and used by nothing else, e.g.
/// from the other end of the zone. On success the pool owns it; on error it is still the
/// caller's. Checked: a target that is not a raw order-0 allocation is refused with
/// [`ZsMigrateError::BadTarget`], and the page must still belong to the pool its word names
/// (re-checked under that pool's lock).
#[cfg(feature = "health")]
pub(crate) fn zs_migrate_page_to<P: Platform>(
    mem: &impl PoolHost<P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    target: Pfn,
) -> Result<Pfn, ZsMigrateError> {
    migrate(mem.pools(), cpu, pfn, Some(target))
}

fn migrate<P: Platform>(
    mem: Pools<'_, P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    target: Option<Pfn>,
) -> Result<Pfn, ZsMigrateError> {
    move_page(mem, cpu, pfn, target, false).map(|r| r.0)
}

/// What [`zs_poison_page`] lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ZsPoisoned {
    /// Objects with a byte on the page (marked lost).
    pub(crate) lost: u32,
    /// Objects in use in the zspage (the others stay readable).
    pub(crate) inuse: u32,
}

/// Retires the zsmalloc component page `pfn` after a hardware memory error: a fresh zeroed
/// page takes its place in the zspage, the objects with a byte on it are marked lost
/// ([`ZsError::Lost`] when mapped; they can still be freed), the headers and free list the
/// page held are rebuilt from the handle table, and the old page is stamped `HwPoison`. The
/// zspage's other objects stay readable where they are.
#[cfg(feature = "health")]
pub(crate) fn zs_poison_page<P: Platform>(
    mem: &impl PoolHost<P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
) -> Result<ZsPoisoned, ZsMigrateError> {
    move_page(mem.pools(), cpu, pfn, None, true).map(|r| r.1)
}

fn move_page<P: Platform>(
    mem: Pools<'_, P>,
    cpu: &Cpu<'_>,
    pfn: Pfn,
    target: Option<Pfn>,
    poison: bool,
) -> Result<(Pfn, ZsPoisoned), ZsMigrateError> {
    let guard = mem.rcu().read_lock(cpu);
    let v = mem.memmap().load(mem.platform(), pfn).ok_or(ZsMigrateError::OutOfRange(pfn))?;
    let PageKind::Zsmalloc(d) = v.word.kind() else { return Err(ZsMigrateError::NotZsmalloc(pfn)) };
    let pool_addr = d.get(&guard).pool.load(Ordering::Acquire);
    if pool_addr == 0 {
        return Err(ZsMigrateError::NotZsmalloc(pfn));
    }
    // The word named this zspage inside our read section, so the pool its descriptor names
    // (now: TYPESAFE_BY_RCU, it may have been reused by another pool, alive after our section
    // began) frees its state only after a grace period our guard holds off (`ZsPool::destroy`,
    // pool item P4 of `desc.rs`).
    let state = pool_state::<PoolState<'_>>(&guard, pool_addr);
    let pool = PoolRef { mem, state };
    let r = pool.migrate_locked(&guard, cpu, pfn, d, target, poison);
    drop(guard);
    r
}

impl<'m, P: Platform> PoolRef<'_, 'm, P> {
    fn migrate_locked(
        &self,
        rg: &RcuGuard<'_>,
        cpu: &Cpu<'_>,
        pfn: Pfn,
        d: DescPtr<Zspage>,
        target: Option<Pfn>,
        poison: bool,
    ) -> Result<(Pfn, ZsPoisoned), ZsMigrateError> {
        let mut g = self.state.lock.lock();
        // Re-check under the lock: still a page of this zspage of this pool?
        match self.mem.memmap().load(self.mem.platform(), pfn).map(|v| v.word.kind()) {
            Some(PageKind::Zsmalloc(d2)) if d2 == d => {}
            _ => return Err(ZsMigrateError::NotZsmalloc(pfn)),
        }
        let zs = d.get(rg);
        if zs.pool.load(Ordering::Relaxed) != self.state as *const PoolState<'_> as usize {
            return Err(ZsMigrateError::NotZsmalloc(pfn));
        }
        if zs.mapped.load(Ordering::Relaxed) != 0 {
            return Err(ZsMigrateError::Busy(pfn));
        }
        let ci = zs.class.load(Ordering::Relaxed) as usize;
        let class = g.classes[ci];
        let k = (0..class.pages as usize)
            .find(|&i| zs.pages[i].load(Ordering::Relaxed) == pfn.0)
            .ok_or(ZsMigrateError::NotZsmalloc(pfn))?;
        let new = take_replacement(self.mem, cpu, pfn, Word::desc(DescPtr::from_ref(zs)), target, poison)?;
        let first_old = zs.pages[0].load(Ordering::Relaxed);
        zs.pages[k].store(new.0, Ordering::Relaxed);
        if k == 0 {
            zs.flags.init(0, 0, new);
        }
        let mut out = ZsPoisoned { lost: 0, inuse: zs.inuse.load(Ordering::Relaxed) };
        if poison {
            self.poison_rebuild(&mut g, zs, class, k, first_old, &mut out);
        } else if k == 0 {
            // Handle entries name the first page: rewrite those of this zspage's objects.
            for i in 0..class.objs {
                let header = if class.huge() {
                    zs.pages[1].load(Ordering::Relaxed)
                } else {
                    self.read_u64(zs, i as usize * class.slot as usize)
                };
                if header & H_ALLOC != 0 {
                    let e = g.handles.get_mut((header >> 13) as usize).expect("live object's handle");
                    *e = (*e & ((1 << PFN_SHIFT) - 1)) | new.0 << PFN_SHIFT;
                }
            }
        }
        if poison {
            self.mem.pages().retire_poisoned_block(pfn, 0);
        } else {
            page_free(self.mem, cpu, pfn);
        }
        Ok((new, out))
    }

    /// After page `k` of `zs` was replaced by a zeroed page: finds the zspage's objects in
    /// the handle table (the headers on the lost page are gone, so the table is scanned),
    /// marks those with a byte on page `k` lost, rewrites the entries' pfn if `k` is the
    /// first page, rebuilds the headers that lived on page `k` (size unknown: the class's
    /// largest) and the whole free list.
    fn poison_rebuild(
        &self,
        g: &mut Inner<'m>,
        zs: &Zspage,
        class: Class,
        k: usize,
        first_old: u64,
        out: &mut ZsPoisoned,
    ) {
        g.poisoned = true;
        let first_new = zs.pages[0].load(Ordering::Relaxed);
        let slot = class.slot as usize;
        let page = (k * PAGE_SIZE)..((k + 1) * PAGE_SIZE);
        let mut used = [0u64; (IDX_MASK as usize + 1) / 64];
        for i in 0..g.handles.len {
            let Some(e) = g.handles.get_mut(i) else { continue };
            if *e & E_ALLOC == 0 || *e >> PFN_SHIFT != first_old {
                continue;
            }
            let idx = ((*e >> IDX_SHIFT) & IDX_MASK) as usize;
            used[idx / 64] |= 1 << (idx % 64);
            *e = (*e & ((1 << PFN_SHIFT) - 1)) | first_new << PFN_SHIFT;
            let (lo, hi) = if class.huge() { (0, PAGE_SIZE) } else { (idx * slot, idx * slot + slot) };
            if lo < page.end && page.start < hi {
                *e |= E_LOST;
                out.lost += 1;
            }
            if !class.huge() && page.contains(&(idx * slot)) {
                let header = H_ALLOC | ((slot - ZS_HEADER - 1) as u64) << 1 | (i as u64) << 13;
                self.write_u64(zs, idx * slot, header);
            }
        }
        if class.huge() {
            return; // its header lives in the descriptor; no free list to rebuild
        }
        let mut head = NO_OBJ;
        for idx in (0..class.objs as usize).rev() {
            if used[idx / 64] & 1 << (idx % 64) == 0 {
                self.write_u64(zs, idx * slot, (head as u64) << 32);
                head = idx as u32;
            }
        }
        zs.freelist.store(head, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom), feature = "health"))]
mod tests {
    use super::*;
    use crate::base::layout::MemmapLayout;
    use crate::machine::test_machine::machine;
    use crate::pools::zsmalloc::ZsPool;

    #[test]
    fn a_target_must_be_a_raw_order0_allocation() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let pool = ZsPool::new(&m, &cpu).unwrap();
        let h = pool.malloc(&cpu, 100).unwrap();
        pool.map_write(&cpu, &h).unwrap().copy_from_slice(&[5; 100]);
        let mut out = [Pfn(0); 8];
        pool.pages_of(&h, &mut out).unwrap();
        let old = out[0];
        // A pool page is no raw order-0 allocation: refused before anything changes.
        assert_eq!(zs_migrate_page_to(&m, &cpu, old, old), Err(ZsMigrateError::BadTarget(old)));
        assert_eq!(pool.verify(), Ok(()));
        // A raw order-0 allocation of ours becomes the zspage's page.
        let t = m.alloc_pages_raw(&cpu, 0, Gfp::MOVABLE).unwrap();
        assert_eq!(zs_migrate_page_to(&m, &cpu, old, t), Ok(t));
        pool.pages_of(&h, &mut out).unwrap();
        assert_eq!(out[0], t);
        assert_eq!(&pool.map_read(&cpu, &h).unwrap()[..], &[5; 100]);
        assert_eq!(pool.verify(), Ok(()));
        pool.free(&cpu, h).unwrap();
        pool.destroy(&cpu);
    }
}
