//! The cold object format: Apache Parquet, one row per series and window.
//!
//! ```text
//! message thermo_cold {
//!   required binary tenant (UTF8);       required binary metric (UTF8);
//!   required binary tags (UTF8);         -- "k1=v1,k2=v2", sorted by key
//!   required binary series_key (UTF8);   -- canonical "tenant/name{k=v,...}"
//!   required int64 window_start;         -- unix seconds, aligned to the resolution
//!   required binary resolution (UTF8);   -- "1m", "5m" or "1h"
//!   required binary type (UTF8);         -- counter, gauge, histogram, set
//!   required int64 count;                -- samples (counter), values (histogram), 1 (gauge), distinct (set)
//!   optional double sum; optional double min; optional double max; optional double last;
//!   optional double p50; optional double p90; optional double p99;
//!   required binary state;               -- thermo HotCell bytes: the mergeable state (see codec)
//! }
//! ```
//!
//! The plain columns are for SQL users (DuckDB, Spark, Athena); thermo itself reads only
//! `series_key`, `window_start` and `state`, so a percentile over many windows is always computed
//! from merged histograms.
//!
//! # Layout 2 (written since 2026-12; key-value metadata `thermo.layout = 2`)
//!
//! Written so that one series can be read without decoding the others ([`crate::cold_select`]):
//! - rows sorted by the `series_key` *string* (the tenant is constant, so by metric name, then
//!   canonical tags: every metric's series are contiguous, `tenant/name{` … `tenant/name|`), then
//!   by `window_start`;
//! - row groups of [`ROW_GROUP_ROWS`] rows, up to the end of the series there (layout 3: a series'
//!   rows are in one row group);
//! - `series_key`: DELTA_BYTE_ARRAY (a repeated key costs a few bits), no dictionary, pages of
//!   [`KEY_PAGE_ROWS`] rows, min/max statistics per chunk and per page (the column index);
//! - `window_start` (DELTA_BINARY_PACKED) and `state` (PLAIN): no dictionary, pages of
//!   [`PAGE_ROWS`] rows, so a series' rows are read by a few small pages;
//! - in layout 3, pages of these three columns end between series: a page is closed at the first
//!   series boundary once it holds its row count, so a series that fits in one page lies in one;
//! - the offset index of every column; chunk statistics for the plain columns, none for `state`,
//!   `tenant` and `resolution` (constant in an object);
//! - key-value metadata `thermo.tag_keys`: a line `name<TAB>k1,k2,...` for each metric whose
//!   series all have the same tag keys, so that equality filters on the first tag keys become a
//!   key prefix.
//!
//! # Layout 3 (written since 2026-12-04; `thermo.layout = 3`)
//!
//! Layout 2, plus a footer per row group and a directory of the row groups' key bounds, written
//! before the footer where no other Parquet reader looks ([`crate::cold_directory`]): a reader of
//! one series decodes one row group's metadata instead of the whole footer.
//!
//! Layout 1 (before; one row group, rows sorted by the parsed key, default pages with a
//! dictionary) has the same schema and is read by the same code: every pruning step uses true
//! min/max bounds, which hold whatever the order, and only costs more there. So the layout is
//! recorded in the metadata, not in the object keys, and DuckDB reads all three.

use crate::StoreError;
use parquet::basic::{Compression, Encoding};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::{ColumnPath, SchemaDescPtr, SchemaDescriptor};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use thermo_core::aggregate::Aggregate;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::Resolution;

/// Most rows in one row group.
pub const ROW_GROUP_ROWS: usize = 1 << 17;
/// Rows per data page of `window_start` and `state`.
pub const PAGE_ROWS: usize = 128;
/// Rows per data page of `series_key`.
pub const KEY_PAGE_ROWS: usize = 256;
/// Column numbers thermo reads.
pub const COL_SERIES_KEY: usize = 3;
pub const COL_WINDOW_START: usize = 4;
pub const COL_STATE: usize = 15;
/// Key-value metadata: the layout version, and the tag keys per metric.
pub const META_LAYOUT: &str = "thermo.layout";
pub const META_TAG_KEYS: &str = "thermo.tag_keys";
/// The layout [`encode`] writes.
pub const LAYOUT: u32 = 3;

/// The schema of every layout, as its descriptor, parsed once (`None` if it did not parse, which
/// would be a bug: then each footer's own schema is decoded).
pub fn schema_descr() -> Option<SchemaDescPtr> {
    static DESCR: OnceLock<Option<SchemaDescPtr>> = OnceLock::new();
    DESCR
        .get_or_init(|| {
            let schema = parse_message_type(SCHEMA).ok()?;
            Some(Arc::new(SchemaDescriptor::new(Arc::new(schema))))
        })
        .clone()
}

const SCHEMA: &str = "message thermo_cold {
  required binary tenant (UTF8);
  required binary metric (UTF8);
  required binary tags (UTF8);
  required binary series_key (UTF8);
  required int64 window_start;
  required binary resolution (UTF8);
  required binary type (UTF8);
  required int64 count;
  optional double sum;
  optional double min;
  optional double max;
  optional double last;
  optional double p50;
  optional double p90;
  optional double p99;
  required binary state;
}";

/// One row: a series' state for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct ColdRow {
    pub series: MetricKey,
    pub window_start: i64,
    pub cell: HotCell,
}

/// A cold object that cannot be read as one.
pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: "cold object",
        detail: e.to_string(),
    }
}

fn plain(agg: &Aggregate) -> [Option<f64>; 7] {
    match agg {
        Aggregate::Counter(c) => [Some(c.sum), None, None, None, None, None, None],
        Aggregate::Gauge(g) => [
            None,
            Some(g.min),
            Some(g.max),
            Some(g.last),
            None,
            None,
            None,
        ],
        Aggregate::Histogram(h) if h.count > 0 => [
            Some(h.sum),
            Some(h.min),
            Some(h.max),
            None,
            h.quantile(0.5),
            h.quantile(0.9),
            h.quantile(0.99),
        ],
        _ => [None; 7],
    }
}

/// The writer properties of layouts 2 and 3 (`layout`); `key_bloom`: a bloom filter on
/// `series_key` sized for that many distinct keys.
fn writer_properties(layout: u32, tag_keys: String, key_bloom: Option<u64>) -> WriterProperties {
    let key = ColumnPath::from("series_key");
    let window = ColumnPath::from("window_start");
    let state = ColumnPath::from("state");
    let mut b = WriterProperties::builder();
    if let Some(ndv) = key_bloom {
        b = b
            .set_column_bloom_filter_enabled(key.clone(), true)
            .set_column_bloom_filter_max_ndv(key.clone(), ndv.max(1))
            .set_column_bloom_filter_fpp(key.clone(), 0.01);
    }
    b.set_compression(Compression::SNAPPY)
        .set_write_batch_size(PAGE_ROWS)
        // Statistics lengthen the footer every read decodes (per row group and column): only
        // those a reader can prune with are written. thermo prunes by `series_key` (row groups
        // and pages); `metric` and `window_start` serve other readers' filters (DuckDB).
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("metric"), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(window.clone(), EnabledStatistics::Chunk)
        .set_column_statistics_enabled(key.clone(), EnabledStatistics::Page)
        .set_column_dictionary_enabled(key.clone(), false)
        .set_column_encoding(key.clone(), Encoding::DELTA_BYTE_ARRAY)
        .set_column_data_page_row_count_limit(key, KEY_PAGE_ROWS)
        .set_column_dictionary_enabled(window.clone(), false)
        .set_column_encoding(window.clone(), Encoding::DELTA_BINARY_PACKED)
        .set_column_data_page_row_count_limit(window, PAGE_ROWS)
        .set_column_dictionary_enabled(state.clone(), false)
        .set_column_data_page_row_count_limit(state, PAGE_ROWS)
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: COL_SERIES_KEY as i32,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: COL_WINDOW_START as i32,
                descending: false,
                nulls_first: false,
            },
        ]))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(META_LAYOUT.to_string(), layout.to_string()),
            KeyValue::new(META_TAG_KEYS.to_string(), tag_keys),
        ]))
        .build()
}

/// The text columns of one series, built once and shared by its rows (a `ByteArray` clone is a
/// reference count).
struct SeriesText {
    tenant: ByteArray,
    metric: ByteArray,
    tags: ByteArray,
    key: ByteArray,
}

impl SeriesText {
    fn new(k: &MetricKey) -> Self {
        let tags = k
            .tags()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let text = |s: String| ByteArray::from(s.into_bytes());
        Self {
            tenant: text(k.tenant().to_string()),
            metric: text(k.name().to_string()),
            tags: text(tags),
            key: text(k.encode()),
        }
    }
}

/// `thermo.tag_keys`: `name\tk1,k2` for every metric whose series all have the same tag keys.
fn tag_keys_text<'a>(series: impl Iterator<Item = &'a MetricKey>) -> String {
    let mut per_metric: BTreeMap<&str, Option<Vec<&str>>> = BTreeMap::new();
    for k in series {
        let keys: Vec<&str> = k.tags().iter().map(|(k, _)| k.as_str()).collect();
        per_metric
            .entry(k.name())
            .and_modify(|e| {
                if e.as_ref().is_some_and(|known| *known != keys) {
                    *e = None;
                }
            })
            .or_insert_with(|| Some(keys.clone()));
    }
    let mut out = String::new();
    for (name, keys) in per_metric {
        if let Some(keys) = keys {
            out.push_str(name);
            out.push('\t');
            out.push_str(&keys.join(","));
            out.push('\n');
        }
    }
    out
}

/// Encodes rows as one Parquet file of layout 3 (see the module docs; rows are sorted here).
pub fn encode(resolution: Resolution, rows: Vec<ColdRow>) -> Result<Vec<u8>, StoreError> {
    encode_tuned(resolution, rows, Tuning::default())
}

/// How [`encode`] lays an object out. The default is what the compactor writes; the others
/// exist to measure the choice (`read-service/benches/cold_query.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Most rows in one row group.
    pub row_group_rows: usize,
    /// A bloom filter on `series_key` in every row group (sized for the object's series, 1%
    /// false positives).
    pub key_bloom_filter: bool,
    /// The row-group directory of layout 3 (without it: layout 2).
    pub directory: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            row_group_rows: ROW_GROUP_ROWS,
            key_bloom_filter: false,
            directory: true,
        }
    }
}

/// [`encode`] with another layout.
pub fn encode_tuned(
    resolution: Resolution,
    rows: Vec<ColdRow>,
    tuning: Tuning,
) -> Result<Vec<u8>, StoreError> {
    encode_with(resolution, rows, tuning, None)
}

/// [`encode_tuned`] with, if given, other writer properties (tests: objects of layout 1).
pub(crate) fn encode_with(
    resolution: Resolution,
    mut rows: Vec<ColdRow>,
    tuning: Tuning,
    props: Option<WriterProperties>,
) -> Result<Vec<u8>, StoreError> {
    // Sort by the parsed key (cheap comparisons), then order the series by their key strings.
    rows.sort_by(|a, b| (&a.series, a.window_start).cmp(&(&b.series, b.window_start)));
    let mut series: Vec<(SeriesText, std::ops::Range<usize>)> = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || rows[i].series != rows[start].series {
            series.push((SeriesText::new(&rows[start].series), start..i));
            start = i;
        }
    }
    series.sort_by(|a, b| a.0.key.data().cmp(b.0.key.data()));
    let order: Vec<(usize, &ColdRow)> = series
        .iter()
        .enumerate()
        .flat_map(|(s, (_, range))| rows[range.clone()].iter().map(move |r| (s, r)))
        .collect();

    let schema = Arc::new(parse_message_type(SCHEMA).map_err(corrupt)?);
    let tag_keys = tag_keys_text(series.iter().map(|(_, r)| &rows[r.start].series));
    let directory = tuning.directory && props.is_none();
    let props = Arc::new(props.unwrap_or_else(|| {
        let bloom = tuning.key_bloom_filter.then_some(series.len() as u64);
        let layout = if directory { LAYOUT } else { 2 };
        writer_properties(layout, tag_keys.clone(), bloom)
    }));
    let resolution = ByteArray::from(resolution.as_str());
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props).map_err(corrupt)?;
    let mut bounds = Vec::new();
    for group in row_groups(&order, tuning.row_group_rows.max(1)) {
        write_row_group(&mut w, group, &series, &resolution)?;
        if let (Some((first, _)), Some((last, _))) = (group.first(), group.last()) {
            let key = |s: usize| series[s].0.key.data().to_vec();
            bounds.push((key(*first), key(*last)));
        }
    }
    let meta = w.close().map_err(corrupt)?;
    if !directory {
        return Ok(buf);
    }
    crate::cold_directory::insert(buf, &meta, &bounds, &tag_keys)
}

/// `order` cut into row groups of at least `rows` rows (but the last), each ending where a series
/// does: one series' rows are in one row group.
fn row_groups<'a>(
    order: &'a [(usize, &ColdRow)],
    rows: usize,
) -> impl Iterator<Item = &'a [(usize, &'a ColdRow)]> {
    let mut rest = order;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rows.min(rest.len());
        while end < rest.len() && rest[end].0 == rest[end - 1].0 {
            end += 1;
        }
        let (group, tail) = rest.split_at(end);
        rest = tail;
        Some(group)
    })
}

fn write_row_group(
    w: &mut SerializedFileWriter<&mut Vec<u8>>,
    rows: &[(usize, &ColdRow)],
    series: &[(SeriesText, std::ops::Range<usize>)],
    resolution: &ByteArray,
) -> Result<(), StoreError> {
    let mut rg = w.next_row_group().map_err(corrupt)?;
    let text = |f: &dyn Fn(&SeriesText) -> &ByteArray| -> Vec<ByteArray> {
        rows.iter().map(|(s, _)| f(&series[*s].0).clone()).collect()
    };
    let mut type_text: Vec<(&str, ByteArray)> = Vec::new();
    let types: Vec<ByteArray> = rows
        .iter()
        .map(|(_, r)| {
            let t = r.cell.agg.metric_type().as_str();
            match type_text.iter().find(|(n, _)| *n == t) {
                Some((_, b)) => b.clone(),
                None => {
                    type_text.push((t, ByteArray::from(t)));
                    ByteArray::from(t)
                }
            }
        })
        .collect();
    let stats: Vec<[Option<f64>; 7]> = rows.iter().map(|(_, r)| plain(&r.cell.agg)).collect();
    // Each series' rows, written by one call each into the columns thermo reads: a page is closed
    // only between calls, once it holds its row count, so a series that fits in a page is never
    // split across two (a one-series read decodes one page of each column, not two).
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (s, _)) in rows.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if rows[r.start].0 == *s => r.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    fn by_series<T: parquet::data_type::DataType>(
        col: &mut parquet::file::writer::SerializedColumnWriter<'_>,
        values: &[T::T],
        runs: &[std::ops::Range<usize>],
    ) -> parquet::errors::Result<usize> {
        let w = col.typed::<T>();
        let mut written = 0;
        for r in runs {
            written += w.write_batch(&values[r.clone()], None, None)?;
        }
        Ok(written)
    }
    let longs =
        |f: &dyn Fn(&ColdRow) -> i64| -> Vec<i64> { rows.iter().map(|(_, r)| f(r)).collect() };
    let mut col_idx = 0usize;
    while let Some(mut col) = rg.next_column().map_err(corrupt)? {
        let res = match col_idx {
            0 => col
                .typed::<ByteArrayType>()
                .write_batch(&text(&|t| &t.tenant), None, None),
            1 => col
                .typed::<ByteArrayType>()
                .write_batch(&text(&|t| &t.metric), None, None),
            2 => col
                .typed::<ByteArrayType>()
                .write_batch(&text(&|t| &t.tags), None, None),
            COL_SERIES_KEY => by_series::<ByteArrayType>(&mut col, &text(&|t| &t.key), &runs),
            COL_WINDOW_START => {
                by_series::<Int64Type>(&mut col, &longs(&|r| r.window_start), &runs)
            }
            5 => col.typed::<ByteArrayType>().write_batch(
                &vec![resolution.clone(); rows.len()],
                None,
                None,
            ),
            6 => col.typed::<ByteArrayType>().write_batch(&types, None, None),
            7 => col.typed::<Int64Type>().write_batch(
                &longs(&|r| r.cell.agg.count() as i64),
                None,
                None,
            ),
            8..=14 => {
                let i = col_idx - 8;
                let defs: Vec<i16> = stats.iter().map(|s| i16::from(s[i].is_some())).collect();
                let vals: Vec<f64> = stats.iter().filter_map(|s| s[i]).collect();
                col.typed::<DoubleType>()
                    .write_batch(&vals, Some(&defs), None)
            }
            _ => {
                let v: Vec<ByteArray> = rows
                    .iter()
                    .map(|(_, r)| ByteArray::from(r.cell.encode()))
                    .collect();
                by_series::<ByteArrayType>(&mut col, &v, &runs)
            }
        };
        res.map_err(corrupt)?;
        col.close().map_err(corrupt)?;
        col_idx += 1;
    }
    rg.close().map_err(corrupt)?;
    Ok(())
}

/// Decodes every row of a cold object (only `series_key`, `window_start` and `state` are read).
pub fn decode(bytes: Vec<u8>) -> Result<Vec<ColdRow>, StoreError> {
    crate::cold_select::decode_all(bytes::Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thermo_core::aggregate::{Counter, Gauge, Hist};

    #[test]
    fn rows_round_trip_through_parquet() {
        let k = |n: &str| MetricKey::new("acme", n, vec![("host".into(), "a".into())]).unwrap();
        let mut h = Hist::new();
        for v in 1..=100 {
            h.record(v as f64, 1);
        }
        let rows = vec![
            ColdRow {
                series: k("req"),
                window_start: 120,
                cell: HotCell {
                    contributors: vec![(1, 2)],
                    agg: Aggregate::Counter(Counter {
                        sum: 5.0,
                        samples: 2,
                    }),
                },
            },
            ColdRow {
                series: k("lat"),
                window_start: 60,
                cell: HotCell {
                    contributors: vec![],
                    agg: Aggregate::Histogram(h),
                },
            },
            ColdRow {
                series: k("mem"),
                window_start: 60,
                cell: HotCell {
                    contributors: vec![(3, 4), (5, 6)],
                    agg: Aggregate::Gauge(Gauge::new(7.5, 99)),
                },
            },
        ];
        let bytes = encode(Resolution::OneMinute, rows.clone()).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let mut back = decode(bytes).unwrap();
        back.sort_by_key(|r| r.series.name().to_string());
        let mut want = rows;
        want.sort_by_key(|r| r.series.name().to_string());
        assert_eq!(back, want);
        assert!(decode(b"not parquet".to_vec()).is_err());
    }
}
