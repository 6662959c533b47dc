//! The trust anchors of a run: what the user trusts, checked against the
//! log's identity before any row is read.

use chronos_ledger::chain::genesis;
use chronos_ledger::{Checkpoint, Hash, HashAlg, HashKey, NoteVerifier, TreeHasher};

use super::rows::Identity;
use crate::Error;
use crate::report::{Finding, Kind};

/// What to trust, given by the user.
#[derive(Debug, Default)]
pub struct Options {
    /// The log's verifier key; `None` reads it from `chronos_log`.
    pub trusted_key: Option<NoteVerifier>,
    /// The hash key of a keyed log.
    pub hash_key: Option<HashKey>,
    /// A signed checkpoint saved earlier: the log must extend it.
    pub saved_checkpoint: Option<String>,
}

/// The trust anchors of a run, checked before any row is read.
pub(crate) struct Anchors {
    pub hasher: TreeHasher,
    pub trusted: NoteVerifier,
    pub key_source: String,
    pub saved: Option<Checkpoint>,
    pub findings: Vec<(u64, Finding)>,
    pub genesis: Hash,
}

/// Checks the log's identity against what the user trusts.
pub(crate) fn anchors(identity: &Identity, opts: &Options) -> Result<Anchors, Error> {
    let alg = HashAlg::from_name(&identity.hash_alg).ok_or_else(|| {
        Error::Identity(format!("chronos_log.hash_alg {:?} is not a known algorithm", identity.hash_alg))
    })?;
    let hasher = TreeHasher::new(alg, opts.hash_key.as_ref()).map_err(|e| Error::HashKey(e.to_string()))?;
    if hasher.key_check().map(|k| k.to_vec()) != identity.key_check {
        return Err(Error::HashKey(
            "the hash key is not this log's (its fingerprint differs from chronos_log.key_check)".into(),
        ));
    }
    let mut findings = Vec::new();
    let (trusted, key_source) = match &opts.trusted_key {
        Some(k) => {
            if k.to_string() != identity.verifier_key.trim() {
                findings.push((
                    0,
                    Finding::new(
                        Kind::BadSignature,
                        "chronos_log",
                        "the verifier key recorded with the log is not the trusted key",
                    ),
                ));
            }
            (k.clone(), "given with --key".to_owned())
        }
        None => {
            let k = NoteVerifier::parse(&identity.verifier_key).map_err(|e| {
                Error::NoKey(format!("chronos_log.verifier_key cannot be read ({e}); pass the log's key with --key"))
            })?;
            (k, "read from the database (pass --key to check against a key you hold)".to_owned())
        }
    };
    if trusted.name() != identity.origin {
        return Err(Error::OtherLog { found: identity.origin.clone(), expected: trusted.name().to_owned() });
    }
    let genesis = genesis(&hasher, &identity.origin);
    if identity.genesis[..] != genesis.0 {
        findings.push((
            0,
            Finding::new(Kind::ChainBroken, "chronos_log", "the stored genesis value is not the one of this origin")
                .seq(0),
        ));
    }
    let saved = match &opts.saved_checkpoint {
        None => None,
        Some(note) => {
            let (cp, _) = Checkpoint::open(note.as_bytes(), &trusted).map_err(|e| {
                Error::SavedCheckpoint(format!("it does not verify with the trusted key {trusted}: {e}"))
            })?;
            if cp.hash != alg {
                return Err(Error::SavedCheckpoint(format!("it is for hash {}, the log uses {alg}", cp.hash)));
            }
            cp.check_empty(&hasher).map_err(|e| Error::SavedCheckpoint(e.to_string()))?;
            Some(cp)
        }
    };
    Ok(Anchors { hasher, trusted, key_source, saved, findings, genesis })
}
