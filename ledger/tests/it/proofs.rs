//! Property tests of the tree: every tree size up to a few thousand, every
//! (index, size) and (old, new) pair up to a few hundred, random pairs above,
//! and a flipped bit anywhere in a proof, root or leaf must be caught.

use std::sync::OnceLock;

use chronos_ledger::tree::{self, CompactRange, MemTree};
use chronos_ledger::{Hash, HashAlg, TreeHasher};
use proptest::prelude::*;

/// Largest tree the property tests use.
const MAX: u64 = 3000;
/// Below this size every pair is checked exhaustively.
const EXHAUSTIVE: u64 = 160;

struct Fixture {
    hasher: TreeHasher,
    tree: MemTree,
    leaves: Vec<Hash>,
    /// roots[n] = root of the first n leaves.
    roots: Vec<Hash>,
}

fn fixture(alg: HashAlg) -> &'static Fixture {
    static BLAKE3: OnceLock<Fixture> = OnceLock::new();
    static SHA256: OnceLock<Fixture> = OnceLock::new();
    let cell = match alg {
        HashAlg::Sha256 => &SHA256,
        _ => &BLAKE3,
    };
    cell.get_or_init(|| {
        let hasher = TreeHasher::unkeyed(alg);
        let leaves = crate::leaves(&hasher, MAX);
        let mut tree = MemTree::new();
        let mut roots = vec![tree.root(&hasher)];
        for l in &leaves {
            tree.append(&hasher, *l);
            roots.push(tree.root(&hasher));
        }
        Fixture { hasher, tree, leaves, roots }
    })
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out.0[bit / 8 % 32] ^= 1 << (bit % 8);
    out
}

/// The RFC 6962 definition, recursively and without shortcuts.
fn naive_root(h: &TreeHasher, leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => h.empty_root(),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            h.node(&naive_root(h, &leaves[..k]), &naive_root(h, &leaves[k..]))
        }
    }
}

#[test]
fn roots_match_the_definition_at_every_size() {
    for (alg, upto) in [(HashAlg::Blake3, MAX), (HashAlg::Sha256, 700)] {
        let f = fixture(alg);
        let mut range = CompactRange::new();
        for n in 0..=upto as usize {
            let want = naive_root(&f.hasher, &f.leaves[..n]);
            assert_eq!(f.roots[n], want, "{alg} size {n}");
            assert_eq!(range.root(&f.hasher), want, "{alg} compact range, size {n}");
            assert_eq!(f.tree.root_at(&f.hasher, n as u64), Some(want), "{alg} root_at({n})");
            if n < f.leaves.len() {
                range.append(&f.hasher, f.leaves[n], |_, _| {});
            }
        }
        // A range rebuilt from its stored parts continues identically.
        let again = CompactRange::from_parts(range.size(), range.hashes().to_vec()).unwrap();
        assert_eq!(again, range);
        let fewer = &range.hashes()[1..];
        assert!(CompactRange::from_parts(range.size(), fewer.to_vec()).is_none());
    }
}

fn check_inclusion(f: &Fixture, index: u64, size: u64) {
    let h = &f.hasher;
    let proof = tree::inclusion_proof(h, &f.tree, index, size).unwrap();
    let (leaf, root) = (f.leaves[index as usize], f.roots[size as usize]);
    tree::verify_inclusion(h, index, size, &leaf, &proof, &root).unwrap();
    assert!(proof.len() <= 64 - (size - 1).leading_zeros() as usize);
    if size > 1 {
        let other = (index + 1) % size;
        assert!(tree::verify_inclusion(h, other, size, &leaf, &proof, &root).is_err());
        let mut short = proof.clone();
        short.pop();
        assert!(tree::verify_inclusion(h, index, size, &leaf, &short, &root).is_err());
    }
    let mut long = proof.clone();
    long.push(root);
    assert!(tree::verify_inclusion(h, index, size, &leaf, &long, &root).is_err());
}

fn check_consistency(f: &Fixture, old: u64, new: u64) {
    let h = &f.hasher;
    let proof = tree::consistency_proof(h, &f.tree, old, new).unwrap();
    let (r1, r2) = (f.roots[old as usize], f.roots[new as usize]);
    tree::verify_consistency(h, old, new, &r1, &r2, &proof).unwrap();
    if 0 < old && old < new {
        // The same proof proves nothing about other sizes or roots.
        assert!(tree::verify_consistency(h, old, new, &r2, &r2, &proof).is_err());
        assert!(tree::verify_consistency(h, old, new, &r1, &r1, &proof).is_err());
        let mut long = proof.clone();
        long.push(r1);
        assert!(tree::verify_consistency(h, old, new, &r1, &r2, &long).is_err());
        assert!(tree::verify_consistency(h, old, new, &r1, &r2, &proof[..proof.len() - 1]).is_err());
    }
}

#[test]
fn every_pair_of_small_sizes() {
    for alg in [HashAlg::Blake3, HashAlg::Sha256] {
        let f = fixture(alg);
        for size in 1..=EXHAUSTIVE {
            for index in 0..size {
                check_inclusion(f, index, size);
            }
            for old in 0..=size {
                check_consistency(f, old, size);
            }
        }
    }
}

#[test]
fn every_size_up_to_max() {
    let f = fixture(HashAlg::Blake3);
    for size in 1..=MAX {
        for index in [0, size / 3, size / 2, size - 1] {
            check_inclusion(f, index, size);
        }
        for old in [1, size / 2, size - 1] {
            check_consistency(f, old, size);
        }
    }
}

fn alg() -> impl Strategy<Value = HashAlg> {
    prop_oneof![Just(HashAlg::Blake3), Just(HashAlg::Sha256)]
}

fn size_and_index() -> impl Strategy<Value = (u64, u64)> {
    (1..=MAX).prop_flat_map(|size| (Just(size), 0..size))
}

fn sizes() -> impl Strategy<Value = (u64, u64)> {
    (1..=MAX).prop_flat_map(|new| (0..=new, Just(new)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn inclusion_verifies_and_any_flipped_bit_fails(alg in alg(), (size, index) in size_and_index(), pick: usize, bit in 0usize..256) {
        let f = fixture(alg);
        let h = &f.hasher;
        let proof = tree::inclusion_proof(h, &f.tree, index, size).unwrap();
        let (leaf, root) = (f.leaves[index as usize], f.roots[size as usize]);
        prop_assert!(tree::verify_inclusion(h, index, size, &leaf, &proof, &root).is_ok());
        prop_assert!(tree::verify_inclusion(h, index, size, &flip(&leaf, bit), &proof, &root).is_err());
        prop_assert!(tree::verify_inclusion(h, index, size, &leaf, &proof, &flip(&root, bit)).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = pick % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(tree::verify_inclusion(h, index, size, &leaf, &bad, &root).is_err());
        }
    }

    #[test]
    fn consistency_verifies_and_any_flipped_bit_fails(alg in alg(), (old, new) in sizes(), pick: usize, bit in 0usize..256) {
        let f = fixture(alg);
        let h = &f.hasher;
        let proof = tree::consistency_proof(h, &f.tree, old, new).unwrap();
        let (r1, r2) = (f.roots[old as usize], f.roots[new as usize]);
        prop_assert!(tree::verify_consistency(h, old, new, &r1, &r2, &proof).is_ok());
        prop_assert!(tree::verify_consistency(h, old, new, &flip(&r1, bit), &r2, &proof).is_err());
        // From the empty tree the proof is empty and binds no new root.
        if old > 0 {
            prop_assert!(tree::verify_consistency(h, old, new, &r1, &flip(&r2, bit), &proof).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = pick % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(tree::verify_consistency(h, old, new, &r1, &r2, &bad).is_err());
        }
    }
}
