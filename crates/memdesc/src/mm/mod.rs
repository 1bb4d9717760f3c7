//! Address spaces (layer 5 of the core, feature `pgtable`), split along Linux's seams:
//!
//! - [`pgtable`]: x86-64 4-level page tables — table pages and their ptdescs, entries, the
//!   walk, and mapping and unmapping of PTEs with their mapcount and references.
//! - [`mmap`]: address spaces ([`mmap::Mm`], [`mmap::MmRef`]), VMAs, their slab caches, fork
//!   and teardown.
//! - [`rmap`]: the reverse map — anon_vmas and file `i_mmap` lists, and the walk from a folio
//!   to every entry mapping it (used by migration and hwpoison).
//! - [`huge`]: PMD mappings of 2 MiB folios, the deposited PTE table, PMD split, and the
//!   split of a mapped folio.
//! - [`mappable`]: the one mappability rule (which page kinds may be mapped where) and
//!   mappable driver memory.
//!
//! **Locking**, outermost first: the mm's lock (its VMA list; one operation per mm at a
//! time) → the VMA's rmap lock (anon_vma or `i_mmap`; every entry mapping a folio changes
//! under it, so a walk that holds it sees a folio's mappings stable) → the mm's page-table
//! lock (table allocation, freeing and walking) → a table's ptdesc lock (around each entry
//! write). The rmap walk takes the rmap lock, then one mm's page-table lock at a time.
//! Migration (`migrate.rs`) holds a folio's rmap lock across its freeze, copy and entry
//! rewrite, with a cached file folio's address space lock nested between the rmap and
//! page-table locks (this layer never takes a page cache lock). The mapping path takes a
//! temporary reference with `try_get` (waiting while a migration has the folio frozen) before
//! it reads the folio's pfn, so it never writes an entry to pages a migration is leaving.
//!
//! This layer touches page-table pages, its own kernel objects, the counts, `mapping` and
//! `index` of the folios it maps, the words of the tables it allocates and of the mappable
//! memory it allocates.
//!
//! **Structure.** Every operation is a method of the view [`Mms`] (the folio view, the slab
//! view and the page allocator below it) or of the handles it makes ([`mmap::MmCaches`],
//! [`mmap::MmRef`], which hold the view); `machine/mm.rs` forwards the public ones from
//! `PhysMem`. The layer imports only itself and the layers below (folio, slab, page_alloc,
//! memmap, base).
//!
//! **No unchecked code here.** Lists are `base::list::List`s: an mm's VMAs (`List<Vma>` under the
//! mm's lock, `VmaGuard`) and the rmap lists (`List<RmapLink>`, each VMA's first
//! field, `RmapGuard`); the `Mm` is a `CacheObj` its `MmRef` owns; VMAs keep their mm
//! and rmap list as `Kept` fields; descriptors named by page words come through one
//! checked path (`Mms::mm_desc`). The few unchecked steps — the `Linked` impls,
//! the two unlinks, turning a link back into its VMA, the allocation of the shared VMAs and
//! anon_vmas, the RCU `mapping` → rmap-list lookup — are in the "mm" section of
//! `machine/raw.rs`, with the invariants (M1–M7) they rely on.

use crate::folio::Folios;
use crate::page_alloc::PageAllocator;
use crate::platform::Platform;
use crate::slab::Slabs;

pub mod huge;
pub mod mappable;
pub mod mmap;
pub mod pgtable;
pub mod rmap;

/// The address-space layer seen with the layers below it (the folio layer for folios and
/// their splits, the slab layer for its kernel objects and descriptors, the page allocator for
/// table pages and words): every page-table, VMA, rmap and mappable-memory operation is a
/// method of this view or of the handles it makes ([`mmap::MmCaches`], [`mmap::MmRef`]); see
/// [`crate::machine`] for the pattern.
///
/// The layer keeps no machine-wide state of its own: address spaces, VMAs and anon_vmas live
/// in the slab caches of an [`mmap::MmCaches`] its caller owns, tables and mappable memory in
/// pages and descriptors of the layers below. So the view has no `state` field.
pub struct Mms<'a, P: Platform> {
    pages: &'a PageAllocator<P>,
    slabs: Slabs<'a, P>,
    folios: Folios<'a, P>,
}

impl<P: Platform> Clone for Mms<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Mms<'_, P> {}

impl<'a, P: Platform> Mms<'a, P> {
    /// The view over the folio and slab layers and the page allocator (the machine makes it).
    #[inline]
    pub(crate) fn new(pages: &'a PageAllocator<P>, slabs: Slabs<'a, P>, folios: Folios<'a, P>) -> Self {
        Mms { pages, slabs, folios }
    }

    /// The slab layer's view below this one.
    #[inline]
    pub(crate) fn slabs(&self) -> Slabs<'a, P> {
        self.slabs
    }

    /// The page allocator this view's machine is built on: what the references this layer
    /// hands out borrow (its lifetime is the machine's).
    #[inline]
    pub(crate) fn machine(&self) -> &'a PageAllocator<P> {
        self.pages
    }
}
