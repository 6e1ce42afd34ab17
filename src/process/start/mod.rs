//! The three start methods. Each turns a socket end into a running child that will read its
//! bootstrap message from that socket (see `crate::process::bootstrap`); only how the process comes to
//! exist differs.

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;

use crate::process::bootstrap::MARKER_NAME;
use crate::sys;
use crate::Error;

/// The environment for a re-executed child: ours, plus the bootstrap marker.
fn environment_with(marker: String) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != MARKER_NAME)
        .filter_map(|(k, v)| {
            let mut entry: OsString = k;
            entry.push("=");
            entry.push(v);
            CString::new(entry.into_vec()).ok()
        })
        .collect();
    env.extend(CString::new(format!("{MARKER_NAME}={marker}")).ok());
    env
}

/// `argv` for a re-executed child: our own `argv[0]`, so `ps` shows the program's name.
fn child_argv() -> Vec<CString> {
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| CString::new(a.into_vec()).ok())
        .unwrap_or_else(|| c"multiproc-child".to_owned());
    vec![argv0]
}

/// What we execute: the running binary itself, by the kernel's link to it, which keeps
/// working even if the file was replaced or deleted since we started (DESIGN §9).
const SELF_EXE: &std::ffi::CStr = c"/proc/self/exe";

/// What a start method hands back: the child's pid and pidfd, and for forkserver children the
/// socket on which the server reports the exit status.
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    pub(crate) status_socket: Option<OwnedFd>,
}

impl Started {
    /// A child of this very process (fork, spawn): we hold its pidfd and reap it ourselves.
    /// If no pidfd can be had, the child is killed and reaped rather than left untracked.
    pub(crate) fn own_child(pid: libc::pid_t) -> Result<Started, Error> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(Started {
                pid,
                pidfd,
                status_socket: None,
            }),
            Err(e) => {
                // ESRCH: already gone and reaped by someone else (SIGCHLD ignored); its pid may
                // be recycled, so it must not be signalled.
                if e.raw_os_error() != Some(libc::ESRCH) {
                    sys::kill_and_reap(pid);
                }
                Err(Error::Os {
                    op: "pidfd_open",
                    source: e.into(),
                })
            }
        }
    }
}
