//! Following a log file across rotation: which file a checkpoint means, where
//! it went, and reading whole lines from it.
//!
//! A checkpoint names a file by its **identity**, not its path: device and
//! inode, plus a fingerprint (FNV-1a of its first up to [`FINGERPRINT_BYTES`]
//! bytes, and how many) so that an inode reused by a new file is not taken for
//! the old one. On open:
//!
//! 1. the file at `path` is the checkpointed one, at least as long as the
//!    offset: resume there;
//! 2. it is the same inode but shorter than the offset, or its first bytes
//!    changed (`copytruncate`): the copy is looked for among the rotated files
//!    (by fingerprint, at least offset bytes long) and finished from the offset;
//!    then `path` is read from 0;
//! 3. `path` is another file (rename + create): the checkpointed inode is looked
//!    for among the rotated files (`path.1`, `path.0`, `path-*`, the `rotated`
//!    glob) and finished from the offset, then `path` is read from 0;
//! 4. the checkpointed file is nowhere (rotated twice and compressed, deleted):
//!    `path` is read from 0, and a warning says lines may be missing.
//!
//! A last line without its newline is not consumed in the current file (the
//! writer is still writing it); in a rotated file, which no longer grows, it is.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::formats::LogFormat;
use crate::api::{ReadError, ReadItem};

/// How many first bytes of a file make its fingerprint.
pub const FINGERPRINT_BYTES: usize = 1024;

/// The longest line parsed; a longer one is a bad line.
const MAX_LINE: usize = 1 << 20;

/// Lines per batch.
pub(super) const BATCH_LINES: usize = 1024;

/// Which file: device, inode, and a fingerprint of its first bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// FNV-1a 64 of the first `fp_len` bytes.
    pub fp: u64,
    /// How many bytes the fingerprint covers.
    pub fp_len: u64,
}

/// A position: which file, the offset after the last whole line consumed, and
/// that line's number in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPos {
    /// The file.
    pub file: FileId,
    /// Bytes consumed.
    pub offset: u64,
    /// Lines consumed.
    pub line: u64,
}

impl LogPos {
    /// `{"dev", "ino", "fp", "fp_len", "offset", "line"}` (`fp` in hex).
    pub fn to_json(self) -> Value {
        json!({
            "dev": self.file.dev,
            "ino": self.file.ino,
            "fp": format!("{:016x}", self.file.fp),
            "fp_len": self.file.fp_len,
            "offset": self.offset,
            "line": self.line,
        })
    }

    /// The position of a checkpoint; `None` or `null` is none.
    ///
    /// # Errors
    ///
    /// [`ReadError::Fatal`] for a checkpoint of another reader.
    pub fn from_json(cp: Option<&Value>) -> Result<Option<Self>, ReadError> {
        let Some(cp) = cp.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let u = |k: &str| cp.get(k).and_then(Value::as_u64);
        let fp = cp
            .get("fp")
            .and_then(Value::as_str)
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        match (u("dev"), u("ino"), fp, u("fp_len"), u("offset"), u("line")) {
            (Some(dev), Some(ino), Some(fp), Some(fp_len), Some(offset), Some(line)) => {
                Ok(Some(LogPos {
                    file: FileId {
                        dev,
                        ino,
                        fp,
                        fp_len,
                    },
                    offset,
                    line,
                }))
            }
            _ => Err(ReadError::Fatal(format!(
                "checkpoint {cp} does not fit the log reader (expected dev, ino, fp, fp_len, offset, line)"
            ))),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(unix)]
fn dev_ino(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dev_ino(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// The first `n` bytes of `file` (fewer when it is shorter).
fn head(file: &mut File, n: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(n);
    file.by_ref().take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The identity of an open file, fingerprinted over its first bytes.
pub fn identify(file: &mut File) -> std::io::Result<FileId> {
    let (dev, ino) = dev_ino(&file.metadata()?);
    let h = head(file, FINGERPRINT_BYTES)?;
    Ok(FileId {
        dev,
        ino,
        fp: fnv1a(&h),
        fp_len: h.len() as u64,
    })
}

/// Whether `file`'s first `id.fp_len` bytes fingerprint as `id.fp`.
fn same_head(file: &mut File, id: &FileId) -> std::io::Result<bool> {
    let h = head(file, id.fp_len as usize)?;
    Ok(h.len() as u64 == id.fp_len && fnv1a(&h) == id.fp)
}

/// Whether `offset` is at a line start of `file` (after a newline, or 0): a
/// copytruncated file that grew past the offset again seldom is.
fn ends_a_line(file: &mut File, offset: u64) -> std::io::Result<bool> {
    if offset == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(offset - 1))?;
    let mut b = [0u8; 1];
    file.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

/// Whether a file name matches a glob of `*` and `?`.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The files a rotated `path` may be: `path.1`, `path.0`, `path-*`, `path.*`
/// (not compressed), and the `rotated` glob (`*` and `?` in its file name).
pub fn rotated_candidates(path: &Path, rotated: Option<&str>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut globs = vec![format!("{name}.*"), format!("{name}-*")];
    let mut glob_dir = dir.to_path_buf();
    if let Some(g) = rotated {
        let g = Path::new(g);
        let gdir = g
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf);
        let gname = g
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(d) = gdir {
            glob_dir = d;
        }
        globs.push(gname);
    }
    for first in [format!("{name}.1"), format!("{name}.0")] {
        out.push(dir.join(first));
    }
    for (i, g) in globs.iter().enumerate() {
        let d = if i >= 2 { &glob_dir } else { dir };
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                glob_match(g.as_bytes(), n.as_bytes())
                    && !n.ends_with(".gz")
                    && !n.ends_with(".bz2")
                    && !n.ends_with(".xz")
                    && !n.ends_with(".zst")
                    && *n != *name
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        out.extend(found);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| p.as_path() != path && p.is_file() && seen.insert(p.clone()));
    out
}

/// One file to read: opened, and where reading starts.
struct Part {
    path: PathBuf,
    file: BufReader<File>,
    id: FileId,
    offset: u64,
    line: u64,
    /// A rotated file: it no longer grows, so its last line counts without a
    /// newline.
    rotated: bool,
}

/// One outcome of reading, with the position after it.
pub(super) struct Entry {
    pub(super) result: Result<ReadItem, ReadError>,
    pub(super) pos: LogPos,
}

/// The blocking half of the log reader: the files still to read, in order.
pub(super) struct Follower {
    parts: std::collections::VecDeque<Part>,
    format: Arc<LogFormat>,
    buf: Vec<u8>,
    /// Where the reader stands when it opened (returned by [`open`]).
    start: LogPos,
}

fn fatal(path: &Path, e: std::io::Error) -> ReadError {
    ReadError::Fatal(format!("{}: {e}", path.display()))
}

fn transient(path: &Path, e: std::io::Error) -> ReadError {
    ReadError::Transient(format!("{}: {e}", path.display()))
}

impl Follower {
    /// Opens `path` at `cp`, finding where a rotated file went (see the module
    /// docs).
    pub(super) fn open(
        path: &Path,
        rotated: Option<&str>,
        format: Arc<LogFormat>,
        cp: Option<LogPos>,
    ) -> Result<Self, ReadError> {
        let mut cur = File::open(path).map_err(|e| {
            ReadError::Fatal(format!(
                "{}: {e} (the log reader reads this file, and its rotated copies)",
                path.display()
            ))
        })?;
        let cur_id = identify(&mut cur).map_err(|e| fatal(path, e))?;
        let cur_len = cur.metadata().map_err(|e| fatal(path, e))?.len();
        let current = |offset: u64, line: u64, file: File| Part {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(64 * 1024, file),
            id: cur_id,
            offset,
            line,
            rotated: false,
        };
        let mut parts = std::collections::VecDeque::new();
        let Some(cp) = cp else {
            parts.push_back(current(0, 0, cur));
            return Self::ready(parts, format);
        };
        let same_inode = cur_id.dev == cp.file.dev && cur_id.ino == cp.file.ino;
        if same_inode
            && cur_len >= cp.offset
            && same_head(&mut cur, &cp.file).map_err(|e| fatal(path, e))?
            && ends_a_line(&mut cur, cp.offset).map_err(|e| fatal(path, e))?
        {
            parts.push_back(current(cp.offset, cp.line, cur));
            return Self::ready(parts, format);
        }
        // The checkpointed file is elsewhere: renamed (same inode), or copied
        // before a truncation (same first bytes).
        let candidates = rotated_candidates(path, rotated);
        let mut found = None;
        for by_inode in [true, false] {
            for c in &candidates {
                let Ok(mut f) = File::open(c) else { continue };
                let Ok(meta) = f.metadata() else { continue };
                let (dev, ino) = dev_ino(&meta);
                let inode_ok = dev == cp.file.dev && ino == cp.file.ino;
                // A fingerprint of nothing fits every file: only the inode tells.
                let weak = !by_inode && cp.file.fp_len == 0;
                if by_inode != inode_ok || weak || meta.len() < cp.offset {
                    continue;
                }
                if same_head(&mut f, &cp.file).unwrap_or(false) {
                    found = Some((c.clone(), f));
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        match found {
            Some((p, f)) => {
                tracing::info!(rotated = %p.display(), current = %path.display(), offset = cp.offset,
                    "log reader: the checkpointed file was rotated; finishing it first");
                parts.push_back(Part {
                    path: p,
                    file: BufReader::with_capacity(64 * 1024, f),
                    id: cp.file,
                    offset: cp.offset,
                    line: cp.line,
                    rotated: true,
                });
            }
            None => {
                tracing::warn!(path = %path.display(), offset = cp.offset,
                    "log reader: the checkpointed file is neither at its path nor among the rotated files; \
                     reading the current file from its start (lines written after the checkpoint to the old file are missing)");
            }
        }
        parts.push_back(current(0, 0, cur));
        Self::ready(parts, format)
    }

    fn ready(
        mut parts: std::collections::VecDeque<Part>,
        format: Arc<LogFormat>,
    ) -> Result<Self, ReadError> {
        for p in &mut parts {
            p.file
                .seek(SeekFrom::Start(p.offset))
                .map_err(|e| fatal(&p.path, e))?;
        }
        let first = parts.front().map_or_else(LogPos::default, |p| LogPos {
            file: p.id,
            offset: p.offset,
            line: p.line,
        });
        Ok(Follower {
            parts,
            format,
            buf: Vec::new(),
            start: first,
        })
    }

    /// Where reading starts.
    pub(super) fn start(&self) -> LogPos {
        self.start
    }

    /// The bytes left to read, and the bytes of every file to read (for
    /// progress).
    pub(super) fn sizes(&self) -> (u64, u64) {
        self.parts.iter().fold((0, 0), |(left, all), p| {
            let len = p.file.get_ref().metadata().map_or(p.offset, |m| m.len());
            (left + len.saturating_sub(p.offset), all + len)
        })
    }

    /// Reads up to [`BATCH_LINES`] lines into `out`; `true` at the end.
    pub(super) fn fill(&mut self, out: &mut std::collections::VecDeque<Entry>) -> bool {
        while out.len() < BATCH_LINES {
            let Some(part) = self.parts.front_mut() else {
                return true;
            };
            self.buf.clear();
            let n = match part
                .file
                .by_ref()
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(n) => n,
                Err(e) => {
                    out.push_back(Entry {
                        result: Err(transient(&part.path, e)),
                        pos: LogPos::default(),
                    });
                    return true;
                }
            };
            let whole = self.buf.last() == Some(&b'\n');
            if n == 0 || (!whole && n <= MAX_LINE && !part.rotated) {
                // The end of this file (or a line still being written).
                if self.parts.len() > 1 {
                    let done = self.parts.pop_front();
                    drop(done);
                    if let Some(next) = self.parts.front() {
                        // The next file from its start: the position moves on to
                        // it even if nothing is in it yet.
                        out.push_back(Entry {
                            result: Ok(ReadItem {
                                item: Value::Null,
                                position: 0,
                            }),
                            pos: LogPos {
                                file: next.id,
                                offset: next.offset,
                                line: next.line,
                            },
                        });
                    }
                    continue;
                }
                return true;
            }
            part.offset += n as u64;
            part.line += 1;
            let pos = LogPos {
                file: part.id,
                offset: part.offset,
                line: part.line,
            };
            if !whole && n > MAX_LINE {
                // Pass over the rest of a line too long to parse.
                let mut rest = 0u64;
                loop {
                    let buf = match part.file.fill_buf() {
                        Ok(b) => b,
                        Err(e) => {
                            out.push_back(Entry {
                                result: Err(transient(&part.path, e)),
                                pos: LogPos::default(),
                            });
                            return true;
                        }
                    };
                    if buf.is_empty() {
                        break;
                    }
                    if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        part.file.consume(i + 1);
                        rest += i as u64 + 1;
                        break;
                    }
                    let len = buf.len();
                    part.file.consume(len);
                    rest += len as u64;
                }
                part.offset += rest;
                out.push_back(Entry {
                    result: Err(ReadError::Bad {
                        position: part.line,
                        reason: format!(
                            "{} line {}: longer than {} MiB",
                            part.path.display(),
                            part.line,
                            MAX_LINE >> 20
                        ),
                        raw: None,
                    }),
                    pos: LogPos {
                        offset: part.offset,
                        ..pos
                    },
                });
                continue;
            }
            let text = String::from_utf8_lossy(&self.buf);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                out.push_back(Entry {
                    result: Ok(ReadItem {
                        item: Value::Null,
                        position: part.line,
                    }),
                    pos,
                });
                continue;
            }
            let result = match self.format.parse(text) {
                Ok(item) => Ok(ReadItem {
                    item,
                    position: part.line,
                }),
                Err(why) => Err(ReadError::Bad {
                    position: part.line,
                    reason: format!("{} line {}: {why}", part.path.display(), part.line),
                    raw: Some(text.chars().take(4096).collect()),
                }),
            };
            out.push_back(Entry { result, pos });
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob_match(b"access.log-*", b"access.log-20261204"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"x.*", b"y.1"));
    }

    #[test]
    fn checkpoints_round_trip() {
        let p = LogPos {
            file: FileId {
                dev: 1,
                ino: 2,
                fp: u64::MAX,
                fp_len: 1024,
            },
            offset: 10,
            line: 1,
        };
        assert_eq!(LogPos::from_json(Some(&p.to_json())).unwrap(), Some(p));
        assert!(LogPos::from_json(Some(&json!({"offset": 1, "line": 1}))).is_err());
        assert_eq!(LogPos::from_json(Some(&Value::Null)).unwrap(), None);
    }
}
