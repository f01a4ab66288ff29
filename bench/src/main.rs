//! `cargo run --release -p sockhost-bench -- [CASE...] [--rounds N]`: measures sockhost
//! against native tokio/rustls in the same run, on loopback, and prints each figure with the
//! ratio guest / native.
//!
//! Cases:
//! - `tls`: TLS 1.3 handshakes per second: connect, handshake, one echoed line, close, in a
//!   loop, by the `tls-echo-client` guest and by a native tokio-rustls client, against the
//!   same native rustls server.

use sockhost::tls::TlsConfig;
use sockhost_tests::pki::{Ca, client_config, native_tls_echo, server_config};
use sockhost_tests::{TLS_ECHO_CLIENT, loopback_policy, run, runtime};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cases = Vec::new();
    let mut rounds = 300u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a number"))?
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
            other => anyhow::bail!("unknown case {other:?} (known: tls)"),
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
