//! The byte path of a TCP connection, plain or TLS: reads for the input stream, vectored
//! writes for the output queue, and the TLS handshake that switches a link to TLS (at connect,
//! accept, or `upgrade-to-ssl`). TLS runs on rustls's buffered connection over the same
//! nonblocking socket, so TLS streams keep the same batching: a flush of many writes becomes
//! many records in one `writev`.

use super::writer::{Queue, Sink};
use crate::bindings::types::{ChainValidationResult, SocketError, SocketProtectionLevel};
use crate::conv::{io_error, stream_failure};
use bytes::{Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, StreamError, StreamResult};

/// A connection's socket and, once secured, its TLS session.
pub struct Link {
    stream: TcpStream,
    remote: SocketAddr,
    tls: OnceLock<TlsSession>,
    /// How many `writev` calls were made: batching is only worth it if this stays small.
    writev_calls: AtomicU64,
    /// When bytes last moved, in milliseconds since `EPOCH`: for the handlers' idle timeout.
    last_activity: AtomicU64,
}

/// The origin of `last_activity` timestamps.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// A completed TLS handshake.
pub struct TlsSession {
    conn: Mutex<rustls::Connection>,
    /// The negotiated version as a protection level (`tls12` or `tls13`).
    pub level: SocketProtectionLevel,
    /// The peer's certificate chain, end entity first.
    pub peer_chain: Vec<CertificateDer<'static>>,
    /// Certificate errors found and ignored (client side).
    pub errors: Vec<ChainValidationResult>,
    /// The ALPN protocol agreed on.
    pub alpn: Option<String>,
    /// Whether this end is the TLS client.
    pub is_client: bool,
}

impl TlsSession {
    fn lock(&self) -> MutexGuard<'_, rustls::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `Read` over the nonblocking socket: `WouldBlock` when nothing is there.
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `Write` over the nonblocking socket, vectored, counting calls.
struct TryWrite<'a>(&'a Link);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.writev_calls.fetch_add(1, Ordering::Relaxed);
        let written = self.0.stream.try_write_vectored(bufs)?;
        self.0.touch();
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Link {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream, remote: SocketAddr) -> Self {
        Self {
            stream,
            remote,
            tls: OnceLock::new(),
            writev_calls: AtomicU64::new(0),
            last_activity: AtomicU64::new(now_ms()),
        }
    }

    /// Notes that bytes moved.
    fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since bytes last moved either way.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_activity.load(Ordering::Relaxed)))
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The TLS session, once secured.
    pub fn tls(&self) -> Option<&TlsSession> {
        self.tls.get()
    }

    /// How many `writev` system calls the connection has made.
    pub fn writev_calls(&self) -> u64 {
        self.writev_calls.load(Ordering::Relaxed)
    }

    /// Runs a TLS handshake on the link and switches it to TLS. Nothing else may use the
    /// socket meanwhile: the caller holds the guest's call and has flushed the output queue.
    pub async fn secure(
        &self,
        mut conn: rustls::Connection,
        errors: impl FnOnce() -> Vec<ChainValidationResult>,
    ) -> Result<(), SocketError> {
        if self.tls.get().is_some() {
            return Err(crate::conv::invalid_operation(
                "the connection is already secured",
            ));
        }
        let failed = |e: rustls::Error| crate::tls::handshake_error(&e, self.remote);
        while conn.is_handshaking() {
            while conn.wants_write() {
                match conn.write_tls(&mut TryWrite(self)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.wait(self.stream.writable()).await?
                    }
                    Err(e) => {
                        return Err(io_error(&e, format!("TLS handshake with {}", self.remote)));
                    }
                }
            }
            if !conn.is_handshaking() {
                break;
            }
            match conn.read_tls(&mut TryRead(&self.stream)) {
                Ok(0) => {
                    return Err(io_error(
                        &io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the peer closed the connection during the handshake",
                        ),
                        format!("TLS handshake with {}", self.remote),
                    ));
                }
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        // Tell the peer why (an alert), best effort.
                        let _ = conn.write_tls(&mut TryWrite(self));
                        return Err(failed(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(self.stream.readable()).await?
                }
                Err(e) => return Err(io_error(&e, format!("TLS handshake with {}", self.remote))),
            }
        }
        // The client's last flight (Finished) may still be queued.
        while conn.wants_write() {
            match conn.write_tls(&mut TryWrite(self)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(self.stream.writable()).await?
                }
                Err(e) => return Err(io_error(&e, format!("TLS handshake with {}", self.remote))),
            }
        }
        let level = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => SocketProtectionLevel::Tls13,
            _ => SocketProtectionLevel::Tls12,
        };
        let session = TlsSession {
            level,
            peer_chain: conn
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default(),
            errors: errors(),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            is_client: matches!(conn, rustls::Connection::Client(_)),
            conn: Mutex::new(conn),
        };
        let _ = self.tls.set(session);
        Ok(())
    }

    async fn wait(&self, ready: impl Future<Output = io::Result<()>>) -> Result<(), SocketError> {
        ready
            .await
            .map_err(|e| io_error(&e, format!("TLS handshake with {}", self.remote)))
    }

    /// Sends TLS close_notify (for a secured link) and waits until it is written.
    pub async fn send_close_notify(&self) -> Result<(), SocketError> {
        let Some(tls) = self.tls.get() else {
            return Ok(());
        };
        tls.lock().send_close_notify();
        loop {
            let result = {
                let mut conn = tls.lock();
                if !conn.wants_write() {
                    return Ok(());
                }
                conn.write_tls(&mut TryWrite(self))
            };
            match result {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stream
                        .writable()
                        .await
                        .map_err(|e| io_error(&e, "send close_notify"))?;
                }
                Err(e) => return Err(io_error(&e, "send close_notify")),
            }
        }
    }

    /// Shuts the write side down (FIN).
    pub fn shutdown_write(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write)
    }
}

/// Sends a TCP queue with vectored writes, through TLS once the link is secured.
pub struct TcpSink {
    link: Arc<Link>,
}

impl TcpSink {
    /// A sink on the link.
    pub fn new(link: Arc<Link>) -> Self {
        Self { link }
    }
}

/// At most this many buffers go into one `writev` (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;

#[async_trait::async_trait]
impl Sink for TcpSink {
    fn try_send(&self, queue: &mut Queue) -> io::Result<()> {
        let Some(tls) = self.link.tls.get() else {
            while queue.len > 0 {
                let slices: Vec<IoSlice<'_>> = queue
                    .buffers
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|b| IoSlice::new(b))
                    .collect();
                let written = TryWrite(&self.link).write_vectored(&slices)?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                queue.advance(written);
            }
            return Ok(());
        };
        let mut conn = tls.lock();
        loop {
            // Encrypt as much as rustls buffers, then send its records in one writev.
            while let Some(front) = queue.buffers.front() {
                let accepted = conn.writer().write(front)?;
                if accepted == 0 {
                    break;
                }
                queue.advance(accepted);
            }
            while conn.wants_write() {
                conn.write_tls(&mut TryWrite(&self.link))?;
            }
            if queue.len == 0 {
                return Ok(());
            }
        }
    }

    async fn writable(&self) -> io::Result<()> {
        self.link.stream.writable().await
    }

    fn max_write(&self) -> usize {
        usize::MAX
    }

    fn describe(&self) -> String {
        format!("send to {}", self.link.remote)
    }
}

/// The input side of a stream socket, plain or TLS.
pub struct TcpInput {
    link: Arc<Link>,
    closed: bool,
    /// Decrypted bytes land here first (rustls wants an initialized buffer); zero-filled
    /// once, reused by every TLS read.
    scratch: Vec<u8>,
}

impl TcpInput {
    /// Reads from the link.
    pub fn new(link: Arc<Link>) -> Self {
        Self {
            link,
            closed: false,
            scratch: Vec::new(),
        }
    }

    fn fail(&mut self, e: &io::Error) -> StreamError {
        self.closed = true;
        stream_failure(e, format!("receive from {}", self.link.remote))
    }

    fn read_tls(&mut self, tls: &TlsSession, size: usize) -> StreamResult<Bytes> {
        let mut conn = tls.lock();
        let want = size.min(MAX_READ);
        if self.scratch.len() < want {
            self.scratch.resize(want, 0);
        }
        loop {
            match conn.reader().read(&mut self.scratch[..want]) {
                Ok(0) if size > 0 => {
                    self.closed = true;
                    return Err(StreamError::Closed);
                }
                Ok(n) => {
                    self.link.touch();
                    return Ok(Bytes::copy_from_slice(&self.scratch[..n]));
                }
                // The peer closed without close_notify: the end of the stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.closed = true;
                    return Err(StreamError::Closed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.fail(&e)),
            }
            match conn.read_tls(&mut TryRead(&self.link.stream)) {
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        self.closed = true;
                        let error = crate::tls::handshake_error(&e, self.link.remote);
                        return Err(StreamError::LastOperationFailed(wasmtime::Error::new(
                            crate::conv::StreamFailure(error),
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Bytes::new()),
                Err(e) => return Err(self.fail(&e)),
            }
        }
    }
}

/// The most one read returns; guests usually ask for 64 KiB.
const MAX_READ: usize = 64 * 1024;

#[async_trait::async_trait]
impl Pollable for TcpInput {
    async fn ready(&mut self) {
        if self.closed {
            return;
        }
        if let Some(tls) = self.link.tls.get() {
            // Decrypted bytes may already wait in rustls.
            let mut conn = tls.lock();
            if let Ok(state) = conn.process_new_packets()
                && (state.plaintext_bytes_to_read() > 0 || state.peer_has_closed())
            {
                return;
            }
        }
        let _ = self.link.stream.readable().await;
    }
}

impl InputStream for TcpInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        let link = self.link.clone();
        if let Some(tls) = link.tls.get() {
            return self.read_tls(tls, size);
        }
        // Not zero-filled: try_read_buf writes into the spare capacity.
        let mut buf = BytesMut::with_capacity(size.min(MAX_READ));
        match self.link.stream.try_read_buf(&mut buf) {
            Ok(0) if size > 0 => {
                self.closed = true;
                Err(StreamError::Closed)
            }
            Ok(_) => {
                self.link.touch();
                Ok(buf.freeze())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => Err(self.fail(&e)),
        }
    }
}
