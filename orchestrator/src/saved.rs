//! The newest signed checkpoint, kept outside the database.
//!
//! A point-in-time restore or a `pg_restore` of an old backup rolls the
//! ledger *and* its stored checkpoints back together, so the database
//! cannot tell on its own that it lost batches a client was already
//! answered for, or a checkpoint already handed out. The signer therefore
//! writes every checkpoint here (atomically: a temporary file, fsync,
//! rename, fsync of the directory) *before* it stores or publishes it, and
//! [`crate::restore`] refuses to sequence unless the database extends this
//! checkpoint (checked with a consistency proof from the tiles).
//!
//! Crash boundary: killed after the file is written and before the
//! database stores the checkpoint, the file is newer than the database's
//! newest checkpoint; that is fine, because a checkpoint is only ever
//! signed for batches already committed, which the database still holds.
//! The successor goes on from the database's newest checkpoint, so it
//! signs that head again and stores it.

use std::io::Write as _;
use std::path::Path;

/// Reads the saved checkpoint note, if the file exists.
pub fn read(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the saved checkpoint with `note`, durably: once this returns,
/// a power cut leaves either the old note or the new one, never a mix.
pub fn write(path: &Path, note: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(note.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_written_note_reads_back_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("latest.checkpoint");
        assert_eq!(super::read(&path).unwrap(), None);
        super::write(&path, "one\n").unwrap();
        super::write(&path, "two\n").unwrap();
        assert_eq!(super::read(&path).unwrap().as_deref(), Some("two\n"));
        assert!(!path.with_extension("tmp").exists());
    }
}
