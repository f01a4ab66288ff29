//! `broker-probe [SERVICE]`: a test service that binds a listener and a datagram socket on one
//! port, transfers both to the host's broker and returns, so no instance of it runs. On
//! activation, `socket-activity` answers the connection (a line back, prefixed with the
//! socket's id and context) or the waiting datagram, then transfers the socket back.
//! With no SERVICE, it only serves what the broker already holds (socket activation).

sockhost_guest::component!("../../../wit", "sockhost:sockets/service", BrokerProbe);

use bindings::exports::sockhost::sockets::handlers::Guest as Handlers;
use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::{DatagramSocket, MessageReceivedEvent};
use sockhost_guest::socket_activity::{self, BrokeredSocket, SocketActivityEvent};
use sockhost_guest::stream_socket_listener::{ConnectionReceivedEvent, StreamSocketListener};
use sockhost_guest::types::SocketProtectionLevel;
use sockhost_guest::{describe, kebab_name, read_line, send_all};

/// The component.
struct BrokerProbe;

impl Run for BrokerProbe {
    fn run() -> Result<(), ()> {
        let brokered = socket_activity::all_sockets();
        println!(
            "brokered-at-start={}",
            brokered
                .iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let Some(service) = std::env::args().nth(1) else {
            return Ok(());
        };
        if service == "upstream" {
            return upstream();
        }
        let listener = StreamSocketListener::new();
        let udp = DatagramSocket::new();
        let setup = listener
            .enable_transfer_ownership()
            .and_then(|()| listener.bind_service_name(&service, SocketProtectionLevel::PlainSocket))
            .and_then(|()| udp.enable_transfer_ownership())
            .and_then(|()| udp.bind_service_name(&listener.local_port()))
            .and_then(|()| listener.transfer_ownership("echo-listener", b"listener-context"))
            .and_then(|()| udp.transfer_ownership("echo-udp", b"udp-context"));
        if let Err(e) = setup {
            eprintln!("broker-probe: {}", describe(&e));
            return Err(());
        }
        let after = listener.local_port();
        println!("after-transfer-local-port={after:?}");
        Ok(())
    }
}

impl Handlers for BrokerProbe {
    fn socket_activity(event: SocketActivityEvent) {
        let prefix = format!(
            "{}:{}:{}",
            kebab_name(event.reason),
            event.id,
            String::from_utf8_lossy(&event.context)
        );
        match event.socket {
            BrokeredSocket::StreamSocketListener(listener) => {
                if let Some(socket) = event.accepted {
                    let (Ok(input), Ok(output)) = (socket.input_stream(), socket.output_stream())
                    else {
                        return;
                    };
                    if let Ok(Some(line)) = read_line(&input, &mut Vec::new()) {
                        let brokered = socket_activity::all_sockets().len();
                        let _ =
                            send_all(&output, format!("{prefix}:{line}:{brokered}\n").as_bytes());
                    }
                }
                if let Err(e) = listener.transfer_ownership(&event.id, &event.context) {
                    eprintln!("broker-probe: transfer back: {}", describe(&e));
                }
            }
            BrokeredSocket::DatagramSocket(udp) => {
                match udp.receive() {
                    Ok(message) => {
                        let reply = format!("{prefix}:{}", String::from_utf8_lossy(&message.data));
                        let _ = udp.send_to(
                            reply.as_bytes(),
                            &message.remote_address,
                            &message.remote_port,
                        );
                    }
                    Err(e) => eprintln!("broker-probe: receive: {}", describe(&e)),
                }
                if let Err(e) = udp.transfer_ownership(&event.id, &event.context) {
                    eprintln!("broker-probe: transfer back: {}", describe(&e));
                }
            }
            BrokeredSocket::StreamSocket(socket) => {
                let reason = kebab_name(event.reason);
                println!("stream-activity={reason}");
                if reason == "socket-closed" {
                    return;
                }
                let (Ok(input), Ok(output)) = (socket.input_stream(), socket.output_stream())
                else {
                    return;
                };
                let reply = match reason.as_str() {
                    "keep-alive-timer-expired" => "keepalive\n".to_string(),
                    _ => match read_line(&input, &mut Vec::new()) {
                        Ok(Some(line)) => format!("got:{line}\n"),
                        _ => return,
                    },
                };
                if send_all(&output, reply.as_bytes()).is_err() {
                    return;
                }
                drop((input, output));
                if let Err(e) =
                    socket.transfer_ownership_with_keep_alive(&event.id, &event.context, 300)
                {
                    eprintln!("broker-probe: transfer back: {}", describe(&e));
                }
            }
        }
    }

    fn connection_received(_event: ConnectionReceivedEvent) {}

    fn message_received(_event: MessageReceivedEvent) {}
}

/// `broker-probe upstream HOST PORT`: connects, then transfers the connection with a 300 ms
/// keep-alive time.
fn upstream() -> Result<(), ()> {
    use sockhost_guest::stream_socket::StreamSocket;
    use sockhost_guest::types::HostName;
    let args: Vec<String> = std::env::args().collect();
    let connect = || -> Result<(), sockhost_guest::types::SocketError> {
        let socket = StreamSocket::new();
        socket.enable_transfer_ownership()?;
        socket.connect(
            &HostName::parse(&args[2])?,
            &args[3],
            SocketProtectionLevel::PlainSocket,
        )?;
        socket.transfer_ownership_with_keep_alive("upstream", b"stream-context", 300)
    };
    connect().map_err(|e| eprintln!("broker-probe: {}", describe(&e)))
}
