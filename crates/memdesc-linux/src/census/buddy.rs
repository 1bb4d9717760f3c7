//! Free blocks and orders: which [`BuddyMode`] the kernel used, cutting a run of free pfns
//! into aligned power-of-two blocks, and the order histograms (`*_by_order`) the census
//! fills.

use super::options::BuddyMode;
use crate::kpf::*;
use crate::snapshot::KpageSnapshot;

/// ⌈log2(n)⌉ for n ≥ 1.
pub(super) fn ceil_log2(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// Counts one more at `order` in the histogram `v` (grown as needed).
pub(super) fn bump(v: &mut Vec<u64>, order: u32) {
    let i = order as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

/// Decides the buddy marking from the data.
pub(super) fn detect_buddy_mode(kpage: &KpageSnapshot, spans: &[(u64, u64)]) -> BuddyMode {
    let mut run = 0u64;
    let mut any = false;
    for &(s, e) in spans {
        let mut found = false;
        kpage.scan(s, e, |_, _, f, _| {
            if f.has(KPF_BUDDY) {
                any = true;
                run += 1;
                if run >= 3 {
                    found = true;
                }
            } else {
                run = 0;
            }
        });
        if found {
            return BuddyMode::EveryPage;
        }
    }
    if any {
        BuddyMode::HeadOnly
    } else {
        BuddyMode::EveryPage
    }
}

/// Cuts the pfn run `[s, e)` into aligned power-of-two blocks of order ≤ `max`.
pub(super) fn decompose(s: u64, e: u64, max: u32, out: &mut Vec<u64>) {
    let mut x = s;
    while x < e {
        let mut k = max.min(if x == 0 { 63 } else { x.trailing_zeros() });
        while k > 0 && x + (1u64 << k) > e {
            k -= 1;
        }
        bump(out, k);
        x += 1u64 << k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompose_runs() {
        let mut v = Vec::new();
        decompose(3, 17, 10, &mut v);
        // 3 | 4..8 | 8..16 | 16
        assert_eq!(v, vec![2, 0, 1, 1]);
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(512), 9);
    }
}
