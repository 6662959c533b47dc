//! Control records: how the log's operation is written into the log itself.
//!
//! Every accepted control event and every mode transition becomes a leaf
//! of the log, in a batch of its own that holds control records only. A
//! control record's bytes begin with [`PREFIX`]; an ingested event is
//! JSON, which can never begin with `c`, so the two kinds of leaves are
//! told apart by their bytes alone and the same checkpoints cover both.
//!
//! ```text
//! chronos/control-record@v1
//! genesis
//! key <verifier key> <roles, comma-separated>        (one line per key)
//! ```
//! ```text
//! chronos/control-record@v1
//! event
//! <the signed control event, verbatim: a note>
//! ```
//! ```text
//! chronos/control-record@v1
//! transition <from mode> <to mode>
//! cause <event token>
//! ```
//!
//! [`Replay`] reads them back in order: the orchestrator rebuilds its key
//! registry, hold and recovery from them at start, and `chronos verify`
//! checks them with it (each event's signature and seq against the keys
//! the log itself recorded, each transition against the table, and that
//! no data batch was written in a mode that refuses writes).

use chronos_ledger::NoteVerifier;

use crate::event::{Action, Registry, Role};
use crate::mode::{Event, Mode, Outcome, transition};

/// The first bytes of every control record.
pub const PREFIX: &[u8] = b"chronos/control-record@v1\n";

/// Whether a leaf's bytes are a control record.
pub fn is_control(bytes: &[u8]) -> bool {
    bytes.starts_with(PREFIX)
}

/// A control record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The keys the log started with (its configuration's), recorded once,
    /// before any event.
    Genesis { keys: Vec<(String, Vec<Role>)> },
    /// An accepted signed control event: the note as it was submitted.
    Event { note: String },
    /// A change of mode and what caused it.
    Transition { from: Mode, to: Mode, cause: Event },
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = PREFIX.to_vec();
        match self {
            Record::Genesis { keys } => {
                out.extend_from_slice(b"genesis\n");
                for (key, roles) in keys {
                    let roles: Vec<&str> = roles.iter().map(|r| r.name()).collect();
                    out.extend_from_slice(format!("key {key} {}\n", roles.join(",")).as_bytes());
                }
            }
            Record::Event { note } => {
                out.extend_from_slice(b"event\n");
                out.extend_from_slice(note.as_bytes());
            }
            Record::Transition { from, to, cause } => {
                out.extend_from_slice(
                    format!("transition {} {}\ncause {}\n", from.name(), to.name(), cause.token()).as_bytes(),
                );
            }
        }
        out
    }

    /// Parses a control record exactly as [`Record::encode`] writes it.
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        let rest = bytes.strip_prefix(PREFIX).ok_or("not a control record")?;
        let rest = std::str::from_utf8(rest).map_err(|_| "not UTF-8")?;
        let (first, body) = rest.split_once('\n').ok_or("no kind line")?;
        let record = match first.split(' ').collect::<Vec<_>>().as_slice() {
            ["genesis"] => {
                let mut keys = Vec::new();
                for line in body.lines() {
                    let mut f = line.split(' ');
                    let (Some("key"), Some(key), Some(roles), None) = (f.next(), f.next(), f.next(), f.next()) else {
                        return Err(format!("genesis line {line:?} is not `key <verifier key> <roles>`"));
                    };
                    NoteVerifier::parse(key).map_err(|e| format!("genesis key {key:?}: {e}"))?;
                    let roles = roles
                        .split(',')
                        .map(|r| Role::parse(r).ok_or_else(|| format!("genesis role {r:?}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    keys.push((key.to_owned(), roles));
                }
                Record::Genesis { keys }
            }
            ["event"] => Record::Event { note: body.to_owned() },
            ["transition", from, to] => {
                let mode = |m: &str| Mode::parse(m).ok_or_else(|| format!("unknown mode {m:?}"));
                let cause = body
                    .strip_prefix("cause ")
                    .and_then(|c| c.strip_suffix('\n'))
                    .and_then(Event::parse_token)
                    .ok_or_else(|| format!("transition without a known cause: {body:?}"))?;
                Record::Transition { from: mode(from)?, to: mode(to)?, cause }
            }
            _ => return Err(format!("unknown kind line {first:?}")),
        };
        if record.encode() != bytes {
            return Err("not in canonical form".into());
        }
        Ok(record)
    }

    /// The record's kind, as `control_log.kind` stores it.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Genesis { .. } => "genesis",
            Record::Event { .. } => "event",
            Record::Transition { .. } => "transition",
        }
    }
}

/// A hold: why, and who placed it (`name+keyid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub reason: String,
    pub by: String,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "placed by {}: {:?}", self.by, self.reason)
    }
}

/// The log's operation as its control records tell it, replayed in order.
#[derive(Debug, Clone)]
pub struct Replay {
    origin: String,
    pub registry: Registry,
    /// The recorded mode (a log begins active).
    pub mode: Mode,
    /// The hold in force: its reason and the key that placed it.
    pub held: Option<Hold>,
    pub recovering: bool,
    /// Quarantined bodies released or dropped, by id.
    pub settled: std::collections::BTreeSet<u64>,
    genesis: bool,
    /// The mode event of the last accepted event, until its transition.
    pending: Option<Event>,
}

impl Replay {
    pub fn new(origin: &str) -> Replay {
        Replay {
            origin: origin.to_owned(),
            registry: Registry::default(),
            mode: Mode::Active,
            held: None,
            recovering: false,
            settled: std::collections::BTreeSet::new(),
            genesis: false,
            pending: None,
        }
    }

    /// Whether the genesis record was seen.
    pub fn has_genesis(&self) -> bool {
        self.genesis
    }

    /// Whether data batches may follow in the recorded mode (a writable
    /// mode: active, or degraded under the accept policy).
    pub fn data_allowed(&self) -> bool {
        matches!(self.mode, Mode::Active | Mode::Degraded)
    }

    /// Applies the next record; `Err` says what is wrong with it.
    pub fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Genesis { keys } => {
                if self.genesis {
                    return Err("a second genesis record".into());
                }
                self.genesis = true;
                for (key, roles) in keys {
                    let v = NoteVerifier::parse(key).map_err(|e| format!("genesis key: {e}"))?;
                    self.registry.add(v, roles.clone());
                }
            }
            Record::Event { note } => {
                if !self.genesis {
                    return Err("an event before the genesis record".into());
                }
                if let Some(p) = self.pending {
                    return Err(format!("an event while the transition of an earlier one ({}) is missing", p.token()));
                }
                let settled = &self.settled;
                let (event, signer) = self
                    .registry
                    .accept_at(note, &self.origin, None, self.mode, |e| match e.action.quarantine_id() {
                        Some(id) if settled.contains(&id) => Err(crate::event::Refusal::QuarantineSettled(id)),
                        _ => Ok(()),
                    })
                    .map_err(|r| format!("an event the log should have refused: {r}"))?;
                if let Some(id) = event.action.quarantine_id() {
                    self.settled.insert(id);
                }
                match &event.action {
                    Action::Hold { reason } => self.held = Some(Hold { reason: reason.clone(), by: signer }),
                    Action::Release => self.held = None,
                    Action::Recover => self.recovering = true,
                    Action::KeysAdd { .. }
                    | Action::KeysRevoke { .. }
                    | Action::QuarantineRelease { .. }
                    | Action::QuarantineDrop { .. } => {}
                }
                // A hold placed while starting changes no recorded mode;
                // otherwise the event's transition follows.
                if let Some(e) = event.action.mode_event()
                    && matches!(transition(self.mode, e), Outcome::To(_) | Outcome::Resolve)
                {
                    self.pending = Some(e);
                }
            }
            Record::Transition { from, to, cause } => {
                if *from != self.mode {
                    return Err(format!("a transition from {} while the log was {}", from.name(), self.mode.name()));
                }
                if !cause.is_automatic() && *cause != Event::RejoinVerified && self.pending != Some(*cause) {
                    return Err(format!(
                        "a transition caused by {} without that signed event before it",
                        cause.token()
                    ));
                }
                if cause.is_automatic() && self.pending.is_some() {
                    return Err("an automatic transition between a signed event and its transition".into());
                }
                if *cause == Event::RejoinVerified {
                    self.recovering = false;
                }
                let allowed = match transition(*from, *cause) {
                    Outcome::Refused(why) => return Err(format!("{} in {}: {why}", cause.token(), from.name())),
                    Outcome::Stay => false,
                    Outcome::To(m) => m == *to,
                    Outcome::Resolve => match (&self.held, self.recovering) {
                        (Some(_), _) => *to == Mode::Hold,
                        (None, true) => *to == Mode::Recovery,
                        (None, false) => matches!(to, Mode::Active | Mode::Degraded | Mode::Isolated),
                    },
                };
                if !allowed || from == to {
                    return Err(format!(
                        "{} → {} on {} is not what the transition table gives",
                        from.name(),
                        to.name(),
                        cause.token()
                    ));
                }
                self.pending = None;
                self.mode = *to;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chronos_ledger::NoteSigner;

    use super::*;
    use crate::event::ControlEvent;

    const ORIGIN: &str = "example.com/log";

    fn signed(s: &NoteSigner, action: Action, seq: u64) -> String {
        s.sign(&ControlEvent { origin: ORIGIN.into(), action, seq, expires_ns: 1 }.text()).unwrap()
    }

    #[test]
    fn records_round_trip_and_are_never_json() {
        let op = NoteSigner::from_seed("op", &[1; 32]).unwrap();
        for r in [
            Record::Genesis { keys: vec![(op.verifier().to_string(), vec![Role::Admin, Role::Operator])] },
            Record::Event { note: signed(&op, Action::Release, 3) },
            Record::Transition { from: Mode::Active, to: Mode::Hold, cause: Event::PlaceHold },
        ] {
            let bytes = r.encode();
            assert!(is_control(&bytes));
            assert!(serde_json_like_start(&bytes), "a control record must not parse as JSON");
            assert_eq!(Record::parse(&bytes).unwrap(), r);
        }
        let t = Record::Transition { from: Mode::Active, to: Mode::Hold, cause: Event::PlaceHold }.encode();
        let mut extra = t.clone();
        extra.extend_from_slice(b"more\n");
        assert!(Record::parse(&extra).is_err());
        assert!(Record::parse(b"{\"a\":1}").is_err());
    }

    /// JSON text starts (after whitespace) with `{`, `[`, `"`, a digit,
    /// `-`, `t`, `f` or `n`: never with `c`.
    fn serde_json_like_start(bytes: &[u8]) -> bool {
        !matches!(bytes[0], b'{' | b'[' | b'"' | b'0'..=b'9' | b'-' | b't' | b'f' | b'n' | b' ' | b'\t' | b'\n' | b'\r')
    }

    #[test]
    fn a_replay_follows_a_hold_and_its_release_and_refuses_a_forged_history() {
        let op = NoteSigner::from_seed("op", &[1; 32]).unwrap();
        let genesis = Record::Genesis { keys: vec![(op.verifier().to_string(), vec![Role::Operator])] };
        let hold = Record::Event { note: signed(&op, Action::Hold { reason: "audit".into() }, 1) };
        let to_hold = Record::Transition { from: Mode::Active, to: Mode::Hold, cause: Event::PlaceHold };
        let release = Record::Event { note: signed(&op, Action::Release, 2) };
        let to_active = Record::Transition { from: Mode::Hold, to: Mode::Active, cause: Event::ReleaseHold };

        let mut r = Replay::new(ORIGIN);
        for rec in [&genesis, &hold, &to_hold] {
            r.apply(rec).unwrap();
        }
        assert_eq!((r.mode, r.data_allowed()), (Mode::Hold, false));
        assert!(r.held.as_ref().is_some_and(|h| h.reason == "audit" && h.by.starts_with("op+")), "{:?}", r.held);
        r.apply(&release).unwrap();
        r.apply(&to_active).unwrap();
        assert!(r.data_allowed());

        // A hold's transition without its signed event.
        let mut r = Replay::new(ORIGIN);
        r.apply(&genesis).unwrap();
        assert!(r.apply(&to_hold).is_err());
        // An automatic event cannot lift a hold.
        let mut r = Replay::new(ORIGIN);
        for rec in [&genesis, &hold, &to_hold] {
            r.apply(rec).unwrap();
        }
        let lifted = Record::Transition { from: Mode::Hold, to: Mode::Active, cause: Event::QuorumBack };
        assert!(r.apply(&lifted).is_err());
        // The same event twice (a replay) is refused.
        assert!(r.apply(&hold).is_err());
        // An event before genesis, or a key nobody registered.
        assert!(Replay::new(ORIGIN).apply(&hold).is_err());
        let mallory = NoteSigner::from_seed("mallory", &[2; 32]).unwrap();
        let mut r = Replay::new(ORIGIN);
        r.apply(&genesis).unwrap();
        assert!(r.apply(&Record::Event { note: signed(&mallory, Action::Release, 9) }).is_err());
    }
}
