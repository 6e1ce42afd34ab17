//! Tests for ipc-channel endpoints handed to multiproc: refused with a typed error in the
//! parent, before anything is sent, with this thread's ipc-channel state left usable (issue 12,
//! item 5; FACTS.md "ipc-channel"). Before the refusal, a spawned child aborted (SIGABRT inside
//! ipc-channel) and the parent's next ipc-channel message panicked its receiver.

mod common;

use common::with;
use ipc_channel::ipc::{self, IpcReceiver, IpcSender, IpcSharedMemory};
use multiproc::{Error, Pipe, Pool, Process, Queue, SimpleQueue};
use serde::{Deserialize, Serialize};

fn first(x: (u64, IpcSender<u64>)) -> u64 {
    x.0
}

fn count(x: Vec<u64>) -> usize {
    x.len()
}

/// Serializes as a bare `u64`, as an endpoint does: a 0 of it makes the guard look.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Id(u64);

fn id_of(id: Id) -> u64 {
    id.0
}

/// What a user would wrap an endpoint in: the endpoint hides behind a struct field.
#[derive(Serialize, Deserialize)]
struct Job {
    id: u32,
    reply: IpcSender<String>,
}

fn job_id(job: Job) -> u32 {
    job.id
}

/// The refusal names the type and counts what it held.
fn assert_refused<T>(result: Result<T, Error>, channels: usize, regions: usize) {
    match result {
        Err(Error::IpcChannelEndpoint {
            channels: c,
            regions: r,
            type_name,
        }) => {
            assert_eq!((c, r), (channels, regions), "{type_name}");
            let message = Error::IpcChannelEndpoint {
                type_name,
                channels: c,
                regions: r,
            }
            .to_string();
            assert!(message.contains("ipc-channel"), "{message}");
        }
        Err(other) => panic!("expected IpcChannelEndpoint, got {other:?}"),
        Ok(_) => panic!("expected IpcChannelEndpoint, got Ok"),
    }
}

/// This thread's ipc-channel state still works: a message with an endpoint inside goes
/// through, and its receiver finds exactly the endpoint that was sent.
fn assert_ipc_channel_intact() {
    let (tx, rx) = ipc::channel::<(u64, IpcSender<u64>)>().unwrap();
    let (inner_tx, inner_rx) = ipc::channel::<u64>().unwrap();
    tx.send((5, inner_tx)).unwrap();
    let (n, got) = rx.recv().unwrap();
    got.send(n + 1).unwrap();
    assert_eq!(inner_rx.recv().unwrap(), 6);
}

#[test]
fn smoke() {
    let (tx, rx) = ipc::channel::<u64>().unwrap();
    assert_refused(Process::spawn(first, (7, tx.clone())), 1, 0);
    // The sender handed in is untouched, and the next unrelated message arrives whole.
    tx.send(5).unwrap();
    assert_eq!(rx.recv().unwrap(), 5);
    assert_ipc_channel_intact();
}

each_method! {
    /// Every start method refuses, fork included (its scan of the arguments would otherwise
    /// leave the endpoint in ipc-channel's table).
    fn spawn_refuses_an_endpoint_in_a_struct(method: StartMethod) {
        let (reply, _rx) = ipc::channel::<String>().unwrap();
        assert_refused(with(method).spawn(job_id, Job { id: 3, reply }), 1, 0);
        assert_ipc_channel_intact();
        // Values with zeros and no endpoint travel: plain integers, and a bare `u64` 0 from
        // another type (which makes the guard look at ipc-channel's table, and find nothing).
        let mut p = with(method).spawn(count, vec![0u64, 1, 0]).unwrap();
        assert_eq!(p.join().unwrap(), 3);
        let mut p = with(method).spawn(id_of, Id(0)).unwrap();
        assert_eq!(p.join().unwrap(), 0);
        assert_ipc_channel_intact();
    }
}

#[test]
fn connection_send_refuses_and_the_pipe_stays_usable() {
    let (a, b) = Pipe::new().unwrap();
    let (tx, rx) = ipc::channel::<u64>().unwrap();
    let (tx2, _rx2) = ipc::channel::<u64>().unwrap();
    assert_refused(a.send(&vec![tx.clone(), tx2]), 2, 0);
    a.send(&0u64).unwrap();
    assert_eq!(b.recv::<u64>().unwrap(), 0);
    tx.send(9).unwrap();
    assert_eq!(rx.recv().unwrap(), 9);
    assert_ipc_channel_intact();
}

#[test]
fn receivers_and_shared_memory_are_counted() {
    let (a, _b) = Pipe::new().unwrap();
    let (_tx, rx) = ipc::channel::<u64>().unwrap();
    let shm = IpcSharedMemory::from_bytes(b"abc");
    let value: (IpcReceiver<u64>, IpcSharedMemory, Option<u64>) = (rx, shm.clone(), None);
    assert_refused(a.send(&value), 1, 1);
    // The shared memory handed in is untouched.
    assert_eq!(&*shm, b"abc");
    assert_ipc_channel_intact();
}

#[test]
fn queue_puts_refuse() {
    let (tx, rx) = ipc::channel::<u64>().unwrap();
    let queue = Queue::<Option<IpcSender<u64>>>::new().unwrap();
    assert_refused(queue.put(&Some(tx.clone())), 1, 0);
    queue.put(&None).unwrap();
    assert!(queue.get().unwrap().is_none());
    let simple = SimpleQueue::<Option<IpcSender<u64>>>::new().unwrap();
    assert_refused(simple.put(&Some(tx.clone())), 1, 0);
    simple.put(&None).unwrap();
    assert!(simple.get().unwrap().is_none());
    tx.send(1).unwrap();
    assert_eq!(rx.recv().unwrap(), 1);
    assert_ipc_channel_intact();
}

#[test]
fn pool_arguments_refuse() {
    let pool = Pool::new(1).unwrap();
    let (reply, _rx) = ipc::channel::<String>().unwrap();
    assert_refused(pool.apply(job_id, Job { id: 4, reply }), 1, 0);
    assert_eq!(pool.apply(count, vec![0]).unwrap(), 1);
    assert_ipc_channel_intact();
}

/// The managers' wire (a `Listener` connection here; proxies and served queues pickle the same
/// way) refuses too, as a pickling error that names ipc-channel.
#[test]
fn listener_connection_send_refuses() {
    use multiproc::managers::{Client, Listener};
    common::hang_guard(|| {
        let listener = Listener::bind("127.0.0.1:0", None).unwrap();
        let client = Client::connect(listener.address(), None).unwrap();
        let server = listener.accept().unwrap();
        let (tx, rx) = ipc::channel::<u64>().unwrap();
        match client.send(&(1u8, tx.clone())) {
            Err(Error::Pickle(e)) => assert!(e.to_string().contains("ipc-channel"), "{e}"),
            other => panic!("expected a pickling error, got {other:?}"),
        }
        client.send(&0u64).unwrap();
        assert_eq!(server.recv::<u64>().unwrap(), 0);
        tx.send(2).unwrap();
        assert_eq!(rx.recv().unwrap(), 2);
        assert_ipc_channel_intact();
    });
}

/// More endpoints than one ipc-channel message can carry (64 descriptors): still refused and
/// taken back out of ipc-channel's table (ipc-channel's own send panics on such a value; the
/// guard lets that panic empty the table and catches it, so a panic message is printed).
#[test]
fn more_endpoints_than_one_message_carries() {
    let (a, _b) = Pipe::new().unwrap();
    let (tx, rx) = ipc::channel::<u64>().unwrap();
    let many: Vec<IpcSender<u64>> = (0..70).map(|_| tx.clone()).collect();
    assert_refused(a.send(&many), 70, 0);
    tx.send(4).unwrap();
    assert_eq!(rx.recv().unwrap(), 4);
    assert_ipc_channel_intact();
}
