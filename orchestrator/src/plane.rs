//! The control plane as the orchestrator runs it: the log's mode machine,
//! the operators' key registry, and the control records they produce.
//!
//! The orchestrator is the only place where the mode changes. It feeds the
//! [`Plane`] what it observes (time quorum, the vault writer's circuit
//! breaker) and the signed events its control socket hands it; each
//! accepted event and each change of mode becomes a control record
//! (`chronos_control::record`), sequenced as a batch of its own like any
//! other, so the signed checkpoints cover the log's operation too. At
//! start the plane is rebuilt from those records ([`Plane::restore`]):
//! a hold outlives every restart because it is in the log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chronos_control::event::{Action, ControlEvent, Refusal, Registry, Role};
use chronos_control::record::{Hold, Record, Replay};
use chronos_control::{Event, Machine, Mode};
use chronos_ledger::{NoteVerifier, TreeHasher, payload, tree};
use chronos_vault::store::QuarantineRow;
use chronos_wire::{EventMeta, Hashed, Ingest, Reply, tag};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as MetricsRegistry;

/// The control plane's settings, validated by the caller.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The Unix socket `chronos control` submits to (created 0600).
    pub socket: PathBuf,
    /// The keys the log starts with (verifier key, roles), from the
    /// configuration; recorded in the log (a genesis record) with the first
    /// accepted event, and ignored once recorded: later changes go through
    /// signed events.
    pub genesis: Vec<(String, Vec<Role>)>,
    /// Where the mode is published for ingest (and people): written
    /// atomically at each change.
    pub mode_file: PathBuf,
    /// Present while the vault writer's circuit breaker is open.
    pub breaker_file: PathBuf,
    /// The time policy `accept`: writes go on without a quorum (degraded).
    pub accept_without_quorum: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub refusal: String,
}

/// The control plane's metrics.
#[derive(Debug, Clone, Default)]
pub struct ControlMetrics {
    /// 1 for the current mode, 0 for the others.
    pub mode: Family<ModeLabel, Gauge>,
    pub transitions: Family<TransitionLabel, Counter>,
    pub accepted: Counter,
    pub refused: Family<RefusalLabel, Counter>,
}

impl ControlMetrics {
    pub fn register(&self, r: &mut MetricsRegistry) {
        r.register("chronos_mode", "1 for the log's current mode", self.mode.clone());
        r.register("chronos_mode_transitions", "Changes of the log's mode", self.transitions.clone());
        r.register("chronos_control_events_accepted", "Signed control events accepted", self.accepted.clone());
        r.register("chronos_control_events_refused", "Control events refused, by reason", self.refused.clone());
    }
}

/// What `chronos control status` shows; shared with the socket.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub mode: String,
    pub hold: Option<Hold>,
    pub recovering: bool,
    pub quorum: bool,
    pub vault_ok: bool,
    /// `name+keyid`, roles, revoked.
    pub keys: Vec<(String, Vec<&'static str>, bool)>,
    pub genesis_recorded: bool,
}

/// What an accepted event asks the orchestrator to sequence: its control
/// records, and for a release the quarantined body's events (in the same
/// batch, after the records).
#[derive(Debug)]
pub struct Submitted {
    pub records: Vec<Record>,
    pub release: Option<Release>,
}

/// A quarantined body to write into the log, read and decoded before its
/// release was accepted.
#[derive(Debug)]
pub struct Release {
    pub id: u64,
    /// The body's idempotency key.
    pub digest: [u8; 32],
    pub events: Vec<payload::Event>,
}

/// The plane.
#[derive(Debug)]
pub struct Plane {
    origin: String,
    machine: Machine,
    registry: Registry,
    held: Option<Hold>,
    /// Quarantined bodies released or dropped.
    settled: std::collections::BTreeSet<u64>,
    genesis: Option<Record>,
    settings: ControlSettings,
    snapshot: Arc<Mutex<Snapshot>>,
    metrics: ControlMetrics,
}

impl Plane {
    /// The plane as the log's control records leave it. `Err`: a record
    /// the log should never have accepted (the history was tampered with).
    pub fn restore(
        origin: &str,
        records: &[(u64, u64, Vec<u8>)],
        settings: ControlSettings,
        metrics: ControlMetrics,
    ) -> Result<Plane, String> {
        let mut replay = Replay::new(origin);
        for (leaf, _, bytes) in records {
            let record = Record::parse(bytes).map_err(|e| format!("control record at leaf {leaf}: {e}"))?;
            replay.apply(&record).map_err(|e| format!("control record at leaf {leaf}: {e}"))?;
        }
        let mut registry = replay.registry.clone();
        let genesis = if replay.has_genesis() {
            None
        } else {
            for (key, roles) in &settings.genesis {
                let v = NoteVerifier::parse(key).map_err(|e| format!("control key {key:?}: {e}"))?;
                registry.add(v, roles.clone());
            }
            Some(Record::Genesis { keys: settings.genesis.clone() })
        };
        // The facts as the recorded mode implies them; what is observed next
        // moves the machine (and is recorded) as the table says.
        let machine = Machine {
            mode: replay.mode,
            quorum: replay.mode != Mode::Degraded,
            vault_ok: replay.mode != Mode::Isolated,
            held: replay.held.is_some(),
            recovering: replay.recovering,
        };
        let plane = Plane {
            origin: origin.to_owned(),
            machine,
            registry,
            held: replay.held,
            settled: replay.settled,
            genesis,
            settings,
            snapshot: Arc::default(),
            metrics,
        };
        plane.publish();
        Ok(plane)
    }

    pub fn snapshot(&self) -> Arc<Mutex<Snapshot>> {
        self.snapshot.clone()
    }

    pub fn mode(&self) -> Mode {
        self.machine.mode
    }

    pub fn recovering(&self) -> bool {
        self.machine.recovering && self.machine.mode == Mode::Recovery
    }

    /// `None` when data batches may be written now; else why not (the
    /// mode, named, and what lifts it).
    pub fn refusal(&self) -> Option<String> {
        if self.machine.writes(self.settings.accept_without_quorum) {
            return None;
        }
        Some(match self.machine.mode {
            Mode::Hold => match &self.held {
                Some(h) => format!("the log is in mode hold, {h}; only a signed release lifts it"),
                None => "the log is in mode hold; only a signed release lifts it".into(),
            },
            Mode::Recovery => "the log is in mode recovery: writes wait until the restored state is verified".into(),
            Mode::Isolated => {
                "the log is in mode isolated: the vault cannot commit (PostgreSQL is unreachable; its circuit is open)"
                    .into()
            }
            Mode::Degraded => "the log is in mode degraded: no time quorum, and the time policy refuses".into(),
            Mode::Starting | Mode::Active => format!("the log is in mode {}", self.machine.mode.name()),
        })
    }

    /// Applies what was observed; returns the records of a mode change.
    pub fn observe(&mut self, quorum: bool, vault_ok: bool) -> Vec<Record> {
        let mut out = Vec::new();
        if quorum != self.machine.quorum {
            out.extend(self.apply(if quorum { Event::QuorumBack } else { Event::QuorumLost }));
        }
        if vault_ok != self.machine.vault_ok {
            out.extend(self.apply(if vault_ok { Event::VaultBack } else { Event::VaultFailing }));
        }
        out
    }

    /// A recovery's rejoin was verified.
    pub fn rejoin(&mut self) -> Vec<Record> {
        self.apply(Event::RejoinVerified).into_iter().collect()
    }

    fn apply(&mut self, event: Event) -> Option<Record> {
        let a = self.machine.apply(event);
        if a.from != a.to {
            self.metrics
                .transitions
                .get_or_create(&TransitionLabel { from: a.from.name().into(), to: a.to.name().into() })
                .inc();
            tracing::warn!(from = a.from.name(), to = a.to.name(), cause = event.token(), "mode changed");
        }
        self.publish();
        (a.from != a.to && a.refused.is_none()).then_some(Record::Transition { from: a.from, to: a.to, cause: event })
    }

    /// Checks a signed control event and applies it: the records to
    /// sequence (the genesis first if it is not in the log yet, the event,
    /// and the transition it caused), or the refusal.
    pub fn submit(
        &mut self,
        note: &str,
        now_ns: u64,
        max_decoded: usize,
        lookup: impl FnOnce(u64) -> Result<Option<QuarantineRow>, String>,
    ) -> Result<Submitted, Refusal> {
        let (settled, writes) = (&self.settled, self.refusal().is_none());
        let mut release = None;
        let quarantine = |e: &ControlEvent| {
            let Some(id) = e.action.quarantine_id() else { return Ok(()) };
            if settled.contains(&id) {
                return Err(Refusal::QuarantineSettled(id));
            }
            if let Action::QuarantineRelease { .. } = e.action
                && !writes
            {
                let why = "the log refuses writes in this mode";
                return Err(Refusal::IllegalInMode { action: e.action.name(), mode: self.machine.mode.name(), why });
            }
            let row = lookup(id).map_err(|why| Refusal::QuarantineUnreadable(id, why))?;
            let row = row.ok_or(Refusal::UnknownQuarantine(id))?;
            if let Action::QuarantineRelease { .. } = e.action {
                // Decoded now, so that a body that cannot be written is
                // refused before anything changes.
                let events = payload::decode(1, &row.payload, row.event_count, max_decoded)
                    .map_err(|err| Refusal::QuarantineUnreadable(id, format!("its payload: {err}")))?;
                release = Some(Release { id, digest: row.digest, events });
            }
            Ok(())
        };
        let result = self.registry.accept_at(note, &self.origin, Some(now_ns), self.machine.mode, quarantine);
        let (event, signer) = match result {
            Ok(ok) => ok,
            Err(r) => {
                self.metrics.refused.get_or_create(&RefusalLabel { refusal: r.label().into() }).inc();
                return Err(r);
            }
        };
        self.metrics.accepted.inc();
        tracing::warn!(action = event.action.name(), key = signer, "control event accepted");
        let mut out: Vec<Record> = self.genesis.take().into_iter().collect();
        out.push(Record::Event { note: note.to_owned() });
        match &event.action {
            Action::Hold { reason } => self.held = Some(Hold { reason: reason.clone(), by: signer.clone() }),
            Action::Release => self.held = None,
            Action::QuarantineRelease { id } | Action::QuarantineDrop { id } => {
                self.settled.insert(*id);
            }
            Action::Recover | Action::KeysAdd { .. } | Action::KeysRevoke { .. } => {}
        }
        if let Some(e) = event.action.mode_event() {
            out.extend(self.apply(e));
        }
        self.publish();
        Ok(Submitted { records: out, release })
    }

    /// Writes the mode file, the status snapshot and the mode gauge.
    fn publish(&self) {
        let mode = self.machine.mode;
        for m in Mode::ALL {
            self.metrics.mode.get_or_create(&ModeLabel { mode: m.name().into() }).set(i64::from(m == mode));
        }
        let writes = self.refusal().is_none();
        let text = format!(
            "{}\n{}\n{}\n",
            mode.name(),
            if writes { "writes" } else { "refuses" },
            self.refusal().unwrap_or_default()
        );
        let tmp = self.settings.mode_file.with_extension("tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.settings.mode_file));
        if let Err(e) = written {
            tracing::error!(file = %self.settings.mode_file.display(), error = %e, "cannot publish the mode");
        }
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Snapshot {
                mode: mode.name().into(),
                hold: self.held.clone(),
                recovering: self.machine.recovering,
                quorum: self.machine.quorum,
                vault_ok: self.machine.vault_ok,
                keys: self
                    .registry
                    .keys()
                    .map(|(k, e)| (k.to_owned(), e.roles.iter().map(|r| r.name()).collect(), e.revoked))
                    .collect(),
                genesis_recorded: self.genesis.is_none(),
            };
        }
    }
}

/// The `HASHED` record of a batch of control records: what a hasher would
/// have made of them. `nonce` makes its idempotency key unique (the same
/// transition can recur).
pub fn control_batch(hasher: &TreeHasher, records: &[Record], nonce: u64) -> Result<Vec<u8>, String> {
    let bytes: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    let mut keyed = b"chronos/control-batch\n".to_vec();
    keyed.extend_from_slice(&nonce.to_be_bytes());
    for b in &bytes {
        keyed.extend_from_slice(b);
    }
    let key = hasher.leaf(&keyed).0;
    let events: Vec<EventMeta<'_>> = bytes.iter().map(|b| EventMeta { bytes: b, claimed_time_ns: None }).collect();
    own_batch(hasher, &events, &key, nonce)
}

/// The `HASHED` record of a batch the orchestrator writes itself (control
/// records, a released quarantined body), answered to no ingest process.
pub fn own_batch(hasher: &TreeHasher, events: &[EventMeta<'_>], key: &[u8; 32], nonce: u64) -> Result<Vec<u8>, String> {
    let mut ingest = vec![0u8; Ingest::encoded_len(events)];
    Ingest::encode(&mut ingest, Reply { slot: Reply::CONTROL_SLOT, request: nonce }, key, events);
    let input = Ingest::decode(tag::INGEST, &ingest).map_err(|e| format!("an orchestrator's batch: {e}"))?;
    let leaves: Vec<chronos_ledger::Hash> = events.iter().map(|e| hasher.leaf(e.bytes)).collect();
    let root = tree::root(hasher, &leaves);
    let refs: Vec<payload::EventRef<'_>> =
        events.iter().map(|e| payload::EventRef { bytes: e.bytes, claimed_time_ns: e.claimed_time_ns }).collect();
    let canonical = payload::encode(&refs);
    let leaves: Vec<[u8; 32]> = leaves.iter().map(|h| h.0).collect();
    let mut out = vec![0u8; Hashed::encoded_len(&input, canonical.len())];
    Hashed::encode(&mut out, &input, &leaves, &root.0, &canonical);
    Ok(out)
}
