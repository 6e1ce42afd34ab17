//! A served object that tells the test which thread serves a call, so that the test can wait
//! until that thread blocks (`await_thread_in_futex`) before it kills the client.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use multiproc::managers::{PyException, Referent};
use multiproc::pickle::PyValue;

/// Wraps `inner`, sending the id of the serving thread each time `method` is called.
pub struct Reporting {
    inner: Box<dyn Referent>,
    method: &'static str,
    calls: Mutex<Sender<i32>>,
}

impl Reporting {
    /// `inner`, reporting each call of `method` to the receiver.
    pub fn new(
        inner: impl Into<Box<dyn Referent>>,
        method: &'static str,
    ) -> (Arc<Reporting>, Receiver<i32>) {
        let (tx, rx) = channel();
        let object = Reporting {
            inner: inner.into(),
            method,
            calls: Mutex::new(tx),
        };
        (Arc::new(object), rx)
    }
}

impl Referent for Reporting {
    fn exposed(&self) -> Vec<String> {
        self.inner.exposed()
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        if method == self.method {
            let _ = self.calls.lock().unwrap().send(super::gettid());
        }
        self.inner.call(method, args, kwargs)
    }

    fn reply_undelivered(&self, method: &str, result: PyValue) {
        self.inner.reply_undelivered(method, result)
    }
}
