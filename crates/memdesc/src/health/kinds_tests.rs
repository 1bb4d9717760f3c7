//! The per-kind operations table checked end to end: migration and offlining do what each
//! page's [`super::kinds`] entry says. (Here rather than in `kinds/`, because it drives
//! `migrate` and `offline`, which import the table: a test inside the table would close an
//! import cycle.)

use super::kinds::{of, of_word, MigrateOp, OfflineOp};
use crate::tag::Tag;
use crate::word::Word;

/// Table-driven: migration and offlining do what each page's entry says. A page of every
/// never-moving kind at hand (slab, page table, mappable memory) is refused as
/// `NotMovable` with its tag, and so is offlining the block around it; a folio reaches the folio
/// mechanism (which backs off: its owner holds it).
#[test]
fn migration_follows_the_table() {
    use crate::desc::{DescPtr, PtDesc};
    use crate::folio::FolioKind;
    use crate::gfp::Gfp;
    use crate::migrate::MigrateError;
    use crate::offline::OfflineError;
    use crate::platform::Platform;
    let m = crate::machine::test_machine::machine(4096, crate::MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let pt = m.slabs().alloc_desc::<PtDesc>(&cpu).unwrap();
    let pt_pfn = m.pages().alloc_with(&cpu, 0, Gfp::KERNEL, |_| Word::desc(DescPtr::from_ref(pt))).unwrap();
    let md = m.mappable_alloc(&cpu, 0, Gfp::KERNEL, 1).unwrap();
    let obj = m.kmalloc(&cpu, 64, Gfp::KERNEL).unwrap();
    let slab_pfn = m.platform().virt_to_pfn(obj.as_ptr()).unwrap();
    for pfn in [pt_pfn, md.flags.pfn(), slab_pfn] {
        let w = m.memmap().load(m.platform(), pfn).unwrap().word;
        let k = of_word(w).unwrap();
        assert_eq!((k.migrate, k.offline), (MigrateOp::Never, OfflineOp::Refuse), "{:?}", w.tag());
        let refused = MigrateError::NotMovable { pfn, tag: w.tag().unwrap() };
        assert_eq!(m.migrate_page(&cpu, pfn, Gfp::MOVABLE), Err(refused));
        let mo = m.config().max_order;
        let start = pfn.align_down(mo);
        let r = m.offline_range(&cpu, start, start.add(1 << mo));
        assert!(matches!(r, Err(OfflineError::Unmovable { .. })), "{:?}: {r:?}", w.tag());
    }
    let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let pfn = f.flags.pfn();
    assert_eq!(of(Tag::AnonFolio).unwrap().migrate, MigrateOp::Folio);
    assert_eq!(m.migrate_page(&cpu, pfn, Gfp::MOVABLE), Err(MigrateError::Busy(pfn)), "its owner holds it");
    assert_eq!(m.folio_put(&cpu, f), Ok(true));
    m.kfree(&cpu, obj).unwrap();
}
