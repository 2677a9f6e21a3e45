//! The VDI header: on-disk layout, parsing, serialisation and validation.
//!
//! Format description: `shared/VDI-FORMAT.md` (compiled from VirtualBox's `VDI.cpp` /
//! `VDICore.h` and QEMU's `block/vdi.c`). All integers are little-endian; UUIDs are stored in
//! Microsoft GUID byte order.

use byteorder::{ByteOrder, LittleEndian as LE};
use uuid::Uuid;

use crate::error::{Result, VdiError};
pub use crate::uuid_arg::UuidArg;

/// The signature at offset 0x40.
pub const VDI_SIGNATURE: u32 = 0xBEDA_107F;
/// Version 1.1, the one VirtualBox and QEMU write.
pub const VDI_VERSION_1_1: u32 = 0x0001_0001;
/// Legacy version 0.2 (read-only support).
pub const VDI_VERSION_0_2: u32 = 0x0000_0002;
/// Header size written by QEMU (no LCHS geometry).
pub const HEADER_SIZE_V1: u32 = 0x180;
/// Header size written by VirtualBox (v1.1+, with LCHS geometry).
pub const HEADER_SIZE_V1_PLUS: u32 = 0x190;
/// Size of the pre-header (text, signature, version).
pub const PRE_HEADER_SIZE: u32 = 0x48;
/// Bytes of the file that hold every field this engine knows about (v1.1+).
pub const HEADER_BYTES_MAX: usize = (PRE_HEADER_SIZE + HEADER_SIZE_V1_PLUS) as usize;
/// Where a v0.2 header's block map starts.
pub const V0_OFFSET_BMAP: u32 = 0x1A4;
/// Sector size: the only one the format allows.
pub const SECTOR_SIZE: u32 = 512;
/// Largest `blocks_in_image` accepted (QEMU's limit: a 2 GiB block map).
pub const MAX_BLOCKS_IN_IMAGE: u32 = 0x1FFF_FF80;
/// Smallest block size accepted.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted (VirtualBox's limit).
pub const MAX_BLOCK_SIZE: u32 = 128 * 1024 * 1024;
/// The default (and by far the most common) block size: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 1024 * 1024;
/// Header text VirtualBox writes today.
pub const TEXT_VIRTUALBOX: &str = "<<< Oracle VM VirtualBox Disk Image >>>\n";
/// Header text QEMU writes.
pub const TEXT_QEMU: &str = "<<< QEMU VM Virtual Disk Image >>>\n";
/// Longest comment, in bytes (the field is 256 bytes with a terminating NUL).
pub const MAX_COMMENT_BYTES: usize = 255;

/// Kind of image, from `image_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    /// 1: dynamic (blocks allocated on first write).
    Normal,
    /// 2: fixed / static (every block allocated at creation).
    Fixed,
    /// 3: undo (legacy; treated as normal).
    Undo,
    /// 4: differencing (snapshot) image: FREE blocks fall through to the parent.
    Diff,
}

impl ImageType {
    /// From the raw on-disk value.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            1 => Some(ImageType::Normal),
            2 => Some(ImageType::Fixed),
            3 => Some(ImageType::Undo),
            4 => Some(ImageType::Diff),
            _ => None,
        }
    }
    /// The raw on-disk value.
    pub fn raw(self) -> u32 {
        match self {
            ImageType::Normal => 1,
            ImageType::Fixed => 2,
            ImageType::Undo => 3,
            ImageType::Diff => 4,
        }
    }
    /// A short lowercase name ("dynamic", "fixed", "undo", "diff").
    pub fn name(self) -> &'static str {
        match self {
            ImageType::Normal => "dynamic",
            ImageType::Fixed => "fixed",
            ImageType::Undo => "undo",
            ImageType::Diff => "diff",
        }
    }
}

/// A CHS disk geometry as stored in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u32,
    /// Heads.
    pub heads: u32,
    /// Sectors per track.
    pub sectors: u32,
    /// Bytes per sector (must be 512).
    pub sector_size: u32,
}

impl Geometry {
    /// Parse a logical geometry written `C/H/S` (e.g. `1024/16/63`; 512-byte sectors).
    /// Heads are at most 255 and sectors at most 63, as a BIOS allows.
    pub fn parse_chs(text: &str) -> Result<Geometry> {
        let bad = || VdiError::InvalidArgument(format!("geometry {text:?} is not C/H/S, e.g. 1024/16/63"));
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() != 3 {
            return Err(bad());
        }
        let n = |p: &str| p.trim().parse::<u32>().map_err(|_| bad());
        let (cylinders, heads, sectors) = (n(parts[0])?, n(parts[1])?, n(parts[2])?);
        if heads > 255 || sectors > 63 {
            return Err(VdiError::InvalidArgument(format!(
                "geometry {text:?}: heads must be at most 255 and sectors at most 63"
            )));
        }
        Ok(Geometry { cylinders, heads, sectors, sector_size: SECTOR_SIZE })
    }

    fn parse(b: &[u8]) -> Self {
        Geometry {
            cylinders: LE::read_u32(&b[0..]),
            heads: LE::read_u32(&b[4..]),
            sectors: LE::read_u32(&b[8..]),
            sector_size: LE::read_u32(&b[12..]),
        }
    }
    fn write(&self, b: &mut [u8]) {
        LE::write_u32(&mut b[0..], self.cylinders);
        LE::write_u32(&mut b[4..], self.heads);
        LE::write_u32(&mut b[8..], self.sectors);
        LE::write_u32(&mut b[12..], self.sector_size);
    }
    /// A geometry with no C/H/S set and 512-byte sectors, as VirtualBox writes at creation.
    pub fn unset() -> Self {
        Geometry { cylinders: 0, heads: 0, sectors: 0, sector_size: SECTOR_SIZE }
    }
}


/// Every field of a VDI header, v0.2, v1.1 or v1.1+.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdiHeader {
    /// The 64-byte text at offset 0 (informational only).
    pub text: [u8; 64],
    /// `major << 16 | minor`.
    pub version: u32,
    /// Size of the header after the pre-header (0 for v0.2, which has none).
    pub header_size: u32,
    /// Raw image type (see [`ImageType`]).
    pub image_type: u32,
    /// Image flags (bit 0: zero-expand); kept, never acted on.
    pub image_flags: u32,
    /// The 256-byte comment field, raw.
    pub comment: [u8; 256],
    /// Byte offset of the block map.
    pub offset_bmap: u32,
    /// Byte offset of the data area.
    pub offset_data: u32,
    /// Legacy (physical) geometry.
    pub legacy_geometry: Geometry,
    /// The v1 "dummy" field (old BIOS translation).
    pub dummy: u32,
    /// Virtual disk size in bytes, as stored.
    pub disk_size: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Bytes of per-block prefix before each block's data.
    pub block_extra: u32,
    /// Number of entries in the block map.
    pub blocks_in_image: u32,
    /// Number of allocated blocks (slots in the data area).
    pub blocks_allocated: u32,
    /// Image UUID.
    pub uuid_create: Uuid,
    /// Modification UUID (QEMU: uuid_last_snap).
    pub uuid_modify: Uuid,
    /// Parent's image UUID (non-null only for differencing images).
    pub uuid_link: Uuid,
    /// Parent's modify UUID when the diff was made (not in v0.2).
    pub uuid_parent_modify: Uuid,
    /// Logical (BIOS) geometry, v1.1+ only.
    pub lchs: Option<Geometry>,
}

fn uuid_at(b: &[u8], off: usize) -> Uuid {
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[off..off + 16]);
    Uuid::from_bytes_le(u)
}

fn put_uuid(b: &mut [u8], off: usize, u: &Uuid) {
    b[off..off + 16].copy_from_slice(&u.to_bytes_le());
}

impl VdiHeader {
    /// Bytes needed from the start of the file to parse a header whose version and size
    /// are in `pre` (the first 0x4C bytes), or `None` if those are not understood.
    pub fn bytes_needed(version: u32, header_size: u32) -> usize {
        if version == VDI_VERSION_0_2 {
            V0_OFFSET_BMAP as usize
        } else {
            (PRE_HEADER_SIZE + header_size.min(HEADER_SIZE_V1_PLUS)) as usize
        }
    }

    /// True when `buf` (at least 0x44 bytes from the start of a file) carries the VDI signature.
    /// Detection never looks at the text.
    pub fn probe(buf: &[u8]) -> bool {
        buf.len() >= 0x44 && LE::read_u32(&buf[0x40..]) == VDI_SIGNATURE
    }

    /// Parse a header from the first bytes of a file. `buf` may be longer than needed.
    /// This checks only what is needed to read the fields (signature, version, header_size);
    /// [`VdiHeader::validate`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < 0x48 {
            return Err(VdiError::Truncated { what: "the VDI pre-header", needed: 0x48, len: buf.len() as u64 });
        }
        let sig = LE::read_u32(&buf[0x40..]);
        if sig != VDI_SIGNATURE {
            return Err(VdiError::BadSignature { found: sig });
        }
        let version = LE::read_u32(&buf[0x44..]);
        let mut text = [0u8; 64];
        text.copy_from_slice(&buf[..64]);
        let mut comment = [0u8; 256];
        if version == VDI_VERSION_0_2 {
            let need = V0_OFFSET_BMAP as usize;
            if buf.len() < need {
                return Err(VdiError::Truncated { what: "the v0.2 header", needed: need as u64, len: buf.len() as u64 });
            }
            comment.copy_from_slice(&buf[0x50..0x150]);
            return Ok(VdiHeader {
                text,
                version,
                header_size: 0,
                image_type: LE::read_u32(&buf[0x48..]),
                image_flags: LE::read_u32(&buf[0x4C..]),
                comment,
                offset_bmap: V0_OFFSET_BMAP,
                offset_data: 0, // computed below
                legacy_geometry: Geometry::parse(&buf[0x150..]),
                dummy: 0,
                disk_size: LE::read_u64(&buf[0x160..]),
                block_size: LE::read_u32(&buf[0x168..]),
                block_extra: 0,
                blocks_in_image: LE::read_u32(&buf[0x16C..]),
                blocks_allocated: LE::read_u32(&buf[0x170..]),
                uuid_create: uuid_at(buf, 0x174),
                uuid_modify: uuid_at(buf, 0x184),
                uuid_link: uuid_at(buf, 0x194),
                uuid_parent_modify: Uuid::nil(),
                lchs: None,
            }
            .with_v0_data_offset());
        }
        let major = (version >> 16) as u16;
        if major != 1 {
            return Err(VdiError::UnsupportedVersion { major, minor: version as u16 });
        }
        if buf.len() < 0x4C {
            // Not even header_size fits (a 72..75-byte file): the smallest v1 header is needed.
            let need = (PRE_HEADER_SIZE + HEADER_SIZE_V1) as u64;
            return Err(VdiError::Truncated { what: "the VDI header", needed: need, len: buf.len() as u64 });
        }
        let header_size = LE::read_u32(&buf[0x48..]);
        if header_size < HEADER_SIZE_V1 {
            return Err(VdiError::field(
                "header_size",
                format!("{header_size:#x}"),
                format!("at least {HEADER_SIZE_V1:#x}"),
            ));
        }
        let need = Self::bytes_needed(version, header_size);
        if buf.len() < need {
            return Err(VdiError::Truncated { what: "the VDI header", needed: need as u64, len: buf.len() as u64 });
        }
        comment.copy_from_slice(&buf[0x54..0x154]);
        Ok(VdiHeader {
            text,
            version,
            header_size,
            image_type: LE::read_u32(&buf[0x4C..]),
            image_flags: LE::read_u32(&buf[0x50..]),
            comment,
            offset_bmap: LE::read_u32(&buf[0x154..]),
            offset_data: LE::read_u32(&buf[0x158..]),
            legacy_geometry: Geometry::parse(&buf[0x15C..]),
            dummy: LE::read_u32(&buf[0x16C..]),
            disk_size: LE::read_u64(&buf[0x170..]),
            block_size: LE::read_u32(&buf[0x178..]),
            block_extra: LE::read_u32(&buf[0x17C..]),
            blocks_in_image: LE::read_u32(&buf[0x180..]),
            blocks_allocated: LE::read_u32(&buf[0x184..]),
            uuid_create: uuid_at(buf, 0x188),
            uuid_modify: uuid_at(buf, 0x198),
            uuid_link: uuid_at(buf, 0x1A8),
            uuid_parent_modify: uuid_at(buf, 0x1B8),
            lchs: (header_size >= HEADER_SIZE_V1_PLUS).then(|| Geometry::parse(&buf[0x1C8..])),
        })
    }

    fn with_v0_data_offset(mut self) -> Self {
        // v0.2 has no offsets: data follows the map directly. Saturate: validate() refuses
        // a map too large for 32-bit offsets.
        let map = (self.blocks_in_image as u64) * 4 + V0_OFFSET_BMAP as u64;
        self.offset_data = u32::try_from(map).unwrap_or(u32::MAX);
        self
    }

    /// Serialise a v1.1 / v1.1+ header: `0x48 + min(header_size, 0x190)` bytes.
    /// v0.2 headers are never written.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.version == VDI_VERSION_0_2 {
            return Err(VdiError::Unsupported("writing a v0.2 header (v0.2 images are read-only)".into()));
        }
        let mut b = vec![0u8; Self::bytes_needed(self.version, self.header_size)];
        b[..64].copy_from_slice(&self.text);
        LE::write_u32(&mut b[0x40..], VDI_SIGNATURE);
        LE::write_u32(&mut b[0x44..], self.version);
        LE::write_u32(&mut b[0x48..], self.header_size);
        LE::write_u32(&mut b[0x4C..], self.image_type);
        LE::write_u32(&mut b[0x50..], self.image_flags);
        b[0x54..0x154].copy_from_slice(&self.comment);
        LE::write_u32(&mut b[0x154..], self.offset_bmap);
        LE::write_u32(&mut b[0x158..], self.offset_data);
        self.legacy_geometry.write(&mut b[0x15C..]);
        LE::write_u32(&mut b[0x16C..], self.dummy);
        LE::write_u64(&mut b[0x170..], self.disk_size);
        LE::write_u32(&mut b[0x178..], self.block_size);
        LE::write_u32(&mut b[0x17C..], self.block_extra);
        LE::write_u32(&mut b[0x180..], self.blocks_in_image);
        LE::write_u32(&mut b[0x184..], self.blocks_allocated);
        put_uuid(&mut b, 0x188, &self.uuid_create);
        put_uuid(&mut b, 0x198, &self.uuid_modify);
        put_uuid(&mut b, 0x1A8, &self.uuid_link);
        put_uuid(&mut b, 0x1B8, &self.uuid_parent_modify);
        if let Some(g) = &self.lchs {
            if b.len() >= 0x1D8 {
                g.write(&mut b[0x1C8..]);
            }
        }
        Ok(b)
    }

    /// The major version.
    pub fn version_major(&self) -> u16 {
        (self.version >> 16) as u16
    }
    /// The minor version.
    pub fn version_minor(&self) -> u16 {
        self.version as u16
    }
    /// The header text up to its first NUL, lossily decoded (for display only).
    pub fn text_str(&self) -> String {
        nul_terminated(&self.text)
    }
    /// The comment up to its first NUL, lossily decoded as UTF-8. Untrusted text.
    pub fn comment_str(&self) -> String {
        nul_terminated(&self.comment)
    }
    /// Set the comment; refuses text longer than 255 bytes of UTF-8 or containing NUL.
    pub fn set_comment(&mut self, comment: &str) -> Result<()> {
        let b = comment.as_bytes();
        if b.len() > MAX_COMMENT_BYTES {
            return Err(VdiError::InvalidArgument(format!(
                "comment is {} bytes of UTF-8, at most {MAX_COMMENT_BYTES} fit",
                b.len()
            )));
        }
        if b.contains(&0) {
            return Err(VdiError::InvalidArgument("comment contains a NUL character".into()));
        }
        self.comment = [0u8; 256];
        self.comment[..b.len()].copy_from_slice(b);
        Ok(())
    }
    /// The image type, if it is one of the four known.
    pub fn kind(&self) -> Option<ImageType> {
        ImageType::from_raw(self.image_type)
    }
    /// Distance in the file between two consecutive slots: `block_extra + block_size`.
    pub fn block_stride(&self) -> u64 {
        self.block_size as u64 + self.block_extra as u64
    }
    /// Byte length of the block map.
    pub fn map_bytes(&self) -> u64 {
        self.blocks_in_image as u64 * 4
    }
    /// End of the header fields in the file.
    pub fn header_end(&self) -> u64 {
        if self.version == VDI_VERSION_0_2 {
            V0_OFFSET_BMAP as u64
        } else {
            PRE_HEADER_SIZE as u64 + self.header_size as u64
        }
    }
    /// The virtual disk size used for I/O: `disk_size` rounded up to a whole sector, as
    /// QEMU does (VirtualBox rounds down). Rounding up never hides stored bytes, and makes
    /// raw exports identical to `qemu-img convert`'s.
    pub fn virtual_size(&self) -> u64 {
        self.disk_size.div_ceil(SECTOR_SIZE as u64) * SECTOR_SIZE as u64
    }
    /// Host byte offset of the data of `slot`.
    pub fn slot_offset(&self, slot: u32) -> u64 {
        self.offset_data as u64 + slot as u64 * self.block_stride() + self.block_extra as u64
    }

    /// Check every rule of the format that must hold for the image to be read safely.
    /// `file_len` is the length of the file. Returns the first rule broken.
    pub fn validate(&self, file_len: u64) -> Result<()> {
        self.validate_fields()?;
        self.validate_layout(file_len)
    }

    /// Rules on the fields alone: types, sizes, powers of two, bounds.
    pub fn validate_fields(&self) -> Result<()> {
        let v0 = self.version == VDI_VERSION_0_2;
        if self.kind().is_none() {
            return Err(VdiError::field("image_type", self.image_type, "1 (dynamic), 2 (fixed), 3 (undo) or 4 (diff)"));
        }
        if self.legacy_geometry.sector_size != SECTOR_SIZE && !(v0 && self.legacy_geometry.sector_size == 0) {
            return Err(VdiError::field("sector_size", self.legacy_geometry.sector_size, "512"));
        }
        if let Some(l) = &self.lchs {
            if l.sector_size != SECTOR_SIZE && l.sector_size != 0 {
                return Err(VdiError::field("lchs.sector_size", l.sector_size, "512 (or 0)"));
            }
        }
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(VdiError::field(
                "block_size",
                bs,
                format!("a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE} (128 MiB)"),
            ));
        }
        let be = self.block_extra;
        if be != 0 && (!be.is_power_of_two() || be > MAX_BLOCK_SIZE) {
            return Err(VdiError::field("block_extra", be, "0 or a power of two up to 128 MiB"));
        }
        if self.blocks_in_image > MAX_BLOCKS_IN_IMAGE {
            return Err(VdiError::field(
                "blocks_in_image",
                self.blocks_in_image,
                format!("at most {MAX_BLOCKS_IN_IMAGE} ({MAX_BLOCKS_IN_IMAGE:#x}, a 2 GiB block map)"),
            ));
        }
        let capacity = self.blocks_in_image as u64 * bs as u64;
        if self.disk_size > capacity {
            return Err(VdiError::field(
                "disk_size",
                self.disk_size,
                format!("at most blocks_in_image * block_size = {} * {} = {capacity}", self.blocks_in_image, bs),
            ));
        }
        // blocks_allocated > blocks_in_image is not refused: some compaction tools leave
        // images whose data area holds more slots than the disk has blocks, with entries
        // naming slots past blocks_in_image. They read (as QEMU reads them), open read-only
        // with a note (see [`VdiHeader::slots_past_blocks`]) and repair or compact moves the
        // data below blocks_in_image.
        Ok(())
    }

    /// True when `blocks_allocated` exceeds `blocks_in_image`: the data area counts slots
    /// past the block map's range, as some compaction tools leave it. VirtualBox refuses
    /// such a header; QEMU reads it. The engine reads it and refuses writes until repair or
    /// compact has moved the blocks below `blocks_in_image` (no data is lost).
    pub fn slots_past_blocks(&self) -> bool {
        self.blocks_allocated > self.blocks_in_image
    }

    /// Rules on where the regions lie: alignment, order, overlap.
    pub fn validate_layout(&self, file_len: u64) -> Result<()> {
        let _ = file_len;
        let v0 = self.version == VDI_VERSION_0_2;
        if !v0 {
            if self.offset_bmap % SECTOR_SIZE != 0 {
                return Err(VdiError::field("offset_bmap", self.offset_bmap, "a multiple of 512"));
            }
            if self.offset_data % SECTOR_SIZE != 0 {
                return Err(VdiError::field("offset_data", self.offset_data, "a multiple of 512"));
            }
        }
        if (self.offset_bmap as u64) < self.header_end() {
            return Err(VdiError::field(
                "offset_bmap",
                self.offset_bmap,
                format!("at least {} (the end of the header): the block map overlaps the header", self.header_end()),
            ));
        }
        let map_end = self.offset_bmap as u64 + self.map_bytes();
        if (self.offset_data as u64) < map_end {
            return Err(VdiError::field(
                "offset_data",
                self.offset_data,
                format!(
                    "at least offset_bmap + 4 * blocks_in_image = {map_end}: the data area overlaps the block map"
                ),
            ));
        }
        Ok(())
    }

    /// Facts worth telling a user that do not stop the image from being read.
    pub fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.version == VDI_VERSION_0_2 {
            n.push("legacy v0.2 header: read-only support".to_string());
        } else if self.version != VDI_VERSION_1_1 {
            n.push(format!("version 1.{} (1.1 expected); read as 1.1", self.version_minor()));
        }
        if self.disk_size % SECTOR_SIZE as u64 != 0 {
            n.push(format!(
                "disk_size {} is not a multiple of 512: read as {} (rounded up as QEMU does; VirtualBox rounds down to {})",
                self.disk_size,
                self.virtual_size(),
                self.disk_size / 512 * 512
            ));
        }
        if self.uuid_create.is_nil() {
            n.push("image UUID (uuid_create) is null; VirtualBox refuses to register such an image".into());
        }
        if self.kind() == Some(ImageType::Undo) {
            n.push("image_type 3 (undo) is legacy; read as a normal dynamic image".into());
        }
        if self.kind() == Some(ImageType::Diff) || !self.uuid_link.is_nil() {
            n.push(format!("differencing image: blocks not stored here are read from the parent {}", self.uuid_link));
        }
        if self.slots_past_blocks() {
            n.push(format!(
                "blocks_allocated {} exceeds blocks_in_image {}: the data area holds slots past the block map's range \
                 (as some compaction tools leave it); VirtualBox refuses such an image. Read-only until repair or \
                 compact moves those blocks below blocks_in_image (nothing is lost)",
                self.blocks_allocated, self.blocks_in_image
            ));
        }
        if self.block_extra != 0 {
            n.push(format!("block_extra is {}: each block has a {}-byte prefix", self.block_extra, self.block_extra));
        }
        n
    }
}

fn nul_terminated(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1.1+ header as VirtualBox writes it for an 8 GiB dynamic image, one field a line.
    fn vbox_header() -> Vec<u8> {
        let mut b = vec![0u8; 0x200];
        b[..40].copy_from_slice(TEXT_VIRTUALBOX.as_bytes());
        b[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]); // signature
        b[0x44..0x48].copy_from_slice(&[0x01, 0x00, 0x01, 0x00]); // version 1.1
        b[0x48..0x4C].copy_from_slice(&[0x90, 0x01, 0x00, 0x00]); // header_size 0x190
        b[0x4C..0x50].copy_from_slice(&[0x01, 0x00, 0x00, 0x00]); // image_type normal
        b[0x54..0x58].copy_from_slice(b"hi\0\0"); // comment
        b[0x154..0x158].copy_from_slice(&[0x00, 0x00, 0x10, 0x00]); // offset_bmap 1 MiB
        b[0x158..0x15C].copy_from_slice(&[0x00, 0x00, 0x20, 0x00]); // offset_data 2 MiB
        b[0x168..0x16C].copy_from_slice(&[0x00, 0x02, 0x00, 0x00]); // sector_size 512
        b[0x170..0x178].copy_from_slice(&[0, 0, 0, 0, 2, 0, 0, 0]); // disk_size 8 GiB
        b[0x178..0x17C].copy_from_slice(&[0x00, 0x00, 0x10, 0x00]); // block_size 1 MiB
        b[0x180..0x184].copy_from_slice(&[0x00, 0x20, 0x00, 0x00]); // blocks_in_image 8192
        b[0x184..0x188].copy_from_slice(&[0xfe, 0x1c, 0x00, 0x00]); // blocks_allocated 7422
        b[0x188..0x198].copy_from_slice(&[
            0xbe, 0x56, 0xe1, 0xff, 0x1b, 0x5f, 0xfc, 0x44, 0xa2, 0xa4, 0x8d, 0xc1, 0x1e, 0xcd, 0x24, 0x25,
        ]); // uuid_create
        b[0x1D4..0x1D8].copy_from_slice(&[0x00, 0x02, 0x00, 0x00]); // lchs sector_size 512
        b
    }

    #[test]
    fn parses_a_virtualbox_header() {
        let h = VdiHeader::parse(&vbox_header()).unwrap();
        assert_eq!(h.text_str(), TEXT_VIRTUALBOX);
        assert_eq!(h.header_size, 0x190);
        assert_eq!(h.kind(), Some(ImageType::Normal));
        assert_eq!(h.comment_str(), "hi");
        assert_eq!(h.offset_bmap, 1 << 20);
        assert_eq!(h.offset_data, 2 << 20);
        assert_eq!(h.disk_size, 8 << 30);
        assert_eq!(h.block_size, 1 << 20);
        assert_eq!(h.blocks_in_image, 8192);
        assert_eq!(h.blocks_allocated, 7422);
        // GUID byte order: the first three groups are little-endian.
        assert_eq!(h.uuid_create.to_string(), "ffe156be-5f1b-44fc-a2a4-8dc11ecd2425");
        assert_eq!(h.lchs, Some(Geometry::unset()));
        h.validate(10 << 30).unwrap();
        // Round trip.
        let bytes = h.to_bytes().unwrap();
        assert_eq!(&bytes[..], &vbox_header()[..0x1D8]);
    }

    #[test]
    fn detects_by_signature_not_text() {
        let mut b = vbox_header();
        b[..64].fill(b'x');
        assert!(VdiHeader::probe(&b));
        b[0x40] = 0;
        assert!(!VdiHeader::probe(&b));
        assert!(matches!(VdiHeader::parse(&b), Err(VdiError::BadSignature { found: 0xbeda1000 })));
    }

    #[test]
    fn rules_name_the_field() {
        let mut h = VdiHeader::parse(&vbox_header()).unwrap();
        h.block_size = 3 << 20;
        let e = h.validate(1 << 40).unwrap_err().to_string();
        assert!(e.contains("block_size = 3145728"), "{e}");
        let mut h = VdiHeader::parse(&vbox_header()).unwrap();
        h.offset_data = h.offset_bmap + 512;
        let e = h.validate(1 << 40).unwrap_err().to_string();
        assert!(e.contains("offset_data") && e.contains("overlaps the block map"), "{e}");
        let mut h = VdiHeader::parse(&vbox_header()).unwrap();
        h.disk_size = (8 << 30) + 1;
        assert!(h.validate(1 << 40).unwrap_err().to_string().contains("disk_size"));
    }

    #[test]
    fn odd_disk_size_rounds_up() {
        let mut h = VdiHeader::parse(&vbox_header()).unwrap();
        h.disk_size = 1000;
        assert_eq!(h.virtual_size(), 1024);
        assert!(h.notes().iter().any(|n| n.contains("not a multiple of 512")));
    }

    #[test]
    fn comment_limits() {
        let mut h = VdiHeader::parse(&vbox_header()).unwrap();
        h.set_comment(&"é".repeat(127)).unwrap(); // 254 bytes
        assert!(h.set_comment(&"é".repeat(128)).is_err()); // 256 bytes
        h.set_comment("<b>x</b>").unwrap();
        assert_eq!(h.comment_str(), "<b>x</b>");
    }
}
