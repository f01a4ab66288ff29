//! `tcp-echo-server [SERVICE] [--address HOST]`: the seed's TCP echo server. Listens on
//! SERVICE (default "1337") on all interfaces, or on HOST's address alone, and echoes every byte of every connection back until the peer
//! closes (RFC 862). Connections arrive at the exported `connection-received` handler, which
//! the host runs in a fresh instance per connection, so many connections echo at once.

sockhost_guest::component!("../../wit", "sockhost:sockets/service", TcpEchoServer);

use bindings::exports::sockhost::sockets::handlers::Guest as Handlers;
use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::MessageReceivedEvent;
use sockhost_guest::describe;
use sockhost_guest::socket_activity::SocketActivityEvent;
use sockhost_guest::stream_socket_listener::{ConnectionReceivedEvent, StreamSocketListener};
use sockhost_guest::types::{HostName, SocketProtectionLevel};

/// The component: `run` binds, `connection-received` echoes.
struct TcpEchoServer;

impl Run for TcpEchoServer {
    fn run() -> Result<(), ()> {
        let mut service = "1337".to_string();
        let mut address = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--address" => address = args.next(),
                _ => service = arg,
            }
        }
        let listener = StreamSocketListener::new();
        let listen = match address {
            None => listener.bind_service_name(&service, SocketProtectionLevel::PlainSocket),
            Some(address) => HostName::parse(&address)
                .and_then(|host| listener.bind_endpoint(Some(&host), &service)),
        }
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
