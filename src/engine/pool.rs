//! The kind of a pool, typed once from its catalog name (which backend its
//! images use, whether they are encrypted), and the rules of the pool
//! namespace: how a pool is made, what may move where. Pool names are
//! strings in the catalog and on volume labels; the engine decides on this
//! type.

use super::EngineError;
use crate::catalog::{FileAttrs, Inode, InodeKind, POOLS_INO, lsu_of_pool};
use crate::store::Store;
use crate::tape::is_encrypted_pool;

/// What a pool is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolKind {
    /// A volume pool of clear tapes.
    Clear { pool: String },
    /// An encrypted volume pool (`ENCR_*`); its key group has its name.
    Encrypted { group: String },
    /// The images of an MSDP LSU (`msdp/NAME`).
    Lsu { name: String },
}

impl PoolKind {
    /// The kind of the pool named `pool` in the catalog.
    pub fn of(pool: &str) -> Self {
        if let Some(name) = lsu_of_pool(pool) {
            PoolKind::Lsu { name: name.into() }
        } else if is_encrypted_pool(pool) {
            PoolKind::Encrypted { group: pool.into() }
        } else {
            PoolKind::Clear { pool: pool.into() }
        }
    }

    /// Whether its images are written to tape volumes.
    pub fn is_tape(&self) -> bool {
        !matches!(self, PoolKind::Lsu { .. })
    }
}

/// Makes volume pool `name` (mkdir in `pools/`). An encrypted pool needs
/// an active key in its key group now, so a backup never starts into a
/// pool it cannot encrypt.
pub fn create_pool(store: &Store, name: &str, attrs: FileAttrs) -> Result<Inode, EngineError> {
    crate::kms::model_check_name(name).map_err(|e| EngineError::BadName(e.to_string()))?;
    if let PoolKind::Encrypted { group } = PoolKind::of(name) {
        store
            .keys
            .client()
            .active_key(&group)
            .map_err(|source| EngineError::Kms {
                subject: format!("encrypted pool {name}"),
                source,
            })?;
    }
    Ok(store
        .catalog
        .make_entry(POOLS_INO, name, name, InodeKind::Pool, attrs)?)
}

/// Whether an entry may move from directory `from` to directory `to`
/// (inode numbers): pools themselves are never renamed, and nothing moves
/// out of its pool (its volumes are labelled with the pool's name).
/// Directories the catalog does not hold are left to the caller.
pub fn check_move(store: &Store, from: u64, to: u64) -> Result<(), EngineError> {
    if from == POOLS_INO || to == POOLS_INO {
        return Err(EngineError::Refused(
            "pools cannot be renamed: their volumes are labelled with the pool name".into(),
        ));
    }
    if let (Some(a), Some(b)) = (store.catalog.inode(from)?, store.catalog.inode(to)?)
        && a.pool != b.pool
    {
        return Err(EngineError::CrossPool {
            from: a.pool,
            to: b.pool,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_pool_needs_an_active_key_first() {
        let (_t, store) = crate::testing::store();
        let attrs = crate::testing::dir_attrs();
        let e = create_pool(&store, "ENCR_None", attrs).unwrap_err();
        assert!(
            matches!(&e, EngineError::Kms { source, .. } if source.is_missing_key()),
            "{e}"
        );
        assert!(e.to_string().contains("ENCR_None"), "{e}");
        assert!(matches!(
            create_pool(&store, "../x", attrs),
            Err(EngineError::BadName(_))
        ));
        assert_eq!(create_pool(&store, "daily", attrs).unwrap().pool, "daily");
    }

    #[test]
    fn nothing_moves_between_pools() {
        let (_t, store) = crate::testing::store();
        let attrs = crate::testing::dir_attrs();
        let a = create_pool(&store, "A", attrs).unwrap();
        let b = create_pool(&store, "B", attrs).unwrap();
        assert!(matches!(
            check_move(&store, a.ino, b.ino),
            Err(EngineError::CrossPool { .. })
        ));
        assert!(matches!(
            check_move(&store, POOLS_INO, b.ino),
            Err(EngineError::Refused(_))
        ));
        assert!(check_move(&store, a.ino, a.ino).is_ok());
    }

    #[test]
    fn pool_names_have_one_kind_each() {
        assert_eq!(
            PoolKind::of("msdp/demo"),
            PoolKind::Lsu {
                name: "demo".into()
            }
        );
        assert_eq!(
            PoolKind::of("ENCR_Fin"),
            PoolKind::Encrypted {
                group: "ENCR_Fin".into()
            }
        );
        assert_eq!(
            PoolKind::of("daily"),
            PoolKind::Clear {
                pool: "daily".into()
            }
        );
        assert!(PoolKind::of("ENCR_x").is_tape());
        assert!(!PoolKind::of("msdp/x").is_tape());
    }
}
