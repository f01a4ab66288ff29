//! Handlers with real concurrency: one fresh instance per connection, many at once, within
//! limits (CPU, idle), surviving traps, and shutting down gracefully.

use sockhost::runtime::HandlerLimits;
use sockhost_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends a line and reads it back, bounded in time.
async fn echo_line(stream: &mut TcpStream, line: &str) -> String {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 256];
    while !received.ends_with(b"\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("echo in time")
            .unwrap();
        assert!(n > 0, "closed before the echo");
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(received).unwrap().trim_end().to_string()
}

/// Waits until the server side closes the connection (EOF or reset); returns how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf))
            .await
            .expect("the connection was not closed in time")
        {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => continue,
        }
    }
}

async fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// 32 connections open at once, one of them stalled: the other 31 all echo while every
/// connection is still open, which only concurrent handlers can do.
#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_connections_one_stalled() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let _stalled = connect(port).await;
    let mut streams = Vec::new();
    for _ in 0..31 {
        streams.push(connect(port).await);
    }
    let clients: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, mut stream)| {
            tokio::spawn(async move {
                let line = echo_line(&mut stream, &format!("client {i}")).await;
                (i, line, stream)
            })
        })
        .collect();
    let mut kept = Vec::new();
    for client in clients {
        let (i, line, stream) = client.await.unwrap();
        assert_eq!(line, format!("client {i}"));
        kept.push(stream);
    }
    assert_eq!(kept.len(), 31);
    server.app.stop();
}

/// A runtime made for more handlers than the default 1,024 holds that many connections at
/// once, each with its own live instance: every one of 1,100 echoes again after all are open.
#[tokio::test(flavor = "multi_thread")]
async fn more_connections_than_the_default_limit_are_held() {
    const HELD: usize = 1100;
    // Both ends of every connection are files of this process.
    let files = sockhost::raise_open_file_limit().unwrap();
    let needed = 2 * HELD as u64 + 256;
    assert!(
        files >= needed,
        "this test needs {needed} open files; the hard limit (ulimit -Hn) is {files}"
    );
    let limits = HandlerLimits {
        max_concurrent: HELD + 8,
        ..HandlerLimits::default()
    };
    let runtime = sockhost::runtime::Runtime::with_limits(loopback_policy(), limits).unwrap();
    let program = runtime.load_file(TCP_ECHO_SERVER.as_ref()).unwrap();
    let server = start_program(&runtime, &program, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let mut held = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let mut stream = connect(port).await;
        assert_eq!(
            echo_line(&mut stream, &format!("open {i}")).await,
            format!("open {i}")
        );
        held.push(stream);
    }
    for (i, stream) in held.iter_mut().enumerate() {
        assert_eq!(
            echo_line(stream, &format!("again {i}")).await,
            format!("again {i}")
        );
    }
    server.app.stop();
}

/// A handler that traps loses only its own connection.
#[tokio::test(flavor = "multi_thread")]
async fn trapping_handler_loses_only_its_connection() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, HANDLER_PROBE, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let mut survivor = connect(port).await;
    assert_eq!(echo_line(&mut survivor, "before").await, "before");
    let mut doomed = connect(port).await;
    doomed.write_all(b"trap\n").await.unwrap();
    closed_within(&mut doomed, TIMEOUT).await;
    assert_eq!(echo_line(&mut survivor, "after").await, "after");
    let mut fresh = connect(port).await;
    assert_eq!(
        echo_line(&mut fresh, "new connection").await,
        "new connection"
    );
    server.app.stop();
}

/// A handler that loops is stopped by the CPU limit and its connection closed, while the
/// others keep echoing meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn looping_handler_hits_the_cpu_limit() {
    let mut runtime = runtime(loopback_policy());
    runtime
        .set_limits(HandlerLimits {
            cpu_limit: Duration::from_millis(300),
            ..HandlerLimits::default()
        })
        .unwrap();
    let server = start(&runtime, HANDLER_PROBE, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let mut spinner = connect(port).await;
    let spin_started = Instant::now();
    spinner.write_all(b"spin\n").await.unwrap();
    let mut other = connect(port).await;
    assert_eq!(
        echo_line(&mut other, "while it spins").await,
        "while it spins"
    );
    // Timed from the spin request: the other connection's echo may take a while under load.
    closed_within(&mut spinner, Duration::from_secs(20)).await;
    let took = spin_started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "stopped after {took:?}, before its limit"
    );
    assert_eq!(echo_line(&mut other, "after").await, "after");
    server.app.stop();
}

/// A connection whose handler neither reads nor writes is closed after the idle timeout; an
/// active one is not.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connection_is_closed() {
    let mut runtime = runtime(loopback_policy());
    runtime
        .set_limits(HandlerLimits {
            idle_timeout: Duration::from_millis(500),
            ..HandlerLimits::default()
        })
        .unwrap();
    let server = start(&runtime, HANDLER_PROBE, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let mut idle = connect(port).await;
    idle.write_all(b"stall\n").await.unwrap();
    let mut active = connect(port).await;
    for i in 0..6 {
        assert_eq!(
            echo_line(&mut active, &format!("tick {i}")).await,
            format!("tick {i}")
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let took = closed_within(&mut idle, Duration::from_secs(20)).await;
    assert!(took < Duration::from_secs(10), "closed only after {took:?}");
    assert_eq!(echo_line(&mut active, "still here").await, "still here");
    server.app.stop();
}

/// Graceful shutdown: no new connections, the in-flight one finishes its echoes, and the app
/// ends once it closes.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_echoes() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let mut in_flight = connect(port).await;
    assert_eq!(echo_line(&mut in_flight, "one").await, "one");
    server.app.shutdown(Duration::from_secs(20));
    // The listener closes: new connections are refused (bounded wait for the close).
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(local(port).await).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener still accepts after shutdown");
    assert_eq!(echo_line(&mut in_flight, "two").await, "two");
    drop(in_flight);
    let output = server.finish().await;
    assert_eq!(output.exit.code, 0);
}

/// Graceful shutdown stops handlers that outlive the grace period.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_grace_period_ends() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    let mut stalled = connect(port).await;
    assert_eq!(echo_line(&mut stalled, "hello").await, "hello");
    server.app.shutdown(Duration::from_millis(300));
    let started = Instant::now();
    let output = server.finish().await;
    assert_eq!(output.exit.code, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    closed_within(&mut stalled, TIMEOUT).await;
}

/// Datagrams reach the message-received handler concurrently with connections.
#[tokio::test(flavor = "multi_thread")]
async fn datagrams_and_connections_together() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, HANDLER_PROBE, &["0"]);
    let port = server.bound(Transport::Tcp).await.port();
    // The UDP socket is bound after the listener: wait for it too, or the first datagram
    // may meet a closed port.
    let udp_port = server.bound(Transport::Udp).await.port();
    let mut stream = connect(port).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], udp_port));
    for i in 0..10 {
        let message = format!("d{i}");
        assert_eq!(udp_exchange(&udp, to, message.as_bytes()).await, message);
        assert_eq!(
            echo_line(&mut stream, &format!("t{i}")).await,
            format!("t{i}")
        );
    }
    server.app.stop();
}

/// The socket a `message-received` handler is given is the socket that delivers: `receive`
/// on it fails, and `cancel-io` or `close` on it stops the delivery while the app keeps
/// serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_stops_its_sockets_delivery() {
    for (stop, answer) in [("cancel", "cancelled"), ("close", "closed")] {
        let runtime = runtime(loopback_policy());
        let server = start(&runtime, HANDLER_PROBE, &["0"]);
        let tcp_port = server.bound(Transport::Tcp).await.port();
        let port = server.bound(Transport::Udp).await.port();
        // Not connected: the answer to `close` comes from another socket.
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(udp_exchange(&udp, to, b"before").await, "before");
        let refused = udp_exchange(&udp, to, b"receive").await;
        assert!(refused.starts_with("invalid-operation"), "{refused}");
        assert_eq!(udp_exchange(&udp, to, stop.as_bytes()).await, answer);
        // No handler runs for later datagrams; the listener still serves.
        udp.send_to(b"after", ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 512];
        let late = tokio::time::timeout(Duration::from_millis(500), udp.recv_from(&mut buf)).await;
        assert!(late.is_err(), "a datagram was handled after {stop}");
        let mut stream = connect(tcp_port).await;
        assert_eq!(echo_line(&mut stream, "still").await, "still");
        server.app.stop();
    }
}

/// A socket bound to all interfaces tells each handler the local address its datagram
/// reached (IP_PKTINFO), for IPv4 and IPv6 senders alike.
#[tokio::test(flavor = "multi_thread")]
async fn datagrams_know_the_local_address_they_reached() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, HANDLER_PROBE, &["0"]);
    let port = server.bound(Transport::Udp).await.port();
    for local in ["127.0.0.1", "::1"] {
        let bind = SocketAddr::new(local.parse().unwrap(), 0);
        let udp = tokio::net::UdpSocket::bind(bind).await.unwrap();
        let to = SocketAddr::new(bind.ip(), port);
        assert_eq!(udp_exchange(&udp, to, b"local").await, local);
    }
    server.app.stop();
}
