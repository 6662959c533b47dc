//! The Roughtime message: a map from 32-bit tags to byte strings, and the
//! `ROUGHTIM` packet header the IETF versions put before it.
//!
//! A message is a little-endian u32 count N, N-1 u32 offsets (the first
//! value's offset, 0, is implicit), N tags, then the values back to back.
//! Tags are strictly ascending as u32s, offsets ascending and multiples of
//! 4, so the encoding of a map is unique: decoding either fails or gives
//! the map whose encoding is the input, byte for byte.
//!
//! Decoding reads hostile bytes (anyone can answer a UDP request): every
//! length is checked against the input before use, nothing is allocated
//! beyond the input's size, and every defect is a [`WireError`].

use std::fmt;

/// Bytes of the IETF packet header: `ROUGHTIM` and the message length.
pub const HEADER_LEN: usize = 12;

/// The IETF packet header's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"ROUGHTIM";

/// The longest message decoded or built. A Roughtime packet fits in one
/// datagram, and servers answer no more than a request's size; 64 KiB is
/// far beyond any honest message and keeps every length a small u32.
pub const MAX_MESSAGE_LEN: usize = 65_536;

/// A tag: four bytes (ASCII letters, zero-padded) read as a little-endian
/// u32, the order messages sort their fields in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u32);

impl Tag {
    pub const SIG: Tag = Tag::from_bytes(*b"SIG\0");
    pub const VER: Tag = Tag::from_bytes(*b"VER\0");
    pub const SRV: Tag = Tag::from_bytes(*b"SRV\0");
    pub const NONC: Tag = Tag::from_bytes(*b"NONC");
    pub const DELE: Tag = Tag::from_bytes(*b"DELE");
    pub const TYPE: Tag = Tag::from_bytes(*b"TYPE");
    pub const PATH: Tag = Tag::from_bytes(*b"PATH");
    pub const RADI: Tag = Tag::from_bytes(*b"RADI");
    pub const PUBK: Tag = Tag::from_bytes(*b"PUBK");
    pub const MIDP: Tag = Tag::from_bytes(*b"MIDP");
    pub const SREP: Tag = Tag::from_bytes(*b"SREP");
    pub const VERS: Tag = Tag::from_bytes(*b"VERS");
    pub const MINT: Tag = Tag::from_bytes(*b"MINT");
    pub const ROOT: Tag = Tag::from_bytes(*b"ROOT");
    pub const CERT: Tag = Tag::from_bytes(*b"CERT");
    pub const MAXT: Tag = Tag::from_bytes(*b"MAXT");
    pub const INDX: Tag = Tag::from_bytes(*b"INDX");
    /// Padding of IETF requests.
    pub const ZZZZ: Tag = Tag::from_bytes(*b"ZZZZ");
    /// Padding of Google requests.
    pub const PAD: Tag = Tag::from_bytes(*b"PAD\xff");

    /// The tag whose wire bytes are `b`.
    pub const fn from_bytes(b: [u8; 4]) -> Tag {
        Tag(u32::from_le_bytes(b))
    }

    /// Its four bytes on the wire.
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for Tag {
    /// Printable ASCII as is, zero padding dropped, other bytes escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.to_bytes() {
            match b {
                0 => {}
                0x20..=0x7e => write!(f, "{}", char::from(b))?,
                _ => write!(f, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

/// Why bytes are not a Roughtime message or packet, or a field cannot be
/// added to one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0} bytes, fewer than a message's 4-byte tag count")]
    Short(usize),
    #[error("{0} bytes, more than the {MAX_MESSAGE_LEN} a message may have")]
    TooLong(usize),
    #[error("{0} bytes, not a multiple of 4")]
    Misaligned(usize),
    #[error("{tags} tags need a {header}-byte header, longer than the {len}-byte message")]
    HeaderTooLong { tags: u32, header: u64, len: usize },
    #[error("a message without tags has {0} bytes after its count")]
    TrailingBytes(usize),
    #[error("offset {offset} of value {index} is not a multiple of 4")]
    MisalignedOffset { index: usize, offset: u32 },
    #[error("offset {offset} of value {index} is before the previous one or past the {values} bytes of values")]
    BadOffset { index: usize, offset: u32, values: usize },
    #[error("tag {tag} after {previous}: tags must be strictly ascending")]
    Unsorted { previous: Tag, tag: Tag },
    #[error("tag {0} is already in the message")]
    Duplicate(Tag),
    #[error("the value of {tag} is {len} bytes, not a multiple of 4")]
    MisalignedValue { tag: Tag, len: usize },
    #[error("{0} bytes, shorter than the 12-byte ROUGHTIM packet header")]
    ShortPacket(usize),
    #[error("the packet does not begin with ROUGHTIM")]
    BadMagic,
    #[error("the packet header announces {declared} bytes of message, {actual} follow")]
    LengthMismatch { declared: u32, actual: usize },
}

/// A Roughtime message: fields sorted by tag, each tag once, every value a
/// multiple of 4 bytes long.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    fields: Vec<(Tag, Vec<u8>)>,
}

/// Reads the little-endian u32 at `at`; the caller has checked the bounds.
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl Message {
    /// An empty message.
    pub fn new() -> Message {
        Message::default()
    }

    /// Adds `tag` with `value`, in its place by tag order. Refused if the
    /// tag is there already, the value is not a multiple of 4 bytes, or
    /// the message would grow past [`MAX_MESSAGE_LEN`].
    pub fn insert(&mut self, tag: Tag, value: impl Into<Vec<u8>>) -> Result<(), WireError> {
        let value = value.into();
        if !value.len().is_multiple_of(4) {
            return Err(WireError::MisalignedValue { tag, len: value.len() });
        }
        let at = match self.fields.binary_search_by_key(&tag, |(t, _)| *t) {
            Ok(_) => return Err(WireError::Duplicate(tag)),
            Err(at) => at,
        };
        let grown = self.encoded_len() + 8 + value.len();
        if grown > MAX_MESSAGE_LEN {
            return Err(WireError::TooLong(grown));
        }
        self.fields.insert(at, (tag, value));
        Ok(())
    }

    /// `self` with `tag` added (see [`Message::insert`]).
    pub fn with(mut self, tag: Tag, value: impl Into<Vec<u8>>) -> Result<Message, WireError> {
        self.insert(tag, value)?;
        Ok(self)
    }

    /// Takes `tag` and its value out, if present.
    pub fn remove(&mut self, tag: Tag) -> Option<Vec<u8>> {
        let at = self.fields.binary_search_by_key(&tag, |(t, _)| *t).ok()?;
        Some(self.fields.remove(at).1)
    }

    /// The value of `tag`, if present.
    pub fn get(&self, tag: Tag) -> Option<&[u8]> {
        let at = self.fields.binary_search_by_key(&tag, |(t, _)| *t).ok()?;
        Some(&self.fields[at].1)
    }

    /// The fields, in tag order.
    pub fn fields(&self) -> &[(Tag, Vec<u8>)] {
        &self.fields
    }

    /// Length of its encoding.
    pub fn encoded_len(&self) -> usize {
        let n = self.fields.len();
        let header = if n == 0 { 4 } else { 8 * n };
        header + self.fields.iter().map(|(_, v)| v.len()).sum::<usize>()
    }

    /// Its bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        // Lengths stay below MAX_MESSAGE_LEN (see `insert` and `decode`),
        // so every count and offset fits a u32.
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        let mut offset = 0usize;
        for (_, value) in self.fields.iter().take(self.fields.len().saturating_sub(1)) {
            offset += value.len();
            out.extend_from_slice(&(offset as u32).to_le_bytes());
        }
        for (tag, _) in &self.fields {
            out.extend_from_slice(&tag.to_bytes());
        }
        for (_, value) in &self.fields {
            out.extend_from_slice(value);
        }
        out
    }

    /// Reads a message (without packet header). Tags this core does not
    /// know are kept: the protocol requires ignoring them, not refusing.
    pub fn decode(b: &[u8]) -> Result<Message, WireError> {
        let len = b.len();
        if len < 4 {
            return Err(WireError::Short(len));
        }
        if len > MAX_MESSAGE_LEN {
            return Err(WireError::TooLong(len));
        }
        if !len.is_multiple_of(4) {
            return Err(WireError::Misaligned(len));
        }
        let tags = u32_at(b, 0);
        if tags == 0 {
            return if len == 4 { Ok(Message::new()) } else { Err(WireError::TrailingBytes(len - 4)) };
        }
        // Count, N-1 offsets, N tags: 8N bytes.
        let header = 8 * u64::from(tags);
        if header > len as u64 {
            return Err(WireError::HeaderTooLong { tags, header, len });
        }
        let n = tags as usize;
        let header = 8 * n;
        let values = len - header;
        // Value i spans starts[i]..starts[i+1], the last one to the end.
        let mut starts = Vec::with_capacity(n + 1);
        starts.push(0usize);
        for index in 1..n {
            let offset = u32_at(b, 4 * index);
            if !offset.is_multiple_of(4) {
                return Err(WireError::MisalignedOffset { index, offset });
            }
            let at = offset as usize;
            if at > values || starts.last().is_some_and(|&prev| at < prev) {
                return Err(WireError::BadOffset { index, offset, values });
            }
            starts.push(at);
        }
        starts.push(values);
        let tags_at = 4 * n;
        let mut fields: Vec<(Tag, Vec<u8>)> = Vec::with_capacity(n);
        for i in 0..n {
            let tag = Tag(u32_at(b, tags_at + 4 * i));
            if let Some(&(previous, _)) = fields.last()
                && tag <= previous
            {
                return Err(WireError::Unsorted { previous, tag });
            }
            fields.push((tag, b[header + starts[i]..header + starts[i + 1]].to_vec()));
        }
        Ok(Message { fields })
    }
}

/// `message` behind the IETF packet header.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + message.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(message);
    out
}

/// Whether `packet` begins with the IETF header's `ROUGHTIM`.
pub fn is_framed(packet: &[u8]) -> bool {
    packet.starts_with(MAGIC)
}

/// The message inside an IETF packet, whose header must announce exactly
/// the bytes that follow it.
pub fn unframe(packet: &[u8]) -> Result<&[u8], WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::ShortPacket(packet.len()));
    }
    if !is_framed(packet) {
        return Err(WireError::BadMagic);
    }
    let declared = u32_at(packet, 8);
    let actual = packet.len() - HEADER_LEN;
    if u64::from(declared) != actual as u64 {
        return Err(WireError::LengthMismatch { declared, actual });
    }
    Ok(&packet[HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_as_the_draft_says_and_sort_as_u32s() {
        // draft-ietf-ntp-roughtime 4.1.3: "NONC" is 0x434e4f4e, "VER" 0x00524556.
        assert_eq!(Tag::NONC.0, 0x434e_4f4e);
        assert_eq!(Tag::VER.0, 0x0052_4556);
        assert_eq!(Tag::PAD.to_string(), "PAD\\xff");
        let m = Message::new().with(Tag::ZZZZ, vec![0; 8]).unwrap().with(Tag::VER, vec![1, 0, 0, 0]).unwrap();
        let b = m.encode();
        assert_eq!(&b[..12], &[2, 0, 0, 0, 4, 0, 0, 0, b'V', b'E', b'R', 0]);
        assert_eq!(Message::decode(&b).unwrap(), m);
        assert_eq!(unframe(&frame(&b)).unwrap(), &b[..]);
        assert_eq!(m.clone().with(Tag::VER, vec![]), Err(WireError::Duplicate(Tag::VER)));
    }
}
