//! StatsD and DogStatsD line parser.
//!
//! One datagram holds one or more lines separated by `\n` (a trailing `\r` is ignored, empty lines
//! are skipped). A line is
//!
//! ```text
//! name:value[:value...]|type[|@rate][|#k:v,k2:v2][|T<unix seconds>][|c:<container>]
//! ```
//!
//! - `type` is `c` (counter), `g` (gauge; a value with a leading `+` or `-` is a delta), `ms`
//!   (timer), `h` (histogram), `d` (distribution) or `s` (set; the value is a member string).
//! - `@rate` is a sample rate in (0, 1]; counters count `value / rate`, timers and histograms count
//!   each value `round(1 / rate)` times. Gauges and sets ignore it.
//! - `#tags` are DogStatsD tags; a tag without `:` has the empty value.
//! - `T` is the DogStatsD 1.3 timestamp that places the value in that minute.
//! - Unknown `|x` sections are refused (`bad_section`); DogStatsD events (`_e{`) and service checks
//!   (`_sc|`) are refused as `unsupported`.
//!
//! The parser borrows from the datagram and allocates nothing; it never panics, whatever the bytes
//! (property-tested).

use crate::key::validate_name;

/// The StatsD type of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Timer,
    Histogram,
    Distribution,
    Set,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "c" => Kind::Counter,
            "g" => Kind::Gauge,
            "ms" => Kind::Timer,
            "h" => Kind::Histogram,
            "d" => Kind::Distribution,
            "s" => Kind::Set,
            _ => return None,
        })
    }

    /// The wire letter(s), as in the line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "c",
            Kind::Gauge => "g",
            Kind::Timer => "ms",
            Kind::Histogram => "h",
            Kind::Distribution => "d",
            Kind::Set => "s",
        }
    }
}

/// Why a line was refused. `as_str` is the `reason` label of the self-metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("missing ':' between name and value")]
    NoValue,
    #[error("missing '|type'")]
    NoType,
    #[error("invalid metric name")]
    BadName,
    #[error("value is not a finite number")]
    BadValue,
    #[error("unknown metric type")]
    BadType,
    #[error("sample rate must be a number in (0, 1]")]
    BadRate,
    #[error("invalid tags")]
    BadTags,
    #[error("timestamp must be unix seconds")]
    BadTimestamp,
    #[error("unknown '|' section")]
    BadSection,
    #[error("events and service checks are not supported")]
    Unsupported,
}

impl ParseError {
    pub const ALL: [ParseError; 11] = [
        ParseError::InvalidUtf8,
        ParseError::NoValue,
        ParseError::NoType,
        ParseError::BadName,
        ParseError::BadValue,
        ParseError::BadType,
        ParseError::BadRate,
        ParseError::BadTags,
        ParseError::BadTimestamp,
        ParseError::BadSection,
        ParseError::Unsupported,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::InvalidUtf8 => "invalid_utf8",
            ParseError::NoValue => "no_value",
            ParseError::NoType => "no_type",
            ParseError::BadName => "bad_name",
            ParseError::BadValue => "bad_value",
            ParseError::BadType => "bad_type",
            ParseError::BadRate => "bad_rate",
            ParseError::BadTags => "bad_tags",
            ParseError::BadTimestamp => "bad_timestamp",
            ParseError::BadSection => "bad_section",
            ParseError::Unsupported => "unsupported",
        }
    }
}

/// One parsed line, borrowing from the datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    /// The value section: one value, or several separated by `:` (DogStatsD value packing).
    pub values: &'a str,
    pub kind: Kind,
    pub rate: f64,
    /// The raw tag section without `#`, as sent (not yet sorted).
    pub tags: &'a str,
    pub timestamp: Option<i64>,
}

/// One value of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Number(f64),
    /// A gauge value with a leading sign.
    Delta(f64),
    Member(&'a str),
}

fn number(s: &str) -> Result<f64, ParseError> {
    // `f64::from_str` accepts "inf" and "nan"; StatsD values must be finite.
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ParseError::BadValue),
    }
}

impl<'a> Line<'a> {
    /// The values of this line, each checked. Sets yield members, gauges may yield deltas.
    pub fn values(&self) -> impl Iterator<Item = Result<Value<'a>, ParseError>> + 'a {
        let kind = self.kind;
        self.values.split(':').map(move |v| match kind {
            Kind::Set => {
                if v.is_empty() {
                    Err(ParseError::BadValue)
                } else {
                    Ok(Value::Member(v))
                }
            }
            Kind::Gauge if v.starts_with('+') || v.starts_with('-') => number(v).map(Value::Delta),
            _ => number(v).map(Value::Number),
        })
    }

    /// Iterates the tags as `(key, value)`; a tag without `:` has the empty value.
    pub fn tag_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.tags
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| t.split_once(':').unwrap_or((t, "")))
    }
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<Line<'_>, ParseError> {
    if line.starts_with("_e{") || line.starts_with("_sc|") {
        return Err(ParseError::Unsupported);
    }
    let (head, rest) = line.split_once('|').ok_or(ParseError::NoType)?;
    let (name, values) = head.split_once(':').ok_or(ParseError::NoValue)?;
    if validate_name(name).is_err() {
        return Err(ParseError::BadName);
    }
    if values.is_empty() {
        return Err(ParseError::BadValue);
    }
    let mut sections = rest.split('|');
    let kind = Kind::parse(sections.next().unwrap_or("")).ok_or(ParseError::BadType)?;
    let mut out = Line {
        name,
        values,
        kind,
        rate: 1.0,
        tags: "",
        timestamp: None,
    };
    for section in sections {
        let bytes = section.as_bytes();
        match bytes.first() {
            Some(b'@') => {
                let r: f64 = section[1..].parse().map_err(|_| ParseError::BadRate)?;
                if !(r > 0.0 && r <= 1.0) {
                    return Err(ParseError::BadRate);
                }
                out.rate = r;
            }
            Some(b'#') => {
                let tags = &section[1..];
                if tags.is_empty() {
                    return Err(ParseError::BadTags);
                }
                out.tags = tags;
            }
            Some(b'T') => {
                let ts: i64 = section[1..].parse().map_err(|_| ParseError::BadTimestamp)?;
                out.timestamp = Some(ts);
            }
            Some(b'c') if bytes.get(1) == Some(&b':') => {} // DogStatsD container id: ignored
            _ => return Err(ParseError::BadSection),
        }
    }
    // Validate values now so that a bad value rejects the whole line before anything is counted.
    for v in out.values() {
        v?;
    }
    Ok(out)
}

/// Splits a datagram into lines and parses each. Lines that are not UTF-8 yield `InvalidUtf8`.
pub fn parse_datagram(datagram: &[u8]) -> impl Iterator<Item = Result<Line<'_>, ParseError>> {
    datagram
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .map(|l| match std::str::from_utf8(l) {
            Ok(s) => parse_line(s),
            Err(_) => Err(ParseError::InvalidUtf8),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type_and_section() {
        let l = parse_line("http.req:2|c|@0.5|#route:/a,code:200|T1700000000").unwrap();
        assert_eq!(l.name, "http.req");
        assert_eq!(l.kind, Kind::Counter);
        assert_eq!(l.rate, 0.5);
        assert_eq!(l.timestamp, Some(1_700_000_000));
        assert_eq!(
            l.tag_pairs().collect::<Vec<_>>(),
            vec![("route", "/a"), ("code", "200")]
        );
        assert_eq!(l.values().collect::<Vec<_>>(), vec![Ok(Value::Number(2.0))]);

        let g = parse_line("mem:-5|g").unwrap();
        assert_eq!(g.values().next(), Some(Ok(Value::Delta(-5.0))));
        let g = parse_line("mem:+5.5|g").unwrap();
        assert_eq!(g.values().next(), Some(Ok(Value::Delta(5.5))));
        let g = parse_line("mem:7|g").unwrap();
        assert_eq!(g.values().next(), Some(Ok(Value::Number(7.0))));

        for (line, kind) in [
            ("t:1|ms", Kind::Timer),
            ("t:1|h", Kind::Histogram),
            ("t:1|d", Kind::Distribution),
        ] {
            assert_eq!(parse_line(line).unwrap().kind, kind);
        }
        let s = parse_line("users:alice|s|#env").unwrap();
        assert_eq!(s.values().next(), Some(Ok(Value::Member("alice"))));
        assert_eq!(s.tag_pairs().collect::<Vec<_>>(), vec![("env", "")]);

        let packed = parse_line("lat:1:2:3|d|c:abc").unwrap();
        assert_eq!(packed.values().count(), 3);
    }

    #[test]
    fn each_error_has_its_reason() {
        let cases = [
            ("nocolon|c", ParseError::NoValue),
            ("x:1", ParseError::NoType),
            ("1x:1|c", ParseError::BadName),
            ("x:abc|c", ParseError::BadValue),
            ("x:inf|c", ParseError::BadValue),
            ("x:|c", ParseError::BadValue),
            ("x:1|q", ParseError::BadType),
            ("x:1|c|@0", ParseError::BadRate),
            ("x:1|c|@1.5", ParseError::BadRate),
            ("x:1|c|#", ParseError::BadTags),
            ("x:1|c|Tsoon", ParseError::BadTimestamp),
            ("x:1|c|zz", ParseError::BadSection),
            ("_e{5,4}:title|text", ParseError::Unsupported),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), Err(want), "{line}");
        }
    }

    #[test]
    fn datagram_keeps_good_lines_around_bad_ones() {
        let d = b"a:1|c\nbad\r\n\nb:2|g\r\n\xff\xfe:1|c";
        let r: Vec<_> = parse_datagram(d).collect();
        assert_eq!(r.len(), 4);
        assert!(r[0].is_ok());
        assert_eq!(r[1], Err(ParseError::NoType));
        assert!(r[2].is_ok());
        assert_eq!(r[3], Err(ParseError::InvalidUtf8));
    }
}
