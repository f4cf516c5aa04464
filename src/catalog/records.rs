//! Catalog records. Serialized with bincode (legacy config); their layout
//! is part of the catalog format (docs/format.md) and pinned by a test.

use serde::{Deserialize, Serialize};

/// Attributes of a file or folder that a user may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the Unix epoch.
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// What an inode is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InodeKind {
    /// A volume pool (a directory right under `pools/`).
    Pool,
    /// A folder inside a pool.
    Dir,
    /// A committed image.
    Image(u128),
    /// A symbolic link: its target, stored as given (catalog version 4).
    Symlink(String),
    /// A fifo, a socket, or a character or block device: metadata only,
    /// its type in `attrs.mode`; never opened as a device (catalog version 4).
    Special { rdev: u64 },
}

impl InodeKind {
    /// Whether the entry is a directory (a pool or a folder).
    pub fn is_dir(&self) -> bool {
        matches!(self, InodeKind::Pool | InodeKind::Dir)
    }
}

/// A namespace entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    /// The pool this entry lives in (its own name for a pool).
    pub pool: String,
    pub kind: InodeKind,
    pub attrs: FileAttrs,
}

/// One fragment of an image: a run of data blocks on one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub volume: String,
    pub number: u32,
    /// Offset of the fragment header on the volume.
    pub header_offset: u64,
    /// Offset of the first data block on the volume.
    pub data_offset: u64,
    /// Offset of this fragment's first byte within the image.
    pub image_offset: u64,
    /// Plaintext bytes in this fragment.
    pub len: u64,
    pub blocks: u64,
    /// HKDF salt of the fragment subkey (not secret; also in the header).
    pub salt: [u8; 32],
    /// Flags of the fragment's last block: LAST_IN_FRAGMENT, plus
    /// LAST_IN_IMAGE where a commit ended the image there (the last
    /// fragment, or a checkpoint at close(2) that more writes followed).
    pub last_flags: u8,
    /// Volume format version the fragment was written in (its blocks'
    /// associated data depends on it).
    pub format: u16,
}

/// A committed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRec {
    pub id: u128,
    pub pool: String,
    /// Path inside the pool when written.
    pub path: String,
    pub size: u64,
    pub block_size: u32,
    /// Key tag (the KAD) of an encrypted image.
    pub key_tag: Option<String>,
    /// Key check value of that key, hex.
    pub kcv: Option<String>,
    /// Keyed BLAKE3 of the plaintext under the store's digest key, so a
    /// restore can be verified (`kmsfs image verify`) without the catalog
    /// telling anyone which known file was backed up. None for images from
    /// catalogs before format 3, whose digest was not keyed and was dropped.
    pub digest: Option<[u8; 32]>,
    pub created_ns: i64,
    pub fragments: Vec<Fragment>,
}

/// A volume's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    Scratch,
    Active,
    Full,
    /// Being copied in by an import: its barcode is reserved, nothing is
    /// appended to it, and the image that needs it is not committed yet.
    Importing,
}

/// A virtual cartridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRec {
    pub barcode: String,
    pub pool: String,
    pub state: VolumeState,
    /// Bytes of the volume file covered by committed images (the append point).
    pub used: u64,
    pub capacity: u64,
    /// Committed images with a fragment on this volume.
    pub images: u32,
}

/// One entry of an image's file list: a tar member, or the image itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: u64,
    /// `'0'` file, `'5'` directory, `'2'` symlink … as in tar; `'I'` the whole image.
    pub kind: u8,
    /// Target of a symbolic or hard link.
    pub link: Option<String>,
    /// Offset of the member's data in the image (seek there to restore one member).
    pub offset: u64,
}
