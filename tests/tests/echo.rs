//! The seed's echo samples as guests, against native tokio peers and against each other.

use sockhost_tests::*;
use std::time::Duration;
use tokio::net::UdpSocket;

/// A guest TCP echo server answers a native client, several connections at once.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_guest_server_native_clients() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let addr = server.bound(Transport::Tcp).await;
    let port = addr.port();
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let clients: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move { (i, tcp_round_trip(target, &format!("hello {i}")).await) })
        })
        .collect();
    for client in clients {
        let (i, echoed) = client.await.unwrap();
        assert_eq!(echoed, format!("hello {i}"));
    }
    // Over IPv6 too: the listener is dual stack.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
        assert_eq!(tcp_round_trip(v6, "over ipv6").await, "over ipv6");
    }
    server.app.stop();
}

/// A guest TCP echo client talks to a native server and prints the echo.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_guest_client_native_server() {
    let addr = native_tcp_echo().await;
    let runtime = runtime(loopback_policy());
    let port = addr.port().to_string();
    let output = run(&runtime, TCP_ECHO_CLIENT, &["localhost", &port, "hi there"]).await;
    output.assert_success();
    assert_eq!(output.stdout.trim(), "hi there");
}

/// Guest client to guest server, the demo's pairing.
#[tokio::test(flavor = "multi_thread")]
async fn tcp_guest_to_guest() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port().to_string();
    let output = run(&runtime, TCP_ECHO_CLIENT, &["127.0.0.1", &port]).await;
    output.assert_success();
    assert_eq!(output.stdout.trim(), "test");
    server.app.stop();
}

/// A guest UDP echo server answers a native client from the port it was sent to.
#[tokio::test(flavor = "multi_thread")]
async fn udp_guest_server_native_client() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, UDP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Udp).await.port();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(("127.0.0.1", port)).await.unwrap();
    for i in 0..5 {
        let message = format!("datagram {i}");
        client.send(message.as_bytes()).await.unwrap();
        let mut buf = [0u8; 100];
        let n = tokio::time::timeout(TIMEOUT, client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], message.as_bytes());
    }
    server.app.stop();
}

/// Datagrams that arrive together, queued before the server receives them, are all
/// answered (handlers of a backlog run as tasks of their own), and a shutdown ends the
/// server's delivery.
#[tokio::test(flavor = "multi_thread")]
async fn udp_guest_server_answers_a_burst() {
    const SOCKETS: usize = 8;
    const EACH: usize = 8;
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, UDP_ECHO_SERVER, &["0", "--address", "127.0.0.1"]);
    let addr = server.bound(Transport::Udp).await;
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    let mut clients = Vec::new();
    for _ in 0..SOCKETS {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        clients.push(client);
    }
    for (c, client) in clients.iter().enumerate() {
        for i in 0..EACH {
            client.send(format!("{c}/{i}").as_bytes()).await.unwrap();
        }
    }
    for (c, client) in clients.iter().enumerate() {
        let mut echoed = std::collections::BTreeSet::new();
        let mut buf = [0u8; 100];
        while echoed.len() < EACH {
            let n = tokio::time::timeout(TIMEOUT, client.recv(&mut buf))
                .await
                .expect("every datagram of the burst is echoed")
                .unwrap();
            echoed.insert(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let sent: std::collections::BTreeSet<_> = (0..EACH).map(|i| format!("{c}/{i}")).collect();
        assert_eq!(echoed, sent);
    }
    server.app.shutdown(Duration::from_secs(5));
    let output = server.finish().await;
    assert_eq!(output.exit.code, 0, "{}", output.stderr);
}

/// The seed's fixed reply port: the server answers from a new socket to port 1338's stand-in.
#[tokio::test(flavor = "multi_thread")]
async fn udp_guest_server_reply_port() {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply_port = client.local_addr().unwrap().port().to_string();
    let runtime = runtime(loopback_policy());
    let server = start(
        &runtime,
        UDP_ECHO_SERVER,
        &["0", "--reply-port", &reply_port],
    );
    let port = server.bound(Transport::Udp).await.port();
    client.send_to(b"seed", ("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = tokio::time::timeout(TIMEOUT, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"seed");
    server.app.stop();
}

/// A guest UDP echo client against a native server.
#[tokio::test(flavor = "multi_thread")]
async fn udp_guest_client_native_server() {
    let addr = native_udp_echo().await;
    let runtime = runtime(loopback_policy());
    let port = addr.port().to_string();
    let output = run(&runtime, UDP_ECHO_CLIENT, &["127.0.0.1", &port]).await;
    output.assert_success();
    assert_eq!(output.stdout.trim(), "Hello, world!");
}

/// Guest UDP client to guest UDP server, including the seed's bound client port.
#[tokio::test(flavor = "multi_thread")]
async fn udp_guest_to_guest() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, UDP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Udp).await.port().to_string();
    let output = run(
        &runtime,
        UDP_ECHO_CLIENT,
        &["localhost", &port, "guest to guest"],
    )
    .await;
    output.assert_success();
    assert_eq!(output.stdout.trim(), "guest to guest");
    let local = closed_port().to_string();
    let output = run(
        &runtime,
        UDP_ECHO_CLIENT,
        &["127.0.0.1", &port, "bound", "--local-port", &local],
    )
    .await;
    output.assert_success();
    server.app.stop();
}
