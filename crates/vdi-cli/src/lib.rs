//! Native pieces of the `vdi` command, shared with the cross-crate tests: file storage,
//! size parsing,.

pub mod file;
pub mod size;

pub use file::FileStorage;
pub use size::parse_size;
