//! SIGINT (Ctrl-C) during training: the first finishes the current step, writes a
//! checkpoint and ends the run ([`Interrupted`], exit status [`EXIT_CODE`]); a second exits
//! at once. Outside training SIGINT exits at once, as by default. Under Burn's TUI
//! ([`tui_renderer`]), Ctrl-C and the TUI's own "stop the training" do the same.
//!
//! `dsa-cli` calls [`install`] at its start; [`train`](crate::train::train) marks its run
//! with [`Training`] and asks [`requested`] between steps. Without [`install`] (a library
//! user), SIGINT keeps its default action and only the TUI's "stop the training"
//! interrupts a training.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use burn::train::renderer::tui::TuiMetricsRendererWrapper;
use burn::train::Interrupter;

/// Exit status of a run ended by SIGINT (128 + 2, as a shell reports it).
pub const EXIT_CODE: u8 = 130;

/// Trainings running in this process.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Whether SIGINT arrived during the trainings running now.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Whether [`install`] installed the SIGINT handler.
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
/// The interrupter of the TUI of the trainings running now ([`tui_renderer`]).
static TUI_STOP: Mutex<Option<Interrupter>> = Mutex::new(None);

/// Installs the SIGINT handler (once per process; later calls do nothing): while a training
/// runs, the first SIGINT asks it to stop ([`requested`]) and a second exits with
/// [`EXIT_CODE`]; otherwise SIGINT exits with [`EXIT_CODE`].
pub fn install() -> Result<(), String> {
    INSTALLED
        .get_or_init(|| {
            // SAFETY: the action only touches atomics, restores the terminal (tcsetattr,
            // write) and calls `_exit`, all safe in a signal handler.
            let action = || {
                if ACTIVE.load(Ordering::SeqCst) == 0 || REQUESTED.swap(true, Ordering::SeqCst) {
                    terminal::restore();
                    signal_hook::low_level::exit(i32::from(EXIT_CODE));
                }
            };
            unsafe { signal_hook::low_level::register(signal_hook::consts::SIGINT, action) }
                .map(|_| ())
                .map_err(|e| format!("cannot install the SIGINT handler: {e}"))
        })
        .clone()
}

/// Whether SIGINT (or the TUI's "stop the training", see [`tui_renderer`]) asked the
/// running trainings to stop.
pub fn requested() -> bool {
    if TUI_STOP.lock().is_ok_and(|tui| tui.as_ref().is_some_and(Interrupter::should_stop)) {
        // Latched: Burn resets the TUI's interrupter when the training ends.
        REQUESTED.store(true, Ordering::SeqCst);
    }
    REQUESTED.load(Ordering::SeqCst)
}

/// Burn's TUI renderer for the training marked by the running [`Training`] (`checkpoint`:
/// the learner epoch it resumes after), ending the run as SIGINT does ([`requested`]) on
/// both of the TUI's ways to stop it from the keyboard:
///
/// - Ctrl-C (after [`install`]): the TUI puts the terminal in raw mode, where Ctrl-C is a
///   key press (which the TUI ignores) instead of SIGINT. Once it has, the terminal's
///   interrupt key is turned back on (its quit and suspend keys stay off), so that Ctrl-C
///   raises SIGINT; the TUI restores the terminal's own settings when it ends. A second
///   Ctrl-C exits at once, restoring the terminal first.
/// - `q`, then "Stop the training" (`s`): Burn would stop the learner through its
///   interrupter, which ends the run before the checkpoint of the steps since the last one
///   (and returns it as if complete). The renderer gets an interrupter of its own instead,
///   which [`requested`] reads as SIGINT. Its other choice, "kill" (`k`), panics as Burn
///   made it.
pub fn tui_renderer(checkpoint: Option<usize>) -> TuiMetricsRendererWrapper {
    let stop = Interrupter::new();
    if let Ok(mut tui) = TUI_STOP.lock() {
        *tui = Some(stop.clone());
    }
    // Without the handler, Ctrl-C stays a key press: SIGINT's default action would end the
    // process with the terminal in raw mode.
    let handled = INSTALLED.get().is_some_and(Result::is_ok);
    if handled {
        terminal::save();
    }
    let renderer = TuiMetricsRendererWrapper::new(stop, checkpoint);
    if handled {
        terminal::keep_ctrl_c();
    }
    renderer
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
        if ACTIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(mut tui) = TUI_STOP.lock() {
                *tui = None;
            }
            terminal::forget();
        }
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

/// The controlling terminal under Burn's TUI (Unix): its settings from before the TUI, and
/// its interrupt key kept on in the TUI's raw mode.
#[cfg(unix)]
mod terminal {
    use std::fs::OpenOptions;
    use std::mem::MaybeUninit;
    use std::os::fd::{IntoRawFd, RawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// The terminal (a descriptor kept open for the process) and its settings before the
    /// first TUI; `None` without a controlling terminal.
    static TERMINAL: OnceLock<Option<(RawFd, libc::termios)>> = OnceLock::new();
    /// Whether a TUI may hold the terminal now.
    static IN_TUI: AtomicBool = AtomicBool::new(false);
    /// Leaves the alternate screen and shows the cursor.
    const LEAVE_TUI: &[u8] = b"\x1b[?1049l\x1b[?25h\r\n";
    /// `_POSIX_VDISABLE` on Linux and macOS: a control character that no key produces.
    const DISABLED: libc::cc_t = 0;

    fn settings(fd: RawFd) -> Option<libc::termios> {
        let mut t = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills `t` when it returns 0.
        (unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) } == 0).then(|| unsafe { t.assume_init() })
    }

    /// Records the terminal's settings (before a TUI starts).
    pub(super) fn save() {
        TERMINAL.get_or_init(|| {
            let fd = OpenOptions::new().read(true).write(true).open("/dev/tty").ok()?.into_raw_fd();
            Some((fd, settings(fd)?))
        });
        IN_TUI.store(true, Ordering::SeqCst);
    }

    /// Waits (a second at most) for the TUI's raw mode, then turns the interrupt key back on.
    pub(super) fn keep_ctrl_c() {
        let Some(Some((fd, _))) = TERMINAL.get() else { return };
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Some(mut t) = settings(*fd) {
            if t.c_lflag & libc::ISIG == 0 {
                t.c_lflag |= libc::ISIG;
                t.c_cc[libc::VQUIT] = DISABLED;
                t.c_cc[libc::VSUSP] = DISABLED;
                // SAFETY: tcsetattr with settings read from the same terminal.
                unsafe { libc::tcsetattr(*fd, libc::TCSANOW, &t) };
                return;
            }
            if Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The TUI has ended (and restored the terminal).
    pub(super) fn forget() {
        IN_TUI.store(false, Ordering::SeqCst);
    }

    /// In a signal handler, before exiting: restores the terminal's settings and screen
    /// while a TUI may hold it.
    pub(super) fn restore() {
        if let (true, Some(Some((fd, saved)))) = (IN_TUI.load(Ordering::SeqCst), TERMINAL.get()) {
            // SAFETY: tcsetattr and write are async-signal-safe; `saved` lives forever.
            unsafe {
                libc::tcsetattr(*fd, libc::TCSANOW, saved);
                libc::write(*fd, LEAVE_TUI.as_ptr().cast(), LEAVE_TUI.len());
            }
        }
    }
}

/// Without Unix terminals Burn's TUI is used as it is.
#[cfg(not(unix))]
mod terminal {
    pub(super) fn save() {}
    pub(super) fn keep_ctrl_c() {}
    pub(super) fn forget() {}
    pub(super) fn restore() {}
}
