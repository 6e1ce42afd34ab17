//! How a child process finds its function and arguments, runs it, and reports back.
//!
//! # Finding `f`
//! Every start method runs the *same binary*, so a function is named by its address relative to
//! [`anchor`](function_ref::anchor), a function of this crate: ASLR moves both by the same amount. Because `A` and
//! `R` are generic, the parent also sends the offset of the monomorphised [`trampoline::<A, R>`](trampoline::trampoline),
//! which decodes `A`, calls `f` under `catch_unwind` and encodes the outcome. Before calling
//! anything by offset the child checks that it is the same executable as its parent
//! ((device, inode, size, mtime) of `/proc/self/exe`: rustc emits no build-id of its own).
//!
//! # Authenticated function references
//! An offset read from bytes another process wrote must not let safe code jump to an arbitrary
//! address. So every function reference that crosses a process boundary (the bootstrap [`Header`],
//! a pool task's [`TaggedCall`], a `Barrier`'s action as [`SharedFn`]) carries a tag: HMAC-SHA256,
//! truncated to 128 bits, over the kind of reference, the executable's identity and the offsets,
//! keyed with the process family's [`AuthKey`](crate::AuthKey) (made by the first process,
//! inherited by every child: in memory under fork, in the bootstrap message under spawn and
//! forkserver). A reference is turned back into a pointer only through [`TaggedCall::verify`] (or
//! [`Verifier`], which remembers the entries it verified so that a pool worker pays for one HMAC
//! per distinct function, not per task) and [`SharedFn`]'s `Deserialize`, which check the tag
//! first; a forged or foreign reference is
//! [`Error::UnauthenticatedFunction`](crate::Error::UnauthenticatedFunction) and nothing is called.
//! Every cast of a number to a function pointer is in one function,
//! [`resolve`](function_ref::resolve), and it takes a [`FnAddress`](function_ref::FnAddress), which
//! only a verified reference (or a real function of this process) can make.
//!
//! The bootstrap message itself is trusted as the channel that brings a spawn or forkserver
//! child its key: it arrives on a private socket that only the parent held (a spawn child's
//! also repeats the nonce of its marker); its header's reference is still checked, with the
//! key it brings, through the same path.
//!
//! # Getting there without a line in `main`
//! A spawned child re-executes `/proc/self/exe` with `MULTIPROC_BOOTSTRAP` in its environment.
//! A pre-main constructor ([`pre_main`](child::pre_main), an `.init_array` entry made by the `ctor` crate) sees
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

//!
//! # Files
//! - `function_ref`: offsets from the anchor, tags, [`TaggedCall`], [`Verifier`], [`SharedFn`];
//! - `trampoline`: the trampolines, `call`, and the panic hook;
//! - `message`: the marker, the bootstrap [`Header`], the report ([`Report`], [`Failure`]);
//! - `child`: the pre-main hook, `run` and `run_job`, the daemon's watch on its parent.

mod child;
mod function_ref;
mod message;
#[cfg(test)]
mod tests;
mod trampoline;

pub(crate) use child::{run, run_job, ChildSetup, Origin};
pub(crate) use function_ref::{SharedFn, TaggedCall, Verifier};
pub(crate) use message::{
    parse_report, Failure, Header, Report, ReportTo, ALIVE_FD, CHILD_FD, INLINE_RESULT_MAX,
    MARKER_NAME,
};
pub(crate) use trampoline::{
    call, chunk_trampoline, install_panic_hook, star_chunk_trampoline, trampoline, Outcome,
    Trampoline,
};
