//! This process's side of a [`Queue`](crate::Queue): the shared ring, the items an unbounded
//! queue accepted while the ring was full, and the feeder thread that moves them into the ring
//! in order as room appears (CPython's feeder thread and buffer).

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::ring::{Encoded, Put, Ring, Src};
use super::ring_queue::KEEP_BUFFER_MAX;
use crate::sys::OnSignal;
use crate::Error;

/// This process's side of a queue: the shared ring, and the items waiting for room in it.
pub(super) struct Handle {
    pub(super) ring: Arc<Ring>,
    pub(super) local: Arc<Local>,
    /// The pickle length of the last item put through this handle.
    pub(super) last_len: AtomicUsize,
}

/// Items an unbounded queue accepted while the ring was full, and the feeder thread that
/// moves them into it (CPython's feeder thread and buffer).
#[derive(Default)]
pub(super) struct Local {
    pub(super) state: Mutex<LocalState>,
    pub(super) changed: Condvar,
}

#[derive(Default)]
pub(super) struct LocalState {
    pub(super) pending: VecDeque<Encoded>,
    /// The feeder is writing an item it took from `pending`.
    pub(super) in_flight: bool,
    pub(super) feeder: Option<std::thread::JoinHandle<()>>,
    /// The last handle is gone: the feeder stops once `pending` is empty.
    pub(super) shutting_down: bool,
    /// `cancel_join_thread`: dropping the last handle does not wait for `pending`.
    pub(super) cancelled: bool,
    /// Buffers of items the feeder has written, for `put` to pickle into again (saves an
    /// allocation and its page faults per deferred item).
    pub(super) spare: Vec<Vec<u8>>,
}

/// How many written items' buffers the feeder keeps for reuse.
const SPARE_BUFFERS: usize = 4;

impl Local {
    pub(super) fn state(&self) -> MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handle {
    pub(super) fn new(ring: Ring) -> Handle {
        Handle {
            ring: Arc::new(ring),
            local: Arc::default(),
            last_len: AtomicUsize::new(0),
        }
    }

    /// Puts `src` into the ring: a bounded queue waits for room until `deadline`
    /// ([`Error::Full`] after it); an unbounded one tries once, unless items wait in the
    /// feeder (they go first). `Ok(false)`: hand the item to the feeder.
    pub(super) fn place(
        &self,
        src: &mut Src<'_>,
        deadline: Option<Instant>,
    ) -> Result<bool, Error> {
        if self.ring.maxsize() != 0 {
            return match self.ring.put_until(src, deadline, OnSignal::caller())? {
                true => Ok(true),
                false => Err(Error::Full),
            };
        }
        let state = self.local.state();
        Ok(state.pending.is_empty()
            && !state.in_flight
            && matches!(self.ring.try_put(src, None)?, Put::Done))
    }

    /// Hands an item to the feeder thread, starting it if needed.
    pub(super) fn defer(&self, state: &mut LocalState, item: Encoded) -> Result<(), Error> {
        state.pending.push_back(item);
        if state.feeder.is_none() {
            let (ring, local) = (Arc::clone(&self.ring), Arc::clone(&self.local));
            let feeder = std::thread::Builder::new()
                .name("multiproc-queue-feeder".into())
                .spawn(move || feed(&ring, &local))
                .map_err(Error::os("spawn the queue's feeder thread"))?;
            state.feeder = Some(feeder);
        }
        self.local.changed.notify_all();
        Ok(())
    }

    /// Waits until the feeder has written everything it holds (or was cancelled).
    pub(super) fn flush(&self) {
        let mut state = self.local.state();
        while (!state.pending.is_empty() || state.in_flight) && !state.cancelled {
            state = self
                .local
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.flush();
        let feeder = {
            let mut state = self.local.state();
            state.shutting_down = true;
            self.local.changed.notify_all();
            state.feeder.take()
        };
        // The feeder holds the ring (its descriptors and mapping) until it ends: wait, so that
        // dropping a queue releases them. It ends at once, or within `CANCEL_CHECK` if
        // cancelled while waiting for room.
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }
    }
}

/// How often a feeder waiting for room checks whether it was cancelled.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// The feeder thread: writes pending items into the ring in order, waiting for room.
fn feed(ring: &Ring, local: &Local) {
    let mut state = local.state();
    loop {
        if state.cancelled {
            state.pending.clear();
        }
        let Some(item) = state.pending.pop_front() else {
            if state.shutting_down {
                return;
            }
            state = local.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        state.in_flight = true;
        drop(state);
        loop {
            match ring.put_until(
                &mut Src::Encoded(&item),
                Some(Instant::now() + CANCEL_CHECK),
                OnSignal::Retry,
            ) {
                Ok(true) => break,
                Ok(false) if !local.state().cancelled => continue,
                Ok(false) | Err(Error::ShutDown) => break,
                Err(e) => {
                    // Only an OS failure of the socket gets here (the item was pickled in `put`).
                    eprintln!("multiproc: a queue's feeder thread dropped an item: {e}");
                    break;
                }
            }
        }
        state = local.state();
        state.in_flight = false;
        if let Some(mut bytes) = item.into_buffer() {
            if state.spare.len() < SPARE_BUFFERS && bytes.capacity() <= KEEP_BUFFER_MAX {
                bytes.clear();
                state.spare.push(bytes);
            }
        }
        local.changed.notify_all();
    }
}
