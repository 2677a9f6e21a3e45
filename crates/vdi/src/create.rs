//! Creating new images.

use uuid::Uuid;

use crate::block_map::BLOCK_FREE;
use crate::error::{Result, VdiError};
use crate::header::{
    Geometry, ImageType, VdiHeader, DEFAULT_BLOCK_SIZE, HEADER_SIZE_V1, HEADER_SIZE_V1_PLUS, MAX_BLOCKS_IN_IMAGE,
    MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, PRE_HEADER_SIZE, SECTOR_SIZE, TEXT_QEMU, TEXT_VIRTUALBOX, VDI_VERSION_1_1,
};
use crate::image::VdiImage;
use crate::monitor::Monitor;
use crate::storage::{set_len, write_all, Storage};

/// Where the header, block map and data go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// As VirtualBox writes: header_size 0x190, block map and data aligned to 1 MiB.
    #[default]
    Vbox,
    /// As QEMU writes: header_size 0x180, block map at 0x200, data right after it.
    Qemu,
}

impl Layout {
    /// Parse "vbox" or "qemu".
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "vbox" | "virtualbox" => Ok(Layout::Vbox),
            "qemu" => Ok(Layout::Qemu),
            _ => Err(VdiError::InvalidArgument(format!("layout {s:?} is not one of \"vbox\", \"qemu\""))),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Virtual disk size in bytes; rounded up to a multiple of 512.
    pub size: u64,
    /// Fixed (every block allocated, the file fully sized) instead of dynamic.
    pub fixed: bool,
    /// Block size: a power of two between 512 bytes and 128 MiB (default 1 MiB).
    pub block_size: u32,
    /// Header and region layout.
    pub layout: Layout,
    /// Comment (at most 255 bytes of UTF-8).
    pub comment: String,
    /// Image UUID (must not be nil): the engine has no RNG, the caller provides it.
    pub uuid: Uuid,
    /// Modify UUID (the caller provides it; nil is allowed).
    pub modify_uuid: Uuid,
    /// For a differencing image: the parent's image UUID and modify UUID.
    pub parent: Option<(Uuid, Uuid)>,
}

impl CreateOptions {
    /// Dynamic image of `size` bytes with the default block size and layout.
    pub fn new(size: u64, uuid: Uuid, modify_uuid: Uuid) -> Self {
        CreateOptions {
            size,
            fixed: false,
            block_size: DEFAULT_BLOCK_SIZE,
            layout: Layout::Vbox,
            comment: String::new(),
            uuid,
            modify_uuid,
            parent: None,
        }
    }

    /// A differencing image on top of `parent`: same disk size and block size, linked to
    /// the parent's image UUID and its current modify UUID.
    pub fn diff_of(parent: &VdiHeader, uuid: Uuid, modify_uuid: Uuid) -> Self {
        let mut o = CreateOptions::new(parent.disk_size, uuid, modify_uuid);
        o.block_size = parent.block_size;
        o.layout = if parent.lchs.is_some() { Layout::Vbox } else { Layout::Qemu };
        o.parent = Some((parent.uuid_create, parent.uuid_modify));
        o
    }

    /// The header this would write (validated), without writing anything.
    pub fn header(&self) -> Result<VdiHeader> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(VdiError::InvalidArgument(format!(
                "block size {bs} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"
            )));
        }
        if self.parent.is_some() && self.fixed {
            return Err(VdiError::InvalidArgument("a differencing image cannot be fixed".into()));
        }
        if self.parent.is_some_and(|(p, _)| p.is_nil()) {
            return Err(VdiError::InvalidArgument("the parent's image UUID is null".into()));
        }
        if self.uuid.is_nil() {
            return Err(VdiError::InvalidArgument("the image UUID must not be null".into()));
        }
        let size = self
            .size
            .checked_next_multiple_of(SECTOR_SIZE as u64)
            .ok_or_else(|| VdiError::InvalidArgument(format!("size {} is too large", self.size)))?;
        let blocks = size.div_ceil(bs as u64);
        if blocks > MAX_BLOCKS_IN_IMAGE as u64 {
            return Err(VdiError::InvalidArgument(format!(
                "size {size} needs {blocks} blocks of {bs} bytes; at most {MAX_BLOCKS_IN_IMAGE} fit in a block map"
            )));
        }
        let blocks = blocks as u32;
        let map_bytes = blocks as u64 * 4;
        let (text, header_size, offset_bmap, offset_data, lchs) = match self.layout {
            Layout::Vbox => {
                const ALIGN: u64 = 1 << 20;
                let bmap = (PRE_HEADER_SIZE + HEADER_SIZE_V1_PLUS) as u64;
                let bmap = bmap.next_multiple_of(ALIGN);
                let data = (bmap + map_bytes).next_multiple_of(ALIGN);
                (TEXT_VIRTUALBOX, HEADER_SIZE_V1_PLUS, bmap, data, Some(Geometry::unset()))
            }
            Layout::Qemu => {
                let bmap = 0x200u64;
                let data = bmap + map_bytes.next_multiple_of(SECTOR_SIZE as u64);
                (TEXT_QEMU, HEADER_SIZE_V1, bmap, data, None)
            }
        };
        let offset_data = u32::try_from(offset_data).map_err(|_| {
            VdiError::InvalidArgument(format!("a block map of {map_bytes} bytes puts the data past 4 GiB"))
        })?;
        let mut t = [0u8; 64];
        t[..text.len()].copy_from_slice(text.as_bytes());
        let mut h = VdiHeader {
            text: t,
            version: VDI_VERSION_1_1,
            header_size,
            image_type: match (self.fixed, self.parent.is_some()) {
                (_, true) => ImageType::Diff.raw(),
                (true, false) => ImageType::Fixed.raw(),
                (false, false) => ImageType::Normal.raw(),
            },
            image_flags: 0,
            comment: [0u8; 256],
            offset_bmap: offset_bmap as u32,
            offset_data,
            legacy_geometry: Geometry::unset(),
            dummy: 0,
            disk_size: size,
            block_size: bs,
            block_extra: 0,
            blocks_in_image: blocks,
            blocks_allocated: if self.fixed { blocks } else { 0 },
            uuid_create: self.uuid,
            uuid_modify: self.modify_uuid,
            uuid_link: self.parent.map(|p| p.0).unwrap_or_default(),
            uuid_parent_modify: self.parent.map(|p| p.1).unwrap_or_default(),
            lchs,
        };
        h.set_comment(&self.comment)?;
        Ok(h)
    }
}

/// Create an image on `storage` (which is truncated first) and open it.
///
/// The block map is written in 1 MiB pieces (a maximum-size map is 2 GiB); `monitor` sees
/// progress over the map and may cancel. A fixed image's data area is sized with `set_len`
/// (sparse where the storage allows) and reads as zeros.
pub fn create<S: Storage>(mut storage: S, opts: &CreateOptions, monitor: &mut dyn Monitor) -> Result<VdiImage<S>> {
    let h = opts.header()?;
    set_len(&mut storage, 0)?;
    let mut first = vec![0u8; h.offset_bmap as usize];
    let hb = h.to_bytes()?;
    first[..hb.len()].copy_from_slice(&hb);
    write_all(&mut storage, 0, &first)?;
    const CHUNK: u32 = 256 * 1024;
    let mut buf = Vec::with_capacity(CHUNK as usize * 4);
    let mut i = 0u32;
    while i < h.blocks_in_image {
        if monitor.cancelled() {
            return Err(VdiError::Cancelled);
        }
        let n = (h.blocks_in_image - i).min(CHUNK);
        buf.clear();
        for k in i..i + n {
            let v = if opts.fixed { k } else { BLOCK_FREE };
            buf.extend_from_slice(&v.to_le_bytes());
        }
        write_all(&mut storage, h.offset_bmap as u64 + i as u64 * 4, &buf)?;
        i += n;
        monitor.progress(i as u64, h.blocks_in_image as u64);
    }
    let end = if opts.fixed {
        h.offset_data as u64 + h.blocks_in_image as u64 * h.block_stride()
    } else {
        h.offset_data as u64
    };
    set_len(&mut storage, end)?;
    crate::storage::flush(&mut storage)?;
    VdiImage::open(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::NoMonitor;
    use crate::storage::{MemStorage, ReadAt};

    fn ids() -> (Uuid, Uuid) {
        (Uuid::from_u128(0x1234), Uuid::from_u128(0x5678))
    }

    #[test]
    fn vbox_layout_aligns_to_1mib() {
        let (a, b) = ids();
        let img = create(MemStorage::new(), &CreateOptions::new(8 << 30, a, b), &mut NoMonitor).unwrap();
        let h = img.header();
        assert_eq!((h.header_size, h.offset_bmap, h.offset_data), (0x190, 1 << 20, 2 << 20));
        assert_eq!(h.blocks_in_image, 8192);
        assert_eq!(img.storage().len().unwrap(), 2 << 20);
    }

    #[test]
    fn qemu_layout_and_odd_size() {
        let (a, b) = ids();
        let mut o = CreateOptions::new(10 * 1024 * 1024 + 1, a, b);
        o.layout = Layout::Qemu;
        let img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        let h = img.header();
        assert_eq!(h.disk_size, 10 * 1024 * 1024 + 512);
        assert_eq!((h.header_size, h.offset_bmap, h.offset_data), (0x180, 0x200, 0x400));
        assert_eq!(h.blocks_in_image, 11);
    }

    #[test]
    fn fixed_is_fully_allocated() {
        let (a, b) = ids();
        let mut o = CreateOptions::new(3 << 20, a, b);
        o.fixed = true;
        let mut img = create(MemStorage::new(), &o, &mut NoMonitor).unwrap();
        assert_eq!(img.header().blocks_allocated, 3);
        assert_eq!(img.storage().len().unwrap(), (2 << 20) + (3 << 20));
        assert_eq!(img.entry(2).unwrap(), crate::Entry::Data(2));
    }

    #[test]
    fn bad_options_are_refused() {
        let (a, b) = ids();
        let mut o = CreateOptions::new(1 << 20, a, b);
        o.block_size = 3000;
        assert!(o.header().unwrap_err().to_string().contains("block size 3000"));
        let o = CreateOptions::new(1 << 60, a, b);
        assert!(o.header().unwrap_err().to_string().contains("blocks"));
        let o = CreateOptions::new(1 << 20, Uuid::nil(), b);
        assert!(o.header().is_err());
        let mut o = CreateOptions::new(1 << 20, a, b);
        o.comment = "x".repeat(256);
        assert!(o.header().is_err());
    }
}
