//! Metrics from service log lines: what one line of a `[[logs]]` source becomes.
//!
//! A source names a format (the built-in `combined` and `common` access-log formats, or a regex
//! with named groups) and the metrics each line yields ([`LogMetric`]): a counter per line (or of a
//! group's number), a timer from a duration group with its unit, a histogram, distribution or
//! gauge of a group's number, a set of a group's text. A metric's tags come from groups (`status`,
//! or `route=path` to name the tag `route` after the group `path`), plus the source's constant
//! `tags`. A tag value is what the group matched with every character a tag value may not hold
//! (see `thermo_core::key`) replaced by `_`, cut at 200 bytes; `-` when the group matched nothing.
//!
//! A line's minute is the minute it is read in (`time = "receive"`, the default), or the minute of
//! its `time` group (`time = "line"`, parsed with `time_format`: a chrono format, by default the
//! access logs' `%d/%b/%Y:%H:%M:%S %z`, or `unix` / `unix_ms`), held to the agent's
//! `max_past_secs` / `max_future_secs` like a DogStatsD `|T`.
//!
//! Each metric of a line goes to the accumulator as a StatsD line would ([`Accumulator::add_line`]),
//! counted in `received_total` when taken. Refusals are counted in `dropped_total{reason}`: a line
//! the format does not match, `no_match`; a line that is not UTF-8, `invalid_utf8`; a value group
//! that is empty or not a number (an access log's `-` bytes), `bad_value`, for that metric only;
//! a `time` group that does not parse, `bad_timestamp`, for the whole line.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use thermo_core::accumulator::{Accumulator, IngestStats};
use thermo_core::statsd::{Kind, Line};

/// nginx's and Apache's common log format:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent`. The request
/// is split in code into the fields `method`, `path` (without its query string) and `protocol`
/// when it has that shape ([`request_part`]); a request that does not (`"-"`, garbage answered
/// 400) still matches, with those fields empty. Splitting it in the regex would make the regex
/// ambiguous at the request's first byte, which makes every capture four times slower (measured
/// in `benches/log_intake.rs`): as written the regex crate captures it in one pass. A regex format
/// with a `request` group gets the same three fields (unless it has groups of those names).
const COMMON: &str = r#"^(?P<remote_addr>\S+) \S+ (?P<remote_user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)"#;

/// The combined format (nginx's default): the common format, then
/// `"$http_referer" "$http_user_agent"`. Anything after them is allowed.
const COMBINED_TAIL: &str = r#" "(?P<referer>[^"]*)" "(?P<user_agent>[^"]*)""#;

/// The default `time_format`: access logs' `10/Oct/2000:13:55:36 -0700`.
const ACCESS_LOG_TIME: &str = "%d/%b/%Y:%H:%M:%S %z";

/// One `[[logs]]` entry of the agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// The files to follow: a path or a glob (`/var/log/nginx/access.log*`, to find the files
    /// rotated away too).
    pub path: String,
    /// Globs of files the path matches but that are not read (`*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where the files already there at the agent's first start (no saved positions) are read
    /// from: `end` (the default) or `beginning`. Files that appear later are read from their
    /// beginning.
    #[serde(default = "default_read_from")]
    pub read_from: String,
    /// `combined` (the default), `common`, or `regex` (then `regex` is the pattern).
    #[serde(default = "default_format")]
    pub format: String,
    /// With `format = "regex"`: a regular expression with named groups (Rust `regex` syntax).
    #[serde(default)]
    pub regex: String,
    /// `receive` (the default: the minute the line is read in) or `line` (its `time` group).
    #[serde(default = "default_time")]
    pub time: String,
    /// How the `time` group is written: a chrono format (default `%d/%b/%Y:%H:%M:%S %z`), `unix`
    /// (seconds) or `unix_ms`.
    #[serde(default)]
    pub time_format: String,
    /// Tags added to every metric of this source, e.g. `{ service = "web" }`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// What each line yields.
    pub metrics: Vec<LogMetric>,
}

fn default_format() -> String {
    "combined".into()
}

fn default_read_from() -> String {
    "end".into()
}

fn default_time() -> String {
    "receive".into()
}

/// One metric derived from each line of a source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMetric {
    /// The metric name.
    pub name: String,
    /// `counter`, `timer`, `histogram`, `distribution`, `gauge` or `set`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The group holding the value: a number (a set: any text). A counter without one counts 1
    /// per line; every other type needs one.
    #[serde(default)]
    pub value: String,
    /// A timer's unit in the log: `s`, `ms` (the default), `us` or `ns`; thermo stores ms.
    #[serde(default)]
    pub unit: String,
    /// Tags from groups: `status` (tag `status` from group `status`) or `route=path` (tag `route`
    /// from group `path`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A configuration error of a `[[logs]]` entry, naming it.
#[derive(Debug, thiserror::Error)]
#[error("[[logs]] {path}: {detail}")]
pub struct LogConfigError {
    pub path: String,
    pub detail: String,
}

/// Where a line's minute comes from.
#[derive(Debug, Clone)]
enum Time {
    Receive,
    Line { field: Field, format: TimeFormat },
}

/// Where a named field of a line comes from.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// A group of the regex, by index.
    Group(usize),
    /// A part of a built-in format's `request` group (its index), split in code.
    Request(usize, RequestPart),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestPart {
    Method,
    Path,
    Protocol,
}

/// `part` of an HTTP request line `METHOD path[?query] protocol`; empty when the request has
/// another shape.
fn request_part(request: &str, part: RequestPart) -> &str {
    let mut it = request.split(' ');
    let (Some(method), Some(target), Some(protocol), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return "";
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return "";
    }
    match part {
        RequestPart::Method => method,
        RequestPart::Path => target.split('?').next().unwrap_or(""),
        RequestPart::Protocol => protocol,
    }
}

#[derive(Debug, Clone)]
enum TimeFormat {
    Chrono(String),
    UnixSeconds,
    UnixMillis,
}

/// One metric, its groups resolved to indexes.
#[derive(Debug, Clone)]
struct Derived {
    name: String,
    kind: Kind,
    value: Option<Field>,
    /// Multiplier into ms (timers), else 1.
    scale: f64,
    /// (tag key, group index).
    tags: Vec<(String, Field)>,
}

/// The compiled form of a [`LogSource`]: turns lines into metrics.
#[derive(Debug, Clone)]
pub struct LogParser {
    regex: regex::Regex,
    time: Time,
    constant_tags: String,
    metrics: Vec<Derived>,
}

/// What one line gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The format matched; its metrics were taken or refused one by one (counted in the stats),
    /// in the minute starting at `minute` (unix seconds).
    Matched { minute: i64 },
    /// Refused whole (counted): no match, not UTF-8, or a bad `time` group.
    Refused,
}

/// The regex of a built-in format (`combined`, `common`).
pub fn pattern(format: &str) -> Option<String> {
    match format {
        "common" => Some(COMMON.to_string()),
        "combined" => Some(format!("{COMMON}{COMBINED_TAIL}")),
        _ => None,
    }
}

impl LogParser {
    /// Compiles `source`, checking every name it refers to.
    pub fn new(source: &LogSource) -> Result<Self, LogConfigError> {
        let fail = |detail: String| LogConfigError {
            path: source.path.clone(),
            detail,
        };
        let pattern = match (source.format.as_str(), pattern(&source.format)) {
            (_, Some(built_in)) => built_in,
            ("regex", None) if source.regex.is_empty() => {
                return Err(fail("format = \"regex\" needs `regex`".into()))
            }
            ("regex", None) => source.regex.clone(),
            (other, None) => {
                return Err(fail(format!(
                    "unknown format {other:?} (combined, common or regex)"
                )))
            }
        };
        if source.format != "regex" && !source.regex.is_empty() {
            return Err(fail("`regex` is only read with format = \"regex\"".into()));
        }
        let regex = regex::Regex::new(&pattern).map_err(|e| fail(format!("regex: {e}")))?;
        let index = |name: &str| regex.capture_names().position(|n| n == Some(name));
        let has_request = index("request").is_some();
        let group = |name: &str, what: &str| -> Result<Field, LogConfigError> {
            let part = match name {
                "method" => Some(RequestPart::Method),
                "path" => Some(RequestPart::Path),
                "protocol" => Some(RequestPart::Protocol),
                _ => None,
            };
            match (index(name), part, index("request")) {
                (Some(i), _, _) => Ok(Field::Group(i)),
                (None, Some(part), Some(request)) => Ok(Field::Request(request, part)),
                _ => {
                    let mut known: Vec<&str> = regex.capture_names().flatten().collect();
                    if has_request {
                        known.extend(["method", "path", "protocol"]);
                    }
                    Err(fail(format!(
                        "{what}: no group {name:?} in the format (groups: {})",
                        known.join(", ")
                    )))
                }
            }
        };
        let time = match source.time.as_str() {
            "receive" => Time::Receive,
            "line" => Time::Line {
                field: group("time", "time = \"line\"")?,
                format: match source.time_format.as_str() {
                    "" => TimeFormat::Chrono(ACCESS_LOG_TIME.into()),
                    "unix" => TimeFormat::UnixSeconds,
                    "unix_ms" => TimeFormat::UnixMillis,
                    f => TimeFormat::Chrono(f.into()),
                },
            },
            other => return Err(fail(format!("time = {other:?}: receive or line"))),
        };
        for (k, v) in &source.tags {
            thermo_core::key::validate_tag(k, v).map_err(|e| fail(format!("tags: {e}")))?;
        }
        let constant_tags = source
            .tags
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        if source.metrics.is_empty() {
            return Err(fail(
                "no [[logs.metrics]]: a line would yield nothing".into(),
            ));
        }
        let mut metrics = Vec::new();
        for m in &source.metrics {
            let what = format!("metric {:?}", m.name);
            thermo_core::key::validate_name(&m.name).map_err(|e| fail(format!("{what}: {e}")))?;
            let kind = match m.kind.as_str() {
                "counter" => Kind::Counter,
                "timer" => Kind::Timer,
                "histogram" => Kind::Histogram,
                "distribution" => Kind::Distribution,
                "gauge" => Kind::Gauge,
                "set" => Kind::Set,
                other => {
                    return Err(fail(format!(
                    "{what}: type {other:?} (counter, timer, histogram, distribution, gauge or set)"
                )))
                }
            };
            let value = match m.value.as_str() {
                "" if kind == Kind::Counter => None,
                "" => return Err(fail(format!("{what}: a {} needs `value`", m.kind))),
                g => Some(group(g, &what)?),
            };
            let scale = match (kind, m.unit.as_str()) {
                (Kind::Timer, "s") => 1000.0,
                (Kind::Timer, "" | "ms") => 1.0,
                (Kind::Timer, "us") => 1e-3,
                (Kind::Timer, "ns") => 1e-6,
                (Kind::Timer, u) => {
                    return Err(fail(format!("{what}: unit {u:?} (s, ms, us or ns)")))
                }
                (_, "") => 1.0,
                (_, _) => return Err(fail(format!("{what}: `unit` is for timers only"))),
            };
            let mut tags = Vec::new();
            for t in &m.tags {
                let (key, g) = t.split_once('=').unwrap_or((t, t));
                thermo_core::key::validate_tag(key, "-")
                    .map_err(|e| fail(format!("{what}: {e}")))?;
                if source.tags.contains_key(key) || tags.iter().any(|(k, _)| k == key) {
                    return Err(fail(format!("{what}: tag {key:?} twice")));
                }
                tags.push((key.to_string(), group(g, &what)?));
            }
            metrics.push(Derived {
                name: m.name.clone(),
                kind,
                value,
                scale,
                tags,
            });
        }
        Ok(Self {
            regex,
            time,
            constant_tags,
            metrics,
        })
    }

    /// Turns one line (without its newline) read at `now_ms` into metrics in `acc`, counting what
    /// was taken and refused in `stats`. With `time = "line"`, a line's time earlier than
    /// `floor_s` counts as `floor_s` (the minute of the line before it in its file: see
    /// `crate::log_intake`).
    pub fn apply(
        &self,
        acc: &mut Accumulator,
        line: &[u8],
        now_ms: i64,
        floor_s: i64,
        stats: &mut IngestStats,
    ) -> Outcome {
        let Ok(text) = std::str::from_utf8(line) else {
            stats.refuse("invalid_utf8", &String::from_utf8_lossy(line));
            return Outcome::Refused;
        };
        let Some(caps) = self.regex.captures(text) else {
            stats.refuse("no_match", text);
            return Outcome::Refused;
        };
        let group = |i: usize| caps.get(i).map_or("", |m| m.as_str());
        let field = |f: Field| match f {
            Field::Group(i) => group(i),
            Field::Request(i, part) => request_part(group(i), part),
        };
        let timestamp = match &self.time {
            Time::Receive => None,
            Time::Line { field: f, format } => match parse_time(field(*f), format) {
                Some(t) => Some(t.max(floor_s)),
                None => {
                    stats.refuse("bad_timestamp", text);
                    return Outcome::Refused;
                }
            },
        };
        let (mut tags, mut value) = (String::new(), String::new());
        for m in &self.metrics {
            tags.clear();
            tags.push_str(&self.constant_tags);
            for (key, g) in &m.tags {
                if !tags.is_empty() {
                    tags.push(',');
                }
                tags.push_str(key);
                tags.push(':');
                push_tag_value(&mut tags, field(*g));
            }
            value.clear();
            match m.value.map(field) {
                None => value.push('1'),
                Some(v) if m.kind == Kind::Set && !v.is_empty() => value.push_str(v),
                Some(v) => match v.parse::<f64>() {
                    Ok(n) if n.is_finite() => {
                        let _ = write!(value, "{}", n * m.scale);
                    }
                    _ => {
                        stats.refuse("bad_value", text);
                        continue;
                    }
                },
            }
            let line = Line {
                name: &m.name,
                values: &value,
                kind: m.kind,
                rate: 1.0,
                tags: &tags,
                timestamp,
            };
            match acc.add_line(&line, now_ms) {
                Ok(()) => stats.lines += 1,
                Err(d) => stats.refuse(d.as_str(), text),
            }
        }
        let at = timestamp.unwrap_or(now_ms.div_euclid(1000));
        Outcome::Matched {
            minute: thermo_core::window::minute_start(at),
        }
    }
}

/// Appends `v` as a tag value: `-` when empty, characters a tag value may not hold as `_`, at
/// most 200 bytes.
fn push_tag_value(out: &mut String, v: &str) {
    if v.is_empty() {
        out.push('-');
        return;
    }
    for b in v.bytes().take(thermo_core::key::MAX_TAG_VALUE_LEN) {
        let ok = b.is_ascii_graphic() && !matches!(b, b',' | b'=' | b'{' | b'}' | b'|' | b'#');
        out.push(if ok { b as char } else { '_' });
    }
}

/// Unix seconds of a `time` group.
fn parse_time(s: &str, format: &TimeFormat) -> Option<i64> {
    match format {
        TimeFormat::UnixSeconds => s
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .map(|t| t.floor() as i64),
        TimeFormat::UnixMillis => s.parse::<i64>().ok().map(|ms| ms.div_euclid(1000)),
        TimeFormat::Chrono(f) => chrono::DateTime::parse_from_str(s, f)
            .ok()
            .map(|t| t.timestamp()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thermo_core::accumulator::AccumulatorConfig;
    use thermo_core::aggregate::Aggregate;

    const NOW_MS: i64 = 1_800_000_030_000; // 30 s into a minute

    fn acc() -> Accumulator {
        Accumulator::new(AccumulatorConfig {
            tenant: "t".into(),
            global_tags: Default::default(),
            max_past_secs: 3600,
            max_future_secs: 60,
            max_series: 10_000,
        })
    }

    fn source(toml_text: &str) -> LogSource {
        toml::from_str(toml_text).unwrap()
    }

    fn nginx() -> LogParser {
        LogParser::new(&source(
            r#"
            path = "/var/log/nginx/access.log"
            tags = { service = "web" }
            [[metrics]]
            name = "http.requests"
            type = "counter"
            tags = ["status", "method", "route=path"]
            [[metrics]]
            name = "http.bytes"
            type = "histogram"
            value = "bytes"
            "#,
        ))
        .unwrap()
    }

    /// Every series-minute of `acc`: (minute, key, aggregate).
    fn cells(acc: &mut Accumulator) -> Vec<(i64, String, Aggregate)> {
        acc.take_all(&mut IngestStats::default())
            .into_iter()
            .flat_map(|(minute, cells)| {
                cells
                    .into_iter()
                    .map(move |(key, agg)| (minute, key.to_string(), agg))
            })
            .collect()
    }

    /// Every series-minute of `acc`: ("key@minute", sum or count), sorted.
    fn series(acc: &mut Accumulator) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = cells(acc)
            .into_iter()
            .map(|(minute, key, agg)| {
                let v = match &agg {
                    Aggregate::Counter(c) => c.sum,
                    Aggregate::Histogram(h) => h.hdr.len() as f64,
                    Aggregate::Gauge(g) => g.last,
                    Aggregate::Set(s) => s.members.len() as f64,
                };
                (format!("{key}@{minute}"), v)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// 2026-10-10T20:55:00Z, the minute of `COMBINED_LINE`'s time.
    const MINUTE_OF_COMBINED_LINE: i64 = 1_791_665_700;

    const COMBINED_LINE: &str = r#"203.0.113.9 - alice [10/Oct/2026:13:55:36 -0700] "GET /api/items?id=7 HTTP/1.1" 200 2326 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)""#;

    #[test]
    fn combined_lines_give_a_counter_by_status_method_route_and_a_bytes_histogram() {
        let p = nginx();
        let mut a = acc();
        let mut st = IngestStats::default();
        for _ in 0..3 {
            assert_eq!(
                p.apply(&mut a, COMBINED_LINE.as_bytes(), NOW_MS, i64::MIN, &mut st),
                Outcome::Matched {
                    minute: 1_800_000_000
                }
            );
        }
        let post = r#"10.0.0.1 - - [10/Oct/2026:13:55:37 -0700] "POST /login HTTP/2.0" 302 - "-" "curl/8.0""#;
        assert_eq!(
            p.apply(&mut a, post.as_bytes(), NOW_MS, i64::MIN, &mut st),
            Outcome::Matched {
                minute: 1_800_000_000
            }
        );
        // `-` bytes: no histogram value for that line (counted), its counter taken.
        assert_eq!(st.lines, 3 * 2 + 1);
        assert_eq!(st.dropped.get("bad_value"), Some(&1));
        let minute = 1_800_000_000;
        assert_eq!(
            series(&mut a),
            vec![
                (format!("t/http.bytes{{service=web}}@{minute}"), 3.0),
                (format!("t/http.requests{{method=GET,route=/api/items,service=web,status=200}}@{minute}"), 3.0),
                (format!("t/http.requests{{method=POST,route=/login,service=web,status=302}}@{minute}"), 1.0),
            ]
        );
    }

    #[test]
    fn common_lines_and_requests_of_another_shape_match() {
        let p = LogParser::new(&source(
            r#"
            path = "x.log"
            format = "common"
            [[metrics]]
            name = "req"
            type = "counter"
            tags = ["status", "method"]
            "#,
        ))
        .unwrap();
        let mut a = acc();
        let mut st = IngestStats::default();
        for line in [
            r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#,
            // A request that is not `METHOD path protocol`: matched, method `-`.
            r#"192.0.2.1 - - [10/Oct/2000:13:55:37 -0700] "-" 400 0"#,
            r#"192.0.2.1 - - [10/Oct/2000:13:55:38 -0700] "\x16\x03\x01" 400 157"#,
        ] {
            assert_eq!(
                p.apply(&mut a, line.as_bytes(), NOW_MS, i64::MIN, &mut st),
                Outcome::Matched {
                    minute: 1_800_000_000
                },
                "{line}"
            );
        }
        let m = 1_800_000_000;
        assert_eq!(
            series(&mut a),
            vec![
                (format!("t/req{{method=-,status=400}}@{m}"), 2.0),
                (format!("t/req{{method=GET,status=200}}@{m}"), 1.0),
            ]
        );
    }

    #[test]
    fn a_regex_format_gives_a_timer_in_its_unit_a_gauge_a_set_and_the_line_time() {
        let p = LogParser::new(&source(
            r#"
            path = "app.log"
            format = "regex"
            regex = '^(?P<time>\d+) (?P<route>\S+) (?P<status>\d+) (?P<secs>[\d.]+) q=(?P<queue>\d+) user=(?P<user>\S+)$'
            time = "line"
            time_format = "unix"
            [[metrics]]
            name = "lat"
            type = "timer"
            value = "secs"
            unit = "s"
            tags = ["route"]
            [[metrics]]
            name = "queue"
            type = "gauge"
            value = "queue"
            [[metrics]]
            name = "users"
            type = "set"
            value = "user"
            "#,
        ))
        .unwrap();
        let mut a = acc();
        let mut st = IngestStats::default();
        let t = 1_799_999_950; // the minute before now's, from the line
        for (i, user) in ["ann", "bob", "ann"].iter().enumerate() {
            let line = format!("{} /a 200 0.25 q={} user={user}", t + i as i64, 10 + i);
            assert_eq!(
                p.apply(&mut a, line.as_bytes(), NOW_MS, i64::MIN, &mut st),
                Outcome::Matched {
                    minute: 1_799_999_940
                }
            );
        }
        assert_eq!(st.lines, 9);
        let cells = cells(&mut a);
        assert_eq!(cells.len(), 3);
        assert!(
            cells.iter().all(|c| c.0 == 1_799_999_940),
            "the line's minute"
        );
        let agg = |key: &str| &cells.iter().find(|c| c.1 == key).unwrap().2;
        let Aggregate::Histogram(h) = agg("t/lat{route=/a}") else {
            panic!()
        };
        assert_eq!(h.hdr.len(), 3);
        let p50 = h.quantile(0.5).unwrap();
        assert!(
            (p50 - 250.0).abs() <= 250.0 * 0.001,
            "0.25 s is 250 ms: {p50}"
        );
        let Aggregate::Gauge(g) = agg("t/queue{}") else {
            panic!()
        };
        assert_eq!(g.last, 12.0);
        let Aggregate::Set(s) = agg("t/users{}") else {
            panic!()
        };
        assert_eq!(s.members.len(), 2);
    }

    /// The README's nginx example with `$request_time`: a regex format with a `request` group
    /// gets `method` and `path` from it, and the latency in seconds becomes ms.
    #[test]
    fn the_readme_latency_format_splits_its_request_and_times_in_ms() {
        let p = LogParser::new(&source(&format!(
            r#"
            path = "/var/log/nginx/timed.log*"
            format = "regex"
            regex = '{}'
            [[metrics]]
            name = "http.latency"
            type = "timer"
            value = "request_time"
            unit = "s"
            tags = ["status", "method", "route=path"]
            "#,
            r#"^(?P<remote_addr>\S+) \S+ (?P<remote_user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<user_agent>[^"]*)" (?P<request_time>[\d.]+)"#
        )))
        .unwrap();
        let mut a = acc();
        let mut st = IngestStats::default();
        let line = format!("{COMBINED_LINE} 0.042");
        assert_eq!(
            p.apply(&mut a, line.as_bytes(), NOW_MS, i64::MIN, &mut st),
            Outcome::Matched {
                minute: 1_800_000_000
            }
        );
        let cells = cells(&mut a);
        assert_eq!(
            cells[0].1,
            "t/http.latency{method=GET,route=/api/items,status=200}"
        );
        let Aggregate::Histogram(h) = &cells[0].2 else {
            panic!()
        };
        assert!((h.quantile(0.5).unwrap() - 42.0).abs() <= 0.042);
    }

    #[test]
    fn malformed_lines_are_refused_and_counted() {
        let p = nginx();
        let mut a = acc();
        let mut st = IngestStats::default();
        let long = format!("{} {}", COMBINED_LINE, "x".repeat(100_000));
        for line in [
            b"".as_slice(),
            b"not an access log line",
            b"1.2.3.4 - - [bad time] \"GET / HTTP/1.1\" 2000 1 \"-\" \"-\"",
            &[0xff, 0xfe, b' ', b'x'],
        ] {
            assert_eq!(
                p.apply(&mut a, line, NOW_MS, i64::MIN, &mut st),
                Outcome::Refused
            );
        }
        // Anything after the combined fields is allowed, however long.
        assert_eq!(
            p.apply(&mut a, long.as_bytes(), NOW_MS, i64::MIN, &mut st),
            Outcome::Matched {
                minute: 1_800_000_000
            }
        );
        assert_eq!(st.dropped.get("no_match"), Some(&3));
        assert_eq!(st.dropped.get("invalid_utf8"), Some(&1));
        assert_eq!(st.lines, 2);
        // The line's time, when asked for, must parse.
        let p = LogParser::new(&LogSource {
            time: "line".into(),
            ..source_of(&nginx_toml())
        })
        .unwrap();
        let bad = COMBINED_LINE.replace("10/Oct/2026", "10/Foo/2026");
        assert_eq!(
            p.apply(&mut a, bad.as_bytes(), NOW_MS, i64::MIN, &mut st),
            Outcome::Refused
        );
        assert_eq!(st.dropped.get("bad_timestamp"), Some(&1));
        // A real access-log time: 2026-10-10 13:55:36 -0700 is far older than max_past_secs.
        assert_eq!(
            p.apply(&mut a, COMBINED_LINE.as_bytes(), NOW_MS, i64::MIN, &mut st),
            Outcome::Matched {
                minute: MINUTE_OF_COMBINED_LINE
            }
        );
        assert_eq!(st.dropped.get("too_old"), Some(&1));
    }

    fn nginx_toml() -> String {
        r#"
        path = "/var/log/nginx/access.log"
        [[metrics]]
        name = "http.requests"
        type = "counter"
        "#
        .into()
    }

    fn source_of(text: &str) -> LogSource {
        source(text)
    }

    #[test]
    fn configuration_errors_name_what_is_wrong() {
        let err = |text: &str| LogParser::new(&source(text)).unwrap_err().to_string();
        let base = "path = \"a.log\"\n";
        assert!(err(&format!(
            "{base}format = \"json\"\n[[metrics]]\nname = \"x\"\ntype = \"counter\""
        ))
        .contains("unknown format"));
        assert!(err(&format!(
            "{base}format = \"regex\"\n[[metrics]]\nname = \"x\"\ntype = \"counter\""
        ))
        .contains("needs `regex`"));
        assert!(err(&format!(
            "{base}[[metrics]]\nname = \"x\"\ntype = \"counter\"\ntags = [\"nope\"]"
        ))
        .contains("no group \"nope\""));
        assert!(err(&format!(
            "{base}[[metrics]]\nname = \"x\"\ntype = \"timer\""
        ))
        .contains("needs `value`"));
        assert!(err(&format!(
            "{base}[[metrics]]\nname = \"x\"\ntype = \"timer\"\nvalue = \"bytes\"\nunit = \"h\""
        ))
        .contains("unit"));
        assert!(err(&format!(
            "{base}[[metrics]]\nname = \"9x\"\ntype = \"counter\""
        ))
        .contains("metric \"9x\""));
        assert!(
            toml::from_str::<LogSource>(base).is_err(),
            "metrics is required"
        );
        assert!(err(&format!("{base}metrics = []")).contains("no [[logs.metrics]]"));
    }

    proptest::proptest! {
        /// No input panics, in any format; a line is matched or refused, and only a matched line
        /// adds metrics.
        #[test]
        fn no_line_panics(line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let p = nginx();
            let mut a = acc();
            let mut st = IngestStats::default();
            let out = p.apply(&mut a, &line, NOW_MS, i64::MIN, &mut st);
            if out == Outcome::Refused {
                proptest::prop_assert_eq!(st.lines, 0);
            }
        }

        /// Lines made of access-log pieces, the shape real lines have, never panic either.
        #[test]
        fn no_access_like_line_panics(
            addr in "[0-9.]{1,15}", path in "[ -~]{0,40}", status in "[0-9]{1,4}", bytes in "[0-9-]{1,6}",
        ) {
            let line = format!("{addr} - - [10/Oct/2026:13:55:36 -0700] \"GET {path} HTTP/1.1\" {status} {bytes} \"-\" \"ua\"");
            let p = nginx();
            let mut a = acc();
            let mut st = IngestStats::default();
            p.apply(&mut a, line.as_bytes(), NOW_MS, i64::MIN, &mut st);
        }
    }
}
