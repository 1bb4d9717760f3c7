//! The bits of `/proc/kpageflags`.
//!
//! Bit numbers 0–26 are the stable user-space ABI of Linux's UAPI header
//! `include/uapi/linux/kernel-page-flags.h`; bits 32–42 are the kernel's own "hacking
//! assistance" bits from `include/linux/kernel-page-flags.h`, which `fs/proc/page.c` also
//! exports but which the kernel documents as subject to change. Both sets are defined here
//! (rather than pulling in the `procfs` crate and its dependencies for some constants) with the
//! same names as the headers, so that kernel engineers can grep for them.
//!
//! Two facts about the data matter to the census (see [`crate::census`](mod@crate::census)):
//! * `/proc/kpagecount` is the page's **map count** (how many page-table entries map it), not
//!   its reference count;
//! * for tail pages of a compound page, Linux reports most bits from the head (the folio), and
//!   sets [`KPF_COMPOUND_TAIL`] instead of [`KPF_COMPOUND_HEAD`].

/// Page is locked (`PG_locked`).
pub const KPF_LOCKED: u32 = 0;
/// I/O error on the page (unused since Linux 6.10).
pub const KPF_ERROR: u32 = 1;
/// Page was recently referenced.
pub const KPF_REFERENCED: u32 = 2;
/// Page contents are valid.
pub const KPF_UPTODATE: u32 = 3;
/// Page is dirty.
pub const KPF_DIRTY: u32 = 4;
/// Page is on an LRU list.
pub const KPF_LRU: u32 = 5;
/// Page is on the active LRU list.
pub const KPF_ACTIVE: u32 = 6;
/// Page belongs to a slab.
pub const KPF_SLAB: u32 = 7;
/// Page is under writeback.
pub const KPF_WRITEBACK: u32 = 8;
/// Page is to be reclaimed soon.
pub const KPF_RECLAIM: u32 = 9;
/// Page is free, owned by the buddy allocator.
pub const KPF_BUDDY: u32 = 10;
/// Page is mapped into some process (map count > 0).
pub const KPF_MMAP: u32 = 11;
/// Page is anonymous memory.
pub const KPF_ANON: u32 = 12;
/// Page is in the swap cache.
pub const KPF_SWAPCACHE: u32 = 13;
/// Page is backed by swap or RAM (anonymous or shmem).
pub const KPF_SWAPBACKED: u32 = 14;
/// First page of a compound (multi-page) allocation.
pub const KPF_COMPOUND_HEAD: u32 = 15;
/// Non-first page of a compound allocation.
pub const KPF_COMPOUND_TAIL: u32 = 16;
/// Page belongs to a HugeTLB folio.
pub const KPF_HUGE: u32 = 17;
/// Page is on the unevictable LRU list.
pub const KPF_UNEVICTABLE: u32 = 18;
/// Hardware detected memory corruption on this page.
pub const KPF_HWPOISON: u32 = 19;
/// No page frame exists at this pfn (a hole, or memory that is offline).
pub const KPF_NOPAGE: u32 = 20;
/// Page is shared by KSM.
pub const KPF_KSM: u32 = 21;
/// Page belongs to a transparent huge page (any large folio on the LRU, or the huge zero page).
pub const KPF_THP: u32 = 22;
/// Page is logically offline (balloon, virtio-mem).
pub const KPF_OFFLINE: u32 = 23;
/// Page is the zero page (or the huge zero page).
pub const KPF_ZERO_PAGE: u32 = 24;
/// Page has not been accessed since it was marked idle.
pub const KPF_IDLE: u32 = 25;
/// Page is a page table.
pub const KPF_PGTABLE: u32 = 26;

/// Page is reserved (`PG_reserved`: firmware, kernel image, memblock allocations, holes).
pub const KPF_RESERVED: u32 = 32;
/// Page is mlocked.
pub const KPF_MLOCKED: u32 = 33;
/// Page has blocks allocated on disk.
pub const KPF_MAPPEDTODISK: u32 = 34;
/// `PG_private` (for example buffer heads attached).
pub const KPF_PRIVATE: u32 = 35;
/// `PG_private_2`.
pub const KPF_PRIVATE_2: u32 = 36;
/// `PG_owner_priv_1`.
pub const KPF_OWNER_PRIVATE: u32 = 37;
/// `PG_arch_1`.
pub const KPF_ARCH: u32 = 38;
/// `PG_uncached`.
pub const KPF_UNCACHED: u32 = 39;
/// Soft-dirty bit of the page-table entry.
pub const KPF_SOFTDIRTY: u32 = 40;
/// `PG_arch_2`.
pub const KPF_ARCH_2: u32 = 41;
/// `PG_arch_3`.
pub const KPF_ARCH_3: u32 = 42;

/// One kpageflags word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageFlags(pub u64);

impl PageFlags {
    /// Whether bit `kpf` (one of the `KPF_*` numbers) is set. Bits ≥ 64 are never set.
    #[inline]
    pub const fn has(self, kpf: u32) -> bool {
        kpf < 64 && (self.0 >> kpf) & 1 == 1
    }

    /// No bit set at all.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the set bits, `|`-separated, unknown bits as numbers (for diagnostics).
    pub fn names(self) -> String {
        let mut out = String::new();
        for bit in 0..64u32 {
            if !self.has(bit) {
                continue;
            }
            if !out.is_empty() {
                out.push('|');
            }
            match name(bit) {
                Some(n) => out.push_str(n),
                None => out.push_str(&bit.to_string()),
            }
        }
        out
    }
}

/// The header's name of bit `kpf` without the `KPF_` prefix, if it has one.
pub fn name(kpf: u32) -> Option<&'static str> {
    Some(match kpf {
        KPF_LOCKED => "LOCKED",
        KPF_ERROR => "ERROR",
        KPF_REFERENCED => "REFERENCED",
        KPF_UPTODATE => "UPTODATE",
        KPF_DIRTY => "DIRTY",
        KPF_LRU => "LRU",
        KPF_ACTIVE => "ACTIVE",
        KPF_SLAB => "SLAB",
        KPF_WRITEBACK => "WRITEBACK",
        KPF_RECLAIM => "RECLAIM",
        KPF_BUDDY => "BUDDY",
        KPF_MMAP => "MMAP",
        KPF_ANON => "ANON",
        KPF_SWAPCACHE => "SWAPCACHE",
        KPF_SWAPBACKED => "SWAPBACKED",
        KPF_COMPOUND_HEAD => "COMPOUND_HEAD",
        KPF_COMPOUND_TAIL => "COMPOUND_TAIL",
        KPF_HUGE => "HUGE",
        KPF_UNEVICTABLE => "UNEVICTABLE",
        KPF_HWPOISON => "HWPOISON",
        KPF_NOPAGE => "NOPAGE",
        KPF_KSM => "KSM",
        KPF_THP => "THP",
        KPF_OFFLINE => "OFFLINE",
        KPF_ZERO_PAGE => "ZERO_PAGE",
        KPF_IDLE => "IDLE",
        KPF_PGTABLE => "PGTABLE",
        KPF_RESERVED => "RESERVED",
        KPF_MLOCKED => "MLOCKED",
        KPF_MAPPEDTODISK => "MAPPEDTODISK",
        KPF_PRIVATE => "PRIVATE",
        KPF_PRIVATE_2 => "PRIVATE_2",
        KPF_OWNER_PRIVATE => "OWNER_PRIVATE",
        KPF_ARCH => "ARCH",
        KPF_UNCACHED => "UNCACHED",
        KPF_SOFTDIRTY => "SOFTDIRTY",
        KPF_ARCH_2 => "ARCH_2",
        KPF_ARCH_3 => "ARCH_3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_names() {
        let f = PageFlags((1 << KPF_SLAB) | (1 << KPF_COMPOUND_HEAD) | (1u64 << KPF_RESERVED));
        assert!(f.has(KPF_SLAB));
        assert!(f.has(KPF_RESERVED));
        assert!(!f.has(KPF_BUDDY));
        assert!(!f.has(200));
        assert_eq!(f.names(), "SLAB|COMPOUND_HEAD|RESERVED");
        assert_eq!(PageFlags(1 << 50).names(), "50");
        assert!(PageFlags::default().is_empty());
    }
}
