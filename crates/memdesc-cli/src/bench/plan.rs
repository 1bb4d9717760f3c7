//! What one `memdesc bench` run measures: its machines, sizes and repetitions ([`Plan`]).

use memdesc::MemmapLayout;

/// Pages in one GiB.
pub(crate) const GIB_PAGES: u64 = 1 << 18;

/// One machine of the memmap section.
#[derive(Clone, Copy, Debug)]
pub struct MemmapMachine {
    /// RAM in GiB (the layout is [`MemoryLayout::pc`](memdesc::MemoryLayout::pc)).
    pub gib: u64,
    /// Memmap layout of its main regions.
    pub layout: MemmapLayout,
}

impl MemmapMachine {
    /// The JSON key: `flat_64g`, `two_level_1t`.
    pub fn key(&self) -> String {
        let layout = match self.layout {
            MemmapLayout::Flat => "flat",
            MemmapLayout::TwoLevel => "two_level",
        };
        if self.gib >= 1024 && self.gib.is_multiple_of(1024) {
            format!("{layout}_{}t", self.gib / 1024)
        } else {
            format!("{layout}_{}g", self.gib)
        }
    }
}

/// Sizes and repetitions of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--quick`.
    pub quick: bool,
    /// Machines of the memmap section.
    pub memmap_machines: Vec<MemmapMachine>,
    /// Repetitions of each memmap measurement.
    pub memmap_reps: usize,
    /// Pages of the page_alloc machine (one flat region in the Normal zone; the peer manages
    /// the same frame range).
    pub machine_pages: u64,
    /// Order-0 pages allocated before the pair loop (half of them are then freed).
    pub steady_pages: u64,
    /// Alloc+free pairs per timed run.
    pub pairs: u64,
    /// Operations of the mixed sequence.
    pub mixed_ops: usize,
    /// Most live blocks in the mixed sequence.
    pub mixed_max_live: usize,
    /// Pairs per thread in the scaling runs: enough that the two threads' runs overlap
    /// (about 0.1 s), however long the scheduler takes to put them on two CPUs.
    pub thread_pairs: u64,
    /// Rounds of the scaling runs (each one thread then two threads).
    pub thread_reps: usize,
    /// Timed rounds of each other page_alloc measurement (after one warm-up).
    pub reps: usize,
    /// Run the slab section (reads a real trace; tiny test plans leave it out).
    pub slab: bool,
    /// Run the replay and estimate sections (real data; tiny test plans leave them out).
    pub real_data: bool,
    /// Pages of real files the zsmalloc section compresses and stores.
    pub zs_pages: usize,
    /// Most threads of the scaling runs (`--threads`): 1, 2, …, `threads` are measured.
    pub threads: usize,
    /// Objects (pages, kmalloc objects) handed from CPU 0 to CPU 1 per timed cross-CPU run.
    pub cross_objects: u64,
    /// Objects per batch handed over in the cross-CPU runs.
    pub cross_batch: usize,
}

impl Plan {
    /// The plan for `memdesc bench` (`quick` for `--quick`).
    pub fn new(quick: bool) -> Self {
        let memmap_machines = vec![
            MemmapMachine { gib: 64, layout: MemmapLayout::Flat },
            MemmapMachine { gib: 1024, layout: MemmapLayout::TwoLevel },
        ];
        // The workloads are the same in both modes; --quick only takes fewer rounds.
        let (reps, thread_reps, memmap_reps) = if quick { (5, 3, 1) } else { (21, 9, 3) };
        Plan {
            quick,
            memmap_machines,
            memmap_reps,
            machine_pages: 8 * GIB_PAGES,
            steady_pages: GIB_PAGES,
            pairs: 200_000,
            mixed_ops: 250_000,
            mixed_max_live: 4096,
            thread_pairs: 2_000_000,
            thread_reps,
            reps,
            slab: true,
            real_data: true,
            zs_pages: if quick { 4096 } else { 32768 },
            threads: 2,
            cross_objects: 1_000_000,
            cross_batch: super::threads::HANDOFF_BATCH,
        }
    }
}
