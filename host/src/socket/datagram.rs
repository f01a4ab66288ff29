//! `DatagramSocket`: a UDP socket with UWP's control settings, output streams where each
//! write is one datagram, and delivery of received datagrams to `receive` or to the app's
//! `message-received` handler.

use super::writer::{BatchWriter, Queue, Sink};
use crate::bindings::types::{SocketError, SocketErrorStatus, SocketQualityOfService};
use crate::conv::{canonical, error, invalid_argument, invalid_operation, io_error};
use crate::ctx::{EventSender, PortRegistration, SocketEvent, SocketsCtx};
use crate::host_name::HostName;
use crate::resolve::{Transport, resolve, service_port};
use crate::sys::MAX_BATCH;
use socket2::SockRef;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use wasmtime_wasi_io::poll::Pollable;

/// The largest UDP payload the wire format can carry; the kernel refuses more than 65,507
/// bytes over IPv4.
pub const MAX_DATAGRAM: usize = u16::MAX as usize;

/// `DatagramSocketControl`.
#[derive(Clone, Debug)]
pub struct DatagramControl {
    /// IP_TOS / SO_PRIORITY.
    pub quality_of_service: SocketQualityOfService,
    /// IP_TTL / IPV6_UNICAST_HOPS; may change at any time.
    pub hop_limit: u8,
    /// SO_RCVBUF; 0 keeps the system's default.
    pub inbound_buffer_size: u32,
    /// IP_MTU_DISCOVER = DO.
    pub dont_fragment: bool,
    /// SO_REUSEADDR + SO_REUSEPORT.
    pub multicast_only: bool,
}

impl Default for DatagramControl {
    fn default() -> Self {
        Self {
            quality_of_service: SocketQualityOfService::Normal,
            hop_limit: 128,
            inbound_buffer_size: 0,
            dont_fragment: false,
            multicast_only: false,
        }
    }
}

/// A bound UDP socket, shared by the resource, its output streams and handler instances.
pub struct SharedUdp {
    /// The socket.
    pub socket: UdpSocket,
    /// The local address it is bound to.
    pub local: SocketAddr,
    /// Bound to all interfaces, so each datagram's own destination address is asked of the
    /// kernel (IP_PKTINFO) to tell the handler which local address it reached. Sockets bound
    /// to one address keep `recvfrom`: `recvmsg` with its control buffer costs more.
    packet_info: bool,
    _port: PortRegistration,
}

impl SharedUdp {
    /// The address to send to for `dest`: IPv4 destinations of an IPv6 socket are mapped.
    fn target(&self, dest: SocketAddr) -> Result<SocketAddr, SocketError> {
        match (self.local, dest) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => Ok(SocketAddr::new(
                IpAddr::V6(v4.ip().to_ipv6_mapped()),
                v4.port(),
            )),
            (SocketAddr::V4(_), SocketAddr::V6(_)) => Err(error(
                SocketErrorStatus::AddressFamilyNotSupported,
                format!("cannot send to {dest} from the IPv4 socket {}", self.local),
            )),
            _ => Ok(dest),
        }
    }

    /// Receives one datagram into `buf`.
    async fn receive(&self, buf: &mut [u8]) -> Result<DatagramMessage, SocketError> {
        let received = match self.packet_info {
            true => {
                let fd = self.socket.as_fd();
                let receive = || crate::sys::recv_with_destination(fd, buf);
                self.socket.async_io(Interest::READABLE, receive).await
            }
            false => self
                .socket
                .recv_from(buf)
                .await
                .map(|(n, from)| (n, from, None)),
        };
        self.message(buf, received)
    }

    /// Receives one datagram into `buf` if one is queued; `None` if none is.
    pub(crate) fn try_receive(
        &self,
        buf: &mut [u8],
    ) -> Option<Result<DatagramMessage, SocketError>> {
        let received = match self.packet_info {
            true => {
                let fd = self.socket.as_fd();
                let receive = || crate::sys::recv_with_destination(fd, buf);
                self.socket.try_io(Interest::READABLE, receive)
            }
            false => self
                .socket
                .try_recv_from(buf)
                .map(|(n, from)| (n, from, None)),
        };
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            received => Some(self.message(buf, received)),
        }
    }

    fn message(
        &self,
        buf: &[u8],
        received: io::Result<(usize, SocketAddr, Option<IpAddr>)>,
    ) -> Result<DatagramMessage, SocketError> {
        let (n, remote, to) =
            received.map_err(|e| io_error(&e, format!("receive on {}", self.local)))?;
        Ok(DatagramMessage {
            remote: canonical(remote),
            local: to.unwrap_or(self.local.ip()).to_canonical(),
            data: buf[..n].to_vec(),
        })
    }
}

/// One received datagram.
pub struct DatagramMessage {
    /// The sender.
    pub remote: SocketAddr,
    /// The local address of the receiving socket.
    pub local: IpAddr,
    /// The payload.
    pub data: Vec<u8>,
}

/// Where a datagram socket is in its life.
enum DatagramState {
    /// Created; control settings may change.
    Unbound,
    /// Bound, by a bind or implicitly.
    Bound(Bound),
    /// Closed by `close`.
    Closed,
}

struct Bound {
    shared: Arc<SharedUdp>,
    /// The peer of `connect`, which filters what is received.
    remote: Option<SocketAddr>,
    /// The output stream to the connected peer, shared by its handles.
    connected_writer: Option<BatchWriter<UdpSink>>,
    /// Set once datagrams go to the `message-received` handler.
    delivery: Option<Delivering>,
}

/// A socket's delivery of datagrams to the app's `message-received` handler, shared by the
/// handle that enabled it and the handles the handlers are given: all are the same socket,
/// as UWP's `sender` is.
pub struct Delivery {
    stop: watch::Sender<bool>,
}

impl Delivery {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            stop: watch::Sender::new(false),
        })
    }

    /// Ends the delivery: the app stops receiving the socket's datagrams.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Returns once the delivery has been stopped.
    pub async fn stopped(&self) {
        let mut stopped = self.stop.subscribe();
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

/// A handle's part in a delivery.
struct Delivering {
    delivery: Arc<Delivery>,
    /// The handle that enabled delivery: closing or dropping it stops delivery. A handler's
    /// handle may stop it by `cancel-io` or `close`, but dropping one, as every handler does,
    /// does not.
    owner: bool,
}

impl Drop for Delivering {
    fn drop(&mut self) {
        if self.owner {
            self.delivery.stop();
        }
    }
}

/// A UDP socket. Mirrors UWP `DatagramSocket`.
pub struct DatagramSocket {
    control: DatagramControl,
    state: DatagramState,
    /// Reused for every `receive`, so a datagram costs no 64 KiB allocation.
    receive_buffer: Vec<u8>,
    /// `EnableTransferOwnership` was called.
    transfer_enabled: bool,
}

impl Default for DatagramSocket {
    fn default() -> Self {
        Self {
            control: DatagramControl::default(),
            state: DatagramState::Unbound,
            receive_buffer: Vec::new(),
            transfer_enabled: false,
        }
    }
}

impl DatagramSocket {
    /// The handle a `message-received` handler is given on the socket that delivers.
    pub fn delivering(shared: Arc<SharedUdp>, delivery: Arc<Delivery>) -> Self {
        Self {
            control: DatagramControl::default(),
            state: DatagramState::Bound(Bound {
                shared,
                remote: None,
                connected_writer: None,
                delivery: Some(Delivering {
                    delivery,
                    owner: false,
                }),
            }),
            receive_buffer: Vec::new(),
            transfer_enabled: false,
        }
    }

    /// The control settings.
    pub fn control(&self) -> &DatagramControl {
        &self.control
    }

    /// Changes a control setting; only allowed before bind.
    pub fn set_control(
        &mut self,
        change: impl FnOnce(&mut DatagramControl),
    ) -> Result<(), SocketError> {
        match self.state {
            DatagramState::Unbound => {
                change(&mut self.control);
                Ok(())
            }
            _ => Err(invalid_operation(
                "datagram control settings cannot change after bind",
            )),
        }
    }

    /// Sets the hop limit, now on the socket too if it is bound.
    pub fn set_hop_limit(&mut self, hops: u8) -> Result<(), SocketError> {
        if hops == 0 {
            return Err(invalid_argument("the hop limit must be at least 1"));
        }
        self.control.hop_limit = hops;
        if let DatagramState::Bound(b) = &self.state {
            let socket = SockRef::from(&b.shared.socket);
            let result = if b.shared.local.is_ipv4() {
                socket.set_ttl_v4(u32::from(hops))
            } else {
                socket.set_unicast_hops_v6(u32::from(hops))
            };
            result.map_err(|e| io_error(&e, "set the hop limit"))?;
        }
        Ok(())
    }

    /// Binds `addr`; fails if already bound.
    pub fn bind(&mut self, ctx: &SocketsCtx, addr: SocketAddr) -> Result<(), SocketError> {
        if !matches!(self.state, DatagramState::Unbound) {
            return Err(invalid_operation("the socket is already bound"));
        }
        ctx.policy().check_bind(addr)?;
        self.bind_unchecked(ctx, addr)
    }

    fn bind_unchecked(&mut self, ctx: &SocketsCtx, addr: SocketAddr) -> Result<(), SocketError> {
        let control = &self.control;
        let (socket, local) = super::bind_socket(
            addr,
            socket2::Type::DGRAM,
            control.multicast_only,
            |socket, addr| {
                if control.inbound_buffer_size > 0 {
                    socket.set_recv_buffer_size(control.inbound_buffer_size as usize)?;
                }
                if control.dont_fragment {
                    crate::sys::set_dont_fragment(socket.as_fd(), addr.is_ipv6(), true)?;
                }
                if addr.ip().is_unspecified() {
                    crate::sys::enable_packet_info(socket.as_fd(), addr.is_ipv6())?;
                }
                super::apply_ip_options(
                    socket.into(),
                    addr,
                    control.hop_limit,
                    control.quality_of_service,
                )
            },
        )
        .map_err(|e| io_error(&e, format!("bind {addr}")))?;
        let socket =
            UdpSocket::from_std(socket.into()).map_err(|e| io_error(&e, format!("bind {addr}")))?;
        tracing::debug!(%local, "datagram socket bound");
        self.state = DatagramState::Bound(Bound {
            shared: Arc::new(SharedUdp {
                socket,
                local,
                packet_info: addr.ip().is_unspecified(),
                _port: ctx.ports().register(ctx.app(), Transport::Udp, local),
            }),
            remote: None,
            connected_writer: None,
            delivery: None,
        });
        Ok(())
    }

    /// The bound state, binding an ephemeral port of `dest`'s family first if unbound.
    fn bound_for(&mut self, ctx: &SocketsCtx, dest: SocketAddr) -> Result<&mut Bound, SocketError> {
        if let DatagramState::Unbound = self.state {
            let any: IpAddr = if dest.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            self.bind_unchecked(ctx, SocketAddr::new(any, 0))?;
        }
        self.bound()
    }

    fn bound(&mut self) -> Result<&mut Bound, SocketError> {
        match &mut self.state {
            DatagramState::Bound(b) => Ok(b),
            DatagramState::Unbound => Err(invalid_operation("the socket is not bound")),
            DatagramState::Closed => Err(error(
                SocketErrorStatus::OperationAborted,
                "the socket is closed",
            )),
        }
    }

    /// Connects to the first allowed address of `host`, filtering what is received.
    pub async fn connect(
        &mut self,
        ctx: &SocketsCtx,
        host: &HostName,
        service: &str,
    ) -> Result<(), SocketError> {
        let dest = destination(ctx, host, service).await?;
        if dest.ip().is_multicast() {
            return Err(error(
                SocketErrorStatus::HostNotFound,
                format!("cannot connect to the multicast address {dest}"),
            ));
        }
        let bound = self.bound_for(ctx, dest)?;
        let target = bound.shared.target(dest)?;
        bound
            .shared
            .socket
            .connect(target)
            .await
            .map_err(|e| io_error(&e, format!("connect to {dest}")))?;
        bound.remote = Some(dest);
        bound.connected_writer = Some(BatchWriter::new(UdpSink {
            shared: bound.shared.clone(),
            dest: None,
            shown: dest,
            send_calls: AtomicU64::new(0),
        }));
        Ok(())
    }

    /// The output stream to the connected peer.
    pub fn connected_writer(&mut self) -> Result<BatchWriter<UdpSink>, SocketError> {
        self.bound()?
            .connected_writer
            .clone()
            .ok_or_else(|| invalid_operation("the socket is not connected"))
    }

    /// An output stream to `host`, binding first if needed.
    pub async fn writer_to(
        &mut self,
        ctx: &SocketsCtx,
        host: &HostName,
        service: &str,
    ) -> Result<BatchWriter<UdpSink>, SocketError> {
        let dest = destination(ctx, host, service).await?;
        let bound = self.bound_for(ctx, dest)?;
        let target = bound.shared.target(dest)?;
        Ok(BatchWriter::new(UdpSink {
            shared: bound.shared.clone(),
            dest: Some(target),
            shown: dest,
            send_calls: AtomicU64::new(0),
        }))
    }

    /// Sends one datagram to `host`.
    pub async fn send_to(
        &mut self,
        ctx: &SocketsCtx,
        data: &[u8],
        host: &HostName,
        service: &str,
    ) -> Result<(), SocketError> {
        if data.len() > MAX_DATAGRAM {
            return Err(error(
                SocketErrorStatus::MessageTooLong,
                format!(
                    "a datagram of {} bytes is larger than UDP allows ({MAX_DATAGRAM})",
                    data.len()
                ),
            ));
        }
        let dest = destination(ctx, host, service).await?;
        let bound = self.bound_for(ctx, dest)?;
        let target = bound.shared.target(dest)?;
        bound
            .shared
            .socket
            .send_to(data, target)
            .await
            .map_err(|e| io_error(&e, format!("send to {dest}")))?;
        Ok(())
    }

    /// Waits for the next datagram.
    pub async fn receive(&mut self) -> Result<DatagramMessage, SocketError> {
        let bound = self.bound()?;
        if bound.delivery.is_some() {
            return Err(invalid_operation(
                "the socket delivers its datagrams to the message-received handler",
            ));
        }
        let shared = bound.shared.clone();
        if self.receive_buffer.len() < MAX_DATAGRAM {
            self.receive_buffer = vec![0; MAX_DATAGRAM];
        }
        shared.receive(&mut self.receive_buffer).await
    }

    /// Sends every datagram to the app's handler, tagged with `tag`: the app receives them
    /// (see `App::serve_datagrams`) until this socket is closed or `cancel-io` is called.
    pub fn enable_message_received(
        &mut self,
        events: EventSender,
        tag: String,
    ) -> Result<(), SocketError> {
        let bound = self.bound()?;
        if bound.delivery.is_some() {
            return Err(invalid_operation(
                "the socket already delivers to the message-received handler",
            ));
        }
        let delivery = Delivery::new();
        bound.delivery = Some(Delivering {
            delivery: delivery.clone(),
            owner: true,
        });
        events.send_soon(SocketEvent::MessagesEnabled {
            tag,
            socket: bound.shared.clone(),
            delivery,
        });
        Ok(())
    }

    /// Allows `transfer-ownership`.
    pub fn enable_transfer(&mut self) {
        self.transfer_enabled = true;
    }

    /// Moves the socket out for the broker, leaving a closed one behind.
    pub fn take_for_transfer(&mut self) -> Result<Self, SocketError> {
        if !self.transfer_enabled {
            return Err(invalid_operation(
                "call enable-transfer-ownership before transfer-ownership",
            ));
        }
        let bound = self.bound()?;
        if bound.delivery.is_some() {
            return Err(invalid_operation(
                "the socket delivers to the message-received handler; call cancel-io first",
            ));
        }
        let closed = Self {
            state: DatagramState::Closed,
            ..Self::default()
        };
        Ok(std::mem::replace(self, closed))
    }

    /// Waits until a datagram (or an error) can be received, without receiving it.
    pub async fn readable(&self) {
        if let DatagramState::Bound(b) = &self.state {
            let _ = b.shared.socket.readable().await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    /// Joins a multicast group on all interfaces.
    pub fn join_multicast_group(&mut self, group: &HostName) -> Result<(), SocketError> {
        let ip = group.ip().filter(IpAddr::is_multicast).ok_or_else(|| {
            invalid_argument(format!("{} is not a multicast address", group.raw_name()))
        })?;
        let bound = self.bound()?;
        let socket = &bound.shared.socket;
        let result = match ip {
            IpAddr::V4(v4) => socket.join_multicast_v4(v4, Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(v6) => socket.join_multicast_v6(&v6, 0),
        };
        result.map_err(|e| io_error(&e, format!("join {ip}")))
    }

    /// Flushes the connected stream and stops the delivery of datagrams, from any handle on
    /// the socket.
    pub async fn cancel_io(&mut self) -> Result<(), SocketError> {
        let Ok(bound) = self.bound() else {
            return Ok(());
        };
        if let Some(delivering) = bound.delivery.take() {
            delivering.delivery.stop();
        }
        match bound.connected_writer.clone() {
            Some(writer) => writer.flush_and_wait().await,
            None => Ok(()),
        }
    }

    /// Closes the socket.
    /// Closes the socket (`close`): on any handle of a socket that delivers to the handler,
    /// that ends the delivery, as UWP's `sender.Dispose()` inside `MessageReceived` does.
    pub fn close(&mut self) {
        if let DatagramState::Bound(b) = &self.state
            && let Some(delivering) = &b.delivery
        {
            delivering.delivery.stop();
        }
        self.release();
    }

    /// Lets go of the handle (the guest dropped it): queued datagrams still leave, and only
    /// the handle that enabled delivery ends it.
    pub fn release(&mut self) {
        if let DatagramState::Bound(b) = &self.state
            && let Some(writer) = &b.connected_writer
        {
            writer.start_flush();
        }
        self.state = DatagramState::Closed;
    }

    /// The local address, if bound: asked of the kernel, because connecting a socket bound to
    /// all interfaces gives it the address of the route to the peer.
    pub fn local(&self) -> Option<SocketAddr> {
        match &self.state {
            DatagramState::Bound(b) => Some(canonical(
                b.shared.socket.local_addr().unwrap_or(b.shared.local),
            )),
            _ => None,
        }
    }

    /// The connected peer, if any.
    pub fn remote(&self) -> Option<SocketAddr> {
        match &self.state {
            DatagramState::Bound(b) => b.remote,
            _ => None,
        }
    }

    /// SO_RCVBUF as the kernel has it when bound (halved: Linux doubles it), as set otherwise.
    pub fn inbound_buffer_size(&self) -> u32 {
        match &self.state {
            DatagramState::Bound(b) => SockRef::from(&b.shared.socket)
                .recv_buffer_size()
                .map(|s| u32::try_from(s / 2).unwrap_or(u32::MAX))
                .unwrap_or(self.control.inbound_buffer_size),
            _ => self.control.inbound_buffer_size,
        }
    }

    /// Whether the port is shared, as the kernel has it when bound.
    pub fn multicast_only(&self) -> bool {
        match &self.state {
            DatagramState::Bound(b) => SockRef::from(&b.shared.socket)
                .reuse_port()
                .unwrap_or(self.control.multicast_only),
            _ => self.control.multicast_only,
        }
    }
}

/// Resolves a destination and checks it against the policy.
async fn destination(
    ctx: &SocketsCtx,
    host: &HostName,
    service: &str,
) -> Result<SocketAddr, SocketError> {
    let port = service_port(service, Transport::Udp, false)?;
    let addrs = resolve(host, port).await?;
    let name = host.ip().is_none().then(|| host.canonical_name());
    let mut last_error = None;
    for addr in addrs {
        match ctx.check_connect(name, addr, Transport::Udp) {
            Ok(()) => return Ok(addr),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| error(SocketErrorStatus::NoAddressesFound, "no addresses")))
}

#[async_trait::async_trait]
impl Pollable for DatagramSocket {
    async fn ready(&mut self) {
        if let DatagramState::Bound(b) = &self.state
            && b.delivery.is_none()
        {
            let _ = b.shared.socket.readable().await;
        }
    }
}

/// Sends a queue of datagrams, one per buffer.
pub struct UdpSink {
    shared: Arc<SharedUdp>,
    /// The destination, or `None` for the connected peer.
    dest: Option<SocketAddr>,
    /// The destination as the guest named it, for messages.
    shown: SocketAddr,
    /// How many send calls (`sendmmsg`, or `sendto` for a lone datagram) this sink made,
    /// failed ones included (for tests and benchmarks).
    send_calls: AtomicU64,
}

impl UdpSink {
    /// How many send calls this sink has made, failed ones included.
    pub fn send_calls(&self) -> u64 {
        self.send_calls.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Sink for UdpSink {
    fn try_send(&self, queue: &mut Queue) -> io::Result<()> {
        // A batch of writes leaves in one call per 1,024 datagrams, not one call each.
        // A short count means a send failed after the first: the kernel consumed its error
        // (ECONNREFUSED after an ICMP port unreachable, say) and reports only the count. The
        // next datagram then goes alone, so that a pending error fails the following call
        // instead of vanishing into another short count.
        let mut batch = MAX_BATCH;
        while !queue.buffers.is_empty() {
            let socket = &self.shared.socket;
            let wanted = batch.min(queue.buffers.len());
            let sent = socket.try_io(Interest::WRITABLE, || {
                self.send_calls.fetch_add(1, Ordering::Relaxed);
                let datagrams = queue.buffers.iter().take(wanted).map(|b| &b[..]);
                crate::sys::send_datagrams(socket.as_fd(), datagrams, self.dest)
            })?;
            for _ in 0..sent {
                queue.pop();
            }
            batch = if sent < wanted { 1 } else { MAX_BATCH };
        }
        Ok(())
    }

    async fn writable(&self) -> io::Result<()> {
        self.shared.socket.writable().await
    }

    fn max_write(&self) -> usize {
        MAX_DATAGRAM
    }

    fn describe(&self) -> String {
        format!("send to {}", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::PortRegistry;
    use bytes::Bytes;
    use wasmtime_wasi_io::streams::OutputStream;

    /// The seed's batched send on a datagram output stream: 200 writes and one flush leave in
    /// one `sendmmsg` call, and arrive as 200 whole datagrams in order (200 small datagrams
    /// fit the default receive buffer of a receiver that is not reading yet).
    #[tokio::test]
    async fn batched_datagrams_leave_in_one_sendmmsg_call() {
        const COUNT: usize = 200;
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let shared = Arc::new(SharedUdp {
            socket,
            local,
            packet_info: false,
            _port: Arc::new(PortRegistry::default()).register(1, Transport::Udp, local),
        });
        let mut output = BatchWriter::new(UdpSink {
            shared,
            dest: Some(receiver.local_addr().unwrap()),
            shown: receiver.local_addr().unwrap(),
            send_calls: AtomicU64::new(0),
        });
        for i in 0..COUNT {
            output.write(Bytes::from(vec![i as u8; 64])).unwrap();
        }
        output.flush().unwrap();
        output.wait_flushed().await.unwrap();
        assert_eq!(output.sink().send_calls(), 1);
        let mut buf = [0u8; 128];
        for i in 0..COUNT {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), receiver.recv(&mut buf))
                    .await
                    .expect("datagram in time")
                    .unwrap();
            assert_eq!(&buf[..n], &[i as u8; 64][..], "datagram {i}");
        }
    }
}
