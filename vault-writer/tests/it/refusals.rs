//! Bodies refused after ingest accepted them (`REFUSED` records from a
//! hasher or the orchestrator): answered at once, audited, and a client
//! cannot fill the audit table with them.

use chronos_faults::Faults;
use chronos_vault_writer::AUDIT_PER_MINUTE;
use chronos_wire::{Refused, Reply};

use crate::{Answer, Rig, Writer, wait_for};

#[test]
fn a_refused_body_is_answered_at_once_and_audited_at_most_sixty_times_a_minute() {
    let mut rig = Rig::new("vw_refused");
    let w = Writer::start(rig.settings(0, Faults::none()));
    let refused = |request: u64| {
        let reason = format!("refused by the sequencer: body {request} has 65 events, over the limit of 64");
        Refused::new(Reply { slot: 0, request }, 422, &reason)
    };

    let first = refused(1);
    rig.push_refused(&first);
    assert_eq!(rig.next_answer(), Answer::Refused(first.clone()), "the status and the reason reach ingest");
    let audit = wait_for("the refusal's audit event", || {
        let a = rig.sql.audit("batch_refused");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(audit, vec![serde_json::json!({ "reason": first.reason, "not_recorded_before": 0 })]);

    // A client whose bodies are all refused: each is answered, but within
    // the minute only AUDIT_PER_MINUTE are written down.
    let more = u64::from(AUDIT_PER_MINUTE) + 9;
    for request in 2..2 + more {
        rig.push_refused(&refused(request));
    }
    for request in 2..2 + more {
        assert_eq!(rig.next_answer(), Answer::Refused(refused(request)));
    }
    // Stopping drains the ring, so every audit event it was going to write
    // is written when `run` returns. (This runs well within the writer's
    // first minute; the next minute's first event would carry the count of
    // those left out, see the unit test of the rate limit.)
    w.stop().unwrap();
    let audit = rig.sql.audit("batch_refused");
    assert_eq!(audit.len(), AUDIT_PER_MINUTE as usize);
    assert!(audit.iter().all(|d| d["not_recorded_before"] == 0), "{audit:?}");
    assert_eq!(audit.last().unwrap()["reason"].as_str(), Some(refused(AUDIT_PER_MINUTE.into()).reason.as_str()));
    assert_eq!(rig.remaining_answers(), vec![]);
    assert_eq!(rig.sql.i64("SELECT count(*) FROM batches"), 0);
}
