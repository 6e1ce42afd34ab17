//! What the ipc-channel guard (src/codec/ipc_guard.rs) costs a pickled send, in one run.
//!
//! - `pickled_pipe`: `Connection::send` then `recv` on a pipe whose ends are both in this
//!   process (no scheduling of another process in the measurement). `u64_1`, `u64_0` and
//!   `record` (a struct with integers, a string and a list) are ordinary values: the guard only
//!   forwards their serialization. `transparent_0` is its slow path: a `#[serde(transparent)]`
//!   wrapper of a `u64` 0 serializes exactly as an endpoint's index does, so the guard probes
//!   and empties ipc-channel's table (system calls) before the send. `raw_bytes`
//!   (`send_bytes` of 8 bytes, no pickling) is the floor.
//! - `to_value`: `multiproc::pickle::to_value` (the managers' encoder, also guarded) of the
//!   same record and of 256 integers, zeros included: serialization alone, no system call, so
//!   the guard's forwarding shows if it costs anything.
//!
//! ```text
//! cargo bench --bench ipc_guard
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use multiproc::Pipe;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    values: Vec<u32>,
    weight: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Id(u64);

fn pickled_pipe(c: &mut Criterion) {
    let (a, b) = Pipe::new().unwrap();
    let mut group = c.benchmark_group("pickled_pipe");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("raw_bytes", |bench| {
        bench.iter(|| {
            a.send_bytes(&1u64.to_le_bytes()).unwrap();
            black_box(b.recv_bytes().unwrap())
        })
    });
    group.bench_function("u64_1", |bench| {
        bench.iter(|| {
            a.send(&1u64).unwrap();
            black_box(b.recv::<u64>().unwrap())
        })
    });
    let record = Record {
        id: 0,
        name: "a record".into(),
        values: (1..=16).collect(),
        weight: 1.5,
    };
    group.bench_function("record", |bench| {
        bench.iter(|| {
            a.send(&record).unwrap();
            black_box(b.recv::<Record>().unwrap())
        })
    });
    group.bench_function("u64_0", |bench| {
        bench.iter(|| {
            a.send(&0u64).unwrap();
            black_box(b.recv::<u64>().unwrap())
        })
    });
    group.bench_function("transparent_0", |bench| {
        bench.iter(|| {
            a.send(&Id(0)).unwrap();
            black_box(b.recv::<Id>().unwrap())
        })
    });
    group.finish();
}

fn to_value(c: &mut Criterion) {
    let mut group = c.benchmark_group("to_value");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let record = Record {
        id: 0,
        name: "a record".into(),
        values: (1..=16).collect(),
        weight: 1.5,
    };
    group.bench_function("record", |bench| {
        bench.iter(|| black_box(multiproc::pickle::to_value(black_box(&record)).unwrap()))
    });
    let numbers: Vec<u64> = (0..256).map(|i| i % 4).collect();
    group.bench_function("u64x256", |bench| {
        bench.iter(|| black_box(multiproc::pickle::to_value(black_box(&numbers)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, pickled_pipe, to_value);
criterion_main!(benches);
