//! Tests for managers against CPython: a Rust server with unmodified CPython clients, and a
//! CPython server (`manager.start()`) with a Rust client, in both handshake forms.
//!
//! They run the machine's `python3` and CPython 3.12 and 3.13 (the `{sha256}` handshake),
//! looked up through pyenv or PATH (tests/common); a missing one fails the test unless
//! `MULTIPROC_SKIP_PYTHON=1`. The Python side lives in tests/py/. Every Python child is reaped, and ports are chosen by the OS (port 0).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::managers::{
    bind_arguments, Manager, ManagerServer, PyException, QueueProxy, Referent, ServedQueue,
    ServerHandle,
};
use multiproc::pickle::{self, PyValue};
use multiproc::{ByteBuf, Error, WireError};

const KEY: &[u8] = b"interop key \x00\xff";

fn key_hex() -> String {
    KEY.iter().map(|b| format!("{b:02x}")).collect()
}

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("py")
}

/// The machine's python3; `None` (after saying so) only with `MULTIPROC_SKIP_PYTHON=1`, else
/// a missing python3 fails the test.
#[track_caller]
fn python3() -> Option<PathBuf> {
    common::python3_with("multiprocessing.managers")
}

/// Interpreters of the other handshake generation (3.12+: `{sha256}`), looked up; a missing
/// one fails the test unless `MULTIPROC_SKIP_PYTHON=1`.
#[track_caller]
fn extra_pythons() -> Vec<PathBuf> {
    common::cpythons(&[(3, 12), (3, 13)])
}

/// A Python child that is killed and reaped however the test ends.
struct Py(Child);

impl Drop for Py {
    fn drop(&mut self) {
        // The whole group: a `manager.start()` server is a child of the script.
        // Only while the leader is unreaped: its pid (the group id) is then still ours.
        if let Ok(None) = self.0.try_wait() {
            let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn spawn(python: &Path, args: &[&str]) -> Py {
    Py(Command::new(python)
        .args(args)
        .process_group(0)
        .current_dir(py_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python"))
}

/// Runs client.py's `scenario` against `server` with the machine's python3 and every other
/// CPython present, in both handshake forms, and checks each reports `ok <scenario>`; then
/// checks the server holds no object any more.
fn every_python_runs(python: PathBuf, server: &ServerHandle, scenario: &str) {
    let mut pythons = vec![python];
    pythons.extend(extra_pythons());
    for (python, form) in pythons
        .iter()
        .flat_map(|p| ["native", "other"].map(|f| (p, f)))
    {
        let out = run_client(python, server.address().port(), &key_hex(), form, scenario);
        assert!(out.starts_with(&format!("ok {scenario}")), "{out}");
    }
    assert_eq!(server.number_of_objects(), 0);
}

/// Runs a client script to its end (hang guard: 120 s) and returns its stdout; panics with its
/// stderr if it failed.
fn run_client(python: &Path, port: u16, key: &str, form: &str, scenario: &str) -> String {
    let mut child = spawn(
        python,
        &["client.py", &port.to_string(), key, form, scenario],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut out).unwrap();
            std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
            assert!(
                status.success() && out.starts_with("ok"),
                "{} client.py {scenario} {form} failed ({status}):\n{out}\n{err}",
                python.display()
            );
            return out;
        }
        assert!(Instant::now() < deadline, "client.py {scenario} hung");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server the Python clients talk to: the three queues of client.py, and a log sink.
fn rust_server() -> (
    ServerHandle,
    multiproc::managers::ServedQueue,
    multiproc::managers::ServedQueue,
    Arc<Mutex<Vec<String>>>,
) {
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    let tasks = server.register_queue("get_task_queue", 0);
    let results = server.register_queue("get_result_queue", 0);
    server.register_queue("get_bounded_queue", 2);
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    server.on_log(move |line| sink.lock().unwrap().push(line.to_string()));
    (server.start_thread().unwrap(), tasks, results, log)
}

#[test]
fn smoke() {
    let Some(python) = python3() else { return };
    let (server, _, _, _) = rust_server();
    let out = run_client(
        &python,
        server.address().port(),
        &key_hex(),
        "native",
        "roundtrip",
    );
    assert!(out.contains("roundtrip"), "{out}");
}

/// PROTOCOL.md §9 S1–S13 and CATALOGUE scenario 28 with the machine's python3, in its own
/// handshake form and forced into the other one.
#[test]
fn cpython_client_full_session_both_forms() {
    let Some(python) = python3() else { return };
    let (server, _, _, log) = rust_server();
    let port = server.address().port();
    let native = run_client(&python, port, &key_hex(), "native", "full");
    let other = run_client(&python, port, &key_hex(), "other", "full");
    // The client reports the form it used; the two runs used different ones.
    let form = |out: &str| out.split_whitespace().nth(2).unwrap().to_string();
    assert_ne!(form(&native), form(&other), "{native} / {other}");
    assert_eq!(server.number_of_objects(), 0);
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
}

#[test]
fn cpython_clients_of_other_versions() {
    if python3().is_none() {
        return;
    }
    let (server, _, _, _) = rust_server();
    for python in extra_pythons() {
        for form in ["native", "other"] {
            run_client(&python, server.address().port(), &key_hex(), form, "full");
        }
    }
}

/// CATALOGUE scenario 27 with a Python worker: the Rust master puts tasks, an unmodified
/// CPython worker squares them and puts the answers on the result queue.
#[test]
fn rust_master_cpython_worker() {
    let Some(python) = python3() else { return };
    let (server, tasks, results, _) = rust_server();
    for n in 0..10i64 {
        tasks.put(&n).unwrap();
    }
    tasks.put(&()).unwrap(); // None: stop
    let out = run_client(
        &python,
        server.address().port(),
        &key_hex(),
        "native",
        "worker",
    );
    assert!(out.contains("worker did 10"), "{out}");
    let mut answers: Vec<String> = (0..10)
        .map(|_| results.get_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    answers.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("{n} * {n} = {}", n * n)).collect();
    expected.sort();
    assert_eq!(answers, expected);
}

/// S9: a CPython client with the wrong key gets AuthenticationError; the server logs the
/// failure and decoded nothing.
#[test]
fn cpython_client_with_wrong_key_is_refused() {
    let Some(python) = python3() else { return };
    let (server, tasks, _, log) = rust_server();
    for form in ["native", "other"] {
        run_client(&python, server.address().port(), "00ff", form, "wrongkey");
    }
    let lines = log.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains("authentication failed")),
        "{lines:?}"
    );
    assert_eq!(server.number_of_objects(), 0);
    assert!(tasks.is_empty());
}

/// Named queues whose `queue(name)` returns a new shared object: `method_to_typeid`, as
/// tests/py/server.py registers its `Queues` in Python.
#[derive(Default)]
struct NamedQueues(Mutex<std::collections::HashMap<String, ServedQueue>>);

impl Referent for NamedQueues {
    fn exposed(&self) -> Vec<String> {
        Vec::new()
    }

    fn call(
        &self,
        method: &str,
        _: Vec<PyValue>,
        _: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        Err(PyException::new("builtins", "AttributeError", method))
    }

    fn method_to_typeid(&self) -> Vec<(String, String)> {
        vec![("queue".into(), "Queue".into())]
    }

    fn call_for_object(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Arc<dyn Referent>, PyException> {
        let name = match &bind_arguments(method, args, kwargs, &[("name", None)])?[..] {
            [PyValue::Str(name)] => name.clone(),
            _ => return Err(PyException::type_error("queue() takes a str")),
        };
        let mut queues = self.0.lock().unwrap();
        let queue = queues.entry(name).or_insert_with(|| ServedQueue::new(0));
        Ok(Arc::new(queue.clone()))
    }
}

/// PROTOCOL.md §9 C6 the other way round: an unmodified CPython client calls a Rust server's
/// `method_to_typeid` method and gets working proxies; dropping them releases every object.
#[test]
fn cpython_client_gets_proxies_from_a_rust_server() {
    let Some(python) = python3() else { return };
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.register("Queues", || Arc::new(NamedQueues::default()));
    let server = server.start_thread().unwrap();
    every_python_runs(python, &server, "proxies");
}

/// MGR-10 against CPython: an unmodified CPython client uses `SyncManager`'s own proxy types
/// (`EventProxy`, `AcquirerProxy`, `ConditionProxy`, `BarrierProxy`) on a Rust server's
/// `register_sync_types()`: Event, Lock, RLock (ownership per client thread), Semaphore,
/// BoundedSemaphore, Condition and Barrier behave like `threading`'s, errors included.
/// CPython: TestSyncManagerTypes.test_event, test_lock, test_rlock, test_semaphore,
/// test_bounded_semaphore, test_condition, test_barrier
#[test]
fn cpython_client_uses_rust_served_sync_types() {
    let Some(python) = python3() else { return };
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.register_sync_types();
    let server = server.start_thread().unwrap();
    every_python_runs(python, &server, "sync");
}

/// MGR-11 against CPython: an unmodified CPython client uses `SyncManager`'s own proxy types
/// (`ListProxy`, `DictProxy` with its `Iterator`, `ValueProxy`, `ArrayProxy`,
/// `NamespaceProxy`) on a Rust server's `register_containers()`, with proxies stored inside
/// containers (a queue in a served list and dict, lists in a list, dicts in a dict).
/// CPython: TestSyncManagerTypes.test_list, test_dict, test_value, test_array,
/// test_namespace; _TestContainers.test_list_proxy_in_list, test_dict_proxy_nested
#[test]
fn cpython_client_uses_rust_served_containers() {
    let Some(python) = python3() else { return };
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.register_containers();
    server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    every_python_runs(python, &server, "containers");
}

/// A CPython manager server started with `manager.start()`, driven over stdin.
struct PyServer {
    child: Py,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    form: String,
}

impl PyServer {
    fn start(python: &Path, form: &str) -> PyServer {
        PyServer::start_with(python, &[], form)
    }

    fn start_with(python: &Path, flags: &[&str], form: &str) -> PyServer {
        let key = key_hex();
        let mut args = flags.to_vec();
        args.extend(["server.py", key.as_str(), form]);
        let mut child = spawn(python, &args);
        let stdin = child.0.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"port"), "server.py said {line:?}");
        PyServer {
            port: words[1].parse().unwrap(),
            form: words[2].to_string(),
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn exit(mut self) {
        assert_eq!(self.ask("exit"), "bye");
        let status = self.child.0.wait().unwrap();
        assert!(status.success());
    }
}

/// PROTOCOL.md §9 C1–C4, C7, C8 and CATALOGUE scenario 29 against one CPython server.
fn rust_client_session(python: &Path, form: &str) -> String {
    rust_client_session_with(python, &[], form)
}

fn rust_client_session_with(python: &Path, flags: &[&str], form: &str) -> String {
    let mut server = PyServer::start_with(python, flags, form);
    let address = ("127.0.0.1", server.port);
    // C4: a wrong key is refused, and the trailing '#TRACEBACK' frame is ignored.
    assert!(matches!(
        Manager::connect(address, b"wrong"),
        Err(Error::Wire(WireError::Auth { .. }))
    ));
    let manager = Manager::connect(address, KEY).unwrap();
    let baseline = manager.number_of_objects().unwrap();
    {
        // Scenario 29: 100 ints in, read by the Python side in order.
        let q = manager.get_queue::<i64>("get_task_queue").unwrap();
        for n in 0..100 {
            q.put(&n).unwrap();
        }
        let expected: Vec<String> = (0..100).map(|n| n.to_string()).collect();
        assert_eq!(
            server.ask("drain 100"),
            format!("items [{}]", expected.join(", "))
        );
        // C2: Empty after the timeout, executed by the CPython server.
        let t0 = Instant::now();
        assert!(matches!(
            q.get_timeout(Duration::from_millis(200)),
            Err(Error::Empty)
        ));
        assert!(t0.elapsed() >= Duration::from_millis(150));
        assert!(matches!(q.try_get(), Err(Error::Empty)));
        // C2: ValueError carries its class and message.
        let proxy = q.proxy();
        let err = proxy
            .call("get", vec![], vec![("timeout".into(), PyValue::Int(-1))])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Remote { class, message } if class == "builtins.ValueError" && message.contains("non-negative")),
            "{err}"
        );
        // C8: '#UNSERIALIZABLE' and '#TRACEBACK' become remote errors with their text.
        let err = proxy.call("#GETVALUE", vec![], vec![]).unwrap_err();
        assert!(
            matches!(&err, Error::Remote { message, .. } if message.contains("Unserializable")),
            "{err}"
        );
        let err = proxy.call("no_such_method", vec![], vec![]).unwrap_err();
        assert!(
            matches!(&err, Error::Remote { class, .. } if class.ends_with("RemoteError")),
            "{err}"
        );
        assert!(matches!(
            manager.create("no_such_typeid"),
            Err(Error::Remote { .. })
        ));
    }
    {
        // C2: Full from a bounded queue; qsize/full/empty; FIFO.
        let b = manager.get_queue::<String>("get_bounded_queue").unwrap();
        b.put(&"a".into()).unwrap();
        b.put(&"b".into()).unwrap();
        assert!(matches!(b.try_put(&"c".into()), Err(Error::Full)));
        assert!(matches!(
            b.put_timeout(&"c".into(), Duration::from_millis(100)),
            Err(Error::Full)
        ));
        assert_eq!(
            (
                b.qsize().unwrap(),
                b.is_full().unwrap(),
                b.is_empty().unwrap()
            ),
            (2, true, false)
        );
        assert_eq!(b.get().unwrap(), "a");
        assert_eq!(b.get().unwrap(), "b");
        b.task_done().unwrap();
        b.task_done().unwrap();
        b.join().unwrap();
    }
    {
        // C3: values pickled by CPython (protocol 4, framed, memoized) decode into Rust types.
        type Mixed = (
            i64,
            String,
            ByteBuf,
            Option<i32>,
            f64,
            bool,
            Vec<Vec<u8>>,
            std::collections::BTreeMap<String, (i32, i32)>,
            std::collections::BTreeSet<i64>,
        );
        let q = manager.get_queue::<Mixed>("get_task_queue").unwrap();
        let value: Mixed = (
            -(1 << 40),
            "h\u{e9}llo \u{2603}".into(),
            ByteBuf::from((0..=255u8).collect::<Vec<u8>>()),
            None,
            2.5,
            true,
            vec![vec![1, 2], vec![]],
            [("k".to_string(), (1, 2)), ("j".to_string(), (1, 2))].into(),
            [1, -2, 1 << 35].into(),
        );
        q.put(&value).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), value);
        // The same value re-pickled here and decoded must also match.
        let v = pickle::to_value(&value).unwrap();
        assert_eq!(
            pickle::from_value::<Mixed>(pickle::loads(&pickle::dumps(&v)).unwrap()).unwrap(),
            value
        );
    }
    {
        // C6: `Queues.queue(name)` is in the server's method_to_typeid: '#PROXY' replies
        // become proxies to the new objects, on the connection already open.
        let queues = manager.create("Queues").unwrap();
        assert!(queues.exposed().contains(&"queue".to_string()));
        let name = || vec![PyValue::Str("a".into())];
        let a: QueueProxy<i64> = queues.call_proxy("queue", name(), vec![]).unwrap().into();
        a.put(&1).unwrap();
        let b: QueueProxy<i64> = queues.call_proxy("queue", name(), vec![]).unwrap().into();
        assert_eq!(b.get_timeout(Duration::from_secs(10)).unwrap(), 1);
        assert!(matches!(a.try_get(), Err(Error::Empty)));
        // `Queues` and one queue: both calls returned the same object (one ident, two
        // references).
        assert_eq!(manager.number_of_objects().unwrap(), baseline + 2);
        // A plain call of such a method is refused, and its object released.
        assert!(matches!(
            queues.call("queue", name(), vec![]),
            Err(Error::Wire(WireError::Protocol { .. }))
        ));
        assert_eq!(manager.number_of_objects().unwrap(), baseline + 2);
        drop((a, b));
        assert_eq!(manager.number_of_objects().unwrap(), baseline + 1);
    }
    {
        // MGR-09 against CPython: a generator behind an IteratorProxy, consumed item by item
        // (StopIteration ends it).
        let squares = manager.create("baz").unwrap();
        assert_eq!(squares.exposed(), ["__next__"]);
        let items: Vec<i64> = squares.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(items, (0..10).map(|i| i * i).collect::<Vec<i64>>());
        assert_eq!(
            squares.iter::<i64>().count(),
            0,
            "an exhausted generator stays exhausted"
        );
    }
    // C7: dropping the proxies released every reference.
    assert_eq!(manager.number_of_objects().unwrap(), baseline);
    let form_used = server.form.clone();
    server.exit();
    form_used
}

#[test]
fn rust_client_with_cpython_server_both_forms() {
    let Some(python) = python3() else { return };
    let native = rust_client_session(&python, "native");
    let other = rust_client_session(&python, "other");
    assert_ne!(native, other);
}

#[test]
fn rust_client_with_cpython_servers_of_other_versions() {
    if python3().is_none() {
        return;
    }
    for python in extra_pythons() {
        for form in ["native", "other"] {
            rust_client_session(&python, form);
        }
    }
}

/// C5: `shutdown` of a CPython server from a Rust client; its process then exits.
#[test]
fn rust_client_shuts_down_a_cpython_server() {
    let Some(python) = python3() else { return };
    let mut server = PyServer::start(&python, "native");
    let manager = Manager::connect(("127.0.0.1", server.port), KEY).unwrap();
    manager.shutdown().unwrap();
    // The server process is gone: new connections are refused.
    let refused = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        Manager::connect(("127.0.0.1", server.port), KEY).is_err()
    });
    assert!(refused);
    // server.py's own shutdown() then finds the server gone; reap it whatever it says.
    let _ = writeln!(server.stdin, "exit");
    let _ = server.child.0.wait();
}

/// C3: protocols 2 to 5 as CPython writes them decode to the same values.
#[test]
fn decodes_every_protocol_cpython_writes() {
    let Some(python) = python3() else { return };
    let script = r#"
import pickle, sys
v = (None, True, 2**70, -5, 1.5, 'h\u00e9', b'\x00\xff', bytearray(b'ba'), [[1], [2]], {'a': [1]}, {3}, frozenset({4}))
for p in (2, 3, 4, 5):
    sys.stdout.write(pickle.dumps(v, protocol=p).hex() + '\n')
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(lines.len(), 4);
    type Plain = (
        Option<i32>,
        bool,
        Vec<u8>,
        i64,
        f64,
        String,
        ByteBuf,
        ByteBuf,
        Vec<Vec<i32>>,
        std::collections::BTreeMap<String, Vec<i32>>,
        std::collections::BTreeSet<i32>,
        std::collections::BTreeSet<i32>,
    );
    let mut decoded = Vec::new();
    for bytes in &lines {
        let v = pickle::loads(bytes).unwrap_or_else(|e| panic!("{e}"));
        // The big int stays a PyValue; compare the rest through serde.
        let PyValue::Tuple(mut items) = v else {
            panic!()
        };
        assert_eq!(
            items[2],
            PyValue::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])
        );
        items[2] = PyValue::List(vec![]);
        let plain: Plain =
            pickle::from_value(PyValue::Tuple(items)).unwrap_or_else(|e| panic!("{e}"));
        decoded.push(plain);
    }
    assert!(decoded.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(decoded[0].5, "h\u{e9}");
    assert_eq!(decoded[0].7.as_slice(), b"ba");
}

/// C9: a CPython server run with `python -O` (its `assert`s gone) behaves the same.
#[test]
fn rust_client_with_optimized_cpython_server() {
    let Some(python) = python3() else { return };
    rust_client_session_with(&python, &["-O"], "native");
}

/// S11: a strict server refuses MD5 answers (CPython <= 3.11) and welcomes {sha256} (3.12+).
#[test]
fn strict_server_refuses_md5_clients() {
    let Some(python) = python3() else { return };
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.register_queue("get_task_queue", 0);
    server.strict(true);
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    server.on_log(move |line| sink.lock().unwrap().push(line.to_string()));
    let server = server.start_thread().unwrap();
    let port = server.address().port();
    // The form each interpreter answers with when not forced: MD5 before 3.12.
    let modern_native = Command::new(&python)
        .args(["-c", "import sys; print(sys.version_info >= (3, 12))"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"True"));
    let (md5_form, sha_form) = if modern_native {
        ("other", "native")
    } else {
        ("native", "other")
    };
    let out = run_client(&python, port, &key_hex(), md5_form, "wrongkey");
    assert!(out.contains("legacy"), "{out}");
    run_client(&python, port, &key_hex(), sha_form, "roundtrip");
    assert_eq!(log.lock().unwrap().len(), 1);
}

/// Sends one command to dying_client.py and returns its one-line answer.
fn command(stdin: &mut ChildStdin, stdout: &mut BufReader<ChildStdout>, line: &str) -> String {
    writeln!(stdin, "{line}").unwrap();
    let mut answer = String::new();
    stdout.read_line(&mut answer).unwrap();
    answer
}

/// Issue 12.1 with unmodified CPython clients: a client SIGKILLed while blocked in `q.get()`
/// or `q.get(timeout=30)` on a Rust-served queue takes nothing with it: the item put next
/// reaches the next client, 50 times out of 50.
#[test]
fn dead_cpython_getter_loses_nothing() {
    const RUNS: u64 = 50;
    let Some(python) = python3() else {
        return;
    };
    for mode in ["blocking", "timed"] {
        let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
        server.on_log(|_| {});
        let (queue, gets) = common::reporting::Reporting::new(
            Box::new(ServedQueue::new(0)) as Box<dyn Referent>,
            "get",
        );
        server.register("q", move || queue.clone());
        let server = server.start_thread().unwrap();
        let manager = Manager::connect(server.address(), KEY).unwrap();
        let (putter, b): (QueueProxy<u64>, QueueProxy<u64>) = (
            manager.get_queue("q").unwrap(),
            manager.get_queue("q").unwrap(),
        );
        assert_eq!((putter.qsize().unwrap(), b.qsize().unwrap()), (0, 0));
        let settled = |server: &ServerHandle| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while server.connections() != 2 {
                assert!(
                    Instant::now() < deadline,
                    "{} connections",
                    server.connections()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        settled(&server);
        let port = server.address().port().to_string();
        let mut clients = spawn(&python, &["dying_client.py", &port, &key_hex()]);
        let mut stdin = clients.0.stdin.take().unwrap();
        let mut stdout = BufReader::new(clients.0.stdout.take().unwrap());
        let mut delivered = 0;
        for run in 0..RUNS {
            let started = command(&mut stdin, &mut stdout, &format!("start {mode}"));
            assert!(started.starts_with("started"), "{started:?}");
            let tid = gets
                .recv_timeout(Duration::from_secs(30))
                .expect("client A's get reached the server");
            common::await_thread_in_futex(tid);
            assert_eq!(command(&mut stdin, &mut stdout, "kill"), "killed 9\n");
            putter.put(&run).unwrap();
            // A's connection is gone once its serving thread has finished with it.
            settled(&server);
            match b.try_get() {
                Ok(item) => {
                    assert_eq!(item, run);
                    delivered += 1;
                }
                Err(Error::Empty) => {}
                Err(e) => panic!("{e}"),
            }
        }
        drop(stdin);
        assert!(clients.0.wait().unwrap().success());
        println!("{mode}: {delivered}/{RUNS} delivered");
        assert_eq!(delivered, RUNS, "{mode}: items lost to dead clients");
    }
}

/// Issue 12.3 with an unmodified CPython client: a `put` over the Rust server's frame cap
/// raises the `ValueError` the server answers with (its `size` and `limit` attributes set),
/// not a dead-connection error.
#[test]
fn cpython_client_reads_the_oversize_refusal() {
    let Some(python) = python3() else {
        return;
    };
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.max_frame(1 << 20);
    server.register_queue("get_task_queue", 0);
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    server.on_log(move |line| sink.lock().unwrap().push(line.to_string()));
    let server = server.start_thread().unwrap();
    let port = server.address().port();
    let out = run_client(&python, port, &key_hex(), "native", "oversize");
    assert!(out.starts_with("ok oversize"), "{out}");
    // Logged once the serving thread has closed the connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = || {
        let lines = log.lock().unwrap();
        lines
            .iter()
            .any(|l| l.contains("exceeds the limit of 1048576 bytes"))
    };
    while !logged() {
        assert!(Instant::now() < deadline, "{:?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
}
