//! Whether a kpageflags/kpagecount snapshot can have come from a Linux kernel at all, checked
//! before an estimate is built on it.
//!
//! A real snapshot passes every check below with a wide margin; random bytes of the right
//! length, a file of another machine's tables, or a corrupted copy fail several. Each check
//! counts pages; a snapshot is implausible when a count is above its threshold:
//!
//! | check | threshold | why |
//! |---|---|---|
//! | bits Linux does not define (27–31, 43–63) set | more than 0.1 % of pfns | no kernel up to 6.x exports them; a newer kernel adding one bit stays far below |
//! | contradictory flags: more than one page type (`BUDDY`, `SLAB`, `PGTABLE`, `OFFLINE`), `COMPOUND_HEAD` with `COMPOUND_TAIL`, `NOPAGE` with any other bit, `LRU` on a buddy, slab or page-table page (not `ANON`: a slab's fields overlap `page->mapping`, whose low bits kpageflags reports as `ANON`/`KSM`) | more than 0.1 % of pfns | `/proc/kpageflags` is read page by page while the system runs, so a few pages can change type mid-read, never thousands |
//! | `HWPOISON` pages | more than 0.1 % of pfns | a machine with that much memory poisoned does not run long |
//! | free pages of the census against `/proc/buddyinfo` (when the snapshot has it) | differ by more than 10 % of buddyinfo's count and by more than 1024 pages plus the drift | both are read within a second or two; the real snapshots of `../shared/data` and the sample agree within 3 %. On a live read buddyinfo is read before and after kpageflags and the difference of the two (the drift: how much the machine allocated or freed meanwhile) is tolerated on top |
//!
//! [`Plausibility::problems`] says which checks failed, with the counts.

use crate::census::{Census, Kind};
use crate::kpf::*;
use crate::snapshot::Snapshot;

/// The kpageflags bits Linux defines: 0–26 (UAPI) and 32–42 (the kernel's own).
pub const DEFINED_BITS: u64 = ((1u64 << 27) - 1) | (((1u64 << 11) - 1) << 32);

/// The largest fraction of pfns a per-page check tolerates (see the module documentation).
pub const MAX_BAD_FRACTION: f64 = 0.001;
/// The largest relative difference of the census's free pages from buddyinfo's.
pub const MAX_FREE_DEVIATION: f64 = 0.10;
/// Differences of free pages up to this many pages are always tolerated.
pub const FREE_SLACK_PAGES: u64 = 1024;

/// The counts of the checks of one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plausibility {
    /// pfns examined.
    pub pfns: u64,
    /// pfns with a bit Linux does not define.
    pub undefined_bits: u64,
    /// pfns with contradictory flags.
    pub contradictory: u64,
    /// The first contradictory pfn and its flags, for the message.
    pub first_contradiction: Option<(u64, PageFlags)>,
    /// pfns flagged `HWPOISON`.
    pub hwpoison: u64,
    /// Free pages of the census.
    pub census_free: u64,
    /// Free pages of `/proc/buddyinfo`, if the snapshot has it.
    pub buddyinfo_free: Option<u64>,
    /// How far buddyinfo's free count moved during a live read ([`Snapshot::buddyinfo_drift_pages`]).
    pub buddyinfo_drift: u64,
}

const PAGE_TYPES: [u32; 4] = [KPF_BUDDY, KPF_SLAB, KPF_PGTABLE, KPF_OFFLINE];

/// Whether `f` is a combination no kernel reports for one page.
pub fn contradictory(f: PageFlags) -> bool {
    let types = PAGE_TYPES.iter().filter(|&&b| f.has(b)).count();
    let typed = f.has(KPF_BUDDY) || f.has(KPF_SLAB) || f.has(KPF_PGTABLE);
    types > 1
        || (f.has(KPF_COMPOUND_HEAD) && f.has(KPF_COMPOUND_TAIL))
        || (f.has(KPF_NOPAGE) && f.0 != 1 << KPF_NOPAGE)
        || (typed && f.has(KPF_LRU))
}

impl Plausibility {
    /// Runs the checks over `s` and its census `c`.
    pub fn check(s: &Snapshot, c: &Census) -> Self {
        let mut p = Plausibility {
            pfns: s.kpage.len(),
            census_free: c.pages[Kind::Free],
            buddyinfo_free: c.buddyinfo_free,
            buddyinfo_drift: s.buddyinfo_drift_pages,
            ..Plausibility::default()
        };
        for pfn in 0..s.kpage.len() {
            let f = s.kpage.flags(pfn);
            if f.is_empty() {
                continue;
            }
            if f.0 & !DEFINED_BITS != 0 {
                p.undefined_bits += 1;
            }
            if contradictory(f) {
                p.contradictory += 1;
                p.first_contradiction.get_or_insert((pfn, f));
            }
            if f.has(KPF_HWPOISON) {
                p.hwpoison += 1;
            }
        }
        p
    }

    fn fraction(&self, n: u64) -> f64 {
        n as f64 / self.pfns.max(1) as f64
    }

    /// What is implausible, one sentence each; empty when the snapshot passes.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let pct = |n: u64| 100.0 * self.fraction(n);
        let limit = 100.0 * MAX_BAD_FRACTION;
        if self.fraction(self.undefined_bits) > MAX_BAD_FRACTION {
            out.push(format!(
                "{} pfns ({:.2} %) have kpageflags bits Linux does not define (bits 27-31, 43-63; at most {limit} % tolerated)",
                self.undefined_bits,
                pct(self.undefined_bits)
            ));
        }
        if self.fraction(self.contradictory) > MAX_BAD_FRACTION {
            let first = self
                .first_contradiction
                .map_or(String::new(), |(pfn, f)| format!("; the first is pfn {pfn:#x}: {}", f.names()));
            out.push(format!(
                "{} pfns ({:.2} %) have contradictory flags (two page types, head and tail, NOPAGE with other bits, \
                 or LRU on a buddy, slab or page-table page; at most {limit} % tolerated){first}",
                self.contradictory,
                pct(self.contradictory)
            ));
        }
        if self.fraction(self.hwpoison) > MAX_BAD_FRACTION {
            out.push(format!(
                "{} pfns ({:.2} %) are flagged HWPOISON (at most {limit} % tolerated)",
                self.hwpoison,
                pct(self.hwpoison)
            ));
        }
        if let Some(b) = self.buddyinfo_free {
            // What the machine allocated or freed during a live read is not an error.
            let diff = self.census_free.abs_diff(b).saturating_sub(self.buddyinfo_drift);
            if diff > FREE_SLACK_PAGES && diff as f64 > MAX_FREE_DEVIATION * b as f64 {
                out.push(format!(
                    "the snapshot has {} free pages but its buddyinfo {} ({:+.1} %; at most {} % tolerated)",
                    self.census_free,
                    b,
                    100.0 * (self.census_free as f64 - b as f64) / (b.max(1) as f64),
                    100.0 * MAX_FREE_DEVIATION
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defined_bits_are_the_headers() {
        for b in 0..64u32 {
            assert_eq!(DEFINED_BITS >> b & 1 == 1, name(b).is_some(), "bit {b}");
        }
    }

    #[test]
    fn contradictions() {
        let f = |bits: &[u32]| PageFlags(bits.iter().map(|&b| 1u64 << b).sum());
        assert!(contradictory(f(&[KPF_BUDDY, KPF_SLAB])));
        assert!(contradictory(f(&[KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL])));
        assert!(contradictory(f(&[KPF_NOPAGE, KPF_LRU])));
        assert!(contradictory(f(&[KPF_SLAB, KPF_LRU])));
        // A slab's fields overlap page->mapping: kpageflags reports ANON|KSM on some slab pages.
        assert!(!contradictory(f(&[KPF_SLAB, KPF_ANON, KPF_KSM, KPF_COMPOUND_HEAD])));
        assert!(!contradictory(f(&[KPF_NOPAGE])));
        assert!(!contradictory(f(&[KPF_BUDDY])));
        assert!(!contradictory(f(&[KPF_ANON, KPF_LRU, KPF_MMAP, KPF_COMPOUND_HEAD, KPF_THP])));
        assert!(!contradictory(f(&[KPF_SLAB, KPF_COMPOUND_TAIL])));
    }

    #[test]
    fn free_pages_far_from_buddyinfo_are_refused_unless_the_live_read_drifted_as_far() {
        let p = Plausibility {
            pfns: 1 << 20,
            census_free: 100_000,
            buddyinfo_free: Some(150_000),
            ..Plausibility::default()
        };
        let problems = p.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("100000 free pages but its buddyinfo 150000"), "{}", problems[0]);
        // buddyinfo moved by 45 000 pages during the read: 5 000 remain, under 10 % of 150 000.
        let live = Plausibility { buddyinfo_drift: 45_000, ..p.clone() };
        assert!(live.problems().is_empty(), "{:?}", live.problems());
        // A drift smaller than the gap does not excuse it.
        let small = Plausibility { buddyinfo_drift: 10_000, ..p };
        assert_eq!(small.problems().len(), 1);
    }
}
