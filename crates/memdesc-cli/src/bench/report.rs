//! What `memdesc bench` measured: the report serialised as the `--json` output.

use serde::Serialize;

use super::memmap::*;
use super::page_alloc::*;
use super::trace::*;

/// Everything `memdesc bench` measured; serialised as the `--json` output.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// How the run was made.
    pub meta: Meta,
    /// The memmap section, keyed by machine (`flat_64g`, `two_level_1t`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memmap: Option<std::collections::BTreeMap<String, MemmapResult>>,
    /// The page_alloc section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_alloc: Option<PageAllocResult>,
    /// The slab section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slab: Option<crate::slab_bench::SlabBench>,
    /// The compaction section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<crate::compaction_bench::CompactionBench>,
    /// The replay section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayBench>,
    /// The estimate section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateBench>,
    /// Descriptor sizes (`size_of` of the real types; always present, costs nothing).
    pub descriptors: crate::sizes::Descriptors,
    /// The pgtable section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgtable: Option<crate::pgtable_bench::PgtableBench>,
    /// The zsmalloc section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zsmalloc: Option<crate::zs_bench::ZsBench>,
    /// z3fold on the zsmalloc section's objects, for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z3fold: Option<crate::zs_bench::Density>,
}

/// How the run was made.
#[derive(Serialize, Debug, Default)]
pub struct Meta {
    /// `--quick`.
    pub quick: bool,
    /// Whether this binary was built with optimisations.
    pub optimized: bool,
    /// CPUs the host offers.
    pub host_cpus: usize,
    /// The host's 1-minute load average when the run started (other work skews timings).
    pub host_loadavg_1m: Option<f64>,
    /// Seed of every random sequence.
    pub seed: u64,
}
