//! The library behind the `memdesc` command: one module per subcommand or benchmark section,
//! shared by the binary (`main.rs`, which only parses arguments and dispatches) and the
//! criterion benchmarks (`benches/`).
#![deny(missing_docs)]

pub mod args;
pub mod bench;
pub mod capture;
pub mod compaction_bench;
pub mod data_dirs;
pub mod estimate;
pub mod measure;
pub mod pgtable_bench;
pub mod replay;
pub mod sizes;
pub mod slab_bench;
pub mod torture;
pub mod zs_bench;
