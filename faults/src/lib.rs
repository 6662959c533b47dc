//! Deterministic fault injection at the crash boundaries of the services.
//!
//! A service calls [`Faults::check`] with the name of a boundary
//! (`vault-writer.after-commit`, `orchestrator.after-publish`, …) each time
//! it passes it. A plan names the points that fire, on which pass, and how:
//!
//! ```text
//! vault-writer.after-commit@3=crash,orchestrator.reject@2=fail,checkpoint.before-store@1=pause:200
//! ```
//!
//! * `crash`: the process aborts there (SIGABRT), as if killed: nothing
//!   after the point happens, nothing is cleaned up;
//! * `fail`: [`Faults::check`] returns [`Injected`], which the caller turns
//!   into the error it would get from a real failure at that point (for a
//!   point after a commit: "failed, but persisted");
//! * `pause:MS`: the caller stops there for MS milliseconds (to hold a race
//!   window open).
//!
//! Each point fires once per process, on its `@N`th pass (default 1): a
//! restarted process fires again after N more passes, so a kill loop keeps
//! making progress. Every firing is logged at error level as
//! `fault injected` with the point's name, so tests can count them.
//!
//! What it does not do: anything, unless the binary was built with the
//! `enabled` feature (the test builds are) and `CHRONOS_FAULTS` holds a
//! plan; a production binary refuses to start with `CHRONOS_FAULTS` set
//! rather than silently ignoring it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The environment variable holding a plan.
pub const ENV: &str = "CHRONOS_FAULTS";

/// What a firing point does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Crash,
    Fail,
    Pause(Duration),
}

#[derive(Debug)]
struct Point {
    name: String,
    at: u64,
    action: Action,
    passes: AtomicU64,
}

/// A fault plan, shared by the threads of one process.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    points: Arc<Vec<Point>>,
}

/// A `fail` point fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected(pub String);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fault injected at {}", self.0)
    }
}

impl std::error::Error for Injected {}

impl Faults {
    /// No point fires.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Parses a plan (see the crate docs).
    pub fn parse(plan: &str) -> Result<Faults, String> {
        let mut points = Vec::new();
        for item in plan.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (point, action) = item.split_once('=').ok_or_else(|| format!("{ENV}: {item:?} has no '=action'"))?;
            let (name, at) = match point.split_once('@') {
                Some((n, at)) => {
                    let at: u64 = at.parse().map_err(|_| format!("{ENV}: {item:?}: '@{at}' is not a pass number"))?;
                    if at == 0 {
                        return Err(format!("{ENV}: {item:?}: passes count from 1"));
                    }
                    (n, at)
                }
                None => (point, 1),
            };
            if name.is_empty() || !name.contains('.') {
                return Err(format!("{ENV}: {item:?}: a point is named service.boundary"));
            }
            let action = match action {
                "crash" => Action::Crash,
                "fail" => Action::Fail,
                a => match a.strip_prefix("pause:").and_then(|ms| ms.parse::<u64>().ok()) {
                    Some(ms) => Action::Pause(Duration::from_millis(ms)),
                    None => return Err(format!("{ENV}: {item:?}: the action is crash, fail or pause:MS")),
                },
            };
            points.push(Point { name: name.to_owned(), at, action, passes: AtomicU64::new(0) });
        }
        Ok(Faults { points: Arc::new(points) })
    }

    /// The plan in `CHRONOS_FAULTS`, if this build can inject faults.
    pub fn from_env() -> Result<Faults, String> {
        match std::env::var(ENV) {
            Err(_) => Ok(Faults::none()),
            Ok(plan) if cfg!(feature = "enabled") => Faults::parse(&plan),
            Ok(_) => Err(format!("{ENV} is set, but this binary was built without fault injection; unset it")),
        }
    }

    /// Passes point `name`: aborts, pauses or fails if the plan says so.
    pub fn check(&self, name: &str) -> Result<(), Injected> {
        for p in self.points.iter().filter(|p| p.name == name) {
            if p.passes.fetch_add(1, Ordering::Relaxed) + 1 != p.at {
                continue;
            }
            tracing::error!(point = name, action = ?p.action, "fault injected");
            match p.action {
                Action::Crash => std::process::abort(),
                Action::Fail => return Err(Injected(name.to_owned())),
                Action::Pause(d) => std::thread::sleep(d),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_fires_once_on_its_pass() {
        let f = Faults::parse("a.b@3=fail, c.d=pause:1").unwrap();
        assert_eq!(f.check("a.b"), Ok(()));
        assert_eq!(f.check("a.b"), Ok(()));
        assert_eq!(f.check("a.b"), Err(Injected("a.b".into())));
        assert_eq!(f.check("a.b"), Ok(()));
        assert_eq!(f.check("c.d"), Ok(()));
        assert_eq!(f.check("x.y"), Ok(()));
    }

    #[test]
    fn bad_plans_are_refused_with_the_item() {
        for bad in ["a.b", "a.b@0=fail", "a.b@x=fail", "ab=fail", "a.b=explode", "a.b=pause:x"] {
            let e = Faults::parse(bad).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        assert!(Faults::parse("").unwrap().points.is_empty());
    }
}
