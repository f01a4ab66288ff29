//! `cargo run --release -p sockhost-bench -- [CASE...] [--rounds N]`: measures sockhost
//! against native tokio/rustls in the same run, on loopback, and prints each figure with the
//! ratio guest / native.
//!
//! Cases:
//! - `tls`: TLS 1.3 handshakes per second: connect, handshake, one echoed line, close, in a
//!   loop, by the `tls-echo-client` guest and by a native tokio-rustls client, against the
//!   same native rustls server.
//! - `connection`: the cost of a connection to the `tcp-echo-server` guest (one fresh
//!   instance per connection) against a native tokio echo server: connect, 16 bytes echoed,
//!   close, one at a time; the difference is what instantiating a handler costs.
//! - `idle`: resident memory per idle connection with N connections held open (`--idle N`,
//!   default 2,000), guest server and native server each measured on its own.

use sockhost::tls::TlsConfig;
use sockhost_tests::pki::{Ca, client_config, native_tls_echo, server_config};
use sockhost_tests::{
    TCP_ECHO_SERVER, TLS_ECHO_CLIENT, Transport, loopback_policy, native_tcp_echo, run, runtime,
    start,
};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cases = Vec::new();
    let mut rounds = 300u32;
    let mut idle = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a number"))?
            }
            "--idle" => {
                idle = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--idle needs a number"))?
            }
            case => cases.push(case.to_string()),
        }
    }
    if cases.is_empty() {
        cases.push("tls".into());
    }
    println!(
        "{:<28} {:>12} {:>12} {:>7}",
        "case", "sockhost", "native", "ratio"
    );
    for case in cases {
        match case.as_str() {
            "tls" => tls_handshakes(rounds).await?,
            "connection" => connection_cost(rounds.max(1000)).await?,
            "idle" => idle_memory(idle).await?,
            other => anyhow::bail!("unknown case {other:?} (known: tls, connection, idle)"),
        }
    }
    Ok(())
}

fn report(case: &str, unit: &str, guest: f64, native: f64) {
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.2}  ({unit})",
        case,
        guest,
        native,
        guest / native
    );
}

async fn tls_handshakes(rounds: u32) -> anyhow::Result<()> {
    let ca = Ca::new("bench CA");
    let addr = native_tls_echo(server_config(&ca.server(1), None), false).await;

    let config = client_config(&ca, None);
    let connector = tokio_rustls::TlsConnector::from(config);
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

/// Opens `count` connections that each complete one echo, holds them, and returns the
/// growth of resident memory per connection.
async fn hold(addr: SocketAddr, count: usize) -> anyhow::Result<(f64, Vec<tokio::net::TcpStream>)> {
    let before = rss()?;
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"x\n").await?;
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await?;
        held.push(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let after = rss()?;
    Ok(((after.saturating_sub(before)) as f64 / count as f64, held))
}

async fn idle_memory(count: usize) -> anyhow::Result<()> {
    let (native, held) = hold(native_tcp_echo().await, count).await?;
    drop(held);
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    churn(addr, 10).await?;
    let (guest, held) = hold(addr, count).await?;
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.1}  (bytes of RSS per idle connection, {count} held; both ends in this process)",
        "idle connection memory",
        guest,
        native,
        guest / native
    );
    drop(held);
    server.app.stop();
    Ok(())
}
