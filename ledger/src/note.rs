//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and the key
//! string formats of the Go `note` package that the transparency ecosystem
//! uses: verifier keys `name+<8 hex key ID>+<base64(0x01 ‖ public key)>` and
//! signer keys `PRIVATE+KEY+name+<8 hex key ID>+<base64(0x01 ‖ seed)>`.
//!
//! The note text must be ignored unless a trusted signature verifies, so the
//! only way to a checkpoint's contents is through [`Note::verify`].

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{FormatError, VerifyError};
use crate::hash::{decode_base64_canonical, decode_base64_lenient, encode_base64};
use crate::spec::{MAX_NOTE_BYTES, MAX_NOTE_SIGNATURES};

/// Signature type byte of Ed25519 in signed notes.
pub const ED25519_TYPE: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

/// `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn validate_key_name(what: &'static str, name: &str) -> Result<(), FormatError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c < '\u{20}') {
        return Err(FormatError::malformed(what, 0, format!("key name {name:?} is empty or has spaces or '+'")));
    }
    Ok(())
}

/// An Ed25519 note signer: the log's checkpoint key.
pub struct NoteSigner {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

impl NoteSigner {
    /// A new key named `name` from the operating system's random source.
    pub fn generate(name: &str) -> Result<NoteSigner, FormatError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| {
            FormatError::malformed("signer key", 0, format!("the operating system's random source failed: {e}"))
        })?;
        NoteSigner::from_seed(name, &seed)
    }

    /// The key with the given 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, FormatError> {
        validate_key_name("signer key", name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(NoteSigner { name: name.to_owned(), key_id, key })
    }

    /// Parses `PRIVATE+KEY+name+<key ID>+<base64(0x01 ‖ seed)>`.
    pub fn from_private_key(s: &str) -> Result<NoteSigner, FormatError> {
        let err = |reason: &str| FormatError::malformed("signer key", 1, reason.to_owned());
        let s = s.strip_suffix('\n').unwrap_or(s);
        let rest = s.strip_prefix("PRIVATE+KEY+").ok_or_else(|| err("does not start with PRIVATE+KEY+"))?;
        let (name, id, key) = split_key_string(rest).ok_or_else(|| err("expected name+keyid+key"))?;
        let raw = Zeroizing::new(decode_base64_canonical(key).ok_or_else(|| err("key is not canonical base64"))?);
        if raw.len() != 33 || raw[0] != ED25519_TYPE {
            return Err(err("key is not an Ed25519 seed (type 0x01 and 32 bytes)"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[1..]);
        let signer = NoteSigner::from_seed(name, &seed)?;
        if id != signer.key_id {
            return Err(err("key ID does not match the name and key"));
        }
        Ok(signer)
    }

    /// The private key string; keep it in a 0600 file.
    pub fn private_key_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ED25519_TYPE);
        raw.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.key_id, encode_base64(&raw)))
    }

    /// The matching verifier.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key_id: self.key_id, key: self.key.verifying_key() }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature line (`— name base64(keyid ‖ sig)\n`) over `text`.
    pub fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, encode_base64(&raw))
    }

    /// Signs `text` into a complete note. The text must be valid note text:
    /// non-empty, ending in a newline, no control characters but newline.
    pub fn sign(&self, text: &str) -> Result<String, FormatError> {
        check_text(text)?;
        let mut out = String::with_capacity(text.len() + 120);
        out.push_str(text);
        out.push('\n');
        out.push_str(&self.signature_line(text));
        Ok(out)
    }
}

/// Splits `name+hexid+key`; the name itself has no `+`.
fn split_key_string(s: &str) -> Option<(&str, u32, &str)> {
    let mut it = s.splitn(3, '+');
    let (name, id, key) = (it.next()?, it.next()?, it.next()?);
    if id.len() != 8 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some((name, u32::from_str_radix(id, 16).ok()?, key))
}

/// An Ed25519 note verifier: the log's public key.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

impl fmt::Display for NoteVerifier {
    /// The verifier key string `name+<key ID>+<base64(0x01 ‖ public key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ED25519_TYPE);
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, encode_base64(&raw))
    }
}

impl NoteVerifier {
    /// Parses a verifier key string, checking that the key ID matches.
    pub fn parse(s: &str) -> Result<NoteVerifier, FormatError> {
        let err = |reason: &str| FormatError::malformed("verifier key", 1, reason.to_owned());
        let s = s.trim_end_matches('\n');
        let (name, id, key) = split_key_string(s).ok_or_else(|| err("expected name+keyid+key"))?;
        validate_key_name("verifier key", name)?;
        let raw = decode_base64_canonical(key).ok_or_else(|| err("key is not canonical base64"))?;
        if raw.len() != 33 || raw[0] != ED25519_TYPE {
            return Err(err("key is not an Ed25519 public key (type 0x01 and 32 bytes)"));
        }
        let pk: [u8; 32] = raw[1..].try_into().map_err(|_| err("key length"))?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| err("not a valid Ed25519 public key"))?;
        // A small-order key would make every signature meaningless.
        if key.is_weak() {
            return Err(err("Ed25519 public key of small order"));
        }
        if key_id(name, &pk) != id {
            return Err(err("key ID does not match the name and key"));
        }
        Ok(NoteVerifier { name: name.to_owned(), key_id: id, key })
    }

    /// The key name (for a Chronos log, its origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID (first four bytes of the base64 data).
    pub key_id: u32,
    /// The signature proper (the rest of the base64 data).
    pub signature: Vec<u8>,
    /// Whether the line's base64 was canonical (trailing bits zero). Lines
    /// by the trusted key must be; others are read leniently.
    pub canonical: bool,
}

/// A parsed, not yet verified, signed note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// Checks the byte-level rules shared by notes and note texts.
fn check_chars(what: &'static str, s: &str) -> Result<(), FormatError> {
    if let Some((offset, c)) = s.char_indices().find(|&(_, c)| c < '\u{20}' && c != '\n') {
        return Err(FormatError::ControlCharacter { what, code: c as u32, offset });
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), FormatError> {
    check_chars("note text", text)?;
    if text.is_empty() || !text.ends_with('\n') {
        return Err(FormatError::malformed("note text", 0, "must be non-empty and end with a newline"));
    }
    if text.starts_with('\n') {
        return Err(FormatError::malformed("note text", 1, "the first line is empty"));
    }
    Ok(())
}

impl Note {
    /// Parses a signed note: UTF-8, no characters below U+0020 but newline, the
    /// text ending in a newline, a blank line, then 1 to 64 signature lines.
    pub fn parse(input: &[u8]) -> Result<Note, FormatError> {
        const WHAT: &str = "signed note";
        if input.len() > MAX_NOTE_BYTES {
            return Err(FormatError::TooLarge { what: WHAT, len: input.len(), max: MAX_NOTE_BYTES });
        }
        let s = std::str::from_utf8(input).map_err(|_| FormatError::NotUtf8 { what: WHAT })?;
        check_chars(WHAT, s)?;
        if !s.ends_with('\n') {
            return Err(FormatError::malformed(WHAT, s.lines().count(), "does not end with a newline"));
        }
        // The text ends at the last blank line; signature lines are never empty.
        let split =
            s.rfind("\n\n").ok_or_else(|| FormatError::malformed(WHAT, 0, "no blank line before the signatures"))?;
        let text = &s[..=split];
        check_text(text)?;
        let text_lines = text.matches('\n').count();
        let block = &s[split + 2..];
        let mut signatures = Vec::new();
        for (i, line) in block.split_terminator('\n').enumerate() {
            let lineno = text_lines + 2 + i;
            if signatures.len() == MAX_NOTE_SIGNATURES {
                return Err(FormatError::malformed(
                    WHAT,
                    lineno,
                    format!("more than {MAX_NOTE_SIGNATURES} signatures"),
                ));
            }
            let bad = |reason: &str| FormatError::malformed(WHAT, lineno, reason.to_owned());
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("signature line does not start with an em dash and a space"))?;
            let (name, b64) =
                rest.split_once(' ').ok_or_else(|| bad("signature line has no space after the key name"))?;
            validate_key_name(WHAT, name).map_err(|_| bad("key name is empty or has spaces or '+'"))?;
            // Lenient like Go's decoder (trailing bits may be set): the line
            // is not signed, and witnesses' lines must not sink the note.
            let raw = decode_base64_lenient(b64).ok_or_else(|| bad("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(bad("signature is shorter than a key ID and one byte"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
                signature: raw[4..].to_vec(),
                canonical: encode_base64(&raw) == b64,
            });
        }
        if signatures.is_empty() {
            return Err(FormatError::malformed(WHAT, text_lines + 2, "no signature lines"));
        }
        Ok(Note { text: text.to_owned(), signatures })
    }

    /// The signed text, including its final newline. Untrusted until verified.
    pub fn text_unverified(&self) -> &str {
        &self.text
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Verifies the note against one trusted key and returns its text.
    ///
    /// Signatures by other keys (a different name or key ID) are ignored, as
    /// the spec requires, so witness cosignatures pass through. A signature
    /// that claims to be by the trusted key and fails rejects the whole note.
    pub fn verify(&self, verifier: &NoteVerifier) -> Result<&str, VerifyError> {
        let mut verified = false;
        for sig in self.signatures.iter().filter(|s| s.name == verifier.name && s.key_id == verifier.key_id) {
            // The trusted key's own lines must be canonical: then no byte of
            // them can change without the note failing.
            let ok = sig.canonical
                && <[u8; 64]>::try_from(sig.signature.as_slice())
                    .map(|b| ed25519_dalek::Signature::from_bytes(&b))
                    .is_ok_and(|sig| {
                        // RFC 8032 cofactorless verification with canonical S, the
                        // rule of Go's crypto/ed25519 that witnesses use.
                        ed25519_dalek::Verifier::verify(&verifier.key, self.text.as_bytes(), &sig).is_ok()
                    });
            if !ok {
                return Err(VerifyError::BadSignature { key: format!("{}+{:08x}", verifier.name, verifier.key_id) });
            }
            verified = true;
        }
        if verified {
            Ok(&self.text)
        } else {
            Err(VerifyError::NoTrustedSignature { expected: format!("{}+{:08x}", verifier.name, verifier.key_id) })
        }
    }
}

impl fmt::Display for Note {
    /// The note in its wire form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            let mut raw = s.key_id.to_be_bytes().to_vec();
            raw.extend_from_slice(&s.signature);
            writeln!(f, "{SIG_PREFIX}{} {}", s.name, encode_base64(&raw))?;
        }
        Ok(())
    }
}
