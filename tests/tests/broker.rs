//! The socket broker: a guest transfers its sockets and ends; activity activates a fresh
//! instance with the socket and its context; nothing that arrives meanwhile is lost.

use sockhost_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A guest transfers a listener and exits; each connection activates a fresh instance that
/// gets the listener back with its id and context, answers, and transfers it back.
#[tokio::test(flavor = "multi_thread")]
async fn listener_round_trip_through_the_broker() {
    let runtime = runtime(loopback_policy());
    let guest = start(&runtime, BROKER_PROBE, &["0"]);
    let port = guest.bound(Transport::Tcp).await.port();
    for round in 0..3 {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("hello {round}\n").as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, BufReader::new(read).read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        // The datagram socket is still brokered while the listener is out: 1 socket listed.
        assert_eq!(
            line,
            format!("connection-accepted:echo-listener:listener-context:hello {round}:1\n")
        );
    }
    assert!(
        !guest.app.is_finished(),
        "the app must keep running while the broker holds sockets"
    );
    let stdout = String::from_utf8_lossy(&guest.stdout.contents()).into_owned();
    assert!(
        stdout.contains("after-transfer-local-port=\"\""),
        "{stdout}"
    );
    guest.app.stop();
}

/// A datagram sent while no instance runs waits in the kernel and is delivered on activation.
#[tokio::test(flavor = "multi_thread")]
async fn datagram_is_delivered_on_activation() {
    let runtime = runtime(loopback_policy());
    let guest = start(&runtime, BROKER_PROBE, &["0"]);
    let port = guest.bound(Transport::Udp).await.port();
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for round in 0..3 {
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            udp_exchange(&client, to, format!("ping {round}").as_bytes()).await,
            format!("socket-activity:echo-udp:udp-context:ping {round}")
        );
    }
    guest.app.stop();
}

/// Transferring needs a component with handlers, enable-transfer-ownership first, and a
/// unique id; the socket probe (a client) gets not-supported.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_component_cannot_transfer() {
    let output = probe(&["transfer-listener"]).await;
    assert_eq!(output.error_status(), Some("not-supported"), "{output:#?}");
}

/// A connected stream socket in the broker: the keep-alive time activates the guest (it sends
/// a keep-alive), arriving data activates it (it answers), and the peer closing activates it
/// with socket-closed.
#[tokio::test(flavor = "multi_thread")]
async fn stream_socket_keep_alive_activity_and_close() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let runtime = runtime(loopback_policy());
    let guest = start(&runtime, BROKER_PROBE, &["upstream", "127.0.0.1", &port]);
    let (stream, _) = tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let next = async |lines: &mut tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>| {
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .unwrap()
            .unwrap();
        line.unwrap_or_else(|| {
            let out = String::from_utf8_lossy(&guest.stdout.contents()).into_owned();
            let err = String::from_utf8_lossy(&guest.stderr.contents()).into_owned();
            panic!("the guest closed the connection; stdout: {out}; stderr: {err}")
        })
    };
    assert_eq!(next(&mut lines).await, "keepalive");
    write.write_all(b"data\n").await.unwrap();
    let mut line = next(&mut lines).await;
    while line == "keepalive" {
        line = next(&mut lines).await;
    }
    assert_eq!(line, "got:data");
    drop(write);
    drop(lines);
    let closed = async {
        loop {
            let stdout = String::from_utf8_lossy(&guest.stdout.contents()).into_owned();
            if stdout.contains("stream-activity=socket-closed") {
                return stdout;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let stdout = tokio::time::timeout(TIMEOUT, closed)
        .await
        .expect("socket-closed activation");
    assert!(
        stdout.contains("stream-activity=keep-alive-timer-expired"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stream-activity=socket-activity"),
        "{stdout}"
    );
    guest.app.stop();
}
