//! Command output, captured so that the same command can run in the CLI
//! process or inside the daemon (and be sent back over the control socket).

use std::fmt::Write as _;

/// What a command prints.
#[derive(Default)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
}

impl Out {
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

/// `2026-11-25T01:34:59Z` from Unix seconds.
pub fn iso_time(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso() {
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso_time(1_795_570_499), "2026-11-25T01:34:59Z");
    }
}
