//! How the census reads free blocks: [`CensusOptions`] and the [`BuddyMode`] of the kernel
//! that wrote the snapshot.

use serde::Serialize;

/// The largest `max_buddy_order` honoured (larger requests are clamped).
pub const MAX_ORDER_LIMIT: u32 = 40;

/// How free blocks are marked in kpageflags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuddyMode {
    /// Decide from the data (see the [census documentation](mod@crate::census)).
    #[default]
    Auto,
    /// Every page of a free block is marked `BUDDY` (Linux 6.18).
    EveryPage,
    /// Only the first page of a free block is marked (older kernels).
    HeadOnly,
}

/// Census options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CensusOptions {
    /// How free blocks are marked.
    pub buddy_mode: BuddyMode,
    /// The largest free-block order (`MAX_PAGE_ORDER`, 10 on x86-64; at most
    /// [`MAX_ORDER_LIMIT`]).
    pub max_buddy_order: u32,
}

impl Default for CensusOptions {
    fn default() -> Self {
        CensusOptions { buddy_mode: BuddyMode::Auto, max_buddy_order: 10 }
    }
}
