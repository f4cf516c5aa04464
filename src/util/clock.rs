//! Wall-clock time as stored in records: nanoseconds since the Unix epoch.

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
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

/// Unix seconds from `2026-11-25T01:34:59Z` (the form [`iso_time`]
/// writes; a trailing `Z` or none) or from a plain number of seconds.
/// None for anything else, or a date before the epoch.
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches('\0');
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once(['T', ' '])?;
    let num = |p: &str, n: usize| -> Option<i64> {
        (p.len() == n && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok())?
    };
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let ([y, mo, da], [h, mi, se]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    let (y, mo, da) = (num(y, 4)?, num(mo, 2)?, num(da, 2)?);
    let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, da as u32);
    if civil_from_days(days) != (y, mo as u32, da as u32) {
        return None; // 31 April and the like
    }
    u64::try_from(days * 86400 + h * 3600 + mi * 60 + se).ok()
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_what_iso_time_writes() {
        for secs in [0, 951_782_400, 1_796_123_253, 4_102_444_800, 32_503_680_000] {
            assert_eq!(parse_time(&iso_time(secs)), Some(secs), "{secs}");
        }
        assert_eq!(parse_time("1796123253"), Some(1_796_123_253));
        assert_eq!(parse_time("2027-01-01 00:00:00"), Some(1_798_761_600));
        for bad in [
            "",
            "soon",
            "2027-02-30T00:00:00Z",
            "2027-1-1T00:00:00Z",
            "-5",
            "2027-01-01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
