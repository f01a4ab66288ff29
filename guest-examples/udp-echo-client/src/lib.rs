//! `udp-echo-client [HOST] [SERVICE] [MESSAGE] [--local-port PORT] [--timeout-ms MS]`: the
//! seed's UDP echo client. Sends MESSAGE (default "Hello, world!") to HOST (default
//! "localhost") on SERVICE (default "1337") through an output stream, waits up to MS
//! milliseconds (default 5000) for a datagram back, prints it, and exits 0 only if it matches.
//! With `--local-port` it binds that port first, as the seed's client binds 1338.

sockhost_guest::component!("../../wit", "sockhost:sockets/client", UdpEchoClient);

use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::DatagramSocket;
use sockhost_guest::types::HostName;
use sockhost_guest::wasi::clocks::monotonic_clock;
use sockhost_guest::wasi::io::poll;
use sockhost_guest::{describe, send_all};

/// The component: one datagram out, one back.
struct UdpEchoClient;

impl Run for UdpEchoClient {
    fn run() -> Result<(), ()> {
        let mut positional = Vec::new();
        let mut local_port = None;
        let mut timeout_ms = 5000u64;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--local-port" => local_port = args.next(),
                "--timeout-ms" => {
                    timeout_ms = args
                        .next()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(timeout_ms)
                }
                _ => positional.push(arg),
            }
        }
        let mut positional = positional.into_iter();
        let host = positional.next().unwrap_or_else(|| "localhost".to_string());
        let service = positional.next().unwrap_or_else(|| "1337".to_string());
        let message = positional
            .next()
            .unwrap_or_else(|| "Hello, world!".to_string());
        match echo(&host, &service, &message, local_port.as_deref(), timeout_ms) {
            Ok(response) if response == message => {
                println!("{response}");
                Ok(())
            }
            Ok(response) => {
                eprintln!("udp-echo-client: sent {message:?} but received {response:?}");
                Err(())
            }
            Err(e) => {
                eprintln!("udp-echo-client: {e}");
                Err(())
            }
        }
    }
}

fn echo(
    host: &str,
    service: &str,
    message: &str,
    local_port: Option<&str>,
    timeout_ms: u64,
) -> Result<String, String> {
    let host = HostName::parse(host).map_err(|e| format!("host name: {}", describe(&e)))?;
    let socket = DatagramSocket::new();
    if let Some(port) = local_port {
        socket
            .bind_service_name(port)
            .map_err(|e| format!("bind {port}: {}", describe(&e)))?;
    }
    let output = socket
        .get_output_stream(&host, service)
        .map_err(|e| format!("get-output-stream: {}", describe(&e)))?;
    send_all(&output, message.as_bytes()).map_err(|e| format!("send: {e:?}"))?;
    drop(output);
    let readable = socket.subscribe();
    let timeout = monotonic_clock::subscribe_duration(timeout_ms * 1_000_000);
    let ready = poll::poll(&[&readable, &timeout]);
    if !ready.contains(&0) {
        return Err(format!("no answer within {timeout_ms} ms"));
    }
    drop(readable);
    let received = socket
        .receive()
        .map_err(|e| format!("receive: {}", describe(&e)))?;
    Ok(String::from_utf8_lossy(&received.data).into_owned())
}
