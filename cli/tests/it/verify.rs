//! `chronos verify`, `checkpoint`, `prove`, `verify-proof` and
//! `consistency` on ledgers built by the real pipeline, tampered with
//! plain SQL the way someone with database access would.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use chronos_ledger::tree::{self, MemTree};
use chronos_ledger::{
    Checkpoint, Hash, HashAlg, NoteSigner, NoteVerifier, ProofFile, TimeNs, TimeSource, TreeHasher, TrustedTime,
};
use serde_json::Value;

use super::chronos;
use super::pipeline::{Stack, json_u64};

/// A stack that signs checkpoints every 100 ms.
fn stack() -> Stack {
    Stack::start(&[("CHRONOS_PIPELINE_CHECKPOINT_INTERVAL_MS", "100")])
}

/// Posts bodies `from..to` of `per_body` events each; returns each body's
/// `first_leaf` and events.
fn post_bodies(stack: &Stack, from: usize, to: usize, per_body: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
    let mut answers = Vec::new();
    for b in from..to {
        let events: Vec<Vec<u8>> = (0..per_body)
            .map(|i| {
                let ts = format!("2026-11-21T10:{:02}:{:02}.123456789Z", b % 60, i % 60);
                format!(r#"{{"id":"b{b}-e{i}","timestamp":"{ts}","msg":"{}"}}"#, "m".repeat(i * 7)).into_bytes()
            })
            .collect();
        let body: Vec<u8> = events.iter().flat_map(|e| e.iter().copied().chain([b'\n'])).collect();
        let r = stack.post(&body, &[("content-type", "application/x-ndjson")]);
        assert_eq!(r.status, 200, "{}", r.body);
        answers.push((json_u64(&r.body, "first_leaf"), events));
    }
    answers
}

fn run(args: &[&str]) -> Output {
    chronos(args, &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `chronos verify --json` on a database; the exit code and the report.
fn verify_json(url: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", "--database-url", url, "--json"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let code = out.status.code().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}), exit {code}, stderr:\n{}", stderr(&out)));
    (code, report)
}

/// Stores the current newest checkpoint in a file and returns its size.
fn save_checkpoint(url: &str, path: &Path) -> u64 {
    let out = run(&["checkpoint", "--database-url", url]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(path, &out.stdout).unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().parse().unwrap()
}

/// Waits until the newest stored checkpoint covers `size` leaves.
fn wait_signed(stack: &Stack, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: u64 =
            stack.pg.psql("postgres", "SELECT coalesce(max(tree_size), 0) FROM checkpoints").unwrap().parse().unwrap();
        if got >= size {
            return;
        }
        assert!(Instant::now() < deadline, "no checkpoint of size {size} within 30 s (newest {got})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One tampering, in a copy of the untouched ledger database.
struct Case {
    name: &'static str,
    sql: String,
    extra: Vec<String>,
    kind: &'static str,
    table: &'static str,
    seq: Option<u64>,
    leaf: Option<u64>,
    checkpoint: Option<u64>,
}

fn first_of(report: &Value) -> &Value {
    &report["first"]
}

#[test]
fn every_kind_of_tampering_is_found_with_its_kind_and_place() {
    let mut stack = stack();
    post_bodies(&stack, 0, 6, 10);
    let vkey = stack.data().join("log.vkey");
    let vkey_s = vkey.to_str().unwrap().to_owned();
    let tmp = stack.dir.path().to_path_buf();
    let early = tmp.join("early.checkpoint");
    wait_signed(&stack, 60);
    assert_eq!(save_checkpoint(&stack.url, &early), 60);
    post_bodies(&stack, 6, 12, 10);
    let total = 120;
    stack.stop();
    let saved = tmp.join("final.checkpoint");
    assert_eq!(save_checkpoint(&stack.url, &saved), total, "the final checkpoint signs every leaf");

    // Batches hold one body each: find batch 5's leaves.
    let row = |sql: &str| stack.pg.psql("postgres", sql).unwrap();
    let s: u64 = 5;
    let first: u64 = row(&format!("SELECT first_leaf FROM batches WHERE seq = {s}")).parse().unwrap();
    let count: u64 = row(&format!("SELECT leaf_count FROM batches WHERE seq = {s}")).parse().unwrap();
    assert!(count >= 3, "batch {s} has {count} leaves");
    let l = first + 1;
    let m: u64 = row("SELECT first_leaf + 2 FROM batches WHERE seq = 8").parse().unwrap();
    let last_seq: u64 = row("SELECT max(seq) FROM batches").parse().unwrap();
    let rollback_from: u64 =
        row(&format!("SELECT first_leaf FROM batches WHERE seq = {}", last_seq - 2)).parse().unwrap();
    let mid_cp: u64 = row(&format!(
        "SELECT tree_size FROM checkpoints WHERE tree_size > 0 AND tree_size < {total} ORDER BY tree_size LIMIT 1"
    ))
    .parse()
    .unwrap();
    let note = row(&format!("SELECT note FROM checkpoints WHERE tree_size = {mid_cp} ORDER BY id LIMIT 1")) + "\n";

    // A valid signature line turned into another one by the same key ID.
    let (body, sig) = note.rsplit_once("\n— ").unwrap();
    let (name, b64) = sig.trim_end().split_once(' ').unwrap();
    let mut raw = base64_decode(b64);
    raw[10] ^= 0x01;
    let replaced_sig = format!("{body}\n— {name} {}\n", base64_encode(&raw));
    // The same body signed by another key with the log's name.
    let other = NoteSigner::generate("test.example/pipeline").unwrap();
    let other_note = other.sign(body).unwrap();
    let escape = |s: &str| s.replace('\'', "''");

    let cases = vec![
        Case {
            name: "untouched",
            sql: String::new(),
            extra: vec![],
            kind: "",
            table: "",
            seq: None,
            leaf: None,
            checkpoint: None,
        },
        Case {
            name: "one byte of one event",
            sql: format!("UPDATE logs SET event = set_byte(event, 7, get_byte(event, 7) # 1) WHERE leaf_index = {l}"),
            extra: vec![],
            kind: "modified",
            table: "logs",
            seq: Some(s),
            leaf: Some(l),
            checkpoint: None,
        },
        Case {
            name: "a logs row deleted",
            sql: format!("DELETE FROM logs WHERE leaf_index = {l}"),
            extra: vec![],
            kind: "deleted",
            table: "logs",
            seq: Some(s),
            leaf: Some(l),
            checkpoint: None,
        },
        Case {
            name: "a logs row inserted",
            sql: format!(
                "INSERT INTO logs (leaf_index, batch_seq, claimed_time, leaf_hash, event) \
                 VALUES ({total}, {last_seq}, NULL, '\\x{}', '{{\"forged\":true}}')",
                "00".repeat(32)
            ),
            extra: vec![],
            kind: "inserted",
            table: "logs",
            seq: None,
            leaf: Some(total),
            checkpoint: None,
        },
        Case {
            name: "two logs rows swapped (across batches)",
            sql: format!(
                "UPDATE logs a SET event = b.event, leaf_hash = b.leaf_hash, claimed_time = b.claimed_time \
                 FROM logs b WHERE (a.leaf_index, b.leaf_index) IN (({l}, {m}), ({m}, {l}))"
            ),
            extra: vec![],
            kind: "reordered",
            table: "logs",
            seq: Some(s),
            leaf: Some(l),
            checkpoint: None,
        },
        Case {
            name: "a batch root changed",
            sql: format!("UPDATE batches SET root = set_byte(root, 0, get_byte(root, 0) # 1) WHERE seq = {s}"),
            extra: vec![],
            kind: "root_mismatch",
            table: "batches",
            seq: Some(s),
            leaf: None,
            checkpoint: None,
        },
        Case {
            name: "a batch's canonical payload changed",
            sql: format!(
                "UPDATE batches SET payload = (SELECT payload FROM batches WHERE seq = {}) WHERE seq = {s}",
                s + 1
            ),
            extra: vec![],
            kind: "modified",
            table: "batches",
            seq: Some(s),
            leaf: Some(first),
            checkpoint: None,
        },
        Case {
            name: "one byte of a batch's payload",
            sql: format!(
                "UPDATE batches SET payload = set_byte(payload, length(payload) / 2, get_byte(payload, length(payload) / 2) # 16) WHERE seq = {s}"
            ),
            extra: vec![],
            kind: "modified",
            table: "batches",
            seq: Some(s),
            leaf: None,
            checkpoint: None,
        },
        Case {
            name: "a batch's time changed",
            sql: format!("UPDATE batches SET time_ns = time_ns - 1000000000 WHERE seq = {s}"),
            extra: vec![],
            kind: "chain_broken",
            table: "batches",
            seq: Some(s),
            leaf: None,
            checkpoint: None,
        },
        Case {
            name: "a batch deleted in the middle",
            sql: format!("DELETE FROM batches WHERE seq = {s}"),
            extra: vec![],
            kind: "deleted",
            table: "batches",
            seq: Some(s),
            leaf: Some(first),
            checkpoint: None,
        },
        Case {
            name: "the newest batches deleted, checkpoints left",
            sql: format!(
                "DELETE FROM logs WHERE leaf_index >= {rollback_from}; DELETE FROM batches WHERE seq >= {}",
                last_seq - 2
            ),
            extra: vec![],
            kind: "rolled_back",
            table: "checkpoints",
            seq: None,
            leaf: None,
            checkpoint: None,
        },
        Case {
            name: "the newest batches and their checkpoints deleted, caught with --from-checkpoint",
            sql: format!(
                "DELETE FROM logs WHERE leaf_index >= {rollback_from}; DELETE FROM batches WHERE seq >= {}; \
                 DELETE FROM checkpoints WHERE tree_size > {rollback_from}",
                last_seq - 2
            ),
            extra: vec!["--from-checkpoint".into(), saved.to_str().unwrap().into()],
            kind: "rolled_back",
            table: "saved checkpoint",
            seq: None,
            leaf: None,
            checkpoint: Some(total),
        },
        Case {
            name: "a checkpoint signature replaced",
            sql: format!("UPDATE checkpoints SET note = '{}' WHERE tree_size = {mid_cp}", escape(&replaced_sig)),
            extra: vec![],
            kind: "bad_signature",
            table: "checkpoints",
            seq: None,
            leaf: None,
            checkpoint: Some(mid_cp),
        },
        Case {
            name: "a checkpoint signed by another key",
            sql: format!("UPDATE checkpoints SET note = '{}' WHERE tree_size = {mid_cp}", escape(&other_note)),
            extra: vec![],
            kind: "bad_signature",
            table: "checkpoints",
            seq: None,
            leaf: None,
            checkpoint: Some(mid_cp),
        },
        Case {
            name: "the recorded verifier key replaced by another",
            sql: format!("UPDATE chronos_log SET verifier_key = '{}'", other.verifier()),
            extra: vec![],
            kind: "bad_signature",
            table: "chronos_log",
            seq: None,
            leaf: None,
            checkpoint: None,
        },
    ];
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let db = format!("tamper_{i}");
        stack.pg.psql("template1", &format!("CREATE DATABASE {db} TEMPLATE postgres STRATEGY FILE_COPY")).unwrap();
        if !c.sql.is_empty() {
            stack.pg.psql(&db, &c.sql).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
        let url = stack.pg.url(&db);
        let mut extra: Vec<&str> = vec!["--key", &vkey_s];
        extra.extend(c.extra.iter().map(String::as_str));
        let (code, report) = verify_json(&url, &extra);
        let f = first_of(&report);
        let ok = if c.kind.is_empty() {
            code == 0 && report["status"] == "intact" && report["summary"]["logs"] == total
        } else {
            code == 1
                && report["status"] == "tampered"
                && f["kind"] == c.kind
                && f["table"] == c.table
                && c.seq.is_none_or(|s| f["seq"] == s)
                && c.leaf.is_none_or(|l| f["leaf"] == l)
                && c.checkpoint.is_none_or(|cp| f["checkpoint"] == cp)
        };
        if !ok {
            failures.push(format!(
                "{}: exit {code}, report:\n{}",
                c.name,
                serde_json::to_string_pretty(&report).unwrap()
            ));
        }
        // The human report names the same thing.
        if !c.kind.is_empty() {
            let out = run(&[&["verify", "--database-url", &url][..], &extra[..]].concat());
            let text = String::from_utf8_lossy(&out.stdout);
            let kind_words = c.kind.replace('_', " ");
            if out.status.code() != Some(1) || !text.contains("TAMPERED") || !text.contains(&kind_words) {
                failures.push(format!("{} (human): exit {:?}\n{text}", c.name, out.status.code()));
            }
        }
    }
    // Without the saved checkpoint, a rollback that also removed the
    // checkpoints leaves nothing inconsistent in the database: that is why
    // users keep checkpoints outside it.
    let db = "tamper_rollback_unseen";
    stack.pg.psql("template1", &format!("CREATE DATABASE {db} TEMPLATE tamper_11")).unwrap();
    let (code, report) = verify_json(&stack.pg.url(db), &["--key", &vkey_s]);
    assert_eq!((code, &report["status"]), (0, &Value::from("intact")), "{report}");
    // And the early checkpoint is extended by the untouched log.
    let (code, report) =
        verify_json(&stack.pg.url("tamper_0"), &["--key", &vkey_s, "--from-checkpoint", early.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}");
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn verify_cannot_check_without_a_database_or_with_a_foreign_key() {
    let mut stack = stack();
    post_bodies(&stack, 0, 2, 3);
    stack.stop();
    // Nothing listens on port 1.
    let out = run(&["verify", "--database-url", "postgresql://nobody@127.0.0.1:1/none"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    // A key of another log.
    let other = NoteSigner::generate("other.example/log").unwrap();
    let out = run(&["verify", "--database-url", &stack.url, "--key", &other.verifier().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("other.example/log"), "{}", stderr(&out));
    // A database without a log.
    let url = stack.pg.create_database("empty").unwrap();
    let out = run(&["verify", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no Chronos log"), "{}", stderr(&out));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn proofs_round_trip_offline_and_fail_on_any_change_or_wrong_key() {
    let mut stack = stack();
    let answers = post_bodies(&stack, 0, 6, 8);
    let total = answers.iter().map(|(_, e)| e.len() as u64).sum::<u64>();
    wait_signed(&stack, total);
    let tmp = stack.dir.path().to_path_buf();
    let vkey = stack.data().join("log.vkey");
    let vkey_s = vkey.to_str().unwrap();
    let verifier = NoteVerifier::parse(std::fs::read_to_string(&vkey).unwrap().trim()).unwrap();
    let url = stack.url.clone();

    // Event 3 of body 4, by the leaf index ingest answered.
    let (first_leaf, events) = &answers[4];
    let leaf = first_leaf + 3;
    let proof_path = tmp.join("leaf.tlog-proof");
    let event_path = tmp.join("leaf.event");
    let out = run(&[
        "prove",
        "--database-url",
        &url,
        "--key",
        vkey_s,
        "--leaf",
        &leaf.to_string(),
        "-o",
        proof_path.to_str().unwrap(),
        "--event-out",
        event_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&event_path).unwrap(), events[3], "the proven event is the one that was sent");
    let proof_bytes = std::fs::read(&proof_path).unwrap();
    assert!(proof_bytes.starts_with(b"c2sp.org/tlog-proof@v1\n"), "a sha256 log (the default) writes C2SP proof files");
    let proof = ProofFile::parse(&proof_bytes).unwrap();
    assert_eq!(proof.index, leaf);
    let depth = (64 - (total - 1).leading_zeros()) as usize;
    assert!(proof.path.len() <= depth, "{} hashes for a tree of {total}", proof.path.len());

    // Offline, with only the key: valid, with and without the event.
    let ok =
        run(&["verify-proof", proof_path.to_str().unwrap(), "--key", vkey_s, "--event", event_path.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with(&format!("OK: leaf {leaf} ")));
    assert!(run(&["verify-proof", proof_path.to_str().unwrap(), "--key", vkey_s]).status.success());
    // The same proof, found by the event's hash.
    let h = TreeHasher::unkeyed(HashAlg::Sha256).leaf(&events[3]);
    let by_hash = run(&["prove", "--database-url", &url, "--key", vkey_s, "--event-hash", &h.to_hex()]);
    assert!(by_hash.status.success(), "{}", stderr(&by_hash));
    assert_eq!(by_hash.stdout, proof_bytes);

    // Another event, another key, a changed file: exit 1.
    let other_event = write(&tmp, "other.event", &events[2]);
    let bad =
        run(&["verify-proof", proof_path.to_str().unwrap(), "--key", vkey_s, "--event", other_event.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let other_key = NoteSigner::generate("test.example/pipeline").unwrap().verifier().to_string();
    let bad = run(&["verify-proof", proof_path.to_str().unwrap(), "--key", &other_key]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("no signature by a trusted key"), "{}", stderr(&bad));
    // Every single flipped bit in the file is caught (in-process, every
    // byte; through the command, a sample of places).
    for i in 0..proof_bytes.len() {
        for bit in [0x01u8, 0x20] {
            let mut b = proof_bytes.clone();
            b[i] ^= bit;
            let res = ProofFile::parse(&b).map_err(|e| e.to_string()).and_then(|p| {
                p.verify(&verifier, None, Some(&events[3])).map_err(|e| e.to_string())?;
                p.verify(&verifier, None, None).map_err(|e| e.to_string())
            });
            assert!(res.is_err(), "flipping bit {bit:#x} of byte {i} still verifies");
        }
    }
    let text = String::from_utf8(proof_bytes.clone()).unwrap();
    for needle in ["c2sp.org/", "index ", "\n\n", "hash sha256", "\nchain ", "— "] {
        let at = text.find(needle).unwrap() + needle.len();
        let mut b = proof_bytes.clone();
        b[at] ^= 0x01;
        let p = write(&tmp, "flipped.tlog-proof", &b);
        let out = run(&["verify-proof", p.to_str().unwrap(), "--key", vkey_s, "--event", event_path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "flip after {needle:?}: {}", stderr(&out));
    }

    // A leaf beyond the log, and an unknown hash: exit 2, said why.
    let out = run(&["prove", "--database-url", &url, "--leaf", &(total + 5).to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&format!("no such leaf: the log holds {total} leaves")), "{}", stderr(&out));
    let out = run(&["prove", "--database-url", &url, "--event-hash", &"ab".repeat(32)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no event in the log has leaf hash"), "{}", stderr(&out));

    // Consistency between an older and a newer checkpoint.
    let old = tmp.join("old.checkpoint");
    let old_size = save_checkpoint(&url, &old);
    let more: Vec<u8> = (0..20).flat_map(|i| format!("{{\"more\":{i}}}\n").into_bytes()).collect();
    assert_eq!(stack.post(&more, &[("content-type", "application/x-ndjson")]).status, 200);
    wait_signed(&stack, old_size + 20);
    let new = tmp.join("new.checkpoint");
    let new_size = save_checkpoint(&url, &new);
    assert!(new_size > old_size);
    let (o, n) = (old.to_str().unwrap(), new.to_str().unwrap());
    let out = run(&["consistency", "--database-url", &url, "--key", vkey_s, "--old", o, "--new", n]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("extends"));
    let out = run(&["consistency", "--database-url", &url, "--key", vkey_s, "--old", n, "--new", o]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A fork: a checkpoint of the new size with another root, signed with
    // the log's own key (what a compromised signer could do).
    let signer =
        NoteSigner::from_private_key(std::fs::read_to_string(stack.data().join("log.key")).unwrap().trim()).unwrap();
    let (mut cp, _) = Checkpoint::open(&std::fs::read(&new).unwrap(), &verifier).unwrap();
    cp.root.0[0] ^= 1;
    let fork = write(&tmp, "fork.checkpoint", cp.sign(&signer).unwrap().as_bytes());
    let out =
        run(&["consistency", "--database-url", &url, "--key", vkey_s, "--old", o, "--new", fork.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not consistent"), "{}", stderr(&out));
    stack.stop();
}

/// Issue 12, "a crash is neither tampering nor a stall": PostgreSQL
/// empties the UNLOGGED `logs` table in crash recovery and the vault writer
/// restores it from the batches, recording the range still to do in
/// `logs_rebuild`. `verify` used to call every missing row "deleted" and
/// exit 1; rows missing where the restore has yet to reach are exit 3, and
/// only there.
#[test]
fn logs_rows_missing_after_a_crash_are_incomplete_not_tampered_but_only_where_the_restore_has_yet_to_reach() {
    let mut stack = stack();
    post_bodies(&stack, 0, 10, 10);
    stack.stop();
    let total: u64 =
        stack.pg.psql("postgres", "SELECT max(first_leaf + leaf_count) FROM batches").unwrap().parse().unwrap();
    assert_eq!(total, 100);
    let vkey = stack.data().join("log.vkey");
    let key: &[&str] = &["--key", vkey.to_str().unwrap()];
    // Rows of leaves 40.. deleted (but those `keep` names), and the
    // restore recorded as pending from `from`.
    let restoring = |from: u64, keep: &str| {
        format!(
            "DELETE FROM logs WHERE leaf_index >= 40 {keep}; DELETE FROM logs_rebuild; \
             INSERT INTO logs_rebuild (from_leaf, to_leaf) VALUES ({from}, {total})"
        )
    };
    // (name, SQL, exit, status)
    let cases: Vec<(&str, String, i32, &str)> = vec![
        ("untouched", String::new(), 0, "intact"),
        (
            "emptied by crash recovery, restore not started",
            "TRUNCATE logs; DELETE FROM logs_rebuild".into(),
            3,
            "intact_logs_incomplete",
        ),
        ("leaves 40.. being restored", restoring(40, ""), 3, "intact_logs_incomplete"),
        ("leaves 40.. missing, but only 60.. being restored", restoring(60, ""), 1, "tampered"),
        (
            "a row modified inside the range being restored",
            restoring(40, "AND leaf_index <> 45")
                + "; UPDATE logs SET event = set_byte(event, 7, get_byte(event, 7) # 1) WHERE leaf_index = 45",
            1,
            "tampered",
        ),
    ];
    let mut reports = Vec::new();
    for (i, (name, sql, exit, status)) in cases.iter().enumerate() {
        let db = format!("crashed_{i}");
        stack.pg.psql("template1", &format!("CREATE DATABASE {db} TEMPLATE postgres STRATEGY FILE_COPY")).unwrap();
        if !sql.is_empty() {
            stack.pg.psql(&db, sql).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let url = stack.pg.url(&db);
        let (code, report) = verify_json(&url, key);
        assert_eq!((code, report["status"].as_str()), (*exit, Some(*status)), "{name}: {report:#}");
        let human = run(&[&["verify", "--database-url", &url][..], key].concat());
        assert_eq!(human.status.code(), Some(*exit), "{name}");
        reports.push((report, String::from_utf8_lossy(&human.stdout).into_owned()));
    }
    let rebuild = |i: usize| &reports[i].0["logs_rebuild"];

    // Untouched: nothing pending, every row read.
    assert!(rebuild(0).is_null(), "{:#}", reports[0].0);
    assert_eq!(reports[0].0["summary"]["logs"], total);

    // Emptied, no logs_rebuild row yet: the whole log is pending, and
    // everything the batches hold was still checked.
    assert_eq!((&rebuild(1)["from_leaf"], &rebuild(1)["to_leaf"]), (&Value::from(0), &Value::from(total)));
    assert_eq!(rebuild(1)["rows_missing"], total);
    assert_eq!(reports[1].0["findings_total"], 0);
    assert_eq!(
        (&reports[1].0["summary"]["batches"], &reports[1].0["summary"]["tree_size"]),
        (&Value::from(10), &Value::from(total))
    );
    assert!(reports[1].1.contains("INTACT (logs table incomplete"), "{}", reports[1].1);

    // Being restored from leaf 40: the report names the range.
    assert_eq!((&rebuild(2)["from_leaf"], &rebuild(2)["to_leaf"]), (&Value::from(40), &Value::from(total)));
    assert_eq!(rebuild(2)["rows_missing"], total - 40);
    assert_eq!(reports[2].0["summary"]["logs"], 40);
    assert!(
        reports[2].1.contains("INTACT (logs table incomplete") && reports[2].1.contains("40..100"),
        "{}",
        reports[2].1
    );

    // The row says 60..: rows 40..59 are deleted, each of them.
    let findings = reports[3].0["findings"].as_array().unwrap();
    let deleted: Vec<u64> = findings
        .iter()
        .filter(|f| f["kind"] == "deleted" && f["table"] == "logs")
        .filter_map(|f| f["leaf"].as_u64())
        .collect();
    assert_eq!(deleted, (40..60).collect::<Vec<u64>>(), "{:#}", reports[3].0);
    assert_eq!(reports[3].0["findings_total"], 20);
    assert!(reports[3].1.contains("TAMPERED"), "{}", reports[3].1);

    // A present row inside the pending range is still checked.
    let first = first_of(&reports[4].0);
    assert_eq!(
        (&first["kind"], &first["table"], &first["leaf"]),
        (&Value::from("modified"), &Value::from("logs"), &Value::from(45))
    );
    assert_eq!(reports[4].0["findings_total"], 1, "{:#}", reports[4].0);
}

#[test]
fn verify_proof_of_a_keyed_log_without_its_key_could_not_check_rather_than_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = NoteSigner::from_seed("test.example/keyed", &[4; 32]).unwrap();
    let vkey = signer.verifier().to_string();
    let key = "5a".repeat(32);
    let h = TreeHasher::new(HashAlg::HmacSha256, Some(&chronos_ledger::HashKey::from_hex(&key).unwrap())).unwrap();
    let events: Vec<Vec<u8>> = (0..3).map(|i| format!("{{\"k\":{i}}}").into_bytes()).collect();
    let mut mem = MemTree::new();
    for e in &events {
        mem.append(&h, h.leaf(e));
    }
    let cp = Checkpoint {
        origin: signer.name().to_owned(),
        size: 3,
        root: mem.root(&h),
        hash: HashAlg::HmacSha256,
        chain_seq: 1,
        chain_hash: Hash([7; 32]),
        time: TrustedTime { time: TimeNs(1_795_252_798_000_000_000), uncertainty_ns: 0, source: TimeSource::local() },
    };
    let proof = ProofFile {
        extra: Some(h.leaf(&events[1]).0.to_vec()),
        index: 1,
        path: tree::inclusion_proof(&h, &mem, 1, 3).unwrap(),
        checkpoint: cp.sign(&signer).unwrap(),
    };
    let file = write(tmp.path(), "keyed.tlog-proof", proof.encode().unwrap().as_bytes());
    let file = file.to_str().unwrap();
    let out = run(&["verify-proof", file, "--key", &vkey]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("set CHRONOS_HMAC_KEY"), "{}", stderr(&out));
    let out = super::chronos(&["verify-proof", file, "--key", &vkey], &[("CHRONOS_HMAC_KEY", &key)]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn verify_proof_reads_a_blake3_logs_own_header_and_refuses_the_c2sp_one() {
    // Offline: a blake3 log's checkpoint signed here, no database.
    let tmp = tempfile::tempdir().unwrap();
    let signer = NoteSigner::from_seed("test.example/blake3", &[3; 32]).unwrap();
    let vkey = signer.verifier().to_string();
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let events: Vec<Vec<u8>> = (0..5).map(|i| format!("{{\"n\":{i}}}").into_bytes()).collect();
    let mut mem = MemTree::new();
    for e in &events {
        mem.append(&h, h.leaf(e));
    }
    let cp = Checkpoint {
        origin: signer.name().to_owned(),
        size: 5,
        root: mem.root(&h),
        hash: HashAlg::Blake3,
        chain_seq: 1,
        chain_hash: Hash([7; 32]),
        time: TrustedTime { time: TimeNs(1_795_252_798_000_000_000), uncertainty_ns: 0, source: TimeSource::local() },
    };
    let proof = ProofFile {
        extra: Some(h.leaf(&events[3]).0.to_vec()),
        index: 3,
        path: tree::inclusion_proof(&h, &mem, 3, 5).unwrap(),
        checkpoint: cp.sign(&signer).unwrap(),
    };
    let text = proof.encode().unwrap();
    assert!(text.starts_with("chronos/tlog-proof-blake3@v1\n"), "{text}");
    let event = write(tmp.path(), "event", &events[3]);
    let event = event.to_str().unwrap();

    let own = write(tmp.path(), "blake3.tlog-proof", text.as_bytes());
    let ok = run(&["verify-proof", own.to_str().unwrap(), "--key", &vkey, "--event", event]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: leaf 3 "), "{}", String::from_utf8_lossy(&ok.stdout));

    // The same file under the C2SP line, as Chronos wrote it before blake3
    // files had their own: refused as invalid, saying which line it needs.
    let c2sp = text.replacen("chronos/tlog-proof-blake3@v1", "c2sp.org/tlog-proof@v1", 1);
    let c2sp = write(tmp.path(), "c2sp.tlog-proof", c2sp.as_bytes());
    let bad = run(&["verify-proof", c2sp.to_str().unwrap(), "--key", &vkey, "--event", event]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad)
            .contains("the checkpoint says `hash blake3`, whose proof files begin with chronos/tlog-proof-blake3@v1"),
        "{}",
        stderr(&bad)
    );
}
