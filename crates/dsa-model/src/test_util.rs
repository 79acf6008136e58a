//! Helpers shared by the unit tests: the conformance cases and temporary directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The conformance directory: `$DSA_CONFORMANCE_DIR`, else `shared/conformance` next to
/// the workspace.
pub fn conformance_dir() -> PathBuf {
    match std::env::var_os("DSA_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    }
}

/// Every subdirectory of the conformance directory that holds a `config.json`, sorted.
/// Panics when there is none, so that a misplaced directory cannot pass silently.
pub fn conformance_cases() -> Vec<PathBuf> {
    let dir = conformance_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "conformance directory {} unreadable ({e}); set DSA_CONFORMANCE_DIR",
            dir.display()
        )
    });
    let mut cases: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("config.json").is_file())
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no conformance case under {}",
        dir.display()
    );
    cases
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("dsa-model-test-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
