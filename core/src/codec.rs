//! Versioned binary wire codecs.
//!
//! Primitives: `uv` = unsigned LEB128 varint, `iv` = zigzag varint, `f64` = 8 bytes little endian,
//! `str` = `uv` length + UTF-8 bytes.
//!
//! ```text
//! Aggregate  := 0x01 f64 sum, uv samples                                   counter
//!             | 0x02 f64 last, iv last_ms, f64 min, f64 max                   gauge
//!             | 0x03 uv count, f64 sum, f64 min, f64 max, uv n, n bytes HDR V2 histogram
//!             | 0x04 uv n, n × u64 LE member hash (ascending)                 set
//! Batch      := "TB" 0x01 str agent_id, uv seq, uv n, n × Item              agent → partitioner
//! Item       := str name, uv ntags, ntags × (str key, str value), iv minute, Aggregate
//! Record     := "TR" 0x01 str source, uv seq, iv minute, Aggregate           Kafka value
//!               (the Kafka key is the canonical metric key)
//! Totals     := "TT" 0x01 str source, uv seq, uv n, n × (iv time ms, f64)  Kafka value: running
//!               totals of one cumulative series (Prometheus remote write's counters)
//! HotCell    := "TH" 0x01 uv n, n × (u64 LE source hash, uv seq), Aggregate   Redis hash value
//! ```
//!
//! A decoder refuses trailing bytes, unknown versions and lengths that exceed the input, so a
//! hostile body cannot make it allocate more than its own size.

use crate::aggregate::{Aggregate, Counter, DistinctSet, Gauge, Hist, TypeConflict, HIST_SIGFIGS};
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Current version byte of every framed structure.
pub const VERSION: u8 = 1;

/// A body that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {problem}")]
pub struct CodecError {
    pub what: &'static str,
    pub problem: String,
}

fn err(what: &'static str, problem: impl Into<String>) -> CodecError {
    CodecError {
        what,
        problem: problem.into(),
    }
}

/// Writes primitives into a byte buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn uv(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    pub fn iv(&mut self, v: i64) {
        self.uv(((v << 1) ^ (v >> 63)) as u64);
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.uv(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn aggregate(&mut self, a: &Aggregate) {
        match a {
            Aggregate::Counter(c) => {
                self.buf.push(1);
                self.f64(c.sum);
                self.uv(c.samples);
            }
            Aggregate::Gauge(g) => {
                self.buf.push(2);
                self.f64(g.last);
                self.iv(g.last_ms);
                self.f64(g.min);
                self.f64(g.max);
            }
            Aggregate::Histogram(h) => {
                self.buf.push(3);
                self.uv(h.count);
                self.f64(h.sum);
                self.f64(h.min);
                self.f64(h.max);
                let mut hdr = Vec::new();
                // Serialising into a Vec cannot fail for a histogram we built ourselves.
                let _ = V2Serializer::new().serialize(&h.hdr, &mut hdr);
                self.uv(hdr.len() as u64);
                self.buf.extend_from_slice(&hdr);
            }
            Aggregate::Set(s) => {
                self.buf.push(4);
                self.uv(s.members.len() as u64);
                for m in &s.members {
                    self.buf.extend_from_slice(&m.to_le_bytes());
                }
            }
        }
    }
}

/// Reads primitives from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }
    fn short(&self) -> CodecError {
        err(self.what, format!("truncated at byte {}", self.pos))
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return Err(self.short());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn uv(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err(self.what, "varint longer than 10 bytes"))
    }
    pub fn iv(&mut self) -> Result<i64, CodecError> {
        let u = self.uv()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    pub fn f64(&mut self) -> Result<f64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }
    pub fn u64_le(&mut self) -> Result<u64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A length that must fit in the rest of the input, `unit` bytes per element at least.
    pub fn len(&mut self, unit: usize) -> Result<usize, CodecError> {
        let n = self.uv()?;
        if n.saturating_mul(unit as u64) > self.remaining() as u64 {
            return Err(err(self.what, format!("length {n} exceeds the input")));
        }
        Ok(n as usize)
    }
    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.len(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| err(self.what, "string is not UTF-8"))
    }
    pub fn header(&mut self, magic: &[u8; 2]) -> Result<(), CodecError> {
        if self.take(2)? != magic {
            return Err(err(self.what, "bad magic bytes"));
        }
        let v = self.u8()?;
        if v != VERSION {
            return Err(err(self.what, format!("unsupported version {v}")));
        }
        Ok(())
    }
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.remaining() != 0 {
            return Err(err(
                self.what,
                format!("{} trailing bytes", self.remaining()),
            ));
        }
        Ok(())
    }

    pub fn aggregate(&mut self) -> Result<Aggregate, CodecError> {
        Ok(match self.u8()? {
            1 => Aggregate::Counter(Counter {
                sum: self.f64()?,
                samples: self.uv()?,
            }),
            2 => Aggregate::Gauge(Gauge {
                last: self.f64()?,
                last_ms: self.iv()?,
                min: self.f64()?,
                max: self.f64()?,
            }),
            3 => {
                let count = self.uv()?;
                let sum = self.f64()?;
                let min = self.f64()?;
                let max = self.f64()?;
                let n = self.len(1)?;
                let mut bytes = self.take(n)?;
                check_hdr_header(bytes).map_err(|p| err(self.what, format!("histogram: {p}")))?;
                // The header check pinned thermo's precision and lowest value, so the histogram
                // as deserialized is one `new_hdr` would make (sized to the stored highest value):
                // used as is, not copied into a fresh one.
                let mut hdr: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes)
                    .map_err(|e| err(self.what, format!("histogram: {e:?}")))?;
                hdr.auto(true);
                Aggregate::Histogram(Hist {
                    count,
                    sum,
                    min,
                    max,
                    hdr,
                })
            }
            4 => {
                let n = self.len(8)?;
                let mut s = DistinctSet::default();
                for _ in 0..n {
                    s.members.insert(self.u64_le()?);
                }
                Aggregate::Set(s)
            }
            t => return Err(err(self.what, format!("unknown aggregate tag {t}"))),
        })
    }
}

/// Checks the V2 header of a serialised HDR histogram before `hdrhistogram` sees it: its
/// deserializer allocates the claimed payload length (up to 4 GiB) and a counts array sized by the
/// claimed precision before it reads anything else. Only the form [`Writer`] produces passes:
/// uncompressed V2, a payload that fits in the bytes given, [`HIST_SIGFIGS`] digits and a lowest
/// value of 1 (so the counts array stays under ~0.5 MiB whatever the claimed highest value).
fn check_hdr_header(b: &[u8]) -> Result<(), &'static str> {
    const V2_COOKIE: u32 = 0x1c84_9313;
    const HEADER_LEN: usize = 40;
    if b.len() < HEADER_LEN {
        return Err("truncated header");
    }
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
    if u32_at(0) != V2_COOKIE {
        return Err("not an uncompressed V2 histogram");
    }
    if u32_at(4) as usize > b.len() - HEADER_LEN {
        return Err("payload length exceeds the input");
    }
    if u32_at(12) != u32::from(HIST_SIGFIGS) || u64_at(16) != 1 {
        return Err("unexpected precision or lowest value");
    }
    Ok(())
}

/// One series-minute in an agent batch. The tenant is not on the wire: the partitioner assigns the
/// authenticated one.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: String,
    pub tags: Vec<(String, String)>,
    pub minute: i64,
    pub agg: Aggregate,
}

/// What an agent sends to the partitioner in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub agent_id: String,
    pub seq: u64,
    pub items: Vec<Item>,
}

impl Batch {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"TB");
        w.buf.push(VERSION);
        w.str(&self.agent_id);
        w.uv(self.seq);
        w.uv(self.items.len() as u64);
        for it in &self.items {
            w.str(&it.name);
            w.uv(it.tags.len() as u64);
            for (k, v) in &it.tags {
                w.str(k);
                w.str(v);
            }
            w.iv(it.minute);
            w.aggregate(&it.agg);
        }
        w.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, "batch");
        r.header(b"TB")?;
        let agent_id = r.str()?.to_string();
        let seq = r.uv()?;
        let n = r.len(4)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.str()?.to_string();
            let nt = r.len(2)?;
            let mut tags = Vec::with_capacity(nt);
            for _ in 0..nt {
                tags.push((r.str()?.to_string(), r.str()?.to_string()));
            }
            let minute = r.iv()?;
            let agg = r.aggregate()?;
            items.push(Item {
                name,
                tags,
                minute,
                agg,
            });
        }
        r.finish()?;
        Ok(Self {
            agent_id,
            seq,
            items,
        })
    }
}

/// One series-minute as a Kafka record value. `source` and `seq` identify the contribution, so that
/// a batch the agent retried is merged once.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub source: String,
    pub seq: u64,
    pub minute: i64,
    pub agg: Aggregate,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"TR");
        w.buf.push(VERSION);
        w.str(&self.source);
        w.uv(self.seq);
        w.iv(self.minute);
        w.aggregate(&self.agg);
        w.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, "record");
        r.header(b"TR")?;
        let source = r.str()?.to_string();
        let seq = r.uv()?;
        let minute = r.iv()?;
        let agg = r.aggregate()?;
        r.finish()?;
        Ok(Self {
            source,
            seq,
            minute,
            agg,
        })
    }
}

/// Running totals of one cumulative series as a Kafka record value (the key is its metric key):
/// samples `(unix ms, total)` in the order sent. The aggregator that owns the series' partition
/// turns them into per-minute increases against the series' last total (kept in the hot store).
/// `source` and `seq` identify the contribution, as for [`Record`].
#[derive(Debug, Clone, PartialEq)]
pub struct TotalsRecord {
    pub source: String,
    pub seq: u64,
    pub samples: Vec<(i64, f64)>,
}

impl TotalsRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"TT");
        w.buf.push(VERSION);
        w.str(&self.source);
        w.uv(self.seq);
        w.uv(self.samples.len() as u64);
        for (t, v) in &self.samples {
            w.iv(*t);
            w.f64(*v);
        }
        w.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, "totals record");
        r.header(b"TT")?;
        let source = r.str()?.to_string();
        let seq = r.uv()?;
        let n = r.len(9)?;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.iv()?;
            let v = r.f64()?;
            if !v.is_finite() {
                return Err(CodecError {
                    what: "totals record",
                    problem: "a total is not finite".into(),
                });
            }
            samples.push((t, v));
        }
        r.finish()?;
        Ok(Self {
            source,
            seq,
            samples,
        })
    }
}

/// A Kafka record value: a series-minute or a series' running totals, told apart by header.
#[derive(Debug, Clone, PartialEq)]
pub enum LogValue {
    Minute(Record),
    Totals(TotalsRecord),
}

impl LogValue {
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        if buf.starts_with(b"TT") {
            TotalsRecord::decode(buf).map(LogValue::Totals)
        } else {
            Record::decode(buf).map(LogValue::Minute)
        }
    }
}

/// The hot store's state of one series-minute: the merged aggregate and which contributions
/// `(source hash, seq)` it already holds.
#[derive(Debug, Clone, PartialEq)]
pub struct HotCell {
    pub contributors: Vec<(u64, u64)>,
    pub agg: Aggregate,
}

impl HotCell {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(b"TH");
        w.buf.push(VERSION);
        w.uv(self.contributors.len() as u64);
        for (s, q) in &self.contributors {
            w.bytes(&s.to_le_bytes());
            w.uv(*q);
        }
        w.aggregate(&self.agg);
        w.buf
    }

    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(buf, "hot cell");
        r.header(b"TH")?;
        let n = r.len(9)?;
        let mut contributors = Vec::with_capacity(n);
        for _ in 0..n {
            contributors.push((r.u64_le()?, r.uv()?));
        }
        let agg = r.aggregate()?;
        r.finish()?;
        Ok(Self { contributors, agg })
    }

    /// True if the contribution `(source, seq)` is already merged.
    pub fn has(&self, source: u64, seq: u64) -> bool {
        self.contributors.contains(&(source, seq))
    }

    /// Combines two states of one series-minute that may share contributions (a cold row and the
    /// hot cell it was built from, plus later contributions). If one holds every contribution of
    /// the other it wins whole; if they share none they are merged; a partial overlap (never made
    /// by thermo's own flows) keeps the state with more contributions and reports it.
    pub fn absorb(&mut self, other: &HotCell) -> Result<Absorbed, TypeConflict> {
        let mine_in_other = self
            .contributors
            .iter()
            .all(|c| other.contributors.contains(c));
        let other_in_mine = other
            .contributors
            .iter()
            .all(|c| self.contributors.contains(c));
        if other_in_mine {
            return Ok(Absorbed::Kept);
        }
        if mine_in_other {
            *self = other.clone();
            return Ok(Absorbed::Replaced);
        }
        let shared = other
            .contributors
            .iter()
            .any(|c| self.contributors.contains(c));
        if shared {
            if other.contributors.len() > self.contributors.len() {
                *self = other.clone();
            }
            return Ok(Absorbed::Conflict);
        }
        self.agg.merge(&other.agg)?;
        self.contributors.extend_from_slice(&other.contributors);
        Ok(Absorbed::Merged)
    }
}

/// What [`HotCell::absorb`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    Kept,
    Replaced,
    Merged,
    Conflict,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Aggregate> {
        let mut h = Hist::new();
        for v in [0.5, 12.0, 250.0, 1e6] {
            h.record(v, 3);
        }
        let mut s = DistinctSet::default();
        s.insert("a");
        s.insert("b");
        vec![
            Aggregate::Counter(Counter {
                sum: 2.5,
                samples: 7,
            }),
            Aggregate::Gauge(Gauge {
                last: -1.0,
                last_ms: -5,
                min: -3.0,
                max: 9.0,
            }),
            Aggregate::Histogram(h),
            Aggregate::Set(s),
        ]
    }

    /// A decoded histogram is the stored one as is (not a copy into a fresh one): equal both
    /// ways round, and it records, merges and answers quantiles as the original does.
    #[test]
    fn decoded_histograms_behave_as_the_encoded_ones() {
        let mut h = Hist::new();
        for v in 1..=500 {
            h.record(f64::from(v), 1);
        }
        let cell = |h: &Hist| HotCell {
            contributors: vec![(1, 1)],
            agg: Aggregate::Histogram(h.clone()),
        };
        let Aggregate::Histogram(mut d) = HotCell::decode(&cell(&h).encode()).unwrap().agg else {
            panic!("a histogram");
        };
        assert!(d == h, "decoded == encoded");
        assert!(h == d, "encoded == decoded");
        for x in [&mut d, &mut h] {
            x.record(5e6, 2); // beyond the stored highest value: resizes
        }
        assert!(d == h, "decoded == encoded");
        assert!(h == d, "encoded == decoded");
        let mut merged = Aggregate::Histogram(Hist::new());
        merged.merge(&Aggregate::Histogram(d.clone())).unwrap();
        merged.merge(&Aggregate::Histogram(h.clone())).unwrap();
        let Aggregate::Histogram(merged) = merged else {
            panic!("a histogram");
        };
        for q in [0.5, 0.99, 0.999, 1.0] {
            assert_eq!(d.quantile(q), h.quantile(q), "q {q}");
            assert_eq!(merged.quantile(q), h.quantile(q), "merged q {q}");
        }
        assert_eq!(merged.count, 2 * h.count);
    }

    #[test]
    fn batch_record_cell_round_trip() {
        let items = samples()
            .into_iter()
            .enumerate()
            .map(|(i, agg)| Item {
                name: format!("m{i}"),
                tags: vec![("host".into(), "a".into())],
                minute: 1_700_000_040 - 60 * i as i64,
                agg,
            })
            .collect();
        let b = Batch {
            agent_id: "agent-1".into(),
            seq: 300,
            items,
        };
        assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        for agg in samples() {
            let r = Record {
                source: "a".into(),
                seq: 1,
                minute: -60,
                agg: agg.clone(),
            };
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
            let c = HotCell {
                contributors: vec![(u64::MAX, 9)],
                agg,
            };
            assert_eq!(HotCell::decode(&c.encode()).unwrap(), c);
        }
    }

    #[test]
    fn absorb_counts_each_contribution_once() {
        let c = |sum: f64, contributors: Vec<(u64, u64)>| HotCell {
            contributors,
            agg: Aggregate::Counter(Counter { sum, samples: 1 }),
        };
        let mut row = c(5.0, vec![(1, 1)]);
        assert_eq!(row.absorb(&c(5.0, vec![(1, 1)])).unwrap(), Absorbed::Kept);
        assert_eq!(
            row.absorb(&c(7.0, vec![(1, 1), (2, 1)])).unwrap(),
            Absorbed::Replaced
        );
        assert_eq!(row.absorb(&c(3.0, vec![(3, 1)])).unwrap(), Absorbed::Merged);
        assert_eq!(
            row.agg,
            Aggregate::Counter(Counter {
                sum: 10.0,
                samples: 2
            })
        );
        assert_eq!(row.contributors, vec![(1, 1), (2, 1), (3, 1)]);
        assert_eq!(
            row.absorb(&c(1.0, vec![(3, 1), (4, 1)])).unwrap(),
            Absorbed::Conflict
        );
    }

    #[test]
    fn hostile_input_is_refused() {
        let b = Batch {
            agent_id: "a".into(),
            seq: 1,
            items: vec![],
        }
        .encode();
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(Batch::decode(&trailing).is_err());
        assert!(Batch::decode(&b[..b.len() - 1]).is_err());
        let mut v2 = b.clone();
        v2[2] = 2;
        assert_eq!(
            Batch::decode(&v2).unwrap_err().problem,
            "unsupported version 2"
        );
        // A claimed length of 2^60 items must not allocate.
        let mut huge = Writer::default();
        huge.bytes(b"TB");
        huge.buf.push(1);
        huge.str("a");
        huge.uv(1);
        huge.uv(1 << 60);
        assert!(Batch::decode(&huge.buf).is_err());
    }
}
