//! Random bytes from the kernel.

use std::io;

/// Fills `buf` with bytes from the kernel's random number generator (`getrandom(2)`, or
/// `/dev/urandom` on a kernel without that call).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, a buffer we hold
        // exclusively for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n >= 0 {
            filled += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                use std::io::Read;
                return std::fs::File::open("/dev/urandom")?.read_exact(rest);
            }
            _ => return Err(err),
        }
    }
    Ok(())
}
