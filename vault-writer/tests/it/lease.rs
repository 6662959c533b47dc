//! One writer per log: a vault writer whose epoch is not the writer
//! lease's commits nothing and says it was fenced out.

use chronos_faults::Faults;
use chronos_ledger::ChainHead;
use chronos_vault::lease;

use crate::{Batch, Rig, Writer, hasher, refusal};

#[test]
fn a_writer_whose_lease_another_instance_took_commits_nothing_more_and_says_it_was_fenced() {
    let mut rig = Rig::new("vw_fenced");
    let a = rig.sql.connect();
    let epoch = rig.sql.rt.block_on(lease::acquire(&a, "instance A")).unwrap();
    let mut w = Writer::start(rig.settings(epoch, Faults::none()));
    let genesis = ChainHead::genesis(&hasher(), crate::ORIGIN);
    let first = Batch::after(&genesis, &[r#"{"n":1}"#], 1_000);
    rig.push_sequenced(&first, 1);
    assert_eq!(rig.next_answer(), first.ack(1));

    // A's lock goes with its connection (a network cut), and instance B
    // takes the log. A's vault writer, still connected, has not noticed.
    rig.sql.rt.block_on(a.batch_execute("SELECT pg_advisory_unlock_all()")).unwrap();
    let b = rig.sql.connect();
    assert_eq!(rig.sql.rt.block_on(lease::acquire(&b, "instance B")).unwrap(), epoch + 1);

    let second = Batch::after(&first.head(), &[r#"{"n":2}"#], 2_000);
    rig.push_sequenced(&second, 2);
    let reason = refusal(w.exited());
    assert!(reason.contains(&format!("fenced out: this writer holds epoch {epoch}")), "{reason}");
    assert!(reason.contains(&format!("instance B now holds epoch {}", epoch + 1)), "{reason}");
    let audit = rig.sql.audit("vault_writer_refused");
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["reason"], reason.as_str());
    assert_eq!(rig.sql.chains(), vec![first.chain], "nothing committed under the old epoch");
    assert_eq!(rig.remaining_answers(), vec![], "request 2 must get no answer");
}

#[test]
fn a_writer_started_under_an_old_epoch_refuses_before_writing_anything() {
    let mut rig = Rig::new("vw_stale");
    let holder = rig.sql.connect();
    let epoch = rig.sql.rt.block_on(lease::acquire(&holder, "the current instance")).unwrap();

    // Refused at once, with nothing to write yet: it never tells ingest
    // that the pipeline is ready.
    let mut w = Writer::start(rig.settings(epoch - 1, Faults::none()));
    let reason = refusal(w.exited());
    assert!(reason.contains(&format!("fenced out: this writer holds epoch {}", epoch - 1)), "{reason}");
    assert!(reason.contains("the current instance"), "the refusal names the holder: {reason}");
    assert_eq!(rig.remaining_answers(), vec![]);
    assert!(!rig.db_ok_seen, "a heartbeat said the database was ready for writing");
    assert_eq!(rig.sql.i64("SELECT count(*) FROM batches"), 0);
}
