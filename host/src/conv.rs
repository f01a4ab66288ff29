//! Every conversion between the OS, tokio and the WIT types: `io::Error` and errno to
//! `socket-error-status`, resolver errors, socket addresses to host names and ports.

use crate::bindings::types::{SocketError, SocketErrorStatus};
use std::fmt;
use std::io;

/// What a host function returns: the outer error traps the guest, the inner one is a value.
pub type SocketResult<T> = wasmtime::Result<Result<T, SocketError>>;

/// Builds a socket error with a status and a message.
pub fn error(status: SocketErrorStatus, message: impl fmt::Display) -> SocketError {
    SocketError {
        status,
        message: Some(message.to_string()),
        os_error: None,
    }
}

/// The error for a call that the socket's state does not allow (UWP's `E_ILLEGAL_METHOD_CALL`).
pub fn invalid_operation(message: impl fmt::Display) -> SocketError {
    error(SocketErrorStatus::InvalidOperation, message)
}

/// The error for a malformed argument (UWP's `E_INVALIDARG`).
pub fn invalid_argument(message: impl fmt::Display) -> SocketError {
    error(SocketErrorStatus::InvalidArgument, message)
}

/// Converts an OS error, naming what was being done (`"connect to 127.0.0.1:9"`).
pub fn io_error(err: &io::Error, doing: impl fmt::Display) -> SocketError {
    let status = match err.raw_os_error() {
        Some(code) => status_from_errno(code),
        None => status_from_kind(err.kind()),
    };
    SocketError {
        status,
        message: Some(format!("{doing}: {}", describe(err))),
        os_error: err.raw_os_error(),
    }
}

/// The OS message without Rust's " (os error N)" suffix; the code travels in `os-error`.
fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_lowercase(),
        None => text,
    }
}

/// Maps an errno to its status. Mirrors `SocketError.GetStatus`.
pub fn status_from_errno(code: i32) -> SocketErrorStatus {
    use SocketErrorStatus as S;
    match code {
        libc::ECANCELED => S::OperationAborted,
        libc::ETIMEDOUT => S::ConnectionTimedOut,
        libc::EAFNOSUPPORT | libc::EPFNOSUPPORT => S::AddressFamilyNotSupported,
        libc::ESOCKTNOSUPPORT | libc::EPROTONOSUPPORT | libc::EPROTOTYPE => {
            S::SocketTypeNotSupported
        }
        libc::EADDRINUSE => S::AddressAlreadyInUse,
        libc::EADDRNOTAVAIL => S::CannotAssignRequestedAddress,
        libc::ECONNREFUSED => S::ConnectionRefused,
        libc::ENETUNREACH => S::NetworkIsUnreachable,
        libc::EHOSTUNREACH => S::UnreachableHost,
        libc::ENETDOWN => S::NetworkIsDown,
        libc::ENETRESET => S::NetworkDroppedConnectionOnReset,
        libc::ECONNABORTED | libc::EPIPE => S::SoftwareCausedConnectionAbort,
        libc::ECONNRESET => S::ConnectionResetByPeer,
        libc::EHOSTDOWN => S::HostIsDown,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS => S::TooManyOpenFiles,
        libc::EMSGSIZE => S::MessageTooLong,
        libc::EACCES | libc::EPERM => S::AccessDenied,
        libc::EINVAL | libc::EDESTADDRREQ => S::InvalidArgument,
        libc::EISCONN | libc::ENOTCONN | libc::EALREADY => S::InvalidOperation,
        libc::EOPNOTSUPP | libc::ENOPROTOOPT => S::NotSupported,
        _ => S::Unknown,
    }
}

fn status_from_kind(kind: io::ErrorKind) -> SocketErrorStatus {
    use SocketErrorStatus as S;
    use io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => S::ConnectionRefused,
        K::ConnectionReset => S::ConnectionResetByPeer,
        K::ConnectionAborted | K::BrokenPipe => S::SoftwareCausedConnectionAbort,
        K::AddrInUse => S::AddressAlreadyInUse,
        K::AddrNotAvailable => S::CannotAssignRequestedAddress,
        K::TimedOut => S::ConnectionTimedOut,
        K::PermissionDenied => S::AccessDenied,
        K::InvalidInput => S::InvalidArgument,
        K::NotConnected => S::InvalidOperation,
        K::Unsupported => S::NotSupported,
        _ => S::Unknown,
    }
}

/// Maps a `getaddrinfo` failure to its status.
pub fn resolve_error(err: &dns_lookup::LookupError, name: &str) -> SocketError {
    use SocketErrorStatus as S;
    use dns_lookup::LookupErrorKind as K;
    let status = match err.kind() {
        K::NoName => S::HostNotFound,
        K::NoData => S::NoDataRecordOfRequestedType,
        K::Again => S::NonAuthoritativeHostNotFound,
        K::Service => S::ClassTypeNotFound,
        K::Family => S::AddressFamilyNotSupported,
        K::Socktype => S::SocketTypeNotSupported,
        _ => S::Unknown,
    };
    error(status, format!("resolve {name}: {err:?}"))
}

/// Carries a socket error through a `wasi:io` stream error so that
/// `types.stream-error-status` can give it back to the guest.
#[derive(Debug)]
pub struct StreamFailure(pub SocketError);

impl fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.message {
            Some(message) => f.write_str(message),
            None => write!(f, "{:?}", self.0.status),
        }
    }
}

impl std::error::Error for StreamFailure {}

/// A failed stream operation, as `wasi:io` reports it.
pub fn stream_failure(
    err: &io::Error,
    doing: impl fmt::Display,
) -> wasmtime_wasi_io::streams::StreamError {
    wasmtime_wasi_io::streams::StreamError::LastOperationFailed(wasmtime::Error::new(
        StreamFailure(io_error(err, doing)),
    ))
}

/// The port of an address as UWP reports it: a decimal string.
pub fn port_string(addr: Option<std::net::SocketAddr>) -> String {
    addr.map(|a| a.port().to_string()).unwrap_or_default()
}

/// Unwraps IPv4-mapped IPv6 addresses (from dual-stack sockets) to plain IPv4.
pub fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
