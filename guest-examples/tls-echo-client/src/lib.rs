//! `tls-echo-client [HOST] [SERVICE] [LINE] [OPTIONS]`: the seed's client-certificate sample
//! as an echo client. Connects to HOST (default "localhost") on SERVICE (default "1337")
//! with TLS, sends LINE (default "test") and a newline, and exits 0 only if the echo matches.
//! It prints what information reports about the connection as `key=value` lines first.
//!
//! Options:
//! - `--identity NAME`: the host identity to present as a client certificate.
//! - `--ignore ERR,...`: certificate errors to ignore (`expired`, `untrusted`, `invalid-name`,
//!   `wrong-usage`, `incomplete-chain`, `revocation-information-missing`).
//! - `--level LEVEL`: `tls12`, `tls13` or `unspecified` (the default); others are refused.
//! - `--starttls`: connect in plain text, send `STARTTLS`, wait for `OK`, then upgrade.
//! - `--alpn P,...`: ALPN protocols to offer.
//! - `--repeat N`: do the whole exchange (connect, handshake, echo, close) N times and print
//!   `handshakes-per-second=…`, to measure handshake cost; the information printed is the
//!   last connection's (which resumed the TLS session, when the host could).

sockhost_guest::component!("../../wit", "sockhost:sockets/client", TlsEchoClient);

use bindings::exports::wasi::cli::run::Guest as Run;
use sockhost_guest::stream_socket::StreamSocket;
use sockhost_guest::types::{ChainValidationResult, HostName, SocketError, SocketProtectionLevel};
use sockhost_guest::{describe, kebab_name, read_line, send_all, status_name, stream_error};

/// The component: one request over TLS, one checked response.
struct TlsEchoClient;

/// The command line.
#[derive(Default)]
struct Options {
    positional: Vec<String>,
    identity: Option<String>,
    ignore: Vec<ChainValidationResult>,
    level: Option<SocketProtectionLevel>,
    starttls: bool,
    alpn: Vec<String>,
    repeat: u32,
}

fn options() -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--identity" => options.identity = Some(value()?),
            "--ignore" => {
                for name in value()?.split(',') {
                    options.ignore.push(chain_result(name)?);
                }
            }
            "--level" => options.level = Some(level(&value()?)?),
            "--alpn" => options.alpn = value()?.split(',').map(String::from).collect(),
            "--starttls" => options.starttls = true,
            "--repeat" => {
                options.repeat = value()?.parse().map_err(|_| "--repeat needs a number")?
            }
            _ => options.positional.push(arg),
        }
    }
    Ok(options)
}

fn chain_result(name: &str) -> Result<ChainValidationResult, String> {
    use ChainValidationResult as C;
    Ok(match name {
        "untrusted" => C::Untrusted,
        "expired" => C::Expired,
        "incomplete-chain" => C::IncompleteChain,
        "wrong-usage" => C::WrongUsage,
        "invalid-name" => C::InvalidName,
        "revocation-information-missing" => C::RevocationInformationMissing,
        "revocation-failure" => C::RevocationFailure,
        "revoked" => C::Revoked,
        "invalid-signature" => C::InvalidSignature,
        other => return Err(format!("unknown certificate error {other:?}")),
    })
}

fn level(name: &str) -> Result<SocketProtectionLevel, String> {
    use SocketProtectionLevel as L;
    Ok(match name {
        "plain-socket" => L::PlainSocket,
        "ssl" => L::Ssl,
        "ssl3-allow-weak-encryption" => L::Ssl3AllowWeakEncryption,
        "tls10" => L::Tls10,
        "tls11" => L::Tls11,
        "tls12" => L::Tls12,
        "tls13" => L::Tls13,
        "unspecified" => L::Unspecified,
        other => return Err(format!("unknown protection level {other:?}")),
    })
}

impl Run for TlsEchoClient {
    fn run() -> Result<(), ()> {
        let result = options().and_then(|options| {
            let started = std::time::Instant::now();
            let repeat = options.repeat.max(1);
            // The last connection reports: with --repeat, one that resumed the session.
            for round in 0..repeat {
                echo(&options, round + 1 == repeat)?;
            }
            if repeat > 1 {
                let rate = f64::from(repeat) / started.elapsed().as_secs_f64();
                println!("handshakes-per-second={rate:.0}");
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(message) => {
                eprintln!("tls-echo-client: {message}");
                Err(())
            }
        }
    }
}

fn echo(options: &Options, report: bool) -> Result<(), String> {
    let arg = |i: usize, default: &str| {
        options
            .positional
            .get(i)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let (host, service, line) = (arg(0, "localhost"), arg(1, "1337"), arg(2, "test"));
    let level = options.level.unwrap_or(SocketProtectionLevel::Unspecified);
    // Failures print as the probe's do (`error STATUS MESSAGE`), for scripts and tests.
    let fail = |what: &str, e: SocketError| {
        println!(
            "error {} {}",
            status_name(e.status),
            e.message.clone().unwrap_or_default()
        );
        format!("{what}: {}", describe(&e))
    };
    let host = HostName::parse(&host).map_err(|e| fail("host name", e))?;
    let socket = StreamSocket::new();
    socket
        .set_client_certificate(options.identity.as_deref())
        .map_err(|e| fail("client certificate", e))?;
    socket
        .set_ignorable_server_certificate_errors(&options.ignore)
        .map_err(|e| fail("ignorable errors", e))?;
    socket
        .set_alpn_protocols(&options.alpn)
        .map_err(|e| fail("alpn", e))?;
    let stream_failure = |what: &str, e| match stream_error(&e) {
        Some(error) => fail(what, error),
        None => format!("{what}: {e:?}"),
    };
    let first_level = if options.starttls {
        SocketProtectionLevel::PlainSocket
    } else {
        level
    };
    socket
        .connect(&host, &service, first_level)
        .map_err(|e| fail("connect", e))?;
    let output = socket
        .output_stream()
        .map_err(|e| fail("output stream", e))?;
    let input = socket.input_stream().map_err(|e| fail("input stream", e))?;
    let mut buffer = Vec::new();
    if options.starttls {
        send_all(&output, b"STARTTLS\n").map_err(|e| stream_failure("send", e))?;
        let answer = read_line(&input, &mut buffer).map_err(|e| stream_failure("receive", e))?;
        if answer.as_deref() != Some("OK") {
            return Err(format!("the server answered {answer:?} to STARTTLS"));
        }
        socket
            .upgrade_to_ssl(level, &host)
            .map_err(|e| fail("upgrade-to-ssl", e))?;
    }
    if report {
        report_information(&socket);
    }
    send_all(&output, format!("{line}\n").as_bytes()).map_err(|e| stream_failure("send", e))?;
    let response = read_line(&input, &mut buffer).map_err(|e| stream_failure("receive", e))?;
    drop((input, output));
    let _ = socket.close();
    match response {
        Some(response) if response == line => {
            if report {
                println!("{response}");
            }
            Ok(())
        }
        Some(response) => Err(format!(
            "sent {line:?} but the server answered {response:?}"
        )),
        None => Err("the server closed the connection before answering".to_string()),
    }
}

/// Prints what `Information` says about the secured connection.
fn report_information(socket: &StreamSocket) {
    println!("protection-level={}", kebab_name(socket.protection_level()));
    if let Some(cert) = socket.server_certificate() {
        println!("server-subject={}", cert.subject.replace(' ', "_"));
        println!("server-issuer={}", cert.issuer.replace(' ', "_"));
    }
    let errors: Vec<String> = socket
        .server_certificate_errors()
        .into_iter()
        .map(kebab_name)
        .collect();
    let errors = if errors.is_empty() {
        "none".to_string()
    } else {
        errors.join(",")
    };
    println!("certificate-errors={errors}");
    println!(
        "severity={}",
        kebab_name(socket.server_certificate_error_severity())
    );
    println!(
        "alpn={}",
        socket
            .negotiated_alpn_protocol()
            .unwrap_or_else(|| "none".to_string())
    );
}
