//! The engine's error type.
//!
//! ```text
//! VdiError ── kind() ─────────── a stable name the UI switches on ("broken-chain", "no-space", ...)
//!   ├─ Chain(ChainError) ─ kind() a finer stable name ("cycle", "fork", ...) + the UUIDs involved
//!   ├─ Io { op, offset, len, source: StorageError }      storage behind an image failed
//!   └─ Output { what, source: StorageError }             the sink an export writes to failed
//! StorageError { message, kind: io::ErrorKind, past_end } a backend's own failure, its kind kept
//! ```
//!
//! Callers decide on variants and kinds, never on message text (cloud-hypervisor's
//! `block/src/error.rs` draws the same structure).

use std::fmt;
use std::io::ErrorKind;

use uuid::Uuid;

/// Everything that can go wrong in the engine.
///
/// Messages are lowercase and specific: they name the field or place, the value found and
/// what was expected. [`VdiError::kind`] gives a stable machine-readable name the UI can
/// switch on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VdiError {
    /// The file does not carry the VDI signature at offset 0x40.
    #[error("not a VDI image: signature at offset 0x40 is {found:#010x}, expected 0xbeda107f")]
    BadSignature {
        /// The 32-bit value found at offset 0x40.
        found: u32,
    },
    /// The file is too short to hold what it must hold.
    #[error("file too short: {what} needs {needed} bytes, the file has {len}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Actual file length.
        len: u64,
    },
    /// A header field breaks a rule of the format.
    #[error("invalid header field {field} = {value}: expected {expected}")]
    InvalidField {
        /// The field's name (as in VDI-FORMAT.md).
        field: &'static str,
        /// The value found, formatted.
        value: String,
        /// What the rule expects.
        expected: String,
    },
    /// The header's version is not one this engine knows.
    #[error("unsupported VDI version {major}.{minor}: expected 1.1 or 0.2")]
    UnsupportedVersion {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// A block-map entry points at data outside the file.
    #[error("block {block} maps to slot {slot} at host offset {offset}, past the end of the file ({len} bytes)")]
    BlockPastEnd {
        /// Virtual block index.
        block: u64,
        /// Physical slot.
        slot: u32,
        /// Host byte offset of the block's data.
        offset: u64,
        /// File length.
        len: u64,
    },
    /// A read or write falls outside the virtual disk.
    #[error("{op} of {len} bytes at offset {offset} is outside the virtual disk of {size} bytes")]
    OutOfRange {
        /// "read" or "write".
        op: &'static str,
        /// Virtual offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Virtual disk size.
        size: u64,
    },
    /// The operation needs something the image does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Invalid argument passed by the caller (create options, sizes...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A differencing image's block lives in its parent, which is not attached.
    #[error("block {block} is not stored in this differencing image: its parent (image UUID {parent}) is needed to read it")]
    NeedsParent {
        /// Virtual block index.
        block: u64,
        /// The parent's image UUID.
        parent: String,
    },
    /// A differencing image's parent is not among the images given.
    #[error("image {child} is a differencing image whose parent (image UUID {parent}) is missing{hint}")]
    MissingParent {
        /// The child's image UUID (or file name).
        child: String,
        /// The UUID of the parent that is needed.
        parent: String,
        /// Where it was looked for, or how to name it.
        hint: String,
    },
    /// A set of images does not form one chain (cycle, fork, size mismatch...); which way it
    /// is broken is [`ChainError`] (its [`ChainError::kind`] is the finer name).
    #[error("broken chain: {0}")]
    Chain(ChainError),
    /// The caller cancelled a long operation.
    #[error("cancelled")]
    Cancelled,
    /// The image is open read-only.
    #[error("the image is open read-only")]
    ReadOnly,
    /// The underlying storage failed.
    #[error("storage {op} at offset {offset} ({len} bytes) failed: {source}")]
    Io {
        /// "read", "write", "set_len", "flush", "len".
        op: &'static str,
        /// Byte offset of the failing call.
        offset: u64,
        /// Length of the failing call.
        len: u64,
        /// The storage's own error.
        #[source]
        source: StorageError,
    },
    /// Writing to the output of an export (a pipe, standard output, a file being written
    /// in order) failed. The storage the image itself lives on failing is [`VdiError::Io`].
    #[error("writing {what} failed: {source}")]
    Output {
        /// What was being written ("the output", "the map").
        what: &'static str,
        /// The sink's own error, with its I/O kind.
        #[source]
        source: StorageError,
    },
    /// Reading partitions or files inside the disk failed; its kind is
    /// [`VolumeError::kind`](crate::volume::VolumeError::kind).
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
}

impl VdiError {
    /// A stable, machine-readable name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            VdiError::BadSignature { .. } => "bad-signature",
            VdiError::Truncated { .. } => "truncated",
            VdiError::InvalidField { .. } => "invalid-field",
            VdiError::UnsupportedVersion { .. } => "unsupported-version",
            VdiError::BlockPastEnd { .. } => "block-past-end",
            VdiError::OutOfRange { .. } => "out-of-range",
            VdiError::Unsupported(_) => "unsupported",
            VdiError::InvalidArgument(_) => "invalid-argument",
            VdiError::NeedsParent { .. } => "needs-parent",
            VdiError::MissingParent { .. } => "missing-parent",
            VdiError::Chain(_) => "broken-chain",
            VdiError::Cancelled => "cancelled",
            VdiError::ReadOnly => "read-only",
            VdiError::Io { source, .. } if source.is_no_space() => "no-space",
            VdiError::Io { .. } => "io",
            VdiError::Output { .. } => "output",
            VdiError::Volume(e) => e.kind(),
        }
    }

    /// The I/O kind of a storage or output failure ([`VdiError::Io`], [`VdiError::Output`]).
    pub fn io_kind(&self) -> Option<ErrorKind> {
        match self {
            VdiError::Io { source, .. } | VdiError::Output { source, .. } => Some(source.kind),
            _ => None,
        }
    }

    /// A failure writing `what` to an export's output.
    pub fn output(what: &'static str, e: std::io::Error) -> Self {
        VdiError::Output { what, source: StorageError::from(e) }
    }

    pub(crate) fn field(field: &'static str, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        VdiError::InvalidField { field, value: value.to_string(), expected: expected.into() }
    }
}

/// An error reported by a storage backend.
///
/// Backends wrap their native error (an `std::io::Error`, a JS exception) as text plus its
/// kind: an [`ErrorKind`] (the same names for every backend: a full disk and an exceeded
/// browser quota are both [`ErrorKind::StorageFull`]) and a flag telling whether the failure
/// was an attempt to read past the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    /// Human-readable description from the backend.
    pub message: String,
    /// What kind of failure it was ([`ErrorKind::Other`] when the backend cannot tell).
    pub kind: ErrorKind,
    /// True when a read asked for bytes beyond the end of the storage.
    pub past_end: bool,
}

impl StorageError {
    /// A generic backend failure.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError::with_kind(ErrorKind::Other, message)
    }

    /// A backend failure of a known kind.
    pub fn with_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        StorageError { message: message.into(), kind, past_end: false }
    }

    /// The storage is full (no space left on the device, a browser quota exceeded).
    pub fn no_space(message: impl Into<String>) -> Self {
        StorageError::with_kind(ErrorKind::StorageFull, message)
    }

    /// A read that reached past the end of the storage.
    pub fn past_end(offset: u64, len: u64, size: u64) -> Self {
        StorageError {
            message: format!("range {offset}..{} is past the end ({size} bytes)", offset.saturating_add(len)),
            kind: ErrorKind::UnexpectedEof,
            past_end: true,
        }
    }

    /// True when the storage ran out of space.
    pub fn is_no_space(&self) -> bool {
        self.kind == ErrorKind::StorageFull
    }
}

/// The error's text and kind; an end-of-file error is a read past the end.
impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        let kind = e.kind();
        StorageError { message: e.to_string(), kind, past_end: kind == ErrorKind::UnexpectedEof }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

/// How a set of images fails to form one differencing chain. Shown as
/// `broken chain: <this>` inside [`VdiError::Chain`]; [`ChainError::kind`] names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A differencing image whose parent link (`uuid_link`) is null.
    #[error("differencing image {child} has a null parent UUID (uuid_link)")]
    NullParent {
        /// The image's UUID.
        child: Uuid,
    },
    /// Following parent links from `child` leads to `parent`, already in the chain.
    #[error("cycle: image {child} names {parent} as its parent, which is already in the chain")]
    Cycle {
        /// The image whose link closes the loop.
        child: Uuid,
        /// The UUID it names, already in the chain.
        parent: Uuid,
    },
    /// Every image of a set is another one's parent: the links only form loops.
    #[error("the images' parent links form a cycle")]
    CycleInSet {
        /// Images in the set.
        images: usize,
    },
    /// Several images have one image UUID.
    #[error("{}", duplicate_text(.uuid, .count, .needed_by))]
    DuplicateUuid {
        /// The shared UUID.
        uuid: Uuid,
        /// How many images have it.
        count: usize,
        /// The image that needs it as its parent, if the duplicate was met on the way.
        needed_by: Option<Uuid>,
    },
    /// Two differencing images claim one parent: two snapshots of one image.
    #[error("images {first} and {second} both claim {parent} as their parent (two snapshots of one image: open them one at a time)")]
    Fork {
        /// The parent's UUID.
        parent: Uuid,
        /// One child.
        first: Uuid,
        /// The other child.
        second: Uuid,
    },
    /// The images form several chains; each has a top (an image no other one claims).
    #[error("the images form {} separate chains (tops: {})", .tops.len(), join(.tops))]
    SeparateChains {
        /// The top of each chain.
        tops: Vec<Uuid>,
    },
    /// Some images are not reached from the one top (they link in a loop apart from it).
    #[error("{extra} of the {total} images are not part of the chain ending at {top}")]
    NotInChain {
        /// Images left out.
        extra: usize,
        /// Images given.
        total: usize,
        /// The chain's top.
        top: Uuid,
    },
    /// A differencing image's block size differs from its parent's.
    #[error("image {child} has {child_block_size}-byte blocks but its parent {parent} has {parent_block_size}-byte blocks")]
    BlockSizeMismatch {
        /// The child's UUID.
        child: Uuid,
        /// The child's block size.
        child_block_size: u32,
        /// The parent's UUID.
        parent: Uuid,
        /// The parent's block size.
        parent_block_size: u32,
    },
}

fn duplicate_text(uuid: &Uuid, count: &usize, needed_by: &Option<Uuid>) -> String {
    match (needed_by, *count) {
        (Some(child), _) => format!("{count} images have the image UUID {uuid} that {child} needs as its parent"),
        (None, 2) => format!("two images have the same image UUID {uuid}"),
        (None, _) => format!("{count} images have the same image UUID {uuid}"),
    }
}

fn join(uuids: &[Uuid]) -> String {
    uuids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
}

impl ChainError {
    /// A stable, machine-readable name for the way the chain is broken: "null-parent",
    /// "cycle", "duplicate-uuid", "fork", "separate-chains", "not-in-chain",
    /// "block-size-mismatch".
    pub fn kind(&self) -> &'static str {
        match self {
            ChainError::NullParent { .. } => "null-parent",
            ChainError::Cycle { .. } | ChainError::CycleInSet { .. } => "cycle",
            ChainError::DuplicateUuid { .. } => "duplicate-uuid",
            ChainError::Fork { .. } => "fork",
            ChainError::SeparateChains { .. } => "separate-chains",
            ChainError::NotInChain { .. } => "not-in-chain",
            ChainError::BlockSizeMismatch { .. } => "block-size-mismatch",
        }
    }
}

impl From<ChainError> for VdiError {
    fn from(e: ChainError) -> Self {
        VdiError::Chain(e)
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = VdiError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn chain_errors_have_a_kind_and_say_which_images() {
        let a = "00000000-0000-0000-0000-00000000000a";
        let b = "00000000-0000-0000-0000-00000000000b";
        let c = "00000000-0000-0000-0000-00000000000c";
        let cases: Vec<(ChainError, &str, String)> = vec![
            (
                ChainError::NullParent { child: u(0xa) },
                "null-parent",
                format!("differencing image {a} has a null parent UUID (uuid_link)"),
            ),
            (
                ChainError::Cycle { child: u(0xa), parent: u(0xb) },
                "cycle",
                format!("cycle: image {a} names {b} as its parent, which is already in the chain"),
            ),
            (ChainError::CycleInSet { images: 3 }, "cycle", "the images' parent links form a cycle".into()),
            (
                ChainError::DuplicateUuid { uuid: u(0xa), count: 2, needed_by: Some(u(0xb)) },
                "duplicate-uuid",
                format!("2 images have the image UUID {a} that {b} needs as its parent"),
            ),
            (
                ChainError::DuplicateUuid { uuid: u(0xa), count: 2, needed_by: None },
                "duplicate-uuid",
                format!("two images have the same image UUID {a}"),
            ),
            (
                ChainError::DuplicateUuid { uuid: u(0xa), count: 3, needed_by: None },
                "duplicate-uuid",
                format!("3 images have the same image UUID {a}"),
            ),
            (
                ChainError::Fork { parent: u(0xa), first: u(0xb), second: u(0xc) },
                "fork",
                format!("images {b} and {c} both claim {a} as their parent (two snapshots of one image: open them one at a time)"),
            ),
            (
                ChainError::SeparateChains { tops: vec![u(0xa), u(0xb)] },
                "separate-chains",
                format!("the images form 2 separate chains (tops: {a}, {b})"),
            ),
            (
                ChainError::NotInChain { extra: 2, total: 5, top: u(0xc) },
                "not-in-chain",
                format!("2 of the 5 images are not part of the chain ending at {c}"),
            ),
            (
                ChainError::BlockSizeMismatch { child: u(0xa), child_block_size: 8192, parent: u(0xb), parent_block_size: 4096 },
                "block-size-mismatch",
                format!("image {a} has 8192-byte blocks but its parent {b} has 4096-byte blocks"),
            ),
        ];
        for (e, kind, text) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.to_string(), text);
            let v = VdiError::from(e.clone());
            assert_eq!(v.kind(), "broken-chain");
            assert_eq!(v.to_string(), format!("broken chain: {text}"));
            // The detail is the message, not a cause (a reporter would print it twice).
            assert!(std::error::Error::source(&v).is_none());
            assert!(matches!(v, VdiError::Chain(ref c) if *c == e));
        }
    }

    #[test]
    fn storage_errors_keep_the_io_kind() {
        let full = StorageError::from(std::io::Error::from(ErrorKind::StorageFull));
        assert_eq!(full.kind, ErrorKind::StorageFull);
        assert!(full.is_no_space() && !full.past_end);
        let eof = StorageError::from(std::io::Error::new(ErrorKind::UnexpectedEof, "short read"));
        assert!(eof.past_end && !eof.is_no_space());
        assert_eq!(eof.to_string(), "short read");
        let pe = StorageError::past_end(10, 5, 12);
        assert!(pe.past_end);
        assert_eq!(pe.kind, ErrorKind::UnexpectedEof);
        assert_eq!(pe.to_string(), "range 10..15 is past the end (12 bytes)");
        let other = StorageError::new("it broke");
        assert_eq!((other.kind, other.past_end), (ErrorKind::Other, false));
        let denied = StorageError::with_kind(ErrorKind::PermissionDenied, "no");
        assert_eq!(denied.kind, ErrorKind::PermissionDenied);
        assert!(StorageError::no_space("quota exceeded").is_no_space());
    }

    #[test]
    fn io_and_output_kinds() {
        let io = |source| VdiError::Io { op: "write", offset: 4096, len: 512, source };
        let e = io(StorageError::no_space("QuotaExceededError: the quota has been exceeded"));
        assert_eq!(e.kind(), "no-space");
        assert_eq!(e.io_kind(), Some(ErrorKind::StorageFull));
        assert_eq!(
            e.to_string(),
            "storage write at offset 4096 (512 bytes) failed: QuotaExceededError: the quota has been exceeded"
        );
        let e = io(StorageError::new("injected fault"));
        assert_eq!(e.kind(), "io");
        assert_eq!(e.io_kind(), Some(ErrorKind::Other));
        let e = VdiError::output("the output", std::io::Error::from(ErrorKind::BrokenPipe));
        assert_eq!(e.kind(), "output");
        assert_eq!(e.io_kind(), Some(ErrorKind::BrokenPipe));
        assert!(e.to_string().starts_with("writing the output failed: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = VdiError::output("the map", std::io::Error::from(ErrorKind::StorageFull));
        assert_eq!((e.kind(), e.io_kind()), ("output", Some(ErrorKind::StorageFull)));
        assert_eq!(VdiError::Cancelled.io_kind(), None);
    }
}
