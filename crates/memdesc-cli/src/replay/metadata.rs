//! What the replay measures about metadata: a [`Sample`] of the bytes Linux and memdesc spend
//! as the trace goes, and each descriptor cache's geometry and occupancy at the end
//! ([`DescCache`]).

/// A sample of the metadata bytes.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sample {
    /// Events replayed so far.
    pub events: u64,
    /// Linux: 64 B per page.
    pub linux: u64,
    /// memdesc: words (memmap) + descriptor and slab-descriptor memory.
    pub memdesc: u64,
    /// Of that, the memmap.
    pub words: u64,
    /// Two-level areas split on the simulated machine (memdesc's own placement; 0 with the
    /// flat memmap).
    pub split_areas: u64,
    /// Two-level areas that would be split with the traced machine's placement (the pfns the
    /// trace names): an area is uniform when no traced allocation covers it, when one folio
    /// of order ≥ 9 covers all of it, or when all of it is reserved.
    pub traced_split_areas: u64,
    /// memdesc with a two-level memmap and the traced placement: one word per 2 MiB area of
    /// the traced pfn space, a 512-word table per traced split area, and the same descriptor
    /// slabs as `memdesc`.
    pub traced_two_level: u64,
    /// Free pages of the simulated machine (buddy and per-CPU lists): the sample with the
    /// fewest is the peak of live memory.
    pub free_pages: u64,
}

/// One descriptor cache of the simulated machine at the end of the replay: its real geometry
/// and what it holds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DescCache {
    /// Cache name.
    pub name: &'static str,
    /// `size_of` of the descriptor.
    pub object_bytes: usize,
    /// Distance between objects in a slab.
    pub stride: usize,
    /// Objects per slab (for `slab_desc`: besides the slab's own descriptor).
    pub objects_per_slab: u32,
    /// Slab order.
    pub slab_order: u32,
    /// Slabs.
    pub slabs: u64,
    /// Objects in use (handed out or in per-CPU sheaves).
    pub active_objects: u64,
    /// Object slots in all slabs.
    pub objects: u64,
    /// Bytes of the slabs: what `memdesc` charges for this cache.
    pub bytes: u64,
}
