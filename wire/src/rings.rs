//! Names and sizes of one host's rings.

use std::path::Path;

use sha2::{Digest as _, Sha256};

/// A ring's size: `capacity` (a power of two) and its largest record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub capacity: u64,
    pub max_record: u64,
}

impl Geometry {
    /// The smallest ring that holds a record of `max_record` bytes (the
    /// ring keeps records to half its capacity, less a header).
    pub fn for_record(max_record: u64) -> Geometry {
        let max_record = max_record.next_multiple_of(8);
        let capacity = (2 * (max_record + 64)).next_power_of_two().max(64 << 10);
        Geometry { capacity, max_record: capacity / 2 - 24 }
    }
}

/// Identifies one Chronos instance's rings on a host: the first 8 hex
/// digits of SHA-256 of its data directory's canonical path, so two data
/// directories never share rings.
pub fn instance_id(data_dir: &Path) -> String {
    let canon = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(canon.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..4])
}

/// How many processes of each kind run, and the body limits that size the rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub ingests: u16,
    pub hashers: u16,
    /// Largest decoded body, bytes.
    pub max_decoded: u64,
    /// Most events per body.
    pub max_events: u64,
}

impl Topology {
    /// Largest `INGEST` record.
    fn ingest_record(&self) -> u64 {
        48 + 16 * self.max_events + self.max_decoded
    }

    /// Largest `HASHED` record: the canonical payload is the events with a
    /// 13-byte prefix each, which zstd never grows by more than its bound.
    fn hashed_record(&self) -> u64 {
        let raw = self.max_decoded + 13 * self.max_events;
        let payload = raw + raw / 128 + 1024;
        48 + 32 + 8 + 48 * self.max_events + payload + self.max_decoded
    }

    /// Rings from ingest to hashers.
    pub fn ingest_ring(&self) -> Geometry {
        Geometry::for_record(self.ingest_record())
    }

    /// Rings from hashers to the orchestrator.
    pub fn hashed_ring(&self) -> Geometry {
        Geometry::for_record(self.hashed_record())
    }

    /// The ring from the orchestrator to the vault writer: a `HASHED`
    /// record plus the sequencer's fields and at most one tile node per
    /// 255 leaves plus one per tile level.
    pub fn sequenced_ring(&self) -> Geometry {
        Geometry::for_record(self.hashed_record() + 160 + 48 * (self.max_events / 255 + 8))
    }

    /// The geometry of every ring of this topology, with how many of each.
    pub fn rings(&self) -> [(u64, Geometry); 4] {
        let (i, h) = (u64::from(self.ingests), u64::from(self.hashers));
        [(i * h, self.ingest_ring()), (h, self.hashed_ring()), (1, self.sequenced_ring()), (i, self.ack_ring())]
    }

    /// Rings from the vault writer back to ingest (acks and heartbeats).
    pub fn ack_ring(&self) -> Geometry {
        Geometry { capacity: 1 << 20, max_record: 4096 }
    }
}

/// Ring names of one instance (`/dev/shm/chronos-<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingNames {
    instance: String,
}

impl RingNames {
    pub fn new(instance: &str) -> RingNames {
        RingNames { instance: instance.to_owned() }
    }
    /// Ingest slot `slot` to hasher `hasher`.
    pub fn ingest(&self, slot: u16, hasher: u16) -> String {
        format!("{}-in-{slot}-{hasher}", self.instance)
    }
    /// Hasher `hasher` to the orchestrator.
    pub fn hashed(&self, hasher: u16) -> String {
        format!("{}-hashed-{hasher}", self.instance)
    }
    /// Orchestrator to vault writer.
    pub fn sequenced(&self) -> String {
        format!("{}-seq", self.instance)
    }
    /// Vault writer to ingest slot `slot`.
    pub fn ack(&self, slot: u16) -> String {
        format!("{}-ack-{slot}", self.instance)
    }
    /// Every ring of a topology.
    pub fn all(&self, t: &Topology) -> Vec<String> {
        self.sized(t).into_iter().map(|(name, _)| name).collect()
    }

    /// Every ring of a topology, with its geometry.
    pub fn sized(&self, t: &Topology) -> Vec<(String, Geometry)> {
        let mut out = Vec::new();
        for i in 0..t.ingests {
            for h in 0..t.hashers {
                out.push((self.ingest(i, h), t.ingest_ring()));
            }
            out.push((self.ack(i), t.ack_ring()));
        }
        for h in 0..t.hashers {
            out.push((self.hashed(h), t.hashed_ring()));
        }
        out.push((self.sequenced(), t.sequenced_ring()));
        out
    }

    /// The prefix every ring name of this instance starts with.
    pub fn prefix(&self) -> String {
        format!("{}-", self.instance)
    }

    /// Whether `name` is an ack ring (it holds only answers to ingest
    /// processes, worthless once they are gone).
    pub fn is_ack(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix()).is_some_and(|rest| rest.starts_with("ack-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_holds_the_largest_record() {
        for max in [1u64, 1000, 65_536, 18 << 20, (18 << 20) + 1] {
            let g = Geometry::for_record(max);
            assert!(g.capacity.is_power_of_two());
            assert!(g.max_record >= max);
            assert!(g.max_record <= g.capacity / 2 - 24);
        }
        let t = Topology { ingests: 1, hashers: 2, max_decoded: 16 << 20, max_events: 1 << 17 };
        assert_eq!(t.ingest_ring().capacity, 64 << 20);
        assert!(t.sequenced_ring().max_record > t.hashed_ring().max_record - 1);
        assert_eq!(RingNames::new("ab").all(&t).len(), 2 + 1 + 2 + 1);
    }
}
