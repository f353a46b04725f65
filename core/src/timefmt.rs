//! Time parameters: unix seconds or RFC 3339 (`2026-11-30T04:00:00Z`, `...+01:00`,
//! fractional seconds allowed and truncated).

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|v| range.contains(v))
}

/// Parses unix seconds (an integer) or an RFC 3339 timestamp into unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let y = num(s.get(0..4)?, 0..=9999)?;
    let mo = num(s.get(5..7)?, 1..=12)?;
    let d = num(s.get(8..10)?, 1..=31)?;
    let h = num(s.get(11..13)?, 0..=23)?;
    let mi = num(s.get(14..16)?, 0..=59)?;
    let se = num(s.get(17..19)?, 0..=60)?;
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let oh = num(&rest[1..3], 0..=23)?;
            let om = num(&rest[4..6], 0..=59)?;
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parses_unix_and_rfc3339() {
        assert_eq!(parse_time("1764460800"), Some(1_764_460_800));
        assert_eq!(parse_time("-60"), Some(-60));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2025-11-30T00:00:00Z"), Some(1_764_460_800));
        assert_eq!(
            parse_time("2025-11-30T01:00:00.123+01:00"),
            Some(1_764_460_800)
        );
        assert_eq!(parse_time("2000-02-29T12:00:00-00:30"), Some(951_827_400));
        for bad in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-11-30T00:00:00",
            "2025-11-30T00:00:00+0100",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
