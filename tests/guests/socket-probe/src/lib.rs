//! `socket-probe SCENARIO [ARGS...]`: a test guest that runs one socket scenario and prints
//! its outcome as lines of `key=value` or `error STATUS MESSAGE`, for the end-to-end tests to
//! assert exactly. Each scenario is a function below; `main` picks it by name.

sockhost_guest::component!("../../../wit", "sockhost:sockets/client", SocketProbe);

use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::DatagramSocket;
use sockhost_guest::stream_socket::{StreamSocket, get_endpoint_pairs};
use sockhost_guest::stream_socket_listener::StreamSocketListener;
use sockhost_guest::types::{
    self, EndpointPair, HostName, SocketError, SocketProtectionLevel, SocketQualityOfService,
};
use sockhost_guest::wasi::io::streams::StreamError;
use sockhost_guest::{send_all, status_name, stream_error, write_all};

/// The component.
struct SocketProbe;

/// A scenario's failure: the socket error it stopped at.
type Outcome = Result<(), SocketError>;

impl Run for SocketProbe {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let outcome = match arg(0) {
            "hostname" => hostname(arg(1)),
            "compare" => compare(arg(1), arg(2)),
            "connect" => connect(arg(1), arg(2), SocketProtectionLevel::PlainSocket),
            "connect-ssl" => connect(arg(1), arg(2), SocketProtectionLevel::Ssl),
            "connect-from" => connect_from(arg(1), arg(2), arg(3)),
            "endpoint-pairs" => endpoint_pairs(arg(1), arg(2)),
            "control" => control(arg(1), arg(2)),
            "read-until-error" => read_until_error(arg(1), arg(2)),
            "listen" => listen(arg(1)),
            "accept-info" => accept_info(),
            "send-udp" => send_udp(arg(1), arg(2), arg(3).parse().unwrap_or(0)),
            "stream-udp" => stream_udp(arg(1), arg(2), arg(3).parse().unwrap_or(0)),
            "udp-info" => udp_info(arg(1), arg(2)),
            "share-udp" => share_udp(),
            "transfer-listener" => {
                let listener = StreamSocketListener::new();
                listener.enable_transfer_ownership()
            }
            "status" => {
                println!(
                    "status={}",
                    status_name(types::get_status(arg(1).parse().unwrap_or(0)))
                );
                Ok(())
            }
            "trap" => panic!("socket-probe was asked to trap"),
            other => {
                eprintln!("socket-probe: unknown scenario {other:?}");
                return Err(());
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                println!(
                    "error {} {}",
                    status_name(e.status),
                    e.message.unwrap_or_default()
                );
                Err(())
            }
        }
    }
}

fn address(name: Option<HostName>) -> String {
    name.map(|n| n.canonical_name())
        .unwrap_or_else(|| "none".to_string())
}

fn hostname(name: &str) -> Outcome {
    let host = HostName::parse(name)?;
    println!("raw={}", host.raw_name());
    println!("canonical={}", host.canonical_name());
    println!("display={}", host.display_name());
    println!("type={:?}", host.type_());
    let again = HostName::parse(&host.canonical_name())?;
    println!("is-equal={}", host.is_equal(&again));
    Ok(())
}

fn compare(a: &str, b: &str) -> Outcome {
    println!("compare={}", HostName::compare(a, b)?);
    Ok(())
}

fn print_stream_info(socket: &StreamSocket) {
    println!("local-address={}", address(socket.local_address()));
    println!("local-port={}", socket.local_port());
    println!("remote-address={}", address(socket.remote_address()));
    println!("remote-port={}", socket.remote_port());
    println!("remote-host-name={}", address(socket.remote_host_name()));
    println!("remote-service-name={}", socket.remote_service_name());
}

fn connect(host: &str, service: &str, level: SocketProtectionLevel) -> Outcome {
    let host = HostName::parse(host)?;
    let socket = StreamSocket::new();
    println!("before-remote-port={:?}", socket.remote_port());
    socket.connect(&host, service, level)?;
    print_stream_info(&socket);
    println!("protection-level={:?}", socket.protection_level());
    let rtt = socket.round_trip_time_statistics();
    println!("rtt-sum-positive={}", rtt.sum > 0);
    let again = socket.connect(&host, service, level).unwrap_err();
    println!("second-connect={}", status_name(again.status));
    Ok(())
}

fn connect_from(local_port: &str, host: &str, service: &str) -> Outcome {
    let socket = StreamSocket::new();
    socket.connect_endpoint_pair(
        &EndpointPair {
            local_host_name: Some("127.0.0.1".to_string()),
            local_service_name: local_port.to_string(),
            remote_host_name: host.to_string(),
            remote_service_name: service.to_string(),
        },
        SocketProtectionLevel::PlainSocket,
    )?;
    print_stream_info(&socket);
    Ok(())
}

fn endpoint_pairs(host: &str, service: &str) -> Outcome {
    for pair in get_endpoint_pairs(&HostName::parse(host)?, service)? {
        println!(
            "pair={}:{}",
            pair.remote_host_name, pair.remote_service_name
        );
    }
    Ok(())
}

fn control(host: &str, service: &str) -> Outcome {
    let socket = StreamSocket::new();
    println!(
        "default no-delay={} keep-alive={} hop-limit={} qos={:?}",
        socket.no_delay(),
        socket.keep_alive(),
        socket.outbound_unicast_hop_limit(),
        socket.quality_of_service()
    );
    socket.set_no_delay(false)?;
    socket.set_keep_alive(true)?;
    socket.set_outbound_buffer_size_in_bytes(65536)?;
    socket.set_outbound_unicast_hop_limit(77)?;
    socket.set_quality_of_service(SocketQualityOfService::LowLatency)?;
    socket.set_serialize_connection_attempts(true)?;
    let zero = socket.set_outbound_unicast_hop_limit(0).unwrap_err();
    println!("hop-limit-zero={}", status_name(zero.status));
    socket.connect(
        &HostName::parse(host)?,
        service,
        SocketProtectionLevel::PlainSocket,
    )?;
    println!(
        "connected no-delay={} keep-alive={} buffer={} hop-limit={} qos={:?} serialize={}",
        socket.no_delay(),
        socket.keep_alive(),
        socket.outbound_buffer_size_in_bytes(),
        socket.outbound_unicast_hop_limit(),
        socket.quality_of_service(),
        socket.serialize_connection_attempts()
    );
    let after = socket.set_no_delay(true).unwrap_err();
    println!("set-no-delay-after-connect={}", status_name(after.status));
    let after = socket.set_keep_alive(false).unwrap_err();
    println!("set-keep-alive-after-connect={}", status_name(after.status));
    socket.set_outbound_buffer_size_in_bytes(1)?;
    println!(
        "buffer-after-late-set={}",
        socket.outbound_buffer_size_in_bytes()
    );
    Ok(())
}

fn read_until_error(host: &str, service: &str) -> Outcome {
    let socket = StreamSocket::new();
    socket.connect(
        &HostName::parse(host)?,
        service,
        SocketProtectionLevel::PlainSocket,
    )?;
    let output = socket.output_stream()?;
    let input = socket.input_stream()?;
    send_all(&output, b"x").map_err(|e| stream_error(&e).expect("socket error"))?;
    for _ in 0..1000 {
        match input.blocking_read(65536) {
            Ok(_) => continue,
            Err(StreamError::Closed) => {
                println!("read=closed");
                return Ok(());
            }
            Err(e) => return Err(stream_error(&e).expect("a read error carries a socket error")),
        }
    }
    println!("read=never-failed");
    Ok(())
}

fn listen(service: &str) -> Outcome {
    let listener = StreamSocketListener::new();
    listener.bind_service_name(service, SocketProtectionLevel::PlainSocket)?;
    println!("port={}", listener.local_port());
    Ok(())
}

fn accept_info() -> Outcome {
    let listener = StreamSocketListener::new();
    listener.set_keep_alive(true)?;
    listener.set_outbound_unicast_hop_limit(33)?;
    listener.bind_endpoint(Some(&HostName::parse("127.0.0.1")?), "")?;
    let late = listener.set_no_delay(false).unwrap_err();
    println!("set-after-bind={}", status_name(late.status));
    println!("listening={}", listener.local_port());
    let socket = listener.accept()?;
    print_stream_info(&socket);
    println!(
        "accepted no-delay={} keep-alive={} hop-limit={}",
        socket.no_delay(),
        socket.keep_alive(),
        socket.outbound_unicast_hop_limit()
    );
    let output = socket.output_stream()?;
    send_all(&output, b"accepted\n").map_err(|e| stream_error(&e).expect("socket error"))?;
    Ok(())
}

fn send_udp(host: &str, service: &str, size: usize) -> Outcome {
    let socket = DatagramSocket::new();
    socket.send_to(&vec![7u8; size], &HostName::parse(host)?, service)?;
    println!("sent={size}");
    Ok(())
}

fn stream_udp(host: &str, service: &str, count: usize) -> Outcome {
    let socket = DatagramSocket::new();
    socket.connect(&HostName::parse(host)?, service)?;
    let output = socket.output_stream()?;
    let failed = |e: StreamError| stream_error(&e).expect("socket error");
    for i in 0..count {
        write_all(&output, format!("datagram {i}").as_bytes()).map_err(failed)?;
    }
    output.blocking_flush().map_err(failed)?;
    println!("sent={count}");
    Ok(())
}

fn udp_info(host: &str, service: &str) -> Outcome {
    let socket = DatagramSocket::new();
    println!(
        "before-local-port={:?} before-remote-port={:?}",
        socket.local_port(),
        socket.remote_port()
    );
    socket.set_inbound_buffer_size_in_bytes(262144)?;
    socket.set_dont_fragment(true)?;
    socket.connect(&HostName::parse(host)?, service)?;
    println!("local-address={}", address(socket.local_address()));
    println!("local-port-set={}", !socket.local_port().is_empty());
    println!("remote-address={}", address(socket.remote_address()));
    println!("remote-port={}", socket.remote_port());
    println!("inbound-buffer={}", socket.inbound_buffer_size_in_bytes());
    println!("dont-fragment={}", socket.dont_fragment());
    socket.set_outbound_unicast_hop_limit(9)?;
    println!("hop-limit={}", socket.outbound_unicast_hop_limit());
    let late = socket.set_dont_fragment(false).unwrap_err();
    println!("set-after-bind={}", status_name(late.status));
    let output = socket.output_stream()?;
    send_all(&output, b"ping").map_err(|e| stream_error(&e).expect("socket error"))?;
    drop(output);
    let message = socket.receive()?;
    println!(
        "reply={} from={}:{}",
        String::from_utf8_lossy(&message.data),
        message.remote_address.canonical_name(),
        message.remote_port
    );
    Ok(())
}

fn share_udp() -> Outcome {
    let first = DatagramSocket::new();
    first.set_multicast_only(true)?;
    first.bind_service_name("")?;
    let port = first.local_port();
    let second = DatagramSocket::new();
    second.set_multicast_only(true)?;
    second.bind_service_name(&port)?;
    println!(
        "shared={} multicast-only={}",
        second.local_port() == port,
        second.multicast_only()
    );
    let third = DatagramSocket::new();
    let refused = third.bind_service_name(&port).unwrap_err();
    println!("without-multicast-only={}", status_name(refused.status));
    let not_multicast = first
        .join_multicast_group(&HostName::parse("127.0.0.1")?)
        .unwrap_err();
    println!("join-unicast={}", status_name(not_multicast.status));
    Ok(())
}
