//! Roughtime: the wire format under arbitrary bytes; answers signed here,
//! verified, and tampered with one way at a time; a chained round whose
//! later server answers before the earlier one, and the report that proves
//! it; and real roughenough servers on loopback ports, one request at a
//! time and in batches under one Merkle root (roughenough 1.3.0-draft14
//! for Google's protocol and the drafts' 0x8000000c, roughenough-server
//! 2.2.0 for RFC 10049's version 1, and a second one set 10 minutes back
//! whose answer a chained round catches).

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronos_quorum::Interval;
use chronos_quorum::roughtime::chain::ChainError;
use chronos_quorum::roughtime::response::ResponseError;
use chronos_quorum::roughtime::wire::{self, Message, Tag};
use chronos_quorum::roughtime::{self as rt, Link, MalfeasanceReport, PublicKey, Request, Round, Version};
use chronos_quorum::roughtime::{chain_nonce, check_chain, check_report, verify};
use ed25519_dalek::{Signature, Signer, SigningKey};
use proptest::prelude::*;

const S: u64 = 1_000_000_000;
/// The instant the servers here sign, in Unix seconds.
const T: u64 = 1_800_000_000;

/// A server signing here: a long-term key delegating an online key for
/// `[mint, maxt]` (in the version's units).
struct Server {
    long_term: SigningKey,
    online: SigningKey,
    mint: u64,
    maxt: u64,
}

fn sign(key: &SigningKey, context: &[u8], message: &[u8]) -> Vec<u8> {
    key.sign(&[context, message].concat()).to_bytes().to_vec()
}

/// Unix seconds in `version`'s unit.
fn units(version: Version, secs: u64) -> u64 {
    secs * S / version.ns_per_unit()
}

impl Server {
    fn new(seed: u8) -> Server {
        let (long_term, online) = (SigningKey::from_bytes(&[seed; 32]), SigningKey::from_bytes(&[seed ^ 0x55; 32]));
        Server { long_term, online, mint: 0, maxt: u64::MAX }
    }

    fn key(&self) -> PublicKey {
        self.long_term.verifying_key().to_bytes()
    }

    /// Answers a batch of requests in `version`, signing `at` ± `radius`
    /// Unix seconds: one packet per request, in order.
    fn answer(&self, version: Version, batch: &[&Request], at: u64, radius: u64) -> Vec<Vec<u8>> {
        // The tree level by level; an odd level is padded with a zero hash.
        let mut levels = vec![batch.iter().map(|r| rt::leaf_hash(version, r.leaf())).collect::<Vec<_>>()];
        while levels.last().unwrap().len() > 1 {
            let level = levels.last_mut().unwrap();
            if !level.len().is_multiple_of(2) {
                level.push(vec![0; version.hash_len()]);
            }
            let up = level.chunks(2).map(|p| rt::node_hash(version, &p[0], &p[1])).collect();
            levels.push(up);
        }
        let root = levels.last().unwrap()[0].clone();
        let radi = u32::try_from(units(version, radius)).unwrap();
        let mut srep = Message::new().with(Tag::RADI, radi.to_le_bytes()).unwrap();
        srep.insert(Tag::MIDP, units(version, at).to_le_bytes()).unwrap();
        srep.insert(Tag::ROOT, root).unwrap();
        if let Some(n) = version.number() {
            srep.insert(Tag::VER, n.to_le_bytes()).unwrap();
            srep.insert(Tag::VERS, [1u32, 0x8000_000c].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
                .unwrap();
        }
        let srep = srep.encode();
        let mut dele = Message::new().with(Tag::PUBK, self.online.verifying_key().to_bytes()).unwrap();
        dele.insert(Tag::MINT, self.mint.to_le_bytes()).unwrap();
        dele.insert(Tag::MAXT, self.maxt.to_le_bytes()).unwrap();
        let dele = dele.encode();
        let cert = Message::new().with(Tag::SIG, sign(&self.long_term, version.delegation_context(), &dele)).unwrap();
        let cert = cert.with(Tag::DELE, dele).unwrap().encode();
        let sig = sign(&self.online, version.response_context(), &srep);
        let answers = batch.iter().enumerate().map(|(i, r)| {
            let depth = levels.len() - 1;
            let path: Vec<u8> = (0..depth).flat_map(|d| levels[d][(i >> d) ^ 1].clone()).collect();
            let mut m = Message::new().with(Tag::SIG, sig.clone()).unwrap().with(Tag::NONC, r.nonce()).unwrap();
            for (tag, value) in [(Tag::PATH, path), (Tag::SREP, srep.clone()), (Tag::CERT, cert.clone())] {
                m.insert(tag, value).unwrap();
            }
            m.insert(Tag::INDX, u32::try_from(i).unwrap().to_le_bytes()).unwrap();
            if version.is_ietf() {
                m.insert(Tag::TYPE, 1u32.to_le_bytes()).unwrap();
                wire::frame(&m.encode())
            } else {
                m.encode()
            }
        });
        answers.collect()
    }
}

fn request(version: Version, fill: u8) -> Request {
    Request::new(&[version], &vec![fill; version.nonce_len()], None).unwrap()
}

/// `packet` with its message changed by `f`, the packet header kept in step.
fn tamper(packet: &[u8], f: impl FnOnce(&mut Message)) -> Vec<u8> {
    let framed = wire::is_framed(packet);
    let mut m = Message::decode(if framed { wire::unframe(packet).unwrap() } else { packet }).unwrap();
    f(&mut m);
    if framed { wire::frame(&m.encode()) } else { m.encode() }
}

/// Replaces `tag`'s value by `f` of it.
fn edit(m: &mut Message, tag: Tag, f: impl FnOnce(&mut Vec<u8>)) {
    let mut v = m.remove(tag).unwrap();
    f(&mut v);
    m.insert(tag, v).unwrap();
}

#[test]
fn signed_answers_verify_in_every_version_at_every_place_in_a_batch() {
    let server = Server::new(1);
    for version in Version::ALL {
        let requests: Vec<Request> = (0..5).map(|i| request(version, i)).collect();
        let answers = server.answer(version, &requests.iter().collect::<Vec<_>>(), T, 3);
        for (r, a) in requests.iter().zip(&answers) {
            let v = verify(r, a, &server.key()).unwrap_or_else(|e| panic!("{version:?}: {e}"));
            assert_eq!((v.version, v.midpoint_ns, v.radius_ns), (version, T * S, 3 * S));
            assert_eq!(v.interval, Interval::around(T * S, 3 * S));
            assert_eq!(v.at_arrival(S), Interval { earliest: (T - 3) * S, latest: (T + 4) * S });
            assert_eq!(v.delegation.online_key, server.online.verifying_key().to_bytes());
            // The evidence kept verifies on its own.
            let signed = [version.response_context(), &v.signed.srep[..]].concat();
            let sig = Signature::from_bytes(&v.signed.srep_signature);
            assert!(server.online.verifying_key().verify_strict(&signed, &sig).is_ok());
        }
        // Another request's answer from the same batch is not ours.
        assert_eq!(verify(&requests[0], &answers[1], &server.key()), Err(ResponseError::WrongNonce));
    }
}

#[test]
fn the_answer_is_in_an_offered_version_whose_context_strings_signed_it() {
    let server = Server::new(1);
    let both = Request::new(&[Version::IetfDraft, Version::Rfc], &[3; 32], None).unwrap();
    for version in [Version::IetfDraft, Version::Rfc] {
        let a = server.answer(version, &[&both], T, 3).remove(0);
        assert_eq!(verify(&both, &a, &server.key()).unwrap().version, version);
    }
    let draft_only = request(Version::IetfDraft, 3);
    let rfc = server.answer(Version::Rfc, &[&draft_only], T, 3).remove(0);
    assert_eq!(verify(&draft_only, &rfc, &server.key()), Err(ResponseError::VersionNotOffered(1)));
    // Relabelled as the draft, the RFC's signatures do not verify.
    let relabelled = tamper(&rfc, |m| {
        edit(m, Tag::SREP, |srep| *srep = tamper(srep, |s| edit(s, Tag::VER, |v| v.copy_from_slice(&[12, 0, 0, 0x80]))))
    });
    assert_eq!(verify(&draft_only, &relabelled, &server.key()), Err(ResponseError::BadDelegationSignature));
}

#[test]
fn each_tampering_is_refused_with_its_own_error() {
    use ResponseError::*;
    for version in Version::ALL {
        let server = Server::new(1);
        let requests: Vec<Request> = (0..4).map(|i| request(version, i)).collect();
        let (r, key) = (&requests[2], server.key());
        let a = server.answer(version, &requests.iter().collect::<Vec<_>>(), T, 3).remove(2);
        let check = |bytes: &[u8]| verify(r, bytes, &key);
        assert!(check(&a).is_ok());
        assert_eq!(check(&tamper(&a, |m| edit(m, Tag::SIG, |s| s[5] ^= 1))), Err(BadResponseSignature));
        let bad_cert = |m: &mut Message| edit(m, Tag::CERT, |c| *c = tamper(c, |c| edit(c, Tag::SIG, |s| s[0] ^= 1)));
        assert_eq!(check(&tamper(&a, bad_cert)), Err(BadDelegationSignature));
        assert_eq!(verify(r, &a, &Server::new(2).key()), Err(BadDelegationSignature), "another server's key");
        assert_eq!(verify(&request(version, 9), &a, &key), Err(WrongNonce));
        // The Merkle path: a changed sibling, another leaf's index, an index beyond the path.
        assert_eq!(check(&tamper(&a, |m| edit(m, Tag::PATH, |p| p[40] ^= 1))), Err(NotInTree));
        assert_eq!(check(&tamper(&a, |m| edit(m, Tag::INDX, |i| i[0] = 3))), Err(NotInTree));
        assert_eq!(check(&tamper(&a, |m| edit(m, Tag::INDX, |i| i[1] = 1))), Err(IndexBeyondPath(258)));
        assert!(matches!(check(&tamper(&a, |m| edit(m, Tag::PATH, |p| p.truncate(4)))), Err(BadPath { .. })));
        // Without the nonce echo, a Google answer to another nonce fails the tree.
        let other = request(version, 9);
        let unechoed = tamper(&a, |m| drop(m.remove(Tag::NONC)));
        let expected = if version.is_ietf() { Missing { what: "response", tag: Tag::NONC } } else { NotInTree };
        assert_eq!(verify(&other, &unechoed, &key), Err(expected));
        // A validly signed MIDP outside the delegation's window.
        let window = Server { mint: units(version, T - 10), maxt: units(version, T + 10), ..Server::new(1) };
        for at in [T - 11, T + 11] {
            let late = window.answer(version, &[r], at, 3).remove(0);
            assert!(matches!(verify(r, &late, &key), Err(OutsideDelegation { .. })), "{version:?} {at}");
        }
        assert!(verify(r, &window.answer(version, &[r], T + 10, 3).remove(0), &key).is_ok());
        if version.is_ietf() {
            assert_eq!(check(&tamper(&a, |m| edit(m, Tag::TYPE, |t| t[0] = 0))), Err(NotAResponse));
            assert_eq!(check(wire::unframe(&a).unwrap()), Err(WrongFraming));
            assert_eq!(verify(r, &server.answer(version, &[r], T, 0).remove(0), &key), Err(ZeroRadius));
        }
    }
}

fn link(rand: Option<Vec<u8>>, public_key: PublicKey, request: &Request, response: Vec<u8>) -> Link {
    Link { rand, public_key, request: request.bytes().to_vec(), response }
}

/// A chained round: server `i` answers in `versions[i]` at `times[i]` ± 1 s.
fn round(servers: &[&Server], versions: &[Version], times: &[u64]) -> Vec<Link> {
    let mut links: Vec<Link> = Vec::new();
    for (i, ((server, &version), &at)) in servers.iter().zip(versions).zip(times).enumerate() {
        let rand = vec![i as u8 + 1; version.nonce_len()];
        let nonce = match links.last() {
            None => vec![0x42; version.nonce_len()],
            Some(previous) => chain_nonce(version, &previous.response, &rand),
        };
        let r = Request::new(&[version], &nonce, None).unwrap();
        let a = server.answer(version, &[&r], at, 1).remove(0);
        links.push(link((i > 0).then_some(rand), server.key(), &r, a));
    }
    links
}

#[test]
fn a_server_answering_before_its_predecessor_leaves_a_report_that_rechecks() {
    use Version::*;
    let (a, b, c) = (Server::new(1), Server::new(2), Server::new(3));
    let keys = [a.key(), b.key(), c.key()];
    for (va, vb) in [(Google, Google), (IetfDraft, IetfDraft), (Rfc, Rfc), (Google, Rfc), (Rfc, Google)] {
        // B signs 100 s before A, though the chain proves it signed after.
        let links = round(&[&a, &b], &[va, vb], &[T, T - 100]);
        let Ok(Round::Malfeasance { contradiction, report, verified }) = check_chain(&links) else {
            panic!("{va:?} {vb:?}: no malfeasance found")
        };
        assert_eq!((contradiction.earlier, contradiction.later, verified.len()), (0, 1, 2));
        assert_eq!((contradiction.earlier_key, contradiction.later_key), (a.key(), b.key()));
        // The draft's JSON: base64 "rand" (not for the first), "publicKey", "request", "response".
        let json = report.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let second = &value["responses"][1];
        assert!(["rand", "publicKey", "request", "response"].iter().all(|k| second[k].is_string()), "{json}");
        assert!(value["responses"][0].get("rand").is_none(), "{json}");
        let back = MalfeasanceReport::from_json(&json).unwrap();
        assert_eq!(check_report(&back, &keys), Ok(contradiction));
        // Proof only to whom trusts both keys; only if the nonces chain; only if the answers verify.
        assert_eq!(check_report(&back, &[a.key()]), Err(ChainError::Unpinned { index: 1 }));
        let mut unchained = back.clone();
        unchained.responses[1].rand.as_mut().unwrap()[0] ^= 1;
        assert_eq!(check_report(&unchained, &keys), Err(ChainError::Unchained { index: 1 }));
        let mut forged = back.clone();
        forged.responses[0].response = tamper(&forged.responses[0].response, |m| edit(m, Tag::SIG, |s| s[0] ^= 1));
        assert!(matches!(check_report(&forged, &keys), Err(ChainError::Response { index: 0, .. })));
        assert_eq!(
            check_report(&MalfeasanceReport { responses: vec![back.responses[0].clone()] }, &keys),
            Err(ChainError::TooShort(1))
        );
    }
    // Honest times agree with the order: nothing to report.
    let honest = round(&[&a, &b, &c], &[Rfc, Google, IetfDraft], &[T, T + 1, T]);
    assert!(matches!(check_chain(&honest), Ok(Round::Consistent(v)) if v.len() == 3));
    assert_eq!(check_report(&MalfeasanceReport { responses: honest }, &keys), Err(ChainError::NoContradiction));
    // The third contradicts the first, not the second: the report runs from the first to the third.
    let links = round(&[&a, &b, &c], &[Rfc, Rfc, Rfc], &[T, T - 1, T - 5]);
    let Ok(Round::Malfeasance { contradiction, report, .. }) = check_chain(&links) else { panic!("none found") };
    assert_eq!((contradiction.earlier, contradiction.later, report.responses.len()), (0, 2, 3));
    assert_eq!(check_report(&report, &keys).map(|c| (c.earlier, c.later)), Ok((0, 2)));
    assert!(matches!(MalfeasanceReport::from_json("[]"), Err(ChainError::Syntax(_))));
}

/// Bytes shaped like a message header (few tags, small aligned offsets,
/// often sorted tags), so that decoding gets past its first checks.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    let tags = prop::sample::select(vec![Tag::SIG, Tag::NONC, Tag::PATH, Tag::SREP, Tag::CERT, Tag::INDX, Tag::ZZZZ]);
    (1usize..8, prop::collection::vec(0u32..24, 7), prop::collection::vec(tags, 8), any::<bool>(), 0usize..24).prop_map(
        |(n, offsets, mut tags, sorted, values)| {
            let mut b = (n as u32).to_le_bytes().to_vec();
            let mut offsets: Vec<u32> = offsets[..n - 1].iter().map(|o| o * 4).collect();
            if sorted {
                offsets.sort();
                tags.sort();
            }
            b.extend(offsets.iter().flat_map(|o| o.to_le_bytes()));
            b.extend(tags[..n].iter().flat_map(|t| t.to_bytes()));
            b.extend(std::iter::repeat_n(7u8, values * 4));
            b
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x726f7567), ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_what_decodes_reencodes_to_itself(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..600), header_like()],
    ) {
        if let Ok(m) = Message::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes.clone());
        }
        let framed = wire::frame(&bytes);
        prop_assert_eq!(wire::unframe(&framed), Ok(&bytes[..]));
        let _ = Request::parse(&bytes);
        let _ = Request::parse(&framed);
        let server = Server::new(1);
        for version in [Version::Google, Version::Rfc] {
            let r = request(version, 1);
            prop_assert!(verify(&r, &bytes, &server.key()).is_err());
            prop_assert!(verify(&r, &framed, &server.key()).is_err());
        }
    }

    #[test]
    fn messages_round_trip(fields in prop::collection::btree_map(any::<u32>(), prop::collection::vec(any::<u8>(), 0..40), 0..12)) {
        let mut m = Message::new();
        for (tag, mut value) in fields {
            value.truncate(value.len() / 4 * 4);
            m.insert(Tag(tag), value).unwrap();
        }
        let bytes = m.encode();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
    }

    #[test]
    fn a_changed_bit_anywhere_in_an_answer_never_yields_another_time(
        v in 0usize..3, at in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let version = Version::ALL[v];
        let server = Server::new(1);
        let requests: Vec<Request> = (0..3).map(|i| request(version, i)).collect();
        let a = server.answer(version, &requests.iter().collect::<Vec<_>>(), T, 2).remove(1);
        let mut b = a.clone();
        b[at.index(a.len())] ^= 1 << bit;
        if let Ok(v) = verify(&requests[1], &b, &server.key()) {
            prop_assert_eq!(v.interval, Interval::around(T * S, 2 * S));
        }
    }
}

/// Where the test finds a server binary: `$var`, else `default`; missing,
/// it fails with the command that installs it.
fn server_binary(var: &str, default: &str, install: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(path.is_file(), "no Roughtime server at {} (set {var}); install it with: {install}", path.display());
    path
}

/// A server process, killed when dropped (with the seed file it reads).
struct Running(Child, #[allow(dead_code)] Option<tempfile::NamedTempFile>);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Sends `request` to the server until it answers (it may be starting):
/// the answer, and the local instants the answered request left and the
/// answer arrived.
fn exchange(server: &mut Running, port: u16, request: &[u8]) -> (Vec<u8>, u64, u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "no answer on port {port}");
        let t1 = unix_ns();
        sock.send_to(request, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok(n) = sock.recv(&mut buf) {
            return (buf[..n].to_vec(), t1, unix_ns());
        }
    }
}

/// Checks a real server's verified answer against this host's clock (the
/// server's own): the interval, carried to the arrival, holds it.
fn holds_host_time(v: &rt::Verified, t1: u64, t4: u64) {
    assert!(v.radius_ns >= S && v.radius_ns <= 10 * S, "{v:?}");
    assert!(v.at_arrival(t4 - t1).contains(t4), "{:?} does not hold the host's {t4}", v.interval);
    assert!(v.midpoint_ns.abs_diff(t4) < 2 * S, "{v:?} is more than 2 s from the host's {t4}");
}

const INSTALL_DRAFT: &str = "cargo install roughenough --version 1.3.0-draft14 --locked --root /usr/local";
const INSTALL_RFC: &str = "cargo install roughenough-server --version 2.2.0 --locked --root /usr/local";

#[test]
fn roughenough_answers_a_chained_round_in_googles_protocol_and_the_draft_and_the_answers_verify() {
    let bin = server_binary("CHRONOS_ROUGHENOUGH", "/usr/local/bin/roughenough-server", INSTALL_DRAFT);
    let seed = [0x5e; 32];
    let key = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let port = free_port();
    let child = Command::new(bin)
        .arg("ENV")
        .env("ROUGHENOUGH_INTERFACE", "127.0.0.1")
        .env("ROUGHENOUGH_PORT", port.to_string())
        .env("ROUGHENOUGH_SEED", hex(&seed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Running(child, None);
    // Google's protocol, then the draft offered alone and beside version 1
    // (which roughenough 1.3 does not speak), each nonce chained to the
    // answer before; SRV names the key.
    let mut links: Vec<Link> = Vec::new();
    for (i, (offer, answered)) in [
        (&[Version::Google][..], Version::Google),
        (&[Version::IetfDraft, Version::Rfc][..], Version::IetfDraft),
        (&[Version::IetfDraft][..], Version::IetfDraft),
    ]
    .into_iter()
    .enumerate()
    {
        let len = offer[0].nonce_len();
        let rand = vec![i as u8; len];
        let nonce = links.last().map_or_else(|| vec![0x42; len], |l| chain_nonce(offer[0], &l.response, &rand));
        let r = Request::new(offer, &nonce, Some(&key)).unwrap();
        let (a, t1, t4) = exchange(&mut server, port, r.bytes());
        let v = verify(&r, &a, &key).unwrap_or_else(|e| panic!("{offer:?}: roughenough's answer refused: {e}"));
        assert_eq!(v.version, answered);
        holds_host_time(&v, t1, t4);
        links.push(link((i > 0).then_some(rand), key, &r, a));
    }
    assert!(matches!(check_chain(&links), Ok(Round::Consistent(v)) if v.len() == 3));
    // Batches of 8 under one root: paths of 3 hashes, 64 bytes each in
    // Google's protocol; in the draft too, from roughenough 1.3, which
    // hashes whole SHA-512 nodes and truncates only the root.
    assert_eq!(batch(&mut server, port, Version::Google, &key), [3 * 64; 8]);
    assert_eq!(batch(&mut server, port, Version::IetfDraft, &key), [3 * 64; 8]);
}

/// Sends 8 requests in `version` while the server is stopped (SIGSTOP),
/// then lets it go: it finds them queued and answers them as one batch.
/// Every answer must verify; returns the length of each one's `PATH`.
fn batch(server: &mut Running, port: u16, version: Version, key: &PublicKey) -> Vec<usize> {
    exchange(server, port, Request::new(&[version], &vec![0xee; version.nonce_len()], None).unwrap().bytes());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.0.id()).unwrap());
    let signal = |sig| nix::sys::signal::kill(pid, sig).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let requests: Vec<Request> =
        (0..8u8).map(|i| Request::new(&[version], &vec![i; version.nonce_len()], None).unwrap()).collect();
    signal(nix::sys::signal::Signal::SIGSTOP);
    // kill(2) returns before the stop: wait until every thread has stopped.
    let stopped = |task: std::fs::DirEntry| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with(['T', 't']))
    };
    let tasks = format!("/proc/{pid}/task");
    while !std::fs::read_dir(&tasks).unwrap().all(|t| stopped(t.unwrap())) {
        std::thread::sleep(Duration::from_millis(1));
    }
    for r in &requests {
        sock.send_to(r.bytes(), ("127.0.0.1", port)).unwrap();
    }
    signal(nix::sys::signal::Signal::SIGCONT);
    let mut paths = Vec::new();
    for _ in &requests {
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf).expect("an answer to each queued request");
        let a = &buf[..n];
        let m = Message::decode(if wire::is_framed(a) { wire::unframe(a).unwrap() } else { a }).unwrap();
        let r = requests.iter().find(|r| Some(r.nonce()) == m.get(Tag::NONC)).expect("an answer to one of ours");
        verify(r, a, key).unwrap_or_else(|e| panic!("{version:?}: a batched answer refused: {e}"));
        paths.push(m.get(Tag::PATH).unwrap().len());
    }
    paths
}

/// A roughenough 2 server on `port`, its clock `offset_s` seconds off.
fn roughenough_2(seed: [u8; 32], port: u16, offset_s: i32) -> Running {
    let bin = server_binary("CHRONOS_ROUGHENOUGH_RFC", "/usr/local/bin/roughenough_server", INSTALL_RFC);
    let seed_file = tempfile::NamedTempFile::new().unwrap();
    // Its format: `seed://` and the 32-byte Ed25519 seed in hex.
    std::fs::write(seed_file.path(), format!("seed://{}", hex(&seed))).unwrap();
    let child = Command::new(bin)
        .args(["--interface", "127.0.0.1", "--num-threads", "1", "--port", &port.to_string()])
        .arg(format!("--fixed-offset={offset_s}"))
        .arg("--seed-file")
        .arg(seed_file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child, Some(seed_file))
}

#[test]
fn roughenough_2_answers_in_rfc_version_1_and_a_server_set_back_leaves_a_report() {
    let (seed_a, seed_b) = ([0xa1; 32], [0xb2; 32]);
    let (key_a, key_b) = (SigningKey::from_bytes(&seed_a), SigningKey::from_bytes(&seed_b));
    let (key_a, key_b) = (key_a.verifying_key().to_bytes(), key_b.verifying_key().to_bytes());
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = roughenough_2(seed_a, port_a, 0);
    let mut b = roughenough_2(seed_b, port_b, -600);
    for offer in [&[Version::Rfc][..], &[Version::Rfc, Version::IetfDraft]] {
        let r = Request::new(offer, &[7; 32], Some(&key_a)).unwrap();
        let (answer, t1, t4) = exchange(&mut a, port_a, r.bytes());
        let v =
            verify(&r, &answer, &key_a).unwrap_or_else(|e| panic!("{offer:?}: roughenough 2's answer refused: {e}"));
        assert_eq!(v.version, Version::Rfc);
        holds_host_time(&v, t1, t4);
    }
    // A batch: with the server stopped, requests queue up in its socket;
    // continued, it answers them all under one root, each with its path.
    assert_eq!(batch(&mut a, port_a, Version::Rfc, &key_a), [3 * 32; 8], "8 requests, one tree: paths of 3 hashes");
    // A chained round: A, then B whose clock is 10 minutes behind.
    let first = Request::new(&[Version::Rfc], &[1; 32], None).unwrap();
    let (answer_a, _, _) = exchange(&mut a, port_a, first.bytes());
    let rand = vec![2; 32];
    let second = Request::new(&[Version::Rfc], &chain_nonce(Version::Rfc, &answer_a, &rand), None).unwrap();
    let (answer_b, _, _) = exchange(&mut b, port_b, second.bytes());
    let links = vec![link(None, key_a, &first, answer_a), link(Some(rand), key_b, &second, answer_b)];
    let Ok(Round::Malfeasance { contradiction, report, .. }) = check_chain(&links) else {
        panic!("the server set back was not caught: {:?}", check_chain(&links))
    };
    assert_eq!((contradiction.earlier_key, contradiction.later_key), (key_a, key_b));
    let back = MalfeasanceReport::from_json(&report.to_json()).unwrap();
    assert_eq!(check_report(&back, &[key_a, key_b]), Ok(contradiction));
}
