//! Reading the rows of selected series from a cold object without decoding the others.
//!
//! The steps, each a pure function over bytes the caller fetched (so the read service decides
//! what to fetch, cache and run on a blocking thread):
//!
//! 1. [`Footer::parse`] from the object's tail ([`TAIL_GUESS`] bytes first, [`Tail::Need`] says
//!    how many when the footer is longer): in layout 3 only the row-group directory
//!    ([`crate::cold_directory`]), else the whole Parquet footer;
//! 2. [`Footer::key_range`]: the `series_key` range that holds every series the selector can
//!    match: the metric's (`tenant/name{` up to `tenant/name|`), narrowed to a key prefix when the
//!    equality filters give the first tag keys of the metric (`thermo.tag_keys`);
//! 3. [`Footer::row_groups`]: the row groups whose `series_key` min/max meet the range;
//!    [`Footer::group`] their metadata (in layout 3 decoded from the bytes of
//!    [`Footer::group_range`], the row group's own footer), [`RowGroup::index_ranges`] the bytes
//!    of their page indexes, decoded by [`RowGroupIndex::decode`];
//! 4. [`RowGroupIndex::key_fetch`]: the `series_key` pages whose min/max meet the range;
//!    [`select_keys`] decodes them and keeps the runs of rows of the series that match;
//! 5. [`RowGroupIndex::data_fetch`] and [`read_rows`]: the `window_start` and `state` pages of those
//!    runs only.
//!
//! Every bound used is a true min/max of the values, so the result does not depend on the layout:
//! an object of layout 1 (one row group, large pages, a dictionary) reads the same rows, only with
//! more decoded. A column chunk without an offset index is read whole.
//!
//! Counting: `keys_decoded` is the rows of the `series_key` pages decoded, `rows_decoded` the rows
//! of the `state` pages decoded (the same pages as `window_start`'s).

use crate::cold_directory::{self, Directory, Found};
use crate::cold_format::{
    corrupt, schema_descr, ColdRow, COL_SERIES_KEY, COL_STATE, COL_WINDOW_START, META_TAG_KEYS,
};
use crate::StoreError;
use bytes::Bytes;
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{ByteArrayType, DataType, Int64Type};
use parquet::file::metadata::{
    ColumnChunkMetaData, FooterTail, ParquetMetaData, ParquetMetaDataOptions,
    ParquetMetaDataReader, ParquetStatisticsPolicy,
};
use parquet::file::page_index::column_index::{ByteArrayColumnIndex, ColumnIndexMetaData};
use parquet::file::page_index::index_reader::{decode_column_index, decode_offset_index};
use parquet::file::page_index::offset_index::PageLocation;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use thermo_core::codec::HotCell;
use thermo_core::key::MetricKey;

/// Bytes of an object's tail fetched first from S3 ([`crate::cold::ColdStore::tail_guess`]). An
/// object up to this size arrives whole in that one request, and every later range is served from
/// it: on S3 a request costs tens of milliseconds whatever its size up to about a megabyte, so a
/// few ranged GETs of a mid-size object would cost more than the whole. A larger object's tail
/// holds its footer and the offset indexes of its last row groups, which the same read uses.
pub const TAIL_GUESS: u64 = 1 << 20;
/// Ranges closer than this are fetched as one.
pub const COALESCE_GAP: u64 = 16 << 10;

const FOOTER_SIZE: usize = 8;

/// What a tail held.
pub enum Tail {
    Footer(Box<Footer>),
    /// The footer is longer: fetch this many bytes of the tail.
    Need(u64),
}

/// An object's parsed footer.
#[derive(Debug)]
pub struct Footer {
    groups: Groups,
    size: u64,
    footer_len: u64,
    /// Metric name → its tag keys, when all its series share them.
    tag_keys: HashMap<String, Vec<String>>,
    /// The whole object, when the tail read for the footer held all of it: every later range is
    /// served from it, with no more requests.
    whole: Option<Bytes>,
}

/// Where an object's row groups are described.
#[derive(Debug)]
enum Groups {
    /// Layouts 1 and 2: the whole Parquet footer, decoded.
    Footer(Arc<ParquetMetaData>),
    /// Layout 3: the directory; a row group's metadata is decoded from its own footer when read.
    Directory(Directory),
}

/// The metadata of one row group: in the object's decoded footer, or decoded alone (layout 3).
#[derive(Debug, Clone)]
pub struct RowGroup {
    meta: Arc<ParquetMetaData>,
    at: usize,
    /// Encoded bytes of its own footer (layout 3), 0 when it is part of the object's footer.
    own_bytes: u64,
}

impl RowGroup {
    fn column(&self, col: usize) -> &ColumnChunkMetaData {
        self.meta.row_group(self.at).column(col)
    }

    /// Its rows.
    pub fn rows(&self) -> u64 {
        self.meta.row_group(self.at).num_rows().max(0) as u64
    }

    /// The bytes of its page indexes: the column index of `series_key`, and the offset indexes
    /// of `series_key` up to `state` (written one after the other). `None` when the object has
    /// none (its column chunks are then read whole).
    pub fn index_ranges(&self) -> Option<[Range<u64>; 2]> {
        let column_index = self.column(COL_SERIES_KEY).column_index_range()?;
        let first = self.column(COL_SERIES_KEY).offset_index_range()?;
        let last = self.column(COL_STATE).offset_index_range()?;
        Some([
            column_index,
            first.start.min(last.start)..first.end.max(last.end),
        ])
    }
}

/// How footers are decoded: of the column statistics only `series_key`'s (the others are not
/// used; skipping them saves a third of the time).
fn decode_options() -> ParquetMetaDataOptions {
    ParquetMetaDataOptions::new()
        .with_column_stats_policy(ParquetStatisticsPolicy::skip_except(&[COL_SERIES_KEY]))
        .with_encoding_stats_policy(ParquetStatisticsPolicy::SkipAll)
        .with_size_stats_policy(ParquetStatisticsPolicy::SkipAll)
}

fn check_columns(meta: &ParquetMetaData) -> Result<(), StoreError> {
    if meta.file_metadata().schema_descr().num_columns() <= COL_STATE {
        return Err(corrupt("not a thermo cold object: too few columns"));
    }
    Ok(())
}

/// A half-open range `[lo, hi)` of `series_key` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: Vec<u8>,
    pub hi: Vec<u8>,
}

impl KeyRange {
    /// Every key that starts with `prefix` (which ends with one of `{`, `,`, `}`, never 0xff).
    pub fn prefix(prefix: String) -> Self {
        let lo = prefix.into_bytes();
        let mut hi = lo.clone();
        if let Some(last) = hi.last_mut() {
            *last = last.saturating_add(1);
        }
        Self { lo, hi }
    }

    /// No key.
    pub fn empty() -> Self {
        Self {
            lo: Vec::new(),
            hi: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lo >= self.hi
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.lo.as_slice() <= key && key < self.hi.as_slice()
    }

    /// Whether a page or chunk with these bounds (either unknown: unbounded) may hold a key of the
    /// range.
    pub fn meets(&self, min: Option<&[u8]>, max: Option<&[u8]>) -> bool {
        !self.is_empty()
            && max.is_none_or(|max| max >= self.lo.as_slice())
            && min.is_none_or(|min| min < self.hi.as_slice())
    }
}

impl Footer {
    /// The length of the footer whose last bytes `tail` holds (`None`: too short to tell).
    pub fn len_in(tail: &[u8]) -> Option<u64> {
        let end = tail.len().checked_sub(FOOTER_SIZE)?;
        let len: [u8; 4] = tail.get(end..end + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(len) as u64 + FOOTER_SIZE as u64)
    }

    /// Parses the footer from `tail`, the last bytes of an object of `size` bytes. When `tail`
    /// is the whole object it is kept (by reference, not copied) to serve every later range.
    pub fn parse(tail: Bytes, size: u64) -> Result<Tail, StoreError> {
        if tail.len() < FOOTER_SIZE {
            return Err(corrupt(format!(
                "{size} bytes: shorter than a Parquet footer"
            )));
        }
        let end: &[u8; FOOTER_SIZE] = tail[tail.len() - FOOTER_SIZE..]
            .try_into()
            .map_err(corrupt)?;
        let ft = FooterTail::try_new(end).map_err(corrupt)?;
        let footer_len = ft.metadata_length() as u64 + FOOTER_SIZE as u64;
        if footer_len > size {
            return Err(corrupt(format!(
                "footer of {footer_len} bytes in an object of {size}"
            )));
        }
        if footer_len > tail.len() as u64 {
            // With room for a directory (about a sixteenth of the footer), so that one more read
            // holds both.
            return Ok(Tail::Need((footer_len + footer_len / 8 + 4096).min(size)));
        }
        let at = tail.len() - footer_len as usize;
        let (groups, tag_keys) = match cold_directory::find(&tail[..at], size - footer_len) {
            Found::Need(n) => return Ok(Tail::Need(footer_len + n)),
            Found::Directory(dir) => {
                let tag_keys = parse_tag_keys(&dir.tag_keys);
                (Groups::Directory(dir), tag_keys)
            }
            Found::Absent => {
                let meta = ParquetMetaDataReader::decode_metadata_with_options(
                    &tail[at..tail.len() - FOOTER_SIZE],
                    Some(&decode_options()),
                )
                .map_err(corrupt)?;
                check_columns(&meta)?;
                let tag_keys = meta
                    .file_metadata()
                    .key_value_metadata()
                    .and_then(|kv| kv.iter().find(|kv| kv.key == META_TAG_KEYS))
                    .and_then(|kv| kv.value.as_deref())
                    .map(parse_tag_keys)
                    .unwrap_or_default();
                (Groups::Footer(Arc::new(meta)), tag_keys)
            }
        };
        let whole = (tail.len() as u64 == size).then_some(tail);
        Ok(Tail::Footer(Box::new(Self {
            groups,
            size,
            footer_len,
            tag_keys,
            whole,
        })))
    }

    /// The whole object, when the tail read for the footer held all of it.
    pub fn whole(&self) -> Option<&Bytes> {
        self.whole.as_ref()
    }

    /// The object's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Memory held, roughly: a decoded footer is about 4 times its encoded size.
    pub fn mem_bytes(&self) -> u64 {
        let groups = match &self.groups {
            Groups::Footer(_) => self.footer_len * 4,
            Groups::Directory(dir) => dir.mem_bytes(),
        };
        groups + self.whole.as_ref().map_or(0, |w| w.len() as u64)
    }

    /// Rows in the object.
    pub fn rows(&self) -> u64 {
        match &self.groups {
            Groups::Footer(meta) => meta.file_metadata().num_rows().max(0) as u64,
            Groups::Directory(dir) => dir.entries.iter().map(|e| e.rows).sum(),
        }
    }

    /// Row groups in the object.
    pub fn num_row_groups(&self) -> usize {
        match &self.groups {
            Groups::Footer(meta) => meta.num_row_groups(),
            Groups::Directory(dir) => dir.entries.len(),
        }
    }

    /// The range of keys that holds every series of `metric` that has all tags `filters`.
    pub fn key_range(&self, tenant: &str, metric: &str, filters: &[(String, String)]) -> KeyRange {
        let mut want: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in filters {
            if want.insert(k, v).is_some_and(|old| old != v) {
                return KeyRange::empty(); // two values for one tag: nothing matches
            }
        }
        let mut prefix = format!("{tenant}/{metric}{{");
        let Some(keys) = self.tag_keys.get(metric) else {
            return KeyRange::prefix(prefix);
        };
        if want.keys().any(|k| !keys.iter().any(|have| have == k)) {
            return KeyRange::empty(); // a filter on a tag no series of the metric has
        }
        for (i, k) in keys.iter().enumerate() {
            let Some(v) = want.get(k.as_str()) else {
                break;
            };
            prefix.push_str(&format!("{k}={v}"));
            prefix.push(if i + 1 == keys.len() { '}' } else { ',' });
        }
        if keys.is_empty() {
            prefix.push('}');
        }
        KeyRange::prefix(prefix)
    }

    /// The row groups that may hold keys of `range`.
    pub fn row_groups(&self, range: &KeyRange) -> Vec<usize> {
        match &self.groups {
            Groups::Footer(meta) => (0..meta.num_row_groups())
                .filter(|&rg| {
                    let stats = meta.row_group(rg).column(COL_SERIES_KEY).statistics();
                    range.meets(
                        stats.and_then(|s| s.min_bytes_opt()),
                        stats.and_then(|s| s.max_bytes_opt()),
                    )
                })
                .collect(),
            Groups::Directory(dir) => (0..dir.entries.len())
                .filter(|&rg| {
                    let e = &dir.entries[rg];
                    range.meets(Some(&e.first), Some(&e.last))
                })
                .collect(),
        }
    }

    /// The bytes to fetch for [`Self::group`]: row group `rg`'s own footer (layout 3), or `None`
    /// when the object's footer, already decoded, describes it.
    pub fn group_range(&self, rg: usize) -> Option<Range<u64>> {
        match &self.groups {
            Groups::Footer(_) => None,
            Groups::Directory(dir) => dir.entries.get(rg).map(|e| e.footer.clone()),
        }
    }

    /// The metadata of row group `rg`; `own_footer` holds the bytes of [`Self::group_range`].
    pub fn group(&self, rg: usize, own_footer: Option<&[u8]>) -> Result<RowGroup, StoreError> {
        if rg >= self.num_row_groups() {
            return Err(corrupt(format!("no row group {rg}")));
        }
        match (&self.groups, own_footer) {
            (Groups::Footer(meta), _) => Ok(RowGroup {
                meta: meta.clone(),
                at: rg,
                own_bytes: 0,
            }),
            (Groups::Directory(_), Some(bytes)) => {
                // Every object with a directory has thermo's schema: its copy in the row group's
                // footer is skipped, not decoded (a third of the decode).
                let mut options = decode_options();
                if let Some(schema) = schema_descr() {
                    options.set_schema(schema);
                }
                let meta = cold_directory::decode_group(bytes, &options)?;
                check_columns(&meta)?;
                Ok(RowGroup {
                    meta: Arc::new(meta),
                    at: 0,
                    own_bytes: bytes.len() as u64,
                })
            }
            (Groups::Directory(_), None) => Err(corrupt(format!(
                "row group {rg}: its footer was not fetched"
            ))),
        }
    }
}

fn parse_tag_keys(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, keys)| {
            let keys = keys
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect();
            (name.to_string(), keys)
        })
        .collect()
}

/// The pages of one column chunk of a row group.
#[derive(Debug, Clone)]
struct ColumnPages {
    /// The chunk's bytes in the object.
    chunk: Range<u64>,
    /// Its data pages, or `None` without an offset index (the chunk is read whole).
    pages: Option<Vec<PageLocation>>,
}

impl ColumnPages {
    fn new(meta: &ColumnChunkMetaData, pages: Option<Vec<PageLocation>>) -> Self {
        let (start, len) = meta.byte_range();
        Self {
            chunk: start..start + len,
            pages,
        }
    }

    /// The rows of page `i` of a row group of `rows` rows.
    fn page_rows(pages: &[PageLocation], i: usize, rows: u64) -> Range<u64> {
        let first = pages[i].first_row_index.max(0) as u64;
        let end = pages
            .get(i + 1)
            .map_or(rows, |p| p.first_row_index.max(0) as u64);
        first..end
    }

    /// The pages that hold a row of `runs` (sorted, disjoint), as page numbers.
    fn pages_of(&self, runs: &[Range<u64>], rows: u64) -> Vec<usize> {
        let Some(pages) = &self.pages else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut run = runs.iter().peekable();
        for i in 0..pages.len() {
            let span = Self::page_rows(pages, i, rows);
            while run.peek().is_some_and(|r| r.end <= span.start) {
                run.next();
            }
            if run.peek().is_some_and(|r| r.start < span.end) {
                out.push(i);
            }
        }
        out
    }

    /// The bytes to fetch to read `pages`: the dictionary page, if any, and those pages; the
    /// whole chunk without an offset index.
    fn fetch(&self, pages: &[usize]) -> Vec<Range<u64>> {
        let Some(all) = &self.pages else {
            return vec![self.chunk.clone()];
        };
        let mut out = Vec::new();
        if let Some(first) = all.first() {
            let first = first.offset.max(0) as u64;
            if first > self.chunk.start {
                out.push(self.chunk.start..first);
            }
        }
        for &i in pages {
            let p = &all[i];
            let start = p.offset.max(0) as u64;
            out.push(start..start + p.compressed_page_size.max(0) as u64);
        }
        out
    }

    /// Rows of `pages` (all the chunk's rows without an offset index).
    fn rows_in(&self, pages: &[usize], rows: u64) -> u64 {
        match &self.pages {
            Some(all) => pages
                .iter()
                .map(|&i| {
                    let r = Self::page_rows(all, i, rows);
                    r.end - r.start
                })
                .sum(),
            None => rows,
        }
    }
}

/// `series_key`'s column index, and its encoded size.
#[derive(Debug, Clone)]
struct KeyBounds {
    index: ByteArrayColumnIndex,
    bytes: u64,
}

/// The page index of one row group: `series_key`'s pages with their bounds, and the pages of
/// `window_start` and `state`.
#[derive(Debug, Clone)]
pub struct RowGroupIndex {
    group: RowGroup,
    rows: u64,
    key: ColumnPages,
    /// `series_key`'s column index: each page's min and max (`None` without one).
    key_bounds: Option<KeyBounds>,
    window: ColumnPages,
    state: ColumnPages,
}

impl RowGroupIndex {
    /// Decodes the page indexes fetched from [`RowGroup::index_ranges`] (`None`: there are none).
    pub fn decode(
        group: RowGroup,
        indexes: Option<(&[u8], &[u8], u64)>,
    ) -> Result<Self, StoreError> {
        let rows = group.rows();
        let chunk = |col| group.column(col);
        let Some((column_index, offsets, offsets_at)) = indexes else {
            return Ok(Self {
                group: group.clone(),
                rows,
                key: ColumnPages::new(chunk(COL_SERIES_KEY), None),
                key_bounds: None,
                window: ColumnPages::new(chunk(COL_WINDOW_START), None),
                state: ColumnPages::new(chunk(COL_STATE), None),
            });
        };
        let pages = |col: usize| -> Result<Vec<PageLocation>, StoreError> {
            let range = chunk(col)
                .offset_index_range()
                .ok_or_else(|| corrupt(format!("no offset index of column {col}")))?;
            let from = range.start.checked_sub(offsets_at);
            let bytes = from
                .and_then(|f| offsets.get(f as usize..(f + range.end - range.start) as usize))
                .ok_or_else(|| corrupt("offset index out of range"))?;
            Ok(decode_offset_index(bytes)
                .map_err(corrupt)?
                .page_locations()
                .clone())
        };
        let key_pages = pages(COL_SERIES_KEY)?;
        let index = decode_column_index(column_index, chunk(COL_SERIES_KEY).column_type())
            .map_err(corrupt)?;
        let key_bounds = match index {
            ColumnIndexMetaData::BYTE_ARRAY(index)
                if index.num_pages() == key_pages.len() as u64 =>
            {
                Some(KeyBounds {
                    index,
                    bytes: column_index.len() as u64,
                })
            }
            _ => None,
        };
        Ok(Self {
            rows,
            key: ColumnPages::new(chunk(COL_SERIES_KEY), Some(key_pages)),
            key_bounds,
            window: ColumnPages::new(chunk(COL_WINDOW_START), Some(pages(COL_WINDOW_START)?)),
            state: ColumnPages::new(chunk(COL_STATE), Some(pages(COL_STATE)?)),
            group: group.clone(),
        })
    }

    /// Memory held, roughly.
    pub fn mem_bytes(&self) -> u64 {
        let pages = |c: &ColumnPages| c.pages.as_ref().map_or(0, Vec::len) as u64 * 24;
        // Decoded, a column index holds its encoded bytes and an offset per value.
        let bounds = self
            .key_bounds
            .as_ref()
            .map_or(0, |b| b.bytes + b.index.num_pages() * 32);
        let group = self.group.own_bytes * 4;
        128 + pages(&self.key) + pages(&self.window) + pages(&self.state) + bounds + group
    }

    /// The `series_key` pages that may hold keys of `range`, and the bytes to fetch to read them.
    pub fn key_fetch(&self, range: &KeyRange) -> KeyPages {
        let pages: Vec<usize> = match &self.key.pages {
            Some(p) => (0..p.len())
                .filter(|&i| match &self.key_bounds {
                    Some(b) if b.index.is_null_page(i) => false,
                    Some(b) => range.meets(b.index.min_value(i), b.index.max_value(i)),
                    None => range.meets(None, None),
                })
                .collect(),
            None => Vec::new(),
        };
        let whole = self.key.pages.is_none() && !range.is_empty();
        let runs = match &self.key.pages {
            Some(all) => merge_runs(
                pages
                    .iter()
                    .map(|&i| ColumnPages::page_rows(all, i, self.rows)),
            ),
            None if whole => std::iter::once(0..self.rows).collect(),
            None => Vec::new(),
        };
        let fetch = if runs.is_empty() {
            Vec::new()
        } else {
            self.key.fetch(&pages)
        };
        KeyPages {
            keys_decoded: runs.iter().map(|r| r.end - r.start).sum(),
            runs,
            fetch,
        }
    }

    /// The bytes to fetch to read the `window_start` and `state` values of `selected`.
    pub fn data_fetch(&self, selected: &Selected) -> Vec<Range<u64>> {
        let runs: Vec<Range<u64>> = selected.runs.iter().map(|(r, _)| r.clone()).collect();
        self.data_fetch_rows(&runs)
    }

    /// The bytes to fetch to read the `window_start` and `state` values of the rows `runs`
    /// (sorted, disjoint).
    pub fn data_fetch_rows(&self, runs: &[Range<u64>]) -> Vec<Range<u64>> {
        if runs.is_empty() {
            return Vec::new();
        }
        let mut out = self.window.fetch(&self.window.pages_of(runs, self.rows));
        out.extend(self.state.fetch(&self.state.pages_of(runs, self.rows)));
        out
    }
}

/// The `series_key` pages to decode for a key range.
#[derive(Debug, Clone, Default)]
pub struct KeyPages {
    /// Their rows, as sorted disjoint runs.
    pub runs: Vec<Range<u64>>,
    /// Their bytes.
    pub fetch: Vec<Range<u64>>,
    /// Rows they hold.
    pub keys_decoded: u64,
}

/// The rows of the selected series in one row group.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    /// Sorted disjoint runs of rows, each of one series.
    pub runs: Vec<(Range<u64>, MetricKey)>,
}

/// Sorts and merges adjacent or overlapping ranges.
fn merge_runs(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Byte ranges to fetch, coalesced: ranges closer than [`COALESCE_GAP`] become one.
pub fn coalesce(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end + COALESCE_GAP => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Some byte ranges of an object, as a Parquet [`ChunkReader`]: reading outside them is an error
/// (a bug in what was fetched), never a silent zero.
#[derive(Debug, Clone)]
pub struct Sparse {
    size: u64,
    parts: BTreeMap<u64, Bytes>,
}

impl Sparse {
    pub fn new(size: u64) -> Self {
        Self {
            size,
            parts: BTreeMap::new(),
        }
    }

    /// Adds the bytes of the object from offset `at`.
    pub fn insert(&mut self, at: u64, bytes: Bytes) {
        self.parts.insert(at, bytes);
    }

    /// Whether every byte of `range` is held.
    pub fn covers(&self, range: &Range<u64>) -> bool {
        self.parts
            .range(..=range.start)
            .next_back()
            .is_some_and(|(at, b)| range.end <= at + b.len() as u64)
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.parts.values().map(|b| b.len() as u64).sum()
    }

    /// The bytes of `range`, which must have been fetched.
    pub fn bytes(&self, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.slice(range.start, range.end.saturating_sub(range.start))
            .map_err(corrupt)
    }

    fn slice(&self, start: u64, len: u64) -> parquet::errors::Result<Bytes> {
        let found = self.parts.range(..=start).next_back();
        if let Some((at, b)) = found {
            let rel = start - at;
            if rel + len <= b.len() as u64 {
                return Ok(b.slice(rel as usize..(rel + len) as usize));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "bytes {start}..{} of the object were not fetched",
            start + len
        )))
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let found = self.parts.range(..=start).next_back();
        match found {
            Some((at, b)) if start - at <= b.len() as u64 => {
                Ok(b.slice((start - at) as usize..).reader())
            }
            _ => Err(parquet::errors::ParquetError::General(format!(
                "byte {start} of the object was not fetched"
            ))),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length as u64)
    }
}

/// Calls `each(row, value)` for every row of `runs` (sorted, disjoint) of one column chunk.
fn read_column<T: DataType, R: ChunkReader + 'static>(
    reader: &Arc<R>,
    meta: &ColumnChunkMetaData,
    rows: u64,
    pages: Option<Vec<PageLocation>>,
    runs: &[Range<u64>],
    mut each: impl FnMut(u64, T::T),
) -> Result<(), StoreError>
where
    T::T: Clone,
{
    let page_reader =
        SerializedPageReader::new(reader.clone(), meta, rows as usize, pages).map_err(corrupt)?;
    let mut col = ColumnReaderImpl::<T>::new(meta.column_descr_ptr(), Box::new(page_reader));
    let mut pos = 0u64;
    let mut values = Vec::new();
    for run in runs {
        if run.start > pos {
            let want = (run.start - pos) as usize;
            let skipped = col.skip_records(want).map_err(corrupt)?;
            if skipped != want {
                return Err(corrupt(format!(
                    "column chunk ends before row {}",
                    run.start
                )));
            }
        }
        let mut row = run.start;
        while row < run.end {
            values.clear();
            let want = (run.end - row).min(8192) as usize;
            let (got, _, _) = col
                .read_records(want, None, None, &mut values)
                .map_err(corrupt)?;
            if got == 0 || values.len() != got {
                return Err(corrupt(format!("column chunk ends before row {row}")));
            }
            for v in values.drain(..) {
                each(row, v);
                row += 1;
            }
        }
        pos = run.end;
    }
    Ok(())
}

/// Decodes the `series_key` pages of `pages` and keeps the runs of rows whose series is in `range`
/// and satisfies `matches`.
pub fn select_keys<R: ChunkReader + 'static>(
    index: &RowGroupIndex,
    reader: &Arc<R>,
    pages: &KeyPages,
    range: &KeyRange,
    matches: impl Fn(&MetricKey) -> bool,
) -> Result<Selected, StoreError> {
    let mut out = Selected::default();
    let mut current: Option<(Vec<u8>, bool)> = None;
    let mut failed: Option<StoreError> = None;
    read_column::<ByteArrayType, R>(
        reader,
        index.group.column(COL_SERIES_KEY),
        index.rows,
        index.key.pages.clone(),
        &pages.runs,
        |row, key| {
            let bytes = key.data();
            let same = current.as_ref().is_some_and(|(k, _)| k.as_slice() == bytes);
            if !same {
                let wanted = range.contains(bytes)
                    && match parse_key(bytes) {
                        Ok(k) => {
                            let yes = matches(&k);
                            if yes {
                                out.runs.push((row..row, k));
                            }
                            yes
                        }
                        Err(e) => {
                            failed.get_or_insert(e);
                            false
                        }
                    };
                current = Some((bytes.to_vec(), wanted));
            }
            if let Some((_, true)) = current {
                if let Some((r, _)) = out.runs.last_mut() {
                    if r.end == row {
                        r.end = row + 1;
                    } else {
                        // The same series again after a gap (pages are read in runs).
                        let k = out.runs.last().map(|(_, k)| k.clone());
                        if let Some(k) = k {
                            out.runs.push((row..row + 1, k));
                        }
                    }
                }
            }
        },
    )?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn parse_key(bytes: &[u8]) -> Result<MetricKey, StoreError> {
    let s = std::str::from_utf8(bytes).map_err(corrupt)?;
    MetricKey::parse(s).map_err(corrupt)
}

/// Reads the `window_start` and `state` of `selected`'s rows; with the rows of the `state` pages
/// decoded.
pub fn read_rows<R: ChunkReader + 'static>(
    index: &RowGroupIndex,
    reader: &Arc<R>,
    selected: &Selected,
) -> Result<(Vec<ColdRow>, u64), StoreError> {
    let runs: Vec<Range<u64>> = selected.runs.iter().map(|(r, _)| r.clone()).collect();
    let total: usize = runs.iter().map(|r| (r.end - r.start) as usize).sum();
    let mut windows = Vec::with_capacity(total);
    read_column::<Int64Type, R>(
        reader,
        index.group.column(COL_WINDOW_START),
        index.rows,
        index.window.pages.clone(),
        &runs,
        |_, w| windows.push(w),
    )?;
    let mut out = Vec::with_capacity(total);
    let mut failed: Option<StoreError> = None;
    let mut run = 0usize;
    read_column::<ByteArrayType, R>(
        reader,
        index.group.column(COL_STATE),
        index.rows,
        index.state.pages.clone(),
        &runs,
        |row, state| {
            while selected.runs.get(run).is_some_and(|(r, _)| r.end <= row) {
                run += 1;
            }
            let (Some((_, series)), Some(&window_start)) =
                (selected.runs.get(run), windows.get(out.len()))
            else {
                failed.get_or_insert(corrupt("state and window columns disagree"));
                return;
            };
            match HotCell::decode(state.data()) {
                Ok(cell) => out.push(ColdRow {
                    series: series.clone(),
                    window_start,
                    cell,
                }),
                Err(e) => {
                    failed.get_or_insert(corrupt(e));
                }
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    let decoded = index
        .state
        .rows_in(&index.state.pages_of(&runs, index.rows), index.rows);
    Ok((out, decoded))
}

/// Every row of a whole object, read column by column (the compactor's roll-up input).
pub fn decode_all(bytes: Bytes) -> Result<Vec<ColdRow>, StoreError> {
    let size = bytes.len() as u64;
    let footer = match Footer::parse(bytes.clone(), size)? {
        Tail::Footer(f) => f,
        Tail::Need(n) => {
            return Err(corrupt(format!(
                "footer of {n} bytes in an object of {size}"
            )))
        }
    };
    let reader = Arc::new(bytes.clone());
    let mut out = Vec::with_capacity(footer.rows() as usize);
    for rg in 0..footer.num_row_groups() {
        let own = match footer.group_range(rg) {
            Some(r) => Some(bytes.get(r.start as usize..r.end as usize).ok_or_else(|| {
                corrupt(format!(
                    "row group {rg}: its footer lies past the object's end"
                ))
            })?),
            None => None,
        };
        let index = RowGroupIndex::decode(footer.group(rg, own)?, None)?;
        let all = KeyRange {
            lo: Vec::new(),
            hi: vec![0xff],
        };
        let pages = KeyPages {
            runs: std::iter::once(0..index.rows).collect(),
            fetch: Vec::new(),
            keys_decoded: index.rows,
        };
        let selected = select_keys(&index, &reader, &pages, &all, |_| true)?;
        out.extend(read_rows(&index, &reader, &selected)?.0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cold_format::{encode_tuned, encode_with, Tuning, KEY_PAGE_ROWS, PAGE_ROWS};
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    use thermo_core::aggregate::{Aggregate, Counter};
    use thermo_core::window::Resolution;

    const METRICS: [&str; 3] = ["re", "req", "req_total"];

    fn key(metric: &str, host: usize) -> MetricKey {
        let tags = vec![
            ("dc".to_string(), format!("d{}", host % 3)),
            ("host".to_string(), format!("h{host}")),
        ];
        MetricKey::new("acme", metric, tags).unwrap()
    }

    /// Three metrics whose names prefix each other, 300 series each, 10 minutes; every value
    /// different.
    fn rows() -> Vec<ColdRow> {
        let mut out = Vec::new();
        for (mi, metric) in METRICS.iter().enumerate() {
            for host in 0..300 {
                for m in 0..10 {
                    out.push(ColdRow {
                        series: key(metric, host),
                        window_start: 3600 + 60 * m,
                        cell: HotCell {
                            contributors: vec![(host as u64, m as u64)],
                            agg: Aggregate::Counter(Counter {
                                sum: (mi * 1_000_000 + host * 100 + m as usize) as f64,
                                samples: 1,
                            }),
                        },
                    });
                }
            }
        }
        out
    }

    fn sorted(mut rows: Vec<ColdRow>) -> Vec<ColdRow> {
        rows.sort_by_key(|r| (r.series.encode(), r.window_start));
        rows
    }

    /// The read service's steps (footer, page index, key pages, data pages) over an object in
    /// memory: the rows of `metric` with `filters`, the keys and the rows decoded.
    fn select(bytes: &[u8], metric: &str, filters: &[(&str, &str)]) -> (Vec<ColdRow>, u64, u64) {
        let whole = Bytes::copy_from_slice(bytes);
        let Tail::Footer(footer) = Footer::parse(whole.clone(), bytes.len() as u64).unwrap() else {
            panic!("the whole object holds its footer");
        };
        let reader = Arc::new(whole);
        let filters: Vec<(String, String)> = filters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let range = footer.key_range("acme", metric, &filters);
        let (mut out, mut keys, mut decoded) = (Vec::new(), 0, 0);
        let at = |r: &Range<u64>| &bytes[r.start as usize..r.end as usize];
        for rg in footer.row_groups(&range) {
            let group = footer
                .group(rg, footer.group_range(rg).as_ref().map(at))
                .unwrap();
            let index = match group.index_ranges() {
                None => RowGroupIndex::decode(group, None).unwrap(),
                Some([ci, oi]) => {
                    RowGroupIndex::decode(group, Some((at(&ci), at(&oi), oi.start))).unwrap()
                }
            };
            let pages = index.key_fetch(&range);
            if pages.runs.is_empty() {
                continue;
            }
            keys += pages.keys_decoded;
            let selected = select_keys(&index, &reader, &pages, &range, |k| {
                k.name() == metric && filters.iter().all(|(t, v)| k.tag(t) == Some(v.as_str()))
            })
            .unwrap();
            let (part, n) = read_rows(&index, &reader, &selected).unwrap();
            out.extend(part);
            decoded += n;
        }
        (sorted(out), keys, decoded)
    }

    fn model(all: &[ColdRow], metric: &str, filters: &[(&str, &str)]) -> Vec<ColdRow> {
        sorted(
            all.iter()
                .filter(|r| {
                    r.series.name() == metric
                        && filters.iter().all(|(t, v)| r.series.tag(t) == Some(*v))
                })
                .cloned()
                .collect(),
        )
    }

    const SELECTIONS: [(&str, &[(&str, &str)]); 9] = [
        ("req", &[]),
        ("re", &[]),
        ("req_total", &[("dc", "d2")]),
        ("req", &[("dc", "d1"), ("host", "h7")]),
        ("req", &[("host", "h7")]),
        ("req", &[("dc", "d0"), ("host", "h7")]), // h7 is in d1: nothing
        ("req", &[("host", "h7"), ("host", "h8")]),
        ("req", &[("zone", "z")]),
        ("nope", &[]),
    ];

    #[test]
    fn selected_series_read_exactly_from_their_pages_in_every_layout() {
        let all = rows();
        let tuning = |key_bloom_filter, directory| Tuning {
            row_group_rows: 995, // row groups end with a series: 9 of 1,000 rows
            key_bloom_filter,
            directory,
        };
        let layout3 =
            encode_tuned(Resolution::OneMinute, all.clone(), tuning(false, true)).unwrap();
        let layout2 =
            encode_tuned(Resolution::OneMinute, all.clone(), tuning(false, false)).unwrap();
        let bloom = encode_tuned(Resolution::OneMinute, all.clone(), tuning(true, false)).unwrap();
        assert!(bloom.len() > layout2.len(), "the bloom filters are written");
        let layout1 = {
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            encode_with(
                Resolution::OneMinute,
                all.clone(),
                Tuning::default(),
                Some(props),
            )
            .unwrap()
        };
        for (name, bytes) in [
            ("layout 3", &layout3),
            ("layout 2", &layout2),
            ("layout 2 with bloom filters", &bloom),
            ("layout 1", &layout1),
        ] {
            for (metric, filters) in SELECTIONS {
                let (got, _, _) = select(bytes, metric, filters);
                assert_eq!(
                    got,
                    model(&all, metric, filters),
                    "{name}: {metric} {filters:?}"
                );
            }
            assert_eq!(
                sorted(decode_all(Bytes::copy_from_slice(bytes)).unwrap()),
                sorted(all.clone()),
                "{name}: every row"
            );
        }
        // Layout 3 has the directory: 9 row groups described without the footer; to any other
        // Parquet reader it is the same file as layout 2.
        let parsed =
            |bytes: &[u8]| match Footer::parse(Bytes::copy_from_slice(bytes), bytes.len() as u64) {
                Ok(Tail::Footer(f)) => f,
                _ => panic!("a footer"),
            };
        let (f3, f2) = (parsed(&layout3), parsed(&layout2));
        assert_eq!((f3.num_row_groups(), f3.rows()), (9, 9000));
        assert_eq!((f2.num_row_groups(), f2.rows()), (9, 9000));
        assert!((0..9).all(|rg| f3.group_range(rg).is_some() && f2.group_range(rg).is_none()));
        let plain = parquet::file::serialized_reader::SerializedFileReader::new(Bytes::from(
            layout3.clone(),
        ))
        .unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(plain.metadata().file_metadata().num_rows(), 9000);
        assert_eq!(plain.get_row_iter(None).unwrap().count(), 9000);
        let layout = plain
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        assert!(layout
            .iter()
            .any(|kv| kv.key == "thermo.layout" && kv.value.as_deref() == Some("3")));
        // Layout 3 decodes only the pages of the series: its 10 rows lie in one page of each
        // column (pages end between series), of fewer than the page's rows plus 10.
        let (got, keys, decoded) = select(&layout3, "req", &[("dc", "d1"), ("host", "h7")]);
        assert_eq!(got.len(), 10);
        assert!(keys < KEY_PAGE_ROWS as u64 + 10, "{keys} keys decoded");
        assert!(decoded < PAGE_ROWS as u64 + 10, "{decoded} rows decoded");
        // A filter on a later tag key scans the metric's keys, but decodes only the series' rows.
        let (got, keys, decoded) = select(&layout3, "req", &[("host", "h7")]);
        assert_eq!(got.len(), 10);
        assert!(
            keys <= 3000 + 2 * KEY_PAGE_ROWS as u64,
            "{keys} keys decoded"
        );
        assert!(decoded < PAGE_ROWS as u64 + 10, "{decoded} rows decoded");
        // Nothing of a metric the object does not hold is decoded.
        assert_eq!(select(&layout3, "nope", &[]).1, 0);
    }

    /// The rows of the page holding series `host` (which fits in one) in a column with pages of
    /// `limit` rows, as layout 3 cuts them: row groups end at the first series end at or past
    /// `row_group_rows`; a column receives each series' rows in calls of at most 128
    /// (`PAGE_ROWS`, the write batch) and closes its page after a call that brings it to `limit`.
    fn page_of(all: &[ColdRow], host: &str, row_group_rows: usize, limit: usize) -> u64 {
        let mut series: Vec<(String, usize, bool)> = Vec::new();
        for r in sorted(all.to_vec()) {
            let key = r.series.encode();
            match series.last_mut() {
                Some((k, n, _)) if *k == key => *n += 1,
                _ => series.push((key, 1, r.series.tag("host") == Some(host))),
            }
        }
        let (mut rg, mut page, mut ours) = (0, 0, false);
        for (_, n, is_ours) in series {
            let mut left = n;
            while left > 0 {
                let call = left.min(PAGE_ROWS);
                left -= call;
                page += call;
                ours |= is_ours;
                if page >= limit && left > 0 {
                    if ours {
                        return page as u64;
                    }
                    page = 0;
                }
            }
            rg += n;
            if rg >= row_group_rows || page >= limit {
                if ours {
                    return page as u64;
                }
                page = 0;
                if rg >= row_group_rows {
                    rg = 0;
                }
            }
        }
        page as u64
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// Any series counts, lengths and row group size: a one-series read in layout 3 returns
        /// exactly the series' rows, and a series that fits in a page is read from one page of
        /// each column.
        #[test]
        fn layout_3_reads_any_one_series_exactly(
            lengths in proptest::collection::vec(1usize..=300, 1..40),
            row_group_rows in 1usize..2_000,
            pick in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut all = Vec::new();
            for (s, &n) in lengths.iter().enumerate() {
                let series = MetricKey::new(
                    "acme",
                    METRICS[s % 3],
                    vec![("host".to_string(), format!("h{s}"))],
                )
                .unwrap();
                for m in 0..n {
                    all.push(ColdRow {
                        series: series.clone(),
                        window_start: 60 * m as i64,
                        cell: HotCell {
                            contributors: vec![(s as u64, m as u64)],
                            agg: Aggregate::Counter(Counter {
                                sum: (s * 1_000 + m) as f64,
                                samples: 1,
                            }),
                        },
                    });
                }
            }
            let tuning = Tuning {
                row_group_rows,
                ..Tuning::default()
            };
            let bytes = encode_tuned(Resolution::OneMinute, all.clone(), tuning).unwrap();
            let s = pick.index(lengths.len());
            let host = format!("h{s}");
            let filters = [("host", host.as_str())];
            let (got, keys, decoded) = select(&bytes, METRICS[s % 3], &filters);
            proptest::prop_assert_eq!(&got, &model(&all, METRICS[s % 3], &filters));
            // Rows of the page of each column that holds the series, as the writer cuts them.
            let (key_page, data_page) = (
                page_of(&all, &host, row_group_rows, KEY_PAGE_ROWS),
                page_of(&all, &host, row_group_rows, PAGE_ROWS),
            );
            if lengths[s] <= PAGE_ROWS {
                proptest::prop_assert_eq!(decoded, data_page);
                proptest::prop_assert_eq!(keys, key_page);
            }
            proptest::prop_assert_eq!(
                sorted(decode_all(Bytes::from(bytes)).unwrap()),
                sorted(all)
            );
        }
    }
}
