//! Which public types may cross threads, checked when the crate compiles.
//!
//! Every handle may be sent to, and shared with, other threads: the state behind it is in the
//! kernel or in shared memory, and each operation takes its own lock. A guard of a lock whose
//! holder is a thread (`Lock`, `RLock`, a `Condition`'s lock and the locks of `Value` and
//! `Array`) is neither `Send` nor `Sync`: the kernel ties a robust futex to the thread that
//! took it, so it must be released there. A change that loses or gains one of these traits
//! fails the build here, not in a user's crate.

use crate::managers::{
    ChallengeForm, ConnectOptions, Manager, ManagerProcess, ManagerServer, Proxy, PyException,
    QueueProxy, ServedArray, ServedBarrier, ServedCondition, ServedDict, ServedEvent, ServedList,
    ServedLock, ServedNamespace, ServedQueue, ServedSemaphore, ServedValue, ServerHandle,
};
use crate::pickle::{Limits, PickleError};
use crate::{
    connection, Array, ArrayGuard, AsyncResult, AuthKey, Barrier, BoundedSemaphore, Callbacks,
    Condition, ConditionGuard, Connection, Element, Error, Event, IMapIterator, JoinableQueue,
    Lock, LockGuard, MapResult, Pool, PoolBuilder, Process, ProcessBuilder, ProcessInfo, Queue,
    RLock, RLockGuard, RawArray, RawValue, RecvEnd, Semaphore, SemaphoreGuard, SendEnd,
    SimpleQueue, StartMethod, Value, ValueGuard,
};

const fn send_sync<T: Send + Sync + ?Sized>() {}
const fn send<T: Send + ?Sized>() {}

// Types without parameters.
const _: () = {
    send_sync::<Error>();
    send_sync::<crate::WireError>();
    send_sync::<PickleError>();
    send_sync::<Limits>();
    send_sync::<crate::pickle::PyValue>();
    send_sync::<Connection>();
    send_sync::<RecvEnd>();
    send_sync::<SendEnd>();
    send_sync::<connection::Listener>();
    send_sync::<connection::Client>();
    send_sync::<connection::TcpConnection>();
    send_sync::<Pool>();
    send_sync::<PoolBuilder>();
    send_sync::<ProcessBuilder>();
    send_sync::<ProcessInfo>();
    send_sync::<AuthKey>();
    send_sync::<StartMethod>();
    send_sync::<Barrier>();
    send_sync::<BoundedSemaphore>();
    send_sync::<Condition>();
    send_sync::<Event>();
    send_sync::<Lock>();
    send_sync::<RLock>();
    send_sync::<Semaphore>();
    send_sync::<SemaphoreGuard<'static>>();
    send_sync::<Manager>();
    send_sync::<ConnectOptions>();
    send_sync::<ChallengeForm>();
    send_sync::<ManagerServer>();
    send_sync::<ServerHandle>();
    send_sync::<ManagerProcess>();
    send_sync::<Proxy>();
    send_sync::<PyException>();
    send_sync::<ServedArray>();
    send_sync::<ServedBarrier>();
    send_sync::<ServedCondition>();
    send_sync::<ServedDict>();
    send_sync::<ServedEvent>();
    send_sync::<ServedList>();
    send_sync::<ServedLock>();
    send_sync::<ServedNamespace>();
    send_sync::<ServedQueue>();
    send_sync::<ServedSemaphore>();
    send_sync::<ServedValue>();
};

// Generic types, for every parameter that is itself `Send` (the items travel pickled; the
// handles hold none of them in memory another thread could reach unsynchronised).
#[allow(dead_code)] // never called: type-checking the body is the check
fn generic_handles<T: Send, S: Send + Sync, E: Element>() {
    send_sync::<Process<T>>();
    send_sync::<AsyncResult<T>>();
    send_sync::<MapResult<T>>();
    // It buffers results that came early: shared, it shares them.
    send::<IMapIterator<T>>();
    send_sync::<Queue<T>>();
    send_sync::<JoinableQueue<T>>();
    send_sync::<SimpleQueue<T>>();
    send_sync::<QueueProxy<T>>();
    send_sync::<Value<E>>();
    send_sync::<RawValue<E>>();
    send_sync::<Array<E>>();
    send_sync::<RawArray<E>>();
    // Callbacks run once, on the pool's result thread: they move there, they are not shared.
    send::<Callbacks<T>>();
    send_sync::<IMapIterator<S>>();
}

/// Compiles only while `T` does not implement `Send` (static_assertions' `assert_not_impl`):
/// for a `Send` type both impls apply and `some_item` is ambiguous.
trait AmbiguousIfSend<A> {
    fn some_item() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

/// As [`AmbiguousIfSend`], for `Sync`.
trait AmbiguousIfSync<A> {
    fn some_item() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

// Guards of thread-held locks stay on their thread.
const _: fn() = || {
    let _ = <LockGuard<'static> as AmbiguousIfSend<_>>::some_item;
    let _ = <RLockGuard<'static> as AmbiguousIfSend<_>>::some_item;
    let _ = <ConditionGuard<'static> as AmbiguousIfSend<_>>::some_item;
    let _ = <ValueGuard<'static, u64> as AmbiguousIfSend<_>>::some_item;
    let _ = <ArrayGuard<'static, u64> as AmbiguousIfSend<_>>::some_item;
    let _ = <LockGuard<'static> as AmbiguousIfSync<_>>::some_item;
    let _ = <RLockGuard<'static> as AmbiguousIfSync<_>>::some_item;
};
