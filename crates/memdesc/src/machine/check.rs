//! The invariant checker: at a quiescent point (no allocation or free in flight), verifies
//! that the allocator's state is consistent and reports every free block, so a test can check
//! that every pfn is free exactly once or allocated exactly once.
//!
//! Checked: every free-list block has a `Buddy` head word of its order and migratetype and
//! tail words behind it; list links are consistent both ways; no two free buddies are left
//! unmerged; list counts and free-page counts agree; per-CPU pages carry `Buddy { pcp }`
//! words and their counts agree; every split two-level area's free count is right, and no
//! carved area is entirely free (it would have been made uniform again).
//!
//! [`PhysMem::check_descriptors`] walks every pfn (slower; for torture runs and tests at their
//! end): every word that points to a slab, folio, page-table, vmalloc, page_pool, mappable or
//! z3fold descriptor lies inside the range the descriptor says it covers, and every word of
//! that range points to it, so each descriptor's page count equals the words pointing to it; a
//! folio or mappable block reachable from a word has a reference, a netmem its pool. zsmalloc
//! pages are not one block: `ZsPool::verify` checks them against their zspage.

use core::fmt;

use crate::base::addr::{Pfn, AREA_ORDER, AREA_PAGES};
use crate::base::cpu::Cpu;
use crate::base::layout::MemmapLayout;
use crate::base::page_access::PageWords;
use crate::base::pageblock::{MigrateType, NR_PCP_TYPES};
use crate::base::platform::Platform;
use crate::memmap::kinds::{kind_of_word, BlockClass, BlockState};
use crate::memmap::word::{PageKind, Subtype, Word};
use crate::page_alloc::pcp::PCP_MAX_ORDER;
use crate::page_alloc::zone::{links_in_words, NONE};
use crate::page_alloc::MAX_ZONE_SLOTS;
use crate::PhysMem;

/// What the checker found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A block on a free list whose head word is not the matching `Buddy` word.
    BadHead {
        /// Block head.
        pfn: Pfn,
        /// Its order.
        order: u32,
        /// The word found.
        word: u64,
    },
    /// A tail page of a free block without a tail word.
    BadTail(Pfn),
    /// A list's back link does not point to the previous block.
    BrokenLink(Pfn),
    /// Two free buddies of one order that should have merged.
    Unmerged(Pfn, u32),
    /// A free-list count disagrees with the blocks on the list.
    CountMismatch {
        /// Zone node.
        node: u16,
        /// What disagrees.
        what: &'static str,
        /// Counted.
        counted: u64,
        /// Recorded.
        recorded: u64,
    },
    /// A split area whose free count disagrees with its free blocks.
    AreaFreeCount(Pfn),
    /// A carved area whose pages are all free but which is still split.
    UniformSplit(Pfn),
    /// A word points to a descriptor whose range does not cover the page, or a page of a
    /// descriptor's range does not point to it: its page count differs from its words.
    DescriptorRange {
        /// The page.
        pfn: Pfn,
        /// The descriptor's first pfn.
        desc_pfn: Pfn,
        /// The descriptor's order.
        order: u32,
    },
    /// A descriptor reachable from a page word is in a state no live one has (a folio with no
    /// reference, a slab with more objects in use than it holds).
    DeadDescriptor {
        /// The page.
        pfn: Pfn,
        /// What is wrong.
        what: &'static str,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Totals from a successful [`PhysMem::check_descriptors`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescReport {
    /// Slab descriptors found (by their first page).
    pub slabs: u64,
    /// Folio descriptors found.
    pub folios: u64,
    /// Pages covered by slabs.
    pub slab_pages: u64,
    /// Pages covered by folios.
    pub folio_pages: u64,
    /// Page-table, vmalloc, page_pool, mappable and z3fold descriptors found (one aligned
    /// block each).
    pub others: u64,
    /// Pages covered by them.
    pub other_pages: u64,
}

/// Totals from a successful check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Pages in free blocks on the buddy lists.
    pub buddy_free_pages: u64,
    /// Pages on per-CPU lists.
    pub pcp_pages: u64,
    /// Free blocks on the buddy lists.
    pub free_blocks: u64,
    /// Split two-level areas (each uses one managed page as its table).
    pub split_areas: u64,
}

/// Every present page classified by its word, each counted exactly once (a block's pages are
/// counted at its head word; its tail words must add up to exactly the blocks' other pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Pages in free blocks on the buddy lists.
    pub free: u64,
    /// Pages in free blocks on per-CPU lists.
    pub pcp: u64,
    /// Reserved pages.
    pub reserved: u64,
    /// Hardware-poisoned pages.
    pub hwpoison: u64,
    /// Offline pages (balloon and offlined ranges).
    pub offline: u64,
    /// Guard pages.
    pub guard: u64,
    /// Pages holding memmap words (split two-level tables).
    pub memmap: u64,
    /// Raw page-allocator memory (unmappable, large kmalloc, the zero page).
    pub raw: u64,
    /// Pages whose word points to a descriptor (folios, slabs, page tables, …).
    pub described: u64,
    /// Present pages (the sum of all of the above).
    pub present: u64,
}

impl<P: Platform> PhysMem<P> {
    /// Classifies every present page by its word at a quiescent point, counting each page
    /// exactly once; fails if tail words do not match the blocks that claim them, if a word
    /// is invalid or uninitialised, or if the classes do not add up to the present pages.
    pub fn census(&self) -> Result<Census, Violation> {
        let mut c = Census::default();
        let (mut tails, mut expected_tails, mut bad) = (0u64, 0u64, None);
        for r in self.memmap().regions() {
            c.present += r.pages();
            self.memmap().walk(self.platform(), r.start, r.end, |v| {
                let n = 1u64 << v.span_order;
                let block = |order: u8| (1u64 << order).max(n);
                match v.word.kind() {
                    PageKind::Buddy(b) => {
                        let pages = block(b.order);
                        expected_tails += pages - n;
                        if b.pcp {
                            c.pcp += pages;
                        } else {
                            c.free += pages;
                        }
                    }
                    PageKind::Undescribed(u) => {
                        // A guard word's order names the block it guards, not its own size.
                        let pages = if u.subtype == Subtype::Guard { n } else { block(u.order) };
                        let slot = match u.subtype {
                            Subtype::Tail => {
                                tails += n;
                                return;
                            }
                            Subtype::Uninit => {
                                bad.get_or_insert(v.first);
                                return;
                            }
                            Subtype::Reserved => &mut c.reserved,
                            Subtype::HwPoison => &mut c.hwpoison,
                            Subtype::Offline => &mut c.offline,
                            Subtype::Guard => &mut c.guard,
                            Subtype::Memmap => &mut c.memmap,
                            Subtype::ZeroPage | Subtype::LargeKmalloc | Subtype::Unmappable | Subtype::Internal => {
                                &mut c.raw
                            }
                        };
                        *slot += pages;
                        expected_tails += pages - n;
                    }
                    PageKind::Invalid(_) | PageKind::Split(_) => {
                        bad.get_or_insert(v.first);
                    }
                    _ => c.described += n,
                }
            });
        }
        if let Some(p) = bad {
            return Err(Violation::BadTail(p));
        }
        if tails != expected_tails {
            return Err(Violation::CountMismatch {
                node: 0,
                what: "tail words",
                counted: tails,
                recorded: expected_tails,
            });
        }
        let sum = c.free + c.pcp + c.reserved + c.hwpoison + c.offline + c.guard + c.memmap + c.raw + c.described;
        if sum != c.present {
            return Err(Violation::CountMismatch { node: 0, what: "census", counted: sum, recorded: c.present });
        }
        Ok(c)
    }

    /// Checks the allocator at a quiescent point; calls `on_free(pfn, order, on_pcp)` for every
    /// free block.
    pub fn check(&self, mut on_free: impl FnMut(Pfn, u32, bool)) -> Result<CheckReport, Violation> {
        let mut rep = CheckReport { split_areas: self.memmap().split_areas(), ..CheckReport::default() };
        for zone in self.zones() {
            let fl = zone.lock.lock();
            let mut pages = 0u64;
            for order in 0..=self.config().max_order {
                for mt in MigrateType::ALL {
                    let mut prev = NONE;
                    let mut cur = fl.areas[order as usize].head[mt as usize];
                    let mut n = 0;
                    while cur != NONE {
                        let pfn = Pfn(cur);
                        // The block must be mappable and in a region before its links are read
                        // (they are in its tail words or in its memory, see `Buddy::links`).
                        let rm = self.memmap().region_index(pfn).map(|i| self.memmap().region_map(i));
                        let (Some(rm), Some(_)) = (rm, PageWords::new(self.platform(), pfn)) else {
                            return Err(Violation::BrokenLink(pfn));
                        };
                        self.check_free_block(pfn, order, mt, false)?;
                        let (next, back) = self.pages().buddy().links(rm, pfn, order);
                        // A list head's previous link is never read, so it is not checked.
                        if prev != NONE && back != prev {
                            return Err(Violation::BrokenLink(pfn));
                        }
                        on_free(pfn, order, false);
                        n += 1;
                        pages += 1 << order;
                        prev = cur;
                        cur = next;
                        if n > (1 << 40) {
                            return Err(Violation::BrokenLink(pfn));
                        }
                    }
                    let recorded = fl.areas[order as usize].nr[mt as usize];
                    if n != recorded {
                        return Err(Violation::CountMismatch {
                            node: zone.node,
                            what: "free-list length",
                            counted: n,
                            recorded,
                        });
                    }
                    rep.free_blocks += n;
                }
            }
            if pages != fl.free_pages || pages != zone.free_pages() {
                return Err(Violation::CountMismatch {
                    node: zone.node,
                    what: "zone free pages",
                    counted: pages,
                    recorded: fl.free_pages,
                });
            }
            rep.buddy_free_pages += pages;
        }
        let links = self.pages().pcp_links();
        for cpu in 0..self.cpus().nr() {
            for slot in 0..MAX_ZONE_SLOTS {
                if self.pages().zone_at(slot).is_none() {
                    continue;
                }
                // Exact on a borrowed token; a CPU held by a thread is read as it stands (the
                // lists are atomics, pcp.rs invariant 1), exact while its owner is quiescent.
                let _borrowed = self.cpus().borrow(cpu);
                let l = self.pages().pcp_at(cpu, slot);
                let mut pages = 0u64;
                for order in 0..=PCP_MAX_ORDER {
                    for mt in 0..NR_PCP_TYPES {
                        let mut cur = l.head_of(order, mt);
                        let mut n = 0;
                        while cur != NONE {
                            let pfn = Pfn(cur);
                            let mtype = MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable);
                            self.check_free_block(pfn, order, mtype, true)?;
                            on_free(pfn, order, true);
                            pages += 1 << order;
                            n += 1;
                            cur = crate::page_alloc::pcp::PcpLinks::next(&links, cur);
                        }
                        if n != l.count(order, mt) as u64 {
                            return Err(Violation::CountMismatch {
                                node: 0,
                                what: "pcp list length",
                                counted: n,
                                recorded: l.count(order, mt) as u64,
                            });
                        }
                    }
                }
                if pages != l.pages() as u64 {
                    return Err(Violation::CountMismatch {
                        node: 0,
                        what: "pcp pages",
                        counted: pages,
                        recorded: l.pages() as u64,
                    });
                }
                rep.pcp_pages += pages;
                // Free pages in the CPU's areas (order-0 per-CPU words) and blocks on its remote
                // list (per-CPU head words), each once.
                let mut bad = Ok(());
                let counted = self.pages().area_free_pages(cpu, slot, |pfn, order, mt| {
                    let mtype = MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable);
                    if bad.is_ok() {
                        bad = self.check_free_block(Pfn(pfn), order, mtype, true);
                        on_free(Pfn(pfn), order, true);
                    }
                });
                bad?;
                match counted {
                    Ok(n) => rep.pcp_pages += n,
                    Err((counted, recorded)) => {
                        return Err(Violation::CountMismatch { node: 0, what: "area free pages", counted, recorded })
                    }
                }
            }
        }
        self.check_areas()?;
        Ok(rep)
    }

    /// Checks every block descriptor (slab, folio and the other kinds in the module docs)
    /// against the words that point to it, at a quiescent point. The descriptors are read
    /// under an RCU read section on `cpu`; what each kind's check reads is its entry in
    /// `memmap::kinds`.
    pub fn check_descriptors(&self, cpu: &Cpu<'_>) -> Result<DescReport, Violation> {
        let rcu = self.rcu().read_lock(cpu);
        let mut rep = DescReport::default();
        for r in self.memmap().regions() {
            let mut pfn = r.start;
            while pfn < r.end {
                let Some(v) = self.memmap().load(self.platform(), pfn) else { break };
                let next = v.first.add(1 << v.span_order);
                // Words that name no descriptor are the allocator's: `check` covers them.
                let Some(kind) = kind_of_word(v.word) else {
                    pfn = next;
                    continue;
                };
                // (desc address, its DescFlags) for the kinds whose pages are one aligned block.
                let (addr, flags) = match (kind.block)(&rcu, v.word) {
                    BlockState::Live { addr, flags } => (addr, flags),
                    BlockState::Dead(what) => return Err(Violation::DeadDescriptor { pfn, what }),
                    BlockState::NotABlock => {
                        pfn = next;
                        continue;
                    }
                };
                let (dpfn, order) = (flags.pfn(), flags.order());
                let bad = Violation::DescriptorRange { pfn, desc_pfn: dpfn, order };
                if order > self.config().max_order || pfn < dpfn || pfn >= dpfn.add(1 << order) {
                    return Err(bad);
                }
                if pfn == dpfn {
                    // Every page of the range points to this descriptor.
                    let mut p = pfn;
                    while p < pfn.add(1 << order) {
                        let w = self.memmap().load(self.platform(), p).ok_or(bad)?;
                        let same = w.word.desc_addr() == Some(addr);
                        if !same || w.word.tag() != v.word.tag() {
                            return Err(Violation::DescriptorRange { pfn: p, desc_pfn: dpfn, order });
                        }
                        p = w.first.add(1 << w.span_order);
                    }
                    let (n, pages) = match kind.class {
                        BlockClass::Slab => (&mut rep.slabs, &mut rep.slab_pages),
                        BlockClass::Folio => (&mut rep.folios, &mut rep.folio_pages),
                        BlockClass::Other => (&mut rep.others, &mut rep.other_pages),
                    };
                    *n += 1;
                    *pages += 1 << order;
                }
                pfn = next;
            }
        }
        Ok(rep)
    }

    fn check_free_block(&self, pfn: Pfn, order: u32, mt: MigrateType, pcp: bool) -> Result<(), Violation> {
        let rm = self.memmap().region_index(pfn).map(|i| self.memmap().region_map(i)).ok_or(Violation::BadHead {
            pfn,
            order,
            word: 0,
        })?;
        let bad = |w: u64| Violation::BadHead { pfn, order, word: w };
        let head = self.memmap().block_word(self.platform(), rm, pfn, order).ok_or(bad(0))?.load();
        match head.kind() {
            PageKind::Buddy(b) if b.order as u32 == order && b.migratetype == mt as u8 && b.pcp == pcp => {}
            _ => return Err(bad(head.raw())),
        }
        if pfn.add(1 << order) > rm.region.end {
            return Err(bad(head.raw()));
        }
        let big = rm.region.layout == MemmapLayout::TwoLevel && order >= AREA_ORDER;
        let step = if big { AREA_PAGES } else { 1 };
        // Only the second and third words of a block on a buddy list may carry its links; every
        // other tail (and every tail of a per-CPU block) is the plain tail word.
        let linked = !pcp && links_in_words(rm.region.layout, order);
        let mut p = pfn.add(step);
        while p < pfn.add(1 << order) {
            let w = if big { Some(rm.area_word(p)) } else { self.memmap().page_word(self.platform(), rm, p) };
            let ok = |w: Word| if linked && p.0 - pfn.0 <= 2 { w.is_tail() } else { w == Word::TAIL };
            if !w.is_some_and(|w| ok(w.load())) {
                return Err(Violation::BadTail(p));
            }
            p = p.add(step);
        }
        if pcp {
            return Ok(());
        }
        let limit = if rm.region.layout == MemmapLayout::TwoLevel && order < AREA_ORDER {
            AREA_ORDER - 1
        } else {
            self.config().max_order
        };
        let b = pfn.buddy(order);
        if order < limit && b >= rm.region.start && b.add(1 << order) <= rm.region.end {
            if let Some(bw) = self.memmap().block_word(self.platform(), rm, b, order) {
                if let PageKind::Buddy(bi) = bw.load().kind() {
                    let iso = |m: u8| m == MigrateType::Isolate as u8;
                    if bi.order as u32 == order && !bi.pcp && iso(bi.migratetype) == (mt == MigrateType::Isolate) {
                        return Err(Violation::Unmerged(pfn.min(b), order));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_areas(&self) -> Result<(), Violation> {
        for ri in 0..self.memmap().regions().count() {
            let rm = self.memmap().region_map(ri);
            if rm.region.layout != MemmapLayout::TwoLevel {
                continue;
            }
            let mut area = rm.region.start;
            while area < rm.region.end {
                if let PageKind::Split(s) = rm.area_word(area).load().kind() {
                    let table =
                        self.memmap().table(self.platform(), s.table_pfn).ok_or(Violation::AreaFreeCount(area))?;
                    let mut free = 0u64;
                    let mut i = 0u64;
                    while i < AREA_PAGES {
                        match table[i as usize].load().kind() {
                            PageKind::Buddy(b) if !b.pcp => {
                                free += 1 << b.order;
                                i += 1 << b.order;
                            }
                            _ => i += 1,
                        }
                    }
                    if free != s.free as u64 {
                        return Err(Violation::AreaFreeCount(area));
                    }
                    if s.table_pfn == area.0 && free == AREA_PAGES - 1 {
                        return Err(Violation::UniformSplit(area));
                    }
                    let outside = s.table_pfn < area.0 || s.table_pfn >= area.0 + AREA_PAGES;
                    if outside && free == AREA_PAGES {
                        return Err(Violation::UniformSplit(area));
                    }
                }
                area = area.add(AREA_PAGES);
            }
        }
        Ok(())
    }
}
