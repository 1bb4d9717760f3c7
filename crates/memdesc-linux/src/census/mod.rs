//! The page census: every pfn of a kpageflags/kpagecount snapshot classified exactly once.
//!
//! # Which pfns are counted
//! A pfn is counted if it lies in the pfn span of some zone of `zoneinfo`
//! (`start_pfn .. start_pfn + spanned`), within the snapshot, and kpageflags does not say
//! [`KPF_NOPAGE`]. Pfns outside every zone (pfn 0 on x86) and `NOPAGE` pfns are reported
//! separately ([`Census::outside_zones`], [`Census::nopage`]) and are not part of
//! [`Census::total`].
//!
//! # Kinds, in order of precedence
//! A pfn's own flags decide its kind; the first rule that matches wins:
//! 1. [`Kind::Hole`] / [`Kind::Uninit`] — see *blank pages* below;
//! 2. `SLAB` → [`Kind::Slab`]; 3. `PGTABLE` → [`Kind::PageTable`]; 4. `BUDDY` →
//!    [`Kind::Free`]; 5. `HWPOISON`; 6. `OFFLINE`; 7. `ZERO_PAGE`; 8. `RESERVED`;
//! 9. `ANON` (KSM pages included) → [`Kind::Anon`];
//! 10. any page-cache or LRU state (`LRU`, `UPTODATE`, `DIRTY`, `WRITEBACK`, `MAPPEDTODISK`,
//!     `SWAPBACKED` without `ANON` — shmem —, `PRIVATE`, `UNEVICTABLE`, `MLOCKED`,
//!     `SWAPCACHE`, `HUGE`, `THP`, `ACTIVE`, `RECLAIM`) → [`Kind::File`];
//! 11. anything else → [`Kind::Other`] (kernel memory the kernel does not type: `alloc_pages`
//!     users such as the ftrace ring buffer, kernel stacks, vmalloc, page_pool, large
//!     kmalloc; and pages mapped to user space without LRU state).
//!
//! Because `SLAB` and `PGTABLE` outrank everything else and no rule reassigns such a page,
//! the census's slab and page-table counts equal the number of pfns carrying those bits —
//! an exact check run against every snapshot in the data.
//!
//! # Compound pages, folios, slabs: descriptor groups
//! A run `COMPOUND_HEAD, COMPOUND_TAIL*` is one allocation: one folio (anon/file), one slab,
//! one compound kernel allocation. A page that is neither head nor tail is a group of one.
//! The group's order is ⌈log2(length)⌉ (a length that is not a power of two is counted in
//! [`Census::irregular_groups`]). A tail whose own flags say only [`Kind::Other`] inherits the
//! kind of an anon/file group it continues (older kernels do not copy the folio's flags to
//! tails). This is how slab boundaries are known too: kpageflags marks multi-page slabs as
//! compound, so a slab's descriptor count is its number of head (or single) pages — no
//! guessing from `slabinfo`'s `pagesperslab`.
//!
//! # Blank pages: holes, deferred initialisation, untyped kernel memory
//! A *blank* pfn has no flag and map count 0. Three different things look like that:
//! holes inside a zone's span (the PCI hole below 4 GiB on x86 reads blank, not `NOPAGE`),
//! memory not yet initialised by deferred struct-page initialisation (zoneinfo's
//! `present − managed` pages, at the top of the zone, since Linux initialises them upward in
//! section-sized steps as it needs them), and kernel memory that carries no flag at all
//! (ring buffers, page-table-less `alloc_pages` users). Zoneinfo tells how many of the first
//! two a zone has: `A = spanned − managed − (pfns flagged RESERVED in the zone)` (holes that
//! the kernel marks RESERVED, like the legacy BIOS area, count as reserved and are not in
//! `A`). The census labels `A` blank pfns per zone: first the contiguous blank run at the
//! zone's top, then whole blank 2 MiB-aligned areas from the top down; of those, the lowest
//! `min(A, spanned − present)` are [`Kind::Hole`] and the rest [`Kind::Uninit`]. What cannot
//! be labelled that way is reported in [`Census::unexplained_absent`] (0 on all the data).
//!
//! # Free pages: two kernel behaviours
//! Linux 6.18 (our data) marks **every** page of a free block `BUDDY`; older kernels mark only
//! the block's first page and leave the rest blank, and kpageflags never says the order.
//! [`BuddyMode::Auto`] tells them apart: a run of three or more consecutive `BUDDY` pfns
//! cannot happen when only heads are marked (two adjacent free buddies of one order would have
//! merged), so such a run means every page is marked. In head-only mode the block that starts
//! at a `BUDDY` pfn `p` is taken to be the largest order `k ≤ max_order` with `p` aligned to
//! `2^k` and the following `2^k − 1` pfns all blank — the largest block the buddy allocator
//! could have there, and the reading that keeps the census consistent with `buddyinfo`'s free
//! page total (free memory is normally in large blocks, and blank non-free pages right after a
//! free head are rare). In every-page mode the free blocks are the maximal `BUDDY` runs cut
//! into aligned power-of-two blocks ([`Census::free_blocks_by_order`]), which can be compared
//! with `buddyinfo`'s histogram.
//!
//! # 2 MiB areas (for the two-level memmap)
//! The census also walks the 512-pfn areas that cover the zones: an area is *uniform* when
//! its 512 pfns are all free, all unavailable (reserved, hole, uninitialised, NOPAGE or
//! outside every zone), or all one anon/file folio of order ≥ 9; otherwise it is *split*
//! (the two-level memmap needs a 512-word table for it). See [`crate::cost`].
//!
//! [`KPF_NOPAGE`]: crate::kpf::KPF_NOPAGE
//!
//! # Where the parts are
//! * `kind` — [`Kind`], [`KindCounts`] and [`base_kind`] (rules 2–11 above);
//! * `options` — [`CensusOptions`], [`BuddyMode`];
//! * `report` — what a census reports: [`Census`], [`ZoneCensus`], [`AreaCensus`];
//! * `zones` — zone spans and the labelling of blank pfns (holes, uninitialised);
//! * `buddy` — the buddy-mode detection, free-block decomposition and order histograms;
//! * `walk` — the pass over the pfns: [`census`], [`census_runs`] ([`Run`]),
//!   [`Census::from_snapshot`].
//!
//! Imports go one way: `walk` uses the others; `zones` uses `report` and `kind`; `report` uses
//! `kind` and `options`; `buddy` uses `options`; `kind` and `options` use no other part. This
//! file only re-exports.

mod buddy;
mod kind;
mod options;
mod report;
mod walk;
mod zones;

pub use kind::{base_kind, Kind, KindCounts};
pub use options::{BuddyMode, CensusOptions, MAX_ORDER_LIMIT};
pub use report::{AreaCensus, Census, ZoneCensus, AREA_PAGES};
pub use walk::{census, census_runs, Run};
