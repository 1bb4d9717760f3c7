//! Allocation flags (`Gfp`, after Linux's gfp_t): which zones, which migratetype, how hard to
//! try, and what to do with the memory.

/// Allocation flags.
///
/// ```
/// use memdesc::Gfp;
/// let g = Gfp::HIGHUSER_MOVABLE | Gfp::ZERO;
/// assert!(g.contains(Gfp::MOVABLE) && g.contains(Gfp::ZERO));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Gfp(u32);

impl Gfp {
    /// Ordinary unmovable kernel memory from Normal, DMA32 or DMA. Always direct-mapped:
    /// like Linux's `GFP_KERNEL`, which never reaches `ZONE_HIGHMEM`, an allocation without
    /// [`Gfp::MOVABLE`] is never served from a zone with memory lacking a permanent kernel
    /// mapping (see [`Gfp::may_be_unmapped`]).
    pub const KERNEL: Gfp = Gfp(0);
    /// Zero the memory.
    pub const ZERO: Gfp = Gfp(1 << 0);
    /// Movable (user, page cache): may come from the Movable zone, grouped in movable pageblocks,
    /// and from memory without a direct map (the caller reaches it through
    /// [`Platform::map_local`](crate::Platform::map_local), like Linux's `__GFP_HIGHMEM`).
    pub const MOVABLE: Gfp = Gfp(1 << 1);
    /// Reclaimable kernel memory.
    pub const RECLAIMABLE: Gfp = Gfp(1 << 2);
    /// High priority / atomic: may dip below the min watermark (to half of it) and into the
    /// high-atomic reserve.
    pub const HIGH: Gfp = Gfp(1 << 3);
    /// Fail quietly: do not count the failure as a warning.
    pub const NOWARN: Gfp = Gfp(1 << 4);
    /// Only the DMA zone.
    pub const DMA: Gfp = Gfp(1 << 5);
    /// Only DMA32 or DMA.
    pub const DMA32: Gfp = Gfp(1 << 6);
    /// Debug: surround a raw page allocation ([`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages))
    /// with two guard pages (words `Undescribed { Guard }`, made inaccessible through
    /// [`Platform::protect`](crate::Platform::protect)); freeing the allocation releases them.
    /// Costs an allocation of order + 2 of which only the block and its guards stay taken.
    /// Other allocators (folios, slab, kmalloc) ignore it.
    pub const GUARD: Gfp = Gfp(1 << 7);
    /// User memory that may move: `MOVABLE`.
    pub const HIGHUSER_MOVABLE: Gfp = Gfp::MOVABLE;
    /// Atomic context: `HIGH | NOWARN`.
    pub const ATOMIC: Gfp = Gfp(Gfp::HIGH.0 | Gfp::NOWARN.0);

    /// Whether all bits of `other` are set.
    #[inline]
    pub const fn contains(self, other: Gfp) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether memory without a permanent kernel mapping (a `mapped: false` region, like
    /// Linux's highmem) may serve these flags: only [`Gfp::MOVABLE`] allocations, whose users
    /// (user and page-cache folios, balloon, zsmalloc/z3fold pages checked at allocation, raw
    /// pages the caller maps with `map_local`) never assume a direct map. Everything else
    /// (kernel, reclaimable, DMA, slab, page tables, kmalloc) falls back to fully direct-mapped
    /// zones or fails with [`AllocError::NoMemory`](crate::AllocError::NoMemory).
    #[inline]
    pub const fn may_be_unmapped(self) -> bool {
        self.contains(Gfp::MOVABLE)
    }

    /// The migratetype these flags ask for.
    #[inline]
    pub fn migratetype(self) -> crate::base::pageblock::MigrateType {
        if self.contains(Gfp::MOVABLE) {
            crate::base::pageblock::MigrateType::Movable
        } else if self.contains(Gfp::RECLAIMABLE) {
            crate::base::pageblock::MigrateType::Reclaimable
        } else {
            crate::base::pageblock::MigrateType::Unmovable
        }
    }

    /// The highest zone these flags allow.
    #[inline]
    pub fn highest_zone(self) -> crate::base::layout::ZoneType {
        if self.contains(Gfp::DMA) {
            crate::base::layout::ZoneType::Dma
        } else if self.contains(Gfp::DMA32) {
            crate::base::layout::ZoneType::Dma32
        } else if self.contains(Gfp::MOVABLE) {
            crate::base::layout::ZoneType::Movable
        } else {
            crate::base::layout::ZoneType::Normal
        }
    }
}

impl Gfp {
    /// These flags without `other`'s.
    pub const fn without(self, other: Gfp) -> Gfp {
        Gfp(self.0 & !other.0)
    }
}

impl core::ops::BitOr for Gfp {
    type Output = Gfp;
    fn bitor(self, rhs: Gfp) -> Gfp {
        Gfp(self.0 | rhs.0)
    }
}
