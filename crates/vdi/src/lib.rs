//! A VirtualBox Virtual Disk Image (VDI) engine: pure Rust, synchronous, no OS access.
//!
//! Everything works over a small positioned-storage trait ([`ReadAt`] / [`Storage`]), so the
//! same engine runs on a `Vec<u8>` ([`MemStorage`]), a native file, a browser `File` or an
//! OPFS sync access handle. Images are never loaded whole: the block map is read lazily in
//! pages, data is moved in bounded chunks.
//!
//! ```
//! use vdi::{create, CreateOptions, MemStorage, NoMonitor, VdiImage};
//! use uuid::Uuid;
//!
//! // Create a 4 MiB dynamic image in memory (the caller supplies the UUIDs).
//! let opts = CreateOptions::new(4 << 20, Uuid::from_u128(1), Uuid::from_u128(2));
//! let mut img = create(MemStorage::new(), &opts, &mut NoMonitor)?;
//! img.write_at(1 << 20, b"hello")?;
//! assert_eq!(img.header().blocks_allocated, 1);
//!
//! // Reopen from the bytes and read back.
//! let mut img = VdiImage::open(img.into_storage())?;
//! let mut buf = [0u8; 5];
//! img.read_at(1 << 20, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! let report = vdi::check(img.into_storage(), &mut NoMonitor)?;
//! assert!(report.is_clean());
//! # Ok::<(), vdi::VdiError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod block_map;
pub mod chain;
pub mod check;
pub mod crc32;
pub mod create;
pub mod disk;
pub mod error;
pub mod formats;
pub mod header;
pub mod image;
pub mod monitor;
#[cfg(feature = "json")]
pub mod report;
pub mod storage;
pub mod surgery;
pub mod transfer;
pub mod uuid_arg;
pub mod volume;

pub use block_map::{BlockMap, Entry, BLOCK_FREE, BLOCK_ZERO};
pub use chain::{Chain, ChainExtent, CommitStats, Source};
pub use check::{check, check_image, CheckReport, Finding, FindingKind, Severity};
pub use create::{create, CreateOptions, Layout};
pub use disk::{Block, Disk, DiskMut, Run, Runs};
pub use formats::{export_format, Format, FormatExport, FormatOptions, Plan, RawDisk};
pub use error::{Result, StorageError, VdiError};
pub use header::{Geometry, ImageType, VdiHeader, VDI_SIGNATURE};
pub use image::{all_zero, probe, read_header, BlockState, Extent, HeaderEdit, OpenOptions, VdiImage};
pub use monitor::{FnMonitor, Monitor, NoMonitor};
pub use storage::{MemStorage, ReadAt, Storage};
pub use surgery::{repair, CompactStats, FsCompactStats, RepairAction, RepairReport, ResizeStats};
pub use transfer::{export_disk, export_raw, import_raw, Export, ImageSink, RawSink, SparseSink, TransferStats};
pub use uuid::Uuid;
