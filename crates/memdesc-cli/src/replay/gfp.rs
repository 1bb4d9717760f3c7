//! GFP translation: what a traced Linux allocation's GFP flags and migratetype say about it
//! (a slab page, a page-table page) and the simulated machine's [`Gfp`] for it.

use memdesc::Gfp;
use memdesc_linux::trace::Gfp as LinuxGfp;

/// Whether a page allocation is one of SLUB's slab allocations, by its GFP flags: SLUB asks
/// for its preferred slab order with `__GFP_NOWARN | __GFP_NORETRY` (printed inside
/// `GFP_NOWAIT` where that applies) and always `__GFP_COMP`; slab pages are never movable.
/// Readahead also uses `__GFP_NORETRY`, but its pages are movable.
pub fn linux_slab_page(gfp: &LinuxGfp<'_>, migratetype: i32) -> bool {
    let mut noretry = false;
    let mut nowarn = false;
    let mut comp = false;
    for f in gfp.names() {
        match f {
            "__GFP_NORETRY" => noretry = true,
            "__GFP_NOWARN" | "GFP_NOWAIT" => nowarn = true,
            "__GFP_COMP" => comp = true,
            "__GFP_MOVABLE" | "__GFP_HIGHMEM" | "GFP_HIGHUSER_MOVABLE" | "GFP_HIGHUSER" => return false,
            _ => {}
        }
    }
    noretry && nowarn && comp && migratetype != 1
}

/// Whether a page allocation looks like a page-table page (`GFP_PGTABLE_USER`/`_KERNEL`:
/// `GFP_KERNEL[_ACCOUNT] | __GFP_ZERO`, order 0, unmovable); only used to label raw pages.
pub(crate) fn page_table_page(gfp: &LinuxGfp<'_>, order: u32, migratetype: i32) -> bool {
    order == 0
        && migratetype == 0
        && gfp.contains("__GFP_ZERO")
        && (gfp.0.starts_with("GFP_KERNEL_ACCOUNT") || gfp.0.starts_with("GFP_KERNEL|"))
}

pub(crate) fn sim_gfp(gfp: &LinuxGfp<'_>, migratetype: i32) -> Gfp {
    let mut g = match migratetype {
        1 => Gfp::MOVABLE,
        2 => Gfp::RECLAIMABLE,
        _ => Gfp::KERNEL,
    };
    for f in gfp.names() {
        match f {
            "__GFP_DMA32" | "GFP_DMA32" => g = g | Gfp::DMA32,
            "__GFP_DMA" | "GFP_DMA" => g = g | Gfp::DMA,
            _ => {}
        }
    }
    g
}
