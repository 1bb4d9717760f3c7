//! The zones' pfn spans, and the labelling of blank pfns in them as holes or not yet
//! initialised pages (see *blank pages* in the [census documentation](mod@crate::census)).

use super::kind::{blank, Kind};
use super::report::{ZoneCensus, AREA_PAGES};
use crate::kpf::*;
use crate::snapshot::KpageSnapshot;
use crate::tables::ZoneInfo;

/// Merges zone spans into disjoint sorted ranges.
pub(super) fn merged_spans(zi: &ZoneInfo) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    for (_, s, e) in zi.spans() {
        if let Some(last) = v.last_mut() {
            if s <= last.1 {
                last.1 = last.1.max(e);
                continue;
            }
        }
        v.push((s, e));
    }
    v
}

/// A run of labelled blank pfns.
#[derive(Clone, Copy, Debug)]
pub(super) struct Absent {
    /// First pfn.
    pub(super) start: u64,
    /// One past the last pfn.
    pub(super) end: u64,
    /// [`Kind::Hole`] or [`Kind::Uninit`].
    pub(super) kind: Kind,
}

/// Labels holes and not-yet-initialised pages in each zone (see the
/// [census documentation](mod@crate::census)).
pub(super) fn label_absent(kpage: &KpageSnapshot, zi: &ZoneInfo, len: u64) -> (Vec<Absent>, Vec<ZoneCensus>, u64) {
    let is_blank = |p: u64| blank(kpage.flags(p), kpage.count(p).min(255) as u8);
    let mut out = Vec::new();
    let mut zones = Vec::new();
    let mut unexplained = 0u64;
    for (z, s, e) in zi.spans() {
        let e_clip = e.min(len);
        let s_clip = s.min(e_clip);
        let mut reserved = 0u64;
        kpage.scan(s_clip, e_clip, |_, _, f, _| {
            if f.has(KPF_RESERVED) && !f.has(KPF_NOPAGE) {
                reserved += 1;
            }
        });
        let want = z.spanned.saturating_sub(z.managed).saturating_sub(reserved).min(e_clip - s_clip);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut labelled = 0u64;
        // Phase 1: the blank run at the top of the zone.
        let mut p = e_clip;
        while p > s_clip && labelled < want && is_blank(p - 1) {
            p -= 1;
            labelled += 1;
        }
        if p < e_clip {
            runs.push((p, e_clip));
        }
        // Phase 2: whole blank 2 MiB areas below, from the top down.
        let mut area_end = p / AREA_PAGES * AREA_PAGES;
        while labelled + AREA_PAGES <= want && area_end >= s_clip + AREA_PAGES {
            let a = area_end - AREA_PAGES;
            if (a..area_end).all(is_blank) {
                runs.push((a, area_end));
                labelled += AREA_PAGES;
            }
            area_end = a;
        }
        unexplained += want - labelled;
        runs.sort_unstable();
        // The lowest `holes` labelled pfns are holes, the rest uninitialised.
        let holes = labelled.min(z.spanned.saturating_sub(z.present));
        let mut hole_left = holes;
        for (a, b) in runs {
            let h = hole_left.min(b - a);
            if h > 0 {
                out.push(Absent { start: a, end: a + h, kind: Kind::Hole });
                hole_left -= h;
            }
            if a + h < b {
                out.push(Absent { start: a + h, end: b, kind: Kind::Uninit });
            }
        }
        zones.push(ZoneCensus {
            node: z.node,
            name: z.name.clone(),
            start_pfn: s,
            spanned: z.spanned,
            present: z.present,
            managed: z.managed,
            reserved_flagged: reserved,
            holes,
            uninit: labelled - holes,
        });
    }
    out.sort_unstable_by_key(|a| a.start);
    (out, zones, unexplained)
}
