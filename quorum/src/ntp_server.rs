//! NTPv4 (RFC 5905) server mode without I/O: the answer to a client's
//! request, given what the clock can serve at the instants the request
//! arrived and the answer leaves.
//!
//! What a client learns from an answer is the interval its own exchange
//! gives (offset ± (delay/2 + root delay/2 + root dispersion), as
//! [`crate::ntp::measure`] computes it). The answer's root dispersion is
//! therefore the served interval's radius (rounded up) and its root delay
//! 0: the agreed interval already contains the delays to the sources, so
//! a client's interval always contains the one served. Without quorum the
//! answer says so (leap indicator 3, stratum 16), which every client
//! (ntpdate, sntp, chronyd) treats as "do not use".
//!
//! An answer is never longer than its request (48 bytes; extension fields
//! are ignored), so the server cannot be used to amplify traffic.

use crate::Interval;
use crate::ntp::{PACKET_LEN, Packet, ns_to_short, unix_ns_to_ntp};

/// The stratum of a synchronized answer: the quorum's sources count as
/// references, Chronos is one hop from them (see the module docs: the
/// root dispersion, not the stratum, carries the error bound).
pub const STRATUM: u8 = 2;
/// Precision claimed: 2^-20 s, about a microsecond (one clock read).
pub const PRECISION: i8 = -20;

/// What the clock serves, read twice: when the request arrived and when
/// the answer leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Serving {
    /// The trusted interval at the receive instant, or `None` without
    /// quorum (the host clock's time is then sent, marked unsynchronized).
    pub received: Option<Interval>,
    pub transmit: Option<Interval>,
    /// Unix ns for the receive and transmit fields when unsynchronized.
    pub host_received_ns: u64,
    pub host_transmit_ns: u64,
    /// When the served agreement was made (reference timestamp), Unix ns.
    pub reference_ns: u64,
    /// Reference identifier of synchronized answers (for stratum ≥ 2 a
    /// loop-detection tag: the first bytes of the round's evidence digest).
    pub reference_id: [u8; 4],
}

/// Why a request gets no answer. Each is counted and logged by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("{0} bytes, shorter than an NTP packet")]
    Short(usize),
    #[error("mode {0}, not a client request (3)")]
    NotClient(u8),
    #[error("version {0} (1 to 4 expected)")]
    Version(u8),
}

impl Dropped {
    /// A short, stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Dropped::Short(_) => "short",
            Dropped::NotClient(_) => "mode",
            Dropped::Version(_) => "version",
        }
    }
}

/// Checks a request: a client packet (mode 3) of version 1 to 4.
pub fn check_request(b: &[u8]) -> Result<Packet, Dropped> {
    let req = Packet::decode(b).map_err(|_| Dropped::Short(b.len()))?;
    if req.mode != 3 {
        return Err(Dropped::NotClient(req.mode));
    }
    if !(1..=4).contains(&req.version) {
        return Err(Dropped::Version(req.version));
    }
    Ok(req)
}

/// The answer to a checked request (same version, its poll echoed, its
/// transmit timestamp as the origin).
pub fn answer(req: &Packet, s: &Serving) -> [u8; PACKET_LEN] {
    let synced = match (s.received, s.transmit) {
        (Some(rx), Some(tx)) => Some((rx, tx)),
        _ => None,
    };
    let reply = match synced {
        Some((rx, tx)) => Packet {
            leap: 0,
            version: req.version,
            mode: 4,
            stratum: STRATUM,
            poll: req.poll,
            precision: PRECISION,
            root_delay: 0,
            // The larger of the two radii, so that both timestamps are
            // covered; one unit of the short format more for rounding.
            root_dispersion: ns_to_short(rx.radius().max(tx.radius())).saturating_add(1),
            reference_id: s.reference_id,
            reference: unix_ns_to_ntp(s.reference_ns),
            origin: req.transmit,
            receive: unix_ns_to_ntp(rx.midpoint()),
            transmit: unix_ns_to_ntp(tx.midpoint().max(rx.midpoint())),
        },
        None => Packet {
            leap: 3,
            version: req.version,
            mode: 4,
            stratum: 16,
            poll: req.poll,
            precision: PRECISION,
            root_delay: 0,
            root_dispersion: u32::MAX,
            reference_id: [0; 4],
            reference: 0,
            origin: req.transmit,
            receive: unix_ns_to_ntp(s.host_received_ns),
            transmit: unix_ns_to_ntp(s.host_transmit_ns.max(s.host_received_ns)),
        },
    };
    reply.encode()
}

/// A kiss-o'-death RATE answer: the client asks too often (RFC 5905
/// §7.4). Only its origin timestamp is meaningful.
pub fn kiss_rate(req: &Packet) -> [u8; PACKET_LEN] {
    Packet {
        leap: 3,
        version: req.version,
        mode: 4,
        stratum: 0,
        poll: req.poll,
        precision: PRECISION,
        root_delay: 0,
        root_dispersion: 0,
        reference_id: *b"RATE",
        reference: 0,
        origin: req.transmit,
        receive: 0,
        transmit: 0,
    }
    .encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::{Rejected, measure};

    const S: u64 = 1_000_000_000;

    fn serving(rx: Option<Interval>, tx: Option<Interval>) -> Serving {
        Serving {
            received: rx,
            transmit: tx,
            host_received_ns: 1_800_000_000 * S,
            host_transmit_ns: 1_800_000_000 * S + 5_000,
            reference_ns: 1_799_999_990 * S,
            reference_id: [1, 2, 3, 4],
        }
    }

    #[test]
    fn a_client_measuring_the_answer_gets_an_interval_that_covers_the_served_one() {
        let cookie = 0xdead_beef_0123_4567;
        let req = check_request(&Packet::request(cookie).encode()).unwrap();
        let truth = 1_800_000_000 * S;
        let rx = Interval::around(truth, 20_000_000);
        let tx = Interval::around(truth + 30_000, 20_000_030);
        let reply = Packet::decode(&answer(&req, &serving(Some(rx), Some(tx)))).unwrap();
        assert_eq!(reply.check_reply(cookie), Ok(()));
        assert_eq!((reply.leap, reply.stratum, reply.mode, reply.version), (0, STRATUM, 4, 4));
        // A client whose clock is 3 s behind, 1 ms from the server each way.
        let (t1, t4) = (truth - 3 * S - 1_000_000, truth - 3 * S + 1_030_000);
        let m = measure(t1, t4, &reply, 0).unwrap();
        assert!((m.offset_ns - 3_000_000_000).abs() < 100, "{m:?}");
        // At t4 the served interval was tx (the answer left then): the client's must hold it.
        let served_at_t4 = Interval::around(tx.midpoint() + 1_000_000, tx.radius());
        assert!(m.interval.earliest <= served_at_t4.earliest + 1_000_000, "{m:?} vs {served_at_t4:?}");
        assert!(m.root_distance_ns >= tx.radius(), "{m:?}");
    }

    #[test]
    fn without_quorum_the_answer_says_unsynchronized_and_clients_refuse_it() {
        let req = check_request(&Packet::request(9).encode()).unwrap();
        let reply = Packet::decode(&answer(&req, &serving(None, None))).unwrap();
        assert_eq!((reply.leap, reply.stratum), (3, 16));
        assert!(matches!(reply.check_reply(9), Err(Rejected::Unsynchronized { leap: 3, stratum: 16 })));
        let kod = Packet::decode(&kiss_rate(&req)).unwrap();
        assert_eq!(kod.check_reply(9), Err(Rejected::Kiss("RATE".into())));
    }

    #[test]
    fn requests_that_are_not_client_packets_are_dropped_with_a_reason() {
        assert_eq!(check_request(&[0x23; 12]), Err(Dropped::Short(12)));
        let mut p = Packet::request(1);
        p.mode = 4;
        assert_eq!(check_request(&p.encode()), Err(Dropped::NotClient(4)));
        p.mode = 3;
        p.version = 0;
        assert_eq!(check_request(&p.encode()), Err(Dropped::Version(0)));
        p.version = 3;
        assert_eq!(check_request(&p.encode()).map(|r| r.version), Ok(3), "NTPv3 clients are answered");
        let mut long = Packet::request(1).encode().to_vec();
        long.extend_from_slice(&[0; 64]);
        assert!(check_request(&long).is_ok(), "extension fields are ignored");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_answered_or_dropped_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                                         mid in 0u64..u64::MAX / 2, r in 0u64..100 * S) {
            if let Ok(req) = check_request(&bytes) {
                let i = Interval::around(mid, r);
                let a = answer(&req, &serving(Some(i), Some(i)));
                proptest::prop_assert!(a.len() <= bytes.len());
                let reply = Packet::decode(&a).unwrap();
                proptest::prop_assert_eq!(reply.origin, req.transmit);
                proptest::prop_assert!(crate::ntp::short_to_ns(reply.root_dispersion) >= r);
            }
        }
    }
}
