//! The page allocator's errors: why a machine could not boot ([`BootFailure`]), why an
//! allocation failed ([`AllocError`]) and why a free was refused ([`FreeError`]).

use core::fmt;

use crate::base::addr::Pfn;
use crate::base::boot::BootError;
use crate::memmap::word::{Subtype, Tag};
use crate::memmap::MemmapError;

/// Why a machine could not boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFailure {
    /// The memmap could not be built.
    Memmap(MemmapError),
    /// The boot allocator ran out.
    Boot(BootError),
    /// `max_order` above [`MAX_ORDER_LIMIT`](super::zone::MAX_ORDER_LIMIT) or `nr_cpus` above [`MAX_CPUS`](crate::base::cpu::MAX_CPUS).
    BadConfig,
}

impl From<MemmapError> for BootFailure {
    fn from(e: MemmapError) -> Self {
        BootFailure::Memmap(e)
    }
}
impl From<BootError> for BootFailure {
    fn from(e: BootError) -> Self {
        BootFailure::Boot(e)
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// No allowed zone has a free block of this order above its watermark.
    NoMemory {
        /// Order asked for.
        order: u32,
    },
    /// The order is above the machine's `max_order`.
    InvalidOrder(u32),
    /// An injected failure (fault injection).
    Injected,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::NoMemory { order } => write!(f, "out of memory for an order-{order} allocation"),
            AllocError::InvalidOrder(o) => write!(f, "order {o} is above the machine's max order"),
            AllocError::Injected => write!(f, "allocation failure injected"),
        }
    }
}

impl core::error::Error for AllocError {}

/// Why a free was refused. The allocator's state is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The pfn is in no region.
    OutOfRange(Pfn),
    /// The pfn is not aligned to the order.
    Misaligned {
        /// The pfn.
        pfn: Pfn,
        /// The order given.
        order: u32,
    },
    /// The block is already free.
    DoubleFree(Pfn),
    /// The pfn is inside an allocation, not its first page.
    NotHead(Pfn),
    /// The allocation has another order.
    WrongOrder {
        /// The pfn.
        pfn: Pfn,
        /// The order given.
        given: u32,
        /// The order allocated.
        allocated: u32,
    },
    /// The page is reserved, poisoned, offline or otherwise never allocated.
    NotAllocated(Pfn, Subtype),
    /// The page belongs to another kind (a slab, a folio, …): free it through its owner.
    WrongKind(Pfn, Tag),
    /// Debug checks found a tail page that does not hold a tail word.
    CorruptTail(Pfn),
    /// The word holds bits no encoder writes.
    CorruptWord(Pfn, u64),
    /// The block is the crate's own (a per-CPU array, a table, a descriptor-backed page being
    /// set up): no public free accepts it.
    Internal(Pfn),
    /// The handle belongs to another machine.
    ForeignMachine(Pfn),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeError::OutOfRange(p) => write!(f, "pfn {p} is not in any memory region"),
            FreeError::Misaligned { pfn, order } => write!(f, "pfn {pfn} is not aligned to order {order}"),
            FreeError::DoubleFree(p) => write!(f, "double free of pfn {p}"),
            FreeError::NotHead(p) => write!(f, "pfn {p} is inside an allocation, not its head"),
            FreeError::WrongOrder { pfn, given, allocated } => {
                write!(f, "pfn {pfn} was allocated with order {allocated}, freed with order {given}")
            }
            FreeError::NotAllocated(p, s) => write!(f, "pfn {p} is {s:?}, not allocated memory"),
            FreeError::WrongKind(p, t) => write!(f, "pfn {p} belongs to a {t:?} descriptor; free it through its owner"),
            FreeError::CorruptTail(p) => write!(f, "tail page {p} does not hold a tail word"),
            FreeError::CorruptWord(p, w) => write!(f, "pfn {p} holds an invalid word {w:#x}"),
            FreeError::Internal(p) => write!(f, "pfn {p} is memory the allocator uses itself, not the caller's"),
            FreeError::ForeignMachine(p) => write!(f, "the handle of pfn {p} belongs to another machine"),
        }
    }
}

impl core::error::Error for FreeError {}
