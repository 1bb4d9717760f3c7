//! The typed events of a trace: one [`Event`] per known tracepoint, with the values it
//! carries ([`Gfp`] flags, [`PageCacheEvent`], [`LruFlags`]), and the [`Record`] of one event
//! line (task, CPU, timestamp, event). Strings borrow from the line they were parsed from.

use super::kind::EventKind;

/// `%pS`-printed call site (`alloc_inode+0xa3/0xd0`).
pub type CallSite<'a> = &'a str;

/// A `gfp_flags=` value as the kernel printed it (`GFP_KERNEL|__GFP_ZERO`, or `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gfp<'a>(pub &'a str);

impl<'a> Gfp<'a> {
    /// Whether `flag` (for example `__GFP_COMP` or `GFP_KERNEL`) is one of the `|`-separated
    /// names.
    pub fn contains(&self, flag: &str) -> bool {
        self.0.split('|').any(|f| f == flag)
    }

    /// The printed names.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.0.split('|').filter(|f| !f.is_empty() && *f != "none")
    }
}

/// The page-cache identity of an `mm_filemap_*` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCacheEvent {
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode number.
    pub ino: u64,
    /// First pfn of the folio.
    pub pfn: u64,
    /// Byte offset of the folio in the file.
    pub offset: u64,
    /// Folio order (0 where the kernel does not print it).
    pub order: u32,
}

/// The flags column of `mm_lru_insertion` (`flags=Ma bd `).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LruFlags {
    /// `M`: mapped.
    pub mapped: bool,
    /// `a` (anonymous) rather than `f` (file).
    pub anon: bool,
    /// `s`: in the swap cache.
    pub swapcache: bool,
    /// `b`: swap-backed.
    pub swapbacked: bool,
    /// `d`: mapped to disk.
    pub mappedtodisk: bool,
    /// `B`: has buffers.
    pub buffers: bool,
}

/// One traced event, typed. Strings borrow from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `kmem:mm_page_alloc`. `pfn` is `None` for a failed allocation.
    PageAlloc {
        /// First pfn of the block.
        pfn: Option<u64>,
        /// Block order.
        order: u32,
        /// Migrate type (0 unmovable, 1 movable, 2 reclaimable, ...; -1 when unknown).
        migratetype: i32,
        /// GFP flags.
        gfp: Gfp<'a>,
    },
    /// `kmem:mm_page_free`.
    PageFree {
        /// First pfn of the block.
        pfn: u64,
        /// Block order.
        order: u32,
    },
    /// `kmem:mm_page_free_batched` (always order 0).
    PageFreeBatched {
        /// The pfn.
        pfn: u64,
    },
    /// `kmem:kmalloc`.
    Kmalloc {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
        /// Bytes requested.
        bytes_req: u64,
        /// Bytes allocated (the size class).
        bytes_alloc: u64,
        /// GFP flags.
        gfp: Gfp<'a>,
        /// NUMA node asked for (-1: any).
        node: i32,
    },
    /// `kmem:kfree`. `ptr` 0 is `kfree(NULL)`.
    Kfree {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
    },
    /// `kmem:kmem_cache_alloc`.
    KmemCacheAlloc {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
        /// Cache name (kernels before 6.0 do not print it).
        name: Option<&'a str>,
        /// Bytes requested.
        bytes_req: u64,
        /// Bytes allocated (the cache's object size).
        bytes_alloc: u64,
        /// GFP flags.
        gfp: Gfp<'a>,
        /// NUMA node asked for (-1: any).
        node: i32,
    },
    /// `kmem:kmem_cache_free`.
    KmemCacheFree {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
        /// Cache name (kernels before 6.0 do not print it).
        name: Option<&'a str>,
    },
    /// `filemap:mm_filemap_add_to_page_cache`.
    FilemapAdd(PageCacheEvent),
    /// `filemap:mm_filemap_delete_from_page_cache`.
    FilemapDelete(PageCacheEvent),
    /// `pagemap:mm_lru_insertion`.
    LruInsertion {
        /// First pfn of the folio.
        pfn: u64,
        /// LRU list (0 inactive anon, 1 active anon, 2 inactive file, 3 active file,
        /// 4 unevictable).
        lru: u32,
        /// The folio's flags.
        flags: LruFlags,
    },
    /// `vmalloc:alloc_vmap_area`.
    AllocVmapArea {
        /// Start of the area (0 when it failed).
        addr: u64,
        /// Bytes.
        size: u64,
        /// Alignment.
        align: u64,
        /// Lowest acceptable address.
        vstart: u64,
        /// Highest acceptable address.
        vend: u64,
        /// Whether the allocation failed.
        failed: bool,
    },
    /// `vmalloc:free_vmap_area_noflush`.
    FreeVmapArea {
        /// Start of the area.
        va_start: u64,
        /// Lazily freed pages pending.
        nr_lazy: u64,
        /// Threshold of the lazy purge.
        nr_lazy_max: u64,
    },
    /// `page_pool:page_pool_state_hold`.
    PagePoolHold {
        /// Hashed pool pointer.
        pool: u64,
        /// Hashed netmem (or page) pointer.
        netmem: u64,
        /// The page's pfn.
        pfn: u64,
        /// Hold counter.
        hold: u32,
    },
    /// `page_pool:page_pool_state_release`.
    PagePoolRelease {
        /// Hashed pool pointer.
        pool: u64,
        /// Hashed netmem (or page) pointer.
        netmem: u64,
        /// The page's pfn.
        pfn: u64,
        /// Release counter.
        release: u32,
    },
    /// `migrate:mm_migrate_pages` (one call of `migrate_pages()`).
    MigratePages {
        /// Pages migrated.
        succeeded: u64,
        /// Pages that failed.
        failed: u64,
        /// THPs migrated.
        thp_succeeded: u64,
        /// THPs that failed.
        thp_failed: u64,
        /// THPs split.
        thp_split: u64,
        /// Large folios split (0 where not printed).
        split: u64,
        /// `MIGRATE_ASYNC`, `MIGRATE_SYNC_LIGHT`, `MIGRATE_SYNC`.
        mode: &'a str,
        /// Why (`compaction`, `numa_misplaced`, ...).
        reason: &'a str,
    },
}

impl Event<'_> {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::PageAlloc { .. } => EventKind::PageAlloc,
            Event::PageFree { .. } => EventKind::PageFree,
            Event::PageFreeBatched { .. } => EventKind::PageFreeBatched,
            Event::Kmalloc { .. } => EventKind::Kmalloc,
            Event::Kfree { .. } => EventKind::Kfree,
            Event::KmemCacheAlloc { .. } => EventKind::KmemCacheAlloc,
            Event::KmemCacheFree { .. } => EventKind::KmemCacheFree,
            Event::FilemapAdd(_) => EventKind::FilemapAdd,
            Event::FilemapDelete(_) => EventKind::FilemapDelete,
            Event::LruInsertion { .. } => EventKind::LruInsertion,
            Event::AllocVmapArea { .. } => EventKind::AllocVmapArea,
            Event::FreeVmapArea { .. } => EventKind::FreeVmapArea,
            Event::PagePoolHold { .. } => EventKind::PagePoolHold,
            Event::PagePoolRelease { .. } => EventKind::PagePoolRelease,
            Event::MigratePages { .. } => EventKind::MigratePages,
        }
    }
}

/// One event line: who, where, when, what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The task's command name, as printed (may be `<...>`; not necessarily UTF-8).
    pub comm: &'a [u8],
    /// The task's pid.
    pub pid: u32,
    /// The CPU.
    pub cpu: u32,
    /// Timestamp in nanoseconds (for `sec.usec` / `sec.nsec` clocks), or the raw counter.
    pub ts_ns: u64,
    /// The event.
    pub event: Event<'a>,
}
