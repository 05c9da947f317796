//! Splitting a line-oriented file into byte ranges for partitioned steps.
//!
//! Share `i` of `n` of a file of `len` bytes (data from `data_start`) runs from
//! the first line start at or after `data_start + i·(len − data_start)/n` up to the
//! first line start at or after the next share's cut. Every line belongs to
//! exactly one share whatever the cuts, because a share's end is the next one's
//! start. CSV fields with line breaks inside quotes would be cut wrongly: such
//! files cannot be partitioned by offset.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use super::driver::{Pos, byte_at, io_fatal};
use crate::api::ReadError;

/// The first line start at or after `at` (`len` when none).
fn line_start(
    file: &mut File,
    path: &Path,
    at: u64,
    data_start: u64,
    len: u64,
) -> Result<u64, ReadError> {
    if at <= data_start {
        return Ok(data_start);
    }
    if at >= len {
        return Ok(len);
    }
    // The line containing byte `at - 1` ends somewhere at or after it.
    file.seek(SeekFrom::Start(at - 1))
        .map_err(|e| io_fatal(path, e))?;
    let mut r = BufReader::with_capacity(16 * 1024, &mut *file);
    let mut skipped = Vec::new();
    let n = r
        .read_until(b'\n', &mut skipped)
        .map_err(|e| io_fatal(path, e))?;
    Ok((at - 1 + n as u64).min(len))
}

/// Byte range `[start, end)` of share `index` of `of`.
pub(crate) fn share(
    file: &mut File,
    path: &Path,
    data_start: u64,
    len: u64,
    index: usize,
    of: usize,
) -> Result<(u64, u64), ReadError> {
    let span = len.saturating_sub(data_start);
    let cut = |i: usize| data_start + (u128::from(span) * i as u128 / of.max(1) as u128) as u64;
    let start = line_start(file, path, cut(index), data_start, len)?;
    let end = if index + 1 >= of {
        len
    } else {
        line_start(file, path, cut(index + 1), data_start, len)?
    };
    Ok((start, end.max(start)))
}

/// The bytes of a line-oriented file a reader reads: its data, from
/// `data_start` (after a BOM, and a header) to `len`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extent {
    /// Where the data starts.
    pub(crate) data_start: u64,
    /// The file's length.
    pub(crate) len: u64,
}

impl Extent {
    /// Where a reader starts and where its share ends: at the start of its share
    /// (of `partition`), or at checkpoint `start`, which must stand at the data's
    /// start, at the end, or after a byte `ends_line` accepts; `refuse` says why
    /// a checkpoint offset that does not is wrong. The span is the share's
    /// `[start, end)` in bytes (the whole data without partitions).
    pub(crate) fn start(
        self,
        file: &mut File,
        path: &Path,
        partition: Option<(usize, usize)>,
        start: Option<Pos>,
        ends_line: fn(u8) -> bool,
        refuse: impl FnOnce(u64) -> ReadError,
    ) -> Result<(Pos, (u64, u64)), ReadError> {
        let Extent { data_start, len } = self;
        let (share_start, end) = match partition {
            Some((i, n)) => share(file, path, data_start, len, i, n)?,
            None => (data_start, len),
        };
        let at_share = Pos {
            offset: share_start,
            n: 0,
        };
        let pos = match start {
            None => at_share,
            Some(p) if p.n == 0 && p.offset <= share_start => at_share,
            Some(p) => {
                let boundary = p.offset == data_start
                    || p.offset == len
                    || (p.offset > data_start
                        && p.offset < len
                        && ends_line(byte_at(file, p.offset - 1).map_err(|e| io_fatal(path, e))?));
                if !boundary {
                    return Err(refuse(p.offset));
                }
                p
            }
        };
        Ok((pos, (share_start, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn shares_cover_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        let mut f = File::create(&path).unwrap();
        let mut text = String::from("header\n");
        for i in 0..97 {
            text.push_str(&format!("line {i} {}\n", "x".repeat(i % 13)));
        }
        f.write_all(text.as_bytes()).unwrap();
        let len = text.len() as u64;
        for of in [1, 2, 3, 7, 200] {
            let mut file = File::open(&path).unwrap();
            let mut lines = Vec::new();
            let mut prev_end = 7;
            for i in 0..of {
                let (s, e) = share(&mut file, &path, 7, len, i, of).unwrap();
                assert_eq!(s, prev_end, "shares are contiguous");
                prev_end = e;
                let part = &text[s as usize..e as usize];
                assert!(part.is_empty() || part.ends_with('\n'));
                lines.extend(part.lines().map(str::to_owned));
            }
            assert_eq!(prev_end, len);
            assert_eq!(lines.len(), 97, "{of} shares");
        }
    }
}
