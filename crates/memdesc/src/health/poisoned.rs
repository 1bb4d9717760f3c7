//! What a poisoned page was ([`PoisonedKind`]): the vocabulary of a hardware-poison report,
//! shared by the handler ([`super::hwpoison`], which re-exports it) and the per-kind table
//! ([`super::kinds`], whose entries say what a page left in place was), so that neither
//! imports the other for it.

use crate::word::Subtype;

/// What the poisoned page was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoisonedKind {
    /// A free page in the buddy lists.
    Free,
    /// A free page on a per-CPU list.
    FreePerCpu,
    /// A page of an unmapped anonymous folio.
    AnonFolio {
        /// Order of the folio before it was split.
        order: u32,
    },
    /// A page of a page-cache folio.
    FileFolio {
        /// Order of the folio before it was split.
        order: u32,
        /// File index of the lost page.
        index: u64,
        /// Address of the address space it was removed from (0 if it was not cached).
        mapping: usize,
    },
    /// A slab page.
    Slab {
        /// The cache's name.
        cache: &'static str,
        /// Objects in use in the slab (their contents are lost).
        objects_in_use: u32,
        /// Objects the slab holds.
        objects: u32,
    },
    /// A page-table page.
    PageTable,
    /// A zsmalloc component page.
    Zsmalloc {
        /// Objects with a byte on the page (lost).
        objects_lost: u32,
        /// Objects in use in the zspage before (the others stay readable).
        objects_in_use: u32,
    },
    /// A z3fold page.
    Z3fold {
        /// Objects on the page (lost).
        objects_lost: u32,
    },
    /// A page of a vmalloc area.
    Vmalloc {
        /// The area's record address (identifies the area, as `VmallocDesc::area`).
        area: usize,
        /// The page's index in the area.
        index: u64,
        /// Whether the area may be mapped to user space.
        mappable: bool,
    },
    /// A page_pool (netmem) page.
    PagePool {
        /// Address of the owning pool.
        pool: usize,
        /// Page-table entries mapping it (zero-copy receive).
        mapcount: u32,
    },
    /// Mappable driver memory.
    Mappable {
        /// Address of the owning driver object.
        owner: usize,
        /// Order of the block.
        order: u32,
        /// Page-table entries mapping the block.
        mapcount: u32,
    },
    /// An undescribed page in use (reserved, raw kernel memory, memmap, …).
    Undescribed(Subtype),
}
