//! Bounds-checked little-endian reading and writing.

/// A record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The record ends before a field.
    #[error("{record} record: {field} at offset {offset} runs past the end ({len} bytes)")]
    Truncated { record: &'static str, field: &'static str, offset: usize, len: usize },
    /// A field holds an impossible value.
    #[error("{record} record: {field} at offset {offset}: {reason}")]
    Invalid { record: &'static str, field: &'static str, offset: usize, reason: String },
    /// Bytes are left over after the last field.
    #[error("{record} record: {extra} unexpected bytes after the last field")]
    Trailing { record: &'static str, extra: usize },
    /// The ring record's tag is not the expected one.
    #[error("expected a {expected} record (tag {want}), found tag {found}")]
    Tag { expected: &'static str, want: u32, found: u32 },
}

pub(crate) struct Reader<'a> {
    pub(crate) record: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(record: &'static str, buf: &'a [u8]) -> Reader<'a> {
        Reader { record, buf, pos: 0 }
    }

    pub(crate) fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(WireError::Truncated {
            record: self.record,
            field,
            offset: self.pos,
            len: self.buf.len(),
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let b = self.bytes(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count of items of `size` bytes each that must fit in what is left.
    pub(crate) fn count(&mut self, field: &'static str, per_item: usize) -> Result<usize, WireError> {
        let at = self.pos;
        let n = self.u32(field)? as usize;
        if n.saturating_mul(per_item) > self.remaining() {
            return Err(self.invalid_at(field, at, format!("{n} items do not fit in {} bytes", self.remaining())));
        }
        Ok(n)
    }

    pub(crate) fn zero(&mut self, field: &'static str, n: usize) -> Result<(), WireError> {
        let at = self.pos;
        if self.bytes(field, n)?.iter().any(|b| *b != 0) {
            return Err(self.invalid_at(field, at, "reserved bytes must be zero".into()));
        }
        Ok(())
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn invalid_at(&self, field: &'static str, offset: usize, reason: String) -> WireError {
        WireError::Invalid { record: self.record, field, offset, reason }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub(crate) fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(WireError::Trailing { record: self.record, extra }),
        }
    }
}

/// Writes into a slice of exactly the record's size (a ring grant).
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer { buf, pos: 0 }
    }
    pub(crate) fn put(&mut self, b: &[u8]) {
        // Callers size the buffer with the record's `encoded_len`; a
        // mismatch is a bug in this crate, caught by its tests.
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn zeros(&mut self, n: usize) {
        self.buf[self.pos..self.pos + n].fill(0);
        self.pos += n;
    }
    pub(crate) fn done(self) {
        assert_eq!(self.pos, self.buf.len(), "record size mismatch: encoded_len is wrong");
    }
}
