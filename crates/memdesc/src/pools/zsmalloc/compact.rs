//! zsmalloc compaction: [`ZsPool::compact`] (see "Compaction" in [`super`]). Runs under the
//! pool lock, one class per hold, and never moves an object of a zspage with a mapping.

use super::{link, unlink, Inner, Loc, ZsCompactStats, ZsPool, H_ALLOC, ZS_HEADER};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Zspage};
use crate::platform::Platform;
use crate::pools::zs_handle::{E_ALLOC, E_LOST, E_MAPPED, GEN_MASK, IDX_SHIFT, PFN_SHIFT};
use crate::rcu::RcuGuard;
use crate::sync::Ordering;

impl<'m, P: Platform> ZsPool<'m, P> {
    /// Moves objects out of the sparsest zspages of each class into the fullest ones, then
    /// empties each class's last sparse zspage into larger classes' free slots, and frees the
    /// zspages it empties (see the module docs). Zspages with mapped objects are left alone.
    pub fn compact(&self, cpu: &Cpu<'_>) -> ZsCompactStats {
        let mut st = ZsCompactStats::default();
        let n = self.state().lock.lock().nr_classes;
        for ci in 0..n {
            // One class per hold of the lock, so mappers wait at most one class.
            let rg = self.mem.rcu().read_lock(cpu);
            let mut g = self.state().lock.lock();
            self.compact_class(cpu, &rg, &mut g, ci, &mut st);
        }
        // Then, smallest class first, empty each class's last sparse zspage into larger
        // classes' free slots.
        for ci in (0..n).rev() {
            let rg = self.mem.rcu().read_lock(cpu);
            let mut g = self.state().lock.lock();
            self.spill_class(cpu, &rg, &mut g, ci, &mut st);
        }
        st
    }

    fn compact_class(&self, cpu: &Cpu<'_>, rg: &RcuGuard<'_>, g: &mut Inner<'m>, ci: usize, st: &mut ZsCompactStats) {
        let class = g.classes[ci];
        if class.huge() {
            return;
        }
        loop {
            // Source: the least used unmapped partial zspage (not already tried).
            let (mut src, mut free_total) = (None::<&Zspage>, 0u64);
            for z in g.lists[ci].partial.iter() {
                free_total += (class.objs - z.inuse.load(Ordering::Relaxed)) as u64;
                let better = src.is_none_or(|s| z.inuse.load(Ordering::Relaxed) < s.inuse.load(Ordering::Relaxed));
                if z.mapped.load(Ordering::Relaxed) == 0 && better {
                    src = Some(z);
                }
            }
            let Some(src) = src.map(|z| held(rg, z)) else { return };
            let src_in = src.inuse.load(Ordering::Relaxed) as u64;
            let room = free_total - (class.objs as u64 - src_in);
            if room < src_in {
                return;
            }
            // Enough room elsewhere: move every object, and the last move frees `src` (so it
            // is not read after that).
            for _ in 0..src_in {
                // Destination: the fullest other partial zspage.
                let mut dst = None::<&Zspage>;
                for z in g.lists[ci].partial.iter() {
                    let better = dst.is_none_or(|d| z.inuse.load(Ordering::Relaxed) > d.inuse.load(Ordering::Relaxed));
                    if !core::ptr::eq(z, src) && better {
                        dst = Some(z);
                    }
                }
                let dst = held(rg, dst.expect("room was counted in other partial zspages"));
                self.move_one(cpu, g, ci, src, ci, dst);
                st.objects_moved += 1;
            }
            st.pages_freed += class.pages as u64;
        }
    }

    /// Moves one allocated object of `src` into a free slot of `dst` (same class).
    fn move_one(&self, cpu: &Cpu<'_>, g: &mut Inner<'m>, ci: usize, src: &Zspage, cj: usize, dst: &Zspage) {
        let (class, dclass) = (g.classes[ci], g.classes[cj]);
        let slot = class.slot as usize;
        let idx = (0..class.objs)
            .find(|&i| self.read_u64(src, i as usize * slot) & H_ALLOC != 0)
            .expect("a zspage with inuse > 0 has an allocated object");
        let header = self.read_u64(src, idx as usize * slot);
        let size = ((header >> 1) & 0xFFF) as usize + 1;
        let hidx = (header >> 13) as usize;
        // Take a slot in dst.
        let didx = dst.freelist.load(Ordering::Relaxed);
        let doff = didx as usize * dclass.slot as usize;
        let next = (self.read_u64(dst, doff) >> 32) as u32;
        dst.freelist.store(next, Ordering::Relaxed);
        let mut buf = [0u8; 256];
        let mut done = 0;
        let total = ZS_HEADER + size;
        while done < total {
            let n = (total - done).min(buf.len());
            self.copy_out(src, idx as usize * slot + done, &mut buf[..n]);
            self.copy_in(dst, doff + done, &buf[..n]);
            done += n;
        }
        let dinuse = dst.inuse.load(Ordering::Relaxed) + 1;
        dst.inuse.store(dinuse, Ordering::Relaxed);
        if dinuse == dclass.objs {
            let l = &mut g.lists[cj];
            unlink(&mut l.partial, dst);
            link(&mut l.full, dst);
        }
        let e = g.handles.get_mut(hidx).expect("moved object's handle");
        let keep = *e & (E_ALLOC | E_MAPPED | E_LOST | GEN_MASK << 2);
        *e = keep | (didx as u64) << IDX_SHIFT | dst.flags.pfn().0 << PFN_SHIFT;
        g.classes[cj].objects += 1;
        g.classes[cj].bytes += size as u64;
        // Release the source slot (this frees src when it empties).
        self.obj_release(cpu, g, src, Loc { zs: DescPtr::from_ref(src), idx, class: ci, size });
    }

    /// After per-class compaction a class is left with at most one partial zspage (unless
    /// some are mapped). Its objects fit the free slots of *larger* classes' partial zspages
    /// (a slot holds any object up to its size): when those have room for all of them, move
    /// them there and free the zspage. Pool pages only go down (the free slots were pool
    /// pages already); objects only move to larger classes, so this terminates.
    fn spill_class(&self, cpu: &Cpu<'_>, rg: &RcuGuard<'_>, g: &mut Inner<'m>, ci: usize, st: &mut ZsCompactStats) {
        let class = g.classes[ci];
        if class.huge() {
            return;
        }
        // The least used unmapped partial zspage of this class.
        let mut src = None::<&Zspage>;
        for z in g.lists[ci].partial.iter() {
            let better = src.is_none_or(|s| z.inuse.load(Ordering::Relaxed) < s.inuse.load(Ordering::Relaxed));
            if z.mapped.load(Ordering::Relaxed) == 0 && better {
                src = Some(z);
            }
        }
        let Some(src) = src.map(|z| held(rg, z)) else { return };
        let n = src.inuse.load(Ordering::Relaxed) as u64;
        // Larger classes have smaller indices (the table is built from the largest slot).
        let room: u64 = (0..ci)
            .filter(|&cj| !g.classes[cj].huge())
            .map(|cj| {
                let objs = g.classes[cj].objs;
                g.lists[cj].partial.iter().map(|z| (objs - z.inuse.load(Ordering::Relaxed)) as u64).sum::<u64>()
            })
            .sum();
        if room < n {
            return;
        }
        for _ in 0..n {
            // The smallest larger class with a partial zspage, and its fullest one.
            let cj = (0..ci).rev().find(|&cj| !g.classes[cj].huge() && !g.lists[cj].partial.is_empty());
            let cj = cj.expect("room was counted in larger classes' partial zspages");
            let mut dst = None::<&Zspage>;
            for z in g.lists[cj].partial.iter() {
                if dst.is_none_or(|d| z.inuse.load(Ordering::Relaxed) > d.inuse.load(Ordering::Relaxed)) {
                    dst = Some(z);
                }
            }
            let dst = held(rg, dst.expect("a partial zspage"));
            self.move_one(cpu, g, ci, src, cj, dst);
            st.objects_moved += 1;
        }
        st.pages_freed += class.pages as u64;
    }
}

/// A zspage found on a class list, for the read section `rg` instead of the list's borrow (so
/// the pool state can change while it is used; descriptors are type-stable under RCU, and the
/// pool lock keeps it the pool's).
fn held<'g>(rg: &'g RcuGuard<'_>, z: &Zspage) -> &'g Zspage {
    DescPtr::from_ref(z).get(rg)
}
