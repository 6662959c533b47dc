//! n of 3, 4, 5 and 7 NTP servers on loopback, f < n/2 of them lying with
//! each strategy: every round's agreement holds this host's clock (the
//! honest servers answer with it, so it is true time here), and liars are
//! never counted as agreeing with a lie.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chronos_quorum::evidence::{Outcome, VerdictRecord};
use chronos_time::{Policy, Settings, Source, SourceKind};

const S: i64 = 1_000_000_000;

/// How a server answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Strategy {
    Honest,
    /// Honest, but its answers take 40 ms longer to come back than the
    /// requests took to arrive.
    SlowReturn,
    /// A constant offset, its own.
    Offset,
    /// All liars on the same wrong time.
    Colluding,
    /// An offset that grows by 2 s with every answer.
    Drifting,
    /// Sudden jumps: a new offset in ±60 s with every answer.
    Jumping,
    /// Different answers to different requests: every other one 9 s ahead.
    TwoFaced,
    /// The first answer it ever gave, replayed (its origin is an old
    /// request's cookie).
    Replaying,
}

const LIES: [Strategy; 6] = [
    Strategy::Offset,
    Strategy::Colluding,
    Strategy::Drifting,
    Strategy::Jumping,
    Strategy::TwoFaced,
    Strategy::Replaying,
];

fn unix_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn ntp_ts(unix_ns: i64) -> u64 {
    let secs = (unix_ns.div_euclid(S) + 2_208_988_800) as u64;
    let frac = ((unix_ns.rem_euclid(S) as u128) << 32) / S as u128;
    (secs << 32) | frac as u64
}

struct Server {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(strategy: Strategy, index: u64) -> Server {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let answered = AtomicU64::new(0);
    std::thread::spawn(move || {
        let mut first: Option<[u8; 48]> = None;
        let mut buf = [0u8; 512];
        // A small deterministic generator for the jumps.
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ index;
        while !s.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            if n < 48 {
                continue;
            }
            let k = answered.fetch_add(1, Ordering::Relaxed) as i64;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = match strategy {
                Strategy::Honest | Strategy::SlowReturn | Strategy::Replaying => 0,
                Strategy::Offset => (index as i64 + 2) * 5 * S,
                Strategy::Colluding => 7 * S,
                Strategy::Drifting => 2 * S * (k + 1),
                Strategy::Jumping => (x % (120 * S as u64)) as i64 - 60 * S,
                Strategy::TwoFaced => (k % 2) * 9 * S,
            };
            let now = unix_ns() + offset;
            let mut r = [0u8; 48];
            r[0] = 0x24;
            r[1] = 2;
            r[3] = 0xEC;
            r[4..8].copy_from_slice(&16u32.to_be_bytes());
            r[8..12].copy_from_slice(&16u32.to_be_bytes());
            r[12..16].copy_from_slice(b"TEST");
            r[16..24].copy_from_slice(&ntp_ts(now - S).to_be_bytes());
            r[24..32].copy_from_slice(&buf[40..48]);
            r[32..40].copy_from_slice(&ntp_ts(now).to_be_bytes());
            r[40..48].copy_from_slice(&ntp_ts(now).to_be_bytes());
            if strategy == Strategy::SlowReturn {
                std::thread::sleep(Duration::from_millis(40));
            }
            let reply = match (strategy, first) {
                (Strategy::Replaying, Some(old)) => old,
                _ => r,
            };
            first.get_or_insert(r);
            let _ = sock.send_to(&reply, from);
        }
    });
    Server { addr, stop }
}

fn settings(servers: &[Server]) -> Settings {
    Settings {
        sources: servers
            .iter()
            .enumerate()
            .map(|(i, s)| Source { name: format!("s{i}"), kind: SourceKind::Ntp, address: s.addr.clone() })
            .collect(),
        min_agreeing: 2,
        max_distance: Duration::from_secs(1),
        max_drift_ppm: 100,
        poll: Duration::from_secs(1),
        timeout: Duration::from_millis(250),
        policy: Policy::Refuse,
        page: "unused".into(),
    }
}

#[test]
fn the_agreement_of_every_round_holds_true_time_whatever_a_lying_minority_answers() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rounds = 0;
    for n in [3usize, 4, 5, 7] {
        let f = (n - 1) / 2;
        for lie in LIES {
            // The honest ones: one of them on a slow return path.
            let mut servers: Vec<Server> = (0..n - f)
                .map(|i| serve(if i == 0 { Strategy::SlowReturn } else { Strategy::Honest }, i as u64))
                .collect();
            servers.extend((0..f).map(|j| serve(lie, 100 + j as u64)));
            let settings = settings(&servers);
            for round in 1..=2 {
                let done = rt.block_on(chronos_time::round::run(&settings, round));
                rounds += 1;
                // True time at the round's instant: this host's clock then.
                let boot_now = chronos_ipc::clock::boottime_ns();
                let truth = (unix_ns() as u64).saturating_sub(boot_now.saturating_sub(done.at_boot_ns));
                let e = &done.evidence;
                let agreed = e.agreed.unwrap_or_else(|| panic!("n={n} {lie:?}: no agreement: {e:#?}"));
                // 1 ms of slack: the host clock is read twice above.
                let slack = chronos_quorum::Interval {
                    earliest: agreed.earliest - 1_000_000,
                    latest: agreed.latest + 1_000_000,
                };
                assert!(slack.contains(truth), "n={n} {lie:?}: {agreed:?} misses true time {truth}");
                e.check().unwrap();
                for (i, src) in e.sources.iter().enumerate() {
                    if let Outcome::Measured { verdict, offset_ns, .. } = &src.outcome {
                        let honest = i < n - f;
                        if honest {
                            assert_eq!(*verdict, VerdictRecord::Agreeing, "n={n} {lie:?}: honest {i} refused");
                        } else if offset_ns.unsigned_abs() > 2 * S as u64 {
                            assert_ne!(*verdict, VerdictRecord::Agreeing, "n={n} {lie:?}: liar {i} counted: {src:?}");
                        }
                    } else {
                        assert!(lie == Strategy::Replaying && i >= n - f, "n={n} {lie:?}: {src:?} did not answer");
                    }
                }
            }
        }
    }
    assert_eq!(rounds, 4 * 6 * 2);
}
