//! What a valid name is. Every name that becomes a path or a catalog key,
//! whether typed by an operator or read from a volume, a container or the
//! network, passes one of these checks first, so a hostile volume cannot
//! name a file outside the store or route an image to the wrong kind of pool.

/// Why a name was refused; the text says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid name {0:?}: use 1-64 letters, digits, '_', '-' or '.', not starting with '.'")]
    Name(String),
    #[error("invalid barcode {0:?}: use 1-16 letters, digits, '_' or '-', not starting with '-'")]
    Barcode(String),
    #[error("invalid path {path:?}: {why}")]
    Path { path: String, why: &'static str },
}

/// Longest path of an image inside its pool, in bytes (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Longest component of a path, in bytes (NAME_MAX).
pub const MAX_COMPONENT: usize = 255;

/// A key group, key, pool or LSU name: 1-64 of `[A-Za-z0-9_.-]`, not
/// starting with '.' (so never `.`, `..` or a hidden file, never a '/').
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    ok.then_some(())
        .ok_or_else(|| NameError::Name(name.to_string()))
}

/// A volume barcode (it names the volume's file): 1-16 of
/// `[A-Za-z0-9_-]`, not starting with '-'.
pub fn check_barcode(barcode: &str) -> Result<(), NameError> {
    let ok = !barcode.is_empty()
        && barcode.len() <= 16
        && !barcode.starts_with('-')
        && barcode
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    ok.then_some(())
        .ok_or_else(|| NameError::Barcode(barcode.to_string()))
}

/// A path inside a pool, as `mkdir` and `creat` would have made it:
/// relative, components of 1-255 bytes separated by single '/', none of
/// them `.` or `..`, no NUL, at most 4096 bytes.
pub fn check_path(path: &str) -> Result<(), NameError> {
    let bad = |why| {
        Err(NameError::Path {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH {
        return bad("longer than 4096 bytes");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    for c in path.split('/') {
        match c {
            "" => return bad("empty component"),
            "." | ".." => return bad("'.' or '..' component"),
            c if c.len() > MAX_COMPONENT => return bad("component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// A name from an archive or a volume, safe to print: control characters
/// (newlines, escape sequences) are shown escaped, so a name cannot forge
/// a line or drive the terminal.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_barcodes_and_paths() {
        for ok in ["ENCR_Finance", "a", "lsu-1.x"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "msdp/lsu1",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for ok in ["K00001L9", "FRG_1", "A-1"] {
            check_barcode(ok).unwrap();
        }
        for bad in [
            "",
            "../../pwn",
            "/tmp/x",
            "a/b",
            ".",
            "-x",
            "K00001L9K00001L9X",
            "a b",
        ] {
            assert!(check_barcode(bad).is_err(), "{bad}");
        }
        for ok in ["f", "web01/daily.tar", "a/.b/c", "x..y"] {
            check_path(ok).unwrap();
        }
        for bad in ["", "/abs", "a//b", "a/./b", "../x", "x/..", "a/", "a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"x".repeat(256)).is_err());
    }

    proptest! {
        /// Whatever passes never leaves the directory it is joined to.
        #[test]
        fn a_valid_path_stays_below_its_base(s in "[a-z./]{0,40}") {
            if check_path(&s).is_ok() {
                let p = std::path::Path::new("/base").join(&s);
                prop_assert!(p.starts_with("/base"));
                prop_assert!(!p.components().any(|c| matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)));
            }
            if check_barcode(&s).is_ok() {
                prop_assert!(!s.contains('/') && !s.contains(".."));
            }
        }
    }
}
