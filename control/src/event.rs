//! Signed control events: their text, the operators' keys and roles, and
//! the checks an event must pass before it changes anything.
//!
//! A control event is a C2SP signed note (the same format as checkpoints)
//! whose text is:
//!
//! ```text
//! chronos/control-event@v1
//! origin <the log's origin>
//! action <hold|release|recover|keys-add|keys-revoke>
//! seq <decimal, greater than every earlier seq of the signing key>
//! expires <decimal ns since the Unix epoch>
//! [argument <one line: the reason of a hold, the key of keys-add or keys-revoke>]
//! [roles <operator,admin,auditor>, for keys-add]
//! ```
//!
//! Its first line can never begin a checkpoint or a time statement, so no
//! key's signature on one can be replayed as another. The checks, each a
//! [`Refusal`] that the caller records as an audit event: the text parses
//! and names this log; the signer is a registered key, not revoked, whose
//! role allows the action; the signature verifies; `seq` is beyond the
//! key's last accepted one (no replay); the event has not expired and
//! does not reach further than [`MAX_LIFETIME_NS`] ahead.

use std::collections::BTreeMap;

use chronos_ledger::{Note, NoteVerifier};

/// The first line of a control event's text.
pub const HEADER: &str = "chronos/control-event@v1";

/// How far ahead an event may expire: a signed event cannot be kept for
/// use a month later.
pub const MAX_LIFETIME_NS: u64 = 24 * 3_600 * 1_000_000_000;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// hold, release, recover.
    Operator,
    /// keys-add, keys-revoke.
    Admin,
    /// Reads only: signs nothing that is accepted.
    Auditor,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Operator, Role::Admin, Role::Auditor].into_iter().find(|r| r.name() == s)
    }
}

/// What a control event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Hold {
        reason: String,
    },
    Release,
    Recover,
    KeysAdd {
        key: String,
        roles: Vec<Role>,
    },
    KeysRevoke {
        key: String,
    },
    /// Write a quarantined body into the log, as a new batch.
    QuarantineRelease {
        id: u64,
    },
    /// Keep a quarantined body out of the log for good.
    QuarantineDrop {
        id: u64,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Hold { .. } => "hold",
            Action::Release => "release",
            Action::Recover => "recover",
            Action::KeysAdd { .. } => "keys-add",
            Action::KeysRevoke { .. } => "keys-revoke",
            Action::QuarantineRelease { .. } => "quarantine-release",
            Action::QuarantineDrop { .. } => "quarantine-drop",
        }
    }

    /// The role an action needs.
    pub fn role(&self) -> Role {
        match self {
            Action::Hold { .. }
            | Action::Release
            | Action::Recover
            | Action::QuarantineRelease { .. }
            | Action::QuarantineDrop { .. } => Role::Operator,
            Action::KeysAdd { .. } | Action::KeysRevoke { .. } => Role::Admin,
        }
    }

    /// The mode machine's event, for the actions that change the mode.
    pub fn mode_event(&self) -> Option<crate::Event> {
        match self {
            Action::Hold { .. } => Some(crate::Event::PlaceHold),
            Action::Release => Some(crate::Event::ReleaseHold),
            Action::Recover => Some(crate::Event::BeginRecovery),
            Action::KeysAdd { .. }
            | Action::KeysRevoke { .. }
            | Action::QuarantineRelease { .. }
            | Action::QuarantineDrop { .. } => None,
        }
    }

    /// The quarantined body an action settles.
    pub fn quarantine_id(&self) -> Option<u64> {
        match self {
            Action::QuarantineRelease { id } | Action::QuarantineDrop { id } => Some(*id),
            _ => None,
        }
    }
}

/// A control event's text, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlEvent {
    pub origin: String,
    pub action: Action,
    pub seq: u64,
    pub expires_ns: u64,
}

fn one_line(s: &str) -> bool {
    !s.is_empty() && !s.contains('\n')
}

impl ControlEvent {
    /// The text to sign.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{HEADER}\norigin {}\naction {}\nseq {}\nexpires {}\n",
            self.origin,
            self.action.name(),
            self.seq,
            self.expires_ns
        );
        match &self.action {
            Action::Hold { reason } => t.push_str(&format!("argument {reason}\n")),
            Action::KeysAdd { key, roles } => {
                let roles: Vec<&str> = roles.iter().map(|r| r.name()).collect();
                t.push_str(&format!("argument {key}\nroles {}\n", roles.join(",")));
            }
            Action::KeysRevoke { key } => t.push_str(&format!("argument {key}\n")),
            Action::QuarantineRelease { id } | Action::QuarantineDrop { id } => {
                t.push_str(&format!("argument {id}\n"));
            }
            Action::Release | Action::Recover => {}
        }
        t
    }

    /// Parses a text exactly as [`ControlEvent::text`] writes it.
    pub fn parse(text: &str) -> Result<ControlEvent, String> {
        let body = text.strip_suffix('\n').ok_or("the text does not end with a newline")?;
        let mut lines = body.split('\n');
        let header = lines.next().unwrap_or_default();
        if header != HEADER {
            return Err(format!("first line {header:?} is not {HEADER:?}"));
        }
        let mut field = |name: &str| -> Result<String, String> {
            let line = lines.next().ok_or_else(|| format!("missing line {name:?}"))?;
            line.strip_prefix(&format!("{name} "))
                .filter(|v| one_line(v))
                .map(str::to_owned)
                .ok_or_else(|| format!("expected {name:?}, found {line:?}"))
        };
        let number = |name: &str, v: String| v.parse::<u64>().map_err(|_| format!("{name}: {v:?} is not a decimal"));
        let origin = field("origin")?;
        let action = field("action")?;
        let seq = number("seq", field("seq")?)?;
        let expires_ns = number("expires", field("expires")?)?;
        let action = match action.as_str() {
            "hold" => Action::Hold { reason: field("argument")? },
            "release" => Action::Release,
            "recover" => Action::Recover,
            "keys-add" => {
                let key = field("argument")?;
                NoteVerifier::parse(&key).map_err(|e| format!("argument: {e}"))?;
                let roles = field("roles")?
                    .split(',')
                    .map(|r| Role::parse(r).ok_or_else(|| format!("roles: {r:?} is not operator, admin or auditor")))
                    .collect::<Result<Vec<_>, _>>()?;
                Action::KeysAdd { key, roles }
            }
            "keys-revoke" => Action::KeysRevoke { key: field("argument")? },
            "quarantine-release" => Action::QuarantineRelease { id: number("argument", field("argument")?)? },
            "quarantine-drop" => Action::QuarantineDrop { id: number("argument", field("argument")?)? },
            other => {
                return Err(format!(
                    "action {other:?} is not hold, release, recover, keys-add, keys-revoke, quarantine-release \
                     or quarantine-drop"
                ));
            }
        };
        if lines.next().is_some() {
            return Err("lines after the last field".into());
        }
        let e = ControlEvent { origin, action, seq, expires_ns };
        // Exactly one way to write an event: what was signed is what is read.
        if e.text() != text {
            return Err("not in canonical form".into());
        }
        Ok(e)
    }
}

/// Why a control event was refused. Each is recorded as an audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a control event: {0}")]
    Malformed(String),
    #[error("for log {0:?}, not this one")]
    OtherLog(String),
    #[error("signed by no registered key")]
    UnknownKey,
    #[error("signed by {0}, which was revoked")]
    RevokedKey(String),
    #[error("signed by {key}, whose roles do not include {needed}")]
    WrongRole { key: String, needed: &'static str },
    #[error("the signature of {0} does not verify")]
    BadSignature(String),
    #[error("seq {seq} is not beyond {last}, the last accepted from {key}: a replay")]
    Replayed { key: String, seq: u64, last: u64 },
    #[error("expired at {expires_ns} (now {now_ns})")]
    Expired { expires_ns: u64, now_ns: u64 },
    #[error("expires at {expires_ns}, more than a day after now ({now_ns})")]
    TooFarAhead { expires_ns: u64, now_ns: u64 },
    #[error("{action} is refused in mode {mode}: {why}")]
    IllegalInMode { action: &'static str, mode: &'static str, why: &'static str },
    #[error("{0} is registered already (a key is added once; for other roles, add a new key)")]
    KeyExists(String),
    #[error("no registered key is {0} (name+keyid, as `chronos control status` lists them)")]
    NoSuchKey(String),
    #[error("no quarantined body has id {0}")]
    UnknownQuarantine(u64),
    #[error("quarantined body {0} cannot be read: {1}")]
    QuarantineUnreadable(u64, String),
    #[error("quarantined body {0} was already released or dropped")]
    QuarantineSettled(u64),
}

impl Refusal {
    /// A short, stable name (metrics labels, audit kinds).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::OtherLog(_) => "other_log",
            Refusal::UnknownKey => "unknown_key",
            Refusal::RevokedKey(_) => "revoked_key",
            Refusal::WrongRole { .. } => "wrong_role",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::Replayed { .. } => "replayed",
            Refusal::Expired { .. } => "expired",
            Refusal::TooFarAhead { .. } => "too_far_ahead",
            Refusal::IllegalInMode { .. } => "illegal_in_mode",
            Refusal::KeyExists(_) => "key_exists",
            Refusal::NoSuchKey(_) => "no_such_key",
            Refusal::UnknownQuarantine(_) => "unknown_quarantine",
            Refusal::QuarantineUnreadable(..) => "quarantine_unreadable",
            Refusal::QuarantineSettled(_) => "quarantine_settled",
        }
    }
}

/// A registered key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub verifier: NoteVerifier,
    pub roles: Vec<Role>,
    pub revoked: bool,
    /// The last accepted `seq` signed by it.
    pub last_seq: u64,
}

/// The operators' keys, by their `name+keyid` (what a signature line names).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    keys: BTreeMap<String, KeyEntry>,
}

/// How a key is named in events and audit: `name+keyid` (8 hex digits).
pub fn key_ref(name: &str, id: u32) -> String {
    format!("{name}+{id:08x}")
}

impl Registry {
    /// Registers `verifier` with `roles` (the first admin comes from the
    /// operator's configuration; later keys through signed keys-add).
    pub fn add(&mut self, verifier: NoteVerifier, roles: Vec<Role>) {
        let r = key_ref(verifier.name(), verifier.key_id());
        self.keys.insert(r, KeyEntry { verifier, roles, revoked: false, last_seq: 0 });
    }

    pub fn get(&self, key: &str) -> Option<&KeyEntry> {
        self.keys.get(key)
    }

    /// Every key, by its `name+keyid`.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &KeyEntry)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a signed control event for `origin` at `now_ns` in `mode`
    /// and, when it passes, records its `seq` (it cannot be used again) and
    /// applies a key change. Returns the event and the signing key.
    pub fn accept(
        &mut self,
        note: &str,
        origin: &str,
        now_ns: u64,
        mode: crate::Mode,
    ) -> Result<(ControlEvent, String), Refusal> {
        self.accept_at(note, origin, Some(now_ns), mode, |_| Ok(()))
    }

    /// [`accept`](Self::accept) with the caller's own last check `also`
    /// (what the registry cannot know: whether a quarantined body exists
    /// and is still pending). For an event read back from the ledger,
    /// `now_ns` is `None`: its expiry is not checked again (it was, when
    /// the orchestrator accepted it; the batch's time says when that was).
    pub fn accept_at(
        &mut self,
        note: &str,
        origin: &str,
        now_ns: Option<u64>,
        mode: crate::Mode,
        also: impl FnOnce(&ControlEvent) -> Result<(), Refusal>,
    ) -> Result<(ControlEvent, String), Refusal> {
        let note = Note::parse(note.as_bytes()).map_err(|e| Refusal::Malformed(e.to_string()))?;
        // The signer: the one signature line naming a registered key.
        let signer = note
            .signatures()
            .iter()
            .map(|s| key_ref(&s.name, s.key_id))
            .find(|r| self.keys.contains_key(r))
            .ok_or(Refusal::UnknownKey)?;
        let entry = &self.keys[&signer];
        if entry.revoked {
            return Err(Refusal::RevokedKey(signer));
        }
        let text = note.verify(&entry.verifier).map_err(|_| Refusal::BadSignature(signer.clone()))?;
        let event = ControlEvent::parse(text).map_err(Refusal::Malformed)?;
        if event.origin != origin {
            return Err(Refusal::OtherLog(event.origin));
        }
        let needed = event.action.role();
        if !entry.roles.contains(&needed) {
            return Err(Refusal::WrongRole { key: signer, needed: needed.name() });
        }
        if event.seq <= entry.last_seq {
            return Err(Refusal::Replayed { key: signer, seq: event.seq, last: entry.last_seq });
        }
        if let Some(now_ns) = now_ns {
            if event.expires_ns <= now_ns {
                return Err(Refusal::Expired { expires_ns: event.expires_ns, now_ns });
            }
            if event.expires_ns - now_ns > MAX_LIFETIME_NS {
                return Err(Refusal::TooFarAhead { expires_ns: event.expires_ns, now_ns });
            }
        }
        if let Some(e) = event.action.mode_event()
            && let crate::Outcome::Refused(why) = crate::transition(mode, e)
        {
            return Err(Refusal::IllegalInMode { action: event.action.name(), mode: mode.name(), why });
        }
        // A key is registered once (its replay protection and revocation
        // are never reset; new roles need a new key) and only a registered
        // key is revoked.
        let added = match &event.action {
            Action::KeysAdd { key, .. } => {
                let v = NoteVerifier::parse(key).map_err(|e| Refusal::Malformed(e.to_string()))?;
                let r = key_ref(v.name(), v.key_id());
                if self.keys.contains_key(&r) {
                    return Err(Refusal::KeyExists(r));
                }
                Some(v)
            }
            Action::KeysRevoke { key } if !self.keys.contains_key(key) => return Err(Refusal::NoSuchKey(key.clone())),
            _ => None,
        };
        // The caller's own checks (the quarantine's state), last, before
        // anything changes.
        also(&event)?;
        if let (Some(v), Action::KeysAdd { roles, .. }) = (added, &event.action) {
            self.add(v, roles.clone());
        }
        if let Action::KeysRevoke { key } = &event.action
            && let Some(k) = self.keys.get_mut(key)
        {
            k.revoked = true;
        }
        if let Some(k) = self.keys.get_mut(&signer) {
            k.last_seq = event.seq;
        }
        Ok((event, signer))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chronos_ledger::NoteSigner;

    use super::*;
    use crate::Mode;

    const ORIGIN: &str = "example.com/chronos/log";
    const NOW: u64 = 1_800_000_000_000_000_000;

    fn event(action: Action, seq: u64) -> ControlEvent {
        ControlEvent { origin: ORIGIN.into(), action, seq, expires_ns: NOW + 60_000_000_000 }
    }

    fn setup() -> (Registry, NoteSigner, NoteSigner, NoteSigner) {
        let admin = NoteSigner::from_seed("admin", &[1; 32]).unwrap();
        let op = NoteSigner::from_seed("alice", &[2; 32]).unwrap();
        let auditor = NoteSigner::from_seed("audit", &[3; 32]).unwrap();
        let mut r = Registry::default();
        r.add(admin.verifier(), vec![Role::Admin]);
        r.add(op.verifier(), vec![Role::Operator]);
        r.add(auditor.verifier(), vec![Role::Auditor]);
        (r, admin, op, auditor)
    }

    #[test]
    fn texts_round_trip_and_only_the_canonical_form_parses() {
        let k = NoteSigner::from_seed("bob", &[9; 32]).unwrap().verifier().to_string();
        for a in [
            Action::Hold { reason: "disk replaced".into() },
            Action::Release,
            Action::Recover,
            Action::KeysAdd { key: k.clone(), roles: vec![Role::Operator, Role::Auditor] },
            Action::KeysRevoke { key: "bob+01020304".into() },
            Action::QuarantineRelease { id: 17 },
            Action::QuarantineDrop { id: 18 },
        ] {
            let e = event(a, 7);
            assert_eq!(ControlEvent::parse(&e.text()).unwrap(), e);
        }
        let t = event(Action::Release, 7).text();
        assert!(ControlEvent::parse(&t.replace("seq 7", "seq 07")).is_err());
        assert!(ControlEvent::parse(&format!("{t}extra 1\n")).is_err());
        assert!(ControlEvent::parse(&t.replace(HEADER, "chronos/control-event@v2")).is_err());
        assert!(ControlEvent::parse(&t.replace("action release", "action delete")).is_err());
    }

    #[test]
    fn an_operator_holds_and_releases_and_each_bad_event_is_refused_for_its_own_reason() {
        let (mut r, admin, op, auditor) = setup();
        let sign = |s: &NoteSigner, e: &ControlEvent| s.sign(&e.text()).unwrap();
        let hold = sign(&op, &event(Action::Hold { reason: "investigating".into() }, 1));
        let (e, by) = r.accept(&hold, ORIGIN, NOW, Mode::Active).unwrap();
        assert_eq!((e.action.name(), by.starts_with("alice+")), ("hold", true));

        let refusal = |r: &mut Registry, note: &str, mode: Mode| r.accept(note, ORIGIN, NOW, mode).unwrap_err().label();
        assert_eq!(refusal(&mut r, &hold, Mode::Hold), "replayed", "the same event again");
        let other = NoteSigner::from_seed("mallory", &[4; 32]).unwrap();
        assert_eq!(refusal(&mut r, &sign(&other, &event(Action::Release, 9)), Mode::Hold), "unknown_key");
        assert_eq!(refusal(&mut r, &sign(&auditor, &event(Action::Release, 9)), Mode::Hold), "wrong_role");
        assert_eq!(refusal(&mut r, &sign(&admin, &event(Action::Release, 9)), Mode::Hold), "wrong_role");
        let mut expired = event(Action::Release, 9);
        expired.expires_ns = NOW - 1;
        assert_eq!(refusal(&mut r, &sign(&op, &expired), Mode::Hold), "expired");
        let mut far = event(Action::Release, 9);
        far.expires_ns = NOW + MAX_LIFETIME_NS + 1;
        assert_eq!(refusal(&mut r, &sign(&op, &far), Mode::Hold), "too_far_ahead");
        let mut foreign = event(Action::Release, 9);
        foreign.origin = "example.com/other".into();
        assert_eq!(refusal(&mut r, &sign(&op, &foreign), Mode::Hold), "other_log");
        let tampered = sign(&op, &event(Action::Release, 9)).replace("seq 9", "seq 8");
        assert_eq!(refusal(&mut r, &tampered, Mode::Hold), "bad_signature");
        assert_eq!(
            refusal(&mut r, &sign(&op, &event(Action::Hold { reason: "again".into() }, 9)), Mode::Hold),
            "illegal_in_mode"
        );
        assert_eq!(refusal(&mut r, "not a note", Mode::Hold), "malformed");
        // None of the refusals used up a seq: the release with seq 2 passes.
        let release = sign(&op, &event(Action::Release, 2));
        assert_eq!(r.accept(&release, ORIGIN, NOW, Mode::Hold).unwrap().0.action, Action::Release);
    }

    #[test]
    fn an_admin_adds_and_revokes_keys_and_a_revoked_key_signs_nothing_more() {
        let (mut r, admin, _, _) = setup();
        let bob = NoteSigner::from_seed("bob", &[5; 32]).unwrap();
        let add = event(Action::KeysAdd { key: bob.verifier().to_string(), roles: vec![Role::Operator] }, 1);
        r.accept(&admin.sign(&add.text()).unwrap(), ORIGIN, NOW, Mode::Active).unwrap();
        let hold = bob.sign(&event(Action::Hold { reason: "bob".into() }, 1).text()).unwrap();
        r.accept(&hold, ORIGIN, NOW, Mode::Active).unwrap();
        let bob_ref = format!("bob+{:08x}", bob.key_id());
        let revoke = event(Action::KeysRevoke { key: bob_ref.clone() }, 2);
        r.accept(&admin.sign(&revoke.text()).unwrap(), ORIGIN, NOW, Mode::Hold).unwrap();
        assert!(r.get(&bob_ref).unwrap().revoked);
        let release = bob.sign(&event(Action::Release, 2).text()).unwrap();
        assert_eq!(r.accept(&release, ORIGIN, NOW, Mode::Hold).unwrap_err().label(), "revoked_key");
        // Added again (to clear the revocation or the seq): refused.
        let again = event(Action::KeysAdd { key: bob.verifier().to_string(), roles: vec![Role::Operator] }, 3);
        assert_eq!(
            r.accept(&admin.sign(&again.text()).unwrap(), ORIGIN, NOW, Mode::Hold).unwrap_err().label(),
            "key_exists"
        );
        assert!(r.get(&bob_ref).unwrap().revoked);
        let typo = event(Action::KeysRevoke { key: "bob+00000000".into() }, 4);
        assert_eq!(
            r.accept(&admin.sign(&typo.text()).unwrap(), ORIGIN, NOW, Mode::Hold).unwrap_err().label(),
            "no_such_key"
        );
    }
}
