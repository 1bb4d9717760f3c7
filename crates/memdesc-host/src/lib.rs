//! memdesc-host: a simulated machine for the memdesc core, with std.
//!
//! - [`SimPlatform`] implements [`memdesc::Platform`]: physical memory is one large
//!   `MAP_NORESERVE` anonymous mapping indexed by physical address, so only touched memory
//!   costs host RAM (a 1 TiB machine fits on a 24 GiB host). Regions registered as *unmapped*
//!   (highmem, pmem without a direct map) are backed by a memfd instead and have no direct
//!   map; `map_local` really `mmap`s one page of it and `unmap_local` unmaps it.
//! - [`SimMachine`] boots a [`PhysMem`] over it; CPUs are explicit [`memdesc::Cpu`]
//!   tokens that test threads claim.
//! - [`SimDevice`] is a DMA engine copying through scatter-gather lists.
#![deny(missing_docs)]

pub mod device;
mod platform;
pub mod torture;

pub use device::{DmaError, SimDevice};
pub use platform::{Residency, SimError, SimPlatform};

use memdesc::{BootFailure, Config, MemoryLayout, PhysMem};

/// A booted simulated machine.
pub type SimMachine = PhysMem<SimPlatform>;

/// Boots a simulated machine with `layout`.
///
/// ```
/// use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout};
/// let m = memdesc_host::boot(&MemoryLayout::pc(1, MemmapLayout::Flat), Config::default()).unwrap();
/// let cpu = m.cpus().claim(0).unwrap();
/// let pages = m.alloc_pages(&cpu, 0, Gfp::KERNEL).unwrap();
/// m.free_pages(&cpu, pages).unwrap();
/// ```
///
/// After boot the host backs the boot allocations (the memmap above all) with 2 MiB pages
/// where it can, as a kernel maps its memmap ([`SimPlatform::back_with_huge_pages`];
/// `m.platform().huge_pages()` says how many).
pub fn boot(layout: &MemoryLayout, config: Config) -> Result<SimMachine, HostError> {
    let platform = SimPlatform::new(layout)?;
    let m = PhysMem::boot(platform, layout, config).map_err(HostError::Boot)?;
    m.reserved_ranges(|start, end| {
        m.platform().back_with_huge_pages(start, end);
    });
    Ok(m)
}

/// Why a simulated machine could not be created.
#[derive(Debug)]
pub enum HostError {
    /// The host refused the memory mapping.
    Sim(SimError),
    /// The core could not boot.
    Boot(BootFailure),
}

impl From<SimError> for HostError {
    fn from(e: SimError) -> Self {
        HostError::Sim(e)
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Sim(e) => write!(f, "simulated memory: {e}"),
            HostError::Boot(e) => write!(f, "boot failed: {e:?}"),
        }
    }
}

impl std::error::Error for HostError {}
