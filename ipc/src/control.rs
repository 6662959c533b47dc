//! Typed control messages over nng: acknowledgements, wake-ups,
//! registration and shutdown, for processes on one host (`ipc://`) or across
//! hosts (`tcp://`). Payload bytes never travel here; they go through rings.
//!
//! Binding: `anng` (async, tokio, maintained) over nng 1.11 built from
//! source (`nng-sys`'s vendored build, which needs cmake); the `nng` crate
//! is unmaintained since 2021 and Debian 12's libnng is 1.5.
//!
//! Wire format, version 1, all integers little-endian:
//!
//! ```text
//! u8 version (1) | u8 kind | fields
//! kind 1 Register  str role | u32 instance | u32 pid
//! kind 2 Ack       u64 id | u8 status (0 committed, 1 rejected, 2 failed) | bytes body
//! kind 3 Wake      str ring
//! kind 4 Shutdown  str reason
//! str   = u16 length | UTF-8 bytes (at most 256)
//! bytes = u32 length | bytes (at most 64 KiB)
//! ```
//! Decoding is strict: a wrong version or kind, a bad length, invalid UTF-8
//! or trailing bytes are errors (the receiver records an audit event and
//! drops the message; it never guesses).

use std::ffi::CString;

use anng::Message;
use anng::protocols::pipeline0::{Pull0, Push0};

/// Version byte of the wire format.
pub const WIRE_VERSION: u8 = 1;
/// Longest string field.
pub const MAX_STR: usize = 256;
/// Longest `Ack` body.
pub const MAX_BODY: usize = 64 * 1024;

/// How a piece of work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Durably done.
    Committed,
    /// Refused because of its content; retrying will not help.
    Rejected,
    /// Not done for a reason on our side; may be retried.
    Failed,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlMessage {
    /// A process announces itself to its supervisor.
    Register { role: String, instance: u32, pid: u32 },
    /// The work with this id is finished; `body` is the service's own answer.
    Ack { id: u64, status: AckStatus, body: Vec<u8> },
    /// Records are waiting in this ring (for readers that do not share a futex).
    Wake { ring: String },
    /// Stop cleanly.
    Shutdown { reason: String },
}

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable control message ({len} bytes): {reason}")]
pub struct DecodeError {
    /// Size of the message.
    pub len: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A control channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A message arrived that does not decode (the sender is at fault).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The transport failed (retry, or re-dial).
    #[error("nng: {0}")]
    Transport(String),
    /// A message to send breaks the format's limits.
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), ControlError> {
    if s.len() > MAX_STR {
        return Err(ControlError::Encode(format!("string of {} bytes exceeds {MAX_STR}", s.len())));
    }
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

impl ControlMessage {
    /// The wire bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ControlError> {
        let mut out = vec![WIRE_VERSION];
        match self {
            ControlMessage::Register { role, instance, pid } => {
                out.push(1);
                put_str(&mut out, role)?;
                out.extend_from_slice(&instance.to_le_bytes());
                out.extend_from_slice(&pid.to_le_bytes());
            }
            ControlMessage::Ack { id, status, body } => {
                if body.len() > MAX_BODY {
                    return Err(ControlError::Encode(format!("ack body of {} bytes exceeds {MAX_BODY}", body.len())));
                }
                out.push(2);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(match status {
                    AckStatus::Committed => 0,
                    AckStatus::Rejected => 1,
                    AckStatus::Failed => 2,
                });
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(body);
            }
            ControlMessage::Wake { ring } => {
                out.push(3);
                put_str(&mut out, ring)?;
            }
            ControlMessage::Shutdown { reason } => {
                out.push(4);
                put_str(&mut out, reason)?;
            }
        }
        Ok(out)
    }

    /// Decodes wire bytes, strictly.
    pub fn decode(bytes: &[u8]) -> Result<ControlMessage, DecodeError> {
        let mut r = Reader { b: bytes, at: 0 };
        let version = r.u8()?;
        if version != WIRE_VERSION {
            return Err(r.err(format!("wire version {version}, expected {WIRE_VERSION}")));
        }
        let msg = match r.u8()? {
            1 => ControlMessage::Register { role: r.str()?, instance: r.u32()?, pid: r.u32()? },
            2 => {
                let id = r.u64()?;
                let status = match r.u8()? {
                    0 => AckStatus::Committed,
                    1 => AckStatus::Rejected,
                    2 => AckStatus::Failed,
                    s => return Err(r.err(format!("unknown ack status {s}"))),
                };
                let len = r.u32()? as usize;
                if len > MAX_BODY {
                    return Err(r.err(format!("ack body length {len} exceeds {MAX_BODY}")));
                }
                ControlMessage::Ack { id, status, body: r.take(len)?.to_vec() }
            }
            3 => ControlMessage::Wake { ring: r.str()? },
            4 => ControlMessage::Shutdown { reason: r.str()? },
            k => return Err(r.err(format!("unknown message kind {k}"))),
        };
        if r.at != bytes.len() {
            return Err(r.err(format!("{} trailing bytes", bytes.len() - r.at)));
        }
        Ok(msg)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: String) -> DecodeError {
        DecodeError { len: self.b.len(), reason }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(self.err(format!("truncated: needs {n} bytes at offset {}", self.at)));
        };
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<String, DecodeError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        let len = u16::from_le_bytes(a) as usize;
        if len > MAX_STR {
            return Err(self.err(format!("string length {len} exceeds {MAX_STR}")));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not UTF-8".into()))
    }
}

fn url(u: &str) -> Result<CString, ControlError> {
    CString::new(u).map_err(|_| ControlError::Transport(format!("URL {u:?} contains a NUL byte")))
}

/// The receiving end of a control channel (many senders, one receiver).
#[derive(Debug)]
pub struct ControlReceiver {
    socket: anng::Socket<Pull0>,
}

impl ControlReceiver {
    /// Listens on `url` (`ipc:///path` or `tcp://host:port`).
    pub async fn listen(u: &str) -> Result<ControlReceiver, ControlError> {
        let socket = Pull0::listen(url(u)?).await.map_err(|e| ControlError::Transport(format!("listen {u}: {e}")))?;
        Ok(ControlReceiver { socket })
    }

    /// The next message. A message that does not decode is returned as
    /// `ControlError::Decode` (record it and carry on); the channel stays usable.
    pub async fn recv(&mut self) -> Result<ControlMessage, ControlError> {
        let m = self.socket.pull().await.map_err(|e| ControlError::Transport(e.to_string()))?;
        Ok(ControlMessage::decode(m.as_slice())?)
    }
}

/// The sending end of a control channel.
#[derive(Debug)]
pub struct ControlSender {
    socket: anng::Socket<Push0>,
}

impl ControlSender {
    /// Dials `url`; nng reconnects on its own if the receiver restarts.
    pub async fn dial(u: &str) -> Result<ControlSender, ControlError> {
        let socket = Push0::dial(url(u)?).await.map_err(|e| ControlError::Transport(format!("dial {u}: {e}")))?;
        Ok(ControlSender { socket })
    }

    /// Sends a message (waits while the receiver's queue is full).
    pub async fn send(&mut self, msg: &ControlMessage) -> Result<(), ControlError> {
        self.send_raw(&msg.encode()?).await
    }

    /// Sends raw bytes (tests of the receiver's decoding).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ControlError> {
        self.socket.push(Message::from(bytes)).await.map_err(|(e, _)| ControlError::Transport(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<ControlMessage> {
        vec![
            ControlMessage::Register { role: "hasher".into(), instance: 3, pid: 4242 },
            ControlMessage::Ack { id: u64::MAX, status: AckStatus::Committed, body: b"{\"seq\":1}".to_vec() },
            ControlMessage::Ack { id: 0, status: AckStatus::Rejected, body: vec![] },
            ControlMessage::Ack { id: 9, status: AckStatus::Failed, body: vec![0; MAX_BODY] },
            ControlMessage::Wake { ring: "ingest0-hasher1".into() },
            ControlMessage::Shutdown { reason: "SIGTERM".into() },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for m in samples() {
            assert_eq!(ControlMessage::decode(&m.encode().unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        for m in samples() {
            let b = m.encode().unwrap();
            for end in 0..b.len() {
                assert!(ControlMessage::decode(&b[..end]).is_err(), "{m:?} cut at {end}");
            }
            let mut long = b.clone();
            long.push(0);
            let e = ControlMessage::decode(&long).unwrap_err();
            assert!(e.reason.contains("trailing"), "{e}");
        }
    }

    #[test]
    fn unknown_versions_kinds_and_values_are_refused() {
        assert!(ControlMessage::decode(&[2, 1]).unwrap_err().reason.contains("wire version 2"));
        assert!(ControlMessage::decode(&[1, 9]).unwrap_err().reason.contains("unknown message kind 9"));
        let mut ack = ControlMessage::Ack { id: 1, status: AckStatus::Committed, body: vec![] }.encode().unwrap();
        ack[10] = 7;
        assert!(ControlMessage::decode(&ack).unwrap_err().reason.contains("unknown ack status 7"));
        let mut wake = ControlMessage::Wake { ring: "ab".into() }.encode().unwrap();
        wake[4] = 0xff;
        assert!(ControlMessage::decode(&wake).unwrap_err().reason.contains("UTF-8"));
        let long = ControlMessage::Wake { ring: "x".repeat(MAX_STR + 1) };
        assert!(matches!(long.encode(), Err(ControlError::Encode(_))));
    }
}
