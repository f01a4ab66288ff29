//! `handler-probe [SERVICE]`: a test service whose `connection-received` handler reads lines
//! and answers each: `trap` panics (a trap), `spin` loops forever (for the CPU deadline),
//! `stall` stops reading (for the idle timeout), anything else is echoed. Datagrams are
//! echoed by `message-received` on a UDP socket bound to the same SERVICE (with `0`, a port
//! of its own, which the test reads from the app's UDP binding), except `cancel`, which
//! calls `cancel-io` on the handler's socket, `close`, which closes it (and answers from a
//! new socket), `receive`, which tries `receive` on it, and
//! `local`, which answers with the local address the datagram reached.

sockhost_guest::component!("../../../wit", "sockhost:sockets/service", HandlerProbe);

use bindings::exports::sockhost::sockets::handlers::Guest as Handlers;
use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::{DatagramSocket, MessageReceivedEvent};
use sockhost_guest::socket_activity::SocketActivityEvent;
use sockhost_guest::stream_socket_listener::{ConnectionReceivedEvent, StreamSocketListener};
use sockhost_guest::types::SocketProtectionLevel;
use sockhost_guest::wasi::clocks::monotonic_clock;
use sockhost_guest::{describe, read_line, send_all};

/// The component.
struct HandlerProbe;

impl Run for HandlerProbe {
    fn run() -> Result<(), ()> {
        let service = std::env::args().nth(1).unwrap_or_else(|| "0".to_string());
        let listener = StreamSocketListener::new();
        let udp = DatagramSocket::new();
        let setup = listener
            .bind_service_name(&service, SocketProtectionLevel::PlainSocket)
            .and_then(|()| listener.enable_connection_received("tcp"))
            .and_then(|()| udp.bind_service_name(&service))
            .and_then(|()| udp.enable_message_received("udp"));
        if let Err(e) = setup {
            eprintln!("handler-probe: {}", describe(&e));
            return Err(());
        }
        println!(
            "handler-probe: listening on TCP port {} and UDP port {}",
            listener.local_port(),
            udp.local_port()
        );
        std::mem::forget(listener);
        std::mem::forget(udp);
        Ok(())
    }
}

impl Handlers for HandlerProbe {
    fn connection_received(event: ConnectionReceivedEvent) {
        let socket = event.socket;
        let (Ok(input), Ok(output)) = (socket.input_stream(), socket.output_stream()) else {
            return;
        };
        let mut buffer = Vec::new();
        while let Ok(Some(line)) = read_line(&input, &mut buffer) {
            match line.as_str() {
                "trap" => panic!("handler-probe was asked to trap"),
                "spin" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                // Waits without reading or writing: an idle connection.
                "stall" => monotonic_clock::subscribe_duration(u64::MAX).block(),
                _ => {
                    if send_all(&output, format!("{line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn message_received(event: MessageReceivedEvent) {
        let message = event.message;
        let socket = event.socket;
        let reply = match message.data.as_slice() {
            // Stops the delivery through the handler's handle on the socket.
            b"cancel" => match socket.cancel_io() {
                Ok(()) => "cancelled".to_string(),
                Err(e) => describe(&e),
            },
            // Closes the handler's handle, answering from a new socket on the loopback address
            // the datagram reached.
            b"close" => {
                socket.close();
                let reply = DatagramSocket::new();
                let sent = reply
                    .bind_endpoint(Some(&message.local_address), "0")
                    .and_then(|()| {
                        reply.send_to(b"closed", &message.remote_address, &message.remote_port)
                    });
                if let Err(e) = sent {
                    eprintln!("handler-probe: close: {}", describe(&e));
                }
                return;
            }
            // The socket delivers to this handler, so pulling a datagram must fail.
            b"receive" => match socket.receive() {
                Ok(_) => "received".to_string(),
                Err(e) => describe(&e),
            },
            // The local address the datagram reached.
            b"local" => message.local_address.canonical_name(),
            data => String::from_utf8_lossy(data).into_owned(),
        };
        let _ = socket.send_to(
            reply.as_bytes(),
            &message.remote_address,
            &message.remote_port,
        );
    }

    fn socket_activity(_event: SocketActivityEvent) {}
}
