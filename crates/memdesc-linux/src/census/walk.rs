//! The walk: one pass over the zones' pfns, area by area, classifying each counted pfn,
//! closing descriptor groups (compound runs) and runs of one kind, reconstructing free blocks
//! and tallying the 2 MiB areas — [`census`], [`census_runs`] and [`Census::from_snapshot`].

use super::buddy::{bump, ceil_log2, decompose, detect_buddy_mode};
use super::kind::{base_kind, blank, Kind, KindCounts};
use super::options::{BuddyMode, CensusOptions, MAX_ORDER_LIMIT};
use super::report::{AreaCensus, Census, AREA_PAGES};
use super::zones::{label_absent, merged_spans, Absent};
use crate::kpf::*;
use crate::snapshot::{KpageSnapshot, Snapshot};
use crate::tables::ZoneInfo;

#[derive(Clone, Copy)]
struct Group {
    kind: Kind,
    start: u64,
    len: u64,
    mapped: bool,
    id: u64,
}

/// Per-area accumulator.
struct Area {
    counts: [u32; Kind::COUNT],
    free: u32,
    unavailable: u32,
    folio: Option<u64>,
    folio_pages: u32,
}

impl Area {
    fn new() -> Self {
        Area { counts: [0; Kind::COUNT], free: 0, unavailable: 0, folio: None, folio_pages: 0 }
    }
}

/// A run of counted pfns handed to the visitor of [`census_runs`]: one descriptor group (a
/// folio, a slab, a page-table page, a compound or single page of other kernel memory, the
/// zero page), or a maximal run of one non-grouped kind (free, reserved, hole, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First pfn.
    pub start: u64,
    /// Pfns in the run.
    pub len: u64,
    /// What they are.
    pub kind: Kind,
}

struct Walker<'a> {
    sink: &'a mut dyn FnMut(Run),
    plain: Option<Run>,
    kpage: &'a KpageSnapshot,
    opts: CensusOptions,
    c: Census,
    group: Option<Group>,
    next_group_id: u64,
    free_until: u64,
    buddy_run_start: Option<u64>,
    area: Area,
    cache: Vec<Option<Kind>>,
}

impl Walker<'_> {
    fn close_plain(&mut self) {
        if let Some(r) = self.plain.take() {
            (self.sink)(r);
        }
    }

    fn close_group(&mut self) {
        let Some(g) = self.group.take() else { return };
        (self.sink)(Run { start: g.start, len: g.len, kind: g.kind });
        let order = ceil_log2(g.len);
        if !g.len.is_power_of_two() {
            self.c.irregular_groups += 1;
        }
        match g.kind {
            Kind::Slab => bump(&mut self.c.slabs_by_order, order),
            Kind::PageTable => self.c.page_tables += 1,
            Kind::Anon => {
                bump(&mut self.c.folios_by_order, order);
                bump(&mut self.c.anon_folios_by_order, order);
            }
            Kind::File => {
                bump(&mut self.c.folios_by_order, order);
                bump(&mut self.c.file_folios_by_order, order);
            }
            Kind::Other => {
                self.c.other_groups += 1;
                if g.mapped {
                    self.c.other_mapped_groups += 1;
                }
            }
            _ => {}
        }
    }

    fn end_buddy_run(&mut self, pfn: u64) {
        if let Some(s) = self.buddy_run_start.take() {
            decompose(s, pfn, self.opts.max_buddy_order, &mut self.c.free_blocks_by_order);
        }
    }

    /// Head-only mode: the order of the free block starting at `p` (see the
    /// [census documentation](mod@crate::census)).
    fn head_only_block(&self, p: u64, zone_end: u64, absent: &[Absent], ai: usize) -> u32 {
        let mut k = self.opts.max_buddy_order.min(if p == 0 { 63 } else { p.trailing_zeros() });
        // Blank pfns after p, up to the largest candidate block.
        let limit = p.saturating_add(1u64 << k).min(zone_end);
        let next_absent = absent.get(ai..).and_then(|a| a.iter().find(|a| a.end > p)).map(|a| a.start);
        let limit = match next_absent {
            Some(a) if a > p => limit.min(a),
            _ => limit,
        };
        let mut q = p + 1;
        while q < limit && blank(self.kpage.flags(q), self.kpage.count(q).min(255) as u8) {
            q += 1;
        }
        let run = q - p; // pages usable for the block, head included
        while k > 0 && (1u64 << k) > run {
            k -= 1;
        }
        k
    }

    fn end_area(&mut self) {
        let a = std::mem::replace(&mut self.area, Area::new());
        let areas = &mut self.c.areas;
        areas.total += 1;
        let n = AREA_PAGES as u32;
        if a.free == n {
            areas.uniform_free += 1;
        } else if a.unavailable == n {
            areas.uniform_unavailable += 1;
        } else if a.folio.is_some() && a.folio_pages == n {
            areas.uniform_folio += 1;
        } else {
            areas.split += 1;
            for k in Kind::ALL {
                areas.split_pages[k] += a.counts[k as usize] as u64;
            }
        }
    }

    /// An uncounted pfn (outside zones, NOPAGE, beyond the file): unavailable.
    fn uncounted(&mut self) {
        self.close_group();
        self.close_plain();
        self.area.unavailable += 1;
    }

    fn counted(&mut self, pfn: u64, kind: Kind, tail: bool, mapped: bool) {
        let mut kind = kind;
        if kind.grouped() {
            self.close_plain();
            let cont = match self.group {
                Some(g) if tail => g.kind == kind || (kind == Kind::Other && matches!(g.kind, Kind::Anon | Kind::File)),
                _ => false,
            };
            if cont {
                if let Some(g) = self.group.as_mut() {
                    kind = g.kind;
                    g.len += 1;
                    g.mapped |= mapped;
                }
            } else {
                self.close_group();
                self.group = Some(Group { kind, start: pfn, len: 1, mapped, id: self.next_group_id });
                self.next_group_id += 1;
            }
        } else {
            self.close_group();
            match self.plain.as_mut() {
                Some(r) if r.kind == kind && r.start + r.len == pfn => r.len += 1,
                _ => {
                    self.close_plain();
                    self.plain = Some(Run { start: pfn, len: 1, kind });
                }
            }
        }
        self.c.pages[kind] += 1;
        self.area.counts[kind as usize] += 1;
        if kind == Kind::Free {
            self.area.free += 1;
        } else if kind.unavailable() {
            self.area.unavailable += 1;
        } else if matches!(kind, Kind::Anon | Kind::File) {
            if let Some(g) = self.group {
                match self.area.folio {
                    None if self.area.folio_pages == 0 => {
                        self.area.folio = Some(g.id);
                        self.area.folio_pages = 1;
                    }
                    Some(id) if id == g.id => self.area.folio_pages += 1,
                    _ => {}
                }
            }
        }
    }
}

/// Runs the census of `kpage` over the zones of `zi` (see the [census documentation](mod@crate::census)).
pub fn census(kpage: &KpageSnapshot, zi: &ZoneInfo, opts: CensusOptions) -> Census {
    census_runs(kpage, zi, opts, &mut |_| {})
}

/// [`census`], also handing every counted pfn to `visit`, in pfn order, as part of exactly one
/// [`Run`] (uncounted pfns — outside every zone, `NOPAGE` — are in none). `memdesc replay`
/// rebuilds a machine's start state from these runs.
pub fn census_runs(kpage: &KpageSnapshot, zi: &ZoneInfo, opts: CensusOptions, visit: &mut dyn FnMut(Run)) -> Census {
    let len = kpage.len();
    // Zone spans clipped to the pfns the snapshot has: nothing beyond it is counted.
    let spans: Vec<(u64, u64)> =
        merged_spans(zi).into_iter().map(|(s, e)| (s.min(len), e.min(len))).filter(|&(s, e)| s < e).collect();
    let (absent, zones, unexplained) = label_absent(kpage, zi, len);
    let opts = CensusOptions { max_buddy_order: opts.max_buddy_order.min(MAX_ORDER_LIMIT), ..opts };
    let mode = match opts.buddy_mode {
        BuddyMode::Auto => detect_buddy_mode(kpage, &spans),
        m => m,
    };
    let mut w = Walker {
        sink: visit,
        plain: None,
        kpage,
        opts,
        c: Census {
            total: 0,
            pages: KindCounts::default(),
            folios_by_order: Vec::new(),
            anon_folios_by_order: Vec::new(),
            file_folios_by_order: Vec::new(),
            slabs_by_order: Vec::new(),
            page_tables: 0,
            other_groups: 0,
            other_mapped_groups: 0,
            irregular_groups: 0,
            free_blocks_by_order: Vec::new(),
            buddy_mode: mode,
            nopage: 0,
            outside_zones: 0,
            unexplained_absent: unexplained,
            areas: AreaCensus::default(),
            zones,
            buddyinfo_free: None,
            vmalloc_pages: None,
            zspages: None,
        },
        group: None,
        next_group_id: 0,
        free_until: 0,
        buddy_run_start: None,
        area: Area::new(),
        cache: vec![None; kpage.palette_len().unwrap_or(0)],
    };
    let (Some(&(lo, _)), Some(&(_, hi))) = (spans.first(), spans.last()) else {
        return w.c;
    };
    let lo = lo / AREA_PAGES * AREA_PAGES;
    let hi = hi.div_ceil(AREA_PAGES).saturating_mul(AREA_PAGES);
    let mut si = 0usize; // current span
    let mut ai = 0usize; // current absent run
    let mut pfn = lo;
    while pfn < hi {
        // Process one area at a time so that the per-area bookkeeping is simple.
        let area_end = pfn + AREA_PAGES;
        let file_end = area_end.min(len);
        if pfn < file_end {
            let mut visit = |p: u64, key: u32, f: PageFlags, cnt: u8| {
                while si < spans.len() && spans[si].1 <= p {
                    si += 1;
                }
                let in_zone = si < spans.len() && spans[si].0 <= p;
                if !in_zone {
                    if !f.has(KPF_NOPAGE) {
                        w.c.outside_zones += 1;
                    }
                    w.end_buddy_run(p);
                    w.uncounted();
                    return;
                }
                if f.has(KPF_NOPAGE) {
                    w.c.nopage += 1;
                    w.end_buddy_run(p);
                    w.uncounted();
                    return;
                }
                w.c.total += 1;
                while ai < absent.len() && absent[ai].end <= p {
                    ai += 1;
                }
                if ai < absent.len() && absent[ai].start <= p {
                    w.end_buddy_run(p);
                    w.counted(p, absent[ai].kind, false, false);
                    return;
                }
                let kind = match w.cache.get_mut(key as usize) {
                    Some(Some(k)) => *k,
                    Some(slot) => {
                        let k = base_kind(f);
                        *slot = Some(k);
                        k
                    }
                    None => base_kind(f),
                };
                let mut kind = kind;
                if kind == Kind::Free {
                    match mode {
                        BuddyMode::HeadOnly => {
                            if p >= w.free_until {
                                let zone_end = spans[si].1.min(len);
                                let k = w.head_only_block(p, zone_end, &absent, ai);
                                bump(&mut w.c.free_blocks_by_order, k);
                                w.free_until = p + (1u64 << k);
                            }
                        }
                        _ => {
                            if w.buddy_run_start.is_none() {
                                w.buddy_run_start = Some(p);
                            }
                        }
                    }
                } else {
                    w.end_buddy_run(p);
                    if mode == BuddyMode::HeadOnly && p < w.free_until && blank(f, cnt) {
                        kind = Kind::Free;
                    }
                }
                w.counted(p, kind, f.has(KPF_COMPOUND_TAIL), cnt > 0);
            };
            kpage.scan(pfn, file_end, &mut visit);
        }
        // pfns beyond the end of the file.
        let beyond = file_end.max(pfn);
        if beyond < area_end {
            w.end_buddy_run(beyond);
        }
        for _ in beyond..area_end {
            w.uncounted();
        }
        w.end_area();
        pfn = area_end;
    }
    w.end_buddy_run(hi);
    w.close_group();
    w.close_plain();
    w.c
}

impl Census {
    /// Runs the census over a snapshot directory's kpage pair and zoneinfo, and picks up the
    /// consistency figures of its other tables.
    pub fn from_snapshot(s: &Snapshot, opts: CensusOptions) -> Census {
        let mut c = census(&s.kpage, &s.zoneinfo, opts);
        c.buddyinfo_free = s.buddyinfo.as_ref().map(|b| b.free_pages());
        c.vmalloc_pages = s.meminfo.as_ref().and_then(|m| m.bytes("VmallocUsed")).map(|b| b / 4096);
        c.zspages = s.vmstat.as_ref().and_then(|v| v.get("nr_zspages")).map(|v| v.max(0) as u64).or_else(|| {
            let n: u64 = s.zoneinfo.zones.iter().filter_map(|z| z.stat("nr_zspages")).sum();
            Some(n)
        });
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoneinfo(start: u64, spanned: u64, present: u64, managed: u64) -> ZoneInfo {
        let text = format!(
            "Node 0, zone Normal\n  pages free 0\n  spanned {spanned}\n  present {present}\n  managed {managed}\n  start_pfn: {start}\n"
        );
        ZoneInfo::parse("zoneinfo", text.as_bytes()).unwrap()
    }

    fn snap(flags: &[u64], counts: &[u64]) -> KpageSnapshot {
        let f: Vec<u8> = flags.iter().flat_map(|w| w.to_le_bytes()).collect();
        let c: Vec<u8> = counts.iter().flat_map(|w| w.to_le_bytes()).collect();
        KpageSnapshot::from_bytes(&f, &c).unwrap()
    }

    const B: u64 = 1 << KPF_BUDDY;
    const H: u64 = 1 << KPF_COMPOUND_HEAD;
    const T: u64 = 1 << KPF_COMPOUND_TAIL;
    const LRU: u64 = 1 << KPF_LRU;
    const ANON: u64 = 1 << KPF_ANON;
    const SLAB: u64 = 1 << KPF_SLAB;
    const RSV: u64 = 1u64 << KPF_RESERVED;

    #[test]
    fn kinds_groups_and_orders() {
        // 2048 pfns: [0,512) every-page free, [512,1024) one order-9 anon folio,
        // [1024,1028) an order-2 slab, 1028 an order-0 slab, 1029 pgtable, 1030..1034 file
        // order-2 folio with bare tails, then 1034 mapped other, rest other blank.
        let mut f = vec![0u64; 2048];
        let mut c = vec![0u64; 2048];
        for x in &mut f[..512] {
            *x = B;
        }
        f[512] = H | LRU | ANON;
        for x in &mut f[513..1024] {
            *x = T | LRU | ANON;
        }
        f[1024] = H | SLAB;
        for x in &mut f[1025..1028] {
            *x = T | SLAB;
        }
        f[1028] = SLAB;
        f[1029] = 1 << KPF_PGTABLE;
        f[1030] = H | LRU;
        for x in &mut f[1031..1034] {
            *x = T;
        }
        c[1034] = 1;
        // The top 512 pfns are uninitialised (spanned − managed = 512, nothing reserved).
        let s = snap(&f, &c);
        let z = zoneinfo(0, 2048, 2048, 1536);
        let cs = census(&s, &z, CensusOptions::default());
        assert_eq!(cs.buddy_mode, BuddyMode::EveryPage);
        assert_eq!(cs.total, 2048);
        assert_eq!(cs.pages.sum(), 2048);
        assert_eq!(cs.pages[Kind::Free], 512);
        assert_eq!(cs.pages[Kind::Anon], 512);
        assert_eq!(cs.pages[Kind::Slab], 5);
        assert_eq!(cs.pages[Kind::PageTable], 1);
        assert_eq!(cs.pages[Kind::File], 4);
        assert_eq!(cs.pages[Kind::Uninit], 512);
        assert_eq!(cs.pages[Kind::Other], 2048 - 512 - 512 - 5 - 1 - 4 - 512);
        assert_eq!(cs.anon_folios_by_order, {
            let mut v = vec![0; 10];
            v[9] = 1;
            v
        });
        assert_eq!(cs.file_folios_by_order, vec![0, 0, 1]);
        assert_eq!(cs.slabs_by_order, vec![1, 0, 1]);
        assert_eq!(cs.page_tables, 1);
        assert_eq!(cs.other_mapped_groups, 1);
        assert_eq!(cs.free_blocks_by_order, {
            let mut v = vec![0; 10];
            v[9] = 1;
            v
        });
        assert_eq!(cs.areas.total, 4);
        assert_eq!(cs.areas.uniform_free, 1);
        assert_eq!(cs.areas.uniform_folio, 1);
        assert_eq!(cs.areas.uniform_unavailable, 1);
        assert_eq!(cs.areas.split, 1);
        assert_eq!(cs.areas.split_pages.sum(), 512);

        // The runs tile the counted pfns in order and agree with the counts.
        let mut runs = Vec::new();
        let again = census_runs(&s, &z, CensusOptions::default(), &mut |r| runs.push(r));
        assert_eq!(again.pages, cs.pages);
        let mut next = 0;
        let mut by_kind = KindCounts::default();
        for r in &runs {
            assert_eq!(r.start, next, "{r:?}");
            next += r.len;
            by_kind[r.kind] += r.len;
        }
        assert_eq!(next, 2048);
        assert_eq!(by_kind, cs.pages);
        assert!(runs.contains(&Run { start: 512, len: 512, kind: Kind::Anon }));
        assert!(runs.contains(&Run { start: 1024, len: 4, kind: Kind::Slab }));
        assert!(runs.contains(&Run { start: 1028, len: 1, kind: Kind::Slab }));
        assert!(runs.contains(&Run { start: 0, len: 512, kind: Kind::Free }));
    }

    #[test]
    fn head_only_buddy_inference() {
        // Old kernels: only the head is BUDDY. An order-3 block at 8, an order-0 at 17
        // (followed by a non-blank page), and a block at 64 bounded by a reserved page at 68.
        let mut f = vec![1u64 << KPF_UPTODATE | LRU; 128];
        for x in &mut f[8..16] {
            *x = 0;
        }
        f[8] = B;
        f[17] = B;
        for x in &mut f[64..68] {
            *x = 0;
        }
        f[64] = B;
        f[68] = RSV;
        let c = vec![0u64; 128];
        let s = snap(&f, &c);
        let z = zoneinfo(0, 128, 128, 127);
        let cs = census(&s, &z, CensusOptions::default());
        assert_eq!(cs.buddy_mode, BuddyMode::HeadOnly);
        assert_eq!(cs.pages[Kind::Free], 8 + 1 + 4);
        assert_eq!(cs.free_blocks_by_order, vec![1, 0, 1, 1]);
        assert_eq!(cs.pages[Kind::Reserved], 1);
        // Forcing every-page mode counts only the marked pages.
        let cs = census(&s, &z, CensusOptions { buddy_mode: BuddyMode::EveryPage, ..CensusOptions::default() });
        assert_eq!(cs.pages[Kind::Free], 3);
    }

    #[test]
    fn holes_then_uninit_and_outside_pfns() {
        // Zone [1, 4096): 96 reserved-flagged pfns, a blank top of 1024 pfns of which
        // spanned − present = 512 are holes and the other 512 uninitialised.
        let mut f = vec![1u64 << KPF_UPTODATE | LRU; 4096];
        for x in &mut f[100..196] {
            *x = RSV;
        }
        for x in &mut f[3072..] {
            *x = 0;
        }
        f[0] = RSV;
        let c = vec![0u64; 4096];
        let s = snap(&f, &c);
        let z = zoneinfo(1, 4095, 4095 - 512, 4095 - 1024 - 96);
        let cs = census(&s, &z, CensusOptions::default());
        assert_eq!(cs.outside_zones, 1);
        assert_eq!(cs.total, 4095);
        assert_eq!(cs.pages[Kind::Hole], 512);
        assert_eq!(cs.pages[Kind::Uninit], 512);
        assert_eq!(cs.pages[Kind::Reserved], 96);
        assert_eq!(cs.unexplained_absent, 0);
        assert_eq!(cs.zones[0].holes, 512);
        assert_eq!(cs.areas.uniform_unavailable, 2);
    }
}
