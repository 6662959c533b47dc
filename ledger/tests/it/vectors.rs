//! Known-answer tests. SHA-256 results are checked against the RFC 6962 test
//! corpus of the certificate-transparency reference implementation; every
//! algorithm is checked against vectors from an independent Python script
//! (tests/vectors/gen_vectors.py, committed output in vectors.json).

use chronos_ledger::chain::{self, BatchHeader, ChainHead, TimeNs, TimeSource, TrustedTime};
use chronos_ledger::tree::{self, CompactRange, MemTree};
use chronos_ledger::{Hash, HashAlg, HashKey, TreeHasher};
use serde::Deserialize;

#[derive(Deserialize)]
struct Doc {
    leaves: Vec<String>,
    algorithms: Vec<AlgVectors>,
}

#[derive(Deserialize)]
struct AlgVectors {
    alg: String,
    proof_header: String,
    key: Option<String>,
    key_check: Option<String>,
    leaf_hashes: Vec<String>,
    roots: Vec<String>,
    inclusion: Vec<Inclusion>,
    consistency: Vec<Consistency>,
    chain: Chain,
}

#[derive(Deserialize)]
struct Inclusion {
    index: u64,
    size: u64,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct Consistency {
    old: u64,
    new: u64,
    proof: Vec<String>,
}

#[derive(Deserialize)]
struct Chain {
    origin: String,
    genesis: String,
    batches: Vec<Batch>,
}

#[derive(Deserialize)]
struct Batch {
    seq: u64,
    first_leaf: u64,
    leaf_count: u64,
    root: String,
    time_ns: u64,
    uncertainty_ns: u64,
    source: String,
    record: String,
    chain: String,
}

fn h(s: &str) -> Hash {
    Hash::from_hex(s).unwrap()
}

fn hs(v: &[String]) -> Vec<Hash> {
    v.iter().map(|s| h(s)).collect()
}

fn doc() -> Doc {
    serde_json::from_str(include_str!("../vectors/vectors.json")).unwrap()
}

#[test]
fn sha256_matches_the_rfc6962_reference_corpus() {
    // Roots of the first n of the eight corpus leaves, and PATH/PROOF values,
    // as published with the certificate-transparency reference code.
    let roots = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let corpus = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    let hasher = TreeHasher::unkeyed(HashAlg::Sha256);
    let mut t = MemTree::new();
    assert_eq!(t.root(&hasher), h(roots[0]));
    for (i, leaf) in corpus.iter().enumerate() {
        t.append(&hasher, hasher.leaf(&hex::decode(leaf).unwrap()));
        assert_eq!(t.root(&hasher), h(roots[i + 1]), "size {}", i + 1);
    }
    let path0_of_7 = tree::inclusion_proof(&hasher, &t, 0, 7).unwrap();
    assert_eq!(
        path0_of_7,
        vec![
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e"),
        ]
    );
    let cases = [
        (
            1,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, want) in cases {
        let got = tree::consistency_proof(&hasher, &t, old, new).unwrap();
        assert_eq!(got, want.iter().map(|s| h(s)).collect::<Vec<_>>(), "PROOF({old}, D[{new}])");
        tree::verify_consistency(&hasher, old, new, &h(roots[old as usize]), &h(roots[new as usize]), &got).unwrap();
    }
}

#[test]
fn every_algorithm_matches_the_independent_script() {
    let doc = doc();
    let leaves: Vec<Vec<u8>> = doc.leaves.iter().map(|l| hex::decode(l).unwrap()).collect();
    assert_eq!(doc.algorithms.len(), HashAlg::ALL.len());
    for v in &doc.algorithms {
        let alg = HashAlg::from_name(&v.alg).unwrap();
        let key = v.key.as_deref().map(|k| HashKey::from_hex(k).unwrap());
        let hasher = TreeHasher::new(alg, key.as_ref()).unwrap();
        let ctx = v.alg.as_str();

        let leaf_hashes: Vec<Hash> = leaves.iter().map(|d| hasher.leaf(d)).collect();
        assert_eq!(leaf_hashes, hs(&v.leaf_hashes), "{ctx}: leaf hashes");

        let mut mem = MemTree::new();
        let mut range = CompactRange::new();
        for (size, want) in v.roots.iter().enumerate() {
            let want = h(want);
            assert_eq!(tree::root(&hasher, &leaf_hashes[..size]), want, "{ctx}: root({size})");
            assert_eq!(range.root(&hasher), want, "{ctx}: compact range root({size})");
            assert_eq!(mem.root(&hasher), want, "{ctx}: memtree root({size})");
            if size < leaf_hashes.len() {
                range.append(&hasher, leaf_hashes[size], |_, _| {});
                mem.append(&hasher, leaf_hashes[size]);
            }
        }
        for c in &v.inclusion {
            let got = tree::inclusion_proof(&hasher, &mem, c.index, c.size).unwrap();
            assert_eq!(got, hs(&c.proof), "{ctx}: PATH({}, D[{}])", c.index, c.size);
            let root = h(&v.roots[c.size as usize]);
            tree::verify_inclusion(&hasher, c.index, c.size, &leaf_hashes[c.index as usize], &got, &root).unwrap();
        }
        for c in &v.consistency {
            let got = tree::consistency_proof(&hasher, &mem, c.old, c.new).unwrap();
            assert_eq!(got, hs(&c.proof), "{ctx}: PROOF({}, D[{}])", c.old, c.new);
            let (r1, r2) = (h(&v.roots[c.old as usize]), h(&v.roots[c.new as usize]));
            tree::verify_consistency(&hasher, c.old, c.new, &r1, &r2, &got).unwrap();
        }

        assert_eq!(chain::genesis(&hasher, &v.chain.origin), h(&v.chain.genesis), "{ctx}: genesis");
        let mut head = ChainHead::genesis(&hasher, &v.chain.origin);
        for b in &v.chain.batches {
            let header = BatchHeader {
                seq: b.seq,
                first_leaf: b.first_leaf,
                leaf_count: b.leaf_count,
                root: tree::root(&hasher, &leaf_hashes[b.first_leaf as usize..(b.first_leaf + b.leaf_count) as usize]),
                time: TrustedTime {
                    time: TimeNs(b.time_ns),
                    uncertainty_ns: b.uncertainty_ns,
                    source: TimeSource::new(&b.source).unwrap(),
                },
            };
            assert_eq!(header.root, h(&b.root), "{ctx}: batch {} root", b.seq);
            assert_eq!(hex::encode(header.record_bytes()), b.record, "{ctx}: batch {} record", b.seq);
            head = head.next(&hasher, &header).unwrap();
            assert_eq!(head.hash, h(&b.chain), "{ctx}: chain({})", b.seq);
        }
        assert_eq!(hasher.key_check().map(hex::encode), v.key_check, "{ctx}: key check");
        assert_eq!(chronos_ledger::proof::header(alg), v.proof_header, "{ctx}: proof file header");
    }
}
