//! What socket2 does not wrap: the TCP_INFO and IP_MTU_DISCOVER options, a datagram's
//! destination address (IP_PKTINFO), sendmmsg, inherited listening sockets, and the
//! open-file limit.
#![allow(
    unsafe_code,
    reason = "getsockopt/setsockopt/recvmsg/sendmmsg on borrowed, open sockets; getrlimit/setrlimit"
)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Round-trip times of a TCP connection in microseconds: (smoothed, variance, minimum).
pub fn tcp_rtt(fd: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    // struct tcp_info as u32 words: tcpi_rtt at byte 68, tcpi_rttvar at 72, tcpi_min_rtt at
    // 148 (include/uapi/linux/tcp.h). Older kernels fill less; the length tells.
    let mut info = [0u32; 64];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the buffer is valid for `len` bytes and the fd is open for the borrow.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let min = if len as usize >= 152 { info[37] } else { 0 };
    Ok((info[17], info[18], min))
}

/// Sets or clears the IPv4 don't-fragment bit (IP_MTU_DISCOVER = IP_PMTUDISC_DO / _DONT).
pub fn set_dont_fragment(fd: BorrowedFd<'_>, ipv6: bool, on: bool) -> io::Result<()> {
    let (level, name, value) = if ipv6 {
        let value = if on {
            libc::IPV6_PMTUDISC_DO
        } else {
            libc::IPV6_PMTUDISC_DONT
        };
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, value)
    } else {
        let value = if on {
            libc::IP_PMTUDISC_DO
        } else {
            libc::IP_PMTUDISC_DONT
        };
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, value)
    };
    set_int_option(fd, level, name, value)
}

/// setsockopt with an int value.
fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a c_int that outlives the call and the fd is open for the borrow.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Has the kernel tell each received datagram's destination address: IP_PKTINFO on an IPv4
/// socket, IPV6_RECVPKTINFO on an IPv6 one (which covers its IPv4-mapped datagrams too).
pub fn enable_packet_info(fd: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    let (level, name) = match ipv6 {
        true => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
        false => (libc::IPPROTO_IP, libc::IP_PKTINFO),
    };
    set_int_option(fd, level, name, 1)
}

/// Receives one datagram into `buf`: its length, its sender, and the address it was sent
/// to when the socket has packet info on (see [`enable_packet_info`]; sockets bound to one
/// address need none).
pub fn recv_with_destination(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    let mut from = socket2::SockAddrStorage::zeroed();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one in6_pktinfo control message, the larger of the two, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: all-zero is a valid msghdr; SockAddrStorage is a sockaddr_storage.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name =
        (unsafe { from.view_as::<libc::sockaddr_storage>() } as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = from.size_of();
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` is valid for its length for the call's duration.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote a sockaddr of `msg_namelen` bytes into `from`.
    let from = unsafe { socket2::SockAddr::new(from, msg.msg_namelen) }
        .as_socket()
        .ok_or_else(|| io::Error::other("a datagram from a sender that is not an IP address"))?;
    let mut to = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; each payload is read unaligned at the type the header names.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const msg);
        while !header.is_null() {
            let data = libc::CMSG_DATA(header);
            match ((*header).cmsg_level, (*header).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    let addr = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    to = Some(IpAddr::V4(addr));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    to = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            header = libc::CMSG_NXTHDR(&raw const msg, header);
        }
    }
    Ok((n as usize, from, to))
}

/// The most datagrams one `sendmmsg` call takes (the kernel's UIO_MAXIOV).
pub const MAX_BATCH: usize = 1024;

/// Sends the first datagrams of `datagrams` (at most [`MAX_BATCH`]) in one system call, each
/// to `dest` or, for `None`, to the connected peer; returns how many the kernel took. A lone
/// datagram (a flush per write) goes by plain `send`/`sendto`, without `sendmmsg`'s header
/// arrays; more go by one `sendmmsg(2)`. An error means the first one was not sent.
pub fn send_datagrams<'a>(
    fd: BorrowedFd<'_>,
    datagrams: impl IntoIterator<Item = &'a [u8]>,
    dest: Option<SocketAddr>,
) -> io::Result<usize> {
    let mut datagrams = datagrams.into_iter().take(MAX_BATCH).peekable();
    let Some(first) = datagrams.next() else {
        return Ok(0);
    };
    if datagrams.peek().is_none() {
        let socket = socket2::SockRef::from(&fd);
        let sent = match dest {
            Some(dest) => socket.send_to(first, &dest.into()),
            None => socket.send(first),
        };
        return sent.map(|_| 1);
    }
    let dest = dest.map(socket2::SockAddr::from);
    let (name, name_len) = match &dest {
        Some(addr) => (addr.as_ptr().cast_mut().cast(), addr.len()),
        None => (std::ptr::null_mut(), 0),
    };
    let mut iovecs: Vec<libc::iovec> = std::iter::once(first)
        .chain(datagrams)
        .map(|datagram| libc::iovec {
            iov_base: datagram.as_ptr().cast_mut().cast(),
            iov_len: datagram.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iovec| {
            // SAFETY: msghdr is plain data; all-zero is a valid (empty) value.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_name = name;
            header.msg_namelen = name_len;
            header.msg_iov = iovec;
            header.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: header,
                msg_len: 0,
            }
        })
        .collect();
    // SAFETY: every header points at one iovec in `iovecs` and at `dest`, which outlive the
    // call; the iovecs point into the borrowed datagrams; the fd is open for the borrow. The
    // kernel only reads them (and writes `msg_len`).
    let sent = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            headers.as_mut_ptr(),
            headers.len() as libc::c_uint,
            libc::MSG_NOSIGNAL,
        )
    };
    match sent {
        ..0 => Err(io::Error::last_os_error()),
        // Never seen (the kernel fails or sends at least one); waiting beats spinning.
        0 => Err(io::ErrorKind::WouldBlock.into()),
        sent => Ok(sent as usize),
    }
}

/// The listening sockets handed over by systemd-style socket activation: `LISTEN_FDS`
/// descriptors from fd 3 on, named by `LISTEN_FDNAMES` (else `fd3`, `fd4`, …). They are
/// taken when `LISTEN_PID` names this process, or when `force` (`--listen-fds`) and
/// `LISTEN_PID` is unset. (Guests never see the host's environment, so the variables stay.)
pub fn inherited_listeners(force: bool) -> io::Result<Vec<(String, std::net::TcpListener)>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    let Ok(count) = std::env::var("LISTEN_FDS") else {
        return match force {
            true => Err(invalid("--listen-fds: LISTEN_FDS is not set".into())),
            false => Ok(Vec::new()),
        };
    };
    match std::env::var("LISTEN_PID") {
        Ok(pid) if pid != std::process::id().to_string() => {
            return match force {
                true => Err(invalid(format!(
                    "--listen-fds: LISTEN_PID is {pid}, not this process"
                ))),
                false => Ok(Vec::new()),
            };
        }
        Err(_) if !force => return Ok(Vec::new()),
        _ => {}
    }
    let count: i32 = count
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS={count:?} is not a number")))?;
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(String::from).collect())
        .unwrap_or_default();
    let mut listeners = Vec::new();
    for index in 0..count.clamp(0, 1024) {
        let fd = 3 + index;
        // SAFETY: only borrowed for the check; the fd is not closed meanwhile.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let check = socket2::SockRef::from(&borrowed);
        if !check.is_listener().unwrap_or(false)
            || check.r#type().ok() != Some(socket2::Type::STREAM)
        {
            return Err(invalid(format!(
                "inherited fd {fd} is not a listening TCP socket"
            )));
        }
        // SAFETY: the socket-activation protocol hands this process fds 3..3+LISTEN_FDS, and
        // this one is an open listening socket; it is taken once, here, and owned from then on.
        let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let name = names
            .get(index as usize)
            .cloned()
            .unwrap_or_else(|| format!("fd{fd}"));
        listeners.push((name, std::net::TcpListener::from(socket)));
    }
    Ok(listeners)
}

/// Raises this process's soft limit on open files to its hard limit, so that a server can hold
/// as many connections as the administrator allows (every connection is a file, and the soft
/// limit is often 1,024), and returns the new soft limit.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}
