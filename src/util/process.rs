//! Who this process is: the effective uid that files the daemon trusts
//! (its log file, its store) must belong to.

/// The effective uid of this process.
#[allow(unsafe_code)]
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}
