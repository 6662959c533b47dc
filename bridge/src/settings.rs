//! The bridge's validated settings (the CLI builds them from `[bridge]`).

use std::net::SocketAddr;
use std::time::Duration;

use chronos_ledger::{NoteSigner, NoteVerifier, TreeHasher};

/// Per-client NTP rate limit: a token bucket per source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second (the sustained request rate allowed).
    pub per_second: u32,
    /// Bucket size: requests allowed in a burst.
    pub burst: u32,
    /// Most client addresses tracked at once; when full, the clients whose
    /// buckets have refilled are forgotten (a sweep at most once a
    /// second), else one tracked client is (it starts again with a full
    /// bucket).
    pub clients: usize,
}

/// `/v1/stream` limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Interval between time ticks.
    pub tick: Duration,
    /// Messages a client may fall behind before it is closed ("too slow").
    pub queue: usize,
    /// Most open streams; more are refused with 503.
    pub max_clients: usize,
}

/// The Roughtime server: where, and its long-term key.
pub struct Roughtime {
    pub listen: SocketAddr,
    /// The long-term Ed25519 key's seed (its public key is what clients pin).
    pub long_term_seed: [u8; 32],
}

impl std::fmt::Debug for Roughtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roughtime").field("listen", &self.listen).field("long_term_seed", &"<secret>").finish()
    }
}

/// Everything the bridge needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// HTTP surface (tiles, `/v1`, `/v1/stream`); `None` = not served.
    pub http: Option<SocketAddr>,
    /// NTP server; `None` = not served.
    pub ntp: Option<SocketAddr>,
    /// gRPC (time and ledger services, health, reflection); `None` = not served.
    pub grpc: Option<SocketAddr>,
    /// Roughtime server; `None` = not served.
    pub roughtime: Option<Roughtime>,
    /// TLS on the HTTP and gRPC ports (client certificates required when
    /// a client CA is given); `None`: plain.
    pub tls: Option<chronos_tls::ServerFiles>,
    /// Tokens and what is public.
    pub access: crate::access::Access,
    pub database_url: String,
    /// The log's checkpoint verifier key: nothing is served that it does not accept.
    pub verifier: NoteVerifier,
    /// The log's tree hasher (with its key for keyed logs).
    pub hasher: TreeHasher,
    /// The time configuration, for the reader of the published clock.
    pub time: chronos_time::Settings,
    /// Signs `/v1/time?signed=true` answers when set (the log's key).
    pub time_signer: Option<NoteSigner>,
    pub ntp_rate: RateLimit,
    pub stream: StreamLimits,
    /// How often new checkpoints are looked for.
    pub poll: Duration,
    /// Largest inflated batch payload read for events (ingest's decoded-body limit).
    pub max_decoded: usize,
    /// Worker threads.
    pub threads: usize,
}
