//! The page cache under its old path `memdesc::pagecache`: everything of [`super::xarray`],
//! [`super::filemap`] and [`super::truncate`].

// transition alias (issue 13), removed when the layers land
pub use super::filemap::*;
pub use super::space::*;
pub use super::truncate::*;
pub use super::xarray::*;
