//! Prints the worked example of spec/ledger.md: the BLAKE3 test-vector log
//! after its third batch, signed with a fixed example key, and a proof file
//! for leaf 5. `cargo run -p chronos-ledger --example spec_example`
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use chronos_ledger::chain::{BatchHeader, ChainHead, TimeNs, TimeSource, TrustedTime};
use chronos_ledger::proof::ProofFile;
use chronos_ledger::tree::{self, MemTree};
use chronos_ledger::{Checkpoint, HashAlg, NoteSigner, TreeHasher};

fn main() {
    let doc: serde_json::Value = serde_json::from_str(include_str!("../tests/vectors/vectors.json")).unwrap();
    let leaves: Vec<Vec<u8>> =
        doc["leaves"].as_array().unwrap().iter().map(|l| hex::decode(l.as_str().unwrap()).unwrap()).collect();
    let origin = "example.com/chronos/vectors";
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let mut t = MemTree::new();
    for l in &leaves {
        t.append(&h, h.leaf(l));
    }
    let batches = [
        (1, 0, 3, 1_763_700_000_000_000_000, 0, "local"),
        (2, 3, 1, 1_763_700_000_250_000_000, 1_500_000, "local"),
        (3, 4, 37, 1_763_700_001_000_000_001, u64::MAX, "quorum:3-of-5"),
    ];
    let mut head = ChainHead::genesis(&h, origin);
    for (seq, first, count, ns, unc, src) in batches {
        let hashes: Vec<_> = leaves[first as usize..(first + count) as usize].iter().map(|l| h.leaf(l)).collect();
        let header = BatchHeader {
            seq,
            first_leaf: first,
            leaf_count: count,
            root: tree::root(&h, &hashes),
            time: TrustedTime { time: TimeNs(ns), uncertainty_ns: unc, source: TimeSource::new(src).unwrap() },
        };
        head = head.next(&h, &header).unwrap();
    }
    let signer = NoteSigner::from_seed(origin, &[0x5e; 32]).unwrap();
    let cp = Checkpoint {
        origin: origin.to_owned(),
        size: head.size,
        root: t.root(&h),
        hash: HashAlg::Blake3,
        chain_seq: head.seq,
        chain_hash: head.hash,
        time: TrustedTime { time: TimeNs(1_763_700_001_500_000_000), uncertainty_ns: 2_000_000, source: TimeSource::local() },
    };
    let note = cp.sign(&signer).unwrap();
    println!("verifier key: {}\n", signer.verifier());
    println!("{note}");
    let proof = ProofFile {
        extra: Some(h.leaf(&leaves[5]).0.to_vec()),
        index: 5,
        path: tree::inclusion_proof(&h, &t, 5, t.size()).unwrap(),
        checkpoint: note,
    };
    print!("{}", proof.encode());
}
