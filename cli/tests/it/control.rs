//! The control plane (issue 16), against real processes and a real
//! PostgreSQL: signed holds that outlive every restart, refusals audited
//! once each, the circuit breaker under load, and `chronos verify` finding
//! a tampered control history.

use std::path::Path;
use std::time::Duration;

use chronos_control::event::{Action, ControlEvent, Role};
use chronos_ledger::NoteSigner;

use super::pipeline::{Load, Stack, check_acked, sigkill, wait_for};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

/// `chronos control ARGS --data-dir DATA`: exit code and stdout as JSON
/// (`Null` when it printed none).
fn control(data: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all: Vec<&str> = vec!["control"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", data.to_str().unwrap()]);
    if args.first() != Some(&"keygen") {
        all.push("--json");
    }
    let out = super::chronos(&all, &[]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn mode(data: &Path) -> Option<String> {
    let (code, status, _) = control(data, &["status"]);
    (code == 0).then(|| status["mode"].as_str().unwrap_or_default().to_owned())
}

fn wait_mode(s: &Stack, want: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("mode {want}"),
        || s.log(),
        || (mode(&s.data()).as_deref() == Some(want)).then_some(()),
    );
}

/// A control event signed with a key file, as an operator's tool would.
fn signed(key_file: &Path, origin: &str, action: Action, seq: u64, expires_ns: u64) -> String {
    let signer = NoteSigner::from_private_key(std::fs::read_to_string(key_file).unwrap().trim()).unwrap();
    signer.sign(&ControlEvent { origin: origin.into(), action, seq, expires_ns }.text()).unwrap()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn submit(s: &Stack, note: &str) -> (i32, serde_json::Value) {
    let file = s.dir.path().join(format!("event-{}.note", now_ns()));
    std::fs::write(&file, note).unwrap();
    let (code, json, err) = control(&s.data(), &["submit", file.to_str().unwrap()]);
    assert!(json.is_object(), "no answer: {err}");
    (code, json)
}

/// The mode each transition of the history went to, in order.
fn transitions(s: &Stack) -> Vec<String> {
    let out = super::chronos(&["control", "history", "--json", "--database-url", &s.url], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    h.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["record"]["kind"] == "transition")
        .map(|r| format!("{}>{}", r["record"]["from"].as_str().unwrap(), r["record"]["to"].as_str().unwrap()))
        .collect()
}

fn refused_writes(s: &Stack, mode: &str) {
    let r = s.post(b"{\"while\":\"refused\"}\n", &[NDJSON]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains(&format!("mode {mode}")), "the 503 names the mode: {}", r.body);
    assert!(r.headers.contains_key("retry-after"));
}

#[test]
fn a_signed_hold_survives_every_restart_and_only_a_signed_release_lifts_it() {
    let mut s = Stack::start(&[]);
    let data = s.data();
    assert_eq!(s.post(b"{\"before\":1}\n", &[NDJSON]).status, 200);
    let (code, hold, err) = control(&data, &["hold", "--reason", "disk replaced in rack 4"]);
    assert_eq!((code, &hold["accepted"], &hold["committed"]), (0, &true.into(), &true.into()), "{hold} {err}");
    assert_eq!(hold["mode"], "hold");
    // Ingest hears the mode within its 200 ms poll: wait for it, then
    // every write is refused with the mode named.
    wait_for(
        Duration::from_secs(10),
        "ingest refusing",
        || s.log(),
        || {
            let r = s.get("/readyz");
            (r.status == 503 && r.body.contains("mode hold")).then_some(())
        },
    );
    refused_writes(&s, "hold");
    let plain = super::chronos(&["control", "status", "--data-dir", data.to_str().unwrap()], &[]);
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.contains("mode              hold"), "{plain}");
    assert!(plain.contains("placed by operator+") && plain.contains("\"disk replaced in rack 4\""), "{plain}");
    // The bridge still serves reads, and says the log is held.
    let web = super::bridge::bridge_http(&s);
    wait_for(
        Duration::from_secs(30),
        "the bridge naming the hold",
        || s.log(),
        || {
            let r = super::pipeline::http(&web, "GET", "/readyz", &[], b"").ok()?;
            (r.status == 200 && r.body == "ready (log mode: hold)\n").then_some(())
        },
    );

    // Every process of the pipeline, killed: the supervisor restarts it
    // and the hold is still there (it is in the log, not in memory).
    for name in ["orchestrator", "vault-writer", "ingest-0", "hasher-0", "bridge"] {
        let before = s.pid(name);
        sigkill(before);
        wait_for(
            Duration::from_secs(60),
            &format!("{name} restarted"),
            || s.log(),
            || {
                std::fs::read_to_string(data.join("run").join(format!("{name}.pid")))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .filter(|p| *p != before)
            },
        );
        wait_mode(&s, "hold");
    }
    // PostgreSQL crashes and comes back: the vault's circuit opens (the
    // idle writer's pings fail) and closes under the hold, which neither
    // lifts.
    s.pg.crash().unwrap();
    let breaker = data.join("run/vault.breaker");
    wait_for(Duration::from_secs(60), "the circuit open", || s.log(), || breaker.exists().then_some(()));
    let published = std::fs::read_to_string(data.join("run/mode")).unwrap();
    assert!(published.starts_with("hold\nrefuses\n"), "an open circuit does not touch a hold: {published}");
    s.pg.restart().unwrap();
    wait_for(Duration::from_secs(60), "the circuit closed", || s.log(), || (!breaker.exists()).then_some(()));
    wait_for(
        Duration::from_secs(60),
        "the pipeline back behind the hold",
        || s.log(),
        || {
            let r = s.get("/readyz");
            (r.status == 503 && r.body.contains("mode hold")).then_some(())
        },
    );
    wait_mode(&s, "hold");
    refused_writes(&s, "hold");
    // The whole of `chronos up`, stopped and started again.
    s.stop();
    s.spawn_up(&[]);
    wait_mode(&s, "hold");
    refused_writes(&s, "hold");
    wait_for(
        Duration::from_secs(30),
        "up says the log is held",
        || s.log(),
        || s.log().contains("not accepting writes: the log is in mode hold").then_some(()),
    );

    let (code, release, err) = control(&data, &["release"]);
    assert_eq!((code, &release["mode"]), (0, &"active".into()), "{release} {err}");
    s.wait_ready(Duration::from_secs(30));
    assert_eq!(s.post(b"{\"after\":1}\n", &[NDJSON]).status, 200);
    s.stop();
    let stored = s.check_ledger();
    let events: Vec<&Vec<u8>> = stored.iter().filter(|e| !chronos_control::record::is_control(e)).collect();
    assert_eq!(events, [&b"{\"before\":1}".to_vec(), &b"{\"after\":1}".to_vec()]);
    let t = transitions(&s);
    assert_eq!(t.first().map(String::as_str), Some("active>hold"), "{t:?}");
    assert_eq!(t.last().map(String::as_str), Some("hold>active"), "{t:?}");
    assert_eq!(t.len(), 2, "nothing automatic changed the mode of a held log: {t:?}");
}

#[test]
fn each_bad_control_event_is_refused_and_audited_once_and_uses_up_nothing() {
    let s = Stack::start(&[]);
    let data = s.data();
    let origin = "test.example/pipeline";
    let op = data.join("operator.key");
    let in_a_minute = now_ns() + 60_000_000_000;
    // Keys of the people in the story.
    let (bob, auditor) = (s.dir.path().join("bob.key"), s.dir.path().join("auditor.key"));
    for (name, file) in [("bob", &bob), ("auditor", &auditor)] {
        let out = super::chronos(&["control", "keygen", "--name", name, "--out", file.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let refusal = |note: &str| {
        let (code, a) = submit(&s, note);
        assert_eq!(code, 1, "refused: {a}");
        a["refusal"].as_str().unwrap().to_owned()
    };

    let vkey = |f: &Path| std::fs::read_to_string(f.with_extension("pub")).unwrap().trim().to_owned();
    let add = |f: &Path, role: Role, seq: u64| {
        let action = Action::KeysAdd { key: vkey(f), roles: vec![role] };
        assert_eq!(submit(&s, &signed(&op, origin, action, seq, in_a_minute)).0, 0);
    };
    let hold = |reason: &str| Action::Hold { reason: reason.into() };

    assert_eq!(refusal(&signed(&bob, origin, Action::Release, 1, in_a_minute)), "unknown_key");
    add(&auditor, Role::Auditor, 1);
    assert_eq!(refusal(&signed(&auditor, origin, hold("not mine"), 1, in_a_minute)), "wrong_role");
    assert_eq!(refusal(&signed(&op, origin, hold("late"), 2, now_ns() - 1)), "expired");
    assert_eq!(refusal(&signed(&op, origin, hold("early"), 2, now_ns() + 2 * 86_400_000_000_000)), "too_far_ahead");
    assert_eq!(refusal(&signed(&op, "test.example/other", hold("elsewhere"), 2, in_a_minute)), "other_log");
    let tampered = signed(&op, origin, hold("a"), 2, in_a_minute).replace("argument a", "argument b");
    assert_eq!(refusal(&tampered), "bad_signature");
    assert_eq!(refusal("garbage\n"), "malformed");
    assert_eq!(refusal(&signed(&op, origin, Action::Release, 2, in_a_minute)), "illegal_in_mode");
    // None of the refusals used up seq 2: a good hold with it passes;
    // the very same note again is a replay.
    let good = signed(&op, origin, hold("investigating"), 2, in_a_minute);
    assert_eq!(submit(&s, &good).0, 0);
    assert_eq!(refusal(&good), "replayed");
    // Bob is added as an operator, revoked, and can no longer release.
    add(&bob, Role::Operator, 3);
    let bob_ref = {
        let signer = NoteSigner::from_private_key(std::fs::read_to_string(&bob).unwrap().trim()).unwrap();
        format!("bob+{:08x}", signer.key_id())
    };
    assert_eq!(submit(&s, &signed(&op, origin, Action::KeysRevoke { key: bob_ref }, 4, in_a_minute)).0, 0);
    assert_eq!(refusal(&signed(&bob, origin, Action::Release, 9, in_a_minute)), "revoked_key");
    assert_eq!(submit(&s, &signed(&op, origin, Action::Release, 5, in_a_minute)).0, 0);

    let audited = s
        .pg
        .psql(
            "postgres",
            "SELECT string_agg(detail->>'refusal', ',' ORDER BY id) FROM audit_events WHERE kind = 'control_event_refused'",
        )
        .unwrap();
    assert_eq!(
        audited.trim(),
        "unknown_key,wrong_role,expired,too_far_ahead,other_log,bad_signature,malformed,illegal_in_mode,replayed,revoked_key",
        "each refusal audited once, in order"
    );
    let report = s.verify();
    assert_eq!(report["status"], "intact", "{report:#}");
    // genesis, keys-add, hold + transition, keys-add, keys-revoke, release + transition.
    assert_eq!(report["summary"]["control_records"], 8, "{report:#}");
}

#[test]
fn the_circuit_opens_when_postgres_stops_under_load_and_closes_when_it_is_back_with_nothing_lost() {
    let mut s = Stack::start(&[]);
    let load = Load::start(&s.addr, 3);
    load.progress(20, Duration::from_secs(60), || s.log());
    s.pg.crash().unwrap();
    // Open: ingest names the mode at once, without waiting for a commit.
    wait_for(
        Duration::from_secs(30),
        "mode isolated at ingest",
        || s.log(),
        || {
            let r = s.get("/readyz");
            (r.status == 503 && r.body.contains("mode isolated")).then_some(())
        },
    );
    refused_writes(&s, "isolated");
    assert!(s.data().join("run/vault.breaker").exists(), "the vault writer published its open circuit");
    s.pg.restart().unwrap();
    load.progress(20, Duration::from_secs(90), || s.log());
    let (acked, unavailable) = load.finish();
    assert!(unavailable > 0, "clients saw 503s while the circuit was open");
    s.stop();
    let stored = s.check_ledger();
    check_acked(&stored, &acked);
    let t = transitions(&s);
    assert!(t.windows(2).any(|w| w == ["active>isolated", "isolated>active"]), "{t:?}");
}

#[test]
fn a_recovery_rejoins_once_verified_and_verify_finds_an_edited_or_a_deleted_control_record() {
    let mut s = Stack::start(&[]);
    let data = s.data();
    assert_eq!(s.post(b"{\"n\":1}\n", &[NDJSON]).status, 200);
    assert_eq!(control(&data, &["hold", "--reason", "quarterly audit"]).0, 0);
    assert_eq!(control(&data, &["release"]).0, 0);
    // A recovery: entered by the signed event, left only by the verified
    // rejoin (the database re-read and checked against the signed and the
    // saved checkpoints), which the orchestrator records itself.
    let (code, recover, err) = control(&data, &["recover"]);
    assert_eq!((code, &recover["mode"]), (0, &"recovery".into()), "{recover} {err}");
    wait_mode(&s, "active");
    s.wait_ready(Duration::from_secs(30));
    assert_eq!(s.post(b"{\"n\":2}\n", &[NDJSON]).status, 200);
    s.stop();
    assert_eq!(transitions(&s), ["active>hold", "hold>active", "active>recovery", "recovery>active"]);
    let h = super::chronos(&["control", "history", "--json", "--database-url", &s.url], &[]);
    let h: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(h.as_array().unwrap().last().unwrap()["record"]["cause"], "rejoin-verified");
    assert_eq!(s.verify()["status"], "intact");

    // The orchestrator reads the log's operation from the copy in
    // control_log: an edited copy stops it at start.
    s.pg.psql(
        "postgres",
        "UPDATE control_log SET record = convert_to(replace(convert_from(record, 'UTF8'), 'quarterly', 'monthly'), \
         'UTF8') WHERE kind = 'event'",
    )
    .unwrap();
    s.spawn_up(&[]);
    wait_for(
        Duration::from_secs(60),
        "the orchestrator refusing an edited control_log",
        || s.log(),
        || s.log().contains("is not the leaf the log holds there").then_some(()),
    );
    let up = s.up.take().unwrap();
    drop(super::pipeline::Up(up));
    let sql = |q: &str| s.pg.psql("postgres", q).unwrap();

    // Edited: the hold's reason, in its `logs` row.
    let leaf: i64 = sql("SELECT leaf_index FROM control_log WHERE kind = 'event' ORDER BY leaf_index LIMIT 1")
        .trim()
        .parse()
        .unwrap();
    sql(&format!(
        "UPDATE logs SET event = convert_to(replace(convert_from(event, 'UTF8'), 'quarterly', 'monthly'), 'UTF8') \
         WHERE leaf_index = {leaf}"
    ));
    let edited = s.verify();
    assert_eq!(edited["status"], "tampered", "{edited:#}");
    assert_eq!(edited["first"]["leaf"], leaf, "{edited:#}");

    // Deleted: the batch of the release (its rows, its control_log rows).
    let seq: i64 = sql("SELECT max(batch_seq) FROM control_log WHERE kind = 'transition'").trim().parse().unwrap();
    sql(&format!(
        "DELETE FROM control_log WHERE batch_seq = {seq}; DELETE FROM logs WHERE batch_seq = {seq}; \
         DELETE FROM ingest_keys WHERE seq = {seq}; DELETE FROM batches WHERE seq = {seq}"
    ));
    let deleted = s.verify();
    assert_eq!(deleted["status"], "tampered", "{deleted:#}");
    let kinds: Vec<&str> = deleted["findings"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert!(kinds.contains(&"deleted") || kinds.contains(&"chain_broken"), "{deleted:#}");
}

#[test]
fn a_body_outside_the_claimed_time_window_is_quarantined_then_released_or_dropped_by_signed_events() {
    let mut s = Stack::start(&[("CHRONOS_PIPELINE_CLAIMED_TIME_MAX_AHEAD_SECS", "300")]);
    let data = s.data();
    let future = b"{\"message\":\"from the future\",\"timestamp\":\"2099-01-01T00:00:00Z\"}\n".to_vec();
    let later = b"{\"message\":\"also ahead\",\"timestamp\":\"2098-01-01T00:00:00Z\"}\n".to_vec();
    let r = s.post(&future, &[NDJSON]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("quarantined as #1") && r.body.contains("event 0 claims a time"), "{}", r.body);
    assert!(s.post(&future, &[NDJSON]).body.contains("quarantined as #1"), "the same body is one row");
    assert!(s.post(&later, &[NDJSON]).body.contains("quarantined as #2"));
    assert_eq!(s.post(b"{\"message\":\"now\"}\n", &[NDJSON]).status, 200);

    let list = |s: &Stack| -> serde_json::Value {
        let out = super::chronos(&["control", "quarantine", "list", "--json", "--database-url", &s.url], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let l = list(&s);
    assert_eq!(
        (l[0]["status"].as_str(), l[1]["status"].as_str(), l[0]["events"].as_u64()),
        (Some("pending"), Some("pending"), Some(1))
    );

    let (code, a, err) = control(&data, &["quarantine", "release", "1"]);
    assert_eq!(code, 0, "{a} {err}");
    // The client retrying the released body gets the release's batch.
    let retry = s.post(&future, &[NDJSON]);
    assert_eq!(
        (retry.status, retry.headers.get("chronos-replay").map(String::as_str)),
        (200, Some("true")),
        "{}",
        retry.body
    );
    let refusal = |args: &[&str]| {
        let (code, a, _) = control(&data, args);
        assert_eq!(code, 1, "{a}");
        a["refusal"].as_str().unwrap().to_owned()
    };
    assert_eq!(refusal(&["quarantine", "release", "1"]), "quarantine_settled");
    assert_eq!(control(&data, &["quarantine", "drop", "2"]).0, 0);
    assert_eq!(refusal(&["quarantine", "release", "2"]), "quarantine_settled");
    assert_eq!(refusal(&["quarantine", "release", "99"]), "unknown_quarantine");
    let l = list(&s);
    assert_eq!((l[0]["status"].as_str(), l[1]["status"].as_str()), (Some("released"), Some("dropped")));

    s.stop();
    let stored = s.check_ledger();
    let events: Vec<&Vec<u8>> = stored.iter().filter(|e| !chronos_control::record::is_control(e)).collect();
    assert_eq!(events, [&b"{\"message\":\"now\"}".to_vec(), &future[..future.len() - 1].to_vec()]);
}
