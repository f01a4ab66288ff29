//! The tokio cores of the three socket resources, independent of the WIT adapters.

pub mod datagram;
pub mod link;
pub mod listener;
pub mod stream;
pub mod writer;

use crate::bindings::types::SocketQualityOfService;
use socket2::SockRef;
use std::io;
use std::net::SocketAddr;

/// IP_TOS / IPV6_TCLASS for `low-latency` (IPTOS_LOWDELAY), and its SO_PRIORITY.
const LOW_DELAY_TOS: u32 = 0x10;
const LOW_LATENCY_PRIORITY: u32 = 6;

/// Applies the hop limit and quality of service that every socket kind has.
fn apply_ip_options(
    socket: SockRef<'_>,
    addr: SocketAddr,
    hop_limit: u8,
    qos: SocketQualityOfService,
) -> io::Result<()> {
    let tos = match qos {
        SocketQualityOfService::Normal => 0,
        SocketQualityOfService::LowLatency => LOW_DELAY_TOS,
    };
    if addr.is_ipv4() {
        socket.set_ttl_v4(u32::from(hop_limit))?;
        if tos != 0 {
            socket.set_tos_v4(tos)?;
        }
    } else {
        socket.set_unicast_hops_v6(u32::from(hop_limit))?;
        if tos != 0 {
            socket.set_tclass_v6(tos)?;
        }
    }
    if tos != 0 {
        socket.set_priority(LOW_LATENCY_PRIORITY)?;
    }
    Ok(())
}

/// The send buffer size as set: Linux reports twice what was asked for.
fn send_buffer_size(socket: SockRef<'_>) -> u32 {
    socket
        .send_buffer_size()
        .map(|size| u32::try_from(size / 2).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// A background task owned by a socket: aborted when the socket goes away.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `task` on the runtime.
    pub fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Makes a nonblocking socket bound to `addr`, dual stack when `addr` is `[::]`. With
/// `reuse_port` several sockets may share the port (UWP's `MulticastOnly`).
fn bind_socket(
    addr: SocketAddr,
    kind: socket2::Type,
    reuse_port: bool,
    configure: impl Fn(&socket2::Socket, SocketAddr) -> io::Result<()>,
) -> io::Result<(socket2::Socket, SocketAddr)> {
    use socket2::{Domain, Socket};
    let make = |addr: SocketAddr| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), kind, None)?;
        if addr.is_ipv6() {
            socket.set_only_v6(!addr.ip().is_unspecified())?;
        }
        if kind == socket2::Type::STREAM || reuse_port {
            socket.set_reuse_address(true)?;
        }
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        configure(&socket, addr)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    let socket = match make(addr) {
        // No IPv6 on this machine: all interfaces means all IPv4 interfaces.
        Err(e)
            if addr.ip().is_unspecified()
                && addr.is_ipv6()
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            make(SocketAddr::new(
                std::net::Ipv4Addr::UNSPECIFIED.into(),
                addr.port(),
            ))?
        }
        other => other?,
    };
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
    Ok((socket, local))
}
