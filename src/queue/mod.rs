//! Queues between processes: [`Queue`] and [`JoinableQueue`] (a shared ring with a feeder
//! thread and an optional capacity) and [`SimpleQueue`] (one socket, no feeder), like CPython's
//! `multiprocessing.Queue`, `JoinableQueue` and `SimpleQueue`.

mod multi;
mod ring;
mod simple;

pub use multi::{JoinableQueue, Queue};
pub use simple::SimpleQueue;
