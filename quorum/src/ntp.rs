//! NTPv4 (RFC 5905) client mode without I/O: the request to send, the
//! checks a reply must pass, and the correctness interval its four
//! timestamps give.
//!
//! The request's transmit timestamp is a random cookie, not the local
//! time (as chrony and ntpd-rs do): a reply must echo it as its origin
//! timestamp, which an off-path attacker cannot guess, and the request
//! tells nobody the local clock. The caller keeps the local send and
//! receive times itself.

/// Length of an NTP packet without extensions.
pub const PACKET_LEN: usize = 48;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const UNIX_OFFSET_S: u64 = 2_208_988_800;

/// The fixed header of an NTP packet (extension fields and MACs ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub leap: u8,
    pub version: u8,
    pub mode: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    /// NTP short format (16.16 seconds).
    pub root_delay: u32,
    /// NTP short format (16.16 seconds).
    pub root_dispersion: u32,
    pub reference_id: [u8; 4],
    pub reference: u64,
    pub origin: u64,
    pub receive: u64,
    pub transmit: u64,
}

/// Why a reply was not used. Each is counted and logged by the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("{0} bytes, shorter than an NTP packet")]
    Short(usize),
    #[error("mode {0}, not a server reply (4)")]
    Mode(u8),
    #[error("version {0} (3 or 4 expected)")]
    Version(u8),
    /// Not an answer to our request: spoofed, replayed or late.
    #[error("its origin timestamp is not our request's cookie")]
    NotOurs,
    /// Kiss-o'-death (stratum 0): the code says why (`RATE`: poll less
    /// often; `DENY`, `RSTR`: stop asking).
    #[error("kiss-o'-death {0}")]
    Kiss(String),
    /// The server says it has no time to give (leap indicator 3 or
    /// stratum 16 or more).
    #[error("the server is not synchronized (leap {leap}, stratum {stratum})")]
    Unsynchronized { leap: u8, stratum: u8 },
    #[error("a zero receive or transmit timestamp")]
    ZeroTimestamp,
    #[error("its transmit time is before its receive time")]
    Backwards,
}

impl Packet {
    /// A client request (mode 3, version 4) whose transmit field carries
    /// `cookie`.
    pub fn request(cookie: u64) -> Packet {
        Packet {
            leap: 0,
            version: 4,
            mode: 3,
            stratum: 0,
            poll: 0,
            precision: 0,
            root_delay: 0,
            root_dispersion: 0,
            reference_id: [0; 4],
            reference: 0,
            origin: 0,
            receive: 0,
            transmit: cookie,
        }
    }

    /// The 48 bytes on the wire.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (self.leap << 6) | ((self.version & 7) << 3) | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        b[4..8].copy_from_slice(&self.root_delay.to_be_bytes());
        b[8..12].copy_from_slice(&self.root_dispersion.to_be_bytes());
        b[12..16].copy_from_slice(&self.reference_id);
        b[16..24].copy_from_slice(&self.reference.to_be_bytes());
        b[24..32].copy_from_slice(&self.origin.to_be_bytes());
        b[32..40].copy_from_slice(&self.receive.to_be_bytes());
        b[40..48].copy_from_slice(&self.transmit.to_be_bytes());
        b
    }

    /// Reads a packet's fixed header; anything after it is ignored.
    pub fn decode(b: &[u8]) -> Result<Packet, Rejected> {
        if b.len() < PACKET_LEN {
            return Err(Rejected::Short(b.len()));
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        Ok(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: u32_at(4),
            root_dispersion: u32_at(8),
            reference_id: [b[12], b[13], b[14], b[15]],
            reference: u64_at(16),
            origin: u64_at(24),
            receive: u64_at(32),
            transmit: u64_at(40),
        })
    }

    /// Checks a reply to the request that carried `cookie`.
    pub fn check_reply(&self, cookie: u64) -> Result<(), Rejected> {
        if self.mode != 4 {
            return Err(Rejected::Mode(self.mode));
        }
        if !(3..=4).contains(&self.version) {
            return Err(Rejected::Version(self.version));
        }
        if self.origin != cookie {
            return Err(Rejected::NotOurs);
        }
        if self.stratum == 0 {
            return Err(Rejected::Kiss(String::from_utf8_lossy(&self.reference_id).into_owned()));
        }
        if self.leap == 3 || self.stratum >= 16 {
            return Err(Rejected::Unsynchronized { leap: self.leap, stratum: self.stratum });
        }
        if self.receive == 0 || self.transmit == 0 {
            return Err(Rejected::ZeroTimestamp);
        }
        Ok(())
    }
}

/// NTP short format (16.16 s) to nanoseconds, rounded up.
pub fn short_to_ns(v: u32) -> u64 {
    (u64::from(v) * 1_000_000_000).div_ceil(1 << 16)
}

/// Nanoseconds to NTP short format, rounded up, saturating.
pub fn ns_to_short(ns: u64) -> u32 {
    u32::try_from((u128::from(ns) << 16).div_ceil(1_000_000_000)).unwrap_or(u32::MAX)
}

/// Unix nanoseconds to an NTP timestamp (the era is implicit: the low 64
/// bits of the 128-bit NTP date).
pub fn unix_ns_to_ntp(ns: u64) -> u64 {
    let secs = ns / 1_000_000_000 + UNIX_OFFSET_S;
    let frac = ((u128::from(ns % 1_000_000_000) << 32) / 1_000_000_000) as u64;
    (secs << 32).wrapping_add(frac)
}

/// An NTP timestamp to Unix nanoseconds, in the era that puts it nearest
/// to `near_ns` (RFC 5905's era rule: a timestamp names an instant within
/// 68 years of a reference the client already knows, here its own clock).
pub fn ntp_to_unix_ns(ts: u64, near_ns: u64) -> u64 {
    let era_s: i128 = 1 << 32;
    let secs = i128::from(ts >> 32);
    let frac_ns = ((u128::from(ts & 0xffff_ffff) * 1_000_000_000) >> 32) as i128;
    let near_s = i128::from(near_ns / 1_000_000_000) + i128::from(UNIX_OFFSET_S);
    // The era whose instance of `secs` is nearest to the reference.
    let era = (near_s - secs + era_s / 2).div_euclid(era_s);
    let ntp_s = secs + era * era_s;
    let unix_ns = (ntp_s - i128::from(UNIX_OFFSET_S)) * 1_000_000_000 + frac_ns;
    u64::try_from(unix_ns.max(0)).unwrap_or(u64::MAX)
}

/// One exchange's result: offset and delay, and the correctness interval
/// for true time at the local receive instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// Server time minus local time, nanoseconds.
    pub offset_ns: i64,
    /// Round-trip delay less the server's processing time, nanoseconds.
    pub delay_ns: u64,
    /// The server's root delay plus this exchange's delay, halved, plus
    /// its root dispersion: how far true time may be from the estimate.
    pub root_distance_ns: u64,
    /// True time at the local receive instant lies in this interval.
    pub interval: crate::Interval,
}

/// The measurement of a checked reply: `t1` and `t4` are the local clock's
/// send and receive times (Unix ns), `reply` the server's packet.
/// `local_drift_ppm` bounds the local clock's rate error over the round trip.
pub fn measure(t1: u64, t4: u64, reply: &Packet, local_drift_ppm: u64) -> Result<Measurement, Rejected> {
    let t2 = i128::from(ntp_to_unix_ns(reply.receive, t1));
    let t3 = i128::from(ntp_to_unix_ns(reply.transmit, t1));
    if t3 < t2 {
        return Err(Rejected::Backwards);
    }
    let (t1, t4) = (i128::from(t1), i128::from(t4.max(t1)));
    let offset = ((t2 - t1) + (t3 - t4)) / 2;
    let delay = ((t4 - t1) - (t3 - t2)).max(0);
    let delay_u = u64::try_from(delay).unwrap_or(u64::MAX);
    // The estimate is exact only if both legs took equally long: true
    // time at t4 lies within delay/2 of t4 + offset, widened by the
    // server's own distance from its reference and our rate error over
    // the exchange.
    let root_distance = (delay_u / 2 + 1)
        .saturating_add(short_to_ns(reply.root_delay) / 2 + 1)
        .saturating_add(short_to_ns(reply.root_dispersion))
        .saturating_add(crate::interval::drift_ns(u64::try_from(t4 - t1).unwrap_or(u64::MAX), local_drift_ppm));
    let estimate = u64::try_from((t4 + offset).max(0)).unwrap_or(u64::MAX);
    Ok(Measurement {
        offset_ns: i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX }),
        delay_ns: delay_u,
        root_distance_ns: root_distance,
        interval: crate::Interval::around(estimate, root_distance),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn packets_round_trip_and_replies_are_checked() {
        let req = Packet::request(0x1234_5678_9abc_def0);
        assert_eq!(req.encode()[0], 0x23, "LI 0, version 4, mode 3");
        assert_eq!(Packet::decode(&req.encode()).unwrap(), req);
        let mut reply = Packet { mode: 4, stratum: 2, origin: req.transmit, receive: 1, transmit: 2, ..req };
        assert_eq!(reply.check_reply(req.transmit), Ok(()));
        assert_eq!(reply.check_reply(7), Err(Rejected::NotOurs));
        reply.stratum = 0;
        reply.reference_id = *b"RATE";
        assert_eq!(reply.check_reply(req.transmit), Err(Rejected::Kiss("RATE".into())));
        reply.stratum = 16;
        assert!(matches!(reply.check_reply(req.transmit), Err(Rejected::Unsynchronized { .. })));
        assert_eq!(Packet::decode(&[0; 47]), Err(Rejected::Short(47)));
    }

    #[test]
    fn offset_delay_and_interval_from_the_four_timestamps() {
        // Local clock 2 s behind; 40 ms each way; 10 ms in the server.
        let t1 = 1_800_000_000 * S;
        let t2 = t1 + 2 * S + 40_000_000;
        let t3 = t2 + 10_000_000;
        let t4 = t3 - 2 * S + 40_000_000;
        let reply = Packet {
            mode: 4,
            stratum: 1,
            receive: unix_ns_to_ntp(t2),
            transmit: unix_ns_to_ntp(t3),
            root_dispersion: ns_to_short(1_000_000),
            ..Packet::request(0)
        };
        let m = measure(t1, t4, &reply, 0).unwrap();
        assert!((m.offset_ns - 2_000_000_000).abs() <= 1, "{m:?}");
        assert!(m.delay_ns.abs_diff(80_000_000) <= 1, "{m:?}");
        let truth = t4 + 2 * S;
        assert!(m.interval.contains(truth), "{m:?}");
        assert!(m.root_distance_ns >= 41_000_000 && m.root_distance_ns < 41_100_000, "{m:?}");
    }

    #[test]
    fn timestamps_are_read_in_the_era_nearest_the_local_clock() {
        // 2036-02-07 is where era 0 ends; a date after it wraps to small values.
        for unix_s in [0u64, 1_700_000_000, 2_085_978_495, 2_085_978_497, 3_000_000_000] {
            let ns = unix_s * S + 123_456_789;
            let back = ntp_to_unix_ns(unix_ns_to_ntp(ns), ns + 1000 * S);
            assert!(back.abs_diff(ns) <= 1, "{unix_s}: {back}");
        }
    }
}
