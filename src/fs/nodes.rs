//! Inode numbers of the synthetic part of the tree: the root, `pools/`,
//! `msdp/`, `drives/`, each `driveN/` and its `status` file. Catalog inodes
//! start at 16; synthetic drive inodes live at the top of the range.

use crate::catalog::{MSDP_INO, POOLS_INO, ROOT_INO};

pub const DRIVES_INO: u64 = 4;
const DRIVE_DIR_BASE: u64 = 1 << 62;
const DRIVE_STATUS_BASE: u64 = (1 << 62) + (1 << 20);

/// A synthetic node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Root,
    Pools,
    Msdp,
    Drives,
    DriveDir(usize),
    DriveStatus(usize),
}

impl Node {
    pub fn ino(self) -> u64 {
        match self {
            Node::Root => ROOT_INO,
            Node::Pools => POOLS_INO,
            Node::Msdp => MSDP_INO,
            Node::Drives => DRIVES_INO,
            Node::DriveDir(i) => DRIVE_DIR_BASE + i as u64,
            Node::DriveStatus(i) => DRIVE_STATUS_BASE + i as u64,
        }
    }

    pub fn from_ino(ino: u64, drives: usize) -> Option<Node> {
        let n = match ino {
            ROOT_INO => Node::Root,
            POOLS_INO => Node::Pools,
            MSDP_INO => Node::Msdp,
            DRIVES_INO => Node::Drives,
            i if (DRIVE_STATUS_BASE..DRIVE_STATUS_BASE + drives as u64).contains(&i) => {
                Node::DriveStatus((i - DRIVE_STATUS_BASE) as usize)
            }
            i if (DRIVE_DIR_BASE..DRIVE_DIR_BASE + drives as u64).contains(&i) => {
                Node::DriveDir((i - DRIVE_DIR_BASE) as usize)
            }
            _ => return None,
        };
        Some(n)
    }

    pub fn is_dir(self) -> bool {
        !matches!(self, Node::DriveStatus(_))
    }

    /// Children of a synthetic directory.
    pub fn children(self, drives: usize) -> Vec<(String, Node)> {
        match self {
            Node::Root => vec![
                ("pools".into(), Node::Pools),
                ("drives".into(), Node::Drives),
                ("msdp".into(), Node::Msdp),
            ],
            Node::Drives => (0..drives)
                .map(|i| (format!("drive{i}"), Node::DriveDir(i)))
                .collect(),
            Node::DriveDir(i) => vec![("status".into(), Node::DriveStatus(i))],
            _ => Vec::new(),
        }
    }
}
