//! Every socket-error-status that Linux loopback can produce, asserted exactly.

use sockhost::policy::NetworkPolicy;
use sockhost_tests::*;
use std::io::Write;

/// Nothing listens: connection-refused.
#[tokio::test(flavor = "multi_thread")]
async fn connection_refused() {
    let port = closed_port().to_string();
    let output = probe(&["connect", "127.0.0.1", &port]).await;
    assert_eq!(
        output.error_status(),
        Some("connection-refused"),
        "{output:#?}"
    );
}

/// A connected datagram stream to a port where nothing listens fails with connection-refused
/// (the kernel's ICMP port unreachable), flushed per write or batched: the error is not lost
/// inside a batched `sendmmsg`, which reports only a count when a later datagram fails.
#[tokio::test(flavor = "multi_thread")]
async fn datagram_stream_to_a_closed_port_is_refused() {
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port().to_string()
    };
    let runtime = runtime(loopback_policy());
    for each in [false, true] {
        // One round: the kernel's error for a datagram inside the batch must not vanish.
        let mut args = vec!["udp", "127.0.0.1", &port, "--connect", "--count", "10"];
        if each {
            args.push("--each");
        }
        let output = run(&runtime, BATCH_SENDER, &args).await;
        assert_eq!(output.exit.code, 1, "each={each}: {output:#?}");
        assert!(
            output.stderr.contains("send: connection-refused"),
            "each={each}: {output:#?}"
        );
    }
}

/// A port someone else holds: address-already-in-use.
#[tokio::test(flavor = "multi_thread")]
async fn address_already_in_use() {
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let output = probe(&["listen", &port]).await;
    assert_eq!(
        output.error_status(),
        Some("address-already-in-use"),
        "{output:#?}"
    );
}

/// Names under .invalid never resolve: host-not-found.
#[tokio::test(flavor = "multi_thread")]
async fn host_not_found() {
    let output = probe(&["connect", "no-such-host.invalid", "80"]).await;
    assert_eq!(output.error_status(), Some("host-not-found"), "{output:#?}");
}

/// A host name with characters a host name cannot have: invalid-argument.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_host_name() {
    for bad in ["exa mple.com", "a..b", "x@y", ""] {
        let output = probe(&["hostname", bad]).await;
        assert_eq!(
            output.error_status(),
            Some("invalid-argument"),
            "{bad:?}: {output:#?}"
        );
    }
    let output = probe(&["connect", "127.0.0.1", "no-such-service"]).await;
    assert_eq!(
        output.error_status(),
        Some("invalid-argument"),
        "{output:#?}"
    );
}

/// Datagrams larger than UDP allows: message-too-long, from the kernel (65,508 bytes over
/// IPv4) and from the host (more than 65,535).
#[tokio::test(flavor = "multi_thread")]
async fn message_too_long() {
    let addr = native_udp_echo().await;
    let port = addr.port().to_string();
    for size in ["65508", "70000"] {
        let output = probe(&["send-udp", "127.0.0.1", &port, size]).await;
        assert_eq!(
            output.error_status(),
            Some("message-too-long"),
            "{size}: {output:#?}"
        );
    }
    probe(&["send-udp", "127.0.0.1", &port, "65507"])
        .await
        .assert_success();
}

/// The peer resets the connection (SO_LINGER 0 then close): connection-reset-by-peer from a
/// stream read, through types.stream-error-status.
#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_by_peer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let resetter = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1];
        let _ = std::io::Read::read(&mut &stream, &mut buf);
        let socket = socket2::Socket::from(stream);
        socket.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(socket);
    });
    let output = probe(&["read-until-error", "127.0.0.1", &port]).await;
    resetter.join().unwrap();
    assert_eq!(
        output.error_status(),
        Some("connection-reset-by-peer"),
        "{output:#?}"
    );
}

/// The default policy denies everything: access-denied, naming the address.
#[tokio::test(flavor = "multi_thread")]
async fn access_denied_by_policy() {
    let addr = native_tcp_echo().await;
    let port = addr.port().to_string();
    let denied = runtime(NetworkPolicy::default());
    let output = run(&denied, SOCKET_PROBE, &["connect", "127.0.0.1", &port]).await;
    assert_eq!(output.error_status(), Some("access-denied"), "{output:#?}");
    assert!(
        output.stdout.contains(&format!("127.0.0.1:{port}")),
        "{output:#?}"
    );
    let output = run(&denied, SOCKET_PROBE, &["listen", "0"]).await;
    assert_eq!(output.error_status(), Some("access-denied"), "{output:#?}");
    // A rule for another port does not let this one through; a rule for it does.
    let other = runtime(NetworkPolicy {
        allow_connect: vec!["127.0.0.1:1".parse().unwrap()],
        ..NetworkPolicy::default()
    });
    let output = run(&other, SOCKET_PROBE, &["connect", "127.0.0.1", &port]).await;
    assert_eq!(output.error_status(), Some("access-denied"), "{output:#?}");
    let exact = runtime(NetworkPolicy {
        allow_connect: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        ..NetworkPolicy::default()
    });
    run(&exact, SOCKET_PROBE, &["connect", "127.0.0.1", &port])
        .await
        .assert_success();
}

/// UWP's network isolation as a policy option: one app cannot reach another's port over
/// loopback, but can reach a native server.
#[tokio::test(flavor = "multi_thread")]
async fn isolated_apps_cannot_connect() {
    let runtime = runtime(NetworkPolicy {
        isolate_apps: true,
        ..loopback_policy()
    });
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let port = server.bound(Transport::Tcp).await.port().to_string();
    let output = run(&runtime, SOCKET_PROBE, &["connect", "127.0.0.1", &port]).await;
    assert_eq!(output.error_status(), Some("access-denied"), "{output:#?}");
    let native = native_tcp_echo().await.port().to_string();
    run(&runtime, SOCKET_PROBE, &["connect", "127.0.0.1", &native])
        .await
        .assert_success();
    server.app.stop();
}

/// SSL is refused with not-supported, never silently downgraded or sent in plain text.
#[tokio::test(flavor = "multi_thread")]
async fn ssl_is_not_supported() {
    let addr = native_tcp_echo().await;
    let output = probe(&["connect-ssl", "127.0.0.1", &addr.port().to_string()]).await;
    assert_eq!(output.error_status(), Some("not-supported"), "{output:#?}");
}

/// get-status maps raw OS codes as SocketError.GetStatus does.
#[tokio::test(flavor = "multi_thread")]
async fn get_status_maps_errno() {
    for (errno, status) in [
        (111, "connection-refused"),
        (98, "address-already-in-use"),
        (104, "connection-reset-by-peer"),
        (90, "message-too-long"),
        (99999, "unknown"),
    ] {
        let output = probe(&["status", &errno.to_string()]).await;
        assert_eq!(output.value("status"), Some(status), "errno {errno}");
    }
}

/// A guest that traps takes down its own instance only: the host reports the trap, and a
/// server guest in the same runtime keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn host_survives_a_trapping_guest() {
    let runtime = runtime(loopback_policy());
    let server = start(&runtime, TCP_ECHO_SERVER, &["0"]);
    let addr = server.bound(Transport::Tcp).await;
    let output = run(&runtime, SOCKET_PROBE, &["trap"]).await;
    assert_ne!(output.exit.code, 0);
    assert!(
        output
            .exit
            .trap
            .as_deref()
            .is_some_and(|t| t.contains("unreachable") || t.contains("panic")),
        "{output:#?}"
    );
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", addr.port()).parse().unwrap();
    assert_eq!(tcp_round_trip(target, "still here").await, "still here");
    let _ = std::io::stdout().flush();
    server.app.stop();
}
