//! A reader for PostgreSQL's binary COPY format, as `COPY (...) TO STDOUT
//! (FORMAT binary)` sends it.
//!
//! The stream is a header (`PGCOPY\n\xff\r\n\0`, a flags word, an extension
//! area), then one tuple per row (an i16 field count, then per field an i32
//! length, -1 for NULL, and the bytes), then an i16 -1 trailer. The server
//! usually sends one tuple per CopyData message; rows are sliced out of the
//! messages without copying, and only a tuple split across messages (which
//! the protocol allows) is reassembled.

use bytes::{Bytes, BytesMut};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// The binary COPY stream is not what the format says it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("binary COPY stream: {0}")]
pub struct CopyError(pub String);

fn err(msg: impl Into<String>) -> CopyError {
    CopyError(msg.into())
}

/// The fields of one tuple, read in order.
#[derive(Debug)]
pub struct Fields<'a> {
    buf: &'a Bytes,
    pos: usize,
    left: usize,
}

impl Fields<'_> {
    fn raw(&mut self) -> Result<Option<Bytes>, CopyError> {
        if self.left == 0 {
            return Err(err("the row has fewer fields than expected"));
        }
        self.left -= 1;
        let len = i32::from_be_bytes(self.buf[self.pos..self.pos + 4].try_into().map_err(|_| err("length"))?);
        self.pos += 4;
        if len < 0 {
            return Ok(None);
        }
        let end = self.pos + len as usize;
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(Some(out))
    }

    /// A non-NULL field's bytes (`bytea`, `text`).
    pub fn bytes(&mut self, name: &str) -> Result<Bytes, CopyError> {
        self.raw()?.ok_or_else(|| err(format!("{name} is NULL")))
    }

    /// A possibly NULL field's bytes.
    #[cfg(test)]
    pub fn opt_bytes(&mut self) -> Result<Option<Bytes>, CopyError> {
        self.raw()
    }

    /// A non-NULL `bigint` (or `timestamptz`: microseconds since 2000-01-01).
    pub fn i64(&mut self, name: &str) -> Result<i64, CopyError> {
        let b = self.bytes(name)?;
        Ok(i64::from_be_bytes(b[..].try_into().map_err(|_| err(format!("{name} is not 8 bytes")))?))
    }

    /// A possibly NULL `bigint` or `timestamptz`.
    pub fn opt_i64(&mut self, name: &str) -> Result<Option<i64>, CopyError> {
        match self.raw()? {
            None => Ok(None),
            Some(b) => {
                Ok(Some(i64::from_be_bytes(b[..].try_into().map_err(|_| err(format!("{name} is not 8 bytes")))?)))
            }
        }
    }

    /// A non-NULL `smallint`.
    pub fn i16(&mut self, name: &str) -> Result<i16, CopyError> {
        let b = self.bytes(name)?;
        Ok(i16::from_be_bytes(b[..].try_into().map_err(|_| err(format!("{name} is not 2 bytes")))?))
    }
}

/// Splits a binary COPY stream, fed one message at a time, into rows.
#[derive(Debug, Default)]
pub struct RowReader {
    header_done: bool,
    finished: bool,
    /// An incomplete tuple carried over to the next message.
    partial: BytesMut,
}

impl RowReader {
    pub fn new() -> RowReader {
        RowReader::default()
    }

    /// Whether the trailer has been read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Feeds one message; calls `row` for each complete tuple in it.
    pub fn feed<E: From<CopyError>>(
        &mut self,
        chunk: Bytes,
        mut row: impl FnMut(&mut Fields<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let buf = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(&chunk);
            std::mem::take(&mut self.partial).freeze()
        };
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < 19 {
                self.partial.extend_from_slice(&buf);
                return Ok(());
            }
            if &buf[..11] != SIGNATURE {
                return Err(err("missing the PGCOPY signature").into());
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            if buf.len() < 19 + ext {
                self.partial.extend_from_slice(&buf);
                return Ok(());
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        while pos < buf.len() {
            if self.finished {
                return Err(err("data after the trailer").into());
            }
            let Some(end) = tuple_end(&buf, pos)? else {
                self.partial.extend_from_slice(&buf[pos..]);
                return Ok(());
            };
            let count = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
            if count == -1 {
                self.finished = true;
            } else {
                let mut f = Fields { buf: &buf, pos: pos + 2, left: count as usize };
                row(&mut f)?;
            }
            pos = end;
        }
        Ok(())
    }
}

/// The end of the tuple starting at `pos`, or `None` if it is not complete.
fn tuple_end(buf: &[u8], pos: usize) -> Result<Option<usize>, CopyError> {
    let Some(head) = buf.get(pos..pos + 2) else { return Ok(None) };
    let count = i16::from_be_bytes([head[0], head[1]]);
    if count == -1 {
        return Ok(Some(pos + 2));
    }
    if count < 0 {
        return Err(err(format!("negative field count {count}")));
    }
    let mut at = pos + 2;
    for _ in 0..count {
        let Some(l) = buf.get(at..at + 4) else { return Ok(None) };
        let len = i32::from_be_bytes([l[0], l[1], l[2], l[3]]);
        at += 4;
        if len >= 0 {
            at += len as usize;
        } else if len != -1 {
            return Err(err(format!("negative field length {len}")));
        }
        if at > buf.len() {
            return Ok(None);
        }
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[Vec<Option<&[u8]>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for r in rows {
            out.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn read_all(data: &[u8], split: usize) -> Result<Vec<(i64, Option<Bytes>)>, CopyError> {
        let mut r = RowReader::new();
        let mut out = Vec::new();
        for chunk in data.chunks(split) {
            r.feed::<CopyError>(Bytes::copy_from_slice(chunk), |f| {
                out.push((f.i64("a")?, f.opt_bytes()?));
                Ok(())
            })?;
        }
        assert!(r.finished());
        Ok(out)
    }

    #[test]
    fn rows_are_read_whatever_the_message_boundaries() {
        let one = 7i64.to_be_bytes();
        let two = (-3i64).to_be_bytes();
        let data = stream(&[vec![Some(&one), Some(b"hello")], vec![Some(&two), None]]);
        for split in 1..data.len() + 1 {
            let rows = read_all(&data, split).unwrap();
            assert_eq!(rows, vec![(7, Some(Bytes::from_static(b"hello"))), (-3, None)], "split {split}");
        }
    }

    #[test]
    fn malformed_streams_are_errors() {
        let one = 7i64.to_be_bytes();
        let mut data = stream(&[vec![Some(&one), Some(b"x")]]);
        data[0] = b'X';
        assert!(read_all(&data, 1000).is_err());
        let short = 7i32.to_be_bytes();
        let data = stream(&[vec![Some(&short), Some(b"x")]]);
        assert!(read_all(&data, 1000).unwrap_err().0.contains("not 8 bytes"));
        let data = stream(&[vec![Some(&one)]]);
        assert!(read_all(&data, 1000).unwrap_err().0.contains("fewer fields"));
    }
}
