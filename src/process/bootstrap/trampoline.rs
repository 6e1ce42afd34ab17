//! Running a function in the child: the trampolines (decode the arguments, call `f` under
//! `catch_unwind`, encode the result) and the panic hook that records where a panic happened.

use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, TryLockError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::function_ref::{resolve, FnAddress};
use super::message::Failure;
use crate::codec::{self, FdTable};

/// What a child runs: decode the arguments, call `f`, encode the outcome.
pub(crate) type Trampoline = fn(FnAddress, &[u8], &mut FdTable) -> Outcome;

/// The outcome of running the trampoline, still in the child.
// The result stays inline (see `codec::Encoded`); an outcome is made once per child.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    Returned(codec::Encoded, Vec<OwnedFd>),
    Failed(Failure),
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
    // monomorphisation (`TaggedCall::new`'s callers), in this same executable (part of the tag).
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

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}

pub(super) static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

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
