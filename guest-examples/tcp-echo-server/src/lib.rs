//! `tcp-echo-server [SERVICE]`: the seed's TCP echo server. Listens on SERVICE (default
//! "1337") on all interfaces and echoes every byte of every connection back until the peer
//! closes (RFC 862). Connections arrive at the exported `connection-received` handler, which
//! the host runs in a fresh instance per connection, so many connections echo at once.

#[allow(unsafe_code, reason = "wit-bindgen generated bindings")]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "sockhost:sockets/service",
        with: {
            "wasi:io/poll@0.2.12": sockhost_guest::wasi::io::poll,
            "wasi:io/streams@0.2.12": sockhost_guest::wasi::io::streams,
            "wasi:io/error@0.2.12": sockhost_guest::wasi::io::error,
            "wasi:clocks/monotonic-clock@0.2.12": sockhost_guest::wasi::clocks::monotonic_clock,
            "sockhost:sockets/types@0.1.0": sockhost_guest::types,
            "sockhost:sockets/stream-socket@0.1.0": sockhost_guest::stream_socket,
            "sockhost:sockets/stream-socket-listener@0.1.0": sockhost_guest::stream_socket_listener,
            "sockhost:sockets/datagram-socket@0.1.0": sockhost_guest::datagram_socket,
            "sockhost:sockets/socket-activity@0.1.0": sockhost_guest::socket_activity,
        },
    });
    use super::TcpEchoServer;
    export!(TcpEchoServer);
}

use bindings::exports::sockhost::sockets::handlers::Guest as Handlers;
use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::MessageReceivedEvent;
use sockhost_guest::describe;
use sockhost_guest::socket_activity::SocketActivityEvent;
use sockhost_guest::stream_socket_listener::{ConnectionReceivedEvent, StreamSocketListener};
use sockhost_guest::types::SocketProtectionLevel;

/// The component: `run` binds, `connection-received` echoes.
struct TcpEchoServer;

impl Run for TcpEchoServer {
    fn run() -> Result<(), ()> {
        let service = std::env::args()
            .nth(1)
            .unwrap_or_else(|| "1337".to_string());
        let listener = StreamSocketListener::new();
        let listen = listener
            .bind_service_name(&service, SocketProtectionLevel::PlainSocket)
            .and_then(|()| listener.enable_connection_received("echo"));
        if let Err(e) = listen {
            eprintln!("tcp-echo-server: listen on {service}: {}", describe(&e));
            return Err(());
        }
        println!(
            "tcp-echo-server: listening on port {}",
            listener.local_port()
        );
        // The host serves the listener's connections after `run` returns, for as long as
        // the listener lives: keep its handle instead of dropping (closing) it.
        std::mem::forget(listener);
        Ok(())
    }
}

impl Handlers for TcpEchoServer {
    fn connection_received(event: ConnectionReceivedEvent) {
        let socket = event.socket;
        let (Ok(input), Ok(output)) = (socket.input_stream(), socket.output_stream()) else {
            return;
        };
        if let Some(error) = sockhost_guest::echo_until_closed(&input, &output) {
            eprintln!("tcp-echo-server: {}", describe(&error));
        }
    }

    fn message_received(_event: MessageReceivedEvent) {}

    fn socket_activity(_event: SocketActivityEvent) {}
}
