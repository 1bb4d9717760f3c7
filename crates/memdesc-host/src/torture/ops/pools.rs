//! Pool ops: vmalloc, page_pool, zsmalloc and z3fold.

use memdesc::mm::pgtable::MapError;
use memdesc::pools::page_pool::PoolError;
use memdesc::pools::vmalloc::{Unmappable, VmallocError};
use memdesc::pools::z3fold::Z3Error;
use memdesc::pools::zsmalloc::{zs_migrate_page, Handle, ZsError, ZsMigrateError, ZS_MAX_PAGES};

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::{Gfp, Pfn, PAGE_SIZE};

use super::pages::*;
use crate::torture::pattern::*;
use crate::torture::worker::*;

// ---- vmalloc ----

pub(crate) fn op_vmalloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = match w.below(100) {
        0..=79 => 1 + w.below(3 * PAGE_SIZE as u64) as usize,
        _ => 1 + w.below(64 * 1024) as usize,
    };
    if w.over_budget(size.div_ceil(PAGE_SIZE) as u64) {
        return op_free_any(w);
    }
    let zero = w.below(4) == 0;
    w.arg(size as u64);
    let vm = &w.shared.vm;
    match vm.vmalloc::<Unmappable>(w.cpu, size, if zero { Gfp::KERNEL | Gfp::ZERO } else { Gfp::KERNEL }) {
        Ok(area) => {
            let va = area.addr();
            let id = w.new_id();
            let mut buf = vec![0u8; size];
            if zero {
                if let Err(e) = vm.read(va, &mut buf) {
                    return Outcome::Violation(format!("read of a fresh area: {e}"));
                }
                w.corrupted += buf.iter().filter(|&&b| b != 0).count() as u64;
            }
            // SAFETY: our buffer.
            unsafe { fill_raw(buf.as_mut_ptr(), size, Worker::key(id, 0)) };
            // SAFETY: this worker owns the area it just allocated (`area`, kept raw below).
            if let Err(e) = unsafe { vm.write(va, &buf) } {
                return Outcome::Violation(format!("write of a fresh area: {e}"));
            }
            // The area's pages are vmalloc pages of this area, in order.
            for i in 0..area.nr_pages() {
                match vm.pfn_at(&area, i) {
                    Ok(p) if vm.vmalloc_to_pfn(va + i * PAGE_SIZE) == Ok(p) => {}
                    r => return Outcome::Violation(format!("page {i} of area {va:#x}: {r:?}")),
                }
            }
            // Freed by address (`vfree`), like a caller that kept only the pointer.
            let _ = area;
            w.push(Live::Vmalloc { va, size, id });
            Outcome::Done
        }
        Err(VmallocError::NoMemory(e) | VmallocError::PageTable(MapError::NoMemory(e))) if is_alloc_failure(e) => {
            Outcome::Failed
        }
        Err(VmallocError::NoVirtualSpace { .. }) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("vmalloc({size}): {e}")),
    }
}

pub(crate) fn op_vfree(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Vmalloc { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

// ---- page_pool ----

pub(crate) fn pool_outcome(e: PoolError) -> Outcome {
    match e {
        PoolError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
        e => Outcome::Violation(format!("page_pool: {e}")),
    }
}

/// A whole block or a fragment from the shared pool, patterned.
pub(crate) fn op_pp_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    if w.over_budget(1) {
        return op_free_any(w);
    }
    let frag = w.below(2) == 0;
    let (pfn, off, len) = if frag {
        let size = 1 + w.below(2048) as usize;
        w.arg(size as u64);
        match w.shared.pool.alloc_frag(w.cpu, size) {
            Ok(f) => {
                let (off, len) = (f.offset(), f.len());
                (f.into_raw(), off, len)
            }
            Err(e) => return pool_outcome(e),
        }
    } else {
        match w.shared.pool.alloc(w.cpu) {
            Ok(n) => (n.into_raw(), 0, w.shared.pool.block_size()),
            Err(e) => return pool_outcome(e),
        }
    };
    if off + len > PAGE_SIZE {
        return Outcome::Violation(format!("fragment {off}+{len} of an order-0 block"));
    }
    w.arg(pfn.0);
    let id = w.new_id();
    let k = Worker::key(id, 0);
    // SAFETY: our fragment (or block) of a block we hold a reference to.
    unsafe { w.with_range(pfn, off, len, |a| fill(a.bytes_mut(), k)) };
    w.push(Live::Net { pfn, off, len, id });
    Outcome::Done
}

pub(crate) fn op_pp_put(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Net { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

// ---- zsmalloc and z3fold ----

pub(crate) fn zs_size(w: &mut Worker<'_, '_, '_>) -> usize {
    match w.below(100) {
        0..=59 => 1 + w.below(512) as usize,
        _ => 1 + w.below(PAGE_SIZE as u64) as usize,
    }
}

pub(crate) fn op_zs_malloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = zs_size(w);
    w.arg(size as u64);
    let zs = &w.shared.zs;
    match zs.malloc(w.cpu, size) {
        Ok(h) => {
            let id = w.new_id();
            // SAFETY: the object's bytes, mapped for writing.
            let mapped =
                zs.map_write(w.cpu, &h).map(|mut o| unsafe { fill_raw(o.as_mut_ptr(), size, Worker::key(id, 0)) });
            match mapped {
                Ok(()) => {}
                Err(ZsError::NoMemory(e)) if is_alloc_failure(e) => {
                    return match zs.free(w.cpu, h) {
                        Ok(()) => Outcome::Failed,
                        Err(e) => Outcome::Violation(format!("free of an unmapped fresh object: {e}")),
                    };
                }
                Err(e) => return Outcome::Violation(format!("map_write of a fresh object: {e}")),
            }
            w.push(Live::Zs { h: h.into_raw(), size, id });
            Outcome::Done
        }
        Err(ZsError::NoMemory(e)) if is_alloc_failure(e) => Outcome::Failed,
        Err(ZsError::TooManyHandles) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("zs_malloc({size}): {e}")),
    }
}

pub(crate) fn op_zs_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Zs { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

pub(crate) fn op_zs_compact(w: &mut Worker<'_, '_, '_>) -> Outcome {
    w.shared.zs.compact(w.cpu);
    Outcome::Done
}

/// Migrates a component page of a held object's zspage (the pfn-driven path compaction
/// takes); other CPUs may be reading or freeing objects of the same zspage meanwhile.
pub(crate) fn op_zs_migrate(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l @ Live::Zs { h, .. }) = w.take(|l| matches!(l, Live::Zs { .. })) else { return Outcome::Skipped };
    w.push(l);
    let mut pages = [Pfn(0); ZS_MAX_PAGES];
    // SAFETY: a transient handle for a read-only query; the entry (pushed back above) stays
    // the owner and this copy is given up right after.
    let h = unsafe { Handle::from_raw(h) };
    let r = w.shared.zs.pages_of(&h, &mut pages);
    let _ = h.into_raw();
    let n = match r {
        Ok(n) => n,
        Err(e) => return Outcome::Violation(format!("pages_of a live object: {e}")),
    };
    let pfn = pages[w.below(n as u64) as usize];
    w.arg(pfn.0);
    match zs_migrate_page(w.m, w.cpu, pfn) {
        Ok(_) => Outcome::Done,
        Err(ZsMigrateError::NoMemory(e)) if is_alloc_failure(e) => Outcome::Failed,
        // A CPU has an object of it mapped, or it was freed/compacted away meanwhile.
        Err(ZsMigrateError::Busy(_) | ZsMigrateError::NotZsmalloc(_)) => Outcome::Skipped,
        Err(e) => Outcome::Violation(format!("zs_migrate_page({pfn}): {e}")),
    }
}

pub(crate) fn op_z3_malloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = zs_size(w);
    w.arg(size as u64);
    let z3 = &w.shared.z3;
    match z3.malloc(w.cpu, size) {
        Ok(h) => {
            let id = w.new_id();
            match z3.map_write(&h) {
                // SAFETY: the object's bytes, mapped for writing.
                Ok(mut o) => unsafe { fill_raw(o.as_mut_ptr(), size, Worker::key(id, 0)) },
                Err(e) => return Outcome::Violation(format!("z3fold map_write of a fresh object: {e}")),
            }
            w.push(Live::Z3 { h: h.into_raw(), size, id });
            Outcome::Done
        }
        Err(Z3Error::NoMemory(e)) if is_alloc_failure(e) => Outcome::Failed,
        Err(Z3Error::TooManyHandles) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("z3fold malloc({size}): {e}")),
    }
}

pub(crate) fn op_z3_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Z3 { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

pub(crate) fn op_z3_compact(w: &mut Worker<'_, '_, '_>) -> Outcome {
    w.shared.z3.compact();
    Outcome::Done
}
