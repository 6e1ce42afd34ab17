//! Typed errors a `Deserialize` impl records while a value is decoded.
//!
//! serde's error type carries only a message, so a `Deserialize` impl that refuses what it
//! reads for a reason the caller should be able to match on (a function reference that failed
//! authentication, shared memory that is unsealed or too small) records the typed error here,
//! on the decoding thread, and fails with a message; [`decode_in`](super::decode_in) then
//! reports the recorded error instead of a generic [`Error::Deserialize`]. The OS layer cannot
//! name [`Error`], so its shared-memory checks keep their own record (`sys::take_refusal`),
//! which [`take`] folds in.

use std::cell::RefCell;

use crate::sys::{self, Refusal};
use crate::Error;

thread_local! {
    /// The typed error the last refusal on this thread recorded.
    static REFUSED: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// Records `error` as the reason the value being decoded on this thread was refused.
pub(crate) fn refuse(error: Error) {
    REFUSED.with(|r| *r.borrow_mut() = Some(error));
}

/// Forgets what an earlier decode on this thread recorded.
pub(crate) fn clear() {
    REFUSED.with(|r| r.borrow_mut().take());
    let _ = sys::take_refusal();
}

/// The typed error recorded on this thread since [`clear`], if any.
pub(crate) fn take() -> Option<Error> {
    if let Some(error) = REFUSED.with(|r| r.borrow_mut().take()) {
        return Some(error);
    }
    match sys::take_refusal()? {
        Refusal::Unsealed { seals } => Some(Error::UnsealedSharedMemory { seals }),
        Refusal::TooSmall { len, needed } => Some(Error::SharedMemoryTooSmall { len, needed }),
    }
}
