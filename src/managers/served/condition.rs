//! A served `threading.Condition()` over its own `RLock`, with `notify` picking waiters in
//! arrival order (tickets).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::Instant;

use super::python::{
    attribute_error, bind_arguments, lock, lock_deadline, runtime_error, timeout_deadline,
    PyException,
};
use super::referent::Referent;
use crate::managers::peer::{wait_until, Outcome};
use crate::pickle::PyValue;

#[derive(Debug, Default)]
struct ConditionState {
    /// The owner of the condition's `RLock` and its recursion count.
    owner: Option<(ThreadId, usize)>,
    /// Tickets of the threads in `wait`, oldest first.
    waiting: VecDeque<u64>,
    /// Tickets that `notify` picked and whose threads have not yet woken.
    notified: Vec<u64>,
    next_ticket: u64,
}

/// A served `threading.Condition()` over its own `RLock`: `acquire`, `release`,
/// `wait(timeout=None)`, `notify(n=1)`, `notify_all()` (CPython's `ConditionProxy`, whose
/// `wait_for` loops over `wait` on the client). `wait` and `notify` without holding the lock
/// raise `RuntimeError`. A condition over another served lock (`Condition(lock)`) is not
/// supported.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedCondition};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Condition", || Arc::new(ServedCondition::default()));
/// let server = server.start_thread().unwrap();
/// let cond = Manager::connect(server.address(), b"k").unwrap().create("Condition").unwrap();
/// cond.call("acquire", vec![], vec![]).unwrap();
/// // Nobody notifies: the wait times out (and gives the lock back before returning).
/// assert_eq!(cond.call("wait", vec![PyValue::Float(0.01)], vec![]).unwrap(), PyValue::Bool(false));
/// cond.call("notify", vec![], vec![]).unwrap();
/// cond.call("release", vec![], vec![]).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct ServedCondition {
    state: Mutex<ConditionState>,
    changed: Condvar,
}

impl ServedCondition {
    fn acquire(&self, me: ThreadId, count: usize, deadline: Option<Instant>) -> bool {
        let mut state = lock(&self.state);
        if let Some((owner, held)) = &mut state.owner {
            if *owner == me {
                *held += count;
                return true;
            }
        }
        let (mut state, outcome) =
            wait_until(&self.changed, state, deadline, |s| s.owner.is_none());
        let free = outcome == Outcome::Ready;
        if free {
            state.owner = Some((me, count));
        }
        free
    }

    fn owned_by(state: &ConditionState, me: ThreadId) -> bool {
        matches!(state.owner, Some((owner, _)) if owner == me)
    }
}

impl Referent for ServedCondition {
    fn exposed(&self) -> Vec<String> {
        ["acquire", "release", "wait", "notify", "notify_all"]
            .map(String::from)
            .to_vec()
    }

    /// An `acquire` or a `wait` (which takes the lock back) whose reply never reached its
    /// client releases every level of the lock the serving thread holds (see the module docs).
    fn reply_undelivered(&self, method: &str, result: PyValue) {
        let acquired = match method {
            "acquire" => result == PyValue::Bool(true),
            "wait" => true,
            _ => false,
        };
        let mut state = lock(&self.state);
        if acquired && Self::owned_by(&state, std::thread::current().id()) {
            state.owner = None;
            self.changed.notify_all();
        }
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        let me = std::thread::current().id();
        match method {
            "acquire" => {
                let deadline = lock_deadline(args, kwargs)?;
                Ok(PyValue::Bool(self.acquire(me, 1, deadline)))
            }
            "release" => {
                bind_arguments(method, args, kwargs, &[])?;
                let mut state = lock(&self.state);
                match &mut state.owner {
                    Some((owner, count)) if *owner == me => {
                        *count -= 1;
                        if *count == 0 {
                            state.owner = None;
                            self.changed.notify_all();
                        }
                        Ok(PyValue::None)
                    }
                    _ => Err(runtime_error("cannot release un-acquired lock")),
                }
            }
            "wait" => {
                let bound =
                    bind_arguments(method, args, kwargs, &[("timeout", Some(PyValue::None))])?;
                let deadline = timeout_deadline(&bound[0])?;
                let mut state = lock(&self.state);
                if !Self::owned_by(&state, me) {
                    return Err(runtime_error("cannot wait on un-acquired lock"));
                }
                // Release the lock entirely, remembering how deep it was held.
                let held = state.owner.take().map_or(1, |(_, count)| count);
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.waiting.push_back(ticket);
                self.changed.notify_all();
                let (mut state, outcome) = wait_until(&self.changed, state, deadline, |s| {
                    s.notified.contains(&ticket)
                });
                let woken = outcome == Outcome::Ready;
                if woken {
                    state.notified.retain(|&t| t != ticket);
                } else {
                    state.waiting.retain(|&t| t != ticket);
                }
                if outcome == Outcome::PeerGone {
                    // The client is gone: a notification it was picked for goes to the next
                    // waiter, and the lock it gave up to wait is not taken back for it.
                    if state.notified.contains(&ticket) {
                        state.notified.retain(|&t| t != ticket);
                        if let Some(next) = state.waiting.pop_front() {
                            state.notified.push(next);
                        }
                        self.changed.notify_all();
                    }
                    return Ok(PyValue::Bool(false));
                }
                drop(state);
                // Take the lock back, however long that takes, as Python does.
                self.acquire(me, held, None);
                Ok(PyValue::Bool(woken))
            }
            "notify" | "notify_all" => {
                let n = if method == "notify" {
                    match &bind_arguments(method, args, kwargs, &[("n", Some(PyValue::Int(1)))])?[..]
                    {
                        [PyValue::Int(n)] => (*n).max(0) as usize,
                        _ => return Err(PyException::type_error("n must be an int")),
                    }
                } else {
                    bind_arguments(method, args, kwargs, &[])?;
                    usize::MAX
                };
                let mut state = lock(&self.state);
                if !Self::owned_by(&state, me) {
                    return Err(runtime_error("cannot notify on un-acquired lock"));
                }
                let n = n.min(state.waiting.len());
                let picked: Vec<u64> = state.waiting.drain(..n).collect();
                state.notified.extend(picked);
                self.changed.notify_all();
                Ok(PyValue::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}
