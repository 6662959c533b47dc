//! Integration tests of the ledger formats: known answers, property tests of
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! proofs, and the note, checkpoint and proof-file parsers.

mod formats;
mod proofs;
mod vectors;

use chronos_ledger::{Hash, HashAlg, HashKey, TreeHasher};

/// Leaf hashes of `n` distinct synthetic events.
pub fn leaves(h: &TreeHasher, n: u64) -> Vec<Hash> {
    (0..n).map(|i| h.leaf(format!("{{\"event\":{i}}}").as_bytes())).collect()
}

/// A hasher for any algorithm, keyed ones with a fixed test key.
pub fn hasher(alg: HashAlg) -> TreeHasher {
    let key = alg.is_keyed().then(|| HashKey::from_bytes([0x42; 32]));
    TreeHasher::new(alg, key.as_ref()).unwrap()
}
