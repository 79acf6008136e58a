//! A persistent cache of the GPU kernels CubeCL compiles (CUDA's PTX), so that a second run
//! of the same program skips the compilation: Burn's and our kernels are compiled on first
//! use, hundreds of them for a model (`dsa-cli generate` spent ~9 s of its prefill and ~8 s
//! of its first decode steps compiling; `kernels/DESIGN.md`, kernel cache).
//!
//! CubeCL finds a cached kernel by its name and launch settings, not by its source, so a
//! cache must not outlive the build that filled it: [`persist_compiled_kernels`] keeps it in
//! a folder named after this executable (its size and modification time) and the GPUs the
//! system reports. Other builds' folders are left as they are (a few MB each; running
//! programs may be using them): delete the root to clear the cache.
//!
//! ```no_run
//! // First thing in `main`, before any CubeCL device is used:
//! let dir = dsa_burn::kernel_cache::persist_compiled_kernels(std::path::Path::new("/tmp/my-kernels"));
//! println!("compiled kernels kept in {dir:?}");
//! ```

use std::path::{Path, PathBuf};

use burn_cubecl::cubecl::config::cache::CacheConfig;
use burn_cubecl::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};

/// Makes CubeCL keep the kernels it compiles under `root` (in a folder of this build, see
/// the module docs) and returns that folder; `None`, changing nothing, when CubeCL's
/// configuration was already read (a device is in use: call this first) or when a
/// `cubecl.toml` / `burn.toml` configures a cache itself.
pub fn persist_compiled_kernels(root: &Path) -> Option<PathBuf> {
    if CubeClRuntimeConfig::storage().lock().is_some() {
        return None;
    }
    // The configuration CubeCL would read itself (files, then environment), plus the cache.
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if config.compilation.cache.is_some() {
        return None;
    }
    let dir = root.join(build_key());
    config.compilation.cache = Some(CacheConfig::File(dir.clone()));
    // A concurrent first read would make `set` panic; nothing else runs this early.
    CubeClRuntimeConfig::set(config);
    Some(dir)
}

/// `<crate version>-<hash of (executable size, modification time, GPU models)>`.
fn build_key() -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    if let Some(meta) = std::env::current_exe().ok().and_then(|p| std::fs::metadata(p).ok()) {
        meta.len().hash(&mut h);
        meta.modified().ok().hash(&mut h);
    }
    // PTX is compiled for the GPU's architecture: another GPU gets another folder.
    if let Ok(gpus) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        let mut models: Vec<String> = gpus
            .flatten()
            .filter_map(|g| std::fs::read_to_string(g.path().join("information")).ok())
            .filter_map(|info| info.lines().find(|l| l.starts_with("Model:")).map(str::to_string))
            .collect();
        models.sort();
        models.hash(&mut h);
    }
    format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), h.finish())
}
