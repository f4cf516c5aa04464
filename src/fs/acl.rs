//! POSIX access ACLs (`system.posix_acl_access`, the kernel's xattr form)
//! and the mode bits they share: an ACL sets the owner, group (or mask)
//! and other bits; an ACL that says no more than the mode is not kept (as
//! ext4 does, so `getfacl` and `tar --acls` see a plain file); chmod moves
//! the ACL's owner, mask and other entries with the mode.

/// The xattr that holds an access ACL.
pub const ACCESS: &str = "system.posix_acl_access";
/// The xattr that holds a folder's default ACL.
pub const DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// `(tag, perm, id)` of each entry of a well-formed ACL.
fn entries(acl: &[u8]) -> Option<Vec<(u16, u16, u32)>> {
    let (head, rest) = acl.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*head) != VERSION || rest.len() % 8 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
                )
            })
            .collect(),
    )
}

/// What an access ACL means for the mode: its permission bits (0o777),
/// and whether the ACL says nothing more than they do.
pub fn mode_of(acl: &[u8]) -> Option<(u32, bool)> {
    let e = entries(acl)?;
    let perm = |tag| e.iter().find(|x| x.0 == tag).map(|x| u32::from(x.1 & 7));
    let group = perm(MASK).or(perm(GROUP_OBJ))?;
    let bits = perm(USER_OBJ)? << 6 | group << 3 | perm(OTHER)?;
    let minimal = e
        .iter()
        .all(|x| matches!(x.0, USER_OBJ | GROUP_OBJ | OTHER));
    Some((bits, minimal))
}

/// The ACL after chmod to `mode`: owner, mask (or group) and other
/// entries take the new bits.
pub fn chmod(acl: &[u8], mode: u32) -> Option<Vec<u8>> {
    let e = entries(acl)?;
    let has_mask = e.iter().any(|x| x.0 == MASK);
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in e {
        let perm = match tag {
            USER_OBJ => (mode >> 6) & 7,
            MASK => (mode >> 3) & 7,
            GROUP_OBJ if !has_mask => (mode >> 3) & 7,
            OTHER => mode & 7,
            _ => u32::from(perm),
        } as u16;
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(e: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (t, p, i) in e {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&i.to_le_bytes());
        }
        v
    }

    #[test]
    fn a_minimal_acl_is_the_mode_and_a_mask_is_the_group_bits() {
        let min = acl(&[
            (USER_OBJ, 6, u32::MAX),
            (GROUP_OBJ, 4, u32::MAX),
            (OTHER, 4, u32::MAX),
        ]);
        assert_eq!(mode_of(&min), Some((0o644, true)));
        let full = acl(&[
            (USER_OBJ, 6, u32::MAX),
            (0x02, 6, 1234),
            (GROUP_OBJ, 4, u32::MAX),
            (MASK, 6, u32::MAX),
            (OTHER, 4, u32::MAX),
        ]);
        assert_eq!(mode_of(&full), Some((0o664, false)));
        let after = chmod(&full, 0o640).unwrap();
        assert_eq!(mode_of(&after), Some((0o640, false)));
        assert_eq!(
            entries(&after).unwrap()[1],
            (0x02, 6, 1234),
            "named entries stay"
        );
        assert_eq!(mode_of(b"junk"), None);
        assert_eq!(
            mode_of(&acl(&[(USER_OBJ, 6, 0)])),
            None,
            "no group, no other"
        );
    }
}
