//! The time settings, validated once by the composition root.

use std::time::Duration;

/// What ingest and the orchestrator do when configured sources have no
/// quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Refuse writes: 503 "no time quorum" with Retry-After (the default).
    Refuse,
    /// Accept them, stamped `untrusted` with the host clock's honest
    /// uncertainty.
    Accept,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Refuse => "refuse",
            Policy::Accept => "accept",
        }
    }
}

/// The kinds of source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// An NTPv4 server (RFC 5905 client mode).
    Ntp,
    /// A Roughtime server: its long-term public key (pinned), and the
    /// protocol versions to offer (Google's alone, or the IETF ones).
    Roughtime { key: [u8; 32], versions: Vec<chronos_quorum::roughtime::Version> },
    /// A peer Chronos node, asked as a Roughtime server, in the peers'
    /// group that selects apart (`chronos_quorum::Rules::peers`).
    Peer { key: [u8; 32], versions: Vec<chronos_quorum::roughtime::Version> },
}

impl SourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::Ntp => "ntp",
            SourceKind::Roughtime { .. } => "roughtime",
            SourceKind::Peer { .. } => "peer",
        }
    }

    /// A Roughtime server's pinned key and the versions to offer (peers
    /// answer Roughtime too).
    pub fn roughtime(&self) -> Option<(&[u8; 32], &[chronos_quorum::roughtime::Version])> {
        match self {
            SourceKind::Roughtime { key, versions } | SourceKind::Peer { key, versions } => Some((key, versions)),
            SourceKind::Ntp => None,
        }
    }
}

/// One configured source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// `host:port`.
    pub address: String,
}

/// Everything the time service and the readers need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Empty: host time (no quorum asked for, none to lose).
    pub sources: Vec<Source>,
    pub min_agreeing: usize,
    pub max_distance: Duration,
    pub max_drift_ppm: u64,
    pub poll: Duration,
    /// How long one source has to answer in a round.
    pub timeout: Duration,
    pub policy: Policy,
    /// The clock page's name (`chronos_ipc::clock`).
    pub page: String,
}

impl Settings {
    /// How long after a round its agreement may still be served: three
    /// polls (the service publishes every poll, so this only runs out
    /// when the service is not running).
    pub fn holdover(&self) -> Duration {
        3 * self.poll + self.timeout
    }

    /// The selection's rules for the external sources (NTP, Roughtime).
    pub fn rules(&self) -> chronos_quorum::Rules {
        chronos_quorum::Rules {
            configured: self.sources.iter().filter(|s| !matches!(s.kind, SourceKind::Peer { .. })).count(),
            min_agreeing: self.min_agreeing,
            max_distance_ns: self.max_distance.as_nanos() as u64,
        }
    }

    /// The rules of the peers' group.
    pub fn peer_rules(&self) -> chronos_quorum::Rules {
        let peers = self.sources.iter().filter(|s| matches!(s.kind, SourceKind::Peer { .. })).count();
        chronos_quorum::Rules::peers(peers, self.max_distance.as_nanos() as u64)
    }
}
