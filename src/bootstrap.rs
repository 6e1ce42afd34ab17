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
//! # Authenticated function references
//! An offset read from bytes another process wrote must not let safe code jump to an
//! arbitrary address. So every function reference that crosses a process boundary (the
//! bootstrap [`Header`], a pool task's [`Entry`], a `Barrier`'s action as [`SharedFn`])
//! carries a tag: HMAC-SHA256, truncated to 128 bits, over the kind of reference, the
//! executable's identity and the offsets, keyed with the process family's
//! [`AuthKey`](crate::AuthKey) (made by the first process, inherited by every child: in memory
//! under fork, in the bootstrap message under spawn and forkserver). A reference is turned back
//! into a pointer only through [`Entry::verify`] (or [`Verifier`], which remembers the entries
//! it verified so that a pool worker pays for one HMAC per distinct function, not per task)
//! and [`SharedFn`]'s `Deserialize`, which check the tag first; a forged or foreign reference
//! is [`Error::UnauthenticatedFunction`] and nothing is called. Every cast of a number to a
//! function pointer is in one function, [`resolve`], and it takes a [`FnAddress`], which only
//! a verified reference (or a real function of this process) can make.
//!
//! The bootstrap message itself is trusted as the channel that brings a spawn or forkserver
//! child its key: it arrives on a private socket that only the parent held (a spawn child's
//! also repeats the nonce of its marker); its header's reference is still checked, with the
//! key it brings, through the same path.
//!
//! # Getting there without a line in `main`
//! A spawned child re-executes `/proc/self/exe` with `MULTIPROC_BOOTSTRAP` in its environment.
//! A pre-main constructor ([`pre_main`], an `.init_array` entry made by the `ctor` crate) sees
//! the marker, removes it from the environment at once (so it never leaks into a grandchild or
//! a later program), runs the child side and `_exit`s: the program's `main` — or the test
//! harness — never starts in the child, so there is no fork bomb and no setup call. The marker
//! carries a nonce that the bootstrap message must repeat; a marker that reached a process
//! multiproc did not start (no bootstrap socket at descriptor 3) stops it with a message
//! saying to unset the variable, rather than letting `main` run as if nothing happened. The
//! same constructor starts the forkserver.
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
use std::sync::{Mutex, TryLockError};

use std::cell::{Cell, RefCell};

use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::codec::{self, FdTable};
use crate::connection::Connection;
use crate::process::runtime::{self, Identity};
use crate::process::{AuthKey, StartMethod};
use crate::{sys, Error};

/// The environment variable that turns a re-executed binary into a child or a forkserver.
pub(crate) const MARKER: &std::ffi::CStr = c"MULTIPROC_BOOTSTRAP";
pub(crate) const MARKER_NAME: &str = "MULTIPROC_BOOTSTRAP";
/// Where a spawned child finds its socket, and a forkserver its control socket and alive pipe.
pub(crate) const CHILD_FD: RawFd = 3;
pub(crate) const ALIVE_FD: RawFd = 4;

const TAG_RETURNED: u8 = 0;
const TAG_FAILED: u8 = 1;
/// Set on the tag when the body is in a memfd, the last descriptor of the message.
const IN_MEMFD: u8 = 0x80;

/// Report bodies (a result, or a failure such as a long panic message) up to this size travel
/// inline; larger ones in a memfd. Either way the
/// report message stays small enough to sit in the socket buffer, so a child never blocks
/// writing it and can always exit at once, and the parent waits for one event, the exit,
/// instead of two (the report, then the exit): one wake-up fewer per process.
pub(crate) const INLINE_RESULT_MAX: usize = 16 * 1024;

/// What a child runs: decode the arguments, call `f`, encode the outcome.
pub(crate) type Trampoline = fn(FnAddress, &[u8], &mut FdTable) -> Outcome;

/// The address of a function in this process, which only a verified reference or a real
/// function of this process can make: what [`resolve`] takes.
#[derive(Clone, Copy)]
pub(crate) struct FnAddress(usize);

/// The one place where a number becomes a function pointer.
///
/// # Safety
/// `address` must be the address of a function of type `F` in this process: made from a
/// reference whose tag verified (the family's processes tag only offsets taken from functions,
/// paired with the trampoline that expects their type), or from a function of type `F` here.
unsafe fn resolve<F: Copy>(address: FnAddress) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    // SAFETY: per this function's contract `address.0` is the address of an `F`, a function
    // pointer type (pointer-sized, checked above).
    unsafe { std::mem::transmute_copy::<usize, F>(&address.0) }
}

/// What the parent tells a spawn or forkserver child, beside the arguments. Encoded by hand
/// (fixed-width little-endian fields, then the name) rather than pickled: the child decodes
/// it before anything else, and serde-pickle's value tree would cost it allocations (each one a
/// copy-on-write page fault in a forked child). The parent-alive pipe is the last descriptor
/// of the message.
#[derive(Debug, PartialEq)]
pub(crate) struct Header {
    pub(crate) nonce: u64,
    pub(crate) exe: [i64; 5],
    /// The trampoline and the function, tagged with `authkey`.
    pub(crate) entry: Entry,
    /// The family's key, which the child adopts.
    pub(crate) authkey: [u8; AuthKey::LEN],
    pub(crate) parent_pid: i32,
    pub(crate) daemon: bool,
    pub(crate) start_method: StartMethod,
    pub(crate) name: String,
}

impl Header {
    const FIXED: usize = 8 + 5 * 8 + Entry::LEN + AuthKey::LEN + 4 + 1 + 1 + 4;

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED + self.name.len());
        out.extend_from_slice(&self.nonce.to_le_bytes());
        for field in self.exe {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&self.entry.to_bytes());
        out.extend_from_slice(&self.authkey);
        out.extend_from_slice(&self.parent_pid.to_le_bytes());
        out.push(self.daemon as u8);
        out.push(self.start_method as u8);
        out.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Header> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let nonce = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut exe = [0i64; 5];
        for field in &mut exe {
            *field = i64::from_le_bytes(take(8)?.try_into().ok()?);
        }
        let entry = Entry::from_bytes(take(Entry::LEN)?.try_into().ok()?);
        let authkey = take(AuthKey::LEN)?.try_into().ok()?;
        let parent_pid = i32::from_le_bytes(take(4)?.try_into().ok()?);
        let daemon = take(1)?[0] != 0;
        let start_method = match take(1)?[0] {
            m if m == StartMethod::Fork as u8 => StartMethod::Fork,
            m if m == StartMethod::Spawn as u8 => StartMethod::Spawn,
            _ => StartMethod::Forkserver,
        };
        let name_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(name_len)?.to_vec()).ok()?;
        Some(Header {
            nonce,
            exe,
            entry,
            authkey,
            parent_pid,
            daemon,
            start_method,
            name,
        })
    }
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
    /// A function reference's tag did not verify: nothing was called.
    Unauthenticated,
}

/// The outcome of running the trampoline, still in the child.
// The result stays inline (see `codec::Encoded`); an outcome is made once per child.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    Returned(codec::Encoded, Vec<OwnedFd>),
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

fn address_at(offset: i64) -> FnAddress {
    FnAddress((anchor as fn() -> u64 as usize).wrapping_add(offset as usize))
}

/// Decodes `A`, runs `f`, encodes `R`. Monomorphised per `(A, R)` in the parent; the child
/// reaches it by offset.
pub(crate) fn trampoline<A: DeserializeOwned, R: Serialize>(
    function: FnAddress,
    args: &[u8],
    fds: &mut FdTable,
) -> Outcome {
    let args: A = match codec::decode_in(args, fds) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(Failure::ArgsUndecodable(e.to_string())),
    };
    // SAFETY: a trampoline is reached only through `Verified::run`, with the function of the
    // verified pair: the family tags only an `fn(A) -> R` together with this very
    // monomorphisation (`Entry::new`'s callers), in this same executable (part of the tag).
    let f = unsafe { resolve::<fn(A) -> R>(function) };
    call(f, args)
}

/// Decodes a list of `A`, runs `f` on each item, encodes the list of `R`: one pool chunk.
pub(crate) fn chunk_trampoline<A: DeserializeOwned, R: Serialize>(
    function: FnAddress,
    args: &[u8],
    fds: &mut FdTable,
) -> Outcome {
    let items: Vec<A> = match codec::decode_in(args, fds) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(Failure::ArgsUndecodable(e.to_string())),
    };
    // SAFETY: as in `trampoline`: `function` is an `fn(A) -> R` of this executable, verified
    // together with the address of this monomorphisation.
    let f = unsafe { resolve::<fn(A) -> R>(function) };
    call_with(move || items.into_iter().map(f).collect::<Vec<R>>())
}

/// Like [`chunk_trampoline`] for a function of two arguments given as pairs (`starmap`).
pub(crate) fn star_chunk_trampoline<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    function: FnAddress,
    args: &[u8],
    fds: &mut FdTable,
) -> Outcome {
    let items: Vec<(A, B)> = match codec::decode_in(args, fds) {
        Ok(a) => a,
        Err(e) => return Outcome::Failed(Failure::ArgsUndecodable(e.to_string())),
    };
    // SAFETY: as in `trampoline`, for an `fn(A, B) -> R`.
    let f = unsafe { resolve::<fn(A, B) -> R>(function) };
    call_with(move || items.into_iter().map(|(a, b)| f(a, b)).collect::<Vec<R>>())
}

/// Runs `f(args)` under `catch_unwind` and encodes what came of it.
pub(crate) fn call<A, R: Serialize>(f: fn(A) -> R, args: A) -> Outcome {
    call_with(move || f(args))
}

/// Runs `work` under `catch_unwind` and encodes what came of it.
pub(crate) fn call_with<R: Serialize>(work: impl FnOnce() -> R) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => {
            let mut fds = Vec::new();
            match codec::encode_small_in(&result, &mut fds) {
                Ok(bytes) => Outcome::Returned(bytes, fds),
                Err(e) => Outcome::Failed(Failure::ResultUnencodable(e.to_string())),
            }
        }
        Err(payload) => Outcome::Failed(Failure::Panicked {
            message: panic_message(payload.as_ref()),
            // `try_lock`: in a fork child a thread of the parent may have held it (forever).
            location: match PANIC_LOCATION.try_lock() {
                Ok(mut held) => held.take(),
                Err(TryLockError::Poisoned(e)) => e.into_inner().take(),
                Err(TryLockError::WouldBlock) => None,
            },
        }),
    }
}

/// The length of a function reference's tag: HMAC-SHA256 truncated to 128 bits.
const TAG_LEN: usize = 16;
type Tag = [u8; TAG_LEN];

/// What a tag vouches for, so that one kind of reference never passes for another.
#[derive(Clone, Copy)]
enum Kind {
    /// A trampoline and the function it calls ([`Entry`]).
    Call = 1,
    /// A plain `fn()` ([`SharedFn`]).
    Plain = 2,
}

/// The executable's identity as the tags cover it. If `/proc/self/exe` cannot be examined
/// (then no spawn works either) the identity is all zeros: a process that can examine it
/// computes other tags and refuses ours, so nothing worse than a refusal comes of it.
fn exe_for_tags() -> [i64; 5] {
    sys::exe_identity().unwrap_or_default()
}

/// The tag of a reference of `kind` to `offsets` in executable `exe`, under `key`.
fn tagger(key: &AuthKey, kind: Kind, exe: &[i64; 5], offsets: &[i64]) -> Hmac<Sha256> {
    // HMAC pads a key shorter than the hash's block (64 bytes) with zeros, so this is the
    // HMAC of the 32-byte key, made without `new_from_slice`'s (never taken) error path.
    let mut block = [0u8; 64];
    block[..AuthKey::LEN].copy_from_slice(key.as_bytes());
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
    mac.update(b"multiproc function reference\0");
    mac.update(&[kind as u8]);
    for field in exe.iter().chain(offsets) {
        mac.update(&field.to_le_bytes());
    }
    mac
}

fn tag_of(key: &AuthKey, kind: Kind, exe: &[i64; 5], offsets: &[i64]) -> Tag {
    let full = tagger(key, kind, exe, offsets).finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

/// Whether `tag` is the tag of that reference (compared in constant time).
fn tag_matches(key: &AuthKey, kind: Kind, exe: &[i64; 5], offsets: &[i64], tag: &[u8]) -> bool {
    tag.len() == TAG_LEN
        && tagger(key, kind, exe, offsets)
            .verify_truncated_left(tag)
            .is_ok()
}

/// How many tags a thread remembers for [`Entry::new`] (a pool caller makes the same few
/// entries over and over: one HMAC each, then lookups).
const TAG_CACHE: usize = 16;

thread_local! {
    /// Recently made call tags: (trampoline, function, tag), the newest last. A process's key
    /// never changes (a fork child's is its parent's, which is why the copy a fork child
    /// inherits stays right), so the key is not part of the lookup.
    static CALL_TAGS: RefCell<Vec<(i64, i64, Tag)>> = const { RefCell::new(Vec::new()) };
    /// What the last `SharedFn` deserialization refused, for [`take_refusal`].
    static REFUSED: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// A call as it travels to another process of this family: the offsets of a trampoline and of
/// the function it calls (as in the bootstrap [`Header`]), and their tag. Running one takes a
/// [`Verified`], which only [`Entry::verify`] (or [`Verifier`]) makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    trampoline: i64,
    function: i64,
    tag: Tag,
}

impl Entry {
    /// The size of [`to_bytes`](Self::to_bytes).
    pub(crate) const LEN: usize = 16 + TAG_LEN;

    /// Names `function` (an `fn` of the type that `trampoline` expects) for another process
    /// of this family running this same executable, tagged with this process's key.
    pub(crate) fn new(trampoline: Trampoline, function: usize) -> Entry {
        let (trampoline, function) = (offset_of(trampoline as usize), offset_of(function));
        let tag = CALL_TAGS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let known = cache
                .iter()
                .rev()
                .find(|(t, f, _)| (*t, *f) == (trampoline, function));
            if let Some((.., tag)) = known {
                return *tag;
            }
            let key = runtime::runtime().identity().authkey;
            let tag = tag_of(&key, Kind::Call, &exe_for_tags(), &[trampoline, function]);
            if cache.len() == TAG_CACHE {
                cache.remove(0);
            }
            cache.push((trampoline, function, tag));
            tag
        });
        Entry {
            trampoline,
            function,
            tag,
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; Entry::LEN] {
        let mut out = [0u8; Entry::LEN];
        out[..8].copy_from_slice(&self.trampoline.to_le_bytes());
        out[8..16].copy_from_slice(&self.function.to_le_bytes());
        out[16..].copy_from_slice(&self.tag);
        out
    }

    /// Reads an entry from bytes: nothing is trusted until [`verify`](Self::verify).
    pub(crate) fn from_bytes(bytes: &[u8; Entry::LEN]) -> Entry {
        let mut trampoline = [0u8; 8];
        let mut function = [0u8; 8];
        let mut tag = [0u8; TAG_LEN];
        trampoline.copy_from_slice(&bytes[..8]);
        function.copy_from_slice(&bytes[8..16]);
        tag.copy_from_slice(&bytes[16..]);
        Entry {
            trampoline: i64::from_le_bytes(trampoline),
            function: i64::from_le_bytes(function),
            tag,
        }
    }

    /// Checks the tag against `key` and this executable.
    ///
    /// # Errors
    /// [`Error::UnauthenticatedFunction`] (naming `what` carried the entry) if the tag does not
    /// match: the entry was forged or damaged, or made by another family or executable.
    pub(crate) fn verify(&self, key: &AuthKey, what: &'static str) -> Result<Verified, Error> {
        let offsets = [self.trampoline, self.function];
        if tag_matches(key, Kind::Call, &exe_for_tags(), &offsets, &self.tag) {
            Ok(Verified {
                trampoline: self.trampoline,
                function: self.function,
            })
        } else {
            Err(Error::UnauthenticatedFunction { what })
        }
    }
}

/// A call whose tag verified: the offsets name a [`Trampoline`] of this executable and the
/// function it expects. Made only by [`Entry::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified {
    trampoline: i64,
    function: i64,
}

impl Verified {
    /// Runs the call on pickled `args`, with the descriptors of the handles inside them.
    pub(crate) fn run(self, args: &[u8], fds: &mut FdTable) -> Outcome {
        // SAFETY: the pair's tag verified, so a process of this family running this executable
        // made it with `Entry::new` from a `Trampoline` and a function of the type that
        // trampoline expects; offsets from the anchor name the same functions here.
        let trampoline = unsafe { resolve::<Trampoline>(address_at(self.trampoline)) };
        trampoline(address_at(self.function), args, fds)
    }
}

/// Verifies entries for a long-lived worker, remembering the ones that passed: a pool sends
/// the same few entries with every batch, so each distinct entry costs one HMAC per worker.
#[derive(Debug)]
pub(crate) struct Verifier {
    key: AuthKey,
    passed: Vec<Entry>,
}

/// How many verified entries a [`Verifier`] remembers before it starts over.
const VERIFIED_CACHE: usize = 256;

impl Verifier {
    /// A verifier with this process's key.
    pub(crate) fn new() -> Verifier {
        Verifier {
            key: runtime::runtime().identity().authkey,
            passed: Vec::new(),
        }
    }

    /// [`Entry::verify`], or the remembered result of an earlier call for the same entry.
    ///
    /// # Errors
    /// As [`Entry::verify`].
    pub(crate) fn verify(&mut self, entry: Entry, what: &'static str) -> Result<Verified, Error> {
        if self.passed.contains(&entry) {
            return Ok(Verified {
                trampoline: entry.trampoline,
                function: entry.function,
            });
        }
        let verified = entry.verify(&self.key, what)?;
        if self.passed.len() == VERIFIED_CACHE {
            self.passed.clear();
        }
        self.passed.push(entry);
        Ok(verified)
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
    // Once the marker is present `main` must never run, or a child that cannot bootstrap
    // would run the parent's program again (a fork bomb, CPython's TestNoForkBomb). The
    // parent pid in the marker is not a check: a parent may exit between starting a child
    // and the child's first instruction (the child is then an orphan that must still run).
    // The nonce, repeated in the bootstrap message, is the check; a marker that did not come
    // from a multiproc parent finds no socket at descriptor 3 and fails loudly.
    if !sys::is_socket(CHILD_FD) {
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: {MARKER_NAME}={marker} is set, but this process was not started by \
             multiproc (no bootstrap socket at descriptor {CHILD_FD}); unset {MARKER_NAME}"
        );
        sys::exit_immediately(1)
    }
    sys::ignore_sigpipe();
    match (fields[0], fields.get(2).and_then(|n| n.parse::<u64>().ok())) {
        ("child", Some(nonce)) => {
            // SAFETY: the parent placed our socket at CHILD_FD with posix_spawn (checked to
            // be a socket above); nothing else in this fresh process owns it.
            let conn = unsafe { sys::own_fd(CHILD_FD) };
            run(conn, Some(nonce))
        }
        ("forkserver", Some(_)) if sys::fd_is_open(ALIVE_FD) => {
            if fields.get(3) == Some(&"bind-now") {
                // Set by the parent for the dynamic linker only (see forkserver::Server).
                let _ = sys::take_env(c"LD_BIND_NOW");
            }
            // SAFETY: as above, for the control socket and the alive pipe.
            let (control, alive) = unsafe { (sys::own_fd(CHILD_FD), sys::own_fd(ALIVE_FD)) };
            crate::process::start::forkserver::serve(control, alive)
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "multiproc: malformed {MARKER_NAME}={marker}"
            );
            sys::exit_immediately(1)
        }
    }
}

/// Who the child is, and its parent's alive pipe: what every child gets besides its work.
pub(crate) struct ChildSetup {
    pub(crate) runtime: runtime::Prepared,
    pub(crate) daemon: bool,
    /// The read end of the parent's alive pipe (a daemon watches it). A fork child that is
    /// not a daemon gets none: it would only close it.
    pub(crate) alive: Option<OwnedFd>,
}

/// Whether the child is a copy of a parent that may have had other threads (fork): then it
/// must not take locks that such threads could have held (stdout, the panic hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Forked from the program itself.
    Forked,
    /// Re-executed (spawn).
    Fresh,
    /// Forked from the single-threaded forkserver, which installed the panic hook already.
    Served,
}

/// The child side of spawn and forkserver: read the bootstrap message from `socket`, then run
/// the function it names. `expected_nonce` is the nonce from a spawn marker.
pub(crate) fn run(socket: OwnedFd, expected_nonce: Option<u64>) -> ! {
    // dup2 to its fixed number cleared close-on-exec: programs `f` runs must not inherit it.
    let _ = sys::set_cloexec(socket.as_fd());
    let conn = Connection::from_fd(socket);
    match receive_job(&conn, expected_nonce) {
        Ok((setup, call, frame, args_offset, mut fds)) => {
            // Only spawn children carry a nonce; forkserver children are forked from the server.
            let origin = if expected_nonce.is_some() {
                Origin::Fresh
            } else {
                Origin::Served
            };
            run_job(ReportTo::Socket(conn), setup, origin, move || {
                call.run(&frame[args_offset..], &mut fds)
            })
        }
        Err(failure) => {
            let reason = match &failure {
                Failure::Refused(reason) => reason.clone(),
                _ => "the bootstrap message's function reference was not made by this process \
                      family"
                    .to_string(),
            };
            let report = ReportTo::Socket(conn);
            let _ = send_outcome(&report, Outcome::Failed(failure));
            let _ = writeln!(
                std::io::stderr(),
                "multiproc child {}: {reason}",
                sys::getpid()
            );
            sys::exit_immediately(1)
        }
    }
}

/// Where a child sends its report: its own socket (spawn, forkserver), or its fork ticket.
pub(crate) enum ReportTo<'a> {
    Socket(Connection),
    Ticket(&'a crate::process::Ticket),
}

impl ReportTo<'_> {
    fn send(&self, tag: u8, body: &[u8], fds: &[OwnedFd]) -> Result<(), Error> {
        match self {
            ReportTo::Socket(conn) => conn.send_parts(&[&[tag], body], fds),
            ReportTo::Ticket(ticket) => ticket.publish(tag, body, fds),
        }
    }
}

/// Runs `work`, sends its outcome to `report`, and exits: 0 after a result, 1 after a panic
/// or any other failure (CPython's code for an uncaught exception).
pub(crate) fn run_job(
    report: ReportTo<'_>,
    setup: ChildSetup,
    origin: Origin,
    work: impl FnOnce() -> Outcome,
) -> ! {
    runtime::install_child(setup.runtime);
    if setup.daemon {
        if let Some(alive) = setup.alive {
            watch_parent(alive);
        }
    } else {
        drop(setup.alive);
    }
    if origin == Origin::Fresh {
        // Swapping the hook takes a lock that a thread of a forked parent may have held.
        install_panic_hook();
    }
    let outcome = work();
    let code = match outcome {
        Outcome::Returned(..) => 0,
        Outcome::Failed(_) => 1,
    };
    let code = match send_outcome(&report, outcome) {
        // A parent that dropped our handle no longer wants the result: not an error.
        Ok(()) | Err(Error::Disconnected) => code,
        Err(e) => {
            // Not `writeln!(stderr)`: its lock may be held by a thread of a forked parent.
            write_stderr(format!("multiproc child {}: {e}\n", sys::getpid()).as_bytes());
            1
        }
    };
    if origin != Origin::Forked {
        // Rust's stdout is line-buffered: only a partial last line can be pending. In a fork
        // child the stdout lock may be held by a thread that no longer exists, so it is left.
        let _ = std::io::stdout().flush();
    }
    sys::exit_immediately(code)
}

/// What `receive_job` finds in a bootstrap message.
type ReceivedJob = (ChildSetup, Verified, Vec<u8>, usize, FdTable);

/// Reads and checks the bootstrap message.
fn receive_job(conn: &Connection, expected_nonce: Option<u64>) -> Result<ReceivedJob, Failure> {
    let (header, frame, header_len, mut fds) =
        read_message(conn, expected_nonce).map_err(Failure::Refused)?;
    let alive = fds
        .pop()
        .ok_or_else(|| Failure::Refused("the bootstrap message carries no alive pipe".into()))?;
    // The message brings the family's key (see the module docs); the call is checked with it
    // through the one path that turns a reference into a function.
    let authkey = AuthKey::from_bytes(header.authkey);
    let call = header
        .entry
        .verify(&authkey, "the bootstrap message")
        .map_err(|_| Failure::Unauthenticated)?;
    let setup = ChildSetup {
        daemon: header.daemon,
        runtime: runtime::prepare(Identity {
            name: header.name,
            daemon: header.daemon,
            parent_pid: Some(header.parent_pid as u32),
            start_method: Some(header.start_method),
            authkey,
        }),
        alive: Some(alive),
    };
    Ok((setup, call, frame, 4 + header_len, FdTable::new(fds)))
}

/// A bootstrap message as read: its header (checked against the marker's nonce and this
/// executable), the whole frame, the header's length, and the descriptors.
type Message = (Header, Vec<u8>, usize, Vec<OwnedFd>);

/// Reads the bootstrap message and checks who it is for.
fn read_message(conn: &Connection, expected_nonce: Option<u64>) -> Result<Message, String> {
    let (frame, fds) = conn
        .recv_raw()
        .map_err(|e| format!("no bootstrap message from the parent: {e}"))?;
    let header_len = frame
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|&n| frame.len() >= 4 + n)
        .ok_or("truncated bootstrap message")?;
    let header =
        Header::from_bytes(&frame[4..4 + header_len]).ok_or("malformed bootstrap header")?;
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
    Ok((header, frame, header_len, fds))
}

fn send_outcome(report: &ReportTo<'_>, outcome: Outcome) -> Result<(), Error> {
    let (tag, body, mut fds) = match outcome {
        Outcome::Returned(bytes, fds) => (TAG_RETURNED, bytes, fds),
        Outcome::Failed(failure) => (
            TAG_FAILED,
            codec::Encoded::Heap(codec::encode(&failure)?),
            Vec::new(),
        ),
    };
    if body.len() <= INLINE_RESULT_MAX {
        return report.send(tag, &body, &fds);
    }
    match sys::memfd_with(c"multiproc-report", &body) {
        Ok(memfd) => {
            drop(body);
            fds.push(memfd);
            report.send(tag | IN_MEMFD, &[], &fds)
        }
        // Say why rather than leave the parent with no report at all.
        Err(e) => {
            let failure = Failure::ResultUnencodable(format!("cannot create a memfd: {e}"));
            report.send(TAG_FAILED, &codec::encode(&failure)?, &[])?;
            Err(Error::Os {
                op: "memfd",
                source: e,
            })
        }
    }
}

/// Records where a panic happened, then lets the previous hook (the default one prints the
/// message to stderr) run as usual.
pub(crate) fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Some(loc) = info.location() {
            *PANIC_LOCATION.lock().unwrap_or_else(|e| e.into_inner()) = Some(loc.to_string());
        }
        previous(info);
    }));
}

/// A daemon child dies with its parent, with no thread and no allocation: the kernel sends
/// it `SIGKILL` when the last write end of the parent's alive pipe closes, i.e. when the
/// parent is gone, however it died (`sys::kill_self_on_hangup`: `O_ASYNC` on a private
/// reopening of the read end, with `F_SETSIG`). `PR_SET_PDEATHSIG` would fire on the exit of
/// the *thread* that started us instead. Async-signal-safe, so a fork child can do it before
/// running its function (see `process::start::fork`).
fn watch_parent(alive: OwnedFd) {
    match sys::kill_self_on_hangup(alive.as_fd()) {
        Ok(watch) => {
            // Kept open for the life of this process; a child forked from us closes its copy.
            sys::track_fd(std::os::fd::AsRawFd::as_raw_fd(&watch));
            std::mem::forget(watch);
        }
        Err(_) => write_stderr(
            b"multiproc: cannot watch the parent; this daemon may outlive its parent\n",
        ),
    }
    drop(alive);
}

/// Writes `message` to standard error with one `write`, without the lock `std::io::stderr`
/// takes (a thread of a forked parent may have held it).
fn write_stderr(message: &[u8]) {
    let _ = nix::unistd::write(std::io::stderr(), message);
}

/// The parent's reading of the child's one message.
pub(crate) enum Report {
    /// The whole frame (the pickled result starts at byte 1, after the tag: slicing it there
    /// avoids copying a large result) and the handles that came with it.
    Returned(Vec<u8>, Vec<OwnedFd>),
    Failed(Failure),
}

/// Parses the child's message.
pub(crate) fn parse_report(frame: Vec<u8>, mut fds: Vec<OwnedFd>) -> Result<Report, Error> {
    let tag = *frame.first().ok_or_else(malformed_report)?;
    let frame = if tag & IN_MEMFD != 0 {
        let memfd = fds.pop().ok_or_else(malformed_report)?;
        // Keep a leading byte where the tag was, so the body starts at 1 as inline.
        let mut whole = vec![tag & !IN_MEMFD];
        sys::read_whole_file(memfd.as_fd(), &mut whole).map_err(Error::os("read memfd"))?;
        whole
    } else {
        frame
    };
    match tag & !IN_MEMFD {
        TAG_RETURNED => Ok(Report::Returned(frame, fds)),
        TAG_FAILED => Ok(Report::Failed(codec::decode(&frame[1..])?)),
        _ => Err(malformed_report()),
    }
}

fn malformed_report() -> Error {
    Error::InvalidArgument("the child sent a malformed report".into())
}

/// A plain `fn()` that travels to other processes of this family and executable (a
/// `Barrier`'s action): its offset from the anchor, the executable's identity, and a tag made
/// with the family's key. Deserializing it checks the tag; a forged or foreign one fails, and
/// the codec reports [`Error::UnauthenticatedFunction`] (see [`take_refusal`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedFn(pub(crate) fn());

impl serde::Serialize for SharedFn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let exe = sys::exe_identity().map_err(S::Error::custom)?;
        let offset = offset_of(self.0 as usize);
        let key = runtime::runtime().identity().authkey;
        let tag = tag_of(&key, Kind::Plain, &exe, &[offset]);
        (offset, exe, serde_bytes::Bytes::new(&tag)).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SharedFn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let (offset, exe, tag) =
            <(i64, [i64; 5], serde_bytes::ByteBuf)>::deserialize(deserializer)?;
        if sys::exe_identity().map_err(D::Error::custom)? != exe {
            return Err(D::Error::custom(
                "a function from a different executable cannot run here",
            ));
        }
        let key = runtime::runtime().identity().authkey;
        if !tag_matches(&key, Kind::Plain, &exe, &[offset], &tag) {
            REFUSED.with(|r| r.set(Some("a barrier action")));
            return Err(D::Error::custom(
                "the function reference was not made by this process family",
            ));
        }
        // SAFETY: the tag verified: a process of this family running this executable (both
        // covered by the tag) serialized it above, from an `fn()`, so the offset names that
        // function here too.
        Ok(SharedFn(unsafe { resolve::<fn()>(address_at(offset)) }))
    }
}

/// Clears the record of a refused function reference on this thread (the codec calls this
/// before decoding).
pub(crate) fn clear_refusal() {
    REFUSED.with(|r| r.set(None));
}

/// The typed error for a function reference refused while decoding on this thread, if any:
/// the codec reports it instead of a generic [`Error::Deserialize`].
pub(crate) fn take_refusal() -> Option<Error> {
    REFUSED
        .with(Cell::take)
        .map(|what| Error::UnauthenticatedFunction { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    static CALLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn action() {
        CALLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn other_action() {
        CALLED.fetch_add(100, std::sync::atomic::Ordering::SeqCst);
    }

    fn add_one(x: u64) -> u64 {
        x + 1
    }

    fn times_ten(x: u64) -> u64 {
        x * 10
    }

    fn returned(outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Returned(bytes, _) => codec::decode(&bytes).unwrap(),
            Outcome::Failed(f) => panic!("the call failed: {f:?}"),
        }
    }

    /// The pickle of a `SharedFn` as a peer would write it, with any tag.
    fn shared_fn_bytes(function: fn(), tag: &[u8]) -> Vec<u8> {
        let exe = sys::exe_identity().unwrap();
        codec::encode(&(
            offset_of(function as usize),
            exe,
            serde_bytes::Bytes::new(tag),
        ))
        .unwrap()
    }

    fn family_key() -> AuthKey {
        runtime::runtime().identity().authkey
    }

    #[test]
    fn shared_fn_round_trips_in_the_family() {
        let bytes = codec::encode(&SharedFn(action)).unwrap();
        let SharedFn(f) = codec::decode(&bytes).unwrap();
        assert_eq!(f as usize, action as fn() as usize);
    }

    /// A forged tag, a tag for another function, or one made with another family's key is
    /// refused with the typed error, and nothing is called.
    #[test]
    fn forged_or_foreign_shared_fn_is_refused() {
        let exe = sys::exe_identity().unwrap();
        let good = tag_of(
            &family_key(),
            Kind::Plain,
            &exe,
            &[offset_of(action as fn() as usize)],
        );
        let mut flipped = good;
        flipped[0] ^= 1;
        let foreign = tag_of(
            &AuthKey::random(),
            Kind::Plain,
            &exe,
            &[offset_of(action as fn() as usize)],
        );
        let before = CALLED.load(std::sync::atomic::Ordering::SeqCst);
        for bytes in [
            shared_fn_bytes(action, &flipped),
            shared_fn_bytes(other_action, &good),
            shared_fn_bytes(action, &foreign),
            shared_fn_bytes(action, &good[..8]),
            shared_fn_bytes(action, &[]),
        ] {
            let err = codec::decode::<SharedFn>(&bytes).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnauthenticatedFunction {
                        what: "a barrier action"
                    }
                ),
                "{err}"
            );
        }
        assert_eq!(CALLED.load(std::sync::atomic::Ordering::SeqCst), before);
        // The good tag still passes: the refusals were about the tags.
        let SharedFn(f) = codec::decode(&shared_fn_bytes(action, &good)).unwrap();
        assert_eq!(f as usize, action as fn() as usize);
    }

    /// A call tag never passes for a plain-function tag over the same numbers.
    #[test]
    fn tags_are_bound_to_their_kind() {
        let exe = sys::exe_identity().unwrap();
        let offset = offset_of(action as fn() as usize);
        let key = family_key();
        assert_ne!(
            tag_of(&key, Kind::Plain, &exe, &[offset]),
            tag_of(&key, Kind::Call, &exe, &[offset])
        );
        let other_exe = [exe[0], exe[1] + 1, exe[2], exe[3], exe[4]];
        assert_ne!(
            tag_of(&key, Kind::Plain, &exe, &[offset]),
            tag_of(&key, Kind::Plain, &other_exe, &[offset])
        );
    }

    #[test]
    fn entry_verifies_and_runs() {
        let entry = Entry::new(
            trampoline::<u64, u64> as Trampoline,
            add_one as fn(u64) -> u64 as usize,
        );
        let bytes = entry.to_bytes();
        let call = Entry::from_bytes(&bytes)
            .verify(&family_key(), "a pool task")
            .unwrap();
        let args = codec::encode(&41u64).unwrap();
        assert_eq!(returned(call.run(&args, &mut FdTable::default())), 42);
    }

    /// An entry whose offsets were changed (here to another function of the same type, which
    /// would run if the tag were not checked), whose tag was damaged, or that was tagged with
    /// another family's key is refused.
    #[test]
    fn forged_or_foreign_entry_is_refused() {
        let good = Entry::new(
            trampoline::<u64, u64> as Trampoline,
            add_one as fn(u64) -> u64 as usize,
        )
        .to_bytes();
        let other = Entry::new(
            trampoline::<u64, u64> as Trampoline,
            times_ten as fn(u64) -> u64 as usize,
        )
        .to_bytes();
        let mut swapped = good;
        swapped[8..16].copy_from_slice(&other[8..16]);
        let mut damaged = good;
        damaged[Entry::LEN - 1] ^= 0x80;
        for bytes in [swapped, damaged] {
            let err = Entry::from_bytes(&bytes)
                .verify(&family_key(), "a pool task")
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::UnauthenticatedFunction {
                        what: "a pool task"
                    }
                ),
                "{err}"
            );
        }
        let err = Entry::from_bytes(&good)
            .verify(&AuthKey::random(), "a pool task")
            .unwrap_err();
        assert!(
            matches!(err, Error::UnauthenticatedFunction { .. }),
            "{err}"
        );
    }

    /// The verifier remembers what passed, and never what failed.
    #[test]
    fn verifier_remembers_only_verified_entries() {
        let mut verifier = Verifier::new();
        let good = Entry::new(
            trampoline::<u64, u64> as Trampoline,
            add_one as fn(u64) -> u64 as usize,
        );
        let mut forged_bytes = good.to_bytes();
        forged_bytes[3] ^= 4;
        let forged = Entry::from_bytes(&forged_bytes);
        for _ in 0..3 {
            assert!(verifier.verify(forged, "a pool task").is_err());
            assert!(verifier.verify(good, "a pool task").is_ok());
        }
        assert_eq!(verifier.passed, [good]);
    }

    #[test]
    fn header_round_trips() {
        let header = Header {
            nonce: 7,
            exe: sys::exe_identity().unwrap(),
            entry: Entry::new(
                trampoline::<u64, u64> as Trampoline,
                add_one as fn(u64) -> u64 as usize,
            ),
            authkey: *family_key().as_bytes(),
            parent_pid: 12,
            daemon: true,
            start_method: StartMethod::Spawn,
            name: "Process-1".into(),
        };
        assert_eq!(Header::from_bytes(&header.to_bytes()), Some(header));
    }

    /// A bootstrap message whose function reference does not verify with the key it brings
    /// (here: the offsets of another function under a genuine tag) is refused as
    /// unauthenticated, before anything is called; the genuine one is accepted.
    #[test]
    fn bootstrap_message_with_a_forged_reference_is_refused() {
        let message = |entry: Entry| {
            let header = Header {
                nonce: 9,
                exe: sys::exe_identity().unwrap(),
                entry,
                authkey: *family_key().as_bytes(),
                parent_pid: 1,
                daemon: false,
                start_method: StartMethod::Spawn,
                name: "Process-9".into(),
            }
            .to_bytes();
            let (ours, theirs) = crate::Pipe::new().unwrap();
            let (alive, _write) = sys::pipe().unwrap();
            let args = codec::encode(&1u64).unwrap();
            let len = (header.len() as u32).to_le_bytes();
            ours.send_parts(&[&len, &header, &args], &[alive]).unwrap();
            receive_job(&theirs, Some(9))
        };
        let good = Entry::new(
            trampoline::<u64, u64> as Trampoline,
            add_one as fn(u64) -> u64 as usize,
        );
        let other = Entry::new(
            trampoline::<u64, u64> as Trampoline,
            times_ten as fn(u64) -> u64 as usize,
        );
        let mut forged = good;
        forged.function = other.function;
        assert!(matches!(message(forged), Err(Failure::Unauthenticated)));
        let Ok((_, call, frame, args_at, mut fds)) = message(good) else {
            panic!("the genuine message was refused");
        };
        assert_eq!(returned(call.run(&frame[args_at..], &mut fds)), 2);
    }
}
