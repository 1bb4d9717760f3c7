//! The lockless descriptor lookup: `pfn → word → descriptor → try_get → re-check the word`.
//!
//! Descriptors are `TYPESAFE_BY_RCU`: once a reader inside an RCU read-side section has loaded
//! a word and decoded a descriptor pointer of type `T`, the memory stays a `T` for the rest of
//! the section, even if the descriptor is freed and reused for another page meanwhile. So the
//! reader may touch it, but must not trust it until it has
//! 1. taken a reference with `MapCounts::try_get` (crate-private; for folios the public form is
//!    `PhysMem::folio_try_get`), which fails on a descriptor whose count is zero (free, being
//!    freed, or frozen), and then
//! 2. re-read the word and found it unchanged (so the pinned descriptor still owns the page).
//!
//! If the re-check fails, the reader drops its reference — and if that was the last one (the
//! descriptor's new owner let go meanwhile), it must run the owner's free path, which the
//! caller supplies. [`try_get_desc`] is that pattern, written once.

use crate::base::rcu::RcuGuard;
use crate::base::sync::Ordering;
use crate::memmap::desc::{DescPtr, Descriptor, Folio, MapCounts, MappableDesc, Netmem, VmallocDesc};
use crate::memmap::word::{PageKind, Word};

/// Descriptors that carry the shared refcount and mapcount.
pub trait Refcounted: Descriptor {
    /// The counts at offsets 8 and 12.
    fn counts(&self) -> &MapCounts;
}

impl Refcounted for Folio {
    fn counts(&self) -> &MapCounts {
        &self.counts
    }
}
impl Refcounted for MappableDesc {
    fn counts(&self) -> &MapCounts {
        &self.counts
    }
}
impl Refcounted for VmallocDesc {
    fn counts(&self) -> &MapCounts {
        &self.counts
    }
}
impl Refcounted for Netmem {
    fn counts(&self) -> &MapCounts {
        &self.counts
    }
}

/// Looks up and pins the descriptor of type `T` that a word names.
///
/// - `load` reads the word (a `Page`, or [`crate::memmap::Memmap::load`] for a pfn); it returns
///   `None` when there is no word (a hole).
/// - `decode` picks the descriptor out of the word if it is of the wanted kind.
/// - `on_last_put` is the owner's free path, run if dropping a reference taken on a descriptor
///   that changed owner meanwhile turns out to drop the last one.
///
/// Returns the descriptor with one reference taken for the caller, or `None` if the word does
/// not (any more) name a live descriptor of that kind.
pub fn try_get_desc<'g, T: Refcounted>(
    guard: &'g RcuGuard<'_>,
    load: impl Fn() -> Option<Word>,
    decode: impl Fn(PageKind) -> Option<DescPtr<T>>,
    on_last_put: impl Fn(&'g T),
) -> Option<&'g T> {
    loop {
        let w = load()?;
        let d = decode(w.kind())?.get(guard);
        if !d.counts().try_get() {
            // Being freed. If the word moved on, look again; otherwise the page has no owner.
            if load()? != w {
                continue;
            }
            return None;
        }
        if load() == Some(w) {
            return Some(d);
        }
        // Pinned a descriptor that no longer owns the page: let go.
        if d.counts().refcount.fetch_sub(1, Ordering::AcqRel) == 1 {
            on_last_put(d);
        }
    }
}

/// `decode` for [`try_get_desc`]: an anon or file folio.
pub fn folio(k: PageKind) -> Option<DescPtr<Folio>> {
    match k {
        PageKind::AnonFolio(d) | PageKind::FileFolio(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
mod test_support {
    use super::*;
    use crate::base::list::Links;
    use crate::base::sync::{AtomicU32, AtomicU64, AtomicUsize};
    use crate::memmap::desc::DescFlags;

    pub(super) fn folio(index: u64, refs: u32) -> Folio {
        Folio {
            flags: DescFlags::zeroed(),
            counts: MapCounts { refcount: AtomicU32::new(refs), mapcount: AtomicU32::new(0) },
            lru: Links::new(),
            mapping: AtomicUsize::new(0),
            index: AtomicU64::new(index),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::rcu::Rcu;
    use crate::memmap::word::Page;

    #[test]
    fn pins_live_refuses_freed_and_moved() {
        let rcu = Rcu::new(1);
        let cpu = rcu.cpus().claim(0).unwrap();
        let a = test_support::folio(1, 1);
        let page = Page::new(Word::desc(DescPtr::from_ref(&a)));
        let g = rcu.read_lock(&cpu);
        let got = try_get_desc(&g, || Some(page.load()), folio, |_| panic!("not last"));
        assert!(core::ptr::eq(got.unwrap(), &a));
        assert_eq!(a.counts.refcount(), 2);
        // A freed descriptor (count 0) is refused.
        a.counts.refcount.store(0, Ordering::Relaxed);
        assert!(try_get_desc(&g, || Some(page.load()), folio, |_| ()).is_none());
        // A word of another kind is not a folio.
        let tail = Page::new(Word::TAIL);
        assert!(try_get_desc(&g, || Some(tail.load()), folio, |_| ()).is_none());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::base::rcu::Rcu;
    use crate::memmap::word::Page;
    use loom::sync::Arc;

    /// A reader looks up page 1's folio while its owner unmaps it, drops the last reference,
    /// and reuses the same descriptor memory (TYPESAFE_BY_RCU) for page 2. The reader either
    /// gets nothing or gets the descriptor while it still belongs to page 1 — never page 2's.
    #[test]
    fn loom_lookup_races_free_and_reuse() {
        loom::model(|| {
            let rcu = Arc::new(Rcu::new(2));
            let a = Arc::new(test_support::folio(1, 1));
            let page1 = Arc::new(Page::new(Word::desc(DescPtr::from_ref(&*a))));
            let page2 = Arc::new(Page::new(Word::TAIL));
            let reader = {
                let (rcu, page1) = (rcu.clone(), page1.clone());
                loom::thread::spawn(move || {
                    let cpu = rcu.cpus().claim(1).unwrap();
                    let g = rcu.read_lock(&cpu);
                    if let Some(d) = try_get_desc(&g, || Some(page1.load()), folio, |_| ()) {
                        assert_eq!(d.index(), 1, "pinned a descriptor reused for another page");
                        d.counts.refcount.fetch_sub(1, Ordering::AcqRel);
                    }
                })
            };
            // Owner: unmap page 1 and drop its reference; reuse the descriptor if it was the last.
            page1.store(Word::TAIL);
            if a.counts.refcount.fetch_sub(1, Ordering::AcqRel) == 1 {
                a.index.store(2, Ordering::Relaxed);
                a.counts.refcount.store(1, Ordering::Release);
                page2.store(Word::desc(DescPtr::from_ref(&*a)));
            }
            reader.join().unwrap();
        });
    }
}
