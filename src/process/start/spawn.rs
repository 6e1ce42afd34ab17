//! The spawn start method: `posix_spawn` of the running binary, which runs the child side from
//! a pre-main hook (`crate::process::bootstrap`) and never reaches `main`.
//!
//! The child's socket is placed at descriptor 3 and every other descriptor above 2 is closed
//! in the child (`posix_spawn_file_actions_addclosefrom_np`), so unrelated inheritable
//! descriptors of the parent do not leak into it (CPython's `TestCloseFds`).

use std::os::fd::{AsFd, OwnedFd};

use super::Started;
use super::{child_argv, environment_with, SELF_EXE};
use crate::process::bootstrap::CHILD_FD;
use crate::{sys, Error};

/// Re-executes this binary as a child that will read its bootstrap from `child_end`.
pub(crate) fn start(child_end: OwnedFd, nonce: u64) -> Result<Started, Error> {
    let env = environment_with(format!("child:{}:{nonce}", sys::getpid()));
    let pid = sys::spawn(
        SELF_EXE,
        &child_argv(),
        &env,
        &[(child_end.as_fd(), CHILD_FD)],
    )
    .map_err(Error::os("posix_spawn"))?;
    drop(child_end);
    Started::own_child(pid)
}
