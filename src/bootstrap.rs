//! How a child process finds its function and arguments, runs it, and reports back.
//!
//! # Finding `f`
//! Every start method runs the *same binary*, so a function is named by its address relative to
//! [`anchor`], a function of this crate: ASLR moves both by the same amount. Because `A` and
//! `R` are generic, the parent also sends the offset of the monomorphised [`trampoline::<A, R>`],
//! which decodes `A`, calls `f` under `catch_unwind` and encodes the outcome. Before calling
//! anything by offset the child checks that it is the same executable as its parent
//! ((device, inode, size, mtime) of `/proc/self/exe`: rustc emits no build-id of its own).
//!
//! # Getting there without a line in `main`
//! A spawned child re-executes `/proc/self/exe` with `MULTIPROC_BOOTSTRAP` in its environment.
//! A pre-main constructor ([`pre_main`], an `.init_array` entry made by the `ctor` crate) sees
//! the marker, removes it from the environment at once (so it never leaks into a grandchild or
//! a later program), runs the child side and `_exit`s: the program's `main` — or the test
//! harness — never starts in the child, so there is no fork bomb and no setup call. The marker
//! names the parent's pid; a marker left over from elsewhere (its pid is not our parent) is
//! ignored and `main` runs normally. The same constructor starts the forkserver.
//!
//! Inside the constructor the Rust runtime has not run its own start-up; we read the marker
//! from the C environment, set `SIGPIPE` to ignored as the runtime would, and flush stdout and
//! stderr before `_exit` (DESIGN §9 lists what was verified to work there).
//!
//! # The messages
//! Parent → child, one frame on the child's socket: a 4-byte little-endian header length, the
//! pickled [`Header`], then the pickled arguments; descriptors of handles inside the header
//! (the parent-alive pipe) and the arguments ride along. Child → parent, one frame: tag 0 and
//! the pickled result (with any handles in it), or tag 1 and a pickled [`Failure`].

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, FdTable, Handle};
use crate::connection::Connection;
use crate::process::runtime::{self, Identity};
use crate::process::StartMethod;
use crate::{sys, Error};

/// The environment variable that turns a re-executed binary into a child or a forkserver.
pub(crate) const MARKER: &std::ffi::CStr = c"MULTIPROC_BOOTSTRAP";
pub(crate) const MARKER_NAME: &str = "MULTIPROC_BOOTSTRAP";
/// Where a spawned child finds its socket, and a forkserver its control socket and alive pipe.
pub(crate) const CHILD_FD: RawFd = 3;
pub(crate) const ALIVE_FD: RawFd = 4;

const TAG_RETURNED: u8 = 0;
const TAG_FAILED: u8 = 1;

/// What a child runs: decode the arguments, call `f`, encode the outcome.
pub(crate) type Trampoline = fn(usize, &[u8], &mut FdTable) -> Outcome;

/// What the parent tells the child, beside the arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) nonce: u64,
    pub(crate) exe: [i64; 5],
    pub(crate) trampoline: i64,
    pub(crate) function: i64,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: i32,
    pub(crate) start_method: StartMethod,
    pub(crate) alive: Handle,
}

/// Why a child produced no result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked {
        message: String,
        location: Option<String>,
    },
    ArgsUndecodable(String),
    ResultUnencodable(String),
    Refused(String),
}

/// The outcome of running the trampoline, still in the child.
pub(crate) enum Outcome {
    Returned(Vec<u8>, Vec<OwnedFd>),
    Failed(Failure),
}

/// A fixed point of this crate's code that function addresses are measured from.
#[inline(never)]
fn anchor() -> u64 {
    std::hint::black_box(0x6d75_6c74_6970_726f)
}

pub(crate) fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor as fn() -> u64 as usize) as i64
}

fn address_at(offset: i64) -> usize {
    (anchor as fn() -> u64 as usize).wrapping_add(offset as usize)
}

/// Decodes `A`, runs `f`, encodes `R`. Monomorphised per `(A, R)` in the parent; the child
/// reaches it by offset.
pub(crate) fn trampoline<A: DeserializeOwned, R: Serialize>(
    function: usize,
    args: &[u8],
    fds: &mut FdTable,
) -> Outcome {
    let args: A = match codec::decode_in(args, fds) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(Failure::ArgsUndecodable(e.to_string())),
    };
    // SAFETY: `function` is the address of an `fn(A) -> R` in this same executable: the parent
    // took it from a value of that type, sent it together with the address of this very
    // monomorphisation of the trampoline, and `run` verified the executable's identity first.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(function) };
    match panic::catch_unwind(AssertUnwindSafe(move || f(args))) {
        Ok(result) => {
            let mut fds = Vec::new();
            match codec::encode_in(&result, &mut fds) {
                Ok(bytes) => Outcome::Returned(bytes, fds),
                Err(e) => Outcome::Failed(Failure::ResultUnencodable(e.to_string())),
            }
        }
        Err(payload) => Outcome::Failed(Failure::Panicked {
            message: panic_message(payload.as_ref()),
            location: PANIC_LOCATION
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        }),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

/// The pre-main entry point: turns this process into a child or a forkserver if the marker
/// says so; otherwise returns and `main` runs.
#[ctor::ctor(unsafe)]
fn pre_main() {
    let Some(marker) = sys::take_env(MARKER) else {
        return;
    };
    let fields: Vec<&str> = marker.split(':').collect();
    let parent: Option<i32> = fields.get(1).and_then(|p| p.parse().ok());
    if parent != Some(sys::getppid()) {
        // Left over from another process tree (e.g. exported by hand): not for us.
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: ignoring {MARKER_NAME}={marker}: it was not set by this process's parent"
        );
        return;
    }
    sys::ignore_sigpipe();
    match (fields[0], fields.get(2).and_then(|n| n.parse::<u64>().ok())) {
        ("child", Some(nonce)) => {
            // SAFETY: the parent placed our socket at CHILD_FD with posix_spawn; nothing else
            // in this fresh process owns it.
            let conn = unsafe { sys::own_fd(CHILD_FD) };
            run(conn, Some(nonce))
        }
        ("forkserver", Some(_)) => {
            // SAFETY: as above, for the control socket and the alive pipe.
            let (control, alive) = unsafe { (sys::own_fd(CHILD_FD), sys::own_fd(ALIVE_FD)) };
            crate::process::start::forkserver::serve(control, alive)
        }
        _ => {
            let _ = writeln!(std::io::stderr(), "multiproc: malformed {MARKER_NAME}={marker}");
            sys::exit_immediately(1)
        }
    }
}

/// The child side, for every start method: read the bootstrap message from `socket`, run the
/// function, send the outcome, exit. `expected_nonce` is the nonce from a spawn marker.
pub(crate) fn run(socket: OwnedFd, expected_nonce: Option<u64>) -> ! {
    let conn = Connection::from_fd(socket);
    let (code, failure) = match receive_and_run(&conn, expected_nonce) {
        Ok((code, outcome)) => (code, send_outcome(&conn, outcome).err()),
        Err(failure) => {
            let _ = send_outcome(&conn, Outcome::Failed(Failure::Refused(failure.clone())));
            (1, Some(Error::InvalidArgument(failure)))
        }
    };
    if let Some(err) = failure {
        let _ = writeln!(std::io::stderr(), "multiproc child {}: {err}", sys::getpid());
    }
    drop(conn);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_immediately(code)
}

/// Returns the exit code and the outcome, or why the function could not be run at all.
fn receive_and_run(conn: &Connection, expected_nonce: Option<u64>) -> Result<(i32, Outcome), String> {
    let (frame, fds) = conn
        .recv_raw()
        .map_err(|e| format!("no bootstrap message from the parent: {e}"))?;
    let header_len = frame
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|&n| frame.len() >= 4 + n)
        .ok_or("truncated bootstrap message")?;
    let mut table = FdTable::new(fds);
    let header: Header =
        codec::decode_in(&frame[4..4 + header_len], &mut table).map_err(|e| e.to_string())?;
    if expected_nonce.is_some_and(|n| n != header.nonce) {
        return Err("the bootstrap message does not match this child's marker".into());
    }
    let exe = sys::exe_identity().map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
    if exe != header.exe {
        return Err(
            "this executable is not the parent's, so it cannot find the function by address \
             (was the binary rebuilt, or another executable set?)"
                .into(),
        );
    }
    runtime::install_child(Identity {
        name: header.name,
        daemon: header.daemon,
        parent_pid: Some(header.parent_pid as u32),
        start_method: Some(header.start_method),
    });
    if header.daemon {
        watch_parent(header.alive.0);
    } else {
        drop(header.alive);
    }
    install_panic_hook();
    // SAFETY: the address is that of a `Trampoline` in this same executable (identity checked
    // above): the parent computed the offset from `trampoline::<A, R> as Trampoline`.
    let trampoline =
        unsafe { std::mem::transmute::<usize, Trampoline>(address_at(header.trampoline)) };
    let outcome = trampoline(address_at(header.function), &frame[4 + header_len..], &mut table);
    let code = match outcome {
        Outcome::Failed(Failure::Panicked { .. }) => 1,
        Outcome::Failed(_) => 1,
        Outcome::Returned(..) => 0,
    };
    Ok((code, outcome))
}

fn send_outcome(conn: &Connection, outcome: Outcome) -> Result<(), Error> {
    match outcome {
        Outcome::Returned(bytes, fds) => conn.send_parts(&[&[TAG_RETURNED], &bytes], &fds),
        Outcome::Failed(failure) => {
            let bytes = codec::encode(&failure)?;
            conn.send_parts(&[&[TAG_FAILED], &bytes], &[])
        }
    }
}

/// Records where a panic happened, then lets the previous hook (the default one prints the
/// message to stderr) run as usual.
fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Some(loc) = info.location() {
            *PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()) = Some(loc.to_string());
        }
        previous(info);
    }));
}

/// A daemon child dies with its parent: a thread blocks reading the parent's alive pipe, which
/// nobody writes; end of stream means every copy of the write end is closed, i.e. the parent
/// is gone, however it died (`PR_SET_PDEATHSIG` would fire on the exit of the *thread* that
/// started us instead).
fn watch_parent(alive: OwnedFd) {
    let watcher = std::thread::Builder::new()
        .name("multiproc-parent-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 1];
            loop {
                match nix::unistd::read(alive.as_fd(), &mut buf) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => sys::raise_signal(libc::SIGKILL),
                }
            }
        });
    if watcher.is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: cannot start the parent watcher; this daemon may outlive its parent"
        );
    }
}

/// The parent's reading of the child's one message.
pub(crate) enum Report {
    /// The whole frame (the pickled result starts at byte 1, after the tag: slicing it there
    /// avoids copying a large result) and the handles that came with it.
    Returned(Vec<u8>, Vec<OwnedFd>),
    Failed(Failure),
}

/// Parses the child's message.
pub(crate) fn parse_report(frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<Report, Error> {
    match frame.first() {
        Some(&TAG_RETURNED) => Ok(Report::Returned(frame, fds)),
        Some(&TAG_FAILED) => Ok(Report::Failed(codec::decode(&frame[1..])?)),
        _ => Err(Error::InvalidArgument(
            "the child sent a malformed report".into(),
        )),
    }
}
