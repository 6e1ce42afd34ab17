//! Tests for deaths at random instants (issue 12 item 6): a pool worker, a queue producer and
//! a queue consumer SIGKILLed 200 times each lose and duplicate nothing and hang nobody, and a
//! parent SIGKILLed leaves none of its processes behind.
//!
//! The kill instants come from a seeded xorshift generator; every assertion names the seed,
//! and `FAULTS_SEED=<n>` replays a run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::family::{await_gone, become_subreaper, descendants};
use common::kills::{assert_prefixes, get_forever, put_forever};
use multiproc::managers::ManagerServer;
use multiproc::{Connection, Error, Pipe, Pool, Process, Queue, StartMethod};

/// How many times each test kills.
const KILLS: u32 = 200;

/// A hang guard for any single wait (a loaded 2-CPU machine is slow, not this slow).
const GUARD: Duration = Duration::from_secs(60);

/// xorshift64*: small, seeded, good enough to spread kill instants.
struct Rng(u64);

impl Rng {
    /// Seeded from `FAULTS_SEED` or the clock; prints the seed so a failure can be replayed.
    fn new(test: &str) -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.as_nanos() as u64 | 1
            });
        eprintln!("{test}: FAULTS_SEED={seed}");
        Rng(seed)
    }

    fn seed_note(&self) -> String {
        format!(
            "(replay with FAULTS_SEED; see the seed printed above, now at state {})",
            self.0
        )
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration of up to `max_us` microseconds, uniformly.
    fn micros(&mut self, max_us: u64) -> Duration {
        Duration::from_micros(self.next() % (max_us + 1))
    }
}

fn smoke_double(x: u64) -> u64 {
    x * 2
}

#[test]
fn smoke() {
    let mut rng = Rng::new("smoke");
    assert_ne!(rng.next(), rng.next());
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(smoke_double, 21).unwrap(), 42);
}

/// A task that takes a little while, so that kills land inside tasks as well as between them.
fn slow_double(x: u64) -> u64 {
    let until = Instant::now() + Duration::from_micros(150);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    x * 2
}

/// SIGKILLs a pool worker at a random instant 200 times: every task either completes with its
/// result or fails with `WorkerLost`, no task is lost or hangs, and the pool keeps working.
#[test]
fn pool_workers_killed_at_random_instants() {
    let mut rng = Rng::new("pool_workers_killed_at_random_instants");
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Forkserver)
        .build()
        .unwrap();
    let (mut completed, mut lost) = (0u32, 0u32);
    for round in 0..KILLS {
        let base = u64::from(round) * 100;
        let results: Vec<_> = (0..8)
            .map(|k| pool.apply_async(slow_double, base + k).unwrap())
            .collect();
        std::thread::sleep(rng.micros(1500));
        let pids = pool.pids();
        let victim = pids[(rng.next() % pids.len() as u64) as usize];
        // A pid the supervisor has not yet replaced is a zombie or gone: the kill is then a no-op.
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        for (k, mut r) in results.into_iter().enumerate() {
            match r.get_timeout(GUARD) {
                Ok(v) => {
                    assert_eq!(v, (base + k as u64) * 2, "{}", rng.seed_note());
                    completed += 1;
                }
                Err(Error::WorkerLost { .. }) => lost += 1,
                Err(e) => panic!(
                    "round {round}: task {k} failed with {e:?} {}",
                    rng.seed_note()
                ),
            }
        }
    }
    eprintln!("{completed} tasks completed, {lost} lost with their worker");
    assert!(
        lost > 0,
        "some kills landed inside tasks {}",
        rng.seed_note()
    );
    let all: Vec<u64> = pool.map(slow_double, 0..100u64).unwrap();
    assert_eq!(all, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    pool.close();
    pool.join_timeout(GUARD).unwrap();
}

/// Takes what is in `q` for `span`, into `got`.
fn take_for(q: &Queue<(u32, u32)>, span: Duration, got: &mut BTreeMap<u32, Vec<u32>>) {
    let until = Instant::now() + span;
    loop {
        match q.get_timeout(Duration::from_micros(200)) {
            Ok((id, i)) => got.entry(id).or_default().push(i),
            Err(Error::Timeout | Error::Empty) => {}
            Err(e) => panic!("get failed: {e:?}"),
        }
        if Instant::now() >= until {
            return;
        }
    }
}

/// SIGKILLs a producer at a random instant 200 times on one long-lived bounded queue (kept
/// nearly full, so kills land inside `put`, in its critical section and while it waits for
/// room): each producer's items arrive as an unbroken prefix of what it put, exactly once, and
/// the queue keeps working.
#[test]
fn producers_killed_at_random_instants() {
    let mut rng = Rng::new("producers_killed_at_random_instants");
    let q: Queue<(u32, u32)> = Queue::bounded(64).unwrap();
    let mut got: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for id in 0..KILLS {
        let mut producer = Process::builder()
            .start_method(StartMethod::Forkserver)
            .spawn(put_forever, (q.try_clone().unwrap(), id))
            .unwrap();
        // Handshake: the producer has put its first item.
        let started = Instant::now();
        while !got.contains_key(&id) {
            assert!(started.elapsed() < GUARD, "producer {id} put nothing");
            take_for(&q, Duration::ZERO, &mut got);
        }
        take_for(&q, rng.micros(2000), &mut got);
        producer.kill().unwrap();
        assert!(
            matches!(producer.join_timeout(GUARD), Err(Error::Signaled { .. })),
            "{}",
            rng.seed_note()
        );
    }
    while let Ok((id, i)) = q.get_timeout(Duration::from_millis(500)) {
        got.entry(id).or_default().push(i);
    }
    assert_prefixes(&got);
    assert_eq!(got.len(), KILLS as usize, "{}", rng.seed_note());
    q.put(&(u32::MAX, 0)).unwrap();
    assert_eq!(q.get_timeout(GUARD).unwrap(), (u32::MAX, 0));
    assert!(q.is_empty().unwrap());
}

/// SIGKILLs a consumer at a random instant 200 times on one long-lived queue (kept stocked,
/// and sometimes empty so that kills also land while it waits): no item is delivered twice,
/// and each kill loses at most the one item the consumer was taking.
#[test]
fn consumers_killed_at_random_instants() {
    let mut rng = Rng::new("consumers_killed_at_random_instants");
    let q: Queue<(u32, u32)> = Queue::new().unwrap();
    let (reports, theirs) = Pipe::new().unwrap();
    let mut received: Vec<(u32, u32)> = Vec::new();
    let mut next = 0u32;
    let drain = |received: &mut Vec<(u32, u32)>| {
        while reports.poll(Duration::ZERO).unwrap() {
            received.push(reports.recv().unwrap());
        }
    };
    for _ in 0..KILLS {
        for _ in 0..(rng.next() % 400) {
            q.put(&(0, next)).unwrap();
            next += 1;
        }
        let mut consumer = Process::builder()
            .start_method(StartMethod::Forkserver)
            .spawn(
                get_forever,
                (q.try_clone().unwrap(), theirs.try_clone().unwrap()),
            )
            .unwrap();
        // Handshake: the consumer is running (it has taken an item), unless the queue is empty.
        if !q.is_empty().unwrap() {
            assert!(reports.poll(GUARD).unwrap(), "the consumer took nothing");
        }
        let until = Instant::now() + rng.micros(2000);
        while Instant::now() < until {
            drain(&mut received);
        }
        consumer.kill().unwrap();
        assert!(
            matches!(consumer.join_timeout(GUARD), Err(Error::Signaled { .. })),
            "{}",
            rng.seed_note()
        );
        drain(&mut received);
    }
    drop(theirs);
    while let Ok(item) = q.try_get() {
        received.push(item);
    }
    let mut seen = BTreeSet::new();
    for item in &received {
        assert!(
            seen.insert(*item),
            "{item:?} delivered twice {}",
            rng.seed_note()
        );
    }
    let lost = next as usize - seen.len();
    eprintln!("{next} items put, {lost} lost by {KILLS} killed consumers");
    assert!(
        lost <= KILLS as usize,
        "{lost} items lost by {KILLS} killed consumers {}",
        rng.seed_note()
    );
    q.put(&(1, 0)).unwrap();
    assert_eq!(q.get_timeout(GUARD).unwrap(), (1, 0));
}

/// A daemon child's body: waits to be killed (by its parent's death).
fn sleep_forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(600));
    }
}

/// The parent that is SIGKILLed: starts a daemon child by each start method, a pool (whose
/// workers the forkserver forks) and a manager server child, reports their pids with what each
/// is, and waits.
fn doomed_parent(report: Connection) {
    let mut kinds: Vec<(u32, String)> = Vec::new();
    let mut daemons = Vec::new();
    for method in StartMethod::all() {
        let child = Process::builder()
            .start_method(method)
            .daemon(true)
            .spawn(sleep_forever, ())
            .unwrap();
        kinds.push((child.pid(), format!("daemon child ({method})")));
        daemons.push(child);
    }
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Forkserver)
        .build()
        .unwrap();
    for pid in pool.pids() {
        kinds.push((pid, "pool worker".into()));
    }
    let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    let manager = server.start().unwrap();
    kinds.push((manager.pid(), "manager server".into()));
    report.send(&kinds).unwrap();
    sleep_forever(());
}

/// What [`kill_a_parent`] saw: the processes it started, labelled, those still alive when it
/// gave up, and how long the last one took to go.
type Aftermath = (Vec<(u32, String)>, Vec<(u32, String)>, Duration);

/// Runs in a child of the test, as a subreaper (so that the orphans of the doomed parent are
/// its to reap and to watch): starts the doomed parent, SIGKILLs it once everything is up, and
/// waits up to 10 s for all its descendants to go.
fn kill_a_parent(_: ()) -> Aftermath {
    become_subreaper();
    let (ours, theirs) = Pipe::new().unwrap();
    let mut parent = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(doomed_parent, theirs)
        .unwrap();
    let kinds: Vec<(u32, String)> = ours.recv_timeout(GUARD).unwrap();
    let mut all: Vec<(u32, String)> = descendants(parent.pid())
        .into_iter()
        .map(|pid| {
            let kind = kinds
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, k)| k.clone());
            (
                pid,
                kind.unwrap_or_else(|| "forkserver or its spare".into()),
            )
        })
        .collect();
    for (pid, kind) in &kinds {
        if !all.iter().any(|(p, _)| p == pid) {
            all.push((*pid, kind.clone()));
        }
    }
    parent.kill().unwrap();
    let killed = Instant::now();
    assert!(matches!(
        parent.join_timeout(GUARD),
        Err(Error::Signaled { .. })
    ));
    let (left, took) = await_gone(&all, killed, Duration::from_secs(10));
    (all, left, took)
}

/// A parent SIGKILLed takes with it its daemon children (every start method), its pool workers,
/// its forkserver and its manager server child.
#[test]
fn a_killed_parent_leaves_no_process_behind() {
    let mut watcher = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(kill_a_parent, ())
        .unwrap();
    let (all, left, took) = watcher.join_timeout(Duration::from_secs(120)).unwrap();
    eprintln!("{} processes of the killed parent: {all:?}", all.len());
    eprintln!("the last one went {took:?} after the parent was killed");
    for kind in [
        "daemon child (fork)",
        "daemon child (spawn)",
        "pool worker",
        "manager server",
    ] {
        assert!(all.iter().any(|(_, k)| k == kind), "no {kind} was started");
    }
    assert!(
        left.is_empty(),
        "still alive 10 s after their parent was killed: {left:?}"
    );
}
