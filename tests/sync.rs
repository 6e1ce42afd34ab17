//! Tests for the synchronisation primitives across processes: `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Event`, `Condition` and `Barrier` (CATALOGUE §9, §10, §17).

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{eventually, with};
use multiproc::{
    Barrier, BoundedSemaphore, Condition, Error, Event, Lock, Pipe, Process, RLock, RecvEnd,
    Semaphore, SendEnd, Value,
};

/// A hang guard: long enough never to fire on a loaded machine, short enough to end a
/// broken run.
const GUARD: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Takes `n` permits, each within the hang guard, and keeps them taken.
fn take(sem: &Semaphore, n: u32) {
    for _ in 0..n {
        sem.acquire_timeout(GUARD)
            .expect("a permit within the hang guard")
            .leak();
    }
}

/// Asserts that `f` took at least `at_least` (less 50 ms of clock slack; CATALOGUE §0).
fn took_at_least<R>(at_least: Duration, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    let elapsed = start.elapsed();
    assert!(
        elapsed + ms(50) >= at_least,
        "returned after {elapsed:?}, expected about {at_least:?}"
    );
    r
}

#[test]
fn smoke() {
    let lock = Lock::new().unwrap();
    drop(lock.acquire());
    let sem = Semaphore::new(1).unwrap();
    drop(sem.acquire());
    let event = Event::new().unwrap();
    event.set();
    assert!(event.is_set());
    let barrier = Barrier::new(1).unwrap();
    assert_eq!(barrier.wait().unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// §9 Lock and RLock

/// LOCK-01: acquire, locked, try_acquire while held, release, and releasing an unlocked
/// lock is an error.
/// Ported from CPython: _TestLock.test_lock
#[test]
fn lock_01_acquire_release() {
    let lock = Lock::new().unwrap();
    assert!(!lock.locked());
    let guard = lock.acquire();
    assert!(lock.locked());
    assert!(!guard.owner_died());
    assert!(lock.try_acquire().is_none());
    drop(guard);
    assert!(!lock.locked());
    assert!(matches!(lock.release(), Err(Error::NotHeld)));
    // Python's bare acquire() … release(): a leaked guard and an explicit release.
    lock.try_acquire().unwrap().leak();
    assert!(lock.locked());
    lock.release().unwrap();
    assert!(!lock.locked());
    assert!(matches!(lock.release(), Err(Error::NotHeld)));
}

fn hold_until_told((lock, res, held, go): (Lock, Value<u8>, Event, Event)) {
    let _guard = lock.acquire();
    res.set(u8::from(lock.locked()));
    held.set();
    assert!(go.wait_timeout(GUARD), "never told to release");
}

each_method! {
    /// LOCK-02: a lock taken in a child is locked as the parent and the child see it.
    /// Ported from CPython: _TestLock.test_lock_locked_2processes
    fn lock_02_locked_across_processes(method: StartMethod) {
        let lock = Lock::new().unwrap();
        let (res, held, go) = (Value::new(0u8).unwrap(), Event::new().unwrap(), Event::new().unwrap());
        let mut child = with(method)
            .spawn(hold_until_told, (lock.try_clone().unwrap(), res.try_clone().unwrap(), held.try_clone().unwrap(), go.try_clone().unwrap()))
            .unwrap();
        assert!(held.wait_timeout(GUARD));
        assert!(lock.locked());
        assert!(lock.try_acquire().is_none());
        go.set();
        child.join().unwrap();
        assert!(!lock.locked());
        assert_eq!(res.get(), 1);
    }
}

/// LOCK-03: an RLock is taken three times and released three times; it stays locked until
/// the last; one more release is an error.
/// Ported from CPython: _TestLock.test_rlock
#[test]
fn lock_03_rlock_counts() {
    let lock = RLock::new().unwrap();
    for _ in 0..3 {
        lock.acquire().leak();
    }
    assert_eq!(lock.count(), 3);
    for left in (0..3).rev() {
        assert!(lock.locked());
        lock.release().unwrap();
        assert_eq!(lock.count(), left);
    }
    assert!(!lock.locked());
    assert!(matches!(lock.release(), Err(Error::NotHeld)));
    // The same with guards.
    let a = lock.acquire();
    let b = lock.try_acquire().unwrap();
    let c = lock.acquire_timeout(ms(10)).unwrap();
    drop(c);
    drop(a);
    assert!(lock.locked());
    drop(b);
    assert!(!lock.locked());
}

/// LOCK-03 (other threads): an RLock held by one thread is not re-entrant for another, and
/// that thread may not release it.
/// Ported from CPython: _TestLock.test_rlock
#[test]
fn lock_03_rlock_belongs_to_its_thread() {
    let lock = RLock::new().unwrap();
    let guard = lock.acquire();
    let other = lock.try_clone().unwrap();
    std::thread::spawn(move || {
        assert!(other.try_acquire().is_none());
        assert!(!other.is_owned());
        assert!(matches!(other.release(), Err(Error::NotHeld)));
    })
    .join()
    .unwrap();
    assert!(lock.is_owned());
    drop(guard);
}

fn rlock_hold_until_told((lock, held, go): (RLock, Event, Event)) -> u32 {
    let _a = lock.acquire();
    let _b = lock.acquire();
    held.set();
    assert!(go.wait_timeout(GUARD), "never told to release");
    lock.count()
}

each_method! {
    /// LOCK-04: an RLock held by a child is locked for the parent.
    /// Ported from CPython: _TestLock.test_rlock_locked_2processes
    fn lock_04_rlock_held_by_a_child(method: StartMethod) {
        let lock = RLock::new().unwrap();
        let (held, go) = (Event::new().unwrap(), Event::new().unwrap());
        let mut child = with(method)
            .spawn(rlock_hold_until_told, (lock.try_clone().unwrap(), held.try_clone().unwrap(), go.try_clone().unwrap()))
            .unwrap();
        assert!(held.wait_timeout(GUARD));
        assert!(lock.locked());
        assert!(!lock.is_owned());
        assert!(lock.try_acquire().is_none());
        go.set();
        assert_eq!(child.join().unwrap(), 2);
        assert!(!lock.locked());
        drop(lock.try_acquire().unwrap());
    }
}

/// LOCK-05: a scoped acquire of a Lock or an RLock holds it and releases it at scope end.
/// Ported from CPython: _TestLock.test_lock_context, test_rlock_context
#[test]
fn lock_05_guards_release_at_scope_end() {
    let lock = Lock::new().unwrap();
    {
        let _guard = lock.acquire();
        assert!(lock.locked());
    }
    assert!(!lock.locked());
    let rlock = RLock::new().unwrap();
    {
        let _guard = rlock.acquire();
        assert!(rlock.locked());
    }
    assert!(!rlock.locked());
}

fn rlock_hold_until_told_then((lock, held, go): (RLock, Event, Event)) {
    let _a = lock.acquire();
    held.set();
    assert!(go.wait_timeout(GUARD), "never told to release");
}

each_method! {
    /// LOCK-06: `Debug` names the owner: nobody, this thread, another thread, another
    /// process; an RLock adds its count.
    /// Ported from CPython: _TestLock.test_repr_lock, test_repr_rlock
    fn lock_06_debug_names_the_owner(method: StartMethod) {
        let lock = Lock::new().unwrap();
        assert!(format!("{lock:?}").contains("nobody"), "{lock:?}");
        let guard = lock.acquire();
        assert!(format!("{lock:?}").contains("\"this thread\""), "{lock:?}");
        let other = lock.try_clone().unwrap();
        std::thread::spawn(move || {
            assert!(format!("{other:?}").contains("another thread of this process"), "{other:?}");
        })
        .join()
        .unwrap();
        drop(guard);

        let rlock = RLock::new().unwrap();
        let (a, b) = (rlock.acquire(), rlock.acquire());
        let shown = format!("{rlock:?}");
        assert!(shown.contains("\"this thread\"") && shown.contains("count: 2"), "{shown}");
        drop((b, a));
        assert!(format!("{rlock:?}").contains("count: 0"));

        let (res, held, go) = (Value::new(0u8).unwrap(), Event::new().unwrap(), Event::new().unwrap());
        let mut child = with(method)
            .spawn(hold_until_told, (lock.try_clone().unwrap(), res, held.try_clone().unwrap(), go.try_clone().unwrap()))
            .unwrap();
        assert!(held.wait_timeout(GUARD));
        assert!(format!("{lock:?}").contains("another process"), "{lock:?}");
        go.set();
        child.join().unwrap();

        let (held, go) = (Event::new().unwrap(), Event::new().unwrap());
        let mut child = with(method)
            .spawn(rlock_hold_until_told_then, (rlock.try_clone().unwrap(), held.try_clone().unwrap(), go.try_clone().unwrap()))
            .unwrap();
        assert!(held.wait_timeout(GUARD));
        let shown = format!("{rlock:?}");
        assert!(shown.contains("another process") && shown.contains("count: 1"), "{shown}");
        go.set();
        child.join().unwrap();
    }
}

fn hold_and_hang((lock, held): (Lock, SendEnd)) {
    let _guard = lock.acquire();
    held.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn rlock_hold_and_hang((lock, held): (RLock, SendEnd)) {
    let _a = lock.acquire();
    let _b = lock.acquire();
    held.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

each_method! {
    /// A process killed while it holds a `Lock` does not hang the others: the next acquirer
    /// takes it over and its guard says so; the lock works normally afterwards.
    fn lock_owner_killed_is_taken_over(method: StartMethod) {
        let lock = Lock::new().unwrap();
        let (told, held) = Pipe::one_way().unwrap();
        let mut holder = with(method).spawn(hold_and_hang, (lock.try_clone().unwrap(), held)).unwrap();
        told.recv::<()>().unwrap();
        assert!(lock.try_acquire().is_none());
        holder.kill().unwrap();
        let guard = lock.acquire_timeout(GUARD).expect("taken over within the hang guard");
        assert!(guard.owner_died());
        drop(guard);
        assert!(!lock.acquire().owner_died());
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
    }
}

each_method! {
    /// The kernel, not a poll, frees the lock of a killed holder: once the holder is reaped
    /// (its threads' robust lists walked), the lock names no owner, and the next acquirer gets
    /// it with `owner_died`. (A lock recovered by polling `/proc` would still name the dead
    /// thread here.) Issue 12, item 4.
    fn lock_of_killed_holder_is_marked_by_the_kernel(method: StartMethod) {
        let lock = Lock::new().unwrap();
        drop(lock.acquire());
        let (told, held) = Pipe::one_way().unwrap();
        let mut holder = with(method).spawn(hold_and_hang, (lock.try_clone().unwrap(), held)).unwrap();
        told.recv::<()>().unwrap();
        assert!(lock.locked());
        holder.kill().unwrap();
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
        assert!(!lock.locked(), "the dead holder still owns the lock: {lock:?}");
        let guard = lock.try_acquire().expect("free once its owner is dead");
        assert!(guard.owner_died());
        drop(guard);
        assert!(!lock.acquire().owner_died());
    }
}

each_method! {
    /// A waiter already asleep in `acquire` when the holder is SIGKILLed is woken and gets
    /// the lock with `owner_died` (the kernel wakes it; no timing is asserted). Issue 12,
    /// item 4.
    fn blocked_waiter_gets_lock_of_killed_holder(method: StartMethod) {
        let lock = Lock::new().unwrap();
        let (told, held) = Pipe::one_way().unwrap();
        let mut holder = with(method).spawn(hold_and_hang, (lock.try_clone().unwrap(), held)).unwrap();
        told.recv::<()>().unwrap();
        let (started, waiting) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                started.send(()).unwrap();
                let guard = lock.acquire_timeout(GUARD).expect("taken over within the hang guard");
                guard.owner_died()
            });
            waiting.recv().unwrap();
            holder.kill().unwrap();
            assert!(waiter.join().unwrap());
        });
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
        assert!(!lock.locked());
    }
}

/// A thread of this process that ends holding a `Lock` (its guard leaked) is a dead owner
/// too: the kernel marks the lock as the thread exits, and the next taker is told.
#[test]
fn lock_of_exited_thread_is_marked_by_the_kernel() {
    let lock = Lock::new().unwrap();
    let theirs = lock.try_clone().unwrap();
    // A plain `join` (pthread_join) returns once the thread has exited, robust list and all;
    // a scoped thread's end is signalled before that.
    std::thread::spawn(move || theirs.acquire().leak())
        .join()
        .unwrap();
    assert!(
        !lock.locked(),
        "the exited thread still owns the lock: {lock:?}"
    );
    let guard = lock.try_acquire().expect("free once its owner is gone");
    assert!(guard.owner_died());
}

each_method! {
    /// The same for an `RLock` held two levels deep: marked by the kernel, taken at count 1.
    fn rlock_of_killed_holder_is_marked_by_the_kernel(method: StartMethod) {
        let lock = RLock::new().unwrap();
        let (told, held) = Pipe::one_way().unwrap();
        let mut holder = with(method).spawn(rlock_hold_and_hang, (lock.try_clone().unwrap(), held)).unwrap();
        told.recv::<()>().unwrap();
        holder.kill().unwrap();
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
        assert!(!lock.locked());
        let guard = lock.try_acquire().expect("free once its owner is dead");
        assert!(guard.owner_died());
        assert_eq!(lock.count(), 1);
    }
}

each_method! {
    /// The same for an `RLock`: the taker starts at count 1.
    fn rlock_owner_killed_is_taken_over(method: StartMethod) {
        let lock = RLock::new().unwrap();
        let (told, held) = Pipe::one_way().unwrap();
        let mut holder = with(method).spawn(rlock_hold_and_hang, (lock.try_clone().unwrap(), held)).unwrap();
        told.recv::<()>().unwrap();
        holder.kill().unwrap();
        let guard = lock.acquire_timeout(GUARD).expect("taken over within the hang guard");
        assert!(guard.owner_died());
        assert_eq!(lock.count(), 1);
        drop(guard);
        assert!(!lock.locked());
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
    }
}

// ---------------------------------------------------------------------------------------
// §9 Semaphore, BoundedSemaphore, Event

/// SEM-01: values 2 → 1 → 0, try_acquire at 0 fails, releases raise it again, past the start.
/// Ported from CPython: _TestSemaphore.test_semaphore
#[test]
fn sem_01_counts() {
    let sem = Semaphore::new(2).unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.acquire().leak();
    assert_eq!(sem.get_value(), 1);
    sem.try_acquire().unwrap().leak();
    assert_eq!(sem.get_value(), 0);
    assert!(sem.try_acquire().is_none());
    assert_eq!(sem.get_value(), 0);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 1);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 2);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 3);
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 4);
}

/// SEM-02: a bounded semaphore counts the same way, and a release above its start value is
/// an error.
/// Ported from CPython: _TestSemaphore.test_bounded_semaphore
#[test]
fn sem_02_bounded() {
    let sem = BoundedSemaphore::new(2).unwrap();
    sem.acquire().leak();
    assert_eq!(sem.get_value(), 1);
    sem.try_acquire().unwrap().leak();
    assert_eq!(sem.get_value(), 0);
    assert!(sem.try_acquire().is_none());
    sem.release().unwrap();
    sem.release().unwrap();
    assert_eq!(sem.get_value(), 2);
    assert!(matches!(
        sem.release(),
        Err(Error::TooManyReleases { limit: 2 })
    ));
    assert_eq!(sem.get_value(), 2);
    // A guard gives its permit back.
    drop(sem.acquire());
    assert_eq!(sem.get_value(), 2);
}

/// SEM-03: at 0, try_acquire fails at once and acquire_timeout(t) fails after about t.
/// Ported from CPython: _TestSemaphore.test_timeout
#[test]
fn sem_03_timeout() {
    let sem = Semaphore::new(0).unwrap();
    assert!(sem.try_acquire().is_none());
    assert!(took_at_least(ms(100), || sem
        .acquire_timeout(ms(100))
        .is_none()));
    assert!(sem.acquire_timeout(Duration::ZERO).is_none());
}

fn set_after((event, delay_ms): (Event, u64)) {
    std::thread::sleep(ms(delay_ms));
    event.set();
}

each_method! {
    /// EVT-01: a new event is unset; waits time out; once set every wait returns at once;
    /// cleared, a child that sets it later wakes the parent's `wait()`.
    /// Ported from CPython: _TestEvent.test_event
    fn evt_01_event(method: StartMethod) {
        let event = Event::new().unwrap();
        assert!(!event.is_set());
        assert!(!event.wait_timeout(Duration::ZERO));
        assert!(!took_at_least(ms(100), || event.wait_timeout(ms(100))));
        event.set();
        assert!(event.is_set());
        event.wait();
        assert!(event.wait_timeout(ms(100)));
        event.clear();
        assert!(!event.is_set());
        let mut child = with(method).spawn(set_after, (event.try_clone().unwrap(), 100)).unwrap();
        assert!(event.wait_timeout(GUARD));
        assert!(event.is_set());
        child.join().unwrap();
    }
}

/// EVT-02: `Debug` shows whether the event is set.
/// Ported from CPython: _TestEvent.test_repr
#[test]
fn evt_02_debug_shows_set() {
    let event = Event::new().unwrap();
    assert!(format!("{event:?}").contains("set: false"));
    event.set();
    assert!(format!("{event:?}").contains("set: true"));
}

fn wait_for_event((event, waiting): (Event, SendEnd)) -> bool {
    waiting.send(&()).unwrap();
    event.wait_timeout(Duration::from_secs(5))
}

each_method! {
    /// Acceptance 23, event hand-off: a fresh event's `wait(0)` is false; a child blocked in
    /// `wait(5 s)` returns true once the parent sets it (after a handshake says it waits).
    fn acceptance_23_event_hand_off(method: StartMethod) {
        let event = Event::new().unwrap();
        assert!(!event.wait_timeout(Duration::ZERO));
        let (ready, there) = Pipe::one_way().unwrap();
        let mut child = with(method).spawn(wait_for_event, (event.try_clone().unwrap(), there)).unwrap();
        // Handshake: the child is about to wait, then the kernel shows it waiting.
        ready.recv_timeout::<()>(GUARD).unwrap();
        common::await_process_sleeping(child.pid());
        event.set();
        assert!(child.join().unwrap());
        assert_eq!(child.exitcode(), Some(0));
    }
}

fn hold_a_permit((sem, holders, max): (Semaphore, Value<u32>, Value<u32>)) {
    let _permit = sem
        .acquire_timeout(GUARD)
        .expect("a permit within the hang guard");
    let now = {
        let mut h = holders.lock();
        h.set(h.get() + 1);
        h.get()
    };
    {
        let mut m = max.lock();
        m.set(m.get().max(now));
    }
    std::thread::sleep(ms(20));
    let mut h = holders.lock();
    h.set(h.get() - 1);
}

each_method! {
    /// Acceptance 22, a semaphore bounds concurrency: of 10 processes through a
    /// `Semaphore(3)`, never more than 3 hold a permit at once.
    fn acceptance_22_semaphore_bounds_concurrency(method: StartMethod) {
        let sem = Semaphore::new(3).unwrap();
        let (holders, max) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
        let mut children: Vec<_> = (0..10)
            .map(|_| {
                let args = (sem.try_clone().unwrap(), holders.try_clone().unwrap(), max.try_clone().unwrap());
                with(method).spawn(hold_a_permit, args).unwrap()
            })
            .collect();
        for c in &mut children {
            c.join().unwrap();
        }
        let max = max.get();
        assert!((1..=3).contains(&max), "{max} holders at once");
        assert_eq!(holders.get(), 0);
        assert_eq!(sem.get_value(), 3);
    }
}

// ---------------------------------------------------------------------------------------
// §10 Condition

/// A condition waiter: counts itself in `sleeping` (under the lock, so that once the parent
/// holds the lock the waiter is registered), waits, counts itself in `woken`.
fn cond_waiter(
    (cond, sleeping, woken, timeout_ms): (Condition, Semaphore, Semaphore, u64),
) -> bool {
    let mut guard = cond.acquire();
    sleeping.release().unwrap();
    let notified = guard.wait_timeout(ms(timeout_ms));
    drop(guard);
    woken.release().unwrap();
    notified
}

/// Starts `procs` waiter processes and `threads` waiter threads.
#[allow(clippy::type_complexity)]
fn start_waiters(
    method: common::StartMethod,
    cond: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    timeout_ms: u64,
    (procs, threads): (usize, usize),
) -> (Vec<Process<bool>>, Vec<std::thread::JoinHandle<bool>>) {
    let args = || {
        (
            cond.try_clone().unwrap(),
            sleeping.try_clone().unwrap(),
            woken.try_clone().unwrap(),
            timeout_ms,
        )
    };
    let children = (0..procs)
        .map(|_| with(method).spawn(cond_waiter, args()).unwrap())
        .collect();
    let threads = (0..threads)
        .map(|_| {
            let a = args();
            std::thread::spawn(move || cond_waiter(a))
        })
        .collect();
    (children, threads)
}

/// Joins the waiters; how many were notified (rather than timed out).
fn notified(waiters: (Vec<Process<bool>>, Vec<std::thread::JoinHandle<bool>>)) -> usize {
    let (children, threads) = waiters;
    let mut n = 0;
    for mut c in children {
        n += usize::from(c.join().unwrap());
    }
    for t in threads {
        n += usize::from(t.join().unwrap());
    }
    n
}

fn woken_reaches(woken: &Semaphore, n: u32) -> bool {
    eventually(GUARD, || woken.get_value() >= n)
}

each_method! {
    /// COND-01: of two waiters (a process and a thread), `notify()` wakes exactly one, a
    /// second `notify()` the other.
    /// Ported from CPython: _TestCondition.test_notify
    fn cond_01_notify_one(method: StartMethod) {
        let cond = Condition::new().unwrap();
        let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let waiters = start_waiters(method, &cond, &sleeping, &woken, 30_000, (1, 1));
        take(&sleeping, 2);
        std::thread::sleep(ms(50));
        assert_eq!(woken.get_value(), 0);
        cond.acquire().notify(1);
        assert!(woken_reaches(&woken, 1));
        std::thread::sleep(ms(200));
        assert_eq!(woken.get_value(), 1, "one notify woke more than one waiter");
        cond.acquire().notify(1);
        assert!(woken_reaches(&woken, 2));
        assert_eq!(notified(waiters), 2);
        // Back at rest: a notify with nobody waiting is not kept for a later waiter.
        let guard = cond.acquire();
        guard.notify(1);
        drop(guard);
        assert!(!cond.acquire().wait_timeout(ms(50)));
    }
}

each_method! {
    /// COND-02: six waiters with a timeout all time out, none notified; six fresh waiters
    /// are all woken by `notify_all()`.
    /// Ported from CPython: _TestCondition.test_notify_all
    fn cond_02_notify_all(method: StartMethod) {
        let cond = Condition::new().unwrap();
        let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let waiters = start_waiters(method, &cond, &sleeping, &woken, 100, (3, 3));
        take(&sleeping, 6);
        assert!(woken_reaches(&woken, 6));
        assert_eq!(notified(waiters), 0);
        take(&Semaphore::try_clone(&woken).unwrap(), 6);

        let waiters = start_waiters(method, &cond, &sleeping, &woken, 30_000, (3, 3));
        take(&sleeping, 6);
        std::thread::sleep(ms(50));
        assert_eq!(woken.get_value(), 0);
        cond.acquire().notify_all();
        assert!(woken_reaches(&woken, 6));
        assert_eq!(notified(waiters), 6);
    }
}

/// Acceptance 24 is this row with a 200 ms settle.
fn notify_n_body(method: common::StartMethod) {
    let cond = Condition::new().unwrap();
    let (sleeping, woken) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let waiters = start_waiters(method, &cond, &sleeping, &woken, 30_000, (3, 3));
    take(&sleeping, 6);
    cond.acquire().notify(2);
    assert!(woken_reaches(&woken, 2));
    std::thread::sleep(ms(200));
    assert_eq!(woken.get_value(), 2, "notify(2) woke more than two");
    cond.acquire().notify(4);
    assert!(woken_reaches(&woken, 6));
    assert_eq!(notified(waiters), 6);
    // Nobody is left: notify(3) wakes nobody, and is not kept for a later waiter.
    cond.acquire().notify(3);
    assert!(!cond.acquire().wait_timeout(ms(50)));
}

each_method! {
    /// COND-03 and acceptance 24: of six waiters (3 processes, 3 threads), `notify(2)`
    /// wakes two (still two 200 ms later), `notify(4)` the other four, `notify(3)` nobody.
    /// Ported from CPython: _TestCondition.test_notify_n
    fn cond_03_notify_n(method: StartMethod) {
        notify_n_body(method);
    }
}

/// COND-04: a wait with nobody notifying returns false after about its timeout.
/// Ported from CPython: _TestCondition.test_timeout
#[test]
fn cond_04_timeout() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let mut guard = cond.acquire();
    assert!(!took_at_least(ms(100), || guard.wait_timeout(ms(100))));
    assert!(!guard.owner_died());
}

fn bump_state((cond, state, times): (Condition, Value<i32>, i32)) {
    for _ in 0..times {
        std::thread::sleep(ms(10));
        let guard = cond.acquire();
        state.set(state.get() + 1);
        guard.notify_all();
    }
}

each_method! {
    /// COND-05: `wait_for` re-checks its predicate over shared state on every notify and
    /// returns once it holds.
    /// Ported from CPython: _TestCondition.test_waitfor
    fn cond_05_wait_for(method: StartMethod) {
        let cond = Condition::new().unwrap();
        let state = Value::new(0i32).unwrap();
        let mut guard = cond.acquire();
        let mut child = with(method)
            .spawn(bump_state, (cond.try_clone().unwrap(), state.try_clone().unwrap(), 4))
            .unwrap();
        let mut checks = 0;
        assert!(guard.wait_for_timeout(|| { checks += 1; state.get() == 4 }, GUARD));
        assert!(checks >= 2, "the predicate was checked {checks} times");
        drop(guard);
        child.join().unwrap();
        assert_eq!(state.get(), 4);
    }
}

/// COND-06: `wait_for` with a predicate that never holds returns false after its timeout.
/// Ported from CPython: _TestCondition.test_waitfor_timeout
#[test]
fn cond_06_wait_for_timeout() {
    let cond = Condition::new().unwrap();
    let mut guard = cond.acquire();
    let mut checks = 0;
    let held = took_at_least(ms(100), || {
        guard.wait_for_timeout(
            || {
                checks += 1;
                false
            },
            ms(100),
        )
    });
    assert!(!held);
    assert!(checks >= 1);
}

fn notify_once(cond: Condition) {
    cond.acquire().notify(1);
}

each_method! {
    /// COND-07: `wait(0)` and `wait(100 ms)` are false; `wait(60 s)` is true as soon as a
    /// child notifies (the child can only take the lock once the parent waits).
    /// Ported from CPython: _TestCondition.test_wait_result
    fn cond_07_wait_result(method: StartMethod) {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let mut guard = cond.acquire();
        assert!(!guard.wait_timeout(Duration::ZERO));
        assert!(!guard.wait_timeout(ms(100)));
        let mut child = with(method).spawn(notify_once, cond.try_clone().unwrap()).unwrap();
        assert!(guard.wait_timeout(Duration::from_secs(60)));
        drop(guard);
        child.join().unwrap();
    }
}

/// One side of a ping-pong: waits for its turn `rounds` times, handing the turn over each
/// time; false if a wait ran into the hang guard (a lost wake-up).
fn take_turns((cond, turn, me, rounds): (Condition, Value<u32>, u32, u32)) -> bool {
    let mut guard = cond.acquire();
    for _ in 0..rounds {
        if !guard.wait_for_timeout(|| turn.get() == me, GUARD) {
            return false;
        }
        turn.set(1 - me);
        guard.notify(1);
    }
    true
}

each_method! {
    /// Two processes hand a turn back and forth 2000 times through one condition: no
    /// wake-up is lost.
    fn cond_ping_pong_loses_no_wake_up(method: StartMethod) {
        let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
        let turn = Value::new(0u32).unwrap();
        let mut child = with(method)
            .spawn(take_turns, (cond.try_clone().unwrap(), turn.try_clone().unwrap(), 1, 2000))
            .unwrap();
        assert!(take_turns((cond.try_clone().unwrap(), turn.try_clone().unwrap(), 0, 2000)));
        assert!(child.join().unwrap());
        assert_eq!(turn.get(), 0);
    }
}

fn serve(sems: (Semaphore, Semaphore, u32)) -> bool {
    let (ping, pong, rounds) = sems;
    for _ in 0..rounds {
        match ping.acquire_timeout(GUARD) {
            Some(permit) => permit.leak(),
            None => return false,
        }
        pong.release().unwrap();
    }
    true
}

each_method! {
    /// Two processes hand a permit back and forth 5000 times through two semaphores.
    fn semaphore_ping_pong(method: StartMethod) {
        let (ping, pong) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let mut child = with(method)
            .spawn(serve, (ping.try_clone().unwrap(), pong.try_clone().unwrap(), 5000))
            .unwrap();
        for _ in 0..5000 {
            ping.release().unwrap();
            pong.acquire_timeout(GUARD).expect("an answer within the hang guard").leak();
        }
        assert!(child.join().unwrap());
        assert_eq!((ping.get_value(), pong.get_value()), (0, 0));
    }
}

/// A condition over an RLock held twice: waiting releases both levels (another thread can
/// take the lock and notify) and takes both back.
#[test]
fn cond_over_rlock_releases_every_level() {
    let lock = RLock::new().unwrap();
    let cond = Condition::with_rlock(lock.try_clone().unwrap()).unwrap();
    let outer = lock.acquire();
    let mut guard = cond.acquire();
    assert_eq!(lock.count(), 2);
    let other = cond.try_clone().unwrap();
    let notifier = std::thread::spawn(move || {
        let g = other.acquire();
        g.notify_all();
    });
    assert!(guard.wait_timeout(GUARD));
    assert_eq!(lock.count(), 2);
    assert!(lock.is_owned());
    drop(guard);
    drop(outer);
    assert!(!lock.locked());
    notifier.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// §10 Barrier

fn pass_barrier((barrier, passes): (Barrier, u32)) -> Vec<usize> {
    (0..passes)
        .map(|_| barrier.wait_timeout(GUARD).unwrap())
        .collect()
}

/// Runs `parties - 1` children through `passes` passes beside the parent; each party's
/// indices, the parent's first.
fn run_parties(method: common::StartMethod, barrier: &Barrier, passes: u32) -> Vec<Vec<usize>> {
    let mut children: Vec<_> = (1..barrier.parties())
        .map(|_| {
            with(method)
                .spawn(pass_barrier, (barrier.try_clone().unwrap(), passes))
                .unwrap()
        })
        .collect();
    let mut all = vec![pass_barrier((barrier.try_clone().unwrap(), passes))];
    for c in &mut children {
        all.push(c.join().unwrap());
    }
    all
}

each_method! {
    /// BAR-01 and BAR-02: five processes pass once, then 10 times in a row; each pass
    /// hands out distinct indices in 0..5; afterwards nobody waits and it is not broken.
    /// Ported from CPython: _TestBarrier.test_barrier, test_barrier_10, test_wait_return
    fn bar_01_02_lockstep_and_indices(method: StartMethod) {
        let barrier = Barrier::new(5).unwrap();
        for passes in [1, 10] {
            let all = run_parties(method, &barrier, passes);
            for pass in 0..passes as usize {
                let mut indices: Vec<usize> = all.iter().map(|party| party[pass]).collect();
                indices.sort_unstable();
                assert_eq!(indices, [0, 1, 2, 3, 4], "pass {pass}");
            }
        }
        assert_eq!(barrier.n_waiting(), 0);
        assert!(!barrier.broken());
    }
}

/// The action's view of the shared pass counter, set by each party's process before it
/// waits (the action is a plain `fn()`, run in whichever process arrives last).
static PASS_COUNT: OnceLock<Value<u32>> = OnceLock::new();

fn count_pass() {
    let count = PASS_COUNT.get().expect("set before waiting");
    let mut g = count.lock();
    g.set(g.get() + 1);
}

fn party_with_action((barrier, count, passes): (Barrier, Value<u32>, u32)) -> Vec<u32> {
    let _ = PASS_COUNT.set(count);
    let count = PASS_COUNT.get().unwrap();
    (0..passes)
        .map(|_| {
            barrier.wait_timeout(GUARD).unwrap();
            count.get()
        })
        .collect()
}

each_method! {
    /// BAR-03: the action runs exactly once per pass, before any party is released: after
    /// pass k every party sees the count k.
    /// Ported from CPython: _TestBarrier.test_action
    fn bar_03_action_once_per_pass(method: StartMethod) {
        // Only children are parties: the parent's `PASS_COUNT` is shared by the tests that
        // run beside this one.
        const PASSES: u32 = 5;
        let barrier = Barrier::with_options(3, Some(count_pass), None).unwrap();
        let count = Value::new(0u32).unwrap();
        let mut children: Vec<_> = (0..3)
            .map(|_| {
                let args = (barrier.try_clone().unwrap(), count.try_clone().unwrap(), PASSES);
                with(method).spawn(party_with_action, args).unwrap()
            })
            .collect();
        for c in &mut children {
            assert_eq!(c.join().unwrap(), (1..=PASSES).collect::<Vec<_>>());
        }
        assert_eq!(count.get(), PASSES);
    }
}

fn wait_briefly((barrier, timeout_ms): (Barrier, Option<u64>)) -> bool {
    let result = match timeout_ms {
        Some(t) => barrier.wait_timeout(ms(t)),
        None => barrier.wait(),
    };
    matches!(result, Err(Error::BrokenBarrier))
}

each_method! {
    /// BAR-04: a wait that times out breaks the barrier for every party, with an explicit
    /// timeout and with the barrier's default one.
    /// Ported from CPython: _TestBarrier.test_timeout, test_default_timeout
    fn bar_04_timeout_breaks_it(method: StartMethod) {
        // Three parties, two arrive: both get BrokenBarrier.
        let barrier = Barrier::new(3).unwrap();
        let mut child = with(method).spawn(wait_briefly, (barrier.try_clone().unwrap(), Some(5_000))).unwrap();
        assert!(took_at_least(ms(100), || wait_briefly((barrier.try_clone().unwrap(), Some(100)))));
        assert!(child.join().unwrap());
        assert!(barrier.broken());
        assert!(matches!(barrier.wait_timeout(GUARD), Err(Error::BrokenBarrier)));

        let barrier = Barrier::with_options(3, None, Some(ms(100))).unwrap();
        assert_eq!(barrier.timeout(), Some(ms(100)));
        let mut child = with(method).spawn(wait_briefly, (barrier.try_clone().unwrap(), None)).unwrap();
        assert!(took_at_least(ms(100), || wait_briefly((barrier.try_clone().unwrap(), None))));
        assert!(child.join().unwrap());
        assert!(barrier.broken());
    }
}

/// BAR-05: a one-party barrier never blocks.
/// Ported from CPython: _TestBarrier.test_single_thread
#[test]
fn bar_05_single_party() {
    let barrier = Barrier::new(1).unwrap();
    for _ in 0..3 {
        assert_eq!(barrier.wait().unwrap(), 0);
    }
    assert!(matches!(Barrier::new(0), Err(Error::InvalidArgument(_))));
}

fn report_passes((barrier, lock, out, id, passes): (Barrier, Lock, SendEnd, u32, u32)) {
    for pass in 0..passes {
        let index = barrier.wait_timeout(GUARD).unwrap();
        let _guard = lock.acquire();
        out.send(&(pass, id, index)).unwrap();
    }
}

/// Five parties (four children and the parent) report `(pass, id, index)` after each pass;
/// checks that every message of pass k arrives before any of pass k+1 and that exactly one
/// party per pass got index 0.
fn lockstep_body(method: common::StartMethod, passes: u32) {
    let barrier = Barrier::new(5).unwrap();
    let lock = Lock::new().unwrap();
    let (inbox, out): (RecvEnd, SendEnd) = Pipe::one_way().unwrap();
    let mut children: Vec<_> = (1..5)
        .map(|id| {
            let args = (
                barrier.try_clone().unwrap(),
                lock.try_clone().unwrap(),
                out.try_clone().unwrap(),
                id,
                passes,
            );
            with(method).spawn(report_passes, args).unwrap()
        })
        .collect();
    let parent = {
        let args = (
            barrier.try_clone().unwrap(),
            lock.try_clone().unwrap(),
            out.try_clone().unwrap(),
            0,
            passes,
        );
        std::thread::spawn(move || report_passes(args))
    };
    for pass in 0..passes {
        let mut ids = Vec::new();
        let mut zeros = 0;
        for _ in 0..5 {
            let (p, id, index): (u32, u32, usize) = inbox.recv_timeout(GUARD).unwrap();
            assert_eq!(p, pass, "a message of pass {p} among those of pass {pass}");
            ids.push(id);
            zeros += usize::from(index == 0);
        }
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        assert_eq!(zeros, 1, "pass {pass}");
    }
    parent.join().unwrap();
    for c in &mut children {
        c.join().unwrap();
    }
    assert_eq!(barrier.n_waiting(), 0);
}

each_method! {
    /// BAR-06: 1000 passes by five parties stay in step.
    /// Ported from CPython: _TestBarrier.test_thousand
    fn bar_06_thousand_passes(method: StartMethod) {
        lockstep_body(method, 1000);
    }
}

each_method! {
    /// Acceptance 25, barrier lockstep: five processes, 100 passes, each sending
    /// `(pass, id)` through one pipe under a lock; pass k's messages all come before pass
    /// k+1's, and one party per pass gets index 0.
    fn acceptance_25_barrier_lockstep(method: StartMethod) {
        lockstep_body(method, 100);
    }
}

each_method! {
    /// BAR-07: `abort()` breaks the barrier: a waiting party gets `BrokenBarrier`, and so
    /// does every later wait.
    /// Ported from CPython: _TestBarrier.test_abort
    fn bar_07_abort(method: StartMethod) {
        let barrier = Barrier::new(3).unwrap();
        let mut child = with(method).spawn(wait_briefly, (barrier.try_clone().unwrap(), Some(30_000))).unwrap();
        assert!(eventually(GUARD, || barrier.n_waiting() == 1));
        barrier.abort();
        assert!(barrier.broken());
        assert!(child.join().unwrap());
        assert!(matches!(barrier.wait_timeout(GUARD), Err(Error::BrokenBarrier)));
        assert_eq!(barrier.n_waiting(), 0);
    }
}

each_method! {
    /// BAR-08: `reset()` sends a waiting party away with `BrokenBarrier` and the barrier
    /// works again; a broken (aborted) barrier can be reset and reused.
    /// Ported from CPython: _TestBarrier.test_reset, test_abort_and_reset
    fn bar_08_reset(method: StartMethod) {
        let barrier = Barrier::new(2).unwrap();
        let mut child = with(method).spawn(wait_briefly, (barrier.try_clone().unwrap(), Some(30_000))).unwrap();
        assert!(eventually(GUARD, || barrier.n_waiting() == 1));
        barrier.reset();
        assert!(child.join().unwrap());
        assert!(!barrier.broken());
        assert_eq!(run_parties(method, &barrier, 2).len(), 2);

        barrier.abort();
        assert!(barrier.broken());
        barrier.reset();
        assert!(!barrier.broken());
        let all = run_parties(method, &barrier, 3);
        assert_eq!(all.len(), 2);
        assert_eq!(barrier.n_waiting(), 0);
    }
}

fn panicking_action() {
    panic!("the action failed");
}

/// A panicking action breaks the barrier, and the last party's `wait` resumes the panic.
#[test]
fn bar_action_panic_breaks_the_barrier() {
    let barrier = Barrier::with_options(2, Some(panicking_action), None).unwrap();
    let other = barrier.try_clone().unwrap();
    let waiter = std::thread::spawn(move || other.wait_timeout(GUARD));
    assert!(eventually(GUARD, || barrier.n_waiting() == 1));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| barrier.wait()));
    assert!(caught.is_err());
    assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
    assert!(barrier.broken());
}

/// A handle received as the wrong kind is a typed error, not a misread region.
#[test]
fn wrong_kind_is_a_typed_error() {
    let sem = Semaphore::new(1).unwrap();
    let (here, there) = Pipe::new().unwrap();
    here.send(&sem).unwrap();
    let err = there.recv::<Event>().unwrap_err();
    assert!(
        matches!(&err, Error::Deserialize { reason, .. } if reason.contains("Semaphore")),
        "{err}"
    );
}
