//! The simulated machine.
#![deny(missing_docs)]
