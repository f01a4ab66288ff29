//! `batch-sender tcp|udp HOST SERVICE [--count N] [--size BYTES] [--rounds R] [--each]
//! [--connect]`: the seed's batched-send pattern. Each round writes N messages (default 1,000)
//! of BYTES bytes (default 64) to a stream socket or a datagram output stream, then flushes
//! once and waits; with `--each` it flushes and waits after every write instead. With
//! `--connect` a datagram socket connects to HOST first and writes to its connected output
//! stream (which reports the peer's ICMP errors, such as connection-refused). Prints
//! `messages=M bytes=B nanos=T`, the time spent sending. Message `k` of a round is filled
//! with the byte `k % 251`, so a receiver can check what arrived.

sockhost_guest::component!("../../wit", "sockhost:sockets/client", BatchSender);

use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::datagram_socket::DatagramSocket;
use sockhost_guest::stream_socket::StreamSocket;
use sockhost_guest::types::{HostName, SocketProtectionLevel};
use sockhost_guest::wasi::clocks::monotonic_clock;
use sockhost_guest::wasi::io::streams::{OutputStream, StreamError};
use sockhost_guest::{describe, stream_error, write_all};

/// The component: sends rounds of messages and times them.
struct BatchSender;

/// What to send.
struct Plan {
    count: usize,
    size: usize,
    rounds: usize,
    flush_each: bool,
    connect: bool,
}

impl Run for BatchSender {
    fn run() -> Result<(), ()> {
        match parse()
            .and_then(|(transport, host, service, plan)| send(&transport, &host, &service, &plan))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("batch-sender: {e}");
                Err(())
            }
        }
    }
}

fn parse() -> Result<(String, String, String, Plan), String> {
    let mut positional = Vec::new();
    let mut plan = Plan {
        count: 1000,
        size: 64,
        rounds: 1,
        flush_each: false,
        connect: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| {
            args.next()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--count" => plan.count = number("--count")?,
            "--size" => plan.size = number("--size")?,
            "--rounds" => plan.rounds = number("--rounds")?,
            "--each" => plan.flush_each = true,
            "--connect" => plan.connect = true,
            _ => positional.push(arg),
        }
    }
    let [transport, host, service] = <[String; 3]>::try_from(positional)
        .map_err(|_| "usage: batch-sender tcp|udp HOST SERVICE [options]".to_string())?;
    Ok((transport, host, service, plan))
}

fn send(transport: &str, host: &str, service: &str, plan: &Plan) -> Result<(), String> {
    let host = HostName::parse(host).map_err(|e| format!("host name: {}", describe(&e)))?;
    // The socket lives as long as its output stream.
    let (_stream, _datagram, output) = match transport {
        "tcp" => {
            let socket = StreamSocket::new();
            socket
                .connect(&host, service, SocketProtectionLevel::PlainSocket)
                .map_err(|e| format!("connect: {}", describe(&e)))?;
            let output = socket
                .output_stream()
                .map_err(|e| format!("output-stream: {}", describe(&e)))?;
            (Some(socket), None, output)
        }
        "udp" => {
            let socket = DatagramSocket::new();
            let output = if plan.connect {
                socket
                    .connect(&host, service)
                    .and_then(|()| socket.output_stream())
                    .map_err(|e| format!("connect: {}", describe(&e)))?
            } else {
                socket
                    .get_output_stream(&host, service)
                    .map_err(|e| format!("get-output-stream: {}", describe(&e)))?
            };
            (None, Some(socket), output)
        }
        other => return Err(format!("unknown transport {other:?} (tcp or udp)")),
    };
    let messages: Vec<Vec<u8>> = (0..plan.count)
        .map(|k| vec![(k % 251) as u8; plan.size])
        .collect();
    let started = monotonic_clock::now();
    for _ in 0..plan.rounds {
        send_round(&output, &messages, plan.flush_each).map_err(|e| match stream_error(&e) {
            Some(error) => format!("send: {}", describe(&error)),
            None => "send: the stream is closed".to_string(),
        })?;
    }
    let nanos = monotonic_clock::now() - started;
    let sent = plan.count * plan.rounds;
    println!("messages={sent} bytes={} nanos={nanos}", sent * plan.size);
    Ok(())
}

fn send_round(
    output: &OutputStream,
    messages: &[Vec<u8>],
    flush_each: bool,
) -> Result<(), StreamError> {
    // One check-write permit covers many writes: asking again only when it runs out halves
    // the calls into the host.
    let mut permit = 0;
    for message in messages {
        if permit < message.len() {
            permit = usize::try_from(output.check_write()?).unwrap_or(usize::MAX);
        }
        if permit < message.len() {
            write_all(output, message)?;
            permit = 0;
        } else {
            output.write(message)?;
            permit -= message.len();
        }
        if flush_each {
            output.blocking_flush()?;
            permit = 0;
        }
    }
    if !flush_each {
        output.blocking_flush()?;
    }
    Ok(())
}
