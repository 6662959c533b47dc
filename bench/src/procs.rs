//! CPU time and memory of the processes under test, read from `/proc`.
//!
//! A [`Sampler`] thread reads every group's resident memory every 100 ms
//! and keeps the peak; CPU time is read at the start and end of a phase.
//! A group is one process (an ingest, a hasher…) or a process and its
//! children (PostgreSQL: the postmaster and its backends).
//!
//! Memory is reported twice: RSS (what `top` shows; it counts the pages
//! of the shared-memory rings a process has touched, the same pages in
//! several processes) and private memory (`RssAnon`: heap and stacks,
//! where an unbounded queue would show).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which processes make up a group.
#[derive(Debug, Clone)]
pub enum Members {
    Pid(i32),
    /// The process and every process whose parent it is.
    WithChildren(i32),
}

/// Resident memory of a group, kB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss_kb: u64,
    pub private_kb: u64,
}

/// One process's figures from `/proc/<pid>/stat` and `status`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStat {
    cpu_ticks: u64,
    memory: Memory,
    ppid: i32,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let cpu_ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(ProcStat { cpu_ticks, memory: Memory { rss_kb: kb("VmRSS:"), private_kb: kb("RssAnon:") }, ppid })
}

fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| read_stat(pid).is_some_and(|s| s.ppid == parent))
        .collect()
}

impl Members {
    fn pids(&self) -> Vec<i32> {
        match *self {
            Members::Pid(p) => vec![p],
            Members::WithChildren(p) => {
                let mut v = vec![p];
                v.extend(children_of(p));
                v
            }
        }
    }

    /// CPU ticks and memory summed over the group's live processes.
    fn read(&self) -> (u64, Memory) {
        read_all(&self.pids())
    }
}

fn read_all(pids: &[i32]) -> (u64, Memory) {
    {
        let mut ticks = 0;
        let mut m = Memory::default();
        for s in pids.iter().filter_map(|&p| read_stat(p)) {
            ticks += s.cpu_ticks;
            m.rss_kb += s.memory.rss_kb;
            m.private_kb += s.memory.private_kb;
        }
        (ticks, m)
    }
}

/// A named group's figures over one phase.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// CPU seconds used in the phase.
    pub cpu_secs: f64,
    /// Peak resident memory in the phase.
    pub peak: Memory,
}

fn ticks_per_sec() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100.0, |t| t as f64)
}

/// Samples the groups' memory in the background between `start` and `stop`.
#[derive(Debug)]
pub struct Sampler {
    groups: Vec<(String, Members)>,
    start_ticks: Vec<u64>,
    peaks: Arc<Mutex<Vec<Memory>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(groups: Vec<(String, Members)>) -> Sampler {
        let start_ticks = groups.iter().map(|(_, m)| m.read().0).collect();
        let peaks = Arc::new(Mutex::new(vec![Memory::default(); groups.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (groups, peaks, stop) = (groups.clone(), peaks.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bench-sampler".into())
                .spawn(move || {
                    // Finding a group's children scans /proc: once a second
                    // (PostgreSQL's backends here are long-lived connections).
                    let mut pids: Vec<Vec<i32>> = Vec::new();
                    let mut round = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        if round.is_multiple_of(10) {
                            pids = groups.iter().map(|(_, m)| m.pids()).collect();
                        }
                        round += 1;
                        let now: Vec<Memory> = pids.iter().map(|p| read_all(p).1).collect();
                        let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                        for (peak, m) in p.iter_mut().zip(now) {
                            peak.rss_kb = peak.rss_kb.max(m.rss_kb);
                            peak.private_kb = peak.private_kb.max(m.private_kb);
                        }
                        drop(p);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .expect("spawning the sampler thread")
        };
        Sampler { groups, start_ticks, peaks, stop, thread: Some(thread) }
    }

    /// Stops sampling: each group's CPU time since `start` and peak memory.
    pub fn finish(mut self) -> BTreeMap<String, Usage> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let hz = ticks_per_sec();
        let peaks = self.peaks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.groups
            .iter()
            .zip(&self.start_ticks)
            .zip(peaks)
            .map(|(((name, m), &t0), peak)| {
                let cpu_secs = m.read().0.saturating_sub(t0) as f64 / hz;
                (name.clone(), Usage { cpu_secs, peak })
            })
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let me = std::process::id() as i32;
        let s = Sampler::start(vec![("me".into(), Members::Pid(me))]);
        let v: Vec<u64> = (0..4_000_000u64).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        // Spin until this process has used 0.3 s of CPU by its own clock,
        // however busy the machine is, then ask the sampler what it saw.
        let cpu = || {
            let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
            Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
        };
        let c0 = cpu();
        let mut x = 0u64;
        while cpu() - c0 < Duration::from_millis(300) {
            x = v.iter().fold(x, |a, &b| a.wrapping_add(b));
        }
        std::thread::sleep(Duration::from_millis(120));
        let u = s.finish();
        assert!(x != 1);
        let me = &u["me"];
        assert!(me.cpu_secs >= 0.2, "{me:?}");
        assert!(me.peak.private_kb >= 30_000, "{me:?}: 32 MB vector");
        assert!(me.peak.rss_kb >= me.peak.private_kb);
    }
}
