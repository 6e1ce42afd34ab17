//! Tests for `Queue` and `JoinableQueue`: CPython's queue behaviours (CATALOGUE §7, §8), many
//! producers and consumers, items of any size, capacity and timeouts, deaths mid-stream.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kills::{assert_prefixes, get_forever, put_forever};
use common::with;
use multiproc::{ByteBuf, Connection, Error, JoinableQueue, Pipe, Process, Queue, StartMethod};
use serde::{Serialize, Serializer};

/// A value whose pickling always fails (CPython's "unpicklable object").
struct Unpicklable;

impl Serialize for Unpicklable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be pickled",
        ))
    }
}

/// Either a number or something that cannot be pickled, for Q-08.
#[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
enum Maybe {
    Number(u32),
    #[serde(serialize_with = "refuse", skip_deserializing)]
    Refuses,
}

fn refuse<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
    Unpicklable.serialize(s)
}

fn assert_at_least(start: Instant, at_least: Duration) {
    let took = start.elapsed();
    assert!(
        took >= at_least,
        "returned after {took:?}, before {at_least:?}"
    );
}

fn take_six(q: Queue<u32>) {
    for _ in 0..6 {
        q.get().unwrap();
    }
}

each_method! {
    /// a bounded queue fills with every kind of put; on a full queue
    /// `try_put` fails at once and `put_timeout` after its timeout; a child empties it.
    ///
    /// Ported from CPython: _TestQueue.test_put
    fn q01_q03_bounded_put(method: StartMethod) {
        let q = Queue::bounded(6).unwrap();
        assert_eq!(q.maxsize(), Some(6));
        q.put(&1u32).unwrap();
        q.put_timeout(&2, Duration::from_secs(1)).unwrap();
        q.try_put(&3).unwrap();
        q.put(&4).unwrap();
        q.put_timeout(&5, Duration::from_millis(100)).unwrap();
        q.try_put(&6).unwrap();
        assert!(!q.is_empty().unwrap());
        assert!(q.is_full().unwrap());
        assert_eq!(q.qsize().unwrap(), 6);

        assert!(matches!(q.try_put(&7), Err(Error::Full)));
        let start = Instant::now();
        assert!(matches!(q.put_timeout(&7, Duration::from_millis(200)), Err(Error::Full)));
        assert_at_least(start, Duration::from_millis(150));

        with(method).spawn(take_six, q.try_clone().unwrap()).unwrap().join().unwrap();
        assert!(q.is_empty().unwrap());
        assert!(!q.is_full().unwrap());
        assert_eq!(q.qsize().unwrap(), 0);
    }
}

fn put_in_order((q, n): (Queue<u32>, u32)) {
    for i in 0..n {
        q.put(&i).unwrap();
    }
}

each_method! {
    /// a child's items come out in order through each kind of get; an empty queue
    /// gives `Empty` at once from `try_get` and after the timeout from `get_timeout`.
    ///
    /// Ported from CPython: _TestQueue.test_get, _TestQueue.test_timeout
    fn q04_q05_get(method: StartMethod) {
        let q = Queue::new().unwrap();
        with(method).spawn(put_in_order, (q.try_clone().unwrap(), 4)).unwrap().join().unwrap();
        assert_eq!(q.get().unwrap(), 0);
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 1);
        assert_eq!(q.try_get().unwrap(), 2);
        assert_eq!(q.get_timeout(Duration::from_millis(1)).unwrap(), 3);
        assert!(q.is_empty().unwrap());

        assert!(matches!(q.try_get(), Err(Error::Empty)));
        let start = Instant::now();
        assert!(matches!(q.get_timeout(Duration::from_millis(200)), Err(Error::Empty)));
        assert_at_least(start, Duration::from_millis(150));
    }
}

/// The issue's own timing test: `get_timeout(100 ms)` on an empty queue is `Empty`, not before
/// 100 ms.
#[test]
fn get_timeout_100ms_on_an_empty_queue() {
    let q: Queue<u8> = Queue::new().unwrap();
    let start = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(Error::Empty)
    ));
    assert_at_least(start, Duration::from_millis(100));
}

fn put_ten_more((q, from): (Queue<u32>, u32)) {
    for i in from..from + 10 {
        q.put(&i).unwrap();
    }
}

each_method! {
    /// items the parent put before starting a child come out before the child's, and a
    /// queue in use keeps working in the child: 0..19 in order, then `Empty`.
    ///
    /// Ported from CPython: _TestQueue.test_fork
    fn q06_queue_in_use_passes_to_a_child(method: StartMethod) {
        let q = Queue::new().unwrap();
        for i in 0..10 {
            q.put(&i).unwrap();
        }
        with(method).spawn(put_ten_more, (q.try_clone().unwrap(), 10)).unwrap().join().unwrap();
        let got: Vec<u32> = (0..20).map(|_| q.get_timeout(Duration::from_secs(10)).unwrap()).collect();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    }
}

/// `qsize` is exact within one process.
///
/// Ported from CPython: _TestQueue.test_qsize
#[test]
fn q07_qsize() {
    let q = Queue::new().unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
    q.put(&1u8).unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
    q.put(&2).unwrap();
    assert_eq!(q.qsize().unwrap(), 2);
    q.get().unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
    q.get().unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
}

/// Q-08 (and Q-10: no feeder error hook is needed): an item that cannot be pickled is a
/// `Serialize` error for the putter, and the queue is intact; on a bounded queue it took no
/// slot.
///
/// Ported from CPython: _TestQueue.test_queue_feeder_donot_stop_onexc,
/// _TestQueue.test_queue_feeder_on_queue_feeder_error
#[test]
fn q08_unpicklable_item_leaves_the_queue_intact() {
    for q in [Queue::new().unwrap(), Queue::bounded(1).unwrap()] {
        assert!(matches!(
            q.put(&Maybe::Refuses),
            Err(Error::Serialize { .. })
        ));
        assert!(matches!(
            q.try_put(&Maybe::Refuses),
            Err(Error::Serialize { .. })
        ));
        assert!(q.is_empty().unwrap());
        q.try_put(&Maybe::Number(7)).unwrap();
        assert_eq!(q.get().unwrap(), Maybe::Number(7));
    }
}

/// a closed handle refuses `put` and `get` with `Closed` (other handles keep working).
///
/// Ported from CPython: _TestQueue.test_closed_queue_put_get_exceptions
#[test]
fn q09_closed_queue_refuses_put_and_get() {
    let mut q = Queue::new().unwrap();
    let other = q.try_clone().unwrap();
    q.put(&1u8).unwrap();
    q.close();
    assert!(matches!(q.put(&2), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert!(matches!(q.is_empty(), Err(Error::Closed)));
    assert!(matches!(q.try_clone(), Err(Error::Closed)));
    assert_eq!(other.get().unwrap(), 1);
}

fn consume_and_mark_done(q: JoinableQueue<Option<u32>>) {
    while let Some(_n) = q.get().unwrap() {
        std::thread::sleep(Duration::from_millis(1));
        q.task_done().unwrap();
    }
    q.task_done().unwrap();
}

each_method! {
    /// JQ-01: four consumer processes mark each item done; `join` returns once all are done,
    /// and sentinels stop them.
    ///
    /// Ported from CPython: _TestQueue.test_task_done
    fn jq01_join_waits_for_every_task(method: StartMethod) {
        let q = JoinableQueue::new().unwrap();
        let mut workers: Vec<_> = (0..4)
            .map(|_| with(method).spawn(consume_and_mark_done, q.try_clone().unwrap()).unwrap())
            .collect();
        for i in 0..10 {
            q.put(&Some(i)).unwrap();
        }
        q.join();
        assert_eq!(q.unfinished_tasks(), 0);
        assert!(q.is_empty().unwrap());
        for _ in &workers {
            q.put(&None).unwrap();
        }
        for w in &mut workers {
            w.join().unwrap();
        }
        q.join_timeout(Duration::from_secs(10)).unwrap();
    }
}

/// JQ-02: `task_done` more often than items were put is an error and leaves the count sound.
///
/// Ported from CPython: _TestQueue.test_shutdown_immediate_with_unfinished (its extra
/// `task_done` check)
#[test]
fn jq02_too_many_task_done_is_an_error() {
    let q = JoinableQueue::new().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
    q.put(&1u8).unwrap();
    q.put(&2).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    q.get().unwrap();
    q.task_done().unwrap();
    assert!(matches!(
        q.join_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    q.get().unwrap();
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
    assert_eq!(q.unfinished_tasks(), 0);
    q.join();
}

/// JoinableQueue: a failed put is not counted as a task.
#[test]
fn joinable_failed_put_counts_no_task() {
    let q = JoinableQueue::bounded(1).unwrap();
    q.put(&Maybe::Number(1)).unwrap();
    assert!(matches!(q.try_put(&Maybe::Number(2)), Err(Error::Full)));
    assert!(matches!(
        q.put(&Maybe::Refuses),
        Err(Error::Serialize { .. })
    ));
    assert_eq!(q.unfinished_tasks(), 1);
}

fn produce((q, id, n): (Queue<(u32, u32)>, u32, u32)) {
    for i in 0..n {
        q.put(&(id, i)).unwrap();
    }
}

/// Takes items until it has seen a `u32::MAX` sentinel; returns them in the order taken.
fn consume_until_sentinel(q: Queue<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    loop {
        let item = q.get().unwrap();
        if item.0 == u32::MAX {
            return got;
        }
        got.push(item);
    }
}

/// Checks that every producer's items arrived exactly once, each consumer seeing each producer's
/// items in order.
fn check_exactly_once(per_consumer: Vec<Vec<(u32, u32)>>, producers: u32, each: u32) {
    let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for got in per_consumer {
        let mut last: BTreeMap<u32, u32> = BTreeMap::new();
        for (id, i) in got {
            if let Some(prev) = last.insert(id, i) {
                assert!(i > prev, "producer {id}: {i} after {prev}");
            }
            seen.entry(id).or_default().push(i);
        }
    }
    for id in 0..producers {
        let mut got = seen.remove(&id).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got.len(), each as usize, "producer {id}: wrong count");
        assert_eq!(got, (0..each).collect::<Vec<_>>(), "producer {id}");
    }
    assert!(seen.is_empty());
}

fn many_to_many(
    method: StartMethod,
    q: Queue<(u32, u32)>,
    producers: u32,
    consumers: u32,
    each: u32,
) {
    let consumer_procs: Vec<_> = (0..consumers)
        .map(|_| {
            with(method)
                .spawn(consume_until_sentinel, q.try_clone().unwrap())
                .unwrap()
        })
        .collect();
    let producer_procs: Vec<_> = (0..producers)
        .map(|id| {
            with(method)
                .spawn(produce, (q.try_clone().unwrap(), id, each))
                .unwrap()
        })
        .collect();
    for mut p in producer_procs {
        p.join().unwrap();
    }
    for _ in 0..consumers {
        q.put(&(u32::MAX, 0)).unwrap();
    }
    let per_consumer: Vec<_> = consumer_procs
        .into_iter()
        .map(|mut c| c.join().unwrap())
        .collect();
    check_exactly_once(per_consumer, producers, each);
    assert!(q.is_empty().unwrap());
}

each_method! {
    /// The test: 4 producer processes × 4 consumer processes × 100 000 items, every
    /// item received exactly once, each producer's items in order.
    fn four_producers_four_consumers_100k_each(method: StartMethod) {
        many_to_many(method, Queue::new().unwrap(), 4, 4, 100_000);
    }
}

each_method! {
    /// The same through a small bounded queue: producers wait for room again and again.
    fn bounded_many_to_many(method: StartMethod) {
        many_to_many(method, Queue::bounded(3).unwrap(), 3, 3, 3_000);
    }
}

fn echo_bytes((q, back): (Queue<ByteBuf>, Queue<ByteBuf>)) {
    loop {
        let item = q.get().unwrap();
        let last = item.is_empty();
        back.put(&item).unwrap();
        if last {
            return;
        }
    }
}

each_method! {
    /// Items of every size cross to a child and back byte for byte: the ring's sizes, the
    /// 2 MiB limit either side, and 64 MiB (in a memfd).
    fn items_of_every_size_to_64_mib(method: StartMethod) {
        let there = Queue::new().unwrap();
        let back = Queue::new().unwrap();
        let mut child = with(method)
            .spawn(echo_bytes, (there.try_clone().unwrap(), back.try_clone().unwrap()))
            .unwrap();
        let sizes = [1, 7, 8, 9, 1000, 64 * 1024, (2 << 20) - 64, (2 << 20) + 64, 64 << 20, 0];
        for n in sizes {
            let item = ByteBuf::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            there.put(&item).unwrap();
            let got = back.get_timeout(Duration::from_secs(60)).unwrap();
            assert!(got == item, "{n}-byte item changed on the way");
        }
        child.join().unwrap();
    }
}

/// Many items bigger than the ring's free space, put before anyone reads: `put` never waits on
/// an unbounded queue (the feeder holds them), and all arrive in order.
#[test]
fn unbounded_put_never_waits_for_readers() {
    let q = Queue::new().unwrap();
    let item = ByteBuf::from(vec![7u8; 512 * 1024]);
    for i in 0..20u8 {
        let mut item = item.clone();
        item[0] = i;
        q.put(&item).unwrap();
    }
    assert_eq!(q.qsize().unwrap(), 20);
    for i in 0..20u8 {
        let got: ByteBuf = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!((got[0], got.len()), (i, 512 * 1024));
    }
    q.join_thread();
    assert!(q.is_empty().unwrap());
}

fn send_through_pipe((q, n): (Queue<Connection>, u32)) {
    let conn = q.get().unwrap();
    conn.send(&n).unwrap();
}

each_method! {
    /// Items carrying OS handles travel beside the queue (on its socket): a pipe end put in the
    /// queue works in the child that takes it.
    fn handles_travel_inside_items(method: StartMethod) {
        let q = Queue::new().unwrap();
        let mut child = with(method).spawn(send_through_pipe, (q.try_clone().unwrap(), 42)).unwrap();
        let (a, b) = Pipe::new().unwrap();
        q.put(&b).unwrap();
        drop(b);
        assert_eq!(a.recv_timeout::<u32>(Duration::from_secs(10)).unwrap(), 42);
        child.join().unwrap();
    }
}

/// Mixed inline items and handle-carrying items keep one producer's order.
#[test]
fn handles_and_plain_items_keep_their_order() {
    let q: Queue<(u32, Option<Connection>)> = Queue::new().unwrap();
    let mut keep = Vec::new();
    for i in 0..50 {
        if i % 3 == 0 {
            let (a, b) = Pipe::new().unwrap();
            keep.push(a);
            q.put(&(i, Some(b))).unwrap();
        } else {
            q.put(&(i, None)).unwrap();
        }
    }
    for i in 0..50 {
        let (n, conn) = q.get().unwrap();
        assert_eq!(n, i);
        assert_eq!(conn.is_some(), i % 3 == 0);
    }
}

fn take_one_then_hang((q, taken): (Queue<u32>, Connection)) {
    let n = q.get().unwrap();
    taken.send(&n).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn wait_forever((q, waiting): (Queue<u32>, Connection)) {
    waiting.send(&()).unwrap();
    let _ = q.get();
    std::thread::sleep(Duration::from_secs(600));
}

each_method! {
    /// Consumers killed while waiting, and right after taking an item, lose nothing but that
    /// item: every other one reaches the survivors, and producers are not blocked.
    fn killed_consumers_lose_nothing_else(method: StartMethod) {
        let q = Queue::new().unwrap();
        let (here, there) = Pipe::new().unwrap();
        let mut taker = with(method).spawn(take_one_then_hang, (q.try_clone().unwrap(), there)).unwrap();
        q.put(&1000).unwrap();
        let taken: u32 = here.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(taken, 1000);
        let (ready, there) = Pipe::new().unwrap();
        let mut waiting = with(method).spawn(wait_forever, (q.try_clone().unwrap(), there)).unwrap();
        // Handshake: it is about to wait, then the kernel shows it waiting.
        ready.recv_timeout::<()>(Duration::from_secs(30)).unwrap();
        common::await_process_sleeping(waiting.pid());
        waiting.kill().unwrap();
        taker.kill().unwrap();
        let _ = waiting.join();
        let _ = taker.join();
        for i in 0..100 {
            q.put(&i).unwrap();
        }
        let got: Vec<u32> = (0..100).map(|_| q.get_timeout(Duration::from_secs(10)).unwrap()).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}

fn fill_then_return((q, n): (Queue<u32>, u32)) {
    for i in 0..n {
        q.put(&i).unwrap();
    }
}

/// BEYOND-21 (as far as the ring holds): a producer joined before its items are read finishes
/// at once, and its items outlive it.
///
/// Ported from CPython's known deadlock: gh-73983 (bpo-29797), the "joining processes that use
/// queues" warning
#[test]
fn items_outlive_their_producer() {
    let q = Queue::new().unwrap();
    let mut child = Process::spawn(fill_then_return, (q.try_clone().unwrap(), 10_000)).unwrap();
    child.join().unwrap();
    let got: Vec<u32> = (0..10_000).map(|_| q.try_get().unwrap()).collect();
    assert_eq!(got, (0..10_000).collect::<Vec<_>>());
}

/// A `get` blocked in one thread wakes when another thread puts; several waiting threads each
/// get one item.
#[test]
fn blocked_getters_wake_for_puts() {
    let q: Queue<u32> = Queue::new().unwrap();
    let (about_to_block, tids) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let q = q.try_clone().unwrap();
            let about_to_block = about_to_block.clone();
            std::thread::spawn(move || {
                about_to_block.send(common::gettid()).unwrap();
                q.get_timeout(Duration::from_secs(30)).unwrap()
            })
        })
        .collect();
    for tid in tids.iter().take(3) {
        common::await_thread_sleeping(tid);
    }
    for i in 0..3 {
        q.put(&i).unwrap();
    }
    let mut got: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
}

/// A bounded queue's `put` blocked in one thread wakes when another takes an item.
#[test]
fn blocked_putter_wakes_when_room_appears() {
    let q: Queue<u32> = Queue::bounded(1).unwrap();
    q.put(&1).unwrap();
    let q2 = q.try_clone().unwrap();
    let (about_to_block, tid) = std::sync::mpsc::channel();
    let putter = std::thread::spawn(move || {
        about_to_block.send(common::gettid()).unwrap();
        q2.put_timeout(&2, Duration::from_secs(30))
    });
    common::await_thread_sleeping(tid.recv().unwrap());
    assert_eq!(q.get().unwrap(), 1);
    putter.join().unwrap().unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 2);
}

/// An item of the wrong type is a typed error, and consumed: the next item is fine.
#[test]
fn wrong_item_type_is_a_typed_error() {
    let q: Queue<String> = Queue::new().unwrap();
    q.put(&"not a number".to_string()).unwrap();
    q.put(&"5".to_string()).unwrap();
    let as_numbers: Queue<u64> = retyped(&q);
    assert!(matches!(as_numbers.get(), Err(Error::Deserialize { .. })));
    assert_eq!(q.get().unwrap(), "5");
}

fn retyped(q: &Queue<String>) -> Queue<u64> {
    // A queue's handle, sent and received as another item type.
    let (a, b) = Pipe::new().unwrap();
    a.send(q).unwrap();
    b.recv().unwrap()
}

/// Bad arguments are typed errors.
#[test]
fn zero_capacity_is_refused() {
    assert!(matches!(
        Queue::<u8>::bounded(0),
        Err(Error::InvalidArgument(_))
    ));
}

each_method! {
    /// Producers SIGKILLed at arbitrary moments (some inside the queue's critical section) put
    /// whole items or nothing: each one's items arrive as an unbroken, ordered prefix, the queue
    /// stays usable, and nobody hangs on the lock a dead producer held (BEYOND-10: "the queue
    /// stays usable for the remaining producers and consumers").
    fn producers_killed_mid_put_put_whole_items_or_nothing(method: StartMethod) {
        let q = Queue::bounded(500).unwrap();
        let mut got: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for round in 0..4u32 {
            let producers: Vec<_> = (0..2)
                .map(|k| with(method).spawn(put_forever, (q.try_clone().unwrap(), round * 2 + k)).unwrap())
                .collect();
            let until = Instant::now() + Duration::from_millis(150 + 37 * u64::from(round));
            while Instant::now() < until {
                if let Ok((id, i)) = q.get_timeout(Duration::from_millis(20)) {
                    got.entry(id).or_default().push(i);
                }
            }
            for p in &producers {
                p.kill().unwrap();
            }
            for mut p in producers {
                assert!(matches!(p.join(), Err(Error::Signaled { .. })));
            }
            while let Ok((id, i)) = q.get_timeout(Duration::from_millis(300)) {
                got.entry(id).or_default().push(i);
            }
        }
        assert_prefixes(&got);
        assert_eq!(got.len(), 8, "every producer put something");
        q.put(&(99, 0)).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), (99, 0));
        assert!(q.is_empty().unwrap());
    }
}

fn put_big_forever((q, id): (Queue<(u32, u32, ByteBuf)>, u32)) {
    let payload = ByteBuf::from(vec![id as u8; 100 * 1024]);
    for i in 0.. {
        q.put(&(id, i, payload.clone())).unwrap();
    }
}

each_method! {
    /// The same with 100 KiB items, which a producer writes into the ring after releasing its
    /// lock: a producer killed while writing one leaves a reserved entry that readers skip once
    /// they see its writer is gone, and every item that arrives is whole.
    fn producers_killed_writing_large_items(method: StartMethod) {
        let q = Queue::bounded(4).unwrap();
        let mut got: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for round in 0..3u32 {
            let producers: Vec<_> = (0..2)
                .map(|k| {
                    let args = (q.try_clone().unwrap(), round * 2 + k);
                    with(method).spawn(put_big_forever, args).unwrap()
                })
                .collect();
            let mut take = |q: &Queue<(u32, u32, ByteBuf)>, wait| {
                let (id, i, payload) = q.get_timeout(wait)?;
                assert!(payload.len() == 100 * 1024 && payload.iter().all(|&b| b == id as u8));
                got.entry(id).or_default().push(i);
                Ok::<(), Error>(())
            };
            let until = Instant::now() + Duration::from_millis(150 + 29 * u64::from(round));
            while Instant::now() < until {
                let _ = take(&q, Duration::from_millis(20));
            }
            for p in &producers {
                p.kill().unwrap();
            }
            for mut p in producers {
                let _ = p.join();
            }
            while take(&q, Duration::from_millis(500)).is_ok() {}
        }
        assert_prefixes(&got);
        let item = (99, 0, ByteBuf::from(vec![9; 100 * 1024]));
        q.put(&item).unwrap();
        q.put(&item).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), item);
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), item);
        assert!(q.is_empty().unwrap());
    }
}

/// An item whose payload starts with 2 stalls on its second serialization in a process: a
/// child's `put` of it after a large item (measured, then written straight into the ring)
/// stalls while its entry is reserved. The parent never pickles such an item.
#[derive(serde::Deserialize, Debug, PartialEq)]
struct Stalling(ByteBuf);

static STALLING_SERIALIZED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Told when the stall begins (set in the producer before it puts).
static STALLED: std::sync::OnceLock<Connection> = std::sync::OnceLock::new();

impl Serialize for Stalling {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.first() == Some(&2)
            && STALLING_SERIALIZED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
        {
            if let Some(stalled) = STALLED.get() {
                stalled.send(&()).unwrap();
            }
            std::thread::sleep(Duration::from_secs(600));
        }
        s.serialize_newtype_struct("Stalling", &self.0)
    }
}

fn put_twice_stall_in_second((q, stalled): (Queue<Stalling>, Connection)) {
    STALLED.set(stalled).unwrap();
    q.put(&Stalling(ByteBuf::from(vec![1; 200 * 1024])))
        .unwrap();
    q.put(&Stalling(ByteBuf::from(vec![2; 200 * 1024])))
        .unwrap();
}

each_method! {
    /// A producer killed while writing a large item into its reserved entry (made certain by
    /// an item whose pickling stalls): readers skip the entry once its writer is gone, and the
    /// room it held in a bounded queue comes back.
    fn producer_killed_inside_a_reserved_entry(method: StartMethod) {
        let q = Queue::bounded(2).unwrap();
        let (stalled, there) = Pipe::new().unwrap();
        let mut child = with(method)
            .spawn(put_twice_stall_in_second, (q.try_clone().unwrap(), there))
            .unwrap();
        let first = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(first, Stalling(ByteBuf::from(vec![1; 200 * 1024])));
        // Handshake: the producer is inside the second item's reserved entry.
        stalled.recv_timeout::<()>(Duration::from_secs(30)).unwrap();
        child.kill().unwrap();
        assert!(matches!(child.join(), Err(Error::Signaled { .. })));
        assert!(matches!(q.get_timeout(Duration::from_secs(1)), Err(Error::Empty)));
        // Both slots are free again.
        let small = |n| Stalling(ByteBuf::from(vec![n; 10]));
        q.try_put(&small(7)).unwrap();
        q.try_put(&small(8)).unwrap();
        assert!(matches!(q.try_put(&small(9)), Err(Error::Full)));
        assert_eq!(q.get().unwrap(), small(7));
        assert_eq!(q.get().unwrap(), small(8));
    }
}

each_method! {
    /// Consumers SIGKILLed at arbitrary moments each lose at most the one item they had taken:
    /// nothing is delivered twice, and every other item reaches someone.
    fn consumers_killed_mid_get_lose_at_most_their_item(method: StartMethod) {
        const ROUNDS: u32 = 4;
        let q = Queue::new().unwrap();
        let (reports, theirs) = Pipe::new().unwrap();
        let mut received: Vec<(u32, u32)> = Vec::new();
        let mut next = 0u32;
        let mut killed = 0;
        for round in 0..ROUNDS {
            let consumers: Vec<_> = (0..2)
                .map(|_| with(method).spawn(get_forever, (q.try_clone().unwrap(), theirs.try_clone().unwrap())).unwrap())
                .collect();
            let until = Instant::now() + Duration::from_millis(100 + 41 * u64::from(round));
            while Instant::now() < until {
                for _ in 0..200 {
                    q.put(&(0, next)).unwrap();
                    next += 1;
                }
                while reports.poll(Duration::ZERO).unwrap() {
                    received.push(reports.recv().unwrap());
                }
            }
            for c in &consumers {
                c.kill().unwrap();
            }
            for mut c in consumers {
                let _ = c.join();
                killed += 1;
            }
            while reports.poll(Duration::ZERO).unwrap() {
                received.push(reports.recv().unwrap());
            }
        }
        drop(theirs);
        while let Ok(item) = q.try_get() {
            received.push(item);
        }
        let mut seen = std::collections::BTreeSet::new();
        for item in &received {
            assert!(seen.insert(*item), "{item:?} delivered twice");
        }
        let lost = next as usize - seen.len();
        assert!(lost <= killed, "{lost} items lost by {killed} killed consumers");
    }
}

/// BEYOND-11: making and dropping queues in a loop (used or not, with clones and a feeder
/// thread) returns the descriptor count to where it was.
///
/// Ported from CPython: gh-131794, gh-77262 (bpo-33081)
/// Runs in a child of its own, where no other test opens descriptors meanwhile; returns the
/// descriptor counts before and after.
fn queues_in_a_loop(_: ()) -> (usize, usize) {
    let _warm: Queue<u8> = Queue::new().unwrap();
    let before = common::open_fds();
    for i in 0..100u32 {
        let q: Queue<ByteBuf> = Queue::new().unwrap();
        if i % 2 == 0 {
            let clone = q.try_clone().unwrap();
            clone.put(&ByteBuf::from(vec![1; 10])).unwrap();
            assert_eq!(q.get().unwrap().len(), 10);
        }
        if i % 10 == 0 {
            // More than the ring holds: the feeder thread starts, and must finish.
            for _ in 0..5 {
                q.put(&ByteBuf::from(vec![2; 1 << 20])).unwrap();
            }
            for _ in 0..5 {
                q.get().unwrap();
            }
        }
    }
    (before, common::open_fds())
}

#[test]
fn no_descriptor_leaks() {
    let (before, after) = Process::spawn(queues_in_a_loop, ())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(before, after, "descriptors before and after 100 queues");
}

fn overfill_then_cancel(q: Queue<ByteBuf>) -> usize {
    for _ in 0..8 {
        q.put(&ByteBuf::from(vec![3; 1 << 20])).unwrap();
    }
    let held = q.qsize().unwrap();
    q.cancel_join_thread();
    held
}

/// `cancel_join_thread`: a process whose feeder still holds items nobody will read can end
/// (CPython's `cancel_join_thread`); the items in shared memory stay readable.
///
/// Ported from CPython: _TestQueue.test_fork's use of cancel_join_thread, and the
/// "joining processes that use queues" guideline
#[test]
fn cancel_join_thread_lets_a_producer_end() {
    let q = Queue::new().unwrap();
    let mut child = Process::spawn(overfill_then_cancel, q.try_clone().unwrap()).unwrap();
    assert_eq!(child.join_timeout(Duration::from_secs(60)).unwrap(), 8);
    let mut readable = 0;
    while q.try_get().is_ok() {
        readable += 1;
    }
    assert!((1..8).contains(&readable), "{readable} of 8 items readable");
}

fn get_until_shut_down(q: Queue<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        match q.get() {
            Ok(n) => got.push(n),
            Err(Error::ShutDown) => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

each_method! {
    /// Q-12, graceful shutdown: later puts fail with `ShutDown`; a consumer in another process
    /// takes what is left, then gets `ShutDown` (a blocked `get` wakes up to it); a
    /// JoinableQueue's `join` waits until the remaining items are marked done.
    ///
    /// Ported from CPython: _TestQueue.test_shutdown_empty, test_shutdown_nonempty
    fn q12_graceful_shutdown(method: StartMethod) {
        let q = Queue::new().unwrap();
        for i in 0..3 {
            q.put(&i).unwrap();
        }
        q.shutdown();
        assert!(q.is_shut_down());
        assert!(matches!(q.put(&9), Err(Error::ShutDown)));
        assert!(matches!(q.try_put(&9), Err(Error::ShutDown)));
        let mut child = with(method).spawn(get_until_shut_down, q.try_clone().unwrap()).unwrap();
        assert_eq!(child.join().unwrap(), [0, 1, 2]);
        assert!(matches!(q.try_get(), Err(Error::ShutDown)));

        // A get blocked in another process wakes up to the shutdown.
        let q = Queue::new().unwrap();
        let mut child = with(method).spawn(get_until_shut_down, q.try_clone().unwrap()).unwrap();
        q.put(&5).unwrap();
        // The child has taken the item and blocks in its next get.
        assert!(common::eventually(common::HANG_LIMIT, || q.is_empty().unwrap()));
        common::await_process_sleeping(child.pid());
        q.shutdown();
        assert_eq!(child.join().unwrap(), [5]);

        let jq = JoinableQueue::new().unwrap();
        jq.put(&1u32).unwrap();
        jq.put(&2).unwrap();
        jq.shutdown();
        assert_eq!(jq.get().unwrap(), 1);
        jq.task_done().unwrap();
        assert!(matches!(jq.join_timeout(Duration::from_millis(50)), Err(Error::Timeout)));
        assert_eq!(jq.get().unwrap(), 2);
        jq.task_done().unwrap();
        jq.join_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(jq.get(), Err(Error::ShutDown)));
    }
}

/// Q-13, immediate shutdown: the queue is emptied at once (items on its socket included), puts
/// and gets fail with `ShutDown`, a blocked `join` wakes as the discarded items count as done,
/// and one more `task_done` is an error; a bounded queue's blocked `put` wakes to `ShutDown`.
///
/// Ported from CPython: _TestQueue.test_shutdown_immediate,
/// test_shutdown_immediate_with_unfinished
#[test]
fn q13_immediate_shutdown() {
    let jq: JoinableQueue<(u32, Option<Connection>)> = JoinableQueue::new().unwrap();
    let (a, b) = Pipe::new().unwrap();
    jq.put(&(1, None)).unwrap();
    jq.put(&(2, Some(b))).unwrap();
    jq.put(&(3, None)).unwrap();
    let taken = jq.get().unwrap();
    assert_eq!(taken.0, 1);
    let (about_to_block, tid) = std::sync::mpsc::channel();
    let joiner = {
        let jq = jq.try_clone().unwrap();
        let about_to_block = about_to_block.clone();
        std::thread::spawn(move || {
            about_to_block.send(common::gettid()).unwrap();
            jq.join_timeout(Duration::from_secs(30))
        })
    };
    common::await_thread_sleeping(tid.recv().unwrap());
    jq.shutdown_immediate();
    assert!(jq.is_empty().unwrap());
    // The pipe end that travelled on the queue's socket was discarded with its item.
    assert!(matches!(
        a.recv_timeout::<u32>(Duration::from_secs(5)),
        Err(Error::Disconnected)
    ));
    assert!(matches!(jq.get(), Err(Error::ShutDown)));
    assert!(matches!(jq.put(&(4, None)), Err(Error::ShutDown)));
    // Items 2 and 3 are done by the shutdown; item 1 was taken and is still unfinished.
    assert_eq!(jq.unfinished_tasks(), 1);
    jq.task_done().unwrap();
    joiner.join().unwrap().unwrap();
    assert!(matches!(jq.task_done(), Err(Error::TaskDoneTooOften)));

    let q: Queue<u32> = Queue::bounded(1).unwrap();
    q.put(&1).unwrap();
    let putter = {
        let q = q.try_clone().unwrap();
        std::thread::spawn(move || {
            about_to_block.send(common::gettid()).unwrap();
            q.put_timeout(&2, Duration::from_secs(30))
        })
    };
    common::await_thread_sleeping(tid.recv().unwrap());
    q.shutdown_immediate();
    assert!(matches!(putter.join().unwrap(), Err(Error::ShutDown)));
}

/// An item of one of four kinds, to mix every route through the queue.
type Mixed = (u32, u32, ByteBuf, Option<Connection>);

fn produce_mixed((q, id, n): (Queue<Mixed>, u32, u32)) {
    for i in 0..n {
        let size = match i % 7 {
            0 => 100 * 1024,      // written into a reserved entry
            3 => (2 << 20) + 100, // over the ring's limit: a memfd on the socket
            _ => (i % 50) as usize,
        };
        let conn = (i % 5 == 0).then(|| Pipe::new().unwrap().0);
        q.put(&(id, i, ByteBuf::from(vec![(id + i) as u8; size]), conn))
            .unwrap();
    }
}

fn consume_mixed((q, n): (Queue<Mixed>, usize)) -> Vec<(u32, u32)> {
    (0..n)
        .map(|_| {
            let (id, i, bytes, conn) = q.get().unwrap();
            assert!(
                bytes.iter().all(|&b| b == (id + i) as u8),
                "item {id}/{i} damaged"
            );
            assert_eq!(conn.is_some(), i % 5 == 0, "item {id}/{i} lost its handle");
            (id, i)
        })
        .collect()
}

each_method! {
    /// Small items, items written into reserved entries, memfd items and items carrying
    /// handles, mixed, from three producers to three consumers: each arrives once, whole, with
    /// its handle, in its producer's order.
    fn every_route_mixed_many_to_many(method: StartMethod) {
        const EACH: u32 = 210;
        let q = Queue::bounded(16).unwrap();
        let consumers: Vec<_> = (0..3)
            .map(|_| with(method).spawn(consume_mixed, (q.try_clone().unwrap(), EACH as usize)).unwrap())
            .collect();
        let producers: Vec<_> = (0..3)
            .map(|id| with(method).spawn(produce_mixed, (q.try_clone().unwrap(), id, EACH)).unwrap())
            .collect();
        for mut p in producers {
            p.join().unwrap();
        }
        let per_consumer: Vec<_> = consumers.into_iter().map(|mut c| c.join().unwrap()).collect();
        check_exactly_once(per_consumer, 3, EACH);
        assert!(q.is_empty().unwrap());
    }
}

/// A descriptor that is not a sealed memfd, sent where a `Queue` is expected, is refused
/// with a typed error before it is mapped (issue 12, item 4).
#[test]
fn unsealed_queue_memory_is_refused() {
    let (here, there) = multiproc::Pipe::new().unwrap();
    let (reader, writer) = multiproc::Pipe::one_way().unwrap();
    let (_keep, not_memory) = multiproc::Pipe::one_way().unwrap();
    here.send(&(&not_memory, &reader, &writer)).unwrap();
    let err = there.recv::<Queue<i32>>().unwrap_err();
    assert!(
        matches!(err, multiproc::Error::UnsealedSharedMemory { .. }),
        "{err}"
    );
}

/// A timeout too long to add to the clock means no limit (as CPython waits), not a panic on
/// `Instant` overflow.
#[test]
fn timeouts_past_the_clock_mean_no_limit() {
    let q: JoinableQueue<u32> = JoinableQueue::new().unwrap();
    q.put_timeout(&5, Duration::MAX).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 5);
    q.task_done().unwrap();
    q.join_timeout(Duration::MAX).unwrap();
    let bounded: Queue<u32> = Queue::bounded(1).unwrap();
    bounded.put_timeout(&6, Duration::MAX).unwrap();
    assert_eq!(bounded.get_timeout(Duration::MAX).unwrap(), 6);
}
