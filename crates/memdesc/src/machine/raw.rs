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

// ---- slab ----

// ---- folio ----

// ---- mm ----

// ---- pools ----

// ---- health ----
