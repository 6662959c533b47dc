//! Trusted time: every batch stamped with quorum time names its round's
//! evidence by digest (`quorum:K/N:<digest>`, spec/ledger.md). The chain
//! covers the time source, so the check here is that the evidence exists
//! in `time_rounds` with that digest, that its selection recomputes to
//! what it says (`chronos_quorum::evidence`), and that the batch's time
//! and uncertainty are what that agreement allows.

use std::collections::HashMap;

use chronos_quorum::evidence::{Evidence, parse_quorum_source};

use crate::Error;
use crate::report::{Finding, Kind};

/// What the time check found.
#[derive(Debug, Default)]
pub(crate) struct TimeCheck {
    pub findings: Vec<Finding>,
    /// Batches stamped with quorum time, checked against their evidence.
    pub quorum_batches: u64,
}

/// Checks the time of batches `1..=last_seq`.
pub(crate) fn check(url: &str, last_seq: u64) -> Result<TimeCheck, Error> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let (client, conn) = chronos_tls::pg::connect(url).await.map_err(Error::Connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let has_rounds = client
            .query_one("SELECT to_regclass('time_rounds') IS NOT NULL", &[])
            .await
            .map_err(|source| Error::Database { what: "the schema", source })?
            .get::<_, bool>(0);
        let batches = client
            .query(
                "SELECT seq, time_ns, uncertainty_ns, time_source FROM batches \
                 WHERE time_source LIKE 'quorum:%' AND seq <= $1 ORDER BY seq",
                &[&i64::try_from(last_seq).unwrap_or(i64::MAX)],
            )
            .await
            .map_err(|source| Error::Database { what: "batches' times", source })?;
        let mut out = TimeCheck::default();
        let mut evidence: HashMap<[u8; 32], Result<Evidence, String>> = HashMap::new();
        for row in batches {
            let seq = row.get::<_, i64>(0) as u64;
            let (time, unc) = (row.get::<_, i64>(1).max(0) as u64, row.get::<_, i64>(2).max(0) as u64);
            let source: String = row.get(3);
            out.quorum_batches += 1;
            let bad = |detail: String| Finding::new(Kind::TimeUnproven, "batches", detail).seq(seq);
            let Some((_, _, digest)) = parse_quorum_source(&source) else {
                out.findings.push(bad(format!("time source {source:?} is not quorum:K/N:<digest>")));
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = evidence.entry(digest) {
                let found = if has_rounds {
                    load(&client, &digest).await?
                } else {
                    Err("the database has no time_rounds table".to_owned())
                };
                slot.insert(found);
            }
            match &evidence[&digest] {
                Err(why) => out.findings.push(bad(format!("the evidence its time source names: {why}"))),
                Ok(e) if !e.admits(time, unc) => out.findings.push(bad(format!(
                    "time {time} ± {unc} ns is not what round {}'s agreement {:?} allows",
                    e.round, e.agreed
                ))),
                Ok(_) => {}
            }
        }
        Ok(out)
    })
}

/// The evidence with `digest`, opened and checked, or why it cannot be used.
async fn load(client: &tokio_postgres::Client, digest: &[u8; 32]) -> Result<Result<Evidence, String>, Error> {
    let row = client
        .query_opt("SELECT evidence FROM time_rounds WHERE digest = $1", &[&digest.as_slice()])
        .await
        .map_err(|source| Error::Database { what: "time_rounds", source })?;
    let Some(row) = row else { return Ok(Err("no time_rounds row has this digest".into())) };
    let text: String = row.get(0);
    Ok(Evidence::open(&text, digest)
        .map_err(|e| e.to_string())
        .and_then(|e| e.check().map(|()| e).map_err(|err| err.to_string())))
}
