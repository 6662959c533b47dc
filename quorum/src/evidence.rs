//! The evidence of a round: every source's measurement and verdict, the
//! rules, and the agreed interval, in a canonical text whose SHA-256 a
//! batch's time source names. Anyone can check it again: the digest over
//! the stored text, then the selection recomputed from the measurements
//! ([`Evidence::check`]), then a batch's time against the agreement
//! ([`Evidence::admits`]).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::interval::{Interval, drift_ns};
use crate::select::{Rules, Verdict, combine, select};

/// Prefixed to the text before hashing, so that an evidence digest can
/// never be mistaken for the digest of anything else.
const DOMAIN: &[u8] = b"chronos/time-evidence@v1\n";

/// One round's evidence. Serialized by [`Evidence::seal`]; field order is
/// the text's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The round's number (increasing for the life of the log).
    pub round: u64,
    /// The selection's rules.
    pub configured: usize,
    pub min_agreeing: usize,
    pub max_distance_ns: u64,
    /// How the agreement is carried afterwards.
    pub max_drift_ppm: u64,
    pub holdover_ns: u64,
    /// Every configured source, in configuration order.
    pub sources: Vec<SourceRecord>,
    /// The agreed interval, if the sources agreed.
    pub agreed: Option<Interval>,
    /// A Roughtime malfeasance report (its JSON, draft-ietf-ntp-roughtime
    /// §8.4), when two chained answers of the round contradict their order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malfeasance: Option<String>,
}

/// What one source gave in a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    /// `ntp`, `roughtime`, `peer`.
    pub kind: String,
    pub address: String,
    pub outcome: Outcome,
}

/// A source's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Outcome {
    /// It answered: its interval carried to the round's instant, how the
    /// selection judged it, and what the exchange measured.
    Measured {
        interval: Interval,
        verdict: VerdictRecord,
        offset_ns: i64,
        delay_ns: u64,
        /// The answer itself (for example an NTP reply in hex, a Roughtime
        /// response in base64), kept as found.
        answer: String,
    },
    /// It did not answer usably; why.
    Unreachable { reason: String },
}

/// [`Verdict`] in the evidence's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictRecord {
    Agreeing,
    Falseticker,
    TooFar,
    NoQuorum,
}

impl From<Verdict> for VerdictRecord {
    fn from(v: Verdict) -> VerdictRecord {
        match v {
            Verdict::Agreeing => VerdictRecord::Agreeing,
            Verdict::Falseticker => VerdictRecord::Falseticker,
            Verdict::TooFar => VerdictRecord::TooFar,
            Verdict::NoQuorum => VerdictRecord::NoQuorum,
        }
    }
}

/// Evidence that does not hold up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("the evidence text is not valid: {0}")]
    Syntax(String),
    #[error("the evidence's digest is {found}, not the {expected} its batch names")]
    Digest { found: String, expected: String },
    #[error("recomputing the selection gives {recomputed}, the evidence says {recorded}")]
    Selection { recomputed: String, recorded: String },
}

/// Whether a source of `kind` belongs to the peers' group, which selects
/// apart under [`Rules::peers`].
pub fn is_peer(kind: &str) -> bool {
    kind == "peer"
}

/// The selection of a round whose sources fall into two groups: external
/// sources under `external`, peers under `peers` (either group may be
/// empty: it is then left out). `measured` holds, in source order, whether
/// each answering source is a peer and its interval. Returns the combined
/// agreement and each measured source's verdict within its group.
pub fn decide(measured: &[(bool, Interval)], external: &Rules, peers: &Rules) -> (Option<Interval>, Vec<Verdict>) {
    let pick = |peer: bool| measured.iter().filter(|m| m.0 == peer).map(|m| m.1).collect::<Vec<_>>();
    let (ext, peer) = (select(&pick(false), external), select(&pick(true), peers));
    let mut groups = Vec::new();
    if external.configured > 0 {
        groups.push(ext.agreed);
    }
    if peers.configured > 0 {
        groups.push(peer.agreed);
    }
    let (mut e, mut p) = (ext.verdicts.into_iter(), peer.verdicts.into_iter());
    let verdicts =
        measured.iter().map(|m| if m.0 { p.next() } else { e.next() }.unwrap_or(Verdict::NoQuorum)).collect();
    (combine(&groups), verdicts)
}

impl Evidence {
    /// The rules of the external sources (NTP, Roughtime): a strict
    /// majority of them, and at least `min_agreeing`.
    pub fn rules(&self) -> Rules {
        let external = self.sources.iter().filter(|s| !is_peer(&s.kind)).count();
        Rules { configured: external, min_agreeing: self.min_agreeing, max_distance_ns: self.max_distance_ns }
    }

    /// The rules of the peers' group ([`Rules::peers`]).
    pub fn peer_rules(&self) -> Rules {
        Rules::peers(self.sources.iter().filter(|s| is_peer(&s.kind)).count(), self.max_distance_ns)
    }

    /// The canonical text and its digest.
    pub fn seal(&self) -> (String, [u8; 32]) {
        // Serializing plain structs of integers and strings cannot fail.
        let text = serde_json::to_string(self).unwrap_or_default();
        let d = digest(&text);
        (text, d)
    }

    /// Parses a stored text, checking it against the digest a batch names.
    pub fn open(text: &str, expected: &[u8; 32]) -> Result<Evidence, EvidenceError> {
        let found = digest(text);
        if &found != expected {
            return Err(EvidenceError::Digest { found: encode_digest(&found), expected: encode_digest(expected) });
        }
        serde_json::from_str(text).map_err(|e| EvidenceError::Syntax(e.to_string()))
    }

    /// Recomputes the selection from the measurements: the verdicts and
    /// the agreed interval must be what the rules give.
    pub fn check(&self) -> Result<(), EvidenceError> {
        if self.sources.len() != self.configured {
            return Err(EvidenceError::Selection {
                recomputed: format!("{} configured sources", self.configured),
                recorded: format!("{} source records", self.sources.len()),
            });
        }
        let measured: Vec<(bool, Interval, VerdictRecord)> = self
            .sources
            .iter()
            .filter_map(|s| match &s.outcome {
                Outcome::Measured { interval, verdict, .. } => Some((is_peer(&s.kind), *interval, *verdict)),
                Outcome::Unreachable { .. } => None,
            })
            .collect();
        let intervals: Vec<(bool, Interval)> = measured.iter().map(|m| (m.0, m.1)).collect();
        let (agreed, verdicts) = decide(&intervals, &self.rules(), &self.peer_rules());
        let verdicts: Vec<VerdictRecord> = verdicts.into_iter().map(VerdictRecord::from).collect();
        let recorded: Vec<VerdictRecord> = measured.iter().map(|m| m.2).collect();
        if agreed != self.agreed || verdicts != recorded {
            return Err(EvidenceError::Selection {
                recomputed: format!("{agreed:?} with {verdicts:?}"),
                recorded: format!("{:?} with {recorded:?}", self.agreed),
            });
        }
        Ok(())
    }

    /// Whether a batch stamped `time ± uncertainty` from this round's
    /// agreement is consistent with it: the earliest end it claims lies
    /// in the span the agreement vouches for, from its earliest end (less
    /// the drift allowed over the hold-over) to its latest end carried
    /// over the whole hold-over. Stamps are the agreement carried to the
    /// instant they were read, their earliest end never below what the
    /// clock served before (which only raises it), so an honest stamp is
    /// always admitted; a stamp naming this round's evidence for a time
    /// outside that span is not. How precise a stamp may be cannot be
    /// checked from the evidence alone (the floor of earlier rounds can
    /// narrow it).
    pub fn admits(&self, time: u64, uncertainty: u64) -> bool {
        let Some(agreed) = self.agreed else { return false };
        let earliest = time.saturating_sub(uncertainty);
        let drift = drift_ns(self.holdover_ns, self.max_drift_ppm);
        let reach = agreed.latest.saturating_add(self.holdover_ns).saturating_add(drift);
        agreed.earliest.saturating_sub(drift) <= earliest && earliest <= reach
    }
}

/// SHA-256 of the domain prefix and `text`.
pub fn digest(text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(text.as_bytes());
    h.finalize().into()
}

/// A digest as it appears in a time source: unpadded base64url.
pub fn encode_digest(d: &[u8; 32]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

/// The time source a batch records for quorum time: `quorum:K/N:<digest>`
/// (K sources agreed out of N configured; the digest names the round's
/// evidence). At most 64 characters for N < 100.
pub fn quorum_source(agreeing: usize, configured: usize, evidence: &[u8; 32]) -> String {
    format!("quorum:{agreeing}/{configured}:{}", encode_digest(evidence))
}

/// Reads a `quorum:K/N:<digest>` time source.
pub fn parse_quorum_source(source: &str) -> Option<(usize, usize, [u8; 32])> {
    let rest = source.strip_prefix("quorum:")?;
    let (counts, d) = rest.split_once(':')?;
    let (k, n) = counts.split_once('/')?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(d).ok()?;
    Some((k.parse().ok()?, n.parse().ok()?, bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(a: u64, b: u64, v: VerdictRecord) -> Outcome {
        Outcome::Measured {
            interval: Interval { earliest: a, latest: b },
            verdict: v,
            offset_ns: 0,
            delay_ns: 0,
            answer: String::new(),
        }
    }

    fn evidence() -> Evidence {
        let src = |name: &str, outcome| SourceRecord {
            name: name.into(),
            kind: "ntp".into(),
            address: "127.0.0.1:123".into(),
            outcome,
        };
        Evidence {
            round: 7,
            configured: 3,
            min_agreeing: 2,
            max_distance_ns: 1_000,
            max_drift_ppm: 100,
            holdover_ns: 1_000_000,
            sources: vec![
                src("a", measured(100, 200, VerdictRecord::Agreeing)),
                src("b", measured(150, 260, VerdictRecord::Agreeing)),
                src("c", measured(5_000, 5_100, VerdictRecord::Falseticker)),
            ],
            agreed: Some(Interval { earliest: 150, latest: 200 }),
            malfeasance: None,
        }
    }

    #[test]
    fn sealed_evidence_opens_checks_and_names_its_source() {
        let e = evidence();
        let (text, d) = e.seal();
        let opened = Evidence::open(&text, &d).unwrap();
        assert_eq!(opened, e);
        opened.check().unwrap();
        let source = quorum_source(2, 3, &d);
        assert!(source.len() <= 64, "{source}");
        assert_eq!(parse_quorum_source(&source), Some((2, 3, d)));
        assert!(e.admits(175, 25) && e.admits(1_000, 800));
        // Narrower than the agreement: its earliest end raised to what the
        // clock served before (an earlier round's floor). Honest, admitted.
        assert!(e.admits(190, 5));
        assert!(!e.admits(10, 50), "before the agreement");
        assert!(!e.admits(2_000_000, 10), "after the agreement could be carried");
    }

    #[test]
    fn an_edited_text_or_a_forged_selection_is_caught() {
        let (text, d) = evidence().seal();
        let edited = text.replace("5100", "5101");
        assert!(matches!(Evidence::open(&edited, &d), Err(EvidenceError::Digest { .. })));
        let mut forged = evidence();
        forged.agreed = Some(Interval { earliest: 100, latest: 260 });
        assert!(matches!(forged.check(), Err(EvidenceError::Selection { .. })));
        let mut hidden = evidence();
        hidden.sources[2].outcome = measured(5_000, 5_100, VerdictRecord::Agreeing);
        assert!(matches!(hidden.check(), Err(EvidenceError::Selection { .. })));
    }
}
