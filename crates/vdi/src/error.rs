//! The engine's error type.

use std::fmt;

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
    /// A set of images does not form one chain (cycle, fork, size mismatch...).
    #[error("broken chain: {0}")]
    BrokenChain(String),
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
            VdiError::BrokenChain(_) => "broken-chain",
            VdiError::Cancelled => "cancelled",
            VdiError::ReadOnly => "read-only",
            VdiError::Io { .. } => "io",
        }
    }

    pub(crate) fn field(field: &'static str, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        VdiError::InvalidField { field, value: value.to_string(), expected: expected.into() }
    }
}

/// An error reported by a storage backend.
///
/// Backends wrap their native error (an `std::io::Error`, a JS exception) as text plus a
/// flag telling whether the failure was an attempt to read past the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    /// Human-readable description from the backend.
    pub message: String,
    /// True when a read asked for bytes beyond the end of the storage.
    pub past_end: bool,
}

impl StorageError {
    /// A generic backend failure.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError { message: message.into(), past_end: false }
    }

    /// A read that reached past the end of the storage.
    pub fn past_end(offset: u64, len: u64, size: u64) -> Self {
        StorageError {
            message: format!("range {offset}..{} is past the end ({size} bytes)", offset.saturating_add(len)),
            past_end: true,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StorageError {}

/// Shorthand for results in this crate.
pub type Result<T, E = VdiError> = std::result::Result<T, E>;
