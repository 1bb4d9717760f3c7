//! memdesc core.
#![no_std]
#![deny(missing_docs)]
