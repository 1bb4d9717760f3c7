//! Physical addresses and page frame numbers, and the sizes the whole design is built on.

/// Bytes in a base page.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Order of a 2 MiB area (a pageblock, a PMD mapping, a two-level memmap area).
pub const AREA_ORDER: u32 = 9;
/// Pages in a 2 MiB area.
pub const AREA_PAGES: u64 = 1 << AREA_ORDER;
/// Highest page frame number the word encodings can hold (40 bits of pfn: 4 PiB of memory).
pub const MAX_PFN: u64 = (1 << 40) - 1;

/// A page frame number: physical address >> 12.
///
/// ```
/// use memdesc::Pfn;
/// assert_eq!(Pfn(0x1234).phys(), 0x1234000);
/// assert_eq!(Pfn(0x1234).align_down(4), Pfn(0x1230));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The physical address of the first byte of this page.
    #[inline]
    pub const fn phys(self) -> u64 {
        self.0 << PAGE_SHIFT
    }

    /// The pfn of a physical address (rounded down).
    #[inline]
    pub const fn from_phys(addr: u64) -> Self {
        Pfn(addr >> PAGE_SHIFT)
    }

    /// This pfn plus `n` pages.
    #[inline]
    pub const fn add(self, n: u64) -> Self {
        Pfn(self.0 + n)
    }

    /// Rounds down to a multiple of `2^order` pages.
    #[inline]
    pub const fn align_down(self, order: u32) -> Self {
        Pfn(self.0 & !((1u64 << order) - 1))
    }

    /// Whether this pfn is a multiple of `2^order` pages.
    #[inline]
    pub const fn is_aligned(self, order: u32) -> bool {
        self.0 & ((1u64 << order) - 1) == 0
    }

    /// The buddy of the block of `2^order` pages starting here.
    #[inline]
    pub const fn buddy(self, order: u32) -> Self {
        Pfn(self.0 ^ (1u64 << order))
    }
}

impl core::fmt::Display for Pfn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
