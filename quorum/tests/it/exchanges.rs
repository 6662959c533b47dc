//! NTP exchanges over simulated paths: whatever the asymmetry of the two
//! legs, the server's processing time and the local clock's error, the
//! interval from the four timestamps contains true time.

use chronos_quorum::ntp::{Packet, measure, ns_to_short, unix_ns_to_ntp};
use proptest::prelude::*;

const MS: u64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e7470), ..ProptestConfig::default() })]

    #[test]
    fn the_interval_of_an_exchange_contains_true_time(
        true_t1 in 1_000_000_000u64 * 1_000_000_000..4_000_000_000u64 * 1_000_000_000,
        local_error in -3_600_000i64 * MS as i64..3_600_000 * MS as i64,
        there in 0..500 * MS,
        back in 0..500 * MS,
        processing in 0..50 * MS,
        server_error in -5 * MS as i64..5 * MS as i64,
        root_delay in 0..20 * MS,
    ) {
        // The server's clock is off by less than its root dispersion says.
        let root_dispersion = server_error.unsigned_abs();
        let local = |t: u64| t.checked_add_signed(local_error).unwrap();
        let server = |t: u64| t.checked_add_signed(server_error).unwrap();
        let t1 = local(true_t1);
        let true_t2 = true_t1 + there;
        let true_t3 = true_t2 + processing;
        let true_t4 = true_t3 + back;
        let reply = Packet {
            mode: 4,
            stratum: 2,
            root_delay: ns_to_short(root_delay),
            root_dispersion: ns_to_short(root_dispersion),
            receive: unix_ns_to_ntp(server(true_t2)),
            transmit: unix_ns_to_ntp(server(true_t3)),
            ..Packet::request(1)
        };
        let m = measure(t1, local(true_t4), &reply, 0).unwrap();
        prop_assert!(m.interval.contains(true_t4), "{m:?} misses {true_t4}");
        // And it is no wider than the path and the server's own error allow.
        prop_assert!(m.interval.radius() <= (there + back + processing) / 2 + root_delay / 2 + root_dispersion + 20 * MS / 1000 + 4);
    }
}
