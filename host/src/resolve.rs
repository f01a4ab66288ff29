//! Turning (host name, service name) into socket addresses, as UWP's `ConnectAsync` does.

use crate::bindings::types::{SocketError, SocketErrorStatus};
use crate::conv::{error, invalid_argument, resolve_error};
use crate::host_name::HostName;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

/// The transport a service name is looked up for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP (stream sockets and listeners).
    Tcp,
    /// UDP (datagram sockets).
    Udp,
}

/// Parses a service name: a port number, or a name from /etc/services (with a few well-known
/// names built in for machines without that file). `allow_empty` is for local service names,
/// where empty means "the system picks" (port 0).
pub fn service_port(
    service: &str,
    transport: Transport,
    allow_empty: bool,
) -> Result<u16, SocketError> {
    if service.is_empty() {
        return if allow_empty {
            Ok(0)
        } else {
            Err(invalid_argument("empty service name"))
        };
    }
    if service.bytes().all(|b| b.is_ascii_digit()) {
        return service
            .parse::<u16>()
            .map_err(|_| invalid_argument(format!("port {service:?} is out of range")));
    }
    services()
        .get(&(service.to_ascii_lowercase(), transport))
        .copied()
        .ok_or_else(|| invalid_argument(format!("unknown service name {service:?}")))
}

fn services() -> &'static HashMap<(String, Transport), u16> {
    static SERVICES: OnceLock<HashMap<(String, Transport), u16>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let mut map = HashMap::new();
        for (name, port) in [
            ("echo", 7),
            ("discard", 9),
            ("daytime", 13),
            ("ftp", 21),
            ("ssh", 22),
            ("telnet", 23),
            ("smtp", 25),
            ("domain", 53),
            ("http", 80),
            ("pop3", 110),
            ("ntp", 123),
            ("imap", 143),
            ("snmp", 161),
            ("ldap", 389),
            ("https", 443),
            ("submission", 587),
            ("imaps", 993),
            ("pop3s", 995),
            ("mqtt", 1883),
        ] {
            for transport in [Transport::Tcp, Transport::Udp] {
                map.insert((name.to_string(), transport), port);
            }
        }
        if let Ok(text) = std::fs::read_to_string("/etc/services") {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("");
                let mut fields = line.split_whitespace();
                let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                    continue;
                };
                let Some((port, proto)) = port_proto.split_once('/') else {
                    continue;
                };
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                let transport = match proto {
                    "tcp" => Transport::Tcp,
                    "udp" => Transport::Udp,
                    _ => continue,
                };
                for alias in std::iter::once(name).chain(fields) {
                    map.insert((alias.to_ascii_lowercase(), transport), port);
                }
            }
        }
        map
    })
}

/// Resolves a host name to all its addresses with the given port, in resolver order.
///
/// IP literals resolve to themselves; names under `.invalid` fail at once with `host-not-found`
/// (RFC 6761 reserves them for names that must not resolve); other names go to the system
/// resolver (`getaddrinfo`) on a blocking thread.
pub async fn resolve(host: &HostName, port: u16) -> Result<Vec<SocketAddr>, SocketError> {
    if let Some(ip) = host.ip() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.canonical_name().to_string();
    if name == "invalid" || name.ends_with(".invalid") {
        return Err(error(
            SocketErrorStatus::HostNotFound,
            format!("resolve {name}: names under .invalid never resolve (RFC 6761)"),
        ));
    }
    if name == "localhost" {
        // RFC 6761: localhost is always the loopback addresses, IPv6 first as getaddrinfo does.
        return Ok(vec![
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        ]);
    }
    let lookup = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        let hints = dns_lookup::AddrInfoHints {
            socktype: libc::SOCK_STREAM,
            ..Default::default()
        };
        dns_lookup::getaddrinfo(Some(&lookup), None, Some(hints)).map(|addrs| {
            addrs
                .filter_map(Result::ok)
                .map(|a| a.sockaddr.ip())
                .collect::<Vec<_>>()
        })
    })
    .await
    .map_err(|e| error(SocketErrorStatus::Unknown, format!("resolve {name}: {e}")))?;
    let ips = result.map_err(|e| resolve_error(&e, &name))?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(error(
            SocketErrorStatus::NoAddressesFound,
            format!("resolve {name}: no addresses"),
        ));
    }
    Ok(addrs)
}

/// Parses a local host name for a bind: an IP literal, or `localhost` (IPv4 loopback).
pub fn local_ip(host: &HostName) -> Result<IpAddr, SocketError> {
    match host.ip() {
        Some(ip) => Ok(ip),
        None if host.canonical_name() == "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => Err(invalid_argument(format!(
            "local host name {:?} must be an IP address or localhost",
            host.raw_name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(service_port("1337", Transport::Tcp, false).unwrap(), 1337);
        assert_eq!(service_port("http", Transport::Tcp, false).unwrap(), 80);
        assert_eq!(service_port("", Transport::Tcp, true).unwrap(), 0);
        for bad in ["", "70000", "no-such-service"] {
            assert_eq!(
                service_port(bad, Transport::Tcp, false).unwrap_err().status,
                SocketErrorStatus::InvalidArgument
            );
        }
    }
}
