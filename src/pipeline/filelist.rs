//! The file list of an image (the `.f` file of the NetBackup Security and
//! Encryption Guide, "About importing KMS encrypted images"), built while
//! the image streams by: as it is written through the mount, or as phase
//! two of an import reads it. It lists the members of a tar archive
//! (ustar, GNU long names, PAX) with the offset of each member's data, so
//! one member can be restored without reading the rest.
//!
//! The archive comes from a user or a volume, so nothing in it is trusted: the
//! lister is a state machine fed the plaintext as it is authenticated,
//! holding at most one 512-byte header, a member name or link of up to
//! PATH_MAX bytes and a PAX header of up to 64 KiB, and the list itself is
//! held to a memory budget (it stays in memory until the catalog commits).
//! Anything else (a bad checksum, a longer name, a truncated archive, a
//! list past its budget) ends the listing and the image is listed as one
//! file.

use crate::catalog::FileEntry;

/// Longest member name or link target kept (PATH_MAX).
const MAX_NAME: u64 = 4096;
/// Largest PAX extended header kept.
const MAX_PAX: u64 = 64 * 1024;
const BLOCK: u64 = 512;
/// Memory the member list may take (entries and their names): 256 MiB is
/// a little over a million members with 100-byte paths.
pub const DEFAULT_BUDGET: usize = 256 << 20;

/// What a collected extension header is for.
#[derive(Clone, Copy)]
enum Ext {
    LongName,
    LongLink,
    Pax,
}

enum State {
    /// Gathering a 512-byte header.
    Header,
    /// Skipping member data and padding.
    Skip(u64),
    /// Gathering an extension header's data (`left` bytes), then `pad`.
    Collect { ext: Ext, left: u64, pad: u64 },
    /// Two zero blocks seen: the archive ended.
    Done,
    /// Not a tar archive we can list.
    NotTar,
}

/// What extension headers said about the next member.
#[derive(Default)]
struct Next {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
    mtime: Option<u64>,
}

/// Lists the members of a tar archive fed to it in pieces of any size.
pub struct Lister {
    state: State,
    /// Bytes of the archive consumed so far.
    pos: u64,
    buf: Vec<u8>,
    zeros: u32,
    next: Next,
    out: Vec<FileEntry>,
    /// Bytes of memory the list may still take.
    budget: usize,
}

impl Default for Lister {
    fn default() -> Self {
        Self::new()
    }
}

impl Lister {
    pub fn new() -> Self {
        Self::with_budget(DEFAULT_BUDGET)
    }

    /// A lister whose list may take `budget` bytes of memory.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            state: State::Header,
            pos: 0,
            buf: Vec::with_capacity(BLOCK as usize),
            zeros: 0,
            next: Next::default(),
            out: Vec::new(),
            budget,
        }
    }

    /// The next piece of the image.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = match self.state {
                State::Done | State::NotTar => {
                    // Nothing more to list; only the position moves.
                    self.pos += data.len() as u64;
                    return;
                }
                State::Header => self.header_bytes(data),
                State::Skip(left) => {
                    let n = left.min(data.len() as u64);
                    self.state = match left - n {
                        0 => State::Header,
                        rest => State::Skip(rest),
                    };
                    n as usize
                }
                State::Collect { ext, left, pad } => self.collect_bytes(data, ext, left, pad),
            };
            self.pos += n as u64;
            data = &data[n..];
        }
    }

    /// The tar members, or `None` if the image is not a tar archive we
    /// could list to its end.
    pub fn finish(self) -> Option<Vec<FileEntry>> {
        self.ended().then_some(self.out)
    }

    /// [`Lister::finish`] of what was fed so far, leaving the lister to be
    /// fed more (an image committed at one close and continued after it).
    pub fn current(&self) -> Option<Vec<FileEntry>> {
        self.ended().then(|| self.out.clone())
    }

    /// `n` zero bytes (a hole in a sparse write): walked only where a
    /// header may be in them, never through member data or after the
    /// listing stopped.
    pub fn feed_zeros(&mut self, mut n: u64) {
        static ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            match self.state {
                State::Done | State::NotTar => {
                    self.pos += n;
                    return;
                }
                State::Skip(left) => {
                    let k = left.min(n);
                    self.pos += k;
                    n -= k;
                    self.state = if k == left {
                        State::Header
                    } else {
                        State::Skip(left - k)
                    };
                }
                State::Header | State::Collect { .. } => {
                    let k = n.min(ZEROS.len() as u64);
                    self.feed(&ZEROS[..k as usize]);
                    n -= k;
                }
            }
        }
    }

    /// Bytes of the archive fed so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Whether the archive ended (or stopped between members) with at
    /// least one member listed.
    fn ended(&self) -> bool {
        let ended = matches!(self.state, State::Done)
            || (matches!(self.state, State::Header) && self.buf.is_empty());
        ended && !self.out.is_empty()
    }

    fn header_bytes(&mut self, data: &[u8]) -> usize {
        let n = (BLOCK as usize - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK as usize {
            let h: [u8; BLOCK as usize] = self.buf[..].try_into().expect("512 bytes");
            self.buf.clear();
            self.state = self.on_header(&h, self.pos + n as u64);
        }
        n
    }

    fn collect_bytes(&mut self, data: &[u8], ext: Ext, left: u64, pad: u64) -> usize {
        if left > 0 {
            let n = left.min(data.len() as u64);
            self.buf.extend_from_slice(&data[..n as usize]);
            self.state = State::Collect {
                ext,
                left: left - n,
                pad,
            };
            return n as usize;
        }
        let ext_data = std::mem::take(&mut self.buf);
        if !self.on_extension(ext, &ext_data) {
            self.state = State::NotTar;
            return 0;
        }
        self.state = if pad > 0 {
            State::Skip(pad)
        } else {
            State::Header
        };
        0
    }

    /// A complete header, ending at archive offset `end`: what comes next.
    fn on_header(&mut self, h: &[u8; 512], end: u64) -> State {
        if h.iter().all(|&b| b == 0) {
            self.zeros += 1;
            return if self.zeros == 2 {
                State::Done
            } else {
                State::Header
            };
        }
        self.zeros = 0;
        let Some(size) = parse_header_checked(h) else {
            return State::NotTar;
        };
        let pad = padded(size) - size;
        let ext = match h[156] {
            b'L' => Some((Ext::LongName, MAX_NAME)),
            b'K' => Some((Ext::LongLink, MAX_NAME)),
            b'x' => Some((Ext::Pax, MAX_PAX)),
            _ => None,
        };
        if let Some((ext, max)) = ext {
            if size > max {
                return State::NotTar;
            }
            return State::Collect {
                ext,
                left: size,
                pad,
            };
        }
        if h[156] == b'g' {
            // A global PAX header: nothing kept from it.
            return skip(padded(size));
        }
        let entry = self.entry(h, size, end);
        let data = padded(entry.size);
        let cost = std::mem::size_of::<FileEntry>()
            + entry.path.len()
            + entry.link.as_ref().map_or(0, |l| l.len());
        let Some(left) = self.budget.checked_sub(cost) else {
            tracing::info!(
                members = self.out.len(),
                "the archive's member list is past its memory budget; the image gets no file list"
            );
            self.out = Vec::new();
            return State::NotTar;
        };
        self.budget = left;
        self.out.push(entry);
        skip(data)
    }

    /// The member a header (with the extension headers before it) describes.
    fn entry(&mut self, h: &[u8; 512], size: u64, end: u64) -> FileEntry {
        let next = std::mem::take(&mut self.next);
        let name = field_str(&h[0..100]);
        let prefix = field_str(&h[345..500]);
        let ustar = &h[257..263] == b"ustar\0";
        let path = next.path.unwrap_or_else(|| {
            if ustar && !prefix.is_empty() {
                format!("{prefix}/{name}")
            } else {
                name
            }
        });
        let link = next
            .link
            .or_else(|| Some(field_str(&h[157..257])).filter(|l| !l.is_empty()));
        FileEntry {
            path,
            size: next.size.unwrap_or(size),
            mode: octal(&h[100..108]).unwrap_or(0) as u32,
            mtime: next
                .mtime
                .unwrap_or_else(|| octal(&h[136..148]).unwrap_or(0)),
            kind: if h[156] == 0 { b'0' } else { h[156] },
            link,
            offset: end,
        }
    }

    /// Takes what an extension header says; false if it makes no sense.
    fn on_extension(&mut self, ext: Ext, data: &[u8]) -> bool {
        let text = || String::from_utf8_lossy(trim_nul(data)).into_owned();
        match ext {
            Ext::LongName => self.next.path = Some(text()),
            Ext::LongLink => self.next.link = Some(text()),
            Ext::Pax => return self.on_pax(data),
        }
        true
    }

    /// PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
    fn on_pax(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let Some(sp) = data.iter().position(|&b| b == b' ') else {
                return false;
            };
            let Some(len) = std::str::from_utf8(&data[..sp])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                return false;
            };
            if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
                return false;
            }
            let rec = &data[sp + 1..len - 1];
            if let Some(eq) = rec.iter().position(|&b| b == b'=') {
                let (k, v) = (&rec[..eq], &rec[eq + 1..]);
                let v_str = || String::from_utf8_lossy(v).into_owned();
                match k {
                    b"path" => self.next.path = Some(v_str()),
                    b"linkpath" => self.next.link = Some(v_str()),
                    b"size" => self.next.size = v_str().parse().ok(),
                    b"mtime" => {
                        self.next.mtime = v_str().split('.').next().and_then(|s| s.parse().ok())
                    }
                    _ => {}
                }
            }
            data = &data[len..];
        }
        true
    }
}

fn skip(n: u64) -> State {
    if n == 0 {
        State::Header
    } else {
        State::Skip(n)
    }
}

/// `n` rounded up to whole 512-byte blocks.
fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// The size of a header whose checksum is right (unsigned or signed sum,
/// as tar implementations differ), or `None`.
fn parse_header_checked(h: &[u8; 512]) -> Option<u64> {
    let want = octal(&h[148..156])?;
    let unsigned: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let signed: i64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if want != unsigned && i64::try_from(want).ok() != Some(signed) {
        return None;
    }
    size(&h[124..136])
}

/// A size field: octal, or GNU base-256 (first byte 0x80).
fn size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] != 0x80 || f[1..4].iter().any(|&b| b != 0) {
            return None;
        }
        return Some(f[4..].iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)));
    }
    octal(f)
}

/// An octal field: digits after optional spaces, ended by NUL or space.
fn octal(f: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 8).ok()
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn field_str(b: &[u8]) -> String {
    String::from_utf8_lossy(trim_nul(b)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(name: &str, typ: u8, size: u64, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14600000000\0");
        h[156] = typ;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn member(out: &mut Vec<u8>, name: &str, typ: u8, data: &[u8], link: &str) {
        out.extend(header(name, typ, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(padded(out.len() as u64) as usize, 0);
    }

    fn archive() -> Vec<u8> {
        let mut a = Vec::new();
        member(&mut a, "dir/", b'5', b"", "");
        member(&mut a, "dir/a.txt", b'0', b"hello", "");
        let long = format!("dir/{}", "n".repeat(200));
        member(
            &mut a,
            "././@LongLink",
            b'L',
            format!("{long}\0").as_bytes(),
            "",
        );
        member(&mut a, "dir/short", b'0', &[7u8; 700], "");
        member(&mut a, "dir/link", b'2', b"", "a.txt");
        let pax = "31 path=dir/pax-named-file.bin\n";
        member(&mut a, "PaxHeaders/x", b'x', pax.as_bytes(), "");
        member(&mut a, "dir/x", b'0', b"pax", "");
        a.extend_from_slice(&[0u8; 1024]);
        a
    }

    fn list(data: &[u8], splits: &[usize]) -> Option<Vec<FileEntry>> {
        let mut l = Lister::new();
        let mut at = 0;
        for &s in splits {
            let end = (at + s).min(data.len());
            l.feed(&data[at..end]);
            at = end;
        }
        l.feed(&data[at..]);
        l.finish()
    }

    #[test]
    fn ustar_gnu_long_names_pax_links_and_offsets() {
        let a = archive();
        let l = list(&a, &[]).unwrap();
        let names: Vec<&str> = l.iter().map(|e| e.path.as_str()).collect();
        let long = format!("dir/{}", "n".repeat(200));
        assert_eq!(
            names,
            [
                "dir/",
                "dir/a.txt",
                long.as_str(),
                "dir/link",
                "dir/pax-named-file.bin"
            ]
        );
        assert_eq!(l[1].size, 5);
        assert_eq!(&a[l[1].offset as usize..l[1].offset as usize + 5], b"hello");
        assert_eq!(l[2].size, 700);
        assert_eq!(l[3].link.as_deref(), Some("a.txt"));
        assert_eq!(l[3].kind, b'2');
        assert_eq!(&a[l[4].offset as usize..l[4].offset as usize + 3], b"pax");
        assert_eq!(l[0].mode, 0o644);
        assert_eq!(l[0].mtime, 0o14600000000);
    }

    #[test]
    fn what_is_not_a_listable_tar_is_listed_as_one_image() {
        assert!(list(b"just some bytes", &[]).is_none());
        let mut a = archive();
        a[148] ^= 1; // first header's checksum
        assert!(list(&a, &[]).is_none());
        let a = archive();
        assert!(list(&a[..a.len() - 1500], &[]).is_none(), "truncated");
        // A long name beyond PATH_MAX ends the listing without being kept.
        let mut h = header("././@LongLink", b'L', 1 << 32, "");
        h.extend_from_slice(&[b'a'; 4096]);
        let mut l = Lister::new();
        l.feed(&h);
        assert!(l.buf.capacity() <= 4096, "nothing of it was gathered");
        assert!(l.finish().is_none());
        let mut pax = header("x", b'x', MAX_PAX + 1, "");
        pax.extend_from_slice(&[b'1'; 600]);
        assert!(list(&pax, &[]).is_none());
    }

    #[test]
    fn a_list_bigger_than_its_memory_budget_is_listed_as_one_image() {
        // A hostile archive of endless tiny members must not grow the list
        // (held in memory until the catalog commits) without bound.
        let mut one = Vec::new();
        member(&mut one, &"m".repeat(99), b'0', b"", "");
        let mut l = Lister::with_budget(64 * 1024);
        for _ in 0..10_000 {
            l.feed(&one);
        }
        l.feed(&[0u8; 1024]);
        assert!(l.out.len() < 1000, "the list stopped growing at the budget");
        assert!(l.finish().is_none(), "listed as one image");
        // Within the budget the same archive lists.
        let mut l = Lister::with_budget(64 * 1024);
        for _ in 0..10 {
            l.feed(&one);
        }
        l.feed(&[0u8; 1024]);
        assert_eq!(l.finish().map(|v| v.len()), Some(10));
        const { assert!(DEFAULT_BUDGET <= 256 << 20) };
    }

    proptest! {
        /// However the stream is cut into pieces, the list is the same.
        #[test]
        fn pieces_do_not_change_the_list(splits in proptest::collection::vec(1usize..1500, 0..20)) {
            let a = archive();
            prop_assert_eq!(list(&a, &splits), list(&a, &[]));
        }

        /// Arbitrary bytes never panic and never grow the buffer past the
        /// bounds; the position counts every byte fed, listed or not (a
        /// writer feeds holes up to it).
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut l = Lister::new();
            l.feed(&b);
            l.feed(&b);
            prop_assert_eq!(l.pos(), 2 * b.len() as u64);
            prop_assert!(l.buf.len() as u64 <= MAX_PAX);
            let _ = l.finish();
        }
    }
}
