//! The raw interface: every public `unsafe fn` entry point of the crate that takes a pfn or a
//! pointer instead of an owned handle, and the `unsafe impl Send/Sync` of the owned handles.
//!
//! Each raw function is a thin wrapper over a crate-private *checked* function of its layer
//! (named `*_owned` or `*_checked`, documented "the caller owns …") that the safe APIs and the
//! internal callers use; the raw function adds nothing but its contract. Keeping them in one
//! file lets a reviewer audit the whole raw surface in one place.
//!
//! # Invariants
//! 1. A raw function's `# Safety` section states exactly what the caller gives up or proves
//!    (ownership of a pfn range, an object, a reference count); the function does nothing the
//!    checked function it wraps would not do for an owner.
//! 2. The checked function still validates everything it can see (pfn range, page kind, order,
//!    cache identity) and returns a typed error for what it catches; the contract covers only
//!    what the memmap cannot tell (who owns the thing).
//! 3. An owned handle is `Send`/`Sync` only when what it names is reached solely through the
//!    machine's own synchronisation (the memmap's atomic words, locks, per-CPU claims).
//!
//! Sections, one per layer; each layer's helper adds code only to its own section.

// ---- page_alloc ----

// Paths are written out (no `use` lines) so that the sections' imports cannot collide.

impl<P: crate::platform::Platform> crate::machine::PhysMem<P> {
    /// Frees raw memory by pfn and order. Checked: a double free, a free of a tail page, of
    /// the wrong order, of reserved or poisoned memory, of another kind's pages or of the
    /// crate's internal pages ([`FreeError::Internal`](crate::FreeError::Internal)) returns an
    /// error and changes nothing.
    ///
    /// # Safety
    /// The caller owns the block: `pfn` heads a block of exactly `order` pages that this
    /// machine handed out through [`PhysMem::alloc_pages_raw`](crate::PhysMem::alloc_pages_raw)
    /// (or [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) followed by
    /// [`Pages::into_raw`](crate::Pages::into_raw)), it has not been freed since, nobody else
    /// holds a [`Pages`](crate::Pages) for it, and nothing uses its memory after this call.
    /// The word checks cannot tell the owner from anyone else: a free of somebody else's
    /// block passes them and makes that block's memory the next allocation's.
    #[inline]
    pub unsafe fn free_pages_raw(
        &self,
        cpu: &crate::cpu::Cpu<'_>,
        pfn: crate::addr::Pfn,
        order: u32,
    ) -> Result<(), crate::page_alloc::FreeError> {
        // Invariant 1: the caller's contract is `free_pages_owned`'s precondition, word for
        // word; invariant 2: it checks the word, order and kind itself.
        self.pages.free_pages_owned(cpu, pfn, order)
    }
}

impl crate::page_alloc::pages::Pages {
    /// Makes the handle of a raw block again.
    ///
    /// # Safety
    /// The caller owns the block: `pfn` heads a block of exactly `order` that was allocated by
    /// `mem` with [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) or
    /// [`PhysMem::alloc_pages_raw`](crate::PhysMem::alloc_pages_raw), has not been freed
    /// since, and no other `Pages` or raw owner of it remains (this handle becomes the only
    /// one).
    #[inline]
    pub unsafe fn from_raw<P: crate::platform::Platform>(
        mem: &crate::machine::PhysMem<P>,
        pfn: crate::addr::Pfn,
        order: u32,
    ) -> Self {
        // Invariant 1: the handle only records what the caller vouches for; freeing it is
        // still checked (invariant 2).
        Self::new(pfn, order, mem.machine_id())
    }
}

// ---- slab ----

// ---- folio ----

// ---- mm ----

// ---- pools ----

// ---- health ----
