//! What a process knows about itself and its family: [`ProcessInfo`], [`AuthKey`],
//! `current_process`, `parent_pid`, `current_start_method`, `active_children`, `cpu_count`.

use std::fmt;

use super::runtime;
use super::StartMethod;
use crate::sys;

/// The secret of a process family (CPython's `current_process().authkey`): 32 random bytes
/// made by the first process (from the kernel's `getrandom`) and inherited by every process it
/// starts, under every start method (fork copies it; spawn and forkserver children get it in
/// their private bootstrap message, never through the environment).
///
/// multiproc uses it to authenticate the function references that travel between processes
/// (a task's function, a [`Barrier`](crate::Barrier)'s action): each carries an HMAC-SHA256
/// tag made with this key, and a reference whose tag does not verify is refused with
/// [`Error::UnauthenticatedFunction`](crate::Error::UnauthenticatedFunction) instead of being
/// called. `Debug` does not show the bytes.
///
/// # Examples
///
/// ```
/// fn key(_: ()) -> [u8; 32] { *multiproc::current_process().authkey().as_bytes() }
///
/// let mine = *multiproc::current_process().authkey().as_bytes();
/// let mut child = multiproc::Process::spawn(key, ()).unwrap();
/// assert_eq!(child.join().unwrap(), mine);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    /// The length of a key in bytes.
    pub const LEN: usize = 32;

    /// A key from the kernel's random number generator.
    pub(crate) fn random() -> AuthKey {
        let mut key = [0u8; AuthKey::LEN];
        if sys::random_bytes(&mut key).is_err() {
            // Not reached on Linux >= 3.17 (getrandom) or with /dev/urandom readable: then
            // std's hasher keys (themselves from the OS) are the best source left.
            use std::hash::{BuildHasher, Hasher};
            for chunk in key.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(sys::getpid() as u32);
                chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
            }
        }
        AuthKey(key)
    }

    /// A key with these bytes (as received in a bootstrap message).
    pub(crate) fn from_bytes(bytes: [u8; AuthKey::LEN]) -> AuthKey {
        AuthKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; AuthKey::LEN] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// A process as `current_process()` and `active_children()` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The OS process id.
    pub pid: u32,
    /// Its name: `"MainProcess"`, `"Process-1"`, `"Process-1:2"`, or what the builder set.
    pub name: String,
    /// Whether it dies with its parent.
    pub daemon: bool,
    /// The process family's key (the same for a parent and every child it starts).
    pub(super) authkey: AuthKey,
}

impl ProcessInfo {
    /// The key of this process's family (CPython's `Process.authkey`), inherited by children.
    /// See [`AuthKey`].
    ///
    /// # Examples
    ///
    /// ```
    /// let key = multiproc::current_process().authkey();
    /// assert_ne!(key.as_bytes(), &[0u8; 32]);
    /// ```
    pub fn authkey(&self) -> AuthKey {
        self.authkey
    }
}

/// The calling process: its pid, name, daemon flag and family key
/// (`multiprocessing.current_process()`).
///
/// # Examples
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// assert!(!me.daemon);
/// ```
pub fn current_process() -> ProcessInfo {
    let rt = runtime::runtime();
    ProcessInfo {
        pid: rt.pid() as u32,
        name: rt.identity().name.clone(),
        daemon: rt.identity().daemon,
        authkey: rt.identity().authkey,
    }
}

/// The pid of the process that started this one with multiproc, or `None` in a process that
/// multiproc did not start (CPython's `parent_process()` is `None` there too). For a forkserver
/// child this is the process that asked for it, not the server.
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::parent_pid(), None);
/// fn parent(_: ()) -> Option<u32> { multiproc::parent_pid() }
/// let mut p = multiproc::Process::spawn(parent, ()).unwrap();
/// assert_eq!(p.join().unwrap(), Some(std::process::id()));
/// ```
pub fn parent_pid() -> Option<u32> {
    runtime::runtime().identity().parent_pid
}

/// The start method that started this process, or `None` in a process multiproc did not start.
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::current_start_method(), None);
/// ```
pub fn current_start_method() -> Option<StartMethod> {
    runtime::runtime().identity().start_method
}

/// The children of this process that are still running (`multiprocessing.active_children()`).
/// Children that have finished are reaped on the way, so calling this also clears zombies.
///
/// # Examples
///
/// ```
/// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
/// let mut p = multiproc::Process::spawn(nap, 200).unwrap();
/// assert!(multiproc::active_children().iter().any(|c| c.pid == p.pid()));
/// p.join().unwrap();
/// assert!(!multiproc::active_children().iter().any(|c| c.pid == p.pid()));
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    runtime::runtime().active_children()
}

/// The number of CPUs the system has (`multiprocessing.cpu_count()`), at least 1.
///
/// # Examples
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    num_cpus::get().max(1)
}
