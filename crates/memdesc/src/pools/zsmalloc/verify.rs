//! The zsmalloc consistency check: [`ZsPool::verify`] walks every class, zspage and handle
//! under the pool lock and names the first broken invariant ([`ZsCorruption`]).

use super::{ZsCorruption, ZsPool, H_ALLOC, IDX_MASK, NO_OBJ};
use crate::addr::Pfn;
use crate::desc::Zspage;
use crate::platform::Platform;
use crate::pools::zs_handle::{E_ALLOC, IDX_SHIFT, PFN_SHIFT};
use crate::sync::Ordering;
use crate::word::PageKind;

impl<'m, P: Platform> ZsPool<'m, P> {
    /// Checks the pool's invariants (tests and debugging, at any point; takes the lock):
    /// every zspage is on the list its use says (partial or full) of the class it names, names
    /// this pool, and every component page's word names it; its in-use count matches its
    /// allocated headers and its free list covers exactly the other objects; every allocated
    /// object's handle entry points back at it; and the class counters add up.
    pub fn verify(&self) -> Result<(), ZsCorruption> {
        let g = self.state().lock.lock();
        let me = self.state_addr();
        let mut live = 0u64;
        for ci in 0..g.nr_classes {
            let class = g.classes[ci];
            let (mut zspages, mut objects, mut bytes) = (0u64, 0u64, 0u64);
            for full in [false, true] {
                let list = if full { &g.lists[ci].full } else { &g.lists[ci].partial };
                for zs in list.iter() {
                    let cur = zs as *const Zspage as usize;
                    let bad = |what| ZsCorruption { class: ci, pfn: zs.flags.pfn(), what };
                    if zs.class.load(Ordering::Relaxed) as usize != ci || zs.pool.load(Ordering::Relaxed) != me {
                        return Err(bad("class or pool"));
                    }
                    for i in 0..class.pages as usize {
                        let pfn = Pfn(zs.pages[i].load(Ordering::Relaxed));
                        match self.mem.memmap().load(self.mem.platform(), pfn).map(|v| v.word.kind()) {
                            Some(PageKind::Zsmalloc(d)) if d.addr() == cur => {}
                            _ => return Err(bad("component word")),
                        }
                    }
                    if zs.flags.pfn().0 != zs.pages[0].load(Ordering::Relaxed) {
                        return Err(bad("first pfn"));
                    }
                    let inuse = zs.inuse.load(Ordering::Relaxed);
                    if full != (inuse == class.objs) || inuse == 0 {
                        return Err(bad("on the wrong list"));
                    }
                    let mut n = 0u32;
                    for idx in 0..class.objs {
                        let h = if class.huge() {
                            zs.pages[1].load(Ordering::Relaxed)
                        } else {
                            self.read_u64(zs, idx as usize * class.slot as usize)
                        };
                        if h & H_ALLOC == 0 {
                            continue;
                        }
                        n += 1;
                        let size = ((h >> 1) & 0xFFF) + 1;
                        if size as usize + class.data_off() > class.slot as usize {
                            return Err(bad("object larger than its slot"));
                        }
                        bytes += size;
                        let want = E_ALLOC | (idx as u64) << IDX_SHIFT | zs.flags.pfn().0 << PFN_SHIFT;
                        let mask = E_ALLOC | IDX_MASK << IDX_SHIFT | !0 << PFN_SHIFT;
                        if g.handles.get((h >> 13) as usize).is_none_or(|e| e & mask != want) {
                            return Err(bad("handle entry does not point back"));
                        }
                    }
                    if n != inuse {
                        return Err(bad("in-use count"));
                    }
                    let (mut free, mut f) = (0u32, zs.freelist.load(Ordering::Relaxed));
                    while f != NO_OBJ && !class.huge() {
                        let h = self.read_u64(zs, f as usize * class.slot as usize);
                        if f >= class.objs || h & H_ALLOC != 0 || free > class.objs {
                            return Err(bad("free list"));
                        }
                        free += 1;
                        f = (h >> 32) as u32;
                    }
                    if !class.huge() && free != class.objs - inuse {
                        return Err(bad("free list length"));
                    }
                    zspages += 1;
                    objects += inuse as u64;
                }
                if list.iter().count() != list.len() {
                    return Err(ZsCorruption { class: ci, pfn: Pfn(0), what: "list length" });
                }
            }
            // After a poisoning, the rebuilt headers of lost objects hold the largest size
            // their slot allows (their real size went with the page), and moving or freeing
            // them moves or subtracts that size: byte counters are then only consistent in sum
            // over the pool, not per class.
            if zspages != class.zspages || objects != class.objects || (!g.poisoned && bytes != class.bytes) {
                return Err(ZsCorruption { class: ci, pfn: Pfn(0), what: "class counters" });
            }
            live += objects;
        }
        if live != g.live_handles {
            return Err(ZsCorruption { class: 0, pfn: Pfn(0), what: "live handles" });
        }
        Ok(())
    }
}
