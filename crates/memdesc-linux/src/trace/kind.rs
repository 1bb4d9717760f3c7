//! [`EventKind`]: the tracepoints this crate knows, without their data — for counting, and
//! the table of their names in the text and their tracefs paths (what `capture` enables).

use serde::Serialize;

/// The kind of an [`Event`](super::Event), without its data (for counting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`Event::PageAlloc`](super::Event::PageAlloc).
    PageAlloc,
    /// [`Event::PageFree`](super::Event::PageFree).
    PageFree,
    /// [`Event::PageFreeBatched`](super::Event::PageFreeBatched).
    PageFreeBatched,
    /// [`Event::Kmalloc`](super::Event::Kmalloc).
    Kmalloc,
    /// [`Event::Kfree`](super::Event::Kfree).
    Kfree,
    /// [`Event::KmemCacheAlloc`](super::Event::KmemCacheAlloc).
    KmemCacheAlloc,
    /// [`Event::KmemCacheFree`](super::Event::KmemCacheFree).
    KmemCacheFree,
    /// [`Event::FilemapAdd`](super::Event::FilemapAdd).
    FilemapAdd,
    /// [`Event::FilemapDelete`](super::Event::FilemapDelete).
    FilemapDelete,
    /// [`Event::LruInsertion`](super::Event::LruInsertion).
    LruInsertion,
    /// [`Event::AllocVmapArea`](super::Event::AllocVmapArea).
    AllocVmapArea,
    /// [`Event::FreeVmapArea`](super::Event::FreeVmapArea).
    FreeVmapArea,
    /// [`Event::PagePoolHold`](super::Event::PagePoolHold).
    PagePoolHold,
    /// [`Event::PagePoolRelease`](super::Event::PagePoolRelease).
    PagePoolRelease,
    /// [`Event::MigratePages`](super::Event::MigratePages).
    MigratePages,
}

impl EventKind {
    /// Number of kinds.
    pub const COUNT: usize = 15;
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; Self::COUNT] = [
        EventKind::PageAlloc,
        EventKind::PageFree,
        EventKind::PageFreeBatched,
        EventKind::Kmalloc,
        EventKind::Kfree,
        EventKind::KmemCacheAlloc,
        EventKind::KmemCacheFree,
        EventKind::FilemapAdd,
        EventKind::FilemapDelete,
        EventKind::LruInsertion,
        EventKind::AllocVmapArea,
        EventKind::FreeVmapArea,
        EventKind::PagePoolHold,
        EventKind::PagePoolRelease,
        EventKind::MigratePages,
    ];

    /// The tracepoint's name as it appears in the text.
    pub const fn tracepoint(self) -> &'static str {
        match self {
            EventKind::PageAlloc => "mm_page_alloc",
            EventKind::PageFree => "mm_page_free",
            EventKind::PageFreeBatched => "mm_page_free_batched",
            EventKind::Kmalloc => "kmalloc",
            EventKind::Kfree => "kfree",
            EventKind::KmemCacheAlloc => "kmem_cache_alloc",
            EventKind::KmemCacheFree => "kmem_cache_free",
            EventKind::FilemapAdd => "mm_filemap_add_to_page_cache",
            EventKind::FilemapDelete => "mm_filemap_delete_from_page_cache",
            EventKind::LruInsertion => "mm_lru_insertion",
            EventKind::AllocVmapArea => "alloc_vmap_area",
            EventKind::FreeVmapArea => "free_vmap_area_noflush",
            EventKind::PagePoolHold => "page_pool_state_hold",
            EventKind::PagePoolRelease => "page_pool_state_release",
            EventKind::MigratePages => "mm_migrate_pages",
        }
    }

    /// The tracefs path below `events/` (`kmem/mm_page_alloc`), as `capture` enables it.
    pub const fn tracefs_path(self) -> &'static str {
        match self {
            EventKind::PageAlloc => "kmem/mm_page_alloc",
            EventKind::PageFree => "kmem/mm_page_free",
            EventKind::PageFreeBatched => "kmem/mm_page_free_batched",
            EventKind::Kmalloc => "kmem/kmalloc",
            EventKind::Kfree => "kmem/kfree",
            EventKind::KmemCacheAlloc => "kmem/kmem_cache_alloc",
            EventKind::KmemCacheFree => "kmem/kmem_cache_free",
            EventKind::FilemapAdd => "filemap/mm_filemap_add_to_page_cache",
            EventKind::FilemapDelete => "filemap/mm_filemap_delete_from_page_cache",
            EventKind::LruInsertion => "pagemap/mm_lru_insertion",
            EventKind::AllocVmapArea => "vmalloc/alloc_vmap_area",
            EventKind::FreeVmapArea => "vmalloc/free_vmap_area_noflush",
            EventKind::PagePoolHold => "page_pool/page_pool_state_hold",
            EventKind::PagePoolRelease => "page_pool/page_pool_state_release",
            EventKind::MigratePages => "migrate/mm_migrate_pages",
        }
    }

    /// The kind whose tracepoint is called `name`.
    pub fn from_tracepoint(name: &[u8]) -> Option<EventKind> {
        Some(match name {
            b"mm_page_alloc" => EventKind::PageAlloc,
            b"mm_page_free" => EventKind::PageFree,
            b"mm_page_free_batched" => EventKind::PageFreeBatched,
            b"kmalloc" => EventKind::Kmalloc,
            b"kfree" => EventKind::Kfree,
            b"kmem_cache_alloc" => EventKind::KmemCacheAlloc,
            b"kmem_cache_free" => EventKind::KmemCacheFree,
            b"mm_filemap_add_to_page_cache" => EventKind::FilemapAdd,
            b"mm_filemap_delete_from_page_cache" => EventKind::FilemapDelete,
            b"mm_lru_insertion" => EventKind::LruInsertion,
            b"alloc_vmap_area" => EventKind::AllocVmapArea,
            b"free_vmap_area_noflush" => EventKind::FreeVmapArea,
            b"page_pool_state_hold" => EventKind::PagePoolHold,
            b"page_pool_state_release" => EventKind::PagePoolRelease,
            b"mm_migrate_pages" => EventKind::MigratePages,
            _ => return None,
        })
    }
}
