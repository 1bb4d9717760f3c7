//! The handle table shared by zsmalloc and z3fold: the owned [`Handle`], its identity
//! [`HandleId`], and the table that maps a handle to its object's location (entries of 8
//! bytes in 4 KiB kmalloc chunks found through a directory, with a free list and a generation
//! per entry, so a stale, doubly freed or foreign handle is refused precisely). Compaction and
//! migration rewrite entries, never handles. Used only under the owning pool's lock.

use crate::addr::PAGE_SIZE;
use crate::cpu::Cpu;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::pools::Pools;
use crate::slab::KArray;

/// Entries per handle-table chunk (one 4 KiB kmalloc object).
const CHUNK_ENTRIES: usize = PAGE_SIZE / 8;
/// Handle-table chunks (the directory lives in the pool state).
const DIR_ENTRIES: usize = 1024;
/// Most live handles of one pool.
pub const ZS_MAX_HANDLES: usize = CHUNK_ENTRIES * DIR_ENTRIES;

// Handle-table entry: bit 0 allocated, bit 1 mapped, bits 2..14 generation, bits 14..24
// object index (at most 1024 objects per zspage), bit 24 lost to a hardware memory error,
// bits 25..64 pfn of the zspage's first page. A free entry keeps its generation
// and holds the next free entry's index + 1 in bits 25..64.
pub(crate) const E_ALLOC: u64 = 1;
pub(crate) const E_MAPPED: u64 = 2;
const GEN_BITS: u32 = 12;
pub(in crate::pools) const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
// A handle: bits 0..12 generation, 12..48 entry index, 48..64 a tag of the pool, so a handle
// of another pool is refused (as `BadHandle`) rather than naming one of ours.
const INDEX_BITS: u32 = 36;
const TAG_SHIFT: u32 = GEN_BITS + INDEX_BITS;
pub(crate) const IDX_SHIFT: u32 = 14;
pub(crate) const PFN_SHIFT: u32 = 25;
/// Entry bit: the object's bytes were on a page retired by `memory_failure` (shared with
/// z3fold, whose location bits below [`PFN_SHIFT`] leave it free too).
pub(crate) const E_LOST: u64 = 1 << 24;

/// An owned handle to a zsmalloc (or z3fold) object, from [`ZsPool::malloc`](crate::pools::zsmalloc::ZsPool::malloc): freeing
/// consumes it. It stays valid across compaction and migration. Not `Clone` or `Copy`: a
/// handle cannot be used after its object is freed, and an object cannot be freed while a
/// mapping borrows its handle.
///
/// ```compile_fail
/// # fn f<P: memdesc::Platform>(pool: &memdesc::zsmalloc::ZsPool<'_, P>, cpu: &memdesc::Cpu<'_>) {
/// let h = pool.malloc(cpu, 100).unwrap();
/// pool.free(cpu, h).unwrap();
/// let _ = pool.map_read(cpu, &h); // error[E0382]: borrow of moved value: `h`
/// # }
/// ```
///
/// Dropping it leaks the object (freeing needs a [`Cpu`] and the pool).
#[must_use = "dropping a Handle leaks the object; free it with the pool's free"]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Handle(pub(crate) HandleId);

impl Handle {
    /// The handle's identity (what errors name).
    #[inline]
    pub fn id(&self) -> HandleId {
        self.0
    }
    /// The raw value (for storing in a swap entry, say), keeping the handle.
    #[inline]
    pub fn raw(&self) -> u64 {
        self.0 .0
    }
    /// Gives up the handle for its raw value (to store in a swap entry, say); make it a
    /// handle again with [`Handle::from_raw`].
    #[inline]
    pub fn into_raw(self) -> u64 {
        self.0 .0
    }
    /// Rebuilds a handle from [`Handle::into_raw`] for a caller that owns the object (the
    /// checked body of the raw [`Handle::from_raw`], in `machine/raw.rs`, whose contract
    /// states the ownership). The pool still refuses values it never issued or whose object
    /// was freed.
    #[inline]
    pub(crate) const fn from_raw_owned(raw: u64) -> Handle {
        Handle(HandleId(raw))
    }
}

/// The identity of a zsmalloc or z3fold handle: a plain value that errors and statistics
/// name. It cannot be used to reach an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandleId(pub(in crate::pools) u64);

impl HandleId {
    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
    #[cfg(all(test, not(loom)))]
    pub(crate) const fn from_raw(raw: u64) -> HandleId {
        HandleId(raw)
    }
    pub(crate) fn index(self) -> usize {
        ((self.0 >> GEN_BITS) & ((1 << INDEX_BITS) - 1)) as usize
    }
    fn tag(self) -> u64 {
        self.0 >> TAG_SHIFT
    }
    pub(crate) fn gen(self) -> u64 {
        self.0 & GEN_MASK
    }
}
/// Why a handle does not name a live object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HandleFault {
    /// Never issued (out of range, or generation 0).
    Bad,
    /// Freed and the entry reused since (another generation).
    Stale,
    /// Freed (same generation).
    Freed,
}

/// A handle table shared by zsmalloc and z3fold: entries of 8 bytes in 4 KiB kmalloc
/// chunks found through a directory, with a free list and a generation per entry. Entry
/// bits: 0 allocated, 1 mapped, 2..14 generation, 14..64 the owner's location (a free entry
/// keeps its generation and holds the next free index + 1 from bit 25). Used only under the
/// owner's lock.
pub(crate) struct HandleTable<'m> {
    /// The owning pool's tag, in every handle's top 16 bits.
    tag: u64,
    /// Chunks (kmalloc'd, `CHUNK_ENTRIES` entries each).
    dir: [Option<KArray<'m, u64>>; DIR_ENTRIES],
    /// Entries in use or on the free list.
    pub(in crate::pools) len: usize,
    /// First free entry + 1 (0: none).
    free: usize,
}

impl<'m> HandleTable<'m> {
    /// A table whose handles carry a tag derived from `owner` (the pool state's address).
    pub(crate) const fn new(owner: usize) -> Self {
        let tag = ((owner >> 4) ^ (owner >> 20) ^ (owner >> 36)) as u64 & 0xFFFF;
        HandleTable { tag, dir: [const { None }; DIR_ENTRIES], len: 0, free: 0 }
    }

    /// Sets the tag from the owner's address once it is known (before any handle is issued).
    pub(crate) fn set_owner(&mut self, owner: usize) {
        debug_assert_eq!(self.len, 0, "handles were issued with the old tag");
        self.tag = HandleTable::new(owner).tag;
    }

    /// Entry `i`, if it exists.
    pub(crate) fn get(&self, i: usize) -> Option<u64> {
        if i >= self.len {
            return None;
        }
        self.dir.get(i / CHUNK_ENTRIES)?.as_ref()?.get(i % CHUNK_ENTRIES)
    }

    /// Entry `i` for writing.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut u64> {
        if i >= self.len {
            return None;
        }
        self.dir.get_mut(i / CHUNK_ENTRIES)?.as_mut()?.as_mut_slice().get_mut(i % CHUNK_ENTRIES)
    }

    /// The entry of a live handle.
    pub(crate) fn check(&self, h: HandleId) -> Result<u64, HandleFault> {
        if h.tag() != self.tag {
            return Err(HandleFault::Bad);
        }
        let e = self.get(h.index()).ok_or(HandleFault::Bad)?;
        if h.gen() == 0 {
            return Err(HandleFault::Bad);
        }
        if h.gen() != (e >> 2) & GEN_MASK {
            return Err(HandleFault::Stale);
        }
        if e & E_ALLOC == 0 {
            return Err(HandleFault::Freed);
        }
        Ok(e)
    }

    /// Takes a free entry (its generation bumped, never 0); the caller stores the location
    /// with [`HandleTable::set`]. `Err(None)`: the table is full.
    pub(crate) fn alloc<P: Platform>(&mut self, mem: Pools<'m, P>, cpu: &Cpu<'_>) -> Result<usize, Option<AllocError>> {
        if self.free != 0 {
            let i = self.free - 1;
            let e = self.get_mut(i).expect("free entry");
            let next = (*e >> PFN_SHIFT) as usize;
            let mut gen = ((*e >> 2) + 1) & GEN_MASK;
            if gen == 0 {
                gen = 1;
            }
            *e = gen << 2;
            self.free = next;
            return Ok(i);
        }
        let i = self.len;
        if i >= ZS_MAX_HANDLES {
            return Err(None);
        }
        if i.is_multiple_of(CHUNK_ENTRIES) {
            let c = mem.slabs().karray(cpu, CHUNK_ENTRIES, 0u64).map_err(Some)?;
            self.dir[i / CHUNK_ENTRIES] = Some(c);
        }
        self.len += 1;
        *self.get_mut(i).expect("new entry") = 1 << 2;
        Ok(i)
    }

    /// Publishes entry `i` as allocated at `loc` (bits 14..64); returns the handle.
    pub(crate) fn set(&mut self, i: usize, loc: u64) -> HandleId {
        let e = self.get_mut(i).expect("allocated entry");
        let gen = (*e >> 2) & GEN_MASK;
        *e = E_ALLOC | gen << 2 | loc << IDX_SHIFT;
        HandleId(self.tag << TAG_SHIFT | (i as u64) << GEN_BITS | gen)
    }

    /// Puts entry `i` on the free list, keeping its generation.
    pub(crate) fn release(&mut self, i: usize) {
        let next = self.free as u64;
        let e = self.get_mut(i).expect("entry");
        *e = (*e & (GEN_MASK << 2)) | next << PFN_SHIFT;
        self.free = i + 1;
    }

    /// Chunks allocated.
    pub(crate) fn chunks(&self) -> usize {
        self.dir.iter().filter(|c| c.is_some()).count()
    }

    /// Frees every chunk.
    pub(crate) fn destroy<P: Platform>(&mut self, mem: Pools<'_, P>, cpu: &Cpu<'_>) {
        for c in self.dir.iter_mut() {
            if let Some(a) = c.take() {
                mem.slabs().karray_free(cpu, a);
            }
        }
        self.len = 0;
        self.free = 0;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn handles_encode_index_and_generation() {
        let h = HandleId::from_raw(5 << GEN_BITS | 3);
        assert_eq!((h.index(), h.gen()), (5, 3));
        assert_eq!(HandleId::from_raw(h.raw()), h);
    }
}
