//! The two socket options that socket2 does not wrap: TCP_INFO and IP_MTU_DISCOVER.
#![allow(
    unsafe_code,
    reason = "getsockopt/setsockopt on a borrowed, open socket"
)]

use std::io;
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
