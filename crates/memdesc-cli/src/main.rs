//! The `memdesc` command.
fn main() {}
