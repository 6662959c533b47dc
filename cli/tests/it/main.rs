//! The `chronos` binary, run as a user would.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

use chronos_ledger::{NoteSigner, NoteVerifier};

fn chronos(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chronos"));
    c.args(args).env_remove("CHRONOS_HMAC_KEY").env_remove("CHRONOS_DATA_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn init_creates_a_log_identity_with_private_key_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let out = chronos(&["init", "--data-dir", d, "--origin", "example.com/chronos/test", "--hash", "blake3"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("log.key"), 0o600);
    assert_eq!(mode("roughtime.key"), 0o600, "the Roughtime long-term key too");
    assert!(dir.join("roughtime.key.pub").exists());
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);

    let signer = NoteSigner::from_private_key(std::fs::read_to_string(dir.join("log.key")).unwrap().trim()).unwrap();
    let vkey = std::fs::read_to_string(dir.join("log.vkey")).unwrap();
    let verifier = NoteVerifier::parse(vkey.trim()).unwrap();
    assert_eq!(signer.verifier(), verifier);
    assert_eq!(verifier.name(), "example.com/chronos/test");
    assert!(stdout.contains(vkey.trim()), "{stdout}");
    let cfg = std::fs::read_to_string(dir.join("chronos.toml")).unwrap();
    assert!(cfg.contains("hash = \"blake3\""), "{cfg}");

    // Never overwrite an existing log's key.
    let again = chronos(&["init", "--data-dir", d], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a Chronos log"));
    assert_eq!(std::fs::read_to_string(dir.join("log.vkey")).unwrap(), vkey);
}

#[test]
fn init_defaults_to_sha256_and_a_unique_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    assert!(chronos(&["init", "--data-dir", a.to_str().unwrap()], &[]).status.success());
    assert!(chronos(&["init", "--data-dir", b.to_str().unwrap()], &[]).status.success());
    let va = NoteVerifier::parse(std::fs::read_to_string(a.join("log.vkey")).unwrap().trim()).unwrap();
    let vb = NoteVerifier::parse(std::fs::read_to_string(b.join("log.vkey")).unwrap().trim()).unwrap();
    assert_ne!(va.name(), vb.name());
    assert!(std::fs::read_to_string(a.join("chronos.toml")).unwrap().contains("hash = \"sha256\""));
}

#[test]
fn keyed_logs_need_the_key_and_record_its_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    let d = dir.to_str().unwrap();
    let out = chronos(&["init", "--data-dir", d, "--hash", "hmac-sha256"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CHRONOS_HMAC_KEY"));
    assert!(!dir.join("log.key").exists(), "a failed init leaves nothing behind");

    let bad = chronos(&["init", "--data-dir", d, "--hash", "hmac-sha256"], &[("CHRONOS_HMAC_KEY", "1234")]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("1234"), "the key is never echoed");

    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let ok = chronos(&["init", "--data-dir", d, "--hash", "hmac-sha256"], &[("CHRONOS_HMAC_KEY", key)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cfg = std::fs::read_to_string(dir.join("chronos.toml")).unwrap();
    assert!(cfg.contains("key_check = \""), "{cfg}");
    assert!(!cfg.contains(key), "the key itself is never written");
}

#[test]
fn bad_origins_are_refused_with_the_flag_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("o");
    let out = chronos(&["init", "--data-dir", d.to_str().unwrap(), "--origin", "has space"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--origin"));
}

mod bench;
mod bridge;
mod bridge_grpc;
mod bridge_roughtime;
mod control;
mod pipeline;
mod promises;
mod spec;
mod supervisor;
mod time;
mod tls;
mod verify;
