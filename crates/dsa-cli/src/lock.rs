//! The lock of a run directory: one `train` / `warmup` (new or `--resume`) at a time, so
//! that two runs cannot overwrite each other's checkpoints.
//!
//! The lock is an exclusive `flock` on [`LOCK_FILE`], which holds the holder's process id
//! for the message of the next one. The kernel releases the lock when its holder ends, also
//! when it is killed, so a lock file left by a dead process is simply taken over; the file
//! itself stays (removing it would let two processes lock two different files).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::checkpoint::RunError;

/// Lock file of a run directory.
pub const LOCK_FILE: &str = "train.lock";

/// The lock of a run directory, held while this value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_dir` (which must exist), or fails at once naming the lock
    /// file and the process holding it.
    pub fn acquire(run_dir: &Path) -> Result<Self, RunError> {
        let path = run_dir.join(LOCK_FILE);
        let cannot = |e: std::io::Error| format!("cannot lock {}: {e}", path.display());
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(cannot)?;
        try_lock(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                let holder = std::fs::read_to_string(&path).ok().and_then(|pid| pid.trim().parse::<u32>().ok());
                let holder = holder.map_or("another process".to_string(), |pid| format!("process {pid}"));
                format!("{} is held by {holder}: another `dsa-cli train` is running on {} (wait for it to end or stop it)", path.display(), run_dir.display())
            }
            _ => cannot(e),
        })?;
        file.set_len(0).and_then(|()| write!(file, "{}", std::process::id())).and_then(|()| file.flush()).map_err(cannot)?;
        Ok(Self { _file: file })
    }
}

/// An exclusive, non-blocking `flock` on `file` (`WouldBlock` when another holds it).
#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor that `file` keeps open.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Without `flock` the run directory is not locked.
#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock of a held run directory fails naming the file and the holder's
    /// process; once released (or when the file was left by a dead process) it is taken.
    #[test]
    fn a_held_lock_names_its_holder_and_a_released_one_is_taken() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join(LOCK_FILE);
        // A lock file left by a process that has ended.
        std::fs::write(&path, "4194304").unwrap();
        let lock = RunLock::acquire(temp.path()).expect("a stale lock file is taken over");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), std::process::id().to_string());
        let err = RunLock::acquire(temp.path()).unwrap_err().to_string();
        assert_eq!(err, format!("{} is held by process {}: another `dsa-cli train` is running on {} (wait for it to end or stop it)", path.display(), std::process::id(), temp.path().display()));
        drop(lock);
        RunLock::acquire(temp.path()).expect("released");
    }
}
