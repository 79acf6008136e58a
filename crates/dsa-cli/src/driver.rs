//! Probing for the CUDA driver before `--backend cuda` creates its device: without a driver
//! CubeCL's CUDA runtime panics on a thread of its own (the user saw a `RecvError` unwrap);
//! the probe turns that into an error saying what is missing.

/// The CUDA driver library, as the driver installs it (CubeCL's runtime loads it).
pub const CUDA_DRIVER: &str = "libcuda.so.1";

/// Checks that the CUDA driver ([`CUDA_DRIVER`]) loads and finds a GPU: `cuInit` succeeds
/// and `cuDeviceGetCount` counts at least one device. The error starts with "no CUDA
/// driver found" (or "no CUDA device found") and says why.
pub fn check_cuda_driver() -> Result<(), String> {
    check_cuda_driver_in(CUDA_DRIVER)
}

/// [`check_cuda_driver`] with the driver library `library`.
#[cfg(unix)]
pub fn check_cuda_driver_in(library: &str) -> Result<(), String> {
    use std::ffi::{c_int, c_uint, CStr, CString};

    let no_driver = |why: String| format!("no CUDA driver found: {why}; --backend cuda needs an NVIDIA GPU with its driver installed");
    let name = CString::new(library).map_err(|_| no_driver(format!("{library:?} is not a library name")))?;
    // SAFETY: dlopen with a NUL-terminated name; dlerror's message is read before any
    // other dl call.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated message.
        let why = unsafe { libc::dlerror() };
        let why = match why.is_null() {
            true => "unknown error".to_string(),
            false => unsafe { CStr::from_ptr(why) }.to_string_lossy().into_owned(),
        };
        return Err(no_driver(format!("{library} cannot be loaded ({why})")));
    }
    let symbol = |name: &CStr| {
        // SAFETY: a symbol lookup in a handle that is open.
        let ptr = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!ptr.is_null()).then_some(ptr)
    };
    let result = match (symbol(c"cuInit"), symbol(c"cuDeviceGetCount")) {
        (Some(init), Some(count)) => {
            // SAFETY: the CUDA driver API's signatures: CUresult cuInit(unsigned int) and
            // CUresult cuDeviceGetCount(int *).
            let init: extern "C" fn(c_uint) -> c_int = unsafe { std::mem::transmute(init) };
            let count: extern "C" fn(*mut c_int) -> c_int = unsafe { std::mem::transmute(count) };
            let mut devices: c_int = 0;
            match init(0) {
                0 if count(&mut devices) == 0 && devices > 0 => Ok(()),
                0 => Err(format!("no CUDA device found: the driver {library} counts {devices} GPUs")),
                code => Err(format!("no CUDA device found: cuInit of {library} failed with CUDA error {code}")),
            }
        }
        _ => Err(no_driver(format!("{library} has no cuInit / cuDeviceGetCount (not the CUDA driver)"))),
    };
    // The CUDA driver stays loaded for the runtime; anything else is closed.
    if result.is_err() {
        // SAFETY: closes the handle opened above, no longer used.
        unsafe { libc::dlclose(handle) };
    }
    result
}

/// Elsewhere the runtime reports a missing driver itself.
#[cfg(not(unix))]
pub fn check_cuda_driver_in(_library: &str) -> Result<(), String> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A driver library that does not exist, or one that is not the CUDA driver, is an
    /// error naming it; on a machine without the driver (such as CI's) the real probe is
    /// the same error.
    #[test]
    fn a_missing_driver_is_an_error_naming_it() {
        let err = check_cuda_driver_in("libdsa-no-such-driver.so.1").unwrap_err();
        assert!(err.starts_with("no CUDA driver found: libdsa-no-such-driver.so.1 cannot be loaded (") && err.ends_with("--backend cuda needs an NVIDIA GPU with its driver installed"), "{err}");
        let err = check_cuda_driver_in("libc.so.6").unwrap_err();
        assert!(err.contains("libc.so.6 has no cuInit"), "{err}");
        match check_cuda_driver() {
            Ok(()) => println!("this machine has a CUDA driver and a GPU"),
            Err(e) => assert!(e.starts_with("no CUDA driver found: libcuda.so.1 cannot be loaded") || e.starts_with("no CUDA device found"), "{e}"),
        }
    }
}
