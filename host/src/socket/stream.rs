//! `StreamSocket`: a TCP connection, its control settings and its streams.

use super::link::{Link, TcpSink, TlsSession};
use super::writer::BatchWriter;
use crate::bindings::types::{
    RoundTripTimeStatistics, SocketError, SocketErrorStatus, SocketProtectionLevel,
    SocketQualityOfService,
};
use crate::conv::{canonical, error, invalid_argument, invalid_operation, io_error};
use crate::ctx::SocketsCtx;
use crate::host_name::HostName;
use crate::resolve::{Transport, resolve};
use crate::tls::{CertificateErrors, ClientTls, TlsConfig};
use socket2::SockRef;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

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
    /// The socket (and TLS session), shared with the streams.
    pub link: Arc<Link>,
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
        let link = Arc::new(Link::new(stream, remote));
        let writer = BatchWriter::new(TcpSink::new(link.clone()));
        Ok(Self {
            link,
            local,
            remote,
            writer,
        })
    }
}

/// A TCP connection. Mirrors UWP `StreamSocket`.
pub struct StreamSocket {
    control: StreamControl,
    /// The TLS control settings (`ClientCertificate`, `IgnorableServerCertificateErrors`, …).
    tls: ClientTls,
    /// Accepted by a listener: such sockets cannot `upgrade-to-ssl`.
    accepted: bool,
    /// `EnableTransferOwnership` was called.
    transfer_enabled: bool,
    state: StreamState,
    remote_host_name: Option<HostName>,
    remote_service_name: String,
}

impl Default for StreamSocket {
    fn default() -> Self {
        Self {
            control: StreamControl::default(),
            tls: ClientTls::default(),
            accepted: false,
            transfer_enabled: false,
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
            tls: ClientTls::default(),
            accepted: true,
            transfer_enabled: false,
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

    /// The TLS control settings.
    pub fn tls(&self) -> &ClientTls {
        &self.tls
    }

    /// Changes a TLS setting; allowed until a TLS handshake starts.
    pub fn set_tls(&mut self, change: impl FnOnce(&mut ClientTls)) -> Result<(), SocketError> {
        let secured = self.connection().is_some_and(|c| c.link.tls().is_some());
        if secured || matches!(self.state, StreamState::ConnectCalled) {
            return Err(invalid_operation(
                "TLS settings cannot change once the handshake started",
            ));
        }
        change(&mut self.tls);
        Ok(())
    }

    /// Allows `transfer-ownership`.
    pub fn enable_transfer(&mut self) {
        self.transfer_enabled = true;
    }

    /// Moves the socket out for the broker, leaving an unusable one behind.
    pub fn take_for_transfer(&mut self) -> Result<Self, SocketError> {
        if !self.transfer_enabled {
            return Err(invalid_operation(
                "call enable-transfer-ownership before transfer-ownership",
            ));
        }
        let connection = self.require_connection()?;
        if connection.writer.has_pending() {
            return Err(invalid_operation(
                "the socket has unsent writes; call cancel-io first",
            ));
        }
        let left = Self {
            state: StreamState::ConnectCalled,
            ..Self::default()
        };
        Ok(std::mem::replace(self, left))
    }

    /// Waits until data or the end of the stream arrives; true if the peer closed.
    pub async fn peer_closed(&self) -> bool {
        let Some(connection) = self.connection() else {
            return true;
        };
        let stream = connection.link.stream();
        if connection.link.tls().is_some() {
            let _ = stream.readable().await;
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(stream.peek(&mut byte).await, Ok(0) | Err(_))
    }

    /// The connection to secure with `upgrade-to-ssl`, if the socket may be upgraded.
    pub fn upgradable(&self) -> Result<Connection, SocketError> {
        let connection = self.require_connection()?;
        if self.accepted {
            return Err(invalid_operation(
                "a socket accepted by a listener cannot be upgraded to TLS",
            ));
        }
        if connection.link.tls().is_some() {
            return Err(invalid_operation("the connection is already secured"));
        }
        Ok(connection.clone())
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

    /// The negotiated protection level: `plain-socket`, `tls12` or `tls13`.
    pub fn protection_level(&self) -> SocketProtectionLevel {
        self.tls_session()
            .map_or(SocketProtectionLevel::PlainSocket, |tls| tls.level)
    }

    /// The TLS session, once secured.
    pub fn tls_session(&self) -> Option<&TlsSession> {
        self.connection().and_then(|c| c.link.tls())
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
        match crate::sys::tcp_rtt(connection.link.stream().as_fd()) {
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
            Some(c) => c.link.stream().nodelay().unwrap_or(self.control.no_delay),
            None => self.control.no_delay,
        }
    }

    /// Keep-alive as the kernel has it when connected, as set otherwise.
    pub fn keep_alive(&self) -> bool {
        match self.connection() {
            Some(c) => SockRef::from(c.link.stream())
                .keepalive()
                .unwrap_or(self.control.keep_alive),
            None => self.control.keep_alive,
        }
    }

    /// The send buffer size the kernel has when connected, as set otherwise.
    pub fn outbound_buffer_size(&self) -> u32 {
        match self.connection() {
            Some(c) => super::send_buffer_size(SockRef::from(c.link.stream())),
            None => self.control.outbound_buffer_size,
        }
    }

    /// The hop limit the kernel has when connected, as set otherwise.
    pub fn hop_limit(&self) -> u8 {
        let Some(c) = self.connection() else {
            return self.control.hop_limit;
        };
        let socket = SockRef::from(c.link.stream());
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

/// How long a TLS handshake may take: UWP's may never time out; a host should not wait forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Secures a connection as a TLS client, validating the server's certificate for `host`.
pub async fn secure_client(
    connection: &Connection,
    config: &TlsConfig,
    settings: &ClientTls,
    host: &HostName,
) -> Result<(), SocketError> {
    let recorder = Arc::new(CertificateErrors::default());
    let client_config = config.client_config(settings, recorder.clone())?;
    let alpn = settings
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let name = crate::tls::server_name(host)?;
    let conn = rustls::ClientConnection::new_with_alpn(client_config, name, alpn)
        .map_err(|e| crate::tls::handshake_error(&e, connection.remote))?;
    let handshake = connection.link.secure(conn.into(), || recorder.take());
    with_handshake_timeout(connection, handshake).await
}

/// Secures an accepted connection as a TLS server.
pub async fn secure_server(
    connection: &Connection,
    config: Arc<rustls::ServerConfig>,
) -> Result<(), SocketError> {
    let conn = rustls::ServerConnection::new(config)
        .map_err(|e| crate::tls::handshake_error(&e, connection.remote))?;
    with_handshake_timeout(connection, connection.link.secure(conn.into(), Vec::new)).await
}

async fn with_handshake_timeout(
    connection: &Connection,
    handshake: impl Future<Output = Result<(), SocketError>>,
) -> Result<(), SocketError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(error(
                SocketErrorStatus::ConnectionTimedOut,
                format!(
                    "TLS handshake with {} took longer than {HANDSHAKE_TIMEOUT:?}",
                    connection.remote
                ),
            ))
        })
}

/// Makes sure an endpoint-pair's remote fields are present.
pub fn require_remote(host: &str, service: &str) -> Result<HostName, SocketError> {
    if service.is_empty() {
        return Err(invalid_argument("the remote service name is empty"));
    }
    HostName::parse(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
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
        let calls = connection.link.writev_calls();
        assert!(calls <= 4, "1,000 writes took {calls} writev calls");
        let mut received = vec![0; expected.len()];
        server.read_exact(&mut received).await.unwrap();
        assert!(received == expected);
    }
}
