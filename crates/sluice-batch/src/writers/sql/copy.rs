//! `COPY … FROM STDIN` in text format: row encoding, escaping (checked eight
//! bytes at a time) and sending a chunk in pieces.

use super::*;

/// Appends one row in `COPY … FROM STDIN` text format.
pub(super) fn copy_text_row(buf: &mut Vec<u8>, plan: &Plan, row: &[Option<Cell<'_>>]) {
    use std::io::Write as _;
    for (i, (c, v)) in plan.cols.iter().zip(row).enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        match *v {
            None => buf.extend_from_slice(b"\\N"),
            Some(v) if c.json => copy_escape(buf, &v.json_text()),
            Some(Cell::Text(s)) => copy_escape(buf, s),
            // Numbers and booleans never need escaping.
            Some(Cell::Json(Value::Number(n))) => {
                let _ = write!(buf, "{n}");
            }
            Some(Cell::Json(Value::Bool(b))) => {
                buf.extend_from_slice(if *b { b"true" } else { b"false" });
            }
            Some(Cell::Json(Value::String(s))) => copy_escape(buf, s),
            Some(Cell::Json(v)) => copy_escape(buf, &v.to_string()),
        }
    }
    buf.push(b'\n');
}

/// Appends `s` escaped for `COPY` text format: backslash, tab, newline and
/// carriage return become `\\`, `\t`, `\n` and `\r`.
pub(super) fn copy_escape(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !needs_copy_escape(bytes) {
        buf.extend_from_slice(bytes);
        return;
    }
    let mut from = 0;
    for (j, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[from..j]);
        buf.extend_from_slice(esc);
        from = j + 1;
    }
    buf.extend_from_slice(&bytes[from..]);
}

/// Whether `bytes` may hold a byte that `COPY` text format escapes: checked eight
/// bytes at a time for any byte below 0x0E (tab, newline and carriage return among
/// them) or a backslash. A `true` may be a false alarm; a `false` is certain.
pub(super) fn needs_copy_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        // A zero byte of `v` sets its high bit in `(v - ONES) & !v & HIGH`.
        let low = x.wrapping_sub(ONES * 0x0E) & !x & HIGH;
        let v = x ^ (ONES * u64::from(b'\\'));
        let backslash = v.wrapping_sub(ONES) & !v & HIGH;
        if low | backslash != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x0E || b == b'\\')
}

/// Runs one `COPY … FROM STDIN` with the chunk's rows, sent in pieces of about
/// [`COPY_PIECE_BYTES`], so that the server parses a piece while the next is
/// encoded.
pub(super) async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    plan: &Plan,
    cells: &Cells<'_>,
) -> Result<u64, sqlx::Error> {
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut buf = Vec::with_capacity(COPY_PIECE_BYTES + 64 * 1024);
    for r in 0..cells.rows() {
        copy_text_row(&mut buf, plan, cells.row(r));
        if buf.len() >= COPY_PIECE_BYTES || r + 1 == cells.rows() {
            let piece =
                std::mem::replace(&mut buf, Vec::with_capacity(COPY_PIECE_BYTES + 64 * 1024));
            if let Err(e) = copy.send(piece).await {
                let _ = copy.abort("sluice: sending the chunk failed").await;
                return Err(e);
            }
        }
    }
    copy.finish().await
}

/// The size of the pieces a chunk's `COPY` data is sent in.
pub(super) const COPY_PIECE_BYTES: usize = 128 * 1024;
