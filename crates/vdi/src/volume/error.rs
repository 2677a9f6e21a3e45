//! What can go wrong inside a disk: partitions, filesystems, paths.
//!
//! ```text
//! VdiError::Volume(VolumeError) ── VdiError::kind() is VolumeError::kind():
//!   no-such-partition, partition-needed, no-filesystem, unsupported-filesystem,
//!   not-found, not-a-directory, not-a-file, damaged, limit, filesystem-not-clean
//! ```
//! A read of the disk itself failing stays the engine's own error (`io`, `needs-parent`...).

/// A failure reading partitions or files inside a disk. Carried by
/// [`VdiError::Volume`](crate::VdiError::Volume); [`VolumeError::kind`] is its stable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// No partition has this number.
    #[error("no partition {number} on this disk (partitions: {available})")]
    NoSuchPartition {
        /// The number asked for.
        number: u32,
        /// The numbers there are, comma-separated ("none" when there is none).
        available: String,
    },
    /// Several partitions hold a filesystem and none was named.
    #[error("the disk holds several filesystems (partitions {available}): name one")]
    PartitionNeeded {
        /// The numbers of the partitions with a filesystem.
        available: String,
    },
    /// The partition holds no filesystem this engine recognises.
    #[error("partition {number} holds no recognised filesystem")]
    NoFilesystem {
        /// The partition's number.
        number: u32,
    },
    /// The filesystem was recognised but its files are not read (detection only).
    #[error("partition {number} holds {fs}, whose files are not read (detection only)")]
    Unsupported {
        /// The partition's number.
        number: u32,
        /// The filesystem's kind ("xfs", "hfsplus"...).
        fs: String,
    },
    /// A path names nothing.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path as asked.
        path: String,
    },
    /// A path goes through, or lists, something that is not a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path as asked (up to the component that is not a directory).
        path: String,
    },
    /// A file's bytes were asked of something that is not a regular file.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path or name.
        path: String,
    },
    /// An on-disk structure breaks the rules of its format.
    #[error("damaged {fs}: {place}: {detail}")]
    Damaged {
        /// The format ("mbr", "gpt", "ext4", "vfat"...).
        fs: &'static str,
        /// Where: the structure and its location ("inode 12", "extent node at block 900").
        place: String,
        /// What is wrong: the value found and what was expected.
        detail: String,
    },
    /// A filesystem that is not clean (mounted, a journal to replay, errors): its free
    /// space is not trusted, and nothing on the disk is compacted.
    #[error("partition {number} ({fs}) is not clean: {reason}; {hint}")]
    NotClean {
        /// The partition's number.
        number: u32,
        /// The filesystem's kind.
        fs: String,
        /// What is wrong.
        reason: String,
        /// How to make it clean.
        hint: String,
    },
    /// Something is larger than this engine reads at once (a directory of millions of
    /// entries, a path hundreds of components deep).
    #[error("{what} is {value}, more than the {limit} this engine reads")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
}

impl VolumeError {
    /// A stable, machine-readable name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            VolumeError::NoSuchPartition { .. } => "no-such-partition",
            VolumeError::PartitionNeeded { .. } => "partition-needed",
            VolumeError::NoFilesystem { .. } => "no-filesystem",
            VolumeError::Unsupported { .. } => "unsupported-filesystem",
            VolumeError::NotFound { .. } => "not-found",
            VolumeError::NotADirectory { .. } => "not-a-directory",
            VolumeError::NotAFile { .. } => "not-a-file",
            VolumeError::Damaged { .. } => "damaged",
            VolumeError::Limit { .. } => "limit",
            VolumeError::NotClean { .. } => "filesystem-not-clean",
        }
    }

    pub(crate) fn damaged(fs: &'static str, place: impl Into<String>, detail: impl Into<String>) -> Self {
        VolumeError::Damaged { fs, place: place.into(), detail: detail.into() }
    }
}
