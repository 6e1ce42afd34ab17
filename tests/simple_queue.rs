//! Tests for `SimpleQueue`: many producer and consumer processes, any item size, timeouts,
//! handles passed to children under every start method, consumers killed mid-stream.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::with;
use multiproc::{ByteBuf, Error, SimpleQueue};

#[test]
fn smoke() {
    let q = SimpleQueue::new().unwrap();
    q.put(&1u32).unwrap();
    q.put(&2u32).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
    assert!(q.is_empty().unwrap());
}

fn produce((q, id, n): (SimpleQueue<(u32, u32)>, u32, u32)) {
    for i in 0..n {
        q.put(&(id, i)).unwrap();
    }
}

fn consume((q, n): (SimpleQueue<(u32, u32)>, usize)) -> Vec<(u32, u32)> {
    (0..n).map(|_| q.get().unwrap()).collect()
}

each_method! {
    // CPython: _TestSimpleQueue.test_empty, test_close; _TestQueue.test_fork (QUEUE-01/-02)
    /// Several producers and consumers at once: every item arrives exactly once, and each
    /// producer's items arrive in the order it put them.
    fn many_producers_many_consumers(method: StartMethod) {
        const PRODUCERS: u32 = 3;
        const CONSUMERS: usize = 3;
        const EACH: u32 = 2_000;
        let q = SimpleQueue::new().unwrap();
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|id| with(method).spawn(produce, (q.try_clone().unwrap(), id, EACH)).unwrap())
            .collect();
        let share = (PRODUCERS * EACH) as usize / CONSUMERS;
        let mut consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| with(method).spawn(consume, (q.try_clone().unwrap(), share)).unwrap())
            .collect();
        let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for c in &mut consumers {
            let mut last: BTreeMap<u32, u32> = BTreeMap::new();
            for (id, i) in c.join().unwrap() {
                if let Some(prev) = last.insert(id, i) {
                    assert!(i > prev, "producer {id}: {i} after {prev}");
                }
                seen.entry(id).or_default().push(i);
            }
        }
        for mut p in producers {
            p.join().unwrap();
        }
        for id in 0..PRODUCERS {
            let mut got = seen.remove(&id).unwrap_or_default();
            got.sort_unstable();
            assert_eq!(got, (0..EACH).collect::<Vec<_>>(), "producer {id}");
        }
        assert!(q.is_empty().unwrap());
    }
}

fn echo_big((q, back): (SimpleQueue<ByteBuf>, SimpleQueue<ByteBuf>)) {
    back.put(&q.get().unwrap()).unwrap();
}

each_method! {
    /// Items of every size, up to 64 MiB, cross to a child and back byte for byte.
    fn items_of_every_size(method: StartMethod) {
        let there = SimpleQueue::new().unwrap();
        let back = SimpleQueue::new().unwrap();
        for n in [0, 1, 64 * 1024 - 16, 64 * 1024, 64 << 20] {
            let item = ByteBuf::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let mut child = with(method)
                .spawn(echo_big, (there.try_clone().unwrap(), back.try_clone().unwrap()))
                .unwrap();
            there.put(&item).unwrap();
            let got = back.get().unwrap();
            child.join().unwrap();
            assert!(got == item, "{n} bytes changed on the way");
        }
    }
}

// CPython: _TestQueue.test_timeout (QUEUE-05)
#[test]
fn get_timeout_on_an_empty_queue_is_empty_after_the_timeout() {
    let q: SimpleQueue<u8> = SimpleQueue::new().unwrap();
    let start = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(Error::Empty)
    ));
    assert!(start.elapsed() >= Duration::from_millis(95));
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    q.put(&7).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 7);
}

fn take_one_then_hang((q, taken): (SimpleQueue<u32>, multiproc::SendEnd)) {
    let item = q.get().unwrap();
    taken.send(&item).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn wait_forever(q: SimpleQueue<u32>) {
    let _ = q.get();
}

each_method! {
    /// A consumer killed right after taking an item takes only that item with it, and one
    /// killed while it waits takes none: the other consumers get every other item, in order,
    /// and producers are not blocked.
    fn killed_consumers_lose_nothing_else(method: StartMethod) {
        let q = SimpleQueue::new().unwrap();
        let mut waiting = with(method).spawn(wait_forever, q.try_clone().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        waiting.kill().unwrap();
        assert!(matches!(waiting.join(), Err(Error::Signaled { .. })));

        let (told, taken) = multiproc::Pipe::one_way().unwrap();
        let mut victim = with(method)
            .spawn(take_one_then_hang, (q.try_clone().unwrap(), taken))
            .unwrap();
        for i in 0..100u32 {
            q.put(&i).unwrap();
        }
        let lost: u32 = told.recv().unwrap();
        victim.kill().unwrap();
        assert!(matches!(victim.join(), Err(Error::Signaled { .. })));
        let mut rest = Vec::new();
        while let Ok(i) = q.try_get() {
            rest.push(i);
        }
        let expected: Vec<u32> = (0..100).filter(|&i| i != lost).collect();
        assert_eq!(rest, expected);
        for i in 0..1000u32 {
            q.put(&i).unwrap();
            assert_eq!(q.get().unwrap(), i);
        }
    }
}

/// A record that is not a `T` is a typed error, and the next item still arrives.
#[test]
fn wrong_item_type_is_a_typed_error() {
    let q: SimpleQueue<String> = SimpleQueue::new().unwrap();
    let numbers = retyped(&q);
    numbers.put(&5).unwrap();
    q.put(&"next".to_string()).unwrap();
    assert!(matches!(q.get(), Err(Error::Deserialize { .. })));
    assert_eq!(q.get().unwrap(), "next");
}

/// The same queue with another item type: its handles, sent through a pipe and read back.
fn retyped(q: &SimpleQueue<String>) -> SimpleQueue<u64> {
    let (here, there) = multiproc::Pipe::new().unwrap();
    here.send(q).unwrap();
    there.recv::<SimpleQueue<u64>>().unwrap()
}

fn put_two(q: SimpleQueue<u32>) {
    q.put(&1).unwrap();
    q.put(&2).unwrap();
}

each_method! {
    /// SQ-01: empty at first, not empty once a child has put two items, empty again after both
    /// are read, in order.
    ///
    /// Ported from CPython: TestSimpleQueue.test_empty
    fn sq01_empty(method: StartMethod) {
        let q = SimpleQueue::new().unwrap();
        assert!(q.is_empty().unwrap());
        with(method).spawn(put_two, q.try_clone().unwrap()).unwrap().join().unwrap();
        assert!(!q.is_empty().unwrap());
        assert_eq!(q.get().unwrap(), 1);
        assert_eq!(q.get().unwrap(), 2);
        assert!(q.is_empty().unwrap());
    }
}

/// SQ-02: closing twice is fine; afterwards `is_empty`, `put` and `get` report `Closed`.
///
/// Ported from CPython: TestSimpleQueue.test_close, test_empty_exceptions, test_closed
#[test]
fn sq02_close_twice_then_closed() {
    let mut q: SimpleQueue<u32> = SimpleQueue::new().unwrap();
    q.close();
    q.close();
    assert!(matches!(q.is_empty(), Err(Error::Closed)));
    assert!(matches!(q.put(&1), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
}

/// A timeout too long to add to the clock means no limit, not a panic on `Instant` overflow.
#[test]
fn a_timeout_past_the_clock_means_no_limit() {
    let q: SimpleQueue<u32> = SimpleQueue::new().unwrap();
    q.put(&9).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 9);
}
