//! SIGINT (Ctrl-C) during training: the first finishes the current step, writes a
//! checkpoint and ends the run ([`Interrupted`], exit status [`EXIT_CODE`]); a second exits
//! at once. Outside training SIGINT exits at once, as by default.
//!
//! `dsa-cli` calls [`install`] at its start; [`train`](crate::train::train) marks its run
//! with [`Training`] and asks [`requested`] between steps. Without [`install`] (a library
//! user), SIGINT keeps its default action and training is never interrupted.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Exit status of a run ended by SIGINT (128 + 2, as a shell reports it).
pub const EXIT_CODE: u8 = 130;

/// Trainings running in this process.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Whether SIGINT arrived during the trainings running now.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT handler (once per process; later calls do nothing): while a training
/// runs, the first SIGINT asks it to stop ([`requested`]) and a second exits with
/// [`EXIT_CODE`]; otherwise SIGINT exits with [`EXIT_CODE`].
pub fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: the action only touches atomics and calls `_exit`, both safe in a
            // signal handler.
            let action = || {
                if ACTIVE.load(Ordering::SeqCst) == 0 || REQUESTED.swap(true, Ordering::SeqCst) {
                    signal_hook::low_level::exit(i32::from(EXIT_CODE));
                }
            };
            unsafe { signal_hook::low_level::register(signal_hook::consts::SIGINT, action) }
                .map(|_| ())
                .map_err(|e| format!("cannot install the SIGINT handler: {e}"))
        })
        .clone()
}

/// Whether SIGINT asked the running trainings to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Marks a training as running while the value lives: SIGINT then asks it to stop instead
/// of exiting. The first of several concurrent trainings clears an earlier request.
#[derive(Debug)]
pub struct Training(());

impl Training {
    /// Marks the start of a training.
    pub fn start() -> Self {
        if ACTIVE.fetch_add(1, Ordering::SeqCst) == 0 {
            REQUESTED.store(false, Ordering::SeqCst);
        }
        Training(())
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A training ended by SIGINT after writing a checkpoint of its last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    /// The steps done (the checkpoint's).
    pub step: usize,
    /// The run's steps.
    pub steps: usize,
    /// The run directory.
    pub run_dir: PathBuf,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interrupted after step {} of {}: checkpoint written in {}; continue with `dsa-cli train --out {} --resume`",
            self.step,
            self.steps,
            self.run_dir.join("checkpoint").display(),
            self.run_dir.display()
        )
    }
}

impl std::error::Error for Interrupted {}
