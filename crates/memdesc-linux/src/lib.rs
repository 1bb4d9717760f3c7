//! Real Linux data for memdesc: readers for `/proc/kpageflags` and `/proc/kpagecount` snapshots,
//! the `/proc` text tables, ftrace text traces, and the Linux cost model.
#![deny(missing_docs)]
