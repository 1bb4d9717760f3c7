//! Folios on the simulated machine: every order in both memmap layouts, reference counting,
//! flags, the shared LRU, split, extended descriptors, and the lockless lookup over the real
//! memmap.

use std::sync::atomic::{AtomicU64, Ordering};

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::folio::{FolioError, FolioExt, FolioKind, FolioRef};
use memdesc::memmap::desc::{Folio, PG_DIRTY, PG_LOCKED, PG_WRITEBACK};
use memdesc::memmap::word::PageKind;
use memdesc::{Config, Gfp, Pfn};
use memdesc_host::{boot, SimMachine};

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// Free pages once the folio-descriptor cache has its first slab (which it keeps).
fn warm_free_pages(m: &SimMachine, cpu: &memdesc::Cpu<'_>) -> u64 {
    let f = m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    m.folio_put(cpu, f).unwrap();
    m.drain_all();
    m.nr_free_pages()
}

/// The folio a pfn's word names.
fn folio_at(m: &SimMachine, pfn: Pfn) -> Option<(usize, bool)> {
    match m.memmap().load(m.platform(), pfn)?.word.kind() {
        PageKind::AnonFolio(d) => Some((d.addr(), false)),
        PageKind::FileFolio(d) => Some((d.addr(), true)),
        _ => None,
    }
}

#[test]
fn every_order_stamps_every_word_and_frees_everything() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm_free_pages(&m, &cpu);
        for order in 0..=10 {
            for kind in [FolioKind::Anon, FolioKind::File] {
                let f = m.folio_alloc(&cpu, order, Gfp::MOVABLE, kind).unwrap();
                assert_eq!(f.flags.order(), order);
                assert_eq!(f.counts.refcount(), 1);
                let pfn = f.flags.pfn();
                for i in 0..1u64 << order {
                    let (addr, file) = folio_at(&m, pfn.add(i)).expect("every page names its folio");
                    assert_eq!(addr, &*f as *const Folio as usize);
                    assert_eq!(file, kind == FolioKind::File);
                }
                if layout == MemmapLayout::TwoLevel && order >= 9 {
                    assert_eq!(m.memmap().load(m.platform(), pfn).unwrap().span_order, 9, "one area word per 2 MiB");
                }
                assert_eq!(m.folio_put(&cpu, f), Ok(true));
                assert!(folio_at(&m, pfn).is_none(), "a freed folio's words no longer name it");
            }
        }
        m.drain_all();
        assert_eq!(m.nr_free_pages(), free0, "{layout:?}");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn references_flags_and_lru() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let a = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::File).unwrap();
    let a2 = m.folio_get(&a);
    assert!(FolioRef::ptr_eq(&a, &a2));
    assert_eq!(m.folio_put(&cpu, a2), Ok(false));
    // A clone is a reference too; dropping one that is not the last releases it.
    let a3 = a.clone();
    assert_eq!(a.counts.refcount(), 2);
    drop(a3);
    assert_eq!(a.counts.refcount(), 1);
    assert!(m.folio_trylock(&f) && !m.folio_trylock(&f));
    m.folio_unlock(&f);
    assert_eq!(f.flags.flags() & PG_LOCKED, 0);
    assert!(!m.folio_start_writeback(&f), "clean folios have nothing to write back");
    assert!(m.folio_mark_dirty(&f) && !m.folio_mark_dirty(&f));
    assert!(m.folio_start_writeback(&f));
    assert_eq!(f.flags.flags() & (PG_DIRTY | PG_WRITEBACK), PG_WRITEBACK);
    m.folio_end_writeback(&f);
    // One LRU list holds anon and file folios.
    assert!(m.lru_add(&a) && m.lru_add(&f) && !m.lru_add(&a));
    let order = |m: &SimMachine| {
        let mut v = vec![];
        m.lru_for_each(0, |x| v.push(x as *const Folio as usize));
        v
    };
    let (ap, fp) = (&*a as *const Folio as usize, &*f as *const Folio as usize);
    assert_eq!(order(&m), [ap, fp]);
    assert!(m.lru_rotate(&a));
    assert_eq!(order(&m), [fp, ap]);
    assert!(m.lru_del(&a) && !m.lru_del(&a));
    assert_eq!(m.lru_len(0), 1);
    assert_eq!(m.folio_put(&cpu, a), Ok(true));
    // The last put takes a folio off the LRU itself (as Linux's does).
    assert_eq!(m.folio_put(&cpu, f), Ok(true));
    assert_eq!(m.lru_len(0), 0);
}

#[test]
fn split_restamps_words_and_keeps_order() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm_free_pages(&m, &cpu);
        let f = m.folio_alloc(&cpu, 4, Gfp::MOVABLE, FolioKind::File).unwrap();
        m.lru_add(&f);
        m.folio_mark_dirty(&f);
        let pfn = f.flags.pfn();
        let mut pieces = vec![];
        assert_eq!(m.folio_split(&cpu, &f, 1, |p| pieces.push(p)), Err(FolioError::NotLocked));
        assert!(m.folio_trylock(&f));
        m.folio_split(&cpu, &f, 1, |p| pieces.push(p)).unwrap();
        assert_eq!(pieces.len(), 7, "the caller's reference stays with the first piece");
        assert_eq!(m.lru_len(0), 8, "pieces follow the original onto the LRU");
        for i in 0..16u64 {
            let piece = m.folio_try_get(&cpu, pfn.add(i)).unwrap();
            assert!(folio_at(&m, pfn.add(i)).unwrap().1);
            assert_eq!(piece.flags.order(), 1);
            assert_eq!(piece.flags.pfn(), pfn.add(i & !1));
            assert_eq!(piece.index(), i & !1);
            assert_ne!(piece.flags.flags() & PG_DIRTY, 0, "flags are inherited");
            assert_eq!(piece.flags.flags() & PG_LOCKED != 0, i < 2, "only the original stays locked");
            assert_eq!(m.folio_put(&cpu, piece), Ok(false));
        }
        assert_eq!(m.folio_split(&cpu, &f, 1, |_| ()), Err(FolioError::BadOrder));
        m.folio_unlock(&f);
        pieces.push(f);
        for piece in pieces {
            assert!(m.lru_del(&piece));
            assert_eq!(m.folio_put(&cpu, piece), Ok(true));
        }
        m.drain_all();
        assert_eq!(m.nr_free_pages(), free0);
        m.check(|_, _, _| {}).unwrap();
    }
}

/// An ext4-like descriptor embedding a folio (requirement 8).
#[repr(C, align(16))]
struct Ext4Folio {
    folio: Folio,
    inode: AtomicU64,
    journal_seq: AtomicU64,
}

// SAFETY: repr(C) with the Folio first, 16-aligned, all fields atomic, all-zero valid.
unsafe impl FolioExt for Ext4Folio {
    const NAME: &'static str = "ext4_folio";
}

#[test]
fn extended_descriptor_found_from_the_page_word() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let ext = m.register_folio_ext::<Ext4Folio>(&cpu).unwrap();
    let ef = m.folio_alloc_ext(&cpu, &ext, 0, Gfp::MOVABLE).unwrap();
    let e = m.folio_ext(&ext, &ef).expect("allocated from the ext4 cache");
    e.inode.store(42, Ordering::Relaxed);
    e.journal_seq.store(7, Ordering::Relaxed);
    let plain = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
    let g = m.rcu().read_lock(&cpu);
    let PageKind::FileFolio(d) = m.memmap().load(m.platform(), e.folio.flags.pfn()).unwrap().word.kind() else {
        panic!("an ext4 folio is a file folio")
    };
    let found = m.folio_ext(&ext, d.get(&g)).expect("the word leads to the filesystem's descriptor");
    assert_eq!(found.inode.load(Ordering::Relaxed), 42);
    assert_eq!(found.journal_seq.load(Ordering::Relaxed), 7);
    assert!(m.folio_ext(&ext, &plain).is_none(), "a plain folio is not an ext4 folio");
    drop(g);
    assert_eq!(m.folio_put(&cpu, ef), Ok(true));
    assert_eq!(m.folio_put(&cpu, plain), Ok(true));
}

#[test]
fn lockless_lookup_over_the_memmap() {
    let m = machine(MemmapLayout::TwoLevel);
    let cpu = m.cpus().claim(0).unwrap();
    let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let pfn = f.flags.pfn();
    let got = m.folio_try_get(&cpu, pfn).unwrap();
    assert!(FolioRef::ptr_eq(&got, &f));
    assert_eq!(f.counts.refcount(), 2);
    assert_eq!(m.folio_put(&cpu, got), Ok(false));
    assert_eq!(m.folio_put(&cpu, f), Ok(true));
    assert!(m.folio_try_get(&cpu, pfn).is_none(), "a freed folio cannot be pinned");
    // The raw interface: a count given up by into_raw is adopted back from the pfn.
    let f = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::File).unwrap();
    let pfn = f.flags.pfn();
    let raw = f.into_raw();
    assert_eq!(raw.counts.refcount(), 1, "into_raw keeps the count");
    // SAFETY: the count into_raw gave up, adopted once.
    let f = unsafe { m.folio_ref_from_pfn(pfn.add(1)) }.unwrap();
    assert!(std::ptr::eq(&*f, raw));
    assert_eq!(m.folio_put(&cpu, f), Ok(true));
}
