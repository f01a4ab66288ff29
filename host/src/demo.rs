//! `sockhost demo`: the seed's four echo samples, embedded, talking over loopback.

use sockhost::policy::NetworkPolicy;
use sockhost::resolve::Transport;
use sockhost::runtime::{RunOptions, Runtime};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// How long each exchange may take before the demo gives up.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a TCP and a UDP echo exchange between guests and prints them.
pub async fn run() -> anyhow::Result<ExitCode> {
    let policy = NetworkPolicy {
        allow_bind: vec!["*:0".parse()?],
        allow_connect: vec![
            "127.0.0.0/8".parse()?,
            "[::1]".parse()?,
            "localhost".parse()?,
        ],
        ..NetworkPolicy::default()
    };
    let runtime = Runtime::new(policy).map_err(anyhow::Error::from)?;
    println!("sockhost demo: the seed's echo samples as components, talking over loopback");
    println!("policy: bind *:0 (a free port), connect to loopback only\n");
    let mut all_ok = true;
    for (transport, server, client, message) in [
        (
            Transport::Tcp,
            sockhost_guests::TCP_ECHO_SERVER_BYTES,
            sockhost_guests::TCP_ECHO_CLIENT_BYTES,
            "Hello over TCP!",
        ),
        (
            Transport::Udp,
            sockhost_guests::UDP_ECHO_SERVER_BYTES,
            sockhost_guests::UDP_ECHO_CLIENT_BYTES,
            "Hello, world!",
        ),
    ] {
        let label = match transport {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        };
        let server_name = format!("{}-echo-server", label.to_lowercase());
        let client_name = format!("{}-echo-client", label.to_lowercase());
        let server = runtime
            .load(&server_name, server)
            .map_err(anyhow::Error::from)?;
        let client = runtime
            .load(&client_name, client)
            .map_err(anyhow::Error::from)?;
        let server_out = MemoryOutputPipe::new(4096);
        let server_app = runtime.start(
            &server,
            RunOptions {
                args: vec!["0".into()],
                stdout: Some(server_out.clone()),
                ..RunOptions::default()
            },
        );
        let port = tokio::time::timeout(EXCHANGE_TIMEOUT, server_app.bound(transport))
            .await
            .map_err(|_| anyhow::anyhow!("{server_name} did not bind a port"))?
            .port();
        println!("{label}: {server_name} is listening on port {port}");
        let started = Instant::now();
        let client_out = MemoryOutputPipe::new(4096);
        let client_err = MemoryOutputPipe::new(4096);
        let client_app = runtime.start(
            &client,
            RunOptions {
                args: vec!["localhost".into(), port.to_string(), message.into()],
                stdout: Some(client_out.clone()),
                stderr: Some(client_err.clone()),
                ..RunOptions::default()
            },
        );
        let exit = tokio::time::timeout(EXCHANGE_TIMEOUT, client_app.wait())
            .await
            .map_err(|_| anyhow::anyhow!("{client_name} did not finish"))?
            .map_err(anyhow::Error::from)?;
        let echoed = String::from_utf8_lossy(&client_out.contents())
            .trim_end()
            .to_string();
        println!("{label}: {client_name} sent    {message:?}");
        if exit.code == 0 {
            println!(
                "{label}: {client_name} got back {echoed:?} in {:.1} ms\n",
                started.elapsed().as_secs_f64() * 1e3
            );
        } else {
            all_ok = false;
            let err = String::from_utf8_lossy(&client_err.contents())
                .trim_end()
                .to_string();
            println!(
                "{label}: {client_name} failed (exit {}): {err}\n",
                exit.code
            );
        }
        server_app.stop();
    }
    println!("{}", if all_ok { "demo ok" } else { "demo FAILED" });
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
