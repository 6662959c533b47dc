//! One owner per data directory: an exclusive `flock` on
//! `DATA_DIR/run/owner.lock`, held by `chronos up` for its whole life, or by
//! a reading command (`verify`, `prove`, …) while it runs the embedded
//! PostgreSQL itself. The kernel drops the lock when its holder dies,
//! however it dies, so a lock is never stale. The file's text says who
//! holds it (pid, command, addresses), for the refusal message.
//!
//! What it does not do: protect a database given by URL (the writer lease
//! in PostgreSQL does that, `chronos_vault::lease`), or stop anything.

use std::fs::File;
use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};

/// A held lock; dropped, it is released.
#[derive(Debug)]
pub struct OwnerLock {
    file: Flock<File>,
    path: PathBuf,
}

/// Where the lock lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("owner.lock")
}

/// Takes the lock, or returns `Ok(Err(holder))` naming who has it.
pub fn try_lock(data_dir: &Path, who: &str) -> anyhow::Result<Result<OwnerLock, String>> {
    let path = path(data_dir);
    std::fs::create_dir_all(path.parent().unwrap_or(data_dir))
        .with_context(|| format!("creating {}", data_dir.join("run").display()))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => {
            let mut lock = OwnerLock { file, path };
            lock.describe(who)?;
            Ok(Ok(lock))
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            Ok(Err(if holder.is_empty() { "another process (it has not said who yet)".into() } else { holder.into() }))
        }
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

impl OwnerLock {
    /// Replaces the text that says who holds the lock.
    pub fn describe(&mut self, who: &str) -> anyhow::Result<()> {
        let text = format!("pid {} ({who})\n", std::process::id());
        let f: &mut File = &mut self.file;
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(text.as_bytes()).with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_owner_is_refused_with_the_first_ones_description_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = super::try_lock(dir.path(), "chronos up").unwrap().unwrap();
        first.describe("chronos up, ingest at 127.0.0.1:5000").unwrap();
        let refused = super::try_lock(dir.path(), "chronos verify").unwrap().unwrap_err();
        assert!(refused.contains(&format!("pid {}", std::process::id())), "{refused}");
        assert!(refused.contains("ingest at 127.0.0.1:5000"), "{refused}");
        drop(first);
        assert!(super::try_lock(dir.path(), "chronos verify").unwrap().is_ok());
    }
}
