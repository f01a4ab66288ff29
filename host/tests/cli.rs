//! The `sockhost` command line: one clear line and a non-zero exit for every mistake, the
//! guest's exit code passed through, and the demo.

use std::io::{Read, Write};
use std::process::{Command, Output};

fn sockhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockhost"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("sockhost runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a failure with exactly one line on stderr that contains `needle`.
fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    assert!(
        err.starts_with("sockhost: ") && err.contains(needle),
        "{err}"
    );
}

/// A native echo server on a thread, for one connection.
fn echo_once() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    port
}

#[test]
fn usage_mistakes_are_one_line() {
    assert_one_line_error(&sockhost(&[]), 2, "missing a command");
    assert_one_line_error(&sockhost(&["frobnicate"]), 2, "unrecognized subcommand");
    assert_one_line_error(&sockhost(&["run"]), 2, "COMPONENT.wasm");
    assert_one_line_error(
        &sockhost(&["run", "--allow-bind", "1.2.3.4:x", "a.wasm"]),
        2,
        "invalid address rule",
    );
    assert_one_line_error(
        &sockhost(&["run", "--max-handlers", "many", "a.wasm"]),
        2,
        "many",
    );
    let wasm = sockhost_guests::WASI_COMMAND;
    for count in ["0", "10241"] {
        assert_one_line_error(
            &sockhost(&["run", "--max-handlers", count, wasm]),
            1,
            "--max-handlers must be between 1 and 10240",
        );
    }
}

#[test]
fn bad_tls_flags_are_one_line() {
    let wasm = sockhost_guests::WASI_COMMAND;
    assert_one_line_error(
        &sockhost(&["run", "--tls-identity", "nameonly", wasm]),
        2,
        "NAME=CERT.pem,KEY.pem",
    );
    assert_one_line_error(
        &sockhost(&["run", "--tls-ca", "/no/such/ca.pem", wasm]),
        1,
        "/no/such/ca.pem",
    );
    let output = sockhost(&["run", "--tls-identity", "a=/no/cert.pem,/no/key.pem", wasm]);
    assert_one_line_error(&output, 1, "/no/cert.pem");
}

#[test]
fn bad_components_are_one_line() {
    assert_one_line_error(
        &sockhost(&["run", "/no/such/file.wasm"]),
        1,
        "cannot read /no/such/file.wasm",
    );
    let not_wasm =
        std::env::temp_dir().join(format!("sockhost-not-wasm-{}.wasm", std::process::id()));
    std::fs::write(&not_wasm, "hello").unwrap();
    let output = sockhost(&["run", not_wasm.to_str().unwrap()]);
    std::fs::remove_file(&not_wasm).unwrap();
    assert_one_line_error(&output, 1, "is not a valid WebAssembly component");
}

#[test]
fn run_passes_arguments_and_exit_code() {
    let port = echo_once().to_string();
    let client = sockhost_guests::TCP_ECHO_CLIENT;
    let output = sockhost(&[
        "run",
        "--allow-connect",
        "127.0.0.1",
        client,
        "127.0.0.1",
        &port,
        "from the cli",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "from the cli"
    );
    // The same without permission: the guest reports access-denied and exits 1.
    let output = sockhost(&["run", client, "127.0.0.1", &port]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("access-denied"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_trap_is_one_line() {
    let output = sockhost(&["run", sockhost_guests::SOCKET_PROBE, "trap"]);
    assert_one_line_error(&output_without_guest_panic(output), 1, "trapped");
}

/// The guest's own panic message goes to its stderr first; keep only the host's line.
fn output_without_guest_panic(mut output: Output) -> Output {
    let text = stderr(&output);
    let host_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sockhost: "))
        .collect();
    output.stderr = format!("{}\n", host_lines.join("\n")).into_bytes();
    output
}

#[test]
fn demo_runs_the_echo_guests() {
    let output = sockhost(&["demo"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    assert!(
        stdout.contains("TCP: tcp-echo-client got back \"Hello over TCP!\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("UDP: udp-echo-client got back \"Hello, world!\""),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("demo ok"), "{stdout}");
}

#[test]
fn runs_plain_wasi_commands() {
    let output = sockhost(&["run", sockhost_guests::WASI_COMMAND, "a", "--b", "c d"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "args=a,--b,c d"
    );
    let output = sockhost(&["run", sockhost_guests::WASI_COMMAND, "fail"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}

/// Starts `sockhost run` on a server guest and returns it with the port it printed.
fn start_server(guest: &str, extra: &[&str]) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut args = vec!["run", "--allow-bind", "*", "--shutdown-grace", "20"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[guest, "0"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockhost"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .expect("a port");
    (child, port)
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for the child to exit.
fn exit_within(child: &mut std::process::Child, limit: std::time::Duration) -> Option<i32> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("sockhost did not exit within {limit:?}");
}

fn echo_line(stream: &mut std::net::TcpStream, line: &str) -> String {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 64];
    while !received.ends_with(b"\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the echo");
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(received).unwrap().trim_end().to_string()
}

/// SIGTERM stops accepting, lets the in-flight connection finish, then exits 0.
#[test]
fn sigterm_is_graceful() {
    let (mut child, port) = start_server(sockhost_guests::TCP_ECHO_SERVER, &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(echo_line(&mut stream, "before"), "before");
    signal(&child, "TERM");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(echo_line(&mut stream, "during shutdown"), "during shutdown");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting"
    );
    drop(stream);
    assert_eq!(
        exit_within(&mut child, std::time::Duration::from_secs(20)),
        Some(0)
    );
}

/// A second signal stops at once, even with a connection still open.
#[test]
fn second_signal_stops_at_once() {
    let (mut child, port) = start_server(sockhost_guests::TCP_ECHO_SERVER, &[]);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(echo_line(&mut stream, "hello"), "hello");
    signal(&child, "INT");
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(&child, "INT");
    assert_eq!(
        exit_within(&mut child, std::time::Duration::from_secs(5)),
        Some(130)
    );
}

/// Hands `listener` to the command's process at fd 3, as systemd's socket activation does.
#[allow(unsafe_code, reason = "dup2 in the child before exec, as systemd does")]
fn pass_at_fd_3(command: &mut Command, listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it puts the listener at fd 3 without CLOEXEC.
    unsafe {
        command.pre_exec(move || {
            // At fd 3 already, dup2 would do nothing and leave close-on-exec set.
            let rc = match fd {
                3 => libc::fcntl(3, libc::F_SETFD, 0),
                _ => libc::dup2(fd, 3),
            };
            match rc {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
}

/// Starts `command` with a fresh listener at fd 3 and echoes one line through it; returns
/// the line the component answered.
fn activate(mut command: Command) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    pass_at_fd_3(&mut command, &listener);
    let mut child = command
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(listener);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let line = echo_line(&mut stream, "activated");
    let _ = child.kill();
    let _ = child.wait();
    line
}

/// Socket activation: a listening socket handed over at fd 3 (LISTEN_FDS) reaches the
/// component through the broker, named by LISTEN_FDNAMES.
#[test]
fn socket_activation_with_an_inherited_listener() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sockhost"));
    command
        .args(["run", "--listen-fds", sockhost_guests::BROKER_PROBE])
        .env_remove("LISTEN_PID");
    assert_eq!(activate(command), "connection-accepted:web::activated:0");
}

/// Without `--listen-fds`, the inherited sockets are taken when LISTEN_PID names this
/// process, as systemd sets it: the shell's `exec` keeps its pid for sockhost.
#[test]
fn socket_activation_is_automatic_when_listen_pid_matches() {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        r#"LISTEN_PID=$$ exec "$0" run "$1""#,
        env!("CARGO_BIN_EXE_sockhost"),
        sockhost_guests::BROKER_PROBE,
    ]);
    assert_eq!(activate(command), "connection-accepted:web::activated:0");
}
