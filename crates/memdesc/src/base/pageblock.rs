//! Migratetypes and pageblocks: every 2 MiB pageblock has a migratetype, and free blocks sit on
//! the free list of their pageblock's type, so movable and unmovable memory do not interleave
//! needlessly (which is what later lets compaction build large free blocks).

/// A migratetype, numbered as Linux numbers them in /proc/pagetypeinfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MigrateType {
    /// Kernel memory that cannot move.
    Unmovable = 0,
    /// User and page-cache memory that compaction can move.
    Movable = 1,
    /// Memory the kernel can reclaim (slab caches with shrinkers).
    Reclaimable = 2,
    /// Reserve for high-priority atomic allocations.
    HighAtomic = 3,
    /// Isolated for offlining or compaction: never allocated from, never merged into.
    Isolate = 4,
}

/// Number of migratetypes (free lists per order).
pub const NR_MIGRATETYPES: usize = 5;
/// Migratetypes that have per-CPU lists.
pub(crate) const NR_PCP_TYPES: usize = 3;

impl MigrateType {
    /// All types in list order.
    pub const ALL: [MigrateType; NR_MIGRATETYPES] = [
        MigrateType::Unmovable,
        MigrateType::Movable,
        MigrateType::Reclaimable,
        MigrateType::HighAtomic,
        MigrateType::Isolate,
    ];

    /// The name /proc/pagetypeinfo prints.
    pub fn name(self) -> &'static str {
        match self {
            MigrateType::Unmovable => "Unmovable",
            MigrateType::Movable => "Movable",
            MigrateType::Reclaimable => "Reclaimable",
            MigrateType::HighAtomic => "HighAtomic",
            MigrateType::Isolate => "Isolate",
        }
    }

    /// From the bits stored in words and pageblock bytes.
    pub fn from_bits(b: u8) -> Option<MigrateType> {
        MigrateType::ALL.get(b as usize).copied()
    }

    /// The types to steal from when this type's lists are empty, in preference order
    /// (the same preferences as Linux's fallback table).
    pub(crate) fn fallbacks(self) -> &'static [MigrateType] {
        match self {
            MigrateType::Unmovable => &[MigrateType::Reclaimable, MigrateType::Movable],
            MigrateType::Movable => &[MigrateType::Reclaimable, MigrateType::Unmovable],
            MigrateType::Reclaimable => &[MigrateType::Unmovable, MigrateType::Movable],
            MigrateType::HighAtomic | MigrateType::Isolate => &[],
        }
    }

    /// Whether this type has per-CPU lists.
    pub(crate) fn has_pcp(self) -> bool {
        (self as usize) < NR_PCP_TYPES
    }
}
