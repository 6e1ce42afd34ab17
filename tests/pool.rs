//! Tests for `Pool`: the calls, failures, lifecycle and workers (CATALOGUE §12–13).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{eventually, pid_exists};
use multiproc::{Callbacks, Error, Pool, StartMethod};
use serde::{Serialize, Serializer};

fn pool(method: StartMethod, n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .start_method(method)
        .build()
        .unwrap()
}

fn square(x: i64) -> i64 {
    x * x
}

fn squares(n: i64) -> Vec<i64> {
    (0..n).map(square).collect()
}

fn mul(a: i64, b: i64) -> i64 {
    a * b
}

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

fn nap_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail_on(x: i64) -> i64 {
    if x == 3 {
        panic!("bad input {x}");
    }
    x
}

/// A directory owned by one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("multiproc-pool-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes this worker's pid to `<dir>/pid`, then sleeps until killed.
fn report_then_hang(dir: String) -> u32 {
    let path = Path::new(&dir);
    std::fs::write(path.join("pid.tmp"), std::process::id().to_string()).unwrap();
    std::fs::rename(path.join("pid.tmp"), path.join("pid")).unwrap();
    std::thread::sleep(Duration::from_secs(120));
    0
}

fn wait_for_pid(dir: &TempDir) -> u32 {
    let file = dir.0.join("pid");
    assert!(eventually(Duration::from_secs(30), || file.exists()));
    std::fs::read_to_string(file).unwrap().parse().unwrap()
}

fn assert_reaped(pids: &[u32]) {
    for &pid in pids {
        assert!(
            eventually(Duration::from_secs(10), || !pid_exists(pid)),
            "worker {pid} still exists"
        );
    }
}

#[test]
fn smoke() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(square, 7).unwrap(), 49);
    pool.close();
    pool.join().unwrap();
}

each_method! {
    // CPython: _TestPool.test_apply, test_map; cf/test_process_pool: test_idle_process_reuse_multiple
    fn apply_map_and_pid_reuse(method: StartMethod) {
        let pool = pool(method, 3);
        let started: HashSet<u32> = pool.pids().into_iter().collect();
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
        assert_eq!(pool.map(square, 0..10).unwrap(), squares(10));
        assert_eq!(pool.map_chunked(square, 0..100, 20).unwrap(), squares(100));
        let pids: HashSet<u32> = pool.map_chunked(my_pid, 0..200, 1).unwrap().into_iter().collect();
        assert!(pids.len() <= 3 && pids.is_subset(&started), "{pids:?} vs {started:?}");
        let all = pool.pids();
        pool.close();
        pool.join().unwrap();
        assert_reaped(&all);
    }
}

// CPython: _TestPool.test_starmap
#[test]
fn starmap() {
    let pool = Pool::new(2).unwrap();
    let pairs: Vec<(i64, i64)> = (0..10).map(|i| (i, i + 1)).collect();
    let expected: Vec<i64> = pairs.iter().map(|&(a, b)| a * b).collect();
    assert_eq!(pool.starmap(mul, pairs.clone()).unwrap(), expected);
    assert_eq!(
        pool.starmap_async(mul, pairs, Some(3))
            .unwrap()
            .get()
            .unwrap(),
        expected
    );
}

// CPython: _TestPool.test_map_async, test_starmap_async, test_async
#[test]
fn async_calls_equal_blocking_ones() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.map_async(square, 0..10, None).unwrap().get().unwrap(),
        squares(10)
    );
    assert_eq!(
        pool.starmap_async(mul, [(2, 3), (4, 5)], None)
            .unwrap()
            .get()
            .unwrap(),
        [6, 20]
    );
    let result = pool.apply_async(square, 9).unwrap();
    assert_eq!(result.get().unwrap(), 81);
}

each_method! {
    // CPython: _TestPool.test_async_timeout
    fn get_timeout_then_get(method: StartMethod) {
        let pool = pool(method, 1);
        let mut result = pool.apply_async(nap_ms, 500).unwrap();
        assert!(matches!(result.get_timeout(Duration::from_millis(20)), Err(Error::Timeout)));
        assert!(!result.ready());
        assert_eq!(result.successful(), None);
        assert_eq!(result.get().unwrap(), 500);
    }
}

// CPython: _TestPool.test_imap
#[test]
fn imap_in_order() {
    let pool = Pool::new(2).unwrap();
    let got: Vec<i64> = pool
        .imap(square, 0..10, None)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, squares(10));
    let mut it = pool.imap(square, 0..1000, Some(100)).unwrap();
    for i in 0..1000 {
        assert_eq!(
            it.next_timeout(Duration::from_secs(60)).unwrap(),
            Some(i * i)
        );
    }
    assert!(it.next().is_none());
}

// CPython: _TestPool.test_imap_unordered
#[test]
fn imap_unordered_yields_each_once() {
    let pool = Pool::new(2).unwrap();
    for chunksize in [None, Some(100)] {
        let mut got: Vec<i64> = pool
            .imap_unordered(square, 0..1000, chunksize)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        got.sort_unstable();
        assert_eq!(got, squares(1000));
    }
}

// CPython: _TestPool.test_empty_iterable (bpo-12157), test_map_chunksize
#[test]
fn empty_input() {
    let pool = Pool::new(1).unwrap();
    let none: Vec<i64> = Vec::new();
    assert!(pool.map(square, none.clone()).unwrap().is_empty());
    assert!(pool
        .imap(square, none.clone(), None)
        .unwrap()
        .next()
        .is_none());
    assert!(pool
        .imap_unordered(square, none.clone(), None)
        .unwrap()
        .next()
        .is_none());
    assert!(pool
        .map_async(square, none.clone(), None)
        .unwrap()
        .get()
        .unwrap()
        .is_empty());
    let result = pool.map_async(square, none, Some(2)).unwrap();
    assert!(result.ready());
    assert!(result.get().unwrap().is_empty());
}

// CPython: cf/test_process_pool: ProcessPoolExecutorTest.test_map_chunksize
#[test]
fn chunksizes() {
    let pool = Pool::new(2).unwrap();
    assert!(matches!(
        pool.map_chunked(square, 0..10, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        pool.imap(square, 0..10, Some(0)),
        Err(Error::InvalidArgument(_))
    ));
    for chunksize in [1, 2, 7, 50, 1000] {
        assert_eq!(
            pool.map_chunked(square, 0..50, chunksize).unwrap(),
            squares(50)
        );
    }
}

// CPython: _TestPool.test_map_async_callbacks; _TestPoolWorkerErrors.test_async_error_callback
#[test]
fn callbacks() {
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel::<String>();
    let result = pool
        .map_async_with(
            square,
            0..10,
            None,
            Callbacks::new()
                .on_success(move |v| tx.send(v).unwrap())
                .on_error(move |e| etx.send(e.to_string()).unwrap()),
        )
        .unwrap();
    assert_eq!(result.get().unwrap(), squares(10));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        squares(10)
    );
    assert!(erx.try_recv().is_err());

    let (tx, rx) = mpsc::channel::<i64>();
    let (etx, erx) = mpsc::channel();
    let result = pool
        .apply_async_with(
            fail_on,
            3,
            Callbacks::new()
                .on_success(move |v| tx.send(v).unwrap())
                .on_error(move |e| etx.send(e.to_string()).unwrap()),
        )
        .unwrap();
    let err = result.get().unwrap_err();
    assert!(matches!(&err, Error::Panicked { message, .. } if message == "bad input 3"));
    assert_eq!(
        erx.recv_timeout(Duration::from_secs(30)).unwrap(),
        err.to_string()
    );
    assert!(rx.try_recv().is_err());
}

each_method! {
    // CPython: _TestPool.test_traceback (PERR-01); the worker survives a panic
    fn panicking_task(method: StartMethod) {
        let pool = pool(method, 2);
        let before: HashSet<u32> = pool.pids().into_iter().collect();
        for _ in 0..5 {
            match pool.apply(fail_on, 3) {
                Err(Error::Panicked { pid, message, .. }) => {
                    assert_eq!(message, "bad input 3");
                    assert!(before.contains(&pid));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(pool.map(fail_on, 0..10), Err(Error::Panicked { .. })));
        assert_eq!(pool.apply(fail_on, 4).unwrap(), 4);
        let after: HashSet<u32> = pool.pids().into_iter().collect();
        assert_eq!(before, after);
    }
}

/// A value whose serialization always fails.
#[derive(Debug, serde::Deserialize)]
struct Unpicklable;

impl Serialize for Unpicklable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "Unpicklable refuses to be pickled",
        ))
    }
}

fn make_unpicklable(_: u32) -> Unpicklable {
    Unpicklable
}

fn take_unpicklable(_: Unpicklable) -> u32 {
    1
}

// CPython: _TestPool.test_map_unplicklable (bpo-19425)
#[test]
fn unserializable_arguments_fail_promptly() {
    let pool = Pool::new(1).unwrap();
    assert!(matches!(
        pool.apply_async(take_unpicklable, Unpicklable),
        Err(Error::Serialize { .. })
    ));
    assert!(matches!(
        pool.map(take_unpicklable, [Unpicklable, Unpicklable]),
        Err(Error::Serialize { .. })
    ));
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

each_method! {
    // CPython: _TestPoolWorkerErrors.test_unpickleable_result
    fn unserializable_result(method: StartMethod) {
        let pool = pool(method, 1);
        let before = pool.pids();
        for _ in 0..20 {
            match pool.apply(make_unpicklable, 0) {
                Err(Error::Serialize { type_name, reason }) => {
                    assert!(type_name.contains("Unpicklable"));
                    assert!(reason.contains("refuses"), "{reason}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(pool.pids(), before);
        assert_eq!(pool.apply(square, 2).unwrap(), 4);
    }
}

fn huge_failure(x: i64) -> i64 {
    if x == 5 {
        panic!("{}", "x".repeat(1 << 20));
    }
    x
}

// CPython: _TestPool.test_map_no_failfast (bpo-23992)
#[test]
fn big_error_payloads_do_not_deadlock() {
    let pool = Pool::new(2).unwrap();
    match pool.map_chunked(huge_failure, 0..20, 1) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message.len(), 1 << 20),
        other => panic!("unexpected {other:?}"),
    }
    pool.close();
    pool.join().unwrap();
}

fn abort_on(x: i64) -> i64 {
    if x == 2 {
        std::process::abort();
    }
    x
}

fn exit_on(x: i64) -> i64 {
    if x == 2 {
        std::process::exit(3);
    }
    x
}

// CPython: cf/test_deadlock: test_crash_during_func_exec_on_worker (PERR-05, PERR-11)
#[test]
fn abort_in_a_task_is_worker_lost() {
    let pool = Pool::new(2).unwrap();
    match pool.apply(abort_on, 2) {
        Err(Error::WorkerLost { signal, .. }) => assert_eq!(signal, Some(libc::SIGABRT)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pool.map(abort_on, [1, 3, 4]).unwrap(), [1, 3, 4]);
    assert_eq!(pool.pids().len(), 2);
}

// CPython: cf/test_deadlock: test_exit_during_func_exec_on_worker (PERR-06)
#[test]
fn exit_in_a_task_is_worker_lost() {
    let pool = Pool::new(2).unwrap();
    match pool.apply(exit_on, 2) {
        Err(Error::WorkerLost { code, signal, .. }) => {
            assert_eq!((code, signal), (Some(3), None))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pool.apply(exit_on, 1).unwrap(), 1);
}

each_method! {
    // CPython: cf/test_process_pool: test_killed_child (PERR-10); bpo-22393 hangs CPython
    fn sigkill_a_worker_mid_task(method: StartMethod) {
        let dir = TempDir::new(&format!("kill-{}", method.name()));
        let pool = pool(method, 2);
        let before: HashSet<u32> = pool.pids().into_iter().collect();
        let victim = pool.apply_async(report_then_hang, dir.path()).unwrap();
        let others: Vec<_> = (0..20).map(|i| pool.apply_async(nap_ms, i % 3).unwrap()).collect();
        let pid = wait_for_pid(&dir);
        assert!(before.contains(&pid));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL)
            .unwrap();
        match victim.get() {
            Err(Error::WorkerLost { pid: lost, signal, code }) => {
                assert_eq!((lost, signal, code), (pid, Some(9), None));
            }
            other => panic!("unexpected {other:?}"),
        }
        for (i, r) in others.into_iter().enumerate() {
            assert_eq!(r.get().unwrap(), i as u64 % 3);
        }
        let after: HashSet<u32> = pool.pids().into_iter().collect();
        assert_eq!(after.len(), 2);
        assert!(!after.contains(&pid));
        assert_eq!(after.difference(&before).count(), 1);
        let all = pool.pids();
        pool.terminate();
        assert_reaped(&all);
    }
}

fn noop(_: u32) {}

/// Runs in a fresh child (so other tests' descriptors do not count): the descriptors open
/// before and after queueing 100 000 tasks on a pool, and the number of results.
fn fds_around_many_tasks(n: u32) -> (usize, usize, usize) {
    let pool = Pool::new(2).unwrap();
    let before = common::open_fds();
    let results: Vec<_> = (0..n).map(|i| pool.apply_async(noop, i).unwrap()).collect();
    let after = common::open_fds();
    let done = results
        .into_iter()
        .filter(|r| r.wait_timeout(Duration::from_secs(120)))
        .count();
    (before, after, done)
}

// CPython: cf/test_deadlock: test_gh105829_should_not_deadlock_if_wakeup_pipe_full (PERR-12)
#[test]
fn many_queued_tasks_use_constant_descriptors() {
    let mut child = common::with(StartMethod::Spawn)
        .spawn(fds_around_many_tasks, 100_000)
        .unwrap();
    let (before, after, done) = child.join().unwrap();
    assert_eq!(before, after);
    assert_eq!(done, 100_000);
    let pool = Pool::new(2).unwrap();
    let ids: Vec<u32> = (0..100_000).collect();
    assert_eq!(pool.map_chunked(my_pid, ids, 1).unwrap().len(), 100_000);
}

// CPython: _TestPool.test_make_pool (PLIFE-01)
#[test]
fn make_pool() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
    let pool = Pool::new(3).unwrap();
    assert_eq!(pool.processes(), 3);
    assert_eq!(pool.pids().len(), 3);
}

each_method! {
    // CPython: _TestPool.test_terminate (PLIFE-02); PLIFE-18
    fn terminate_with_tasks_in_flight(method: StartMethod) {
        let pool = pool(method, 2);
        let pids = pool.pids();
        let result = pool.map_async(nap_ms, vec![1000; 10_000], Some(1)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        pool.terminate();
        pool.join().unwrap();
        assert!(matches!(result.get(), Err(Error::Cancelled)));
        assert_reaped(&pids);
        assert!(matches!(pool.apply(square, 1), Err(Error::PoolClosed)));
    }
}

// CPython: _TestPool.test_context (PLIFE-03), _TestPool.test_enter (PLIFE-20);
// cf/test_shutdown: test_run_after_shutdown (PLIFE-04)
#[test]
fn closed_pool_rejects_work() {
    let pool = Pool::new(1).unwrap();
    let kept = pool.apply(square, 3).unwrap();
    pool.close();
    assert!(matches!(
        pool.apply_async(square, 1),
        Err(Error::PoolClosed)
    ));
    assert!(matches!(pool.map(square, 0..3), Err(Error::PoolClosed)));
    pool.join().unwrap();
    assert_eq!(kept, 9);
    let pool = Pool::new(1).unwrap();
    assert!(matches!(pool.join(), Err(Error::InvalidArgument(_))));
    pool.terminate();
    assert!(matches!(pool.apply(square, 1), Err(Error::PoolClosed)));
}

each_method! {
    // CPython: cf/test_shutdown: test_hang_issue12364 (PLIFE-05)
    fn close_then_join_runs_queued_work(method: StartMethod) {
        let pool = pool(method, 2);
        let pids = pool.pids();
        let results: Vec<_> = (0..50).map(|i| pool.apply_async(nap_ms, i % 4).unwrap()).collect();
        pool.close();
        pool.join().unwrap();
        for (i, r) in results.into_iter().enumerate() {
            assert!(r.ready());
            assert_eq!(r.get().unwrap(), i as u64 % 4);
        }
        assert_reaped(&pids);
    }
}

// CPython: _TestPool.test_resource_warning; cf/test_shutdown: test_del_shutdown (PLIFE-06)
#[test]
fn drop_reaps_every_worker() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.pids();
    let _pending = pool.apply_async(nap_ms, 10_000).unwrap();
    drop(pool);
    assert_reaped(&pids);
}

each_method! {
    // CPython: _TestPoolWorkerLifetime.test_pool_worker_lifetime (PLIFE-09)
    fn max_tasks_per_child_rotates_workers(method: StartMethod) {
        let pool = Pool::builder()
            .processes(3)
            .start_method(method)
            .max_tasks_per_child(10)
            .build()
            .unwrap();
        let first: HashSet<u32> = pool.pids().into_iter().collect();
        let results: Vec<_> = (0..100).map(|i| pool.apply_async(square, i).unwrap()).collect();
        let got: Vec<i64> = results.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(got, squares(100));
        let seen: HashSet<u32> = pool.map_chunked(my_pid, 0..30, 1).unwrap().into_iter().collect();
        assert!(seen.iter().any(|p| !first.contains(p)), "no new worker: {seen:?}");
        assert!(eventually(Duration::from_secs(30), || pool.pids().len() == 3));
    }
}

// CPython: _TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close (PLIFE-10);
// cf/test_process_pool: test_max_tasks_per_child_pending_tasks_gh115634 (PLIFE-13)
#[test]
fn recycling_never_strands_queued_work() {
    for (n, tasks, per_child) in [(1, 6, 1), (1, 6, 2), (2, 8, 2)] {
        let pool = Pool::builder()
            .processes(n)
            .max_tasks_per_child(per_child)
            .build()
            .unwrap();
        let results: Vec<_> = (0..tasks)
            .map(|i| pool.apply_async(square, i).unwrap())
            .collect();
        pool.close();
        pool.join().unwrap();
        let got: Vec<i64> = results.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(got, squares(tasks));
    }
}

// CPython: _TestPoolWorkerLifetime.test_pool_maxtasksperchild_invalid (PLIFE-11)
#[test]
fn max_tasks_per_child_zero_is_invalid() {
    let built = Pool::builder().max_tasks_per_child(0).build();
    assert!(matches!(built, Err(Error::InvalidArgument(_))));
}

// CPython: cf/test_process_pool: test_max_tasks_per_child (PLIFE-12)
#[test]
fn max_tasks_per_child_three() {
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..4).map(|i| pool.apply(my_pid, i).unwrap()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3]);
}

static INIT_RUNS: AtomicU32 = AtomicU32::new(0);
static INIT_VALUE: AtomicU32 = AtomicU32::new(0);

fn init(value: u32) {
    INIT_RUNS.fetch_add(1, Ordering::SeqCst);
    INIT_VALUE.store(value, Ordering::SeqCst);
}

fn init_state(_: u32) -> (u32, u32, u32) {
    (
        std::process::id(),
        INIT_RUNS.load(Ordering::SeqCst),
        INIT_VALUE.load(Ordering::SeqCst),
    )
}

each_method! {
    // CPython: TestInitializers.test_pool_initializer (PLIFE-16)
    fn initializer_runs_once_per_worker(method: StartMethod) {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .initializer(init, 42)
            .build()
            .unwrap();
        let seen = pool.map_chunked(init_state, 0..40, 1).unwrap();
        for (_, runs, value) in &seen {
            assert_eq!((*runs, *value), (1, 42));
        }
        assert!(seen.iter().map(|s| s.0).collect::<HashSet<_>>().len() <= 2);
    }
}

fn failing_init(_: u32) {
    panic!("initializer refuses");
}

// CPython: cf/test_init: FailingInitializerMixin.test_initializer (PLIFE-17)
#[test]
fn failing_initializer_breaks_the_pool() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(failing_init, 0)
        .build()
        .unwrap();
    let pending = pool.apply_async(square, 2);
    if let Ok(pending) = pending {
        assert!(matches!(pending.get(), Err(Error::PoolBroken { .. })));
    }
    assert!(eventually(Duration::from_secs(30), || matches!(
        pool.apply_async(square, 1),
        Err(Error::PoolBroken { reason }) if reason.contains("initializer refuses")
    )));
}

// CPython: MiscTestCase.test_large_pool (gh-89240) (PLIFE-19), scaled to 50 workers
#[test]
fn large_pool() {
    let pool = Pool::new(50).unwrap();
    let total: i64 = pool.map(square, 0..1000).unwrap().iter().sum();
    assert_eq!(total, (0..1000).map(square).sum());
}

/// Pickles fine; refuses to unpickle.
#[derive(Debug, Serialize)]
struct Undecodable(u32);

impl<'de> serde::Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "Undecodable refuses to be unpickled",
        ))
    }
}

fn take_undecodable(_: Undecodable) -> u32 {
    1
}

fn make_undecodable(x: u32) -> Undecodable {
    Undecodable(x)
}

// CPython: cf/test_deadlock: test_error_at_task_unpickle (PERR-07),
// test_error_during_result_unpickle_in_result_handler (PERR-08)
#[test]
fn decode_failures_fail_only_their_task() {
    let pool = Pool::new(1).unwrap();
    let before = pool.pids();
    match pool.apply(take_undecodable, Undecodable(1)) {
        Err(Error::Deserialize { type_name, reason }) => {
            assert!(type_name.contains("Undecodable"), "{type_name}");
            assert!(reason.contains("refuses"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match pool.apply(make_undecodable, 1) {
        Err(Error::Deserialize { reason, .. }) => assert!(reason.contains("refuses")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pool.pids(), before);
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

fn abort_big(data: multiproc::ByteBuf) -> usize {
    if data[0] == 1 {
        std::process::abort();
    }
    data.len()
}

// CPython: cf/test_deadlock: test_crash_big_data (gh-94777) (PERR-09)
#[test]
fn crash_with_big_payloads_in_flight() {
    let pool = Pool::new(2).unwrap();
    let big = |first: u8| {
        let mut v = vec![0u8; 4 << 20];
        v[0] = first;
        multiproc::ByteBuf::from(v)
    };
    let results: Vec<_> = [0, 1, 0, 0, 1, 0]
        .into_iter()
        .map(|first| (first, pool.apply_async(abort_big, big(first)).unwrap()))
        .collect();
    for (first, result) in results {
        match (first, result.get()) {
            (0, Ok(len)) => assert_eq!(len, 4 << 20),
            (1, Err(Error::WorkerLost { signal, .. })) => assert_eq!(signal, Some(libc::SIGABRT)),
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pool.pids().len(), 2);
}

// A callback that owns the pool and drops it must not wait for itself.
#[test]
fn dropping_the_pool_in_its_own_callback() {
    let pool = std::sync::Arc::new(Pool::new(1).unwrap());
    let pids = pool.pids();
    let (tx, rx) = mpsc::channel();
    let held = std::sync::Arc::clone(&pool);
    let result = pool
        .apply_async_with(
            nap_ms,
            300,
            Callbacks::new().on_success(move |v| {
                // By now the test has dropped its handle: this is the last one.
                drop(held);
                tx.send(v).unwrap();
            }),
        )
        .unwrap();
    drop(pool);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), 300);
    assert_eq!(result.get().unwrap(), 300);
    assert_reaped(&pids);
}

/// Runs in a child: starts a pool, reports its workers, and exits with the pool alive.
fn exit_with_live_pool(conn: multiproc::Connection) {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(square, 2).unwrap(), 4);
    conn.send(&pool.pids()).unwrap();
    std::process::exit(0);
}

// CPython: _TestPoolWorkerLifetime.test_worker_finalization_via_atexit_handler_of_multiprocessing
// (bpo-38744) (PLIFE-07)
#[test]
fn program_exiting_with_a_live_pool() {
    let (here, there) = multiproc::Pipe::new().unwrap();
    let mut child = common::with(StartMethod::Spawn)
        .spawn(exit_with_live_pool, there)
        .unwrap();
    let workers: Vec<u32> = here.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(matches!(child.join(), Err(Error::Exited { code: 0, .. })));
    for pid in workers {
        // Orphaned daemon workers die with their parent; whoever adopted them reaps them.
        assert!(eventually(Duration::from_secs(30), || common::pid_state(
            pid
        )
        .is_none_or(|s| s == 'Z')));
    }
}

/// Ends the worker while it is being unpickled there.
#[derive(Debug, Serialize)]
struct ExitsWhenDecoded;

impl<'de> serde::Deserialize<'de> for ExitsWhenDecoded {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        std::process::exit(7)
    }
}

/// Crashes the worker while it is being pickled there.
#[derive(Debug, serde::Deserialize)]
struct AbortsWhenEncoded;

impl Serialize for AbortsWhenEncoded {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        std::process::abort()
    }
}

fn take_exiting(_: ExitsWhenDecoded) -> u32 {
    1
}

fn make_aborting(_: u32) -> AbortsWhenEncoded {
    AbortsWhenEncoded
}

// CPython: cf/test_deadlock: test_exit_at_task_unpickle (PERR-07),
// test_crash_during_result_pickle_on_worker (PERR-08)
#[test]
fn worker_death_while_pickling_fails_only_that_task() {
    let pool = Pool::new(2).unwrap();
    match pool.apply(take_exiting, ExitsWhenDecoded) {
        Err(Error::WorkerLost { code, .. }) => assert_eq!(code, Some(7)),
        other => panic!("unexpected {other:?}"),
    }
    match pool.apply(make_aborting, 0) {
        Err(Error::WorkerLost { signal, .. }) => assert_eq!(signal, Some(libc::SIGABRT)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pool.map(square, 0..4).unwrap(), squares(4));
}

// CPython: cf/test_process_pool: test_killed_child with SIGTERM (PERR-10);
// test_force_shutdown_workers_dead_workers (PLIFE-18)
#[test]
fn sigterm_mid_task_then_terminate_with_dead_workers() {
    let dir = TempDir::new("term");
    let pool = Pool::new(1).unwrap();
    let victim = pool.apply_async(report_then_hang, dir.path()).unwrap();
    let pid = wait_for_pid(&dir);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    match victim.get() {
        Err(Error::WorkerLost {
            pid: lost, signal, ..
        }) => {
            assert_eq!((lost, signal), (pid, Some(libc::SIGTERM)))
        }
        other => panic!("unexpected {other:?}"),
    }
    // Kill the replacement from outside too; terminate must still be clean.
    let replacement = pool.pids();
    for &p in &replacement {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
    }
    pool.terminate();
    pool.join().unwrap();
    assert_reaped(&replacement);
    assert!(matches!(pool.apply(square, 1), Err(Error::PoolClosed)));
}

/// Lowers this process's descriptor limit to `extra` above the descriptors open now, so that
/// starting processes (sockets, pidfds) fails with `EMFILE` soon: the one way to make a worker
/// fail to start that also works as root.
fn allow_only(extra: usize) {
    let limit = (common::open_fds() + extra) as libc::rlim_t;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `rl` is a valid rlimit for the duration of the call.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    assert_eq!(ret, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Live (not zombie) children of this process.
fn live_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
    {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.retain(|&p| common::pid_state(p).is_some_and(|s| s != 'Z'));
    out
}

/// Runs in a spawned child (its descriptor limit must not touch the test harness): a pool of
/// eight spawn workers with room for about two. Returns whether `build` failed, and the
/// children left running a moment later.
fn pool_that_cannot_start(_: ()) -> (bool, Vec<u32>) {
    allow_only(8);
    let result = Pool::builder()
        .processes(8)
        .start_method(StartMethod::Spawn)
        .build();
    let failed = result.is_err();
    drop(result);
    let mut left = live_children();
    for _ in 0..200 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        left = live_children();
    }
    (failed, left)
}

// CPython: TestPoolNotLeakOnFailure.test_release_unused_processes (PLIFE-15, bpo-19675)
#[test]
fn failing_to_start_a_worker_leaves_none_running() {
    let mut child = common::with(StartMethod::Spawn)
        .spawn(pool_that_cannot_start, ())
        .unwrap();
    let (failed, left) = child.join().unwrap();
    assert!(failed, "a pool of 8 started with descriptors for about 2");
    assert!(left.is_empty(), "workers left running: {left:?}");
}

/// Runs in a spawned child: a pool of two spawn workers, then no descriptor to spare, then a
/// worker killed while tasks are queued. Its replacement cannot start; every task must still
/// end (done, or failed with an error saying why) instead of waiting for ever.
fn pool_whose_replacement_cannot_start(_: ()) -> (usize, usize, bool) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    let pending: Vec<_> = (0..40)
        .map(|_| pool.apply_async(nap_ms, 20).unwrap())
        .collect();
    allow_only(0);
    let victim = pool.pids()[0];
    // SAFETY: signalling our own pool worker.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let (mut done, mut failed, mut says_broken) = (0, 0, false);
    for mut result in pending {
        match result.get_timeout(Duration::from_secs(60)) {
            Ok(_) => done += 1,
            Err(Error::Timeout) => panic!("a task waited for ever"),
            Err(e) => {
                failed += 1;
                says_broken |= matches!(e, Error::PoolBroken { .. });
            }
        }
    }
    (done, failed, says_broken)
}

// CPython: cf/test_process_pool: test_failed_worker_replacement_breaks_pool (PLIFE-14)
#[test]
fn a_replacement_that_cannot_start_fails_the_queued_tasks() {
    let mut child = common::with(StartMethod::Spawn)
        .spawn(pool_whose_replacement_cannot_start, ())
        .unwrap();
    let (done, failed, says_broken) = child.join().unwrap();
    assert_eq!(done + failed, 40);
    assert!(failed > 0, "the killed worker's tasks fail");
    assert!(
        says_broken,
        "queued tasks say the pool is broken ({done} done, {failed} failed)"
    );
}

/// The length of a buffer (a `map` whose results are small, so only the inputs are large).
fn byte_len(v: Vec<u8>) -> usize {
    v.len()
}

/// The size of each item in [`large_map_memory_is_bounded`].
const LARGE_ITEM: usize = 16 << 20;

/// This process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

/// Run in a child process by [`large_map_memory_is_bounded`], so that no other test's memory
/// counts: `map` over four large `Vec<u8>` pickles them as it sends them, so the parent's peak
/// grows by at most 5 times one item (it was every chunk pickled at once: 8 items' worth).
#[test]
#[ignore = "run in a child process by large_map_memory_is_bounded"]
fn large_map_memory_child() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(byte_len, [vec![1u8; 16]]).unwrap(), [16]);
    let items: Vec<Vec<u8>> = (1..=4).map(|i| vec![i as u8; LARGE_ITEM]).collect();
    let before = peak_rss();
    let lens = pool.map(byte_len, items).unwrap();
    let growth = peak_rss().saturating_sub(before);
    println!("peak growth {} MiB", growth >> 20);
    assert_eq!(lens, [LARGE_ITEM; 4]);
    assert!(
        growth <= 5 * LARGE_ITEM,
        "parent peak grew by {} MiB for items of {} MiB",
        growth >> 20,
        LARGE_ITEM >> 20
    );
}

#[test]
fn large_map_memory_is_bounded() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "large_map_memory_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
