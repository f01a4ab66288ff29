//! The `batch` case: the seed's batched send measured. Each round is 1,000 writes of 64 bytes,
//! either queued and sent by one flush (`batched`) or each flushed and waited for (`each`), on
//! a stream socket and on a datagram output stream, by the `batch-sender` guest and by the
//! same loop in native tokio. Throughput comes from an in-process run; send system calls come
//! from a second run of the same workload in a child process under `strace -c -f`.

use sockhost_tests::{BATCH_SENDER, loopback_policy, run, runtime};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes per round and bytes per write.
const COUNT: usize = 1000;
const SIZE: usize = 64;
/// The system calls that send: `writev` (sockhost's TCP flush), `sendmmsg` (its datagram
/// flush), `sendto` (tokio's `send`/`send_to`), `sendmsg`.
const SEND_CALLS: &str = "trace=writev,sendto,sendmsg,sendmmsg";

/// One workload: who sends, over what, how.
#[derive(Clone, Copy)]
pub struct Workload {
    pub guest: bool,
    pub udp: bool,
    pub each: bool,
    pub rounds: usize,
}

impl Workload {
    fn args(&self) -> [String; 4] {
        [
            if self.guest { "sockhost" } else { "native" }.into(),
            if self.udp { "udp" } else { "tcp" }.into(),
            if self.each { "each" } else { "batched" }.into(),
            self.rounds.to_string(),
        ]
    }

    /// Parses what [`Workload::args`] wrote (for the child process).
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let [who, transport, mode, rounds] = args else {
            anyhow::bail!("--batch-child needs WHO TRANSPORT MODE ROUNDS");
        };
        Ok(Self {
            guest: who == "sockhost",
            udp: transport == "udp",
            each: mode == "each",
            rounds: rounds.parse()?,
        })
    }

    /// Runs the workload against a native receiver; returns the seconds spent sending and
    /// what the receiver got, checked, in bytes.
    pub async fn run(&self) -> anyhow::Result<(f64, usize)> {
        let total = COUNT * SIZE * self.rounds;
        let (addr, received) = if self.udp {
            udp_receiver(total).await?
        } else {
            tcp_receiver(total).await?
        };
        let seconds = if self.guest {
            self.run_guest(addr).await?
        } else {
            self.run_native(addr).await?
        };
        let received = tokio::time::timeout(std::time::Duration::from_secs(30), received)
            .await
            .map_err(|_| anyhow::anyhow!("the receiver did not finish"))???;
        Ok((seconds, received))
    }

    async fn run_guest(&self, addr: SocketAddr) -> anyhow::Result<f64> {
        let port = addr.port().to_string();
        let rounds = self.rounds.to_string();
        let transport = if self.udp { "udp" } else { "tcp" };
        let mut args = vec![transport, "127.0.0.1", &port, "--rounds", &rounds];
        if self.each {
            args.push("--each");
        }
        let output = run(&runtime(loopback_policy()), BATCH_SENDER, &args).await;
        output.assert_success();
        let nanos: f64 = output
            .value("nanos")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("batch-sender printed no time: {output:?}"))?;
        Ok(nanos / 1e9)
    }

    async fn run_native(&self, addr: SocketAddr) -> anyhow::Result<f64> {
        let messages: Vec<Vec<u8>> = (0..COUNT).map(|k| vec![(k % 251) as u8; SIZE]).collect();
        if self.udp {
            // tokio has no batched datagram send: one send_to per datagram either way.
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let started = Instant::now();
            for _ in 0..self.rounds {
                for message in &messages {
                    socket.send_to(message, addr).await?;
                }
            }
            return Ok(started.elapsed().as_secs_f64());
        }
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let started = Instant::now();
        for _ in 0..self.rounds {
            if self.each {
                for message in &messages {
                    stream.write_all(message).await?;
                }
            } else {
                // The native batched send: queue in a buffer, then one write.
                let mut buffer = tokio::io::BufWriter::with_capacity(COUNT * SIZE, &mut stream);
                for message in &messages {
                    buffer.write_all(message).await?;
                }
                buffer.flush().await?;
            }
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

type Received = tokio::task::JoinHandle<anyhow::Result<usize>>;

/// Accepts one connection and reads `total` bytes, checking each round's pattern.
async fn tcp_receiver(total: usize) -> anyhow::Result<(SocketAddr, Received)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let round: Vec<u8> = (0..COUNT).flat_map(|k| [(k % 251) as u8; SIZE]).collect();
        let mut buffer = vec![0u8; round.len()];
        for _ in 0..total / round.len() {
            stream.read_exact(&mut buffer).await?;
            anyhow::ensure!(buffer == round, "stream bytes out of order");
        }
        Ok(total)
    });
    Ok((addr, task))
}

/// Receives datagrams until `total` bytes came or none came for 200 ms (loopback drops what
/// overflows the receive buffer); checks each one is a whole message.
async fn udp_receiver(total: usize) -> anyhow::Result<(SocketAddr, Received)> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(16 << 20)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into())?;
    let addr = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut received = 0;
        let mut buffer = [0u8; 2 * SIZE];
        while received < total {
            let wait = std::time::Duration::from_millis(if received == 0 { 10_000 } else { 200 });
            let Ok(n) = tokio::time::timeout(wait, socket.recv(&mut buffer)).await else {
                break;
            };
            let n = n?;
            anyhow::ensure!(
                n == SIZE && buffer[..n].iter().all(|b| *b == buffer[0]),
                "a datagram arrived cut or mixed"
            );
            received += n;
        }
        Ok(received)
    });
    Ok((addr, task))
}

/// Counts the send system calls of `workload`, run by this program in a child process under
/// `strace -c -f`; `None` when strace is not installed.
async fn send_calls(workload: Workload) -> anyhow::Result<Option<u64>> {
    let summary =
        std::env::temp_dir().join(format!("sockhost-bench-{}.strace", std::process::id()));
    let exe = std::env::current_exe()?;
    let spawned = tokio::process::Command::new("strace")
        .args(["-f", "-c", "-e", SEND_CALLS, "-o"])
        .arg(&summary)
        .arg(exe)
        .arg("--batch-child")
        .args(workload.args())
        .stdout(std::process::Stdio::null())
        .status()
        .await;
    let status = match spawned {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    anyhow::ensure!(status.success(), "the strace child failed: {status}");
    let text = std::fs::read_to_string(&summary)?;
    let _ = std::fs::remove_file(&summary);
    // Rows: % time, seconds, usecs/call, calls, [errors], syscall; the total row is "total".
    let calls = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.last()?;
            let known = ["writev", "sendto", "sendmsg", "sendmmsg"].contains(name);
            known.then(|| fields.get(3)?.parse::<u64>().ok())?
        })
        .sum();
    Ok(Some(calls))
}

/// The `batch` table: throughput of each way of sending, and its send calls per 1,000 writes.
pub async fn batch_cases(rounds: usize) -> anyhow::Result<()> {
    for udp in [false, true] {
        for each in [false, true] {
            let transport = if udp { "udp" } else { "tcp" };
            let mode = if each {
                "write+flush each"
            } else {
                "1000 writes, 1 flush"
            };
            let case = format!("{transport} {mode}");
            let workload = |guest| Workload {
                guest,
                udp,
                each,
                rounds,
            };
            let (guest_seconds, guest_received) = workload(true).run().await?;
            let (native_seconds, native_received) = workload(false).run().await?;
            let sent = (COUNT * SIZE * rounds) as f64;
            let mb = |seconds: f64| sent / seconds / 1e6;
            super::report(&case, "MB/s sent", mb(guest_seconds), mb(native_seconds));
            // strace slows the child down, so it counts a shorter run of the same workload.
            let traced = rounds.min(20);
            let guest_calls = send_calls(Workload {
                rounds: traced,
                ..workload(true)
            })
            .await?;
            let native_calls = send_calls(Workload {
                rounds: traced,
                ..workload(false)
            })
            .await?;
            let per_round = |count: Option<u64>| count.map(|c| c as f64 / traced as f64);
            let (guest_calls, native_calls) = (per_round(guest_calls), per_round(native_calls));
            let shown = |calls: Option<f64>| match calls {
                Some(calls) => format!("{calls:.1}"),
                None => "n/a (no strace)".into(),
            };
            let received = |bytes: usize| bytes as f64 * 100.0 / sent;
            println!(
                "{:<28} send syscalls per 1,000 writes: sockhost {}, native {}; received {:.0}% / {:.0}%",
                "",
                shown(guest_calls),
                shown(native_calls),
                received(guest_received),
                received(native_received),
            );
            let json = |calls: Option<f64>| calls.map_or("null".into(), |c| format!("{c:.1}"));
            super::annotate_last(format!(
                "\"sockhost_send_calls_per_1000_writes\": {}, \"native_send_calls_per_1000_writes\": {}, \"sockhost_received_pct\": {:.1}, \"native_received_pct\": {:.1}",
                json(guest_calls),
                json(native_calls),
                received(guest_received),
                received(native_received)
            ));
        }
    }
    Ok(())
}
