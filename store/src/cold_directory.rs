//! Layout 3's row-group directory: a footer per row group, so that a reader decodes the metadata
//! of the row groups it reads and not of all of them.
//!
//! A Parquet footer lists every column chunk of every row group, and the parquet crate decodes
//! all of it on an object's first read (selective decoding is apache/arrow-rs#5855, open): about
//! 4 ns a byte, 0.2 ms for one hour of a 100,000-series tenant (47 row groups × 16 columns),
//! when one series' rows sit in one row group. Layout 3 therefore writes, between the page
//! indexes and the footer, bytes that no offset of the footer points at (so DuckDB and every other
//! Parquet reader read the object exactly as one of layout 2):
//!
//! ```text
//! column chunks | page indexes | group footer 0 … group footer n-1 | directory | trailer | footer | u32 | "PAR1"
//!
//! group footer i  a Parquet FileMetaData (thrift compact), the file's schema and row group i
//!                 only, its offsets those of the file; no path_in_schema, no key-value metadata
//! directory       u32 n, then n times:
//!                   u64 offset of group footer i, u32 its length, u64 rows of row group i,
//!                   u32 length + bytes of its first series_key, u32 length + bytes of its last
//!                 then u32 length + bytes of the tag keys text (as in `thermo.tag_keys`)
//! trailer         u32 CRC-32 of the directory, u32 directory length, "THD1"   (12 bytes)
//! ```
//!
//! Integers are little-endian. Rows are sorted by `series_key`, so a row group's first and last
//! keys are its bounds. The file's own footer is written as in layout 2 (with `thermo.layout = 3`).
//! A reader looks for the trailer just before the footer: without the magic, or with a CRC that
//! does not match, there is no directory (layouts 1 and 2) and the whole footer is decoded.

use crate::cold_format::corrupt;
use crate::StoreError;
use parquet::file::metadata::{
    FileMetaData, ParquetMetaData, ParquetMetaDataBuilder, ParquetMetaDataOptions,
    ParquetMetaDataReader, ParquetMetaDataWriter,
};
use std::ops::Range;

/// The trailer's length: CRC, directory length, magic.
pub const TRAILER_LEN: u64 = 12;
const MAGIC: &[u8; 4] = b"THD1";
/// A Parquet file's last bytes: the footer's length and "PAR1".
const PARQUET_END: usize = 8;

/// One row group in the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where its own footer lies in the object.
    pub footer: Range<u64>,
    pub rows: u64,
    /// Its first and last `series_key`.
    pub first: Vec<u8>,
    pub last: Vec<u8>,
}

/// An object's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Directory {
    pub entries: Vec<Entry>,
    pub tag_keys: String,
}

impl Directory {
    /// Bytes held, roughly.
    pub fn mem_bytes(&self) -> u64 {
        let keys: usize = self
            .entries
            .iter()
            .map(|e| e.first.len() + e.last.len() + 64)
            .sum();
        (keys + self.tag_keys.len()) as u64
    }
}

/// What the bytes before an object's footer hold.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// A directory.
    Directory(Directory),
    /// Perhaps a directory: the caller must hold this many bytes before the footer to tell.
    Need(u64),
    /// No directory.
    Absent,
}

/// Rewrites `file`, a whole Parquet file as the writer produced it, with `meta` (what the writer
/// returned), into layout 3: a footer per row group and the directory inserted before the
/// footer. `bounds` are the first and last `series_key` of each row group.
pub fn insert(
    file: Vec<u8>,
    meta: &ParquetMetaData,
    bounds: &[(Vec<u8>, Vec<u8>)],
    tag_keys: &str,
) -> Result<Vec<u8>, StoreError> {
    let footer_len = footer_len(&file).ok_or_else(|| corrupt("no Parquet footer written"))?;
    if bounds.len() != meta.num_row_groups() || footer_len > file.len() {
        return Err(corrupt("row group bounds do not match the file written"));
    }
    let at = file.len() - footer_len;
    let mut out = Vec::with_capacity(file.len() + 2048 * bounds.len());
    out.extend_from_slice(&file[..at]);
    let mut dir = Vec::new();
    put_u32(&mut dir, bounds.len());
    let fm = meta.file_metadata();
    for (rg, (first, last)) in meta.row_groups().iter().zip(bounds) {
        let one = ParquetMetaDataBuilder::new(FileMetaData::new(
            fm.version(),
            rg.num_rows(),
            None,
            None,
            fm.schema_descr_ptr(),
            None,
        ))
        .add_row_group(rg.clone())
        .build();
        let start = out.len();
        ParquetMetaDataWriter::new(&mut out, &one)
            .with_write_path_in_schema(false)
            .finish()
            .map_err(corrupt)?;
        // The writer ends a footer with its length and "PAR1": the group footer is what precedes.
        let end = (out.len().checked_sub(PARQUET_END))
            .filter(|&end| end > start)
            .ok_or_else(|| corrupt("a row group's footer was not written"))?;
        out.truncate(end);
        dir.extend_from_slice(&(start as u64).to_le_bytes());
        put_u32(&mut dir, out.len() - start);
        dir.extend_from_slice(&(rg.num_rows().max(0) as u64).to_le_bytes());
        put_bytes(&mut dir, first);
        put_bytes(&mut dir, last);
    }
    put_bytes(&mut dir, tag_keys.as_bytes());
    out.extend_from_slice(&dir);
    out.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
    put_u32(&mut out, dir.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&file[at..]);
    Ok(out)
}

/// Looks for the directory in `before`, the bytes that end where the footer starts, of an object
/// in which `in_object` bytes precede the footer.
pub fn find(before: &[u8], in_object: u64) -> Found {
    let need = TRAILER_LEN.min(in_object);
    if (before.len() as u64) < need {
        return Found::Need(need);
    }
    let Some(trailer) = before.len().checked_sub(TRAILER_LEN as usize) else {
        return Found::Absent;
    };
    let t = &before[trailer..];
    if &t[8..12] != MAGIC {
        return Found::Absent;
    }
    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    let len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as u64;
    if len + TRAILER_LEN > in_object {
        return Found::Absent;
    }
    let Some(start) = trailer.checked_sub(len as usize) else {
        return Found::Need(len + TRAILER_LEN);
    };
    let dir = &before[start..trailer];
    if crc32fast::hash(dir) != crc {
        return Found::Absent;
    }
    parse(dir).map_or(Found::Absent, Found::Directory)
}

/// Decodes a row group's own footer (the bytes of [`Entry::footer`]): metadata with that one
/// row group.
pub fn decode_group(
    bytes: &[u8],
    options: &ParquetMetaDataOptions,
) -> Result<ParquetMetaData, StoreError> {
    let meta = ParquetMetaDataReader::decode_metadata_with_options(bytes, Some(options))
        .map_err(corrupt)?;
    if meta.num_row_groups() != 1 {
        return Err(corrupt(format!(
            "a row group's footer with {} row groups",
            meta.num_row_groups()
        )));
    }
    Ok(meta)
}

/// The length of the Parquet footer at the end of `file`, with its last 8 bytes.
fn footer_len(file: &[u8]) -> Option<usize> {
    let end = file.len().checked_sub(PARQUET_END)?;
    let len: [u8; 4] = file.get(end..end + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(len) as usize + PARQUET_END)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

/// Reads the directory's fields in order; `None` on any field past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn parse(dir: &[u8]) -> Option<Directory> {
    let mut c = Cursor(dir);
    let n = c.u32()? as usize;
    // Each entry takes at least 28 bytes: a count beyond that is not a directory.
    let mut entries = Vec::with_capacity(n.min(dir.len() / 28));
    for _ in 0..n {
        let at = c.u64()?;
        let len = c.u32()? as u64;
        let rows = c.u64()?;
        let first = c.bytes()?.to_vec();
        let last = c.bytes()?.to_vec();
        entries.push(Entry {
            footer: at..at.checked_add(len)?,
            rows,
            first,
            last,
        });
    }
    let tag_keys = String::from_utf8(c.bytes()?.to_vec()).ok()?;
    c.0.is_empty().then_some(Directory { entries, tag_keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory() -> Directory {
        Directory {
            entries: vec![
                Entry {
                    footer: 100..180,
                    rows: 7,
                    first: b"t/a{}".to_vec(),
                    last: b"t/b{h=1}".to_vec(),
                },
                Entry {
                    footer: 180..250,
                    rows: 3,
                    first: b"t/b{h=2}".to_vec(),
                    last: b"t/c{}".to_vec(),
                },
            ],
            tag_keys: "b\th".to_string(),
        }
    }

    fn encoded(d: &Directory) -> Vec<u8> {
        let mut dir = Vec::new();
        put_u32(&mut dir, d.entries.len());
        for e in &d.entries {
            dir.extend_from_slice(&e.footer.start.to_le_bytes());
            put_u32(&mut dir, (e.footer.end - e.footer.start) as usize);
            dir.extend_from_slice(&e.rows.to_le_bytes());
            put_bytes(&mut dir, &e.first);
            put_bytes(&mut dir, &e.last);
        }
        put_bytes(&mut dir, d.tag_keys.as_bytes());
        let mut out = b"page index bytes".to_vec();
        out.extend_from_slice(&dir);
        out.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
        put_u32(&mut out, dir.len());
        out.extend_from_slice(MAGIC);
        out
    }

    #[test]
    fn a_directory_is_found_before_the_footer_and_only_whole() {
        let d = directory();
        let bytes = encoded(&d);
        let n = bytes.len() as u64;
        assert_eq!(find(&bytes, n), Found::Directory(d.clone()));
        // Read from a tail that holds only part of it: how many bytes to hold.
        let dir_and_trailer = n - b"page index bytes".len() as u64;
        assert_eq!(
            find(&bytes[n as usize - 20..], n),
            Found::Need(dir_and_trailer)
        );
        assert_eq!(find(&bytes[n as usize - 5..], n), Found::Need(TRAILER_LEN));
        // Any changed byte of the directory: its CRC does not match, no directory.
        for i in b"page index bytes".len()..bytes.len() - 8 {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert_eq!(find(&bad, n), Found::Absent, "byte {i}");
        }
        // No magic: layout 1 or 2.
        assert_eq!(find(b"0123456789abcdef", 16), Found::Absent);
        assert_eq!(find(b"", 0), Found::Absent);
        // A length longer than the object: not a directory.
        let mut long = bytes.clone();
        let at = long.len() - 8;
        long[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find(&long, n), Found::Absent);
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let bytes = encoded(&directory());
        for cut in 0..bytes.len() {
            let _ = find(&bytes[cut..], bytes.len() as u64);
            let _ = parse(&bytes[..cut]);
        }
        let mut huge = Vec::new();
        put_u32(&mut huge, u32::MAX as usize);
        assert_eq!(parse(&huge), None);
    }
}
