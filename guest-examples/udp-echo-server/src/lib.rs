//! `udp-echo-server [SERVICE] [--address HOST] [--reply-port PORT]`: the seed's UDP echo
//! server. Binds SERVICE (default "1337") on all interfaces, or on HOST's address alone, and
//! echoes each datagram to its sender. With
//! `--reply-port`, it answers from a new socket to the sender's address at PORT, as the seed's
//! sample does (its client listens on 1338). Datagrams arrive at the exported
//! `message-received` handler.

sockhost_guest::component!("../../wit", "sockhost:sockets/service", UdpEchoServer);

use bindings::exports::sockhost::sockets::handlers::Guest as Handlers;
use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::{DatagramSocket, MessageReceivedEvent};
use sockhost_guest::socket_activity::SocketActivityEvent;
use sockhost_guest::stream_socket_listener::ConnectionReceivedEvent;
use sockhost_guest::types::HostName;
use sockhost_guest::{describe, send_all};

/// The component: `run` binds, `message-received` echoes.
struct UdpEchoServer;

/// The command line.
struct Arguments {
    service: String,
    address: Option<String>,
    reply_port: Option<String>,
}

/// The arguments, read once per instance: the host reuses datagram handler instances, and
/// each read is a host call.
fn arguments() -> &'static Arguments {
    static ARGUMENTS: std::sync::OnceLock<Arguments> = std::sync::OnceLock::new();
    ARGUMENTS.get_or_init(read_arguments)
}

fn read_arguments() -> Arguments {
    let mut arguments = Arguments {
        service: "1337".to_string(),
        address: None,
        reply_port: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address" => arguments.address = args.next(),
            "--reply-port" => arguments.reply_port = args.next(),
            _ => arguments.service = arg,
        }
    }
    arguments
}

impl Run for UdpEchoServer {
    fn run() -> Result<(), ()> {
        let Arguments {
            service, address, ..
        } = arguments();
        let socket = DatagramSocket::new();
        let bound = match address {
            None => socket.bind_service_name(service),
            Some(address) => {
                HostName::parse(address).and_then(|host| socket.bind_endpoint(Some(&host), service))
            }
        }
        .and_then(|()| socket.enable_message_received("echo"));
        if let Err(e) = bound {
            eprintln!("udp-echo-server: bind {service}: {}", describe(&e));
            return Err(());
        }
        println!("udp-echo-server: listening on port {}", socket.local_port());
        // The host delivers the socket's datagrams after `run` returns, for as long as the
        // socket lives: keep its handle instead of dropping (closing) it.
        std::mem::forget(socket);
        Ok(())
    }
}

impl Handlers for UdpEchoServer {
    fn message_received(event: MessageReceivedEvent) {
        let message = event.message;
        let sent = match &arguments().reply_port {
            None => event
                .socket
                .send_to(&message.data, &message.remote_address, &message.remote_port)
                .map_err(|e| describe(&e)),
            Some(port) => {
                // As the seed: a new socket, and an output stream to the sender's address.
                let reply = DatagramSocket::new();
                reply
                    .get_output_stream(&message.remote_address, port)
                    .map_err(|e| describe(&e))
                    .and_then(|output| {
                        send_all(&output, &message.data).map_err(|e| format!("{e:?}"))
                    })
            }
        };
        if let Err(e) = sent {
            eprintln!("udp-echo-server: reply: {e}");
        }
    }

    fn connection_received(_event: ConnectionReceivedEvent) {}

    fn socket_activity(_event: SocketActivityEvent) {}
}
