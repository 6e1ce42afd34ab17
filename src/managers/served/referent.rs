//! What a manager serves: objects with named methods called with pickled arguments.

use std::sync::Arc;

use super::python::PyException;
use crate::pickle::PyValue;

/// An object a manager server holds and clients call (CPython's "referent").
///
/// Arguments arrive as CPython's proxies send them: positional `args` and keyword `kwargs`,
/// exactly as the caller wrote them. [`bind_arguments`](crate::managers::bind_arguments) binds them to a parameter list the way Python
/// does. A method returns a value for `'#RETURN'` or raises a [`PyException`] for `'#ERROR'`.
///
/// # Examples
///
/// ```
/// use multiproc::managers::{bind_arguments, PyException, Referent};
/// use multiproc::pickle::PyValue;
///
/// struct Adder;
///
/// impl Referent for Adder {
///     fn exposed(&self) -> Vec<String> {
///         vec!["add".into()]
///     }
///     fn call(&self, method: &str, args: Vec<PyValue>, kwargs: Vec<(String, PyValue)>) -> Result<PyValue, PyException> {
///         match method {
///             "add" => match &bind_arguments("add", args, kwargs, &[("a", None), ("b", None)])?[..] {
///                 [PyValue::Int(a), PyValue::Int(b)] => Ok(PyValue::Int(a + b)),
///                 _ => Err(PyException::type_error("add() takes two ints")),
///             },
///             _ => Err(PyException::new("builtins", "AttributeError", method)),
///         }
///     }
/// }
///
/// let r = Adder.call("add", vec![PyValue::Int(2)], vec![("b".into(), PyValue::Int(3))]);
/// assert_eq!(r.unwrap(), PyValue::Int(5));
/// ```
pub trait Referent: Send + Sync + 'static {
    /// The method names clients may call (CPython's `exposed`; public names by convention).
    fn exposed(&self) -> Vec<String>;

    /// Runs `method`. Called on the thread serving the client's connection; a method may block
    /// (a queue's `get`), which delays only that client.
    ///
    /// # Errors
    ///
    /// The Python exception the client should see.
    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException>;

    /// The reply to a call of `method` that returned `result` could not be delivered: its
    /// client hung up while the call waited, or writing the reply failed. A method that took
    /// something (an item, a lock, a permit) gives it back here, so that a client that died
    /// takes nothing with it: a [`ServedQueue`](crate::managers::ServedQueue) puts the item back at its
    /// head. Called on the thread that served the call; the connection is closed afterwards.
    /// Does nothing by default.
    ///
    /// A blocking method that waits on a `Condvar` should also stop waiting when its client
    /// hangs up; the served types of this crate do (see [`ManagerServer`](crate::managers::ManagerServer)).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Referent, ServedQueue};
    /// use multiproc::pickle::PyValue;
    ///
    /// let q = ServedQueue::new(0);
    /// q.put(&1).unwrap();
    /// q.put(&2).unwrap();
    /// let taken = q.call("get", vec![], vec![]).unwrap();
    /// q.reply_undelivered("get", taken); // the client never saw it
    /// assert_eq!((q.get::<i64>().unwrap(), q.get::<i64>().unwrap()), (1, 2));
    /// ```
    fn reply_undelivered(&self, method: &str, result: PyValue) {
        let _ = (method, result);
    }

    /// The methods that return a new shared object instead of a value, each with the typeid
    /// the new object is served under (CPython's `method_to_typeid`). The server adds them to
    /// [`exposed`](Self::exposed), runs them with [`call_for_object`](Self::call_for_object),
    /// holds the new object for the caller and replies `'#PROXY'`: the client gets a proxy to
    /// it ([`Proxy::call_proxy`](crate::managers::Proxy::call_proxy); a CPython client must have
    /// registered the typeid, e.g. `register('Queue', create_method=False)`). None by default.
    fn method_to_typeid(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Runs a method listed by [`method_to_typeid`](Self::method_to_typeid) and returns the
    /// new object (CPython serves the method's result itself: `register(typeid,
    /// callable=None)`). The default raises `AttributeError`.
    ///
    /// # Errors
    ///
    /// The Python exception the client should see (`'#ERROR'`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use multiproc::managers::{bind_arguments, Manager, ManagerServer, PyException, QueueProxy, Referent, ServedQueue};
    /// use multiproc::pickle::PyValue;
    ///
    /// /// Hands out a fresh queue per call: `make()` returns a proxy, not a value.
    /// struct Queues;
    ///
    /// impl Referent for Queues {
    ///     fn exposed(&self) -> Vec<String> {
    ///         Vec::new()
    ///     }
    ///     fn call(&self, method: &str, _: Vec<PyValue>, _: Vec<(String, PyValue)>) -> Result<PyValue, PyException> {
    ///         Err(PyException::new("builtins", "AttributeError", method))
    ///     }
    ///     fn method_to_typeid(&self) -> Vec<(String, String)> {
    ///         vec![("make".into(), "Queue".into())]
    ///     }
    ///     fn call_for_object(&self, method: &str, args: Vec<PyValue>, kwargs: Vec<(String, PyValue)>) -> Result<Arc<dyn Referent>, PyException> {
    ///         let maxsize = match &bind_arguments(method, args, kwargs, &[("maxsize", Some(PyValue::Int(0)))])?[..] {
    ///             [PyValue::Int(n)] if *n >= 0 => *n as usize,
    ///             _ => return Err(PyException::type_error("maxsize must be a non-negative int")),
    ///         };
    ///         Ok(Arc::new(ServedQueue::new(maxsize)))
    ///     }
    /// }
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register("Queues", || Arc::new(Queues));
    /// let server = server.start_thread().unwrap();
    /// let queues = Manager::connect(server.address(), b"k").unwrap().create("Queues").unwrap();
    /// let q: QueueProxy<i32> = queues.call_proxy("make", vec![PyValue::Int(1)], vec![]).unwrap().into();
    /// q.put(&5).unwrap();
    /// assert!(q.is_full().unwrap());
    /// assert_eq!(server.number_of_objects(), 2);
    /// drop(q);
    /// assert_eq!(server.number_of_objects(), 1);
    /// ```
    fn call_for_object(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Arc<dyn Referent>, PyException> {
        let _ = (args, kwargs);
        Err(PyException::new(
            "builtins",
            "AttributeError",
            &format!("method {method:?} does not return a shared object"),
        ))
    }
}
