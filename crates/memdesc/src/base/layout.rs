//! The machine's physical memory map as the firmware would hand it over (an e820-like list of
//! regions and reserved ranges), and its normalisation into regions that each sit in exactly
//! one node and zone and use one memmap layout.
//!
//! Zones follow x86-64: DMA below 16 MiB, DMA32 below 4 GiB, Normal above, and Movable above a
//! configurable pfn (like `movablecore=`).

use crate::base::addr::{Pfn, AREA_ORDER};

/// Most regions a machine may have after normalisation.
pub const MAX_REGIONS: usize = 64;
/// Most reserved ranges.
pub const MAX_RESERVED: usize = 64;
/// Most NUMA nodes.
pub const MAX_NODES: usize = 4;
/// Zones per node.
pub const NR_ZONES: usize = 4;

/// A zone type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ZoneType {
    /// Below 16 MiB.
    Dma = 0,
    /// Below 4 GiB.
    Dma32 = 1,
    /// Everything else.
    Normal = 2,
    /// Only movable allocations (so it can be offlined and compacted).
    Movable = 3,
}

impl ZoneType {
    /// All zone types, lowest first.
    pub const ALL: [ZoneType; NR_ZONES] = [ZoneType::Dma, ZoneType::Dma32, ZoneType::Normal, ZoneType::Movable];

    /// The name Linux prints in /proc/buddyinfo.
    pub fn name(self) -> &'static str {
        match self {
            ZoneType::Dma => "DMA",
            ZoneType::Dma32 => "DMA32",
            ZoneType::Normal => "Normal",
            ZoneType::Movable => "Movable",
        }
    }

    /// From the zone index stored in words.
    pub fn from_index(i: u8) -> Option<ZoneType> {
        ZoneType::ALL.get(i as usize).copied()
    }
}

/// First pfn of DMA32 (16 MiB).
pub const DMA32_START: Pfn = Pfn(1 << 12);
/// First pfn of Normal (4 GiB).
pub const NORMAL_START: Pfn = Pfn(1 << 20);

/// How a region's words are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemmapLayout {
    /// One word per 4 KiB page.
    Flat,
    /// One word per 2 MiB area; per-page words only for split areas.
    TwoLevel,
}

/// A physical memory range as registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionSpec {
    /// First pfn.
    pub start: Pfn,
    /// One past the last pfn.
    pub end: Pfn,
    /// NUMA node.
    pub node: u16,
    /// Whether the memory has a permanent kernel mapping (false: highmem / unmapped pmem).
    pub mapped: bool,
    /// Word layout.
    pub layout: MemmapLayout,
}

/// What was wrong with a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// More regions than [`MAX_REGIONS`] after splitting at zone and area boundaries.
    TooManyRegions,
    /// More reserved ranges than [`MAX_RESERVED`].
    TooManyReserved,
    /// A region is empty, overlaps another, or is out of the pfn range words can hold.
    BadRegion(Pfn, Pfn),
    /// A node number of [`MAX_NODES`] or more.
    BadNode(u16),
    /// The two-level layout needs a permanent mapping for its area tables.
    TwoLevelUnmapped(Pfn),
}

/// An e820-like memory map: regions, reserved ranges and the Movable zone boundary.
#[derive(Clone, Debug)]
pub struct MemoryLayout {
    pub(crate) regions: [RegionSpec; MAX_REGIONS],
    pub(crate) nr_regions: usize,
    pub(crate) reserved: [(Pfn, Pfn); MAX_RESERVED],
    pub(crate) nr_reserved: usize,
    pub(crate) movable_start: Option<Pfn>,
}

impl Default for MemoryLayout {
    fn default() -> Self {
        Self::new()
    }
}

/// A normalised region: one node, one zone, one layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First pfn.
    pub start: Pfn,
    /// One past the last pfn.
    pub end: Pfn,
    /// NUMA node.
    pub node: u16,
    /// Zone.
    pub zone: ZoneType,
    /// Whether the memory has a permanent mapping.
    pub mapped: bool,
    /// Word layout.
    pub layout: MemmapLayout,
}

impl Region {
    /// Pages in the region.
    pub fn pages(&self) -> u64 {
        self.end.0 - self.start.0
    }
}

impl MemoryLayout {
    /// An empty map.
    pub fn new() -> Self {
        MemoryLayout {
            regions: [RegionSpec { start: Pfn(0), end: Pfn(0), node: 0, mapped: true, layout: MemmapLayout::Flat };
                MAX_REGIONS],
            nr_regions: 0,
            reserved: [(Pfn(0), Pfn(0)); MAX_RESERVED],
            nr_reserved: 0,
            movable_start: None,
        }
    }

    /// Adds a memory region `[start, end)`.
    pub fn add_region(&mut self, spec: RegionSpec) -> Result<&mut Self, LayoutError> {
        if spec.start >= spec.end || spec.end.0 > crate::base::addr::MAX_PFN {
            return Err(LayoutError::BadRegion(spec.start, spec.end));
        }
        if spec.node as usize >= MAX_NODES {
            return Err(LayoutError::BadNode(spec.node));
        }
        if spec.layout == MemmapLayout::TwoLevel && !spec.mapped {
            return Err(LayoutError::TwoLevelUnmapped(spec.start));
        }
        let existing = &self.regions[..self.nr_regions];
        if existing.iter().any(|r| r.start < spec.end && spec.start < r.end) {
            return Err(LayoutError::BadRegion(spec.start, spec.end));
        }
        if self.nr_regions == MAX_REGIONS {
            return Err(LayoutError::TooManyRegions);
        }
        self.regions[self.nr_regions] = spec;
        self.nr_regions += 1;
        self.regions[..self.nr_regions].sort_unstable_by_key(|r| r.start);
        Ok(self)
    }

    /// Marks `[start, end)` reserved (firmware, kernel image): never allocatable.
    pub fn reserve(&mut self, start: Pfn, end: Pfn) -> Result<&mut Self, LayoutError> {
        if self.nr_reserved == MAX_RESERVED {
            return Err(LayoutError::TooManyReserved);
        }
        self.reserved[self.nr_reserved] = (start, end);
        self.nr_reserved += 1;
        Ok(self)
    }

    /// Puts every pfn at or above `start` of the Normal zone into the Movable zone.
    pub fn movable_from(&mut self, start: Pfn) -> &mut Self {
        self.movable_start = Some(start);
        self
    }

    /// Reserved ranges as registered.
    pub fn reserved(&self) -> &[(Pfn, Pfn)] {
        &self.reserved[..self.nr_reserved]
    }

    /// Total pages in all regions.
    pub fn present_pages(&self) -> u64 {
        self.regions[..self.nr_regions].iter().map(|r| r.end.0 - r.start.0).sum()
    }

    /// One past the highest pfn.
    pub fn end_pfn(&self) -> Pfn {
        self.regions[..self.nr_regions].iter().map(|r| r.end).max().unwrap_or(Pfn(0))
    }

    fn zone_boundaries(&self) -> [Pfn; 3] {
        let movable = self.movable_start.map_or(Pfn(u64::MAX), |m| if m < NORMAL_START { NORMAL_START } else { m });
        [DMA32_START, NORMAL_START, movable]
    }

    fn zone_of(&self, pfn: Pfn) -> ZoneType {
        let b = self.zone_boundaries();
        if pfn < b[0] {
            ZoneType::Dma
        } else if pfn < b[1] {
            ZoneType::Dma32
        } else if pfn < b[2] {
            ZoneType::Normal
        } else {
            ZoneType::Movable
        }
    }

    /// Splits the regions at zone boundaries, and two-level regions at 2 MiB boundaries (the
    /// unaligned head and tail become flat), calling `f` for each piece in pfn order.
    pub fn normalise(&self, mut f: impl FnMut(Region) -> Result<(), LayoutError>) -> Result<(), LayoutError> {
        let bounds = self.zone_boundaries();
        for spec in &self.regions[..self.nr_regions] {
            let mut cuts = [spec.start, spec.end, spec.end, spec.end, spec.end];
            let mut n = 1;
            for b in bounds {
                if b > spec.start && b < spec.end {
                    cuts[n] = b;
                    n += 1;
                }
            }
            cuts[n] = spec.end;
            for w in cuts[..=n].windows(2) {
                let (s, e) = (w[0], w[1]);
                let zone = self.zone_of(s);
                let piece = |start: Pfn, end: Pfn, layout| Region {
                    start,
                    end,
                    node: spec.node,
                    zone,
                    mapped: spec.mapped,
                    layout,
                };
                if spec.layout == MemmapLayout::Flat {
                    f(piece(s, e, MemmapLayout::Flat))?;
                    continue;
                }
                let a_start = Pfn(s.0.next_multiple_of(1 << AREA_ORDER));
                let a_end = e.align_down(AREA_ORDER);
                if a_start >= a_end {
                    f(piece(s, e, MemmapLayout::Flat))?;
                    continue;
                }
                if s < a_start {
                    f(piece(s, a_start, MemmapLayout::Flat))?;
                }
                f(piece(a_start, a_end, MemmapLayout::TwoLevel))?;
                if a_end < e {
                    f(piece(a_end, e, MemmapLayout::Flat))?;
                }
            }
        }
        Ok(())
    }

    /// The layout of the machine Linux 6.18 was traced on, scaled to `gib` GiB of RAM:
    /// DMA (with the legacy hole below 1 MiB), DMA32 up to 3 GiB, a PCI hole to 4 GiB, and
    /// Normal above.
    pub fn pc(gib: u64, layout: MemmapLayout) -> Self {
        let mut l = MemoryLayout::new();
        let gib_pages = |g: u64| g << 18;
        // Low memory: 4 KiB..640 KiB, then 1 MiB up.
        let _ = l.add_region(RegionSpec {
            start: Pfn(1),
            end: Pfn(0x9f),
            node: 0,
            mapped: true,
            layout: MemmapLayout::Flat,
        });
        let low_end = Pfn(gib_pages(gib.min(3)));
        let _ = l.add_region(RegionSpec { start: Pfn(0x100), end: low_end, node: 0, mapped: true, layout });
        if gib > 3 {
            let _ = l.add_region(RegionSpec {
                start: NORMAL_START,
                end: Pfn(NORMAL_START.0 + gib_pages(gib - 3)),
                node: 0,
                mapped: true,
                layout,
            });
        }
        // Firmware and the kernel image at 16 MiB.
        let _ = l.reserve(Pfn(0x100), Pfn(0x200));
        let _ = l.reserve(Pfn(0x1000), Pfn(0x1000 + 0x1000));
        l
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn collect(l: &MemoryLayout) -> ([Region; 16], usize) {
        let mut out = [Region {
            start: Pfn(0),
            end: Pfn(0),
            node: 0,
            zone: ZoneType::Dma,
            mapped: true,
            layout: MemmapLayout::Flat,
        }; 16];
        let mut n = 0;
        l.normalise(|r| {
            out[n] = r;
            n += 1;
            Ok(())
        })
        .unwrap();
        (out, n)
    }

    #[test]
    fn splits_at_zones_and_areas() {
        let l = MemoryLayout::pc(6, MemmapLayout::TwoLevel);
        let (rs, n) = collect(&l);
        let rs = &rs[..n];
        // Every piece is in one zone, pieces are sorted and disjoint.
        for w in rs.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
        for r in rs {
            assert_eq!(l.zone_of(r.start), r.zone);
            assert_eq!(l.zone_of(Pfn(r.end.0 - 1)), r.zone);
            if r.layout == MemmapLayout::TwoLevel {
                assert!(r.start.is_aligned(AREA_ORDER) && r.end.is_aligned(AREA_ORDER));
            }
        }
        assert_eq!(rs.iter().map(|r| r.pages()).sum::<u64>(), l.present_pages());
        // 0x100..0x200 is flat (unaligned head of the two-level region below 16 MiB).
        assert!(rs.iter().any(|r| r.start == Pfn(0x100) && r.layout == MemmapLayout::Flat));
        assert!(rs.iter().any(|r| r.zone == ZoneType::Normal && r.layout == MemmapLayout::TwoLevel));
    }

    #[test]
    fn rejects_bad_regions() {
        let mut l = MemoryLayout::new();
        let r = RegionSpec { start: Pfn(10), end: Pfn(10), node: 0, mapped: true, layout: MemmapLayout::Flat };
        assert_eq!(l.add_region(r).unwrap_err(), LayoutError::BadRegion(Pfn(10), Pfn(10)));
        let r = RegionSpec { start: Pfn(0), end: Pfn(100), node: 9, mapped: true, layout: MemmapLayout::Flat };
        assert_eq!(l.add_region(r).unwrap_err(), LayoutError::BadNode(9));
        let r = RegionSpec { start: Pfn(0), end: Pfn(100), node: 0, mapped: true, layout: MemmapLayout::Flat };
        l.add_region(r).unwrap();
        let r2 = RegionSpec { start: Pfn(50), end: Pfn(150), ..r };
        assert!(l.add_region(r2).is_err());
        let r3 = RegionSpec { start: Pfn(512), end: Pfn(1024), mapped: false, layout: MemmapLayout::TwoLevel, node: 0 };
        assert_eq!(l.add_region(r3).unwrap_err(), LayoutError::TwoLevelUnmapped(Pfn(512)));
        l.movable_from(Pfn(0));
        assert_eq!(l.zone_boundaries()[2], NORMAL_START);
    }
}
