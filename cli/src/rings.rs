//! This instance's rings across runs of `chronos up`: room for them in
//! /dev/shm, what an earlier run left in them, and their removal after a
//! clean stop.
//!
//! Rings outlive the processes that use them, so that records survive a
//! crash. After an unclean stop they may still hold records that were never
//! committed. If the new run's topology has the same rings (same names,
//! same sizes), its services carry on with those records. If it does not (fewer
//! hashers or ingest processes, other body limits), the records would be
//! stranded in rings nobody reads, and stored a second time if a later
//! run read them after the client had sent the body again. So `up` first
//! drains them with the topology that wrote them, recorded in
//! `run/topology.json`, and only then starts the new one.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chronos_ipc::ring;
use chronos_wire::Topology;

use crate::services::Plan;

/// Bytes the rings of topology `t` take in /dev/shm once full.
pub fn shm_needed(t: &Topology) -> u64 {
    t.rings().iter().map(|(n, g)| n * ring::segment_len(g.capacity)).sum()
}

/// Room in /dev/shm for this instance's rings: what is free, plus what its
/// own rings already hold (they are reused, or removed once drained).
fn shm_room(plan: &Plan) -> anyhow::Result<u64> {
    let st = nix::sys::statvfs::statvfs("/dev/shm").context("reading the size of /dev/shm")?;
    let free = st.blocks_available() * st.fragment_size();
    let ours: u64 = ring::list(&plan.names.prefix())
        .iter()
        .filter_map(|n| std::fs::metadata(ring::segment_path(n)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    Ok(free + ours)
}

/// With `pipeline.hashers = 0` (one per core), runs as many hashers as
/// /dev/shm holds the rings of, at most one per core and at least one, and
/// says so when that is fewer than the cores: a container's shared memory
/// is set apart from its CPUs (Compose's `shm_size`), and the default must
/// start on any host. A hasher count that was asked for is never lowered:
/// [`check_shared_memory`] refuses it if it does not fit.
pub fn fit_hashers(plan: &mut Plan) -> anyhow::Result<()> {
    if plan.cfg.pipeline.hashers != 0 {
        return Ok(());
    }
    let room = shm_room(plan)?;
    let cores = plan.topology.hashers;
    let Some(h) = hashers_that_fit(&plan.topology, room) else { return Ok(()) };
    if h < cores {
        let all = shm_needed(&plan.topology);
        eprintln!(
            "chronos: {h} hasher(s), not one per core ({cores}): /dev/shm has room for {} MiB of rings and \
             {cores} hashers need {} MiB (Docker/Compose: shm_size; or set pipeline.hashers)",
            room >> 20,
            all.div_ceil(1 << 20)
        );
        plan.topology.hashers = h;
    }
    Ok(())
}

/// The most hashers, at most `t.hashers`, whose rings fit in `room` bytes;
/// `None` when not even one does.
fn hashers_that_fit(t: &Topology, room: u64) -> Option<u16> {
    (1..=t.hashers).rev().find(|&h| shm_needed(&Topology { hashers: h, ..*t }) <= room)
}

/// Refuses to start when /dev/shm cannot hold this topology's rings once
/// they fill (a write to a tmpfs page that does not fit kills the writer
/// with SIGBUS, under load, long after the start). This instance's own
/// rings already there count as room: they are reused, or removed once
/// drained.
pub fn check_shared_memory(plan: &Plan) -> anyhow::Result<()> {
    let t = &plan.topology;
    let need = shm_needed(t);
    let room = shm_room(plan)?;
    if need > room {
        bail!(
            "/dev/shm has {} MiB free, but the rings of this topology need up to {} MiB once full \
             ({} ingest process(es) × {} hasher(s), ingest.max_decoded_bytes = {} MiB): give it more shared memory \
             (Docker/Compose: shm_size), or lower pipeline.hashers, ingest.processes or ingest.max_decoded_bytes",
            room >> 20,
            need.div_ceil(1 << 20),
            t.ingests,
            t.hashers,
            t.max_decoded >> 20
        );
    }
    Ok(())
}

/// What an earlier run left in rings this run would not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Leftovers {
    /// Nothing, or only empty rings (now removed).
    None,
    /// Rings holding records, all of them rings of `Topology` (the earlier
    /// run's): run that topology without ingest until they are empty.
    Drain { topology: Topology, rings: Vec<String> },
}

/// Finds this instance's rings that hold records the planned topology
/// would not read, and removes the empty ones it would not use.
pub fn leftovers(plan: &Plan) -> anyhow::Result<Leftovers> {
    let wanted = plan.names.sized(&plan.topology);
    let mut stranded = Vec::new();
    for name in ring::list(&plan.names.prefix()) {
        let geometry = ring::geometry(&name).with_context(|| format!("ring {}", ring::segment_path(&name)))?;
        let reused = wanted.iter().any(|(n, g)| *n == name && (g.capacity, g.max_record) == geometry);
        if reused {
            continue;
        }
        if plan.names.is_ack(&name) || !ring::holds_records(&name)? {
            remove(&name)?;
        } else {
            stranded.push((name, geometry));
        }
    }
    if stranded.is_empty() {
        return Ok(Leftovers::None);
    }
    let earlier = read_topology(&plan.run_dir());
    let fits = |t: &Topology| {
        let sized = plan.names.sized(t);
        stranded
            .iter()
            .all(|(name, geometry)| sized.iter().any(|(n, g)| n == name && (g.capacity, g.max_record) == *geometry))
    };
    match earlier {
        Some(t) if fits(&t) => {
            Ok(Leftovers::Drain { topology: t, rings: stranded.into_iter().map(|(name, _)| name).collect() })
        }
        _ => bail!(
            "rings of an earlier run hold records that this topology would not read ({}), and {} does not \
             describe the run that made them. Start once more with that run's settings \
             (pipeline.hashers, ingest.processes, ingest.max_decoded_bytes, ingest.max_events) and stop with \
             Ctrl-C, which commits what the rings hold; then change the settings",
            stranded.iter().map(|(n, _)| ring::segment_path(n)).collect::<Vec<_>>().join(", "),
            topology_file(&plan.run_dir()).display()
        ),
    }
}

/// Environment that makes the services run `t` instead of the configured
/// topology (every setting can come from `CHRONOS_<SECTION>_<KEY>`).
pub fn topology_env(t: &Topology) -> Vec<(String, String)> {
    vec![
        ("CHRONOS_INGEST_PROCESSES".into(), t.ingests.to_string()),
        ("CHRONOS_PIPELINE_HASHERS".into(), t.hashers.to_string()),
        ("CHRONOS_INGEST_MAX_DECODED_BYTES".into(), t.max_decoded.to_string()),
        ("CHRONOS_INGEST_MAX_EVENTS".into(), t.max_events.to_string()),
    ]
}

/// The rings of topology `t` (answers to ingest aside) that hold records.
pub fn pending(plan: &Plan, t: &Topology) -> anyhow::Result<Vec<String>> {
    let mut holding = Vec::new();
    for name in plan.names.all(t) {
        match ring::holds_records(&name) {
            Ok(true) if !plan.names.is_ack(&name) => holding.push(name),
            Ok(_) | Err(chronos_ipc::RingError::NotFound { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("ring {}", ring::segment_path(&name))),
        }
    }
    Ok(holding)
}

/// Removes every ring of `t` that the planned topology does not reuse as
/// it is (they are empty: drained).
pub fn remove_unused(plan: &Plan, t: &Topology) -> anyhow::Result<()> {
    let wanted = plan.names.sized(&plan.topology);
    for (name, g) in plan.names.sized(t) {
        if !wanted.contains(&(name.clone(), g)) {
            match ring::holds_records(&name) {
                Err(chronos_ipc::RingError::NotFound { .. }) => continue,
                Ok(true) if !plan.names.is_ack(&name) => bail!("ring {name} still holds records after its drain"),
                _ => remove(&name)?,
            }
        }
    }
    Ok(())
}

fn remove(name: &str) -> anyhow::Result<()> {
    ring::remove(name).with_context(|| format!("removing ring {}", ring::segment_path(name)))
}

fn topology_file(run_dir: &Path) -> PathBuf {
    run_dir.join("topology.json")
}

/// Records the topology whose rings this run creates, for the next run.
pub fn write_topology(run_dir: &Path, t: &Topology) -> anyhow::Result<()> {
    let json = serde_json::json!({
        "ingests": t.ingests, "hashers": t.hashers, "max_decoded": t.max_decoded, "max_events": t.max_events,
    });
    let path = topology_file(run_dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{json}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn read_topology(run_dir: &Path) -> Option<Topology> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(topology_file(run_dir)).ok()?).ok()?;
    let n = |k: &str| v.get(k)?.as_u64();
    Some(Topology {
        ingests: u16::try_from(n("ingests")?).ok()?,
        hashers: u16::try_from(n("hashers")?).ok()?,
        max_decoded: n("max_decoded")?,
        max_events: n("max_events")?,
    })
}

/// Removes this instance's rings that hold no records (all of them after
/// a clean stop); a ring still holding records is kept for the next start.
/// Ack rings only hold answers and heartbeats for processes now gone.
pub fn remove_drained(plan: &Plan) {
    for name in plan.names.all(&plan.topology) {
        let empty = match ring::holds_records(&name) {
            Err(chronos_ipc::RingError::NotFound { .. }) => continue,
            held => plan.names.is_ack(&name) || held.is_ok_and(|has| !has),
        };
        if empty {
            if let Err(e) = ring::remove(&name) {
                tracing::warn!(ring = name, error = %e, "cannot remove ring");
            }
        } else {
            tracing::info!(ring = name, "ring kept: it holds records for the next start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The defaults (16 MiB bodies, 65 536 events) and one ingest process.
    fn topology(hashers: u16) -> Topology {
        let l = chronos_ingest::body::Limits::default();
        Topology { ingests: 1, hashers, max_decoded: l.max_decoded as u64, max_events: l.max_events as u64 }
    }

    /// The formula the deployment docs give for one ingest process:
    /// 64 MiB per (ingest, hasher) pair, 128 MiB per hasher, 128 MiB for
    /// the sequencer's ring, 1 MiB per ingest process, and a 4 KiB header per ring.
    #[test]
    fn the_rings_take_what_the_deployment_docs_say() {
        for h in [1u16, 2, 8, 64] {
            let need = shm_needed(&topology(h));
            let formula = (64 + 128) * u64::from(h) * MIB + 128 * MIB + MIB;
            assert!(
                need >= formula && need - formula <= 4096 * (2 * u64::from(h) + 2),
                "{h} hashers: {need} vs {formula}"
            );
        }
    }

    #[test]
    fn one_hasher_per_core_is_lowered_to_what_shared_memory_holds() {
        let t = topology(8);
        assert_eq!(hashers_that_fit(&t, 8 << 30), Some(8));
        assert_eq!(hashers_that_fit(&t, shm_needed(&topology(3))), Some(3));
        assert_eq!(hashers_that_fit(&t, shm_needed(&topology(3)) - 1), Some(2));
        assert_eq!(hashers_that_fit(&t, 512 * MIB), Some(1));
        assert_eq!(hashers_that_fit(&t, 64 * MIB), None);
    }
}
