//! The harness of the end-to-end tests: run real guest components in the sockhost host and
//! capture what they print; native tokio peers on loopback to talk to them.

use sockhost::policy::NetworkPolicy;
use sockhost::runtime::{AppExit, Program, RunOptions, RunningApp, Runtime};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub mod pki;

pub use sockhost::resolve::Transport;
pub use sockhost_guests::{
    BATCH_SENDER, BROKER_PROBE, HANDLER_PROBE, SOCKET_PROBE, TCP_ECHO_CLIENT, TCP_ECHO_SERVER,
    TLS_ECHO_CLIENT, TLS_ECHO_SERVER, UDP_ECHO_CLIENT, UDP_ECHO_SERVER, WASI_COMMAND,
};

/// The longest any guest run in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A runtime with `policy`, sharing one engine (and compiled guests) across the test binary.
pub fn runtime(policy: NetworkPolicy) -> Runtime {
    static BASE: OnceLock<Runtime> = OnceLock::new();
    BASE.get_or_init(|| Runtime::new(NetworkPolicy::default()).expect("engine"))
        .with_policy(policy)
}

/// A guest, compiled once per test binary.
pub fn program(runtime: &Runtime, path: &str) -> Program {
    static PROGRAMS: OnceLock<Mutex<HashMap<String, Program>>> = OnceLock::new();
    let programs = PROGRAMS.get_or_init(Default::default);
    if let Some(program) = programs.lock().unwrap().get(path) {
        return program.clone();
    }
    let program = runtime.load_file(path.as_ref()).expect("guest compiles");
    programs
        .lock()
        .unwrap()
        .insert(path.to_string(), program.clone());
    program
}

/// Binding any port and connecting anywhere on loopback: what most tests need.
pub fn loopback_policy() -> NetworkPolicy {
    NetworkPolicy {
        allow_bind: vec!["*".parse().unwrap()],
        allow_connect: vec![
            "127.0.0.0/8".parse().unwrap(),
            "[::1]".parse().unwrap(),
            "localhost".parse().unwrap(),
        ],
        ..NetworkPolicy::default()
    }
}

/// What a finished guest run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// How it ended.
    pub exit: AppExit,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// The value of the first `key=value` line (or word) of stdout.
    pub fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(prefix.as_str()))
    }

    /// The status of an `error STATUS MESSAGE` line.
    pub fn error_status(&self) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix("error "))
            .and_then(|rest| rest.split_whitespace().next())
    }

    /// Panics with everything the guest said unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.exit.code, 0, "guest failed: {self:#?}");
        self
    }
}

/// A started guest and its captured output.
pub struct Started {
    /// The app.
    pub app: RunningApp,
    /// Its standard output.
    pub stdout: MemoryOutputPipe,
    /// Its standard error.
    pub stderr: MemoryOutputPipe,
}

impl Started {
    /// Waits (bounded) until the guest ends.
    pub async fn finish(self) -> Output {
        let exit = tokio::time::timeout(TIMEOUT, self.app.wait())
            .await
            .expect("guest did not finish in time")
            .expect("guest ran");
        Output {
            exit,
            stdout: String::from_utf8_lossy(&self.stdout.contents()).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr.contents()).into_owned(),
        }
    }

    /// Waits (bounded) until the guest has bound a port.
    pub async fn bound(&self, transport: Transport) -> SocketAddr {
        tokio::time::timeout(TIMEOUT, self.app.bound(transport))
            .await
            .expect("guest did not bind a port in time")
    }
}

/// Starts a guest with `args`, capturing its output.
pub fn start(runtime: &Runtime, guest: &str, args: &[&str]) -> Started {
    start_program(runtime, &program(runtime, guest), args)
}

/// Starts a program loaded by `runtime` (for runtimes other than [`runtime`]'s, whose
/// programs [`start`] caches) with `args`, capturing its output.
pub fn start_program(runtime: &Runtime, program: &Program, args: &[&str]) -> Started {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let options = RunOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        stdout: Some(stdout.clone()),
        stderr: Some(stderr.clone()),
        ..RunOptions::default()
    };
    let app = runtime.start(program, options);
    Started {
        app,
        stdout,
        stderr,
    }
}

/// Runs a guest to the end.
pub async fn run(runtime: &Runtime, guest: &str, args: &[&str]) -> Output {
    start(runtime, guest, args).finish().await
}

/// Runs the probe guest with a loopback policy.
pub async fn probe(args: &[&str]) -> Output {
    run(&runtime(loopback_policy()), SOCKET_PROBE, args).await
}

/// A native tokio TCP echo server on 127.0.0.1; runs until the test ends.
pub async fn native_tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// A native tokio UDP echo server on 127.0.0.1; runs until the test ends.
pub async fn native_udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Sends `message` from `socket` to `to` and returns the first datagram back, from any
/// sender, as text (bounded).
pub async fn udp_exchange(socket: &UdpSocket, to: SocketAddr, message: &[u8]) -> String {
    socket.send_to(message, to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("no datagram came back in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends `line` plus a newline over TCP and reads one line back (bounded).
pub async fn tcp_round_trip(addr: SocketAddr, line: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        while !received.contains(&b'\n') {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed before echoing");
            received.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(received).unwrap().trim_end().to_string()
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("echo in time")
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
