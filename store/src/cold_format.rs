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
//! from merged histograms. Rows are sorted by `(series_key, window_start)`; one row group.

use crate::StoreError;
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::RowAccessor;
use parquet::schema::parser::parse_message_type;
use std::sync::Arc;
use thermo_core::aggregate::Aggregate;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;
use thermo_core::window::Resolution;

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

fn corrupt(e: impl std::fmt::Display) -> StoreError {
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

/// Encodes rows (sorted here) as one Parquet file.
pub fn encode(resolution: Resolution, mut rows: Vec<ColdRow>) -> Result<Vec<u8>, StoreError> {
    rows.sort_by(|a, b| (&a.series, a.window_start).cmp(&(&b.series, b.window_start)));
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(corrupt)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props).map_err(corrupt)?;
    let mut rg = w.next_row_group().map_err(corrupt)?;
    let text = |f: &dyn Fn(&ColdRow) -> String| -> Vec<ByteArray> {
        rows.iter()
            .map(|r| ByteArray::from(f(r).into_bytes()))
            .collect()
    };
    let tags = |k: &MetricKey| {
        k.tags()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let stats: Vec<[Option<f64>; 7]> = rows.iter().map(|r| plain(&r.cell.agg)).collect();
    let mut col_idx = 0usize;
    while let Some(mut col) = rg.next_column().map_err(corrupt)? {
        let res = match col_idx {
            0 => col.typed::<ByteArrayType>().write_batch(
                &text(&|r| r.series.tenant().to_string()),
                None,
                None,
            ),
            1 => col.typed::<ByteArrayType>().write_batch(
                &text(&|r| r.series.name().to_string()),
                None,
                None,
            ),
            2 => col
                .typed::<ByteArrayType>()
                .write_batch(&text(&|r| tags(&r.series)), None, None),
            3 => {
                col.typed::<ByteArrayType>()
                    .write_batch(&text(&|r| r.series.encode()), None, None)
            }
            4 => {
                let v: Vec<i64> = rows.iter().map(|r| r.window_start).collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)
            }
            5 => col.typed::<ByteArrayType>().write_batch(
                &text(&|_| resolution.as_str().to_string()),
                None,
                None,
            ),
            6 => col.typed::<ByteArrayType>().write_batch(
                &text(&|r| r.cell.agg.metric_type().as_str().to_string()),
                None,
                None,
            ),
            7 => {
                let v: Vec<i64> = rows.iter().map(|r| r.cell.agg.count() as i64).collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)
            }
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
                    .map(|r| ByteArray::from(r.cell.encode()))
                    .collect();
                col.typed::<ByteArrayType>().write_batch(&v, None, None)
            }
        };
        res.map_err(corrupt)?;
        col.close().map_err(corrupt)?;
        col_idx += 1;
    }
    rg.close().map_err(corrupt)?;
    w.close().map_err(corrupt)?;
    Ok(buf)
}

/// Decodes the rows of a cold object (only `series_key`, `window_start`, `state` are read).
pub fn decode(bytes: Vec<u8>) -> Result<Vec<ColdRow>, StoreError> {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).map_err(corrupt)?;
    let mut out = Vec::new();
    for row in reader.get_row_iter(None).map_err(corrupt)? {
        let row = row.map_err(corrupt)?;
        let key = row.get_string(3).map_err(corrupt)?;
        let series = MetricKey::parse(key).map_err(corrupt)?;
        let window_start = row.get_long(4).map_err(corrupt)?;
        let state = row.get_bytes(15).map_err(corrupt)?;
        let cell = HotCell::decode(state.data()).map_err(corrupt)?;
        out.push(ColdRow {
            series,
            window_start,
            cell,
        });
    }
    Ok(out)
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
