//! `tls-echo-server [SERVICE] --identity NAME [--require-client-certificate] [--level LEVEL]`:
//! a TLS echo server, beyond UWP, whose listener serves TLS with the host identity NAME
//! (`sockhost run --tls-identity NAME=CERT.pem,KEY.pem`). With
//! `--require-client-certificate`, clients must present a certificate the host trusts; each
//! connection prints the client's certificate subject before echoing.

sockhost_guest::component!("../../wit", "sockhost:sockets/service", TlsEchoServer);

use bindings::exports::sockhost::sockets::handlers::Guest as Handlers;
use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::MessageReceivedEvent;
use sockhost_guest::describe;
use sockhost_guest::socket_activity::SocketActivityEvent;
use sockhost_guest::stream_socket_listener::{ConnectionReceivedEvent, StreamSocketListener};
use sockhost_guest::types::SocketProtectionLevel;

/// The component: `run` binds a TLS listener, `connection-received` echoes.
struct TlsEchoServer;

impl Run for TlsEchoServer {
    fn run() -> Result<(), ()> {
        let mut service = "1337".to_string();
        let mut identity = None;
        let mut require = false;
        let mut level = SocketProtectionLevel::Unspecified;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--identity" => identity = args.next(),
                "--require-client-certificate" => require = true,
                "--level" => {
                    level = match args.next().as_deref() {
                        Some("tls12") => SocketProtectionLevel::Tls12,
                        Some("tls13") => SocketProtectionLevel::Tls13,
                        _ => SocketProtectionLevel::Unspecified,
                    }
                }
                _ => service = arg,
            }
        }
        let listener = StreamSocketListener::new();
        let listen = listener
            .set_server_identity(identity.as_deref())
            .and_then(|()| listener.set_client_certificate_required(require))
            .and_then(|()| listener.bind_service_name(&service, level))
            .and_then(|()| listener.enable_connection_received("tls-echo"));
        if let Err(e) = listen {
            eprintln!("tls-echo-server: listen on {service}: {}", describe(&e));
            return Err(());
        }
        println!(
            "tls-echo-server: listening on port {}",
            listener.local_port()
        );
        // The host serves the listener's connections after `run` returns: keep the handle.
        std::mem::forget(listener);
        Ok(())
    }
}

impl Handlers for TlsEchoServer {
    fn connection_received(event: ConnectionReceivedEvent) {
        let socket = event.socket;
        let client = socket
            .peer_certificate()
            .map(|c| c.subject.replace(' ', "_"));
        println!(
            "client-certificate={}",
            client.unwrap_or_else(|| "none".to_string())
        );
        let (Ok(input), Ok(output)) = (socket.input_stream(), socket.output_stream()) else {
            return;
        };
        if let Some(error) = sockhost_guest::echo_until_closed(&input, &output) {
            eprintln!("tls-echo-server: {}", describe(&error));
        }
        drop((input, output));
        let _ = socket.close();
    }

    fn message_received(_event: MessageReceivedEvent) {}

    fn socket_activity(_event: SocketActivityEvent) {}
}
