//! The echo cases of issue #5: the same loopback load against a native tokio echo server and
//! against sockhost running the `tcp-echo-server` / `udp-echo-server` guests, every echoed
//! byte verified.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// What one side of a case measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Operations (round trips, connections) or bytes per second.
    pub rate: f64,
    /// Median latency in microseconds, where it applies.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds, where it applies.
    pub p99_us: f64,
}

/// Round trips per second and their median and 99th percentile latencies.
fn latencies(mut samples: Vec<Duration>, time: Duration) -> Measured {
    let rate = samples.len() as f64 / time.as_secs_f64();
    if samples.is_empty() {
        return Measured::default();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    Measured {
        rate,
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}

/// Runs `count` clients until `time` has passed (each checks `stop` between operations) and
/// collects what each returns.
async fn clients_for<T, F, Fut>(count: usize, time: Duration, client: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize, Arc<AtomicBool>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..count)
        .map(|i| tokio::spawn(client(i, stop.clone())))
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::with_capacity(count);
    for task in tasks {
        results.push(task.await??);
    }
    Ok(results)
}

/// `connections` clients each send `size` bytes and wait for them back, for `time`.
pub async fn tcp_ping_pong(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    time: Duration,
) -> anyhow::Result<Measured> {
    let samples = clients_for(connections, time, |c, stop| async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let message: Vec<u8> = (0..size).map(|i| (i + c) as u8).collect();
        let mut back = vec![0u8; size];
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            stream.write_all(&message).await?;
            stream.read_exact(&mut back).await?;
            anyhow::ensure!(back == message, "echo mismatch");
            samples.push(started.elapsed());
        }
        anyhow::Ok(samples)
    })
    .await?;
    Ok(latencies(samples.concat(), time))
}

/// `connections` clients each stream 64 KiB writes and read the echo back, for `time`;
/// returns echoed megabytes per second.
pub async fn tcp_bulk(
    addr: SocketAddr,
    connections: usize,
    time: Duration,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let received = clients_for(connections, time, |c, stop| async move {
        let stream = TcpStream::connect(addr).await?;
        let (mut read, mut write) = stream.into_split();
        let chunk: Vec<u8> = (0..65536).map(|i| ((i * 7 + c) % 251) as u8).collect();
        let writer = {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    write.write_all(&chunk).await?;
                    sent += chunk.len() as u64;
                }
                write.shutdown().await?;
                anyhow::Ok(sent)
            })
        };
        let mut received = 0u64;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = read.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            for (i, byte) in buf[..n].iter().enumerate() {
                let at = (received as usize + i) % chunk.len();
                anyhow::ensure!(*byte == chunk[at], "bulk echo mismatch");
            }
            received += n as u64;
        }
        let sent = writer.await??;
        anyhow::ensure!(sent == received, "sent {sent} bytes, {received} came back");
        anyhow::Ok(received)
    })
    .await?;
    let megabytes = received.iter().sum::<u64>() as f64 / 1e6;
    Ok(Measured {
        rate: megabytes / started.elapsed().as_secs_f64(),
        ..Measured::default()
    })
}

/// `sockets` clients each send a `size`-byte datagram and wait for it back, for `time`.
pub async fn udp_ping_pong(
    addr: SocketAddr,
    sockets: usize,
    size: usize,
    time: Duration,
) -> anyhow::Result<Measured> {
    let samples = clients_for(sockets, time, |c, stop| async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(addr).await?;
        let message: Vec<u8> = (0..size).map(|i| (i + c) as u8).collect();
        let mut back = vec![0u8; size + 1];
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            socket.send(&message).await?;
            // A lost datagram is retried after 100 ms rather than ending the run.
            if let Ok(received) =
                tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut back)).await
            {
                anyhow::ensure!(back[..received?] == message[..], "datagram echo mismatch");
                samples.push(started.elapsed());
            }
        }
        anyhow::Ok(samples)
    })
    .await?;
    Ok(latencies(samples.concat(), time))
}

/// `parallel` loops each connect, echo 16 bytes and close, for `time`; connections per second.
pub async fn churn(addr: SocketAddr, parallel: usize, time: Duration) -> anyhow::Result<Measured> {
    let counts = clients_for(parallel, time, |_, stop| async move {
        let mut count = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            stream.write_all(b"0123456789abcdef").await?;
            let mut back = [0u8; 16];
            stream.read_exact(&mut back).await?;
            anyhow::ensure!(&back == b"0123456789abcdef", "churn echo mismatch");
            count += 1;
        }
        anyhow::Ok(count)
    })
    .await?;
    let rate = counts.iter().sum::<u64>() as f64 / time.as_secs_f64();
    Ok(Measured {
        rate,
        ..Measured::default()
    })
}
