//! Who may read what: surfaces are grouped, and a group either is public
//! or needs one of the bridge's bearer tokens. Health, readiness and gRPC
//! health and reflection are always public; NTP and Roughtime (UDP) have
//! no tokens and are public by nature.

/// A group of routes and gRPC methods that share one access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `/checkpoint`, `/v1/checkpoint`; gRPC GetCheckpoint, WatchCheckpoints.
    Checkpoint,
    /// `/tile/...` (C2SP tlog-tiles, entry bundles included).
    Tiles,
    /// `/v1/time`; the gRPC Time service.
    Time,
    /// `/v1/proof/...`; gRPC GetInclusionProof, GetConsistencyProof.
    Proofs,
    /// `/v1/events/N`.
    Events,
    /// `/v1/stream` (WebSocket).
    Stream,
}

impl Group {
    pub const ALL: [Group; 6] =
        [Group::Checkpoint, Group::Tiles, Group::Time, Group::Proofs, Group::Events, Group::Stream];

    /// The name used in `bridge.public`.
    pub fn name(self) -> &'static str {
        match self {
            Group::Checkpoint => "checkpoint",
            Group::Tiles => "tiles",
            Group::Time => "time",
            Group::Proofs => "proofs",
            Group::Events => "events",
            Group::Stream => "stream",
        }
    }

    pub fn parse(name: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The group of an HTTP path; `None` for what is always public
    /// (health, readiness) or matches no route (a 404 follows).
    pub fn of_path(path: &str) -> Option<Group> {
        match path {
            "/checkpoint" | "/v1/checkpoint" => Some(Group::Checkpoint),
            "/v1/time" => Some(Group::Time),
            "/v1/stream" => Some(Group::Stream),
            p if p.starts_with("/tile/") => Some(Group::Tiles),
            p if p.starts_with("/v1/proof/") => Some(Group::Proofs),
            p if p.starts_with("/v1/events/") => Some(Group::Events),
            _ => None,
        }
    }
}

/// The tokens and the public groups.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Empty: no token is configured and every group is public.
    pub tokens: chronos_tls::Tokens,
    pub public: Vec<Group>,
}

impl Access {
    /// Whether a request for `group` with this `Authorization` value may be answered.
    pub fn allows(&self, group: Option<Group>, authorization: Option<&str>) -> bool {
        match group {
            None => true,
            Some(g) => {
                self.tokens.is_empty() || self.public.contains(&g) || self.tokens.matching(authorization).is_some()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_groups_need_no_token_and_the_others_one_of_the_tokens() {
        let a = Access {
            tokens: chronos_tls::Tokens::new(vec!["s3cret".into()]),
            public: vec![Group::Checkpoint, Group::Tiles],
        };
        assert!(a.allows(Group::of_path("/checkpoint"), None));
        assert!(a.allows(Group::of_path("/tile/0/000"), None));
        assert!(a.allows(Group::of_path("/healthz"), None));
        assert!(!a.allows(Group::of_path("/v1/proof/inclusion"), None));
        assert!(!a.allows(Group::of_path("/v1/events/3"), Some("Bearer wrong")));
        assert!(a.allows(Group::of_path("/v1/events/3"), Some("Bearer s3cret")));
        let open = Access { tokens: chronos_tls::Tokens::default(), public: vec![] };
        assert!(Group::ALL.iter().all(|g| open.allows(Some(*g), None)), "no tokens: everything is open");
        assert!(Group::ALL.iter().all(|g| Group::parse(g.name()) == Some(*g)));
    }
}
