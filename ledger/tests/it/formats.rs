//! Signed notes, checkpoints and proof files: interop with the Go reference
//! implementation, round trips, and rejection of malformed or forged input.

use chronos_ledger::chain::{TimeNs, TimeSource, TrustedTime};
use chronos_ledger::proof::{self, ProofFile};
use chronos_ledger::spec::{MAX_NOTE_BYTES, MAX_PROOF_BYTES};
use chronos_ledger::tree::{self, MemTree};
use chronos_ledger::{
    Checkpoint, FormatError, Hash, HashAlg, HashKey, Note, NoteSigner, NoteVerifier, TreeHasher, VerifyError,
};

// The example key and note of golang.org/x/mod/sumdb/note, the reference
// implementation of signed notes. Ed25519 is deterministic, so our signature
// must be byte-identical.
const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

const ORIGIN: &str = "example.com/chronos/test";

#[test]
fn note_signatures_match_the_go_reference() {
    let signer = NoteSigner::from_private_key(GO_SKEY).unwrap();
    assert_eq!(signer.verifier().to_string(), GO_VKEY);
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.private_key_string().as_str(), GO_SKEY);
    let note = signer.sign(GO_TEXT).unwrap();
    assert_eq!(note, format!("{GO_TEXT}\n{GO_SIG}"));
    let v = NoteVerifier::parse(GO_VKEY).unwrap();
    let parsed = Note::parse(note.as_bytes()).unwrap();
    assert_eq!(parsed.verify(&v).unwrap(), GO_TEXT);
    assert_eq!(parsed.to_string(), note);
}

#[test]
fn key_strings_reject_manglings() {
    // Every truncation and every single-byte change of a key string must be
    // refused (the key ID is a checksum over name and key).
    for s in [GO_SKEY, GO_VKEY] {
        let parse = |k: &str| {
            if s == GO_SKEY { NoteSigner::from_private_key(k).is_ok() } else { NoteVerifier::parse(k).is_ok() }
        };
        assert!(parse(s));
        for end in 0..s.len() {
            if s.is_char_boundary(end) {
                assert!(!parse(&s[..end]), "{:?}", &s[..end]);
            }
        }
        let b = s.as_bytes();
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] = if m[i] == b'z' { b'y' } else { m[i] + 1 };
            if let Ok(m) = String::from_utf8(m) {
                assert!(!parse(&m), "{m:?}");
            }
        }
    }
}

fn time() -> TrustedTime {
    TrustedTime { time: TimeNs(1_763_700_000_123_456_789), uncertainty_ns: 2_000_000, source: TimeSource::local() }
}

fn checkpoint(h: &TreeHasher, size: u64) -> (Checkpoint, MemTree) {
    let mut t = MemTree::new();
    for l in crate::leaves(h, size) {
        t.append(h, l);
    }
    let cp = Checkpoint {
        origin: ORIGIN.to_owned(),
        size,
        root: t.root(h),
        hash: h.alg(),
        chain_seq: 3,
        chain_hash: Hash([9; 32]),
        time: time(),
    };
    (cp, t)
}

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[7; 32]).unwrap()
}

#[test]
fn checkpoint_round_trips_and_has_the_specified_text() {
    let h = TreeHasher::unkeyed(HashAlg::Sha256);
    let (cp, _) = checkpoint(&h, 8);
    let body = cp.body();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0], ORIGIN);
    assert_eq!(lines[1], "8");
    assert_eq!(lines[3], "hash sha256");
    assert_eq!(lines[4], format!("chain 3 {}", Hash([9; 32]).to_base64()));
    assert_eq!(lines[5], "time 1763700000123456789 2000000 local");
    let note = cp.sign(&signer()).unwrap();
    let (back, _) = Checkpoint::open(note.as_bytes(), &signer().verifier()).unwrap();
    assert_eq!(back, cp);
}

#[test]
fn checkpoint_rejects_forgeries_and_other_keys() {
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let (cp, _) = checkpoint(&h, 5);
    let v = signer().verifier();
    let note = cp.sign(&signer()).unwrap();

    // Same name, different key: a different key ID, so "no trusted signature".
    let other = NoteSigner::from_seed(ORIGIN, &[8; 32]).unwrap();
    let forged = cp.sign(&other).unwrap();
    assert!(matches!(Checkpoint::open(forged.as_bytes(), &v), Err(VerifyError::NoTrustedSignature { .. })));

    // Right name and key ID, wrong signature bytes: a bad signature.
    let mut n = Note::parse(note.as_bytes()).unwrap().to_string();
    let sig_at = n.rfind(' ').unwrap() + 8;
    let mut bytes = n.into_bytes();
    bytes[sig_at] = if bytes[sig_at] == b'A' { b'B' } else { b'A' };
    n = String::from_utf8(bytes).unwrap();
    assert!(matches!(Checkpoint::open(n.as_bytes(), &v), Err(VerifyError::BadSignature { .. })));

    // A changed body under the original signature.
    let tampered = note.replacen("\n5\n", "\n6\n", 1);
    assert!(matches!(Checkpoint::open(tampered.as_bytes(), &v), Err(VerifyError::BadSignature { .. })));

    // Signed by a key for another origin: refused to sign, and refused to open.
    let stranger = NoteSigner::from_seed("example.com/other", &[7; 32]).unwrap();
    assert!(cp.sign(&stranger).is_err());
    let mut cp2 = cp.clone();
    cp2.origin = "example.com/other".to_owned();
    let note2 = cp2.sign(&stranger).unwrap();
    assert!(Checkpoint::open(note2.as_bytes(), &v).is_err());

    // Cosignatures by unknown keys are ignored.
    let witness = NoteSigner::from_seed("witness.example", &[1; 32]).unwrap();
    let cosigned = format!("{note}{}", witness.signature_line(&cp.body()));
    assert_eq!(Checkpoint::open(cosigned.as_bytes(), &v).unwrap().0, cp);
}

fn malformed(input: &[u8]) -> FormatError {
    match Checkpoint::open(input, &signer().verifier()) {
        Err(VerifyError::Format(e)) => e,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn notes_reject_malformed_input() {
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let note = checkpoint(&h, 5).0.sign(&signer()).unwrap();
    // Missing final newline.
    assert!(matches!(malformed(note.trim_end().as_bytes()), FormatError::Malformed { .. }));
    // Trailing extra newline: the last blank line moves below the signature.
    assert!(matches!(malformed(format!("{note}\n").as_bytes()), FormatError::Malformed { .. }));
    // No blank line before the signatures.
    assert!(matches!(malformed(note.replacen("\n\n", "\n", 1).as_bytes()), FormatError::Malformed { .. }));
    // Control characters.
    assert!(matches!(malformed(note.replacen("hash", "ha\rsh", 1).as_bytes()), FormatError::ControlCharacter { .. }));
    // Not UTF-8.
    let mut bad = note.clone().into_bytes();
    bad[2] = 0xff;
    assert_eq!(malformed(&bad), FormatError::NotUtf8 { what: "signed note" });
    // Oversized.
    let big = format!("{}\n{note}", "x".repeat(MAX_NOTE_BYTES));
    assert!(matches!(malformed(big.as_bytes()), FormatError::TooLarge { .. }));
    // A note with no signature lines at all.
    assert!(matches!(Note::parse(b"a\n\n"), Err(FormatError::Malformed { .. })));
    // Too many signatures.
    let w = NoteSigner::from_seed("w", &[1; 32]).unwrap();
    let many = format!("{note}{}", w.signature_line("x\n").repeat(64));
    assert!(matches!(Note::parse(many.as_bytes()), Err(FormatError::Malformed { .. })));
}

#[test]
fn checkpoint_bodies_reject_non_canonical_values() {
    let s = signer();
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let body = checkpoint(&h, 5).0.body();
    let root_line = body.lines().nth(2).unwrap().to_owned();
    let cases = [
        body.replacen("\n5\n", "\n05\n", 1),
        body.replacen("\n5\n", "\n+5\n", 1),
        body.replacen("\n5\n", "\n 5\n", 1),
        body.replacen("\n5\n", "\n18446744073709551616\n", 1),
        body.replacen(&root_line, root_line.trim_end_matches('='), 1),
        body.replacen("hash blake3", "hash BLAKE3", 1),
        body.replacen("hash blake3", "hash  blake3", 1),
        body.replacen("chain 3 ", "chain 03 ", 1),
        body.replacen(" 2000000 ", " 02000000 ", 1),
        body.replacen(" local\n", "\n", 1),
        format!("{body}extra line\n"),
        body.replacen("hash blake3\n", "", 1),
        body.replacen(ORIGIN, "", 1),
    ];
    for text in cases {
        // Signed correctly, so only the body parser can refuse it.
        let note = s.sign(&text).unwrap_or_else(|_| format!("{text}\n{}", s.signature_line(&text)));
        let e = malformed(note.as_bytes());
        assert!(matches!(e, FormatError::Malformed { what: "checkpoint" | "note text", .. }), "{text:?}: {e}");
    }
}

#[test]
fn proof_files_round_trip_and_verify_offline() {
    for alg in HashAlg::ALL {
        let h = crate::hasher(alg);
        let key = alg.is_keyed().then(|| HashKey::from_bytes([0x42; 32]));
        let (cp, tree) = checkpoint(&h, 37);
        let note = cp.sign(&signer()).unwrap();
        let v = signer().verifier();
        let event = b"{\"event\":20}";
        let leaf = h.leaf(event);
        let proof = ProofFile {
            extra: Some(leaf.0.to_vec()),
            index: 20,
            path: tree::inclusion_proof(&h, &tree, 20, 37).unwrap(),
            checkpoint: note.clone(),
        };
        let text = proof.encode().unwrap();
        assert!(text.starts_with(&format!("{}\nextra ", proof::header(alg))), "{alg}: {text}");
        let parsed = ProofFile::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, proof);
        assert_eq!(parsed.encode().unwrap(), text, "{alg}: the file is written back byte for byte");
        let ok = parsed.verify(&v, key.as_ref(), Some(event)).unwrap();
        assert_eq!((ok.index, ok.leaf, ok.checkpoint.size), (20, leaf, 37));
        parsed.verify(&v, key.as_ref(), None).unwrap();

        // Wrong event bytes, wrong key, wrong hash key.
        assert!(matches!(
            parsed.verify(&v, key.as_ref(), Some(b"{\"event\":21}")),
            Err(VerifyError::LeafMismatch { .. })
        ));
        let other = NoteSigner::from_seed(ORIGIN, &[8; 32]).unwrap().verifier();
        assert!(matches!(parsed.verify(&other, key.as_ref(), None), Err(VerifyError::NoTrustedSignature { .. })));
        if key.is_some() {
            assert!(matches!(parsed.verify(&v, None, None), Err(VerifyError::Key(_))));
            let wrong = HashKey::from_bytes([0x43; 32]);
            assert!(parsed.verify(&v, Some(&wrong), Some(event)).is_err());
        }

        // Every flipped bit of the file is caught, even in the unused
        // trailing bits of the log's signature line (its own lines must be
        // canonical base64).
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            let mut m = bytes.to_vec();
            m[i] ^= 0x01;
            let res = ProofFile::parse(&m).map(|p| p.verify(&v, key.as_ref(), Some(event)));
            assert!(!matches!(res, Ok(Ok(_))), "{alg}: flipping byte {i} ({:?}) went unnoticed", bytes[i] as char);
        }
    }
}

#[test]
fn proof_files_reject_malformed_input() {
    let h = TreeHasher::unkeyed(HashAlg::Sha256);
    let (cp, tree) = checkpoint(&h, 4);
    let note = cp.sign(&signer()).unwrap();
    let good =
        ProofFile { extra: None, index: 1, path: tree::inclusion_proof(&h, &tree, 1, 4).unwrap(), checkpoint: note };
    let text = good.encode().unwrap();
    assert_eq!(ProofFile::parse(text.as_bytes()).unwrap(), good);
    // Without extra and without an event there is nothing to prove.
    assert!(matches!(good.verify(&signer().verifier(), None, None), Err(VerifyError::NoLeaf)));
    let bad = [
        text.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
        text.replacen("index 1", "index 01", 1),
        text.replacen("index 1", "index -1", 1),
        text.replacen("index 1\n", "", 1),
        text.split("\n\n").next().unwrap().to_owned(),
        text.replacen("=\n", "\n", 1),
        format!("{}{}", &text[..text.find("\n\n").unwrap() + 1], ""),
    ];
    for b in bad {
        assert!(ProofFile::parse(b.as_bytes()).is_err(), "{b:?}");
    }
    let huge = format!("{text}{}", "x".repeat(MAX_PROOF_BYTES));
    assert!(matches!(ProofFile::parse(huge.as_bytes()), Err(FormatError::TooLarge { .. })));
    let long = ProofFile { path: vec![Hash([1; 32]); 65], ..good.clone() };
    assert!(ProofFile::parse(long.encode().unwrap().as_bytes()).is_err());
    // A proof file is written only around a signed checkpoint: its `hash`
    // line decides the first line.
    let loose = ProofFile { checkpoint: cp.body(), ..good.clone() };
    assert!(loose.encode().is_err());
}

#[test]
fn proof_file_headers_are_c2sp_for_sha256_and_name_the_algorithm_otherwise() {
    assert_eq!(proof::C2SP_PROOF_HEADER, "c2sp.org/tlog-proof@v1");
    let known = [
        (HashAlg::Sha256, "c2sp.org/tlog-proof@v1"),
        (HashAlg::Blake3, "chronos/tlog-proof-blake3@v1"),
        (HashAlg::Blake3Keyed, "chronos/tlog-proof-blake3-keyed@v1"),
        (HashAlg::HmacSha256, "chronos/tlog-proof-hmac-sha256@v1"),
    ];
    assert_eq!(known.len(), HashAlg::ALL.len());
    for (alg, line) in known {
        assert_eq!(proof::header(alg), line, "{alg}");
    }
}

#[test]
fn a_proof_file_whose_first_line_is_another_algorithms_is_refused_and_says_so() {
    for named in HashAlg::ALL {
        let h = crate::hasher(named);
        let (cp, tree) = checkpoint(&h, 6);
        let good = ProofFile {
            extra: Some(crate::leaves(&h, 6)[2].0.to_vec()),
            index: 2,
            path: tree::inclusion_proof(&h, &tree, 2, 6).unwrap(),
            checkpoint: cp.sign(&signer()).unwrap(),
        };
        let text = good.encode().unwrap();
        for declared in HashAlg::ALL.into_iter().filter(|&a| a != named) {
            let swapped = text.replacen(proof::header(named), proof::header(declared), 1);
            assert_eq!(
                ProofFile::parse(swapped.as_bytes()),
                Err(FormatError::ProofHeaderMismatch { header: declared, checkpoint: named }),
                "{declared} header on a {named} checkpoint"
            );
        }
    }
    // The two cases a C2SP tool and Chronos could confuse, with what the
    // error tells the reader.
    let blake3 = TreeHasher::unkeyed(HashAlg::Blake3);
    let (cp, tree) = checkpoint(&blake3, 6);
    let proof = ProofFile {
        extra: None,
        index: 2,
        path: tree::inclusion_proof(&blake3, &tree, 2, 6).unwrap(),
        checkpoint: cp.sign(&signer()).unwrap(),
    };
    let text = proof.encode().unwrap();
    assert!(text.starts_with("chronos/tlog-proof-blake3@v1\n"), "{text}");
    let as_c2sp = text.replacen("chronos/tlog-proof-blake3@v1", "c2sp.org/tlog-proof@v1", 1);
    let e = ProofFile::parse(as_c2sp.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        e,
        "proof file: line 1: c2sp.org/tlog-proof@v1 is the first line of sha256 proof files, but the checkpoint \
         says `hash blake3`, whose proof files begin with chronos/tlog-proof-blake3@v1"
    );
    let sha256 = TreeHasher::unkeyed(HashAlg::Sha256);
    let (cp, tree) = checkpoint(&sha256, 6);
    let proof = ProofFile {
        extra: None,
        index: 2,
        path: tree::inclusion_proof(&sha256, &tree, 2, 6).unwrap(),
        checkpoint: cp.sign(&signer()).unwrap(),
    };
    let text = proof.encode().unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 2\n"), "{text}");
    let as_blake3 = text.replacen("c2sp.org/tlog-proof@v1", "chronos/tlog-proof-blake3@v1", 1);
    let e = ProofFile::parse(as_blake3.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("says `hash sha256`, whose proof files begin with c2sp.org/tlog-proof@v1"), "{e}");
    // Unknown first lines, including near misses, stay plain malformed input.
    for first in ["chronos/tlog-proof-sha256@v1", "chronos/tlog-proof-blake3@v2", "chronos/tlog-proof@v1", ""] {
        let other = text.replacen("c2sp.org/tlog-proof@v1", first, 1);
        assert!(matches!(ProofFile::parse(other.as_bytes()), Err(FormatError::Malformed { line: 1, .. })), "{first:?}");
    }
}

/// The fenced block after `<!-- example: NAME -->` in spec/ledger.md.
fn spec_example(name: &str) -> String {
    let spec = include_str!("../../../spec/ledger.md");
    let marker = format!("<!-- example: {name} -->\n```text\n");
    let start = spec.find(&marker).unwrap() + marker.len();
    spec[start..start + spec[start..].find("```").unwrap()].to_owned()
}

#[test]
fn the_spec_examples_are_the_independent_scripts_and_verify() {
    let doc: serde_json::Value = serde_json::from_str(include_str!("../vectors/vectors.json")).unwrap();
    let ex = &doc["spec_example"];
    let spec = include_str!("../../../spec/ledger.md");
    let vkey = spec.split("signed by the example key `").nth(1).unwrap().split('`').next().unwrap();
    assert_eq!(vkey, ex["verifier_key"].as_str().unwrap());
    assert_eq!(spec_example("checkpoint"), ex["checkpoint"].as_str().unwrap());
    assert_eq!(spec_example("proof"), ex["proof"].as_str().unwrap());
    let v = NoteVerifier::parse(vkey).unwrap();
    let (cp, _) = Checkpoint::open(spec_example("checkpoint").as_bytes(), &v).unwrap();
    assert_eq!((cp.size, cp.chain_seq, cp.hash), (41, 3, HashAlg::Blake3));
    let proof = ProofFile::parse(spec_example("proof").as_bytes()).unwrap();
    let ok = proof.verify(&v, None, Some(b"@ABC")).unwrap();
    assert_eq!(ok.index, 5);
}

#[test]
fn a_failing_signature_by_the_trusted_key_sinks_the_note_even_beside_a_good_one() {
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let (cp, _) = checkpoint(&h, 5);
    let note = cp.sign(&signer()).unwrap();
    // A second line by the same key over other text.
    let wrong = signer().signature_line("something else\n");
    let doubled = format!("{note}{wrong}");
    assert!(matches!(
        Checkpoint::open(doubled.as_bytes(), &signer().verifier()),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn a_checkpoint_for_another_origin_under_the_trusted_key_is_refused() {
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let (mut cp, _) = checkpoint(&h, 5);
    cp.origin = "example.com/elsewhere".to_owned();
    // Checkpoint::sign refuses this; a hostile signer would not.
    let note = signer().sign(&cp.body()).unwrap();
    assert!(matches!(Checkpoint::open(note.as_bytes(), &signer().verifier()), Err(VerifyError::OriginMismatch { .. })));
}

#[test]
fn impossible_chain_positions_and_false_empty_logs_are_refused() {
    let h = TreeHasher::unkeyed(HashAlg::Sha256);
    let (cp, _) = checkpoint(&h, 5);
    let mut bad = cp.clone();
    bad.chain_seq = 0;
    assert!(Checkpoint::from_body(&bad.body()).is_err(), "5 leaves but no batch");
    bad.chain_seq = 6;
    assert!(Checkpoint::from_body(&bad.body()).is_err(), "more batches than leaves");
    let empty = Checkpoint {
        size: 0,
        chain_seq: 0,
        root: h.empty_root(),
        chain_hash: chronos_ledger::chain::genesis(&h, ORIGIN),
        ..cp.clone()
    };
    assert_eq!(Checkpoint::from_body(&empty.body()).unwrap(), empty);
    empty.check_empty(&h).unwrap();
    let lying = Checkpoint { root: Hash([1; 32]), ..empty.clone() };
    assert_eq!(lying.check_empty(&h), Err(VerifyError::EmptyLog));
    let wrong_genesis = Checkpoint { chain_hash: Hash([1; 32]), ..empty };
    assert_eq!(wrong_genesis.check_empty(&h), Err(VerifyError::EmptyLog));
}

#[test]
fn limits_are_inclusive() {
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let note = checkpoint(&h, 5).0.sign(&signer()).unwrap();
    let w = NoteSigner::from_seed("w", &[1; 32]).unwrap();
    let line = w.signature_line("x\n");
    let sixty_four = format!("{note}{}", line.repeat(63));
    assert_eq!(Note::parse(sixty_four.as_bytes()).unwrap().signatures().len(), 64);
    let sixty_five = format!("{note}{}", line.repeat(64));
    assert!(Note::parse(sixty_five.as_bytes()).is_err());
    // A note of exactly the maximum size: pad the text with a long line.
    let pad = MAX_NOTE_BYTES - "\n\n".len() - line.len();
    let text = format!("{}\n", "p".repeat(pad));
    let max = format!("{text}\n{line}");
    assert_eq!(max.len(), MAX_NOTE_BYTES);
    assert!(Note::parse(max.as_bytes()).is_ok());
    assert!(Note::parse(format!("p{max}").as_bytes()).is_err());
}

#[test]
fn foreign_lines_are_read_as_go_reads_them() {
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let (cp, _) = checkpoint(&h, 5);
    let note = cp.sign(&signer()).unwrap();
    // A witness line whose base64 has its unused trailing bits set.
    let w = NoteSigner::from_seed("witness.example", &[1; 32]).unwrap();
    let line = w.signature_line(&cp.body());
    let b64_end = line.len() - 2; // before "=\n"
    let last = line.as_bytes()[b64_end - 1];
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let pos = ALPHABET.iter().position(|&c| c == last).unwrap();
    let mut odd = line.clone().into_bytes();
    odd[b64_end - 1] = ALPHABET[pos ^ 1];
    let cosigned = format!("{note}{}", String::from_utf8(odd).unwrap());
    assert_eq!(Checkpoint::open(cosigned.as_bytes(), &signer().verifier()).unwrap().0, cp);
    // The same change to the log's own line is refused.
    let own = signer().signature_line(&cp.body());
    let own_end = own.len() - 2; // before "=\n"
    let mut odd = own.into_bytes();
    odd[own_end - 1] = ALPHABET[ALPHABET.iter().position(|&c| c == odd[own_end - 1]).unwrap() ^ 1];
    let bent = format!("{}\n{}", cp.body(), String::from_utf8(odd).unwrap());
    assert!(matches!(Checkpoint::open(bent.as_bytes(), &signer().verifier()), Err(VerifyError::BadSignature { .. })));
    // DEL and C1 characters are not C0 controls: allowed in note text.
    let text = "a\u{7f}b\u{85}c\n";
    let n = signer().sign(text).unwrap();
    assert_eq!(Note::parse(n.as_bytes()).unwrap().verify(&signer().verifier()).unwrap(), text);
}

#[test]
fn weak_verifier_keys_are_refused() {
    // The identity point (small order), encoded with a correct key ID.
    let mut pk = [0u8; 32];
    pk[0] = 1;
    let id = chronos_ledger::note::key_id("weak", &pk);
    let mut raw = vec![1u8];
    raw.extend_from_slice(&pk);
    use base64::Engine as _;
    let vkey = format!("weak+{id:08x}+{}", base64::engine::general_purpose::STANDARD.encode(raw));
    let e = NoteVerifier::parse(&vkey).unwrap_err().to_string();
    assert!(e.contains("small order"), "{e}");
}

#[test]
fn an_opaque_extra_is_ignored_when_the_event_is_given() {
    let h = TreeHasher::unkeyed(HashAlg::Sha256);
    let (cp, tree) = checkpoint(&h, 9);
    let event = b"{\"event\":4}";
    let proof = ProofFile {
        extra: Some(b"some other application's data".to_vec()),
        index: 4,
        path: tree::inclusion_proof(&h, &tree, 4, 9).unwrap(),
        checkpoint: cp.sign(&signer()).unwrap(),
    };
    assert!(proof.verify(&signer().verifier(), None, Some(event)).is_ok());
    assert!(matches!(proof.verify(&signer().verifier(), None, None), Err(VerifyError::Format(_))));
}

mod mutations {
    //! Random edits of valid notes and proof files: parsers never panic, and
    //! whatever still verifies says exactly what the original said.
    use super::*;
    use proptest::prelude::*;

    fn edit(original: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut b = original.to_vec();
        for &(pos, byte, op) in edits {
            let at = pos % (b.len() + 1);
            match op {
                0 if at < b.len() => b[at] = byte,
                1 => b.insert(at, byte),
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => {}
            }
        }
        b
    }

    fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        proptest::collection::vec(
            (any::<usize>(), prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(b'=')], 0u8..3),
            1..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn edited_checkpoints_never_verify_as_something_else(e in edits()) {
            let h = TreeHasher::unkeyed(HashAlg::Sha256);
            let (cp, _) = checkpoint(&h, 11);
            let note = cp.sign(&signer()).unwrap();
            let edited = edit(note.as_bytes(), &e);
            if let Ok((got, _)) = Checkpoint::open(&edited, &signer().verifier()) {
                prop_assert_eq!(got, cp);
            }
        }

        #[test]
        fn edited_proof_files_never_verify_as_something_else(e in edits()) {
            let h = TreeHasher::unkeyed(HashAlg::Blake3);
            let (cp, tree) = checkpoint(&h, 11);
            let leaf = crate::leaves(&h, 11)[7];
            let proof = ProofFile {
                extra: Some(leaf.0.to_vec()),
                index: 7,
                path: tree::inclusion_proof(&h, &tree, 7, 11).unwrap(),
                checkpoint: cp.sign(&signer()).unwrap(),
            };
            let edited = edit(proof.encode().unwrap().as_bytes(), &e);
            if let Ok(p) = ProofFile::parse(&edited)
                && let Ok(ok) = p.verify(&signer().verifier(), None, None)
            {
                prop_assert_eq!((ok.index, ok.leaf, ok.checkpoint), (7, leaf, cp));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Note::parse(&bytes);
            let _ = Checkpoint::open(&bytes, &signer().verifier());
            let _ = ProofFile::parse(&bytes).map(|p| p.verify(&signer().verifier(), None, Some(&bytes)));
            let _ = std::str::from_utf8(&bytes).map(|s| (NoteVerifier::parse(s), NoteSigner::from_private_key(s), Checkpoint::from_body(s)));
        }
    }
}
