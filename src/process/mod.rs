//! `Process`: run a function in a new OS process and get its result back.
//!
//! - `bootstrap/`: how a child finds and runs its function (the protocol between parent and
//!   child, function references and their tags, the pre-main hook);
//! - `method`: [`StartMethod`] and the program-wide default;
//! - `info`: [`ProcessInfo`], [`AuthKey`] and the functions that describe the calling process;
//! - `builder`: [`ProcessBuilder`], which prepares a child and starts it;
//! - `handle`: [`Process`], the handle on a started child (`join`, `terminate`, drop);
//! - `start/`: the three start methods; `child`: the state a parent keeps per child;
//! - `runtime`: the per-process state; `reports`: fork children's reports.

pub(crate) mod bootstrap;
mod builder;
pub(crate) mod child;
mod handle;
mod info;
mod method;
mod reports;
pub(crate) mod runtime;
pub(crate) mod start;

pub use builder::ProcessBuilder;
pub use handle::Process;
pub use info::{
    active_children, cpu_count, current_process, current_start_method, parent_pid, AuthKey,
    ProcessInfo,
};
pub use method::{get_start_method, set_start_method, StartMethod};
pub(crate) use reports::{ForkReports, Ticket};

/// The former name of [`ProcessBuilder`].
#[deprecated(note = "renamed to `ProcessBuilder`")]
pub type Builder = ProcessBuilder;
