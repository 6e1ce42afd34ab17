//! Per-process state: who this process is, its children, its parent-alive pipe, its reaper.
//!
//! Who it is includes the family's [`AuthKey`]: the first process (the one multiproc did not
//! start) makes it from the kernel's random numbers when its state is first published; a child
//! gets its parent's (copied into the state `prepare` makes in the parent for a fork child,
//! carried in the bootstrap message for spawn and forkserver children) and never changes it.
//!
//! A forked child inherits a copy of all of this but owns none of it: the children are its
//! siblings, the reaper thread does not exist in it, and a lock may have been held by a thread
//! that is gone. So the state hangs off one atomic pointer stamped with the owning pid, and a
//! process whose pid does not match builds fresh state. [`after_fork_in_child`] clears the
//! pointer and closes the inherited write end of the parent's alive pipe, using only
//! async-signal-safe calls. The old copy is leaked, deliberately: dropping it would run
//! destructors on state that belongs to the parent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use super::child::ChildShared;
use super::{AuthKey, ProcessInfo, StartMethod};
use crate::sys;

/// Who this process is, as `current_process()` reports it.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: Option<u32>,
    pub(crate) start_method: Option<StartMethod>,
    /// The process family's key: made by the first process, inherited by every child.
    pub(crate) authkey: AuthKey,
}

pub(crate) struct Runtime {
    pid: libc::pid_t,
    identity: Identity,
    next_child: AtomicU64,
    /// The parent-alive pipe: children (and the forkserver) hold the read end and see end of
    /// stream when this process dies, however it dies (DESIGN §3). Made on first use.
    alive: OnceLock<(OwnedFd, OwnedFd)>,
    children: Mutex<Vec<Arc<ChildShared>>>,
    reaper: OnceLock<Mutex<Sender<Arc<ChildShared>>>>,
    reaper_wake: OnceLock<OwnedFd>,
    pub(crate) forkserver: Mutex<Option<super::start::forkserver::Server>>,
    /// How fork children report (see `process::reports`). Made on the first fork.
    fork_reports: OnceLock<super::ForkReports>,
}

/// The current state (a leaked `Runtime`) lives in `sys::FORK_PAGE.runtime`, and the write end
/// of this process's alive pipe in `sys::FORK_PAGE.alive_write_fd`, for
/// [`after_fork_in_child`] to close.
fn runtime_ptr() -> *mut Runtime {
    sys::FORK_PAGE.runtime.load(Ordering::Acquire).cast()
}

/// The state of the calling process, made on first use.
pub(crate) fn runtime() -> &'static Runtime {
    let pid = sys::getpid();
    let current = runtime_ptr();
    // SAFETY: a non-null pointer in RUNTIME came from Box::into_raw below and is never freed.
    if let Some(rt) = unsafe { current.as_ref() } {
        if rt.pid == pid {
            return rt;
        }
    }
    publish_main()
}

/// A child's state, made before the child exists (a fork child then allocates nothing for it:
/// every allocation in a fork child is a copy-on-write page fault).
pub(crate) struct Prepared(Box<Runtime>);

/// Makes the state a child will install.
pub(crate) fn prepare(identity: Identity) -> Prepared {
    Prepared(Box::new(Runtime::new(0, identity)))
}

/// Installs a child's prepared state, replacing whatever state this pid has (a child's
/// bootstrap calls this before running its function).
pub(crate) fn install_child(prepared: Prepared) -> &'static Runtime {
    let mut fresh = prepared.0;
    fresh.pid = sys::getpid();
    let fresh = Box::into_raw(fresh);
    sys::FORK_PAGE
        .runtime
        .store(fresh.cast(), Ordering::Release);
    // SAFETY: just published, never freed.
    unsafe { &*fresh }
}

/// Publishes the state of a process multiproc did not start ("MainProcess"); if another
/// thread of this process published first, its state wins.
fn publish_main() -> &'static Runtime {
    let pid = sys::getpid();
    let identity = Identity {
        name: "MainProcess".into(),
        daemon: false,
        parent_pid: None,
        start_method: None,
        // The first process of a family makes the key. A thread that loses the race below
        // drops its key with its state: the published one is the family's.
        authkey: AuthKey::random(),
    };
    let fresh = Box::into_raw(Box::new(Runtime::new(pid, identity)));
    loop {
        let current = runtime_ptr();
        // SAFETY: a non-null pointer in the runtime slot is a leaked Runtime, never freed.
        if let Some(rt) = unsafe { current.as_ref() }.filter(|rt| rt.pid == pid) {
            // SAFETY: `fresh` came from Box::into_raw above and was never shared.
            drop(unsafe { Box::from_raw(fresh) });
            return rt;
        }
        if sys::FORK_PAGE
            .runtime
            .compare_exchange(
                current.cast(),
                fresh.cast(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            // SAFETY: `fresh` is now published and never freed.
            return unsafe { &*fresh };
        }
    }
}

/// Called in a forked child before anything else: forget the parent's state and close the
/// parent's alive write end, so that this child (and its children) see the parent die.
/// Async-signal-safe: atomics and `close` only.
pub(crate) fn after_fork_in_child() {
    sys::FORK_PAGE
        .runtime
        .store(std::ptr::null_mut(), Ordering::Release);
    let fd = sys::FORK_PAGE.alive_write_fd.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        sys::close_raw(fd);
    }
}

impl Runtime {
    fn new(pid: libc::pid_t, identity: Identity) -> Runtime {
        Runtime {
            pid,
            identity,
            next_child: AtomicU64::new(1),
            alive: OnceLock::new(),
            children: Mutex::new(Vec::new()),
            reaper: OnceLock::new(),
            reaper_wake: OnceLock::new(),
            forkserver: Mutex::new(None),
            fork_reports: OnceLock::new(),
        }
    }

    /// The report channel of fork children, made on first use.
    pub(crate) fn fork_reports(&'static self) -> std::io::Result<&'static super::ForkReports> {
        if let Some(reports) = self.fork_reports.get() {
            return Ok(reports);
        }
        let fresh = super::ForkReports::new()?;
        // Another thread may have made one first: then ours is dropped and theirs used.
        let _ = self.fork_reports.set(fresh);
        Ok(self
            .fork_reports
            .get()
            .expect("fork report channel was just set"))
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Python's default names: `Process-N` for children of the main process, `Parent:N` below.
    pub(crate) fn next_child_name(&self) -> String {
        let n = self.next_child.fetch_add(1, Ordering::Relaxed);
        if self.identity.parent_pid.is_none() {
            format!("Process-{n}")
        } else {
            format!("{}:{n}", self.identity.name)
        }
    }

    /// The read end of the alive pipe, made on first use.
    pub(crate) fn alive_reader(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some((r, _)) = self.alive.get() {
            return Ok(r.as_fd());
        }
        let (r, w) = sys::pipe()?;
        let raw_w = w.as_raw_fd();
        if self.alive.set((r, w)).is_ok() {
            sys::FORK_PAGE
                .alive_write_fd
                .store(raw_w, Ordering::Release);
        }
        Ok(self
            .alive
            .get()
            .map(|(r, _)| r.as_fd())
            .expect("alive pipe was just set"))
    }

    pub(crate) fn register(&self, child: Arc<ChildShared>) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
    }

    pub(crate) fn unregister(&self, pid: libc::pid_t) {
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.pid() != pid);
    }

    /// `active_children()`: reaps the finished children and lists the others.
    pub(crate) fn active_children(&self) -> Vec<ProcessInfo> {
        // Fork children blocked on a full shared report socket end once it is drained.
        if let Some(reports) = self.fork_reports.get() {
            reports.drain(None);
        }
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|c| c.try_status().is_none());
        children.iter().map(|c| c.info()).collect()
    }

    /// Hands a child whose handle was dropped un-joined to the reaper thread, so it never
    /// lingers as a zombie.
    pub(crate) fn reap_later(&'static self, child: Arc<ChildShared>) {
        let sender = self.reaper.get_or_init(|| Mutex::new(self.start_reaper()));
        let sent = sender.lock().unwrap_or_else(|e| e.into_inner()).send(child);
        if sent.is_ok() {
            if let Some(wake) = self.reaper_wake.get() {
                let _ = sys::send_all(wake.as_fd(), &[&[1]], &[]);
            }
        }
    }

    fn start_reaper(&'static self) -> Sender<Arc<ChildShared>> {
        let (tx, rx) = channel::<Arc<ChildShared>>();
        // Without a wake-up socket the reaper still works, by polling its children each second.
        let wake = match sys::stream_pair() {
            Ok((r, w)) => {
                let _ = self.reaper_wake.set(w);
                Some(r)
            }
            Err(_) => None,
        };
        // If no thread can be started, dropped children stay registered and are reaped by
        // the next `active_children()`.
        let _ = std::thread::Builder::new()
            .name("multiproc-reaper".into())
            .spawn(move || reaper_loop(self, rx, wake));
        tx
    }
}

fn reaper_loop(
    rt: &'static Runtime,
    rx: std::sync::mpsc::Receiver<Arc<ChildShared>>,
    wake: Option<OwnedFd>,
) {
    let mut pending: Vec<Arc<ChildShared>> = Vec::new();
    loop {
        while let Ok(child) = rx.try_recv() {
            pending.push(child);
        }
        pending.retain(|c| {
            if c.try_status().is_some() {
                rt.unregister(c.pid());
                false
            } else {
                true
            }
        });
        let mut fds: Vec<RawFd> = wake.iter().map(|w| w.as_raw_fd()).collect();
        // Fork children report on a shared socket; one whose handle was dropped could block on
        // it when it is full, and never end: keep it drained (see `process::reports`).
        let reports = rt.fork_reports.get();
        fds.extend(reports.map(|r| r.recv_fd().as_raw_fd()));
        fds.extend(pending.iter().map(|c| c.ready_fd().as_raw_fd()));
        // With nothing pending, sleep until woken; otherwise also wake now and then in case a
        // forkserver died and a child must be watched by its pidfd instead.
        let timeout = if pending.is_empty() && wake.is_some() {
            -1
        } else {
            1000
        };
        let ready = sys::poll_readable(&fds, timeout).unwrap_or_default();
        if let Some(reports) = reports {
            if ready.contains(&usize::from(wake.is_some())) {
                reports.drain(None);
            }
        }
        if let (Some(w), true) = (&wake, ready.contains(&0)) {
            let mut drain = [0u8; 64];
            let _ = nix::unistd::read(w, &mut drain);
        }
    }
}
