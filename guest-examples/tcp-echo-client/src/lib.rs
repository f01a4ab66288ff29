//! `tcp-echo-client [HOST] [SERVICE] [LINE]`: the seed's TCP echo client. Connects to HOST
//! (default "localhost") on SERVICE (default "1337"), sends LINE (default "test") and a
//! newline, reads the echoed line, prints it, and exits 0 only if it matches.

sockhost_guest::component!("../../wit", "sockhost:sockets/client", TcpEchoClient);

use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::stream_socket::StreamSocket;
use sockhost_guest::types::{HostName, SocketProtectionLevel};
use sockhost_guest::{describe, read_line, send_all, stream_error};

/// The component: one request, one checked response.
struct TcpEchoClient;

impl Run for TcpEchoClient {
    fn run() -> Result<(), ()> {
        let mut args = std::env::args().skip(1);
        let host = args.next().unwrap_or_else(|| "localhost".to_string());
        let service = args.next().unwrap_or_else(|| "1337".to_string());
        let line = args.next().unwrap_or_else(|| "test".to_string());
        match echo(&host, &service, &line) {
            Ok(response) if response == line => {
                println!("{response}");
                Ok(())
            }
            Ok(response) => {
                eprintln!("tcp-echo-client: sent {line:?} but the server answered {response:?}");
                Err(())
            }
            Err(message) => {
                eprintln!("tcp-echo-client: {message}");
                Err(())
            }
        }
    }
}

fn echo(host: &str, service: &str, line: &str) -> Result<String, String> {
    let host = HostName::parse(host).map_err(|e| format!("host name: {}", describe(&e)))?;
    let socket = StreamSocket::new();
    socket
        .connect(&host, service, SocketProtectionLevel::PlainSocket)
        .map_err(|e| format!("connect: {}", describe(&e)))?;
    let output = socket.output_stream().map_err(|e| describe(&e))?;
    let input = socket.input_stream().map_err(|e| describe(&e))?;
    let stream_failure = |what: &str, e| match stream_error(&e) {
        Some(error) => format!("{what}: {}", describe(&error)),
        None => format!("{what}: {e:?}"),
    };
    send_all(&output, format!("{line}\n").as_bytes()).map_err(|e| stream_failure("send", e))?;
    let response = read_line(&input, &mut Vec::new()).map_err(|e| stream_failure("receive", e))?;
    response.ok_or_else(|| "the server closed the connection before answering".to_string())
}
