//! Control settings, information, batched writes and port sharing, read back from real
//! sockets.

use sockhost_tests::*;
use tokio::io::AsyncReadExt;

/// Control values apply before connect, read back from the kernel after, and refuse to
/// change after connect as UWP's do.
#[tokio::test(flavor = "multi_thread")]
async fn stream_control_reads_back() {
    let addr = native_tcp_echo().await;
    let output = probe(&["control", "127.0.0.1", &addr.port().to_string()]).await;
    output.assert_success();
    let out = &output.stdout;
    assert!(out.contains("default no-delay=true keep-alive=false hop-limit=128 qos=SocketQualityOfService::Normal"), "{out}");
    assert!(out.contains("hop-limit-zero=invalid-argument"), "{out}");
    assert!(
        out.contains("connected no-delay=false keep-alive=true buffer=65536 hop-limit=77 qos=SocketQualityOfService::LowLatency serialize=true"),
        "{out}"
    );
    assert!(
        out.contains("set-no-delay-after-connect=invalid-operation"),
        "{out}"
    );
    assert!(
        out.contains("set-keep-alive-after-connect=invalid-operation"),
        "{out}"
    );
    assert!(out.contains("buffer-after-late-set=65536"), "{out}");
}

/// Information reports the addresses and ports of both ends, the names given to connect,
/// and round-trip times.
#[tokio::test(flavor = "multi_thread")]
async fn stream_information() {
    let addr = native_tcp_echo().await;
    let port = addr.port().to_string();
    let output = probe(&["connect", "localhost", &port]).await;
    output.assert_success();
    assert_eq!(output.value("before-remote-port"), Some("\"\""));
    assert_eq!(output.value("remote-address"), Some("127.0.0.1"));
    assert_eq!(output.value("remote-port"), Some(port.as_str()));
    assert_eq!(output.value("local-address"), Some("127.0.0.1"));
    assert_eq!(output.value("remote-host-name"), Some("localhost"));
    assert_eq!(output.value("remote-service-name"), Some(port.as_str()));
    assert_eq!(
        output.value("protection-level"),
        Some("SocketProtectionLevel::PlainSocket")
    );
    assert_eq!(output.value("rtt-sum-positive"), Some("true"));
    assert_eq!(output.value("second-connect"), Some("invalid-operation"));
    let local: u16 = output.value("local-port").unwrap().parse().unwrap();
    assert_ne!(local, 0);
}

/// connect-endpoint-pair binds the given local port.
#[tokio::test(flavor = "multi_thread")]
async fn connect_from_endpoint_pair() {
    let addr = native_tcp_echo().await;
    let local = closed_port().to_string();
    let output = probe(&[
        "connect-from",
        &local,
        "127.0.0.1",
        &addr.port().to_string(),
    ])
    .await;
    output.assert_success();
    assert_eq!(output.value("local-port"), Some(local.as_str()));
}

/// get-endpoint-pairs lists every address of a name, in resolver order.
#[tokio::test(flavor = "multi_thread")]
async fn endpoint_pairs_of_localhost() {
    let output = probe(&["endpoint-pairs", "localhost", "http"]).await;
    output.assert_success();
    assert!(
        output.stdout.contains("pair=::1:80") && output.stdout.contains("pair=127.0.0.1:80"),
        "{output:#?}"
    );
}

/// Host names parse and normalize as UWP's HostName does.
#[tokio::test(flavor = "multi_thread")]
async fn host_names() {
    let output = probe(&["hostname", "[0:0::1]"]).await;
    output.assert_success();
    assert_eq!(output.value("canonical"), Some("::1"));
    assert_eq!(output.value("display"), Some("0:0::1"));
    assert_eq!(output.value("type"), Some("HostNameType::Ipv6"));
    assert_eq!(output.value("is-equal"), Some("true"));
    let output = probe(&["hostname", "Example.COM."]).await;
    assert_eq!(output.value("canonical"), Some("example.com"));
    assert_eq!(output.value("type"), Some("HostNameType::DomainName"));
    assert_eq!(
        probe(&["compare", "EXAMPLE.com", "example.com."])
            .await
            .value("compare"),
        Some("0")
    );
    assert_eq!(
        probe(&["compare", "a.com", "b.com"]).await.value("compare"),
        Some("-1")
    );
}

/// An accepted socket reports both ends and carries the listener's control settings, which
/// cannot change after bind.
#[tokio::test(flavor = "multi_thread")]
async fn listener_accept_and_information() {
    let runtime = runtime(loopback_policy());
    let guest = start(&runtime, SOCKET_PROBE, &["accept-info"]);
    let port = guest.bound(Transport::Tcp).await.port();
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut greeting = String::new();
    client.read_to_string(&mut greeting).await.unwrap();
    assert_eq!(greeting, "accepted\n");
    let output = guest.finish().await;
    output.assert_success();
    let client_port = client.local_addr().unwrap().port().to_string();
    assert_eq!(output.value("set-after-bind"), Some("invalid-operation"));
    assert_eq!(output.value("listening"), Some(port.to_string().as_str()));
    assert_eq!(output.value("local-address"), Some("127.0.0.1"));
    assert_eq!(output.value("local-port"), Some(port.to_string().as_str()));
    assert_eq!(output.value("remote-address"), Some("127.0.0.1"));
    assert_eq!(output.value("remote-port"), Some(client_port.as_str()));
    assert!(
        output
            .stdout
            .contains("accepted no-delay=true keep-alive=true hop-limit=33"),
        "{output:#?}"
    );
}

/// The seed's batched send (the `batch-sender` example): 1,000 small writes and one flush,
/// three rounds, arrive whole and in order.
#[tokio::test(flavor = "multi_thread")]
async fn batched_writes_arrive_whole_and_in_order() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let receiver = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        received
    });
    let runtime = runtime(loopback_policy());
    let args = ["tcp", "127.0.0.1", &port, "--size", "37", "--rounds", "3"];
    let output = run(&runtime, BATCH_SENDER, &args).await;
    output.assert_success();
    assert_eq!(output.value("messages"), Some("3000"), "{output:#?}");
    let received = tokio::time::timeout(TIMEOUT, receiver)
        .await
        .unwrap()
        .unwrap();
    let round: Vec<u8> = (0..1000).flat_map(|k| [(k % 251) as u8; 37]).collect();
    assert_eq!(received.len(), 3 * round.len());
    assert!(received == round.repeat(3), "bytes arrived out of order");
}

/// Batched writes on a datagram output stream, and a flush after each, are one datagram per
/// write, whole and in order.
#[tokio::test(flavor = "multi_thread")]
async fn batched_datagrams_arrive_whole_and_in_order() {
    let runtime = runtime(loopback_policy());
    for each in [false, true] {
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = receiver.local_addr().unwrap().port().to_string();
        // 200 small datagrams fit the receive buffer of a receiver that is not reading yet.
        let mut args = vec!["udp", "127.0.0.1", &port, "--count", "200"];
        if each {
            args.push("--each");
        }
        run(&runtime, BATCH_SENDER, &args).await.assert_success();
        let mut buf = [0u8; 128];
        for k in 0..200 {
            let n = tokio::time::timeout(TIMEOUT, receiver.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &[k as u8; 64][..], "datagram {k}, each={each}");
        }
    }
}

/// Each write on a connected datagram output stream is one datagram.
#[tokio::test(flavor = "multi_thread")]
async fn datagram_stream_writes_are_datagrams() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port().to_string();
    let output = probe(&["stream-udp", "127.0.0.1", &port, "50"]).await;
    output.assert_success();
    for i in 0..50 {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(TIMEOUT, receiver.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
    }
}

/// Datagram information and control, and receive from the connected peer.
#[tokio::test(flavor = "multi_thread")]
async fn datagram_information_and_control() {
    let addr = native_udp_echo().await;
    let port = addr.port().to_string();
    let output = probe(&["udp-info", "127.0.0.1", &port]).await;
    output.assert_success();
    let out = &output.stdout;
    assert!(
        out.contains("before-local-port=\"\" before-remote-port=\"\""),
        "{out}"
    );
    assert_eq!(output.value("local-address"), Some("127.0.0.1"));
    assert_eq!(output.value("local-port-set"), Some("true"));
    assert_eq!(output.value("remote-address"), Some("127.0.0.1"));
    assert_eq!(output.value("remote-port"), Some(port.as_str()));
    assert_eq!(output.value("inbound-buffer"), Some("262144"));
    assert_eq!(output.value("dont-fragment"), Some("true"));
    assert_eq!(output.value("hop-limit"), Some("9"));
    assert_eq!(output.value("set-after-bind"), Some("invalid-operation"));
    assert!(
        out.contains(&format!("reply=ping from=127.0.0.1:{port}")),
        "{out}"
    );
}

/// Two datagram sockets share a port with multicast-only; a third without it cannot.
#[tokio::test(flavor = "multi_thread")]
async fn datagram_port_sharing() {
    let output = probe(&["share-udp"]).await;
    output.assert_success();
    assert!(
        output.stdout.contains("shared=true multicast-only=true"),
        "{output:#?}"
    );
    assert_eq!(
        output.value("without-multicast-only"),
        Some("address-already-in-use")
    );
    assert_eq!(output.value("join-unicast"), Some("invalid-argument"));
}
