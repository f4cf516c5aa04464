//! Command output, captured so that the same command can run in the CLI
//! process or inside the daemon (and be sent back over the control socket).

use std::fmt::Write as _;

use crate::util::progress::Progress;

/// What a command prints, and where its progress goes.
#[derive(Default)]
pub struct Out<'a> {
    pub stdout: String,
    pub stderr: String,
    /// Sizes in tables as exact byte counts (`--bytes`), not `8.0 GiB`.
    pub exact_bytes: bool,
    /// Progress of long work: a bar here, or frames to the CLI that asked.
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
}

impl Out<'_> {
    /// Reports how far a long task has come.
    pub fn progress(&mut self, p: Progress) {
        if let Some(f) = self.progress.as_mut() {
            f(&p);
        }
    }

    /// A size as tables show it: human (`8.0 GiB`) unless `--bytes`.
    pub fn size(&self, n: u64) -> String {
        if self.exact_bytes {
            n.to_string()
        } else {
            human_size(n)
        }
    }

    /// Prints `rows` under `head` in aligned columns; the columns listed
    /// in `right` (numbers) are aligned right, the last is not padded.
    pub fn table(&mut self, head: &[&str], right: &[usize], rows: &[Vec<String>]) {
        let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
        for r in rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let last = head.len().saturating_sub(1);
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (i, c) in cells.into_iter().enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                let pad = width[i].saturating_sub(c.chars().count());
                if right.contains(&i) {
                    l.push_str(&" ".repeat(pad));
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    if i < last {
                        l.push_str(&" ".repeat(pad));
                    }
                }
            }
            l.trim_end().to_string()
        };
        self.line(line(head.to_vec()));
        for r in rows {
            self.line(line(r.iter().map(String::as_str).collect()));
        }
    }

    pub fn line(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.stdout, "{}", s.as_ref());
    }

    pub fn note(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.stderr, "{}", s.as_ref());
    }

    pub fn json<T: serde::Serialize>(&mut self, v: &T) {
        self.line(serde_json::to_string_pretty(v).expect("serializable"));
    }
}

/// `0 B`, `512 B`, `1.5 KiB`, `8.0 GiB`: binary units, one decimal.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub use crate::util::names::printable;

/// `1 image`, `2 images`, `0 keys`.
pub fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub use crate::util::clock::iso_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(8 << 30), "8.0 GiB");
        assert_eq!(human_size((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
        let exact = Out {
            exact_bytes: true,
            ..Out::default()
        };
        assert_eq!(exact.size(8 << 30), "8589934592");
    }

    #[test]
    fn plurals() {
        assert_eq!(count(1, "image"), "1 image");
        assert_eq!(count(0, "image"), "0 images");
        assert_eq!(count(2, "volume"), "2 volumes");
    }

    #[test]
    fn table_columns_line_up() {
        let mut o = Out::default();
        o.table(
            &["NAME", "SIZE", "NOTE"],
            &[1],
            &[
                vec!["a".into(), "1.0 KiB".into(), "x".into()],
                vec!["longer".into(), "5 B".into(), "".into()],
            ],
        );
        assert_eq!(
            o.stdout,
            "NAME       SIZE  NOTE\na       1.0 KiB  x\nlonger      5 B\n"
        );
    }

    #[test]
    fn iso() {
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso_time(1_795_570_499), "2026-11-25T01:34:59Z");
    }
}
