//! TLS on stream sockets: client certificates, every certificate status, ignorable errors,
//! STARTTLS, TLS listeners with and without client certificates, and refused levels. Real
//! rustls peers on loopback; certificates made here with rcgen.

use rcgen::ExtendedKeyUsagePurpose;
use sockhost::runtime::Runtime;
use sockhost::tls::TlsConfig;
use sockhost_tests::pki::{
    Ca, LeafSpec, client_config, native_tls_echo, native_tls_echo_counting, server_config, tampered,
};
use sockhost_tests::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The host's TLS material for a test: trust `ca` only, identities, revocation lists.
fn host(ca: &Ca, identities: &[(&str, &pki::Leaf)], crls: &[&Ca]) -> TlsConfig {
    let mut tls = TlsConfig::default();
    tls.without_system_roots();
    tls.add_ca_der(ca.cert.clone());
    for (name, leaf) in identities {
        tls.add_identity_der(name, leaf.chain.clone(), leaf.key());
    }
    for issuer in crls {
        tls.add_crl_der(issuer.crl(&[66]));
    }
    tls
}

fn tls_runtime(tls: TlsConfig) -> Runtime {
    runtime(loopback_policy()).with_tls(tls)
}

/// Later connections with the same settings resume the TLS session: the native server sees
/// one full handshake, then resumed ones, and a resumed connection still reports the server's
/// certificate and no errors. A connection that ignores a certificate error never resumes,
/// since a resumed handshake checks no certificate.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_resume_only_with_full_verification() {
    let ca = Ca::new("resumption CA");
    let (addr, handshakes) =
        native_tls_echo_counting(server_config(&ca.server(1), None), false).await;
    let runtime = tls_runtime(host(&ca, &[], &[]));
    let port = addr.port().to_string();
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "hi", "--repeat", "3"],
    )
    .await;
    output.assert_success();
    assert_eq!(handshakes.counts(), (1, 2), "{output:#?}");
    assert_eq!(output.value("certificate-errors"), Some("none"));
    assert!(output.value("server-subject").is_some(), "{output:#?}");
    let ignoring = [
        "localhost",
        &port,
        "hi",
        "--ignore",
        "expired",
        "--repeat",
        "2",
    ];
    run(&runtime, TLS_ECHO_CLIENT, &ignoring)
        .await
        .assert_success();
    assert_eq!(
        handshakes.counts(),
        (3, 2),
        "ignoring an error resumed a session"
    );
}

/// The guest client presents the host identity when the native server requires a client
/// certificate, and fails without it.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_required_by_native_server() {
    let ca = Ca::new("sockhost test CA");
    let client = ca.client("guest client", 2);
    let addr = native_tls_echo(server_config(&ca.server(1), Some(&ca)), false).await;
    let port = addr.port().to_string();
    let runtime = tls_runtime(host(&ca, &[("me", &client)], &[]));
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "with a certificate", "--identity", "me"],
    )
    .await;
    output.assert_success();
    assert_eq!(output.stdout.lines().last(), Some("with a certificate"));
    assert_eq!(output.value("server-subject"), Some("CN=localhost"));
    assert_eq!(output.value("certificate-errors"), Some("none"));
    assert_eq!(output.value("severity"), Some("none"));
    let output = run(&runtime, TLS_ECHO_CLIENT, &["localhost", &port, "without"]).await;
    assert_ne!(output.exit.code, 0, "{output:#?}");
    // An identity the host does not have is refused before any connection.
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "x", "--identity", "nobody"],
    )
    .await;
    assert_eq!(
        output.error_status(),
        Some("invalid-argument"),
        "{output:#?}"
    );
}

/// Each certificate problem fails the handshake with its own status; the ignorable ones pass
/// when the guest lists them, and information then reports them.
#[tokio::test(flavor = "multi_thread")]
async fn certificate_statuses_and_ignorable_errors() {
    let ca = Ca::new("sockhost test CA");
    let stranger = Ca::new("unknown CA");
    let spec = |name, sans, usage, expired, serial| LeafSpec {
        name,
        sans,
        usage,
        expired,
        serial,
    };
    let server_auth = ExtendedKeyUsagePurpose::ServerAuth;
    let cases = [
        (
            "expired",
            ca.leaf(spec(
                "localhost",
                &["localhost"],
                server_auth.clone(),
                true,
                10,
            )),
            "certificate-expired",
            Some("expired"),
        ),
        (
            "wrong name",
            ca.leaf(spec(
                "other.example",
                &["other.example"],
                server_auth.clone(),
                false,
                11,
            )),
            "certificate-common-name-is-incorrect",
            Some("invalid-name"),
        ),
        (
            "wrong usage",
            ca.leaf(spec(
                "localhost",
                &["localhost"],
                ExtendedKeyUsagePurpose::ClientAuth,
                false,
                12,
            )),
            "certificate-wrong-usage",
            Some("wrong-usage"),
        ),
        (
            "unknown CA",
            stranger.server(13),
            "certificate-untrusted-root",
            Some("untrusted"),
        ),
        ("revoked", ca.server(66), "certificate-revoked", None),
    ];
    let runtime = tls_runtime(host(&ca, &[], &[&ca]));
    for (what, leaf, status, ignorable) in cases {
        let port = native_tls_echo(server_config(&leaf, None), false)
            .await
            .port()
            .to_string();
        let output = run(&runtime, TLS_ECHO_CLIENT, &["localhost", &port, "hi"]).await;
        assert_eq!(output.error_status(), Some(status), "{what}: {output:#?}");
        if let Some(error) = ignorable {
            let output = run(
                &runtime,
                TLS_ECHO_CLIENT,
                &["localhost", &port, "hi", "--ignore", error],
            )
            .await;
            output.assert_success();
            assert_eq!(output.value("certificate-errors"), Some(error), "{what}");
            assert_eq!(output.value("severity"), Some("ignorable"), "{what}");
        } else {
            // Fatal errors cannot even be listed as ignorable.
            let output = run(
                &runtime,
                TLS_ECHO_CLIENT,
                &["localhost", &port, "hi", "--ignore", "revoked"],
            )
            .await;
            assert_eq!(
                output.error_status(),
                Some("invalid-argument"),
                "{what}: {output:#?}"
            );
        }
    }
    // A certificate whose signature was tampered with is invalid, whatever is ignored.
    let mut leaf = ca.server(14);
    leaf.chain = vec![tampered(&leaf.chain[0])];
    let port = native_tls_echo(server_config(&leaf, None), false)
        .await
        .port()
        .to_string();
    let output = run(&runtime, TLS_ECHO_CLIENT, &["localhost", &port, "hi"]).await;
    assert_eq!(
        output.error_status(),
        Some("certificate-is-invalid"),
        "{output:#?}"
    );
}

/// Two ignorable errors at once: an expired certificate for the wrong name passes only when
/// both are ignored.
#[tokio::test(flavor = "multi_thread")]
async fn ignoring_one_error_still_checks_the_name() {
    let ca = Ca::new("sockhost test CA");
    let leaf = ca.leaf(LeafSpec {
        name: "other.example",
        sans: &["other.example"],
        usage: ExtendedKeyUsagePurpose::ServerAuth,
        expired: true,
        serial: 20,
    });
    let port = native_tls_echo(server_config(&leaf, None), false)
        .await
        .port()
        .to_string();
    let runtime = tls_runtime(host(&ca, &[], &[]));
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "hi", "--ignore", "expired"],
    )
    .await;
    assert_eq!(
        output.error_status(),
        Some("certificate-common-name-is-incorrect"),
        "{output:#?}"
    );
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "hi", "--ignore", "expired,invalid-name"],
    )
    .await;
    output.assert_success();
    assert_eq!(
        output.value("certificate-errors"),
        Some("expired,invalid-name")
    );
}

/// STARTTLS: a plain exchange, then upgrade-to-ssl on the same connection and streams.
#[tokio::test(flavor = "multi_thread")]
async fn upgrade_to_ssl_after_plain_exchange() {
    let ca = Ca::new("sockhost test CA");
    let port = native_tls_echo(server_config(&ca.server(1), None), true)
        .await
        .port()
        .to_string();
    let runtime = tls_runtime(host(&ca, &[], &[]));
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &[
            "localhost",
            &port,
            "secured later",
            "--starttls",
            "--level",
            "tls12",
        ],
    )
    .await;
    output.assert_success();
    assert_eq!(output.value("protection-level"), Some("tls12"));
    assert_eq!(output.stdout.lines().last(), Some("secured later"));
}

/// Protection levels are honoured and the ones rustls refuses are refused, not downgraded.
#[tokio::test(flavor = "multi_thread")]
async fn protection_levels() {
    let ca = Ca::new("sockhost test CA");
    let port = native_tls_echo(server_config(&ca.server(1), None), false)
        .await
        .port()
        .to_string();
    let runtime = tls_runtime(host(&ca, &[], &[]));
    for (level, negotiated) in [
        ("tls12", "tls12"),
        ("tls13", "tls13"),
        ("unspecified", "tls13"),
    ] {
        let output = run(
            &runtime,
            TLS_ECHO_CLIENT,
            &["127.0.0.1", &port, "x", "--level", level],
        )
        .await;
        output.assert_success();
        assert_eq!(
            output.value("protection-level"),
            Some(negotiated),
            "{level}"
        );
    }
    for refused in ["ssl", "ssl3-allow-weak-encryption", "tls10", "tls11"] {
        let output = run(
            &runtime,
            TLS_ECHO_CLIENT,
            &["127.0.0.1", &port, "x", "--level", refused],
        )
        .await;
        assert_eq!(
            output.error_status(),
            Some("not-supported"),
            "{refused}: {output:#?}"
        );
    }
}

/// ALPN: the guest offers protocols and information reports the one agreed on.
#[tokio::test(flavor = "multi_thread")]
async fn alpn_is_negotiated() {
    let ca = Ca::new("sockhost test CA");
    let port = native_tls_echo(server_config(&ca.server(1), None), false)
        .await
        .port()
        .to_string();
    let runtime = tls_runtime(host(&ca, &[], &[]));
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "x", "--alpn", "h2,echo/1"],
    )
    .await;
    output.assert_success();
    assert_eq!(output.value("alpn"), Some("echo/1"));
    let many = (0..17)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "x", "--alpn", &many],
    )
    .await;
    assert_eq!(
        output.error_status(),
        Some("invalid-argument"),
        "{output:#?}"
    );
}

/// A native rustls client against the guest TLS echo server.
async fn native_client_round_trip(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await?;
    let (read, mut write) = tokio::io::split(tls);
    write.write_all(b"over guest TLS\n").await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    Ok(line)
}

/// The guest TLS echo server serves a native rustls client, without and with required
/// client certificates, and reports the client's certificate.
#[tokio::test(flavor = "multi_thread")]
async fn guest_tls_server() {
    let ca = Ca::new("sockhost test CA");
    let client = ca.client("native client", 3);
    let runtime = tls_runtime(host(&ca, &[("server", &ca.server(1))], &[]));

    let server = start(&runtime, TLS_ECHO_SERVER, &["0", "--identity", "server"]);
    let port = server.bound(Transport::Tcp).await.port();
    let line = tokio::time::timeout(
        TIMEOUT,
        native_client_round_trip(port, client_config(&ca, None)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(line, "over guest TLS\n");
    server.app.stop();

    let server = start(
        &runtime,
        TLS_ECHO_SERVER,
        &["0", "--identity", "server", "--require-client-certificate"],
    );
    let port = server.bound(Transport::Tcp).await.port();
    let line = tokio::time::timeout(
        TIMEOUT,
        native_client_round_trip(port, client_config(&ca, Some(&client))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(line, "over guest TLS\n");
    let without = tokio::time::timeout(
        TIMEOUT,
        native_client_round_trip(port, client_config(&ca, None)),
    )
    .await
    .unwrap();
    assert!(
        without.as_ref().map_or(true, |line| line.is_empty()),
        "a client without a certificate got {without:?}"
    );
    server.app.stop();
    let stdout = String::from_utf8_lossy(&server.stdout.contents()).into_owned();
    assert!(
        stdout.contains("client-certificate=CN=native_client"),
        "{stdout}"
    );
}

/// Guest to guest over mutual TLS.
#[tokio::test(flavor = "multi_thread")]
async fn guest_to_guest_mutual_tls() {
    let ca = Ca::new("sockhost test CA");
    let runtime = tls_runtime(host(
        &ca,
        &[
            ("server", &ca.server(1)),
            ("client", &ca.client("guest client", 2)),
        ],
        &[],
    ));
    let server = start(
        &runtime,
        TLS_ECHO_SERVER,
        &["0", "--identity", "server", "--require-client-certificate"],
    );
    let port = server.bound(Transport::Tcp).await.port().to_string();
    let output = run(
        &runtime,
        TLS_ECHO_CLIENT,
        &["localhost", &port, "mutual", "--identity", "client"],
    )
    .await;
    output.assert_success();
    assert_eq!(output.stdout.lines().last(), Some("mutual"));
    server.app.stop();
}

/// A TLS listener needs an identity.
#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_without_identity_is_refused() {
    let ca = Ca::new("sockhost test CA");
    let runtime = tls_runtime(host(&ca, &[], &[]));
    let output = run(&runtime, TLS_ECHO_SERVER, &["0"]).await;
    assert_ne!(output.exit.code, 0);
    assert!(
        output.stderr.contains("invalid-argument") && output.stderr.contains("server identity"),
        "{output:#?}"
    );
}
