//! `cargo run --release -p sockhost-bench -- [CASE...] [--rounds N]`: measures sockhost
//! against native tokio/rustls in the same run, on loopback, and prints each figure with the
//! ratio guest / native.
//!
//! Cases:
//! - `tls`: TLS 1.3 handshakes per second: connect, handshake (resuming the session after
//!   the first), one echoed line, close, in a loop, by the `tls-echo-client` guest and by a
//!   native tokio-rustls client, against the same native rustls server.
//! - `connection`: the cost of a connection to the `tcp-echo-server` guest (one fresh
//!   instance per connection) against a native tokio echo server: connect, 16 bytes echoed,
//!   close, one at a time; the difference is what instantiating a handler costs.
//! - `idle`: resident memory of the server per idle connection with N connections held open
//!   by a child process (`--idle N`, default 10,000), guest server and native server each
//!   measured on its own.
//! - `echo`: the echo table: TCP ping-pong 64 B and 16 KiB with 1 and 32 connections (round
//!   trips/s, p50/p99), TCP bulk with 1 and 8 connections (MB/s), UDP ping-pong 64 B with 1
//!   and 32 sockets, connection churn with 1 and 32 at a time.
//! - `batch`: the seed's batched send: rounds of 1,000 writes of 64 B, sent by one flush or
//!   flushed one by one, on a stream socket and a datagram output stream (MB/s), and the
//!   send system calls per round counted by `strace -c -f` in a child process.
//!
//! `--only TEXT` keeps the echo cases whose names contain TEXT (`--only udp`).
//! `--seconds S` sets each case's duration (default 3), `--quick` runs everything short
//! (about 20 seconds in all), `--json PATH` writes the results as JSON.

use sockhost::runtime::{HandlerLimits, Runtime};
use sockhost::tls::TlsConfig;
use sockhost_tests::pki::{Ca, client_config, native_tls_echo_counting, server_config};
use sockhost_tests::{
    TCP_ECHO_SERVER, TLS_ECHO_CLIENT, Transport, UDP_ECHO_SERVER, loopback_policy, native_tcp_echo,
    run, runtime, start, start_program,
};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

mod batch;
mod echo;

/// The cases, in the order a full run takes them: the idle case last, as closing its
/// 10,000 connections keeps the kernel busy a while.
const CASES: [&str; 5] = ["echo", "batch", "connection", "tls", "idle"];

const USAGE: &str = "usage: sockhost-bench [echo|batch|connection|tls|idle]... [--seconds S] \
[--quick] [--json PATH] [--rounds N] [--idle N] [--only TEXT]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match bench().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockhost-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench() -> anyhow::Result<()> {
    // The idle case holds 10,000 connections, a file each, at both ends.
    sockhost::raise_open_file_limit()?;
    let mut cases = Vec::new();
    let mut rounds = 300u32;
    let mut idle = 10_000usize;
    let mut seconds = 3.0f64;
    let mut batch_rounds = 200usize;
    let mut only = String::new();
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a number"))?
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--seconds needs a number"))?
            }
            "--json" => {
                json = Some(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--json needs a path"))?,
                )
            }
            "--quick" => {
                seconds = 0.4;
                rounds = 100;
                idle = 1000;
                batch_rounds = 20;
            }
            "--hold" => {
                let addr = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--hold needs ADDR N"))?;
                let count = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--hold needs ADDR N"))?;
                return hold_connections(addr.parse()?, count).await;
            }
            "--batch-child" => {
                let rest: Vec<String> = args.collect();
                let (seconds, received) = batch::Workload::parse(&rest)?.run().await?;
                println!("seconds={seconds} received={received}");
                return Ok(());
            }
            "--only" => {
                only = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--only needs part of a case name"))?
            }
            "--idle" => {
                idle = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--idle needs a number"))?
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            case if CASES.contains(&case) => cases.push(case.to_string()),
            other => anyhow::bail!("unknown case or option {other:?} (see --help)"),
        }
    }
    if cases.is_empty() {
        cases = CASES.map(String::from).to_vec();
    }
    let time = std::time::Duration::from_secs_f64(seconds);
    println!(
        "{:<28} {:>12} {:>12} {:>7}",
        "case", "sockhost", "native", "ratio"
    );
    for case in cases {
        match case.as_str() {
            "tls" => tls_handshakes(rounds).await?,
            "connection" => connection_cost(rounds.max(1000)).await?,
            "idle" => idle_memory(idle).await?,
            "echo" => echo_cases(time, &only).await?,
            "batch" => batch::batch_cases(batch_rounds).await?,
            _ => unreachable!("cases are checked as they are read"),
        }
    }
    if let Some(path) = json {
        let rows = RESULTS.lock().unwrap();
        let body: Vec<String> = rows.iter().map(Row::json).collect();
        std::fs::write(&path, format!("[\n  {}\n]\n", body.join(",\n  ")))?;
        println!("wrote {path}");
    }
    Ok(())
}

/// One line of the results.
struct Row {
    case: String,
    unit: String,
    guest: echo::Measured,
    native: echo::Measured,
    /// More JSON fields, for cases that measure more than a rate.
    extra: Option<String>,
}

impl Row {
    fn json(&self) -> String {
        let extra = self
            .extra
            .as_ref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default();
        format!(
            "{{\"case\": {:?}, \"unit\": {:?}, \"sockhost\": {:.3}, \"native\": {:.3}, \"ratio\": {:.3}, \"sockhost_p50_us\": {:.1}, \"sockhost_p99_us\": {:.1}, \"native_p50_us\": {:.1}, \"native_p99_us\": {:.1}{extra}}}",
            self.case,
            self.unit,
            self.guest.rate,
            self.native.rate,
            self.guest.rate / self.native.rate,
            self.guest.p50_us,
            self.guest.p99_us,
            self.native.p50_us,
            self.native.p99_us
        )
    }
}

static RESULTS: std::sync::Mutex<Vec<Row>> = std::sync::Mutex::new(Vec::new());

fn report(case: &str, unit: &str, guest: f64, native: f64) {
    let measured = |rate| echo::Measured {
        rate,
        ..Default::default()
    };
    report_measured(case, unit, measured(guest), measured(native));
}

fn report_measured(case: &str, unit: &str, guest: echo::Measured, native: echo::Measured) {
    let latency = if guest.p50_us > 0.0 {
        format!(
            "  p50 {:.0}/{:.0} us, p99 {:.0}/{:.0} us",
            guest.p50_us, native.p50_us, guest.p99_us, native.p99_us
        )
    } else {
        String::new()
    };
    let ratio = guest.rate / native.rate;
    println!(
        "{case:<28} {:>12.0} {:>12.0} {ratio:>7.2}  ({unit}){latency}",
        guest.rate, native.rate
    );
    RESULTS.lock().unwrap().push(Row {
        case: case.into(),
        unit: unit.into(),
        guest,
        native,
        extra: None,
    });
}

/// Adds JSON fields to the last row reported.
fn annotate_last(fields: String) {
    if let Some(row) = RESULTS.lock().unwrap().last_mut() {
        row.extra = Some(fields);
    }
}

/// The echo table: each case against the guest server and the native server.
async fn echo_cases(time: std::time::Duration, only: &str) -> anyhow::Result<()> {
    let runtime = runtime(loopback_policy());
    // On 127.0.0.1, as the native servers: all interfaces would mean a dual-stack IPv6
    // socket, whose IPv4-mapped sends cost the kernel more.
    let tcp_guest = start(&runtime, TCP_ECHO_SERVER, &["0", "--address", "127.0.0.1"]);
    let udp_guest = start(&runtime, UDP_ECHO_SERVER, &["0", "--address", "127.0.0.1"]);
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = (
        local(tcp_guest.bound(Transport::Tcp).await.port()),
        native_tcp_echo().await,
    );
    let udp = (
        local(udp_guest.bound(Transport::Udp).await.port()),
        sockhost_tests::native_udp_echo().await,
    );
    for (connections, size) in [(1, 64), (32, 64), (1, 16384), (32, 16384)] {
        let case = format!("tcp ping-pong {size} B x{connections}");
        if !case.contains(only) {
            continue;
        }
        let guest = echo::tcp_ping_pong(tcp.0, connections, size, time).await?;
        let native = echo::tcp_ping_pong(tcp.1, connections, size, time).await?;
        report_measured(&case, "round trips/s", guest, native);
    }
    for connections in [1, 8] {
        let case = format!("tcp bulk x{connections}");
        if !case.contains(only) {
            continue;
        }
        let guest = echo::tcp_bulk(tcp.0, connections, time).await?;
        let native = echo::tcp_bulk(tcp.1, connections, time).await?;
        report_measured(&case, "MB/s echoed", guest, native);
    }
    for sockets in [1, 32] {
        let case = format!("udp ping-pong 64 B x{sockets}");
        if !case.contains(only) {
            continue;
        }
        let guest = echo::udp_ping_pong(udp.0, sockets, 64, time).await?;
        let native = echo::udp_ping_pong(udp.1, sockets, 64, time).await?;
        report_measured(&case, "round trips/s", guest, native);
    }
    for parallel in [1, 32] {
        let case = format!("connection churn x{parallel}");
        if !case.contains(only) {
            continue;
        }
        let guest = echo::churn(tcp.0, parallel, time).await?;
        let native = echo::churn(tcp.1, parallel, time).await?;
        report_measured(&case, "connections/s", guest, native);
    }
    tcp_guest.app.stop();
    udp_guest.app.stop();
    Ok(())
}

async fn tls_handshakes(rounds: u32) -> anyhow::Result<()> {
    let ca = Ca::new("bench CA");
    let (addr, handshakes) =
        native_tls_echo_counting(server_config(&ca.server(1), None), false).await;

    // One configuration for every connection, so both clients resume the TLS session.
    let connector = tokio_rustls::TlsConnector::from(client_config(&ca, None));
    let started = Instant::now();
    for _ in 0..rounds {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let tls = connector.connect(name, stream).await?;
        let (read, mut write) = tokio::io::split(tls);
        write.write_all(b"x\n").await?;
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        anyhow::ensure!(line == "x\n", "bad echo {line:?}");
        write.shutdown().await?;
    }
    let native = f64::from(rounds) / started.elapsed().as_secs_f64();

    let mut tls = TlsConfig::default();
    tls.without_system_roots();
    tls.add_ca_der(ca.cert.clone());
    let runtime = runtime(loopback_policy()).with_tls(tls);
    let port = addr.port().to_string();
    let rounds_arg = rounds.to_string();
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &[
            "127.0.0.1",
            &port,
            "x",
            "--level",
            "tls13",
            "--repeat",
            &rounds_arg,
        ],
    )
    .await;
    anyhow::ensure!(output.exit.code == 0, "guest failed: {output:?}");
    let guest: f64 = output
        .value("handshakes-per-second")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no rate in {:?}", output.stdout))?;
    let (full, resumed) = handshakes.counts();
    // Each client's first handshake is full, the rest resume its session.
    anyhow::ensure!(
        full == 2 && resumed == 2 * (rounds as usize).saturating_sub(1),
        "expected 2 full handshakes and the rest resumed, got {full} full and {resumed} resumed"
    );
    report(
        "tls13 handshakes/s",
        "connect + handshake + echo + close",
        guest,
        native,
    );
    Ok(())
}

/// Connect, echo 16 bytes, close, `rounds` times in a row; returns connections per second.
async fn churn(addr: SocketAddr, rounds: u32) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..rounds {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(b"0123456789abcde\n").await?;
        let mut buf = [0u8; 16];
        stream.read_exact(&mut buf).await?;
        anyhow::ensure!(&buf == b"0123456789abcde\n", "bad echo");
    }
    Ok(f64::from(rounds) / started.elapsed().as_secs_f64())
}

async fn connection_cost(rounds: u32) -> anyhow::Result<()> {
    let native = churn(native_tcp_echo().await, rounds).await?;
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    churn(addr, 100).await?; // warm up
    let guest = churn(addr, rounds).await?;
    server.app.stop();
    report(
        "connections/s, 1 at a time",
        "connect + 16 B echo + close",
        guest,
        native,
    );
    let extra = 1e6 / guest - 1e6 / native;
    println!(
        "{:<28} {:>12.1}  (microseconds per connection over native: instantiation and handler)",
        "instantiation cost", extra
    );
    Ok(())
}

/// Resident memory of this process, in bytes.
fn rss() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad statm"))?
        .parse()?;
    Ok(pages * 4096)
}

/// `--hold ADDR N` (a child process): opens N connections that each complete one echo,
/// says `ready`, and holds them until its standard input closes.
async fn hold_connections(addr: SocketAddr, count: usize) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"x\n").await?;
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await?;
        held.push(stream);
    }
    println!("ready");
    let mut rest = Vec::new();
    tokio::io::stdin().read_to_end(&mut rest).await?;
    Ok(())
}

/// Growth of this process's resident memory while a child holds `count` connections to
/// `addr`, per connection.
async fn server_memory_per_connection(addr: SocketAddr, count: usize) -> anyhow::Result<f64> {
    use tokio::io::AsyncBufReadExt;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = rss()?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--hold", &addr.to_string(), &count.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready =
        tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line()).await??;
    anyhow::ensure!(
        ready.as_deref() == Some("ready"),
        "the holding process failed"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = rss()?;
    drop(child.stdin.take());
    child.wait().await?;
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

async fn idle_memory(count: usize) -> anyhow::Result<()> {
    let native = server_memory_per_connection(native_tcp_echo().await, count).await?;
    // A runtime of its own whose instance pool holds a handler per connection.
    let limits = HandlerLimits {
        max_concurrent: count + 16,
        ..HandlerLimits::default()
    };
    let runtime = Runtime::with_limits(loopback_policy(), limits)?;
    let server = start_program(
        &runtime,
        &runtime.load_file(TCP_ECHO_SERVER.as_ref())?,
        &["0"],
    );
    let port = server.bound(Transport::Tcp).await.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    churn(addr, 10).await?;
    let guest = server_memory_per_connection(addr, count).await?;
    server.app.stop();
    report(
        &format!("idle memory, {count} conns"),
        "server RSS bytes per connection (lower is better)",
        guest,
        native,
    );
    Ok(())
}
