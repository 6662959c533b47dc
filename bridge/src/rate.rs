//! Per-client rate limiting for the NTP server: one token bucket per
//! source address, in a table of bounded size. No I/O: the caller gives
//! the instant.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::settings::RateLimit;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in millitokens so that sub-second refills add up.
    milli: u64,
    at_ns: u64,
}

/// The table of buckets.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
    /// When the table was last swept for refilled buckets.
    swept_ns: Option<u64>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter { limit, buckets: HashMap::new(), swept_ns: None }
    }

    fn full(&self) -> u64 {
        u64::from(self.limit.burst.max(1)) * 1000
    }

    fn refilled(&self, b: Bucket, now_ns: u64) -> u64 {
        let elapsed = now_ns.saturating_sub(b.at_ns);
        let added = (u128::from(elapsed) * u128::from(self.limit.per_second) / 1_000_000).min(u128::from(u64::MAX));
        b.milli.saturating_add(added as u64).min(self.full())
    }

    /// Whether `client` may be answered at `now_ns` (monotonic); takes a token if so.
    pub fn allow(&mut self, client: IpAddr, now_ns: u64) -> bool {
        if self.limit.per_second == 0 {
            return true;
        }
        if !self.buckets.contains_key(&client) && self.buckets.len() >= self.limit.clients.max(1) {
            // Full table. At most once a second, forget the clients whose
            // buckets have refilled (they lose nothing): a sweep costs the
            // whole table, so a flood of new addresses cannot make every
            // packet pay for one. Otherwise one tracked client is forgotten
            // (it starts again with a full bucket): the others keep theirs.
            if self.swept_ns.is_none_or(|t| now_ns.saturating_sub(t) >= 1_000_000_000) {
                self.swept_ns = Some(now_ns);
                let full = self.full();
                let snapshot: Vec<(IpAddr, Bucket)> = self.buckets.iter().map(|(k, v)| (*k, *v)).collect();
                for (ip, b) in snapshot {
                    if self.refilled(b, now_ns) >= full {
                        self.buckets.remove(&ip);
                    }
                }
            }
            if self.buckets.len() >= self.limit.clients.max(1)
                && let Some(one) = self.buckets.keys().next().copied()
            {
                self.buckets.remove(&one);
            }
        }
        let full = self.full();
        let b = self.buckets.get(&client).copied().unwrap_or(Bucket { milli: full, at_ns: now_ns });
        let milli = self.refilled(b, now_ns);
        let ok = milli >= 1000;
        self.buckets.insert(client, Bucket { milli: if ok { milli - 1000 } else { milli }, at_ns: now_ns });
        ok
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate_and_other_clients_are_not_affected() {
        let mut l = Limiter::new(RateLimit { per_second: 2, burst: 4, clients: 100 });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let allowed = (0..10).filter(|_| l.allow(a, 0)).count();
        assert_eq!(allowed, 4, "the burst");
        assert!(l.allow(b, 0), "another client has its own bucket");
        assert!(!l.allow(a, S / 4), "half a token after 250 ms");
        assert!(l.allow(a, S / 2), "one token after 500 ms");
        assert!(!l.allow(a, S / 2));
        let later = (0..10).filter(|_| l.allow(a, 100 * S)).count();
        assert_eq!(later, 4, "refilled to the burst, not beyond");
    }

    #[test]
    fn the_table_stays_bounded_however_many_addresses_ask() {
        let mut l = Limiter::new(RateLimit { per_second: 1, burst: 2, clients: 64 });
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert!(l.allow(ip, u64::from(i)), "a new client is always answered");
            assert!(l.tracked() <= 64);
        }
    }

    #[test]
    fn a_flood_of_new_addresses_resets_one_client_at_a_time_not_all() {
        let mut l = Limiter::new(RateLimit { per_second: 1, burst: 2, clients: 64 });
        let mut refused = 0;
        for i in 0..1_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            // Each spends its whole burst: nobody refills within the flood.
            assert!(l.allow(ip, 1 + u64::from(i)) && l.allow(ip, 1 + u64::from(i)));
            if !l.allow(ip, 1 + u64::from(i)) {
                refused += 1;
            }
            if i >= 64 {
                // Full, and it stays full: one client forgotten per new
                // one, never the whole table (which would hand every
                // tracked client a fresh burst).
                assert_eq!(l.tracked(), 64, "after {i} addresses");
            }
        }
        assert_eq!(refused, 1_000, "each client limited after its burst");
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let mut l = Limiter::new(RateLimit { per_second: 0, burst: 0, clients: 1 });
        assert!((0..1000).all(|_| l.allow("::1".parse().unwrap(), 0)));
    }
}
