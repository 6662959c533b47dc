//! The log's modes and the one table of their transitions.
//!
//! A log is in one mode at a time. Two facts the machine watches decide
//! between the automatic modes (is there time quorum; can the vault
//! commit), and two facts only people change (a hold placed by a signed
//! event; a recovery begun by a signed event and ended by a verified
//! rejoin). [`transition`] is the table, (mode, event) → outcome, and
//! [`Machine`] applies it; ARCHITECTURE.md shows the table rendered by
//! [`table_markdown`] (a test keeps the two equal).

/// A log's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The start's checks are not done: nothing is written.
    Starting,
    /// Time quorum held and the vault commits: writes allowed.
    Active,
    /// No time quorum: writes as the time policy says (`refuse`: 503;
    /// `accept`: stamped `untrusted`).
    Degraded,
    /// The vault cannot commit (the circuit is open): 503 at once, nothing queued.
    Isolated,
    /// A restore or an operator's recovery is in progress: writes refused
    /// until the restored state is verified.
    Recovery,
    /// A person stopped the log: writes refused until a person releases it.
    Hold,
}

impl Mode {
    pub const ALL: [Mode; 6] =
        [Mode::Starting, Mode::Active, Mode::Degraded, Mode::Isolated, Mode::Recovery, Mode::Hold];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Starting => "starting",
            Mode::Active => "active",
            Mode::Degraded => "degraded",
            Mode::Isolated => "isolated",
            Mode::Recovery => "recovery",
            Mode::Hold => "hold",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// What can happen to a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The start's checks passed (restore, saved checkpoint, lease).
    Started,
    /// Automatic: the time service lost its quorum.
    QuorumLost,
    /// Automatic: the time service has a quorum again.
    QuorumBack,
    /// Automatic: the circuit breaker opened (consecutive failed commits).
    VaultFailing,
    /// Automatic: a half-open probe committed.
    VaultBack,
    /// Signed, operator: stop the log.
    PlaceHold,
    /// Signed, operator: lift the hold.
    ReleaseHold,
    /// Signed, operator (or a restore at start): begin a recovery.
    BeginRecovery,
    /// The restored state was checked against the last signed checkpoint
    /// and the state kept outside the database.
    RejoinVerified,
}

impl Event {
    pub const ALL: [Event; 9] = [
        Event::Started,
        Event::QuorumLost,
        Event::QuorumBack,
        Event::VaultFailing,
        Event::VaultBack,
        Event::PlaceHold,
        Event::ReleaseHold,
        Event::BeginRecovery,
        Event::RejoinVerified,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::QuorumLost => "quorum lost",
            Event::QuorumBack => "quorum back",
            Event::VaultFailing => "vault failing",
            Event::VaultBack => "vault back",
            Event::PlaceHold => "hold (signed)",
            Event::ReleaseHold => "release (signed)",
            Event::BeginRecovery => "recover (signed)",
            Event::RejoinVerified => "rejoin verified",
        }
    }

    /// One word for records and metrics labels.
    pub fn token(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::QuorumLost => "quorum-lost",
            Event::QuorumBack => "quorum-back",
            Event::VaultFailing => "vault-failing",
            Event::VaultBack => "vault-back",
            Event::PlaceHold => "hold",
            Event::ReleaseHold => "release",
            Event::BeginRecovery => "recover",
            Event::RejoinVerified => "rejoin-verified",
        }
    }

    pub fn parse_token(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.token() == s)
    }

    /// Whether the event comes from the machine's own observations (no
    /// person, no signature).
    pub fn is_automatic(self) -> bool {
        matches!(self, Event::QuorumLost | Event::QuorumBack | Event::VaultFailing | Event::VaultBack)
    }
}

/// What an event does in a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused: illegal in this mode (an audit event says so).
    Refused(&'static str),
    /// Accepted; the facts change, the mode stays.
    Stay,
    /// Accepted; the mode becomes the one the facts give: hold, else
    /// recovery, else isolated without a vault, else degraded without
    /// quorum, else active.
    Resolve,
    /// Accepted; the mode becomes this one.
    To(Mode),
}

/// The table: what `event` does in `mode`.
pub fn transition(mode: Mode, event: Event) -> Outcome {
    use Event as E;
    use Mode as M;
    match (mode, event) {
        (M::Starting, E::Started) => Outcome::Resolve,
        (_, E::Started) => Outcome::Refused("already started"),
        // Automatic events change facts; they move only between the
        // automatic modes, and never out of hold or recovery.
        (M::Starting | M::Hold | M::Recovery, e) if e.is_automatic() => Outcome::Stay,
        (M::Active | M::Degraded | M::Isolated, e) if e.is_automatic() => Outcome::Resolve,
        (M::Hold, E::PlaceHold) => Outcome::Refused("already on hold"),
        (M::Starting, E::PlaceHold) => Outcome::Stay,
        (_, E::PlaceHold) => Outcome::To(M::Hold),
        (M::Hold, E::ReleaseHold) => Outcome::Resolve,
        (M::Starting, E::ReleaseHold) => Outcome::Stay,
        (_, E::ReleaseHold) => Outcome::Refused("not on hold"),
        (M::Recovery, E::BeginRecovery) => Outcome::Refused("a recovery is already in progress"),
        (M::Starting | M::Hold, E::BeginRecovery) => Outcome::Stay,
        (_, E::BeginRecovery) => Outcome::To(M::Recovery),
        (M::Recovery, E::RejoinVerified) => Outcome::Resolve,
        (M::Hold | M::Starting, E::RejoinVerified) => Outcome::Stay,
        (_, E::RejoinVerified) => Outcome::Refused("no recovery in progress"),
        // Every automatic event is covered above; the compiler cannot see it.
        (_, _) => Outcome::Refused("not an event of this mode"),
    }
}

/// A log's mode and the facts behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub mode: Mode,
    pub quorum: bool,
    pub vault_ok: bool,
    pub held: bool,
    pub recovering: bool,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub from: Mode,
    pub to: Mode,
    /// `Some(reason)` when the event was refused (nothing changed).
    pub refused: Option<&'static str>,
}

impl Machine {
    /// A log starting: no quorum seen yet, the vault assumed reachable.
    pub fn starting() -> Machine {
        Machine { mode: Mode::Starting, quorum: false, vault_ok: true, held: false, recovering: false }
    }

    /// The mode the facts give (for a started log).
    fn resolved(&self) -> Mode {
        if self.held {
            Mode::Hold
        } else if self.recovering {
            Mode::Recovery
        } else if !self.vault_ok {
            Mode::Isolated
        } else if !self.quorum {
            Mode::Degraded
        } else {
            Mode::Active
        }
    }

    /// Applies `event` as the table says.
    pub fn apply(&mut self, event: Event) -> Applied {
        let from = self.mode;
        let outcome = transition(from, event);
        if let Outcome::Refused(why) = outcome {
            return Applied { from, to: from, refused: Some(why) };
        }
        match event {
            Event::QuorumLost => self.quorum = false,
            Event::QuorumBack => self.quorum = true,
            Event::VaultFailing => self.vault_ok = false,
            Event::VaultBack => self.vault_ok = true,
            Event::PlaceHold => self.held = true,
            Event::ReleaseHold => self.held = false,
            Event::BeginRecovery => self.recovering = true,
            Event::RejoinVerified => self.recovering = false,
            Event::Started => {}
        }
        self.mode = match outcome {
            Outcome::Stay | Outcome::Refused(_) => from,
            Outcome::Resolve => self.resolved(),
            Outcome::To(m) => m,
        };
        Applied { from, to: self.mode, refused: None }
    }

    /// Whether `POST /ingest` may commit in this mode; `accept_without_quorum`
    /// is the time policy `accept`.
    pub fn writes(&self, accept_without_quorum: bool) -> bool {
        match self.mode {
            Mode::Active => true,
            Mode::Degraded => accept_without_quorum,
            Mode::Starting | Mode::Isolated | Mode::Recovery | Mode::Hold => false,
        }
    }
}

fn outcome_text(o: Outcome) -> String {
    match o {
        Outcome::Refused(why) => format!("refused: {why}"),
        Outcome::Stay => "stays".into(),
        Outcome::Resolve => "by the facts".into(),
        Outcome::To(m) => format!("→ {}", m.name()),
    }
}

/// The table as Markdown: a row per mode, a column per event.
pub fn table_markdown() -> String {
    let mut out = String::from("| mode \\ event |");
    for e in Event::ALL {
        out.push_str(&format!(" {} |", e.name()));
    }
    out.push_str("\n|---|");
    for _ in Event::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for m in Mode::ALL {
        out.push_str(&format!("| **{}** |", m.name()));
        for e in Event::ALL {
            out.push_str(&format!(" {} |", outcome_text(transition(m, e))));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every state a log can be in: each mode with each combination of facts
    /// that can hold in it, reached by events from the start.
    fn reachable() -> Vec<Machine> {
        let mut seen = vec![Machine::starting()];
        let mut i = 0;
        while i < seen.len() {
            for e in Event::ALL {
                let mut m = seen[i];
                m.apply(e);
                if !seen.contains(&m) {
                    seen.push(m);
                }
            }
            i += 1;
        }
        seen
    }

    #[test]
    fn every_mode_is_reachable_and_every_pair_has_an_outcome() {
        let states = reachable();
        for mode in Mode::ALL {
            assert!(states.iter().any(|s| s.mode == mode), "{mode:?} is unreachable");
        }
        for m in Mode::ALL {
            for e in Event::ALL {
                assert_ne!(transition(m, e), Outcome::Refused("not an event of this mode"), "{m:?} × {e:?}");
            }
        }
    }

    #[test]
    fn nothing_automatic_leaves_or_enters_a_hold_or_a_recovery() {
        for s in reachable() {
            for e in Event::ALL.into_iter().filter(|e| e.is_automatic()) {
                let mut m = s;
                let a = m.apply(e);
                assert_eq!(a.refused, None, "{s:?} × {e:?}");
                assert_eq!((m.held, m.recovering), (s.held, s.recovering), "{s:?} × {e:?}");
                if matches!(s.mode, Mode::Hold | Mode::Recovery | Mode::Starting) {
                    assert_eq!(m.mode, s.mode, "{s:?} × {e:?}");
                } else {
                    assert!(matches!(m.mode, Mode::Active | Mode::Degraded | Mode::Isolated), "{s:?} × {e:?} → {m:?}");
                }
            }
        }
    }

    #[test]
    fn only_a_release_leaves_a_hold_and_only_a_verified_rejoin_a_recovery() {
        for s in reachable() {
            for e in Event::ALL {
                let mut m = s;
                m.apply(e);
                if s.mode == Mode::Hold && m.mode != Mode::Hold {
                    assert_eq!(e, Event::ReleaseHold, "{s:?} left hold on {e:?}");
                }
                if s.mode == Mode::Recovery && m.mode != Mode::Recovery {
                    assert!(matches!(e, Event::RejoinVerified | Event::PlaceHold), "{s:?} left recovery on {e:?}");
                    if e == Event::PlaceHold {
                        assert!(m.recovering, "a hold keeps the recovery pending: {m:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn writes_only_when_active_or_degraded_under_accept() {
        for s in reachable() {
            assert_eq!(s.writes(false), s.mode == Mode::Active, "{s:?}");
            assert_eq!(s.writes(true), matches!(s.mode, Mode::Active | Mode::Degraded), "{s:?}");
        }
    }

    #[test]
    fn a_hold_survives_failures_and_their_repair_and_is_released_to_what_the_facts_say() {
        let mut m = Machine::starting();
        m.apply(Event::QuorumBack);
        assert_eq!(m.apply(Event::Started).to, Mode::Active);
        assert_eq!(m.apply(Event::PlaceHold).to, Mode::Hold);
        for e in [Event::VaultFailing, Event::QuorumLost, Event::VaultBack, Event::VaultFailing] {
            assert_eq!(m.apply(e).to, Mode::Hold, "{e:?}");
        }
        assert_eq!(m.apply(Event::PlaceHold).refused, Some("already on hold"));
        assert_eq!(m.apply(Event::ReleaseHold).to, Mode::Isolated, "released into the vault's failure");
        assert_eq!(m.apply(Event::ReleaseHold).refused, Some("not on hold"));
        assert_eq!(m.apply(Event::VaultBack).to, Mode::Degraded);
        assert_eq!(m.apply(Event::QuorumBack).to, Mode::Active);
    }

    #[test]
    fn the_table_in_architecture_md_is_this_one() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ARCHITECTURE.md")).unwrap();
        assert!(
            doc.contains(&table_markdown()),
            "ARCHITECTURE.md's mode table differs from the code's:\n{}",
            table_markdown()
        );
    }
}
