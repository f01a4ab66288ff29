//! `StreamSocket`: a TCP connection, its control settings and its streams.

use super::writer::{BatchWriter, Queue, Sink};
use crate::bindings::types::{
    RoundTripTimeStatistics, SocketError, SocketErrorStatus, SocketProtectionLevel,
    SocketQualityOfService,
};
use crate::conv::{
    canonical, error, invalid_argument, invalid_operation, io_error, stream_failure,
};
use crate::ctx::SocketsCtx;
use crate::host_name::HostName;
use crate::resolve::{Transport, resolve};
use bytes::{Bytes, BytesMut};
use socket2::SockRef;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::{TcpSocket, TcpStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, StreamError, StreamResult};

/// `StreamSocketControl`: settings applied when the socket connects (or, for a listener's,
/// to every accepted socket).
#[derive(Clone, Debug)]
pub struct StreamControl {
    /// TCP_NODELAY; UWP's default is true.
    pub no_delay: bool,
    /// SO_KEEPALIVE.
    pub keep_alive: bool,
    /// SO_SNDBUF; 0 keeps the system's default (and its auto-tuning).
    pub outbound_buffer_size: u32,
    /// IP_TTL / IPV6_UNICAST_HOPS.
    pub hop_limit: u8,
    /// IP_TOS / SO_PRIORITY.
    pub quality_of_service: SocketQualityOfService,
    /// Stored for `serialize-connection-attempts`; attempts are always serial here.
    pub serialize_connection_attempts: bool,
}

impl Default for StreamControl {
    fn default() -> Self {
        Self {
            no_delay: true,
            keep_alive: false,
            outbound_buffer_size: 0,
            hop_limit: 128,
            quality_of_service: SocketQualityOfService::Normal,
            serialize_connection_attempts: false,
        }
    }
}

impl StreamControl {
    /// Applies the settings that must be set before connect or listen.
    pub fn apply_before(&self, socket: SockRef<'_>, addr: SocketAddr) -> io::Result<()> {
        socket.set_keepalive(self.keep_alive)?;
        if self.outbound_buffer_size > 0 {
            socket.set_send_buffer_size(self.outbound_buffer_size as usize)?;
        }
        super::apply_ip_options(socket, addr, self.hop_limit, self.quality_of_service)
    }

    /// Applies everything to an accepted or connected stream.
    pub fn apply_connected(&self, stream: &TcpStream, remote: SocketAddr) -> io::Result<()> {
        stream.set_nodelay(self.no_delay)?;
        self.apply_before(SockRef::from(stream), remote)
    }
}

/// Where a stream socket is in its life.
enum StreamState {
    /// Created; control settings may change.
    Unconnected,
    /// `connect` was called and has not finished, or failed.
    ConnectCalled,
    /// Connected; the streams are available.
    Connected(Connection),
    /// `close` was called: the write side is shut down.
    Closed(Connection),
}

/// A live connection and its shared output queue.
#[derive(Clone)]
pub struct Connection {
    /// The socket, shared with the streams.
    pub stream: Arc<TcpStream>,
    /// The local address.
    pub local: SocketAddr,
    /// The remote address.
    pub remote: SocketAddr,
    /// The output queue, shared with every output-stream handle.
    pub writer: BatchWriter<TcpSink>,
}

impl Connection {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        let local = canonical(stream.local_addr()?);
        let remote = canonical(stream.peer_addr()?);
        let stream = Arc::new(stream);
        let writer = BatchWriter::new(TcpSink {
            stream: stream.clone(),
            remote,
            writev_calls: AtomicU64::new(0),
        });
        Ok(Self {
            stream,
            local,
            remote,
            writer,
        })
    }
}

/// A TCP connection. Mirrors UWP `StreamSocket`.
pub struct StreamSocket {
    control: StreamControl,
    state: StreamState,
    remote_host_name: Option<HostName>,
    remote_service_name: String,
}

impl Default for StreamSocket {
    fn default() -> Self {
        Self {
            control: StreamControl::default(),
            state: StreamState::Unconnected,
            remote_host_name: None,
            remote_service_name: String::new(),
        }
    }
}

impl StreamSocket {
    /// A socket for a connection a listener accepted.
    pub fn accepted(connection: Connection, control: StreamControl) -> Self {
        Self {
            control,
            state: StreamState::Connected(connection),
            remote_host_name: None,
            remote_service_name: String::new(),
        }
    }

    /// The control settings.
    pub fn control(&self) -> &StreamControl {
        &self.control
    }

    /// Changes a control setting that UWP only allows before connect.
    pub fn set_control(
        &mut self,
        change: impl FnOnce(&mut StreamControl),
    ) -> Result<(), SocketError> {
        match self.state {
            StreamState::Unconnected => {
                change(&mut self.control);
                Ok(())
            }
            _ => Err(invalid_operation(
                "control settings cannot change after connect",
            )),
        }
    }

    /// Sets the send buffer size; as in UWP, it has no effect after connect.
    pub fn set_outbound_buffer_size(&mut self, size: u32) {
        if let StreamState::Unconnected = self.state {
            self.control.outbound_buffer_size = size;
        }
    }

    /// Marks the start of a connect; fails if one was already made.
    pub fn begin_connect(
        &mut self,
        host: HostName,
        service: &str,
    ) -> Result<StreamControl, SocketError> {
        match self.state {
            StreamState::Unconnected => {
                self.state = StreamState::ConnectCalled;
                self.remote_host_name = Some(host);
                self.remote_service_name = service.to_string();
                Ok(self.control.clone())
            }
            _ => Err(invalid_operation(
                "connect was already called on this socket",
            )),
        }
    }

    /// Records a successful connect.
    pub fn finish_connect(&mut self, connection: Connection) {
        self.state = StreamState::Connected(connection);
    }

    /// The connection, if connected (or closed after connecting).
    pub fn connection(&self) -> Option<&Connection> {
        match &self.state {
            StreamState::Connected(c) | StreamState::Closed(c) => Some(c),
            _ => None,
        }
    }

    /// The connection, or `invalid-operation` if not connected.
    pub fn require_connection(&self) -> Result<&Connection, SocketError> {
        match &self.state {
            StreamState::Connected(c) => Ok(c),
            StreamState::Closed(_) => Err(error(
                SocketErrorStatus::OperationAborted,
                "the socket is closed",
            )),
            _ => Err(invalid_operation("the socket is not connected")),
        }
    }

    /// Marks the socket closed; returns the connection to shut down, the first time.
    pub fn close(&mut self) -> Option<Connection> {
        match std::mem::replace(&mut self.state, StreamState::Unconnected) {
            StreamState::Connected(c) => {
                self.state = StreamState::Closed(c.clone());
                Some(c)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The host name passed to connect.
    pub fn remote_host_name(&self) -> Option<&HostName> {
        self.remote_host_name.as_ref()
    }

    /// The service name passed to connect.
    pub fn remote_service_name(&self) -> &str {
        &self.remote_service_name
    }

    /// The protection level; plain until TLS arrives.
    pub fn protection_level(&self) -> SocketProtectionLevel {
        SocketProtectionLevel::PlainSocket
    }

    /// TCP_INFO round-trip times; zeros when not connected.
    pub fn round_trip_time_statistics(&self) -> RoundTripTimeStatistics {
        let zero = RoundTripTimeStatistics {
            variance: 0,
            max: 0,
            min: 0,
            sum: 0,
        };
        let Some(connection) = self.connection() else {
            return zero;
        };
        match crate::sys::tcp_rtt(connection.stream.as_fd()) {
            Ok((rtt, rttvar, min)) => RoundTripTimeStatistics {
                variance: rttvar,
                max: rtt,
                min,
                sum: rtt,
            },
            Err(_) => zero,
        }
    }

    /// No-delay as the kernel has it when connected, as set otherwise.
    pub fn no_delay(&self) -> bool {
        match self.connection() {
            Some(c) => c.stream.nodelay().unwrap_or(self.control.no_delay),
            None => self.control.no_delay,
        }
    }

    /// Keep-alive as the kernel has it when connected, as set otherwise.
    pub fn keep_alive(&self) -> bool {
        match self.connection() {
            Some(c) => SockRef::from(&*c.stream)
                .keepalive()
                .unwrap_or(self.control.keep_alive),
            None => self.control.keep_alive,
        }
    }

    /// The send buffer size the kernel has when connected, as set otherwise.
    pub fn outbound_buffer_size(&self) -> u32 {
        match self.connection() {
            Some(c) => super::send_buffer_size(SockRef::from(&*c.stream)),
            None => self.control.outbound_buffer_size,
        }
    }

    /// The hop limit the kernel has when connected, as set otherwise.
    pub fn hop_limit(&self) -> u8 {
        let Some(c) = self.connection() else {
            return self.control.hop_limit;
        };
        let socket = SockRef::from(&*c.stream);
        let hops = if c.local.is_ipv4() && !is_v6_socket(&socket) {
            socket.ttl_v4()
        } else {
            socket.unicast_hops_v6()
        };
        hops.ok()
            .and_then(|h| u8::try_from(h).ok())
            .unwrap_or(self.control.hop_limit)
    }
}

fn is_v6_socket(socket: &SockRef<'_>) -> bool {
    socket.domain().is_ok_and(|d| d == socket2::Domain::IPV6)
}

/// Resolves `host` and connects to its addresses in order, checking each against the policy.
/// Returns the last address's error when none connects.
pub async fn connect(
    ctx: &SocketsCtx,
    control: &StreamControl,
    host: &HostName,
    service: &str,
    local: Option<SocketAddr>,
) -> Result<Connection, SocketError> {
    let port = crate::resolve::service_port(service, Transport::Tcp, false)?;
    let addrs = resolve(host, port).await?;
    let name = (host.ip().is_none()).then(|| host.canonical_name());
    let mut last_error = None;
    for addr in addrs {
        // A specific local address fixes the family; "any" follows the remote address.
        let local = match local {
            Some(l) if l.ip().is_unspecified() => {
                Some(SocketAddr::new(unspecified_like(addr), l.port()))
            }
            Some(l) if l.is_ipv4() != addr.is_ipv4() => continue,
            other => other,
        };
        if let Err(e) = ctx.check_connect(name, addr, Transport::Tcp) {
            last_error = Some(e);
            continue;
        }
        match connect_one(control, addr, local).await {
            Ok(stream) => {
                return Connection::new(stream)
                    .map_err(|e| io_error(&e, format!("connect to {addr}")));
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connect attempt failed");
                last_error = Some(io_error(&e, format!("connect to {addr}")));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        error(
            SocketErrorStatus::NoAddressesFound,
            format!("{}: no address to connect to", host.raw_name()),
        )
    }))
}

fn unspecified_like(addr: SocketAddr) -> std::net::IpAddr {
    match addr {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

async fn connect_one(
    control: &StreamControl,
    addr: SocketAddr,
    local: Option<SocketAddr>,
) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    control.apply_before(SockRef::from(&socket), addr)?;
    if let Some(local) = local {
        socket.set_reuseaddr(true)?;
        socket.bind(local)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(control.no_delay)?;
    Ok(stream)
}

/// Checks a local endpoint for `connect-endpoint-pair` and resolves it to an address.
pub fn local_endpoint(
    ctx: &SocketsCtx,
    host: Option<&str>,
    service: &str,
    transport: Transport,
) -> Result<SocketAddr, SocketError> {
    let port = crate::resolve::service_port(service, transport, true)?;
    let ip = match host {
        Some(host) => crate::resolve::local_ip(&HostName::parse(host)?)?,
        None => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let addr = SocketAddr::new(ip, port);
    if port != 0 || !ip.is_unspecified() {
        ctx.policy().check_bind(addr)?;
    }
    Ok(addr)
}

/// Rejects protection levels until TLS arrives.
pub fn require_plain(level: SocketProtectionLevel) -> Result<(), SocketError> {
    match level {
        SocketProtectionLevel::PlainSocket => Ok(()),
        other => Err(error(
            SocketErrorStatus::NotSupported,
            format!(
                "protection level {other:?} is not supported yet: this host speaks plain TCP only"
            ),
        )),
    }
}

/// Makes sure an endpoint-pair's remote fields are present.
pub fn require_remote(host: &str, service: &str) -> Result<HostName, SocketError> {
    if service.is_empty() {
        return Err(invalid_argument("the remote service name is empty"));
    }
    HostName::parse(host)
}

/// Sends a TCP queue with vectored writes.
pub struct TcpSink {
    stream: Arc<TcpStream>,
    remote: SocketAddr,
    /// How many `writev` calls were made: batching is only worth it if this stays small.
    writev_calls: AtomicU64,
}

/// At most this many buffers go into one `writev` (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;

#[async_trait::async_trait]
impl Sink for TcpSink {
    fn try_send(&self, queue: &mut Queue) -> io::Result<()> {
        while queue.len > 0 {
            let slices: Vec<IoSlice<'_>> = queue
                .buffers
                .iter()
                .take(MAX_IOVECS)
                .map(|b| IoSlice::new(b))
                .collect();
            self.writev_calls.fetch_add(1, Ordering::Relaxed);
            let written = self.stream.try_write_vectored(&slices)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            queue.advance(written);
        }
        Ok(())
    }

    async fn writable(&self) -> io::Result<()> {
        self.stream.writable().await
    }

    fn max_write(&self) -> usize {
        usize::MAX
    }

    fn describe(&self) -> String {
        format!("send to {}", self.remote)
    }
}

impl TcpSink {
    /// How many `writev` system calls the connection has made.
    pub fn writev_calls(&self) -> u64 {
        self.writev_calls.load(Ordering::Relaxed)
    }

    /// Shuts the write side down (FIN).
    pub fn shutdown_write(&self) -> io::Result<()> {
        SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write)
    }
}

/// The input side of a stream socket.
pub struct TcpInput {
    stream: Arc<TcpStream>,
    remote: SocketAddr,
    closed: bool,
}

impl TcpInput {
    /// Reads from the connection's socket.
    pub fn new(connection: &Connection) -> Self {
        Self {
            stream: connection.stream.clone(),
            remote: connection.remote,
            closed: false,
        }
    }
}

/// The most one read returns; guests usually ask for 64 KiB.
const MAX_READ: usize = 64 * 1024;

#[async_trait::async_trait]
impl Pollable for TcpInput {
    async fn ready(&mut self) {
        if !self.closed {
            let _ = self.stream.readable().await;
        }
    }
}

impl InputStream for TcpInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        // Not zero-filled: try_read_buf writes into the spare capacity.
        let mut buf = BytesMut::with_capacity(size.min(MAX_READ));
        match self.stream.try_read_buf(&mut buf) {
            Ok(0) if size > 0 => {
                self.closed = true;
                Err(StreamError::Closed)
            }
            Ok(_) => Ok(buf.freeze()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            Err(e) => {
                self.closed = true;
                Err(stream_failure(&e, format!("receive from {}", self.remote)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use wasmtime_wasi_io::streams::OutputStream;

    /// The seed's batched send on a real loopback connection: 1,000 writes and one flush reach
    /// the kernel as a handful of `writev` calls, not 1,000, and arrive whole and in order.
    #[tokio::test]
    async fn a_thousand_writes_and_one_flush_are_few_writev_calls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let connection = Connection::new(client).unwrap();
        let mut output = connection.writer.clone();
        let expected: Vec<u8> = (0..64_000u32).map(|i| (i / 64) as u8).collect();
        for chunk in expected.chunks(64) {
            assert!(output.check_write().unwrap() >= chunk.len());
            output.write(Bytes::copy_from_slice(chunk)).unwrap();
        }
        output.flush().unwrap();
        connection.writer.wait_flushed().await.unwrap();
        let calls = connection.writer.sink().writev_calls();
        assert!(calls <= 4, "1,000 writes took {calls} writev calls");
        let mut received = vec![0; expected.len()];
        server.read_exact(&mut received).await.unwrap();
        assert!(received == expected);
    }
}
