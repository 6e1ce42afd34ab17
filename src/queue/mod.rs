//! Queues between processes: [`Queue`] and [`JoinableQueue`] (a shared ring with a feeder
//! thread and an optional capacity) and [`SimpleQueue`] (one socket, no feeder), like CPython's
//! `multiprocessing.Queue`, `JoinableQueue` and `SimpleQueue`.

mod feeder;
mod ring;
mod ring_queue;
mod simple;

pub use ring_queue::{JoinableQueue, Queue};
pub use simple::SimpleQueue;
