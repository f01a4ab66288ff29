//! Network policy: which addresses a guest may bind and connect to. Denied by default.

use crate::bindings::types::{SocketError, SocketErrorStatus};
use crate::conv::error;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// What a guest may do on the network. The default allows nothing.
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    /// Allow every bind and connect (`--inherit-network`).
    pub inherit_network: bool,
    /// Addresses and ports the guest may bind (`--allow-bind`).
    pub allow_bind: Vec<AddressRule>,
    /// Hosts and ports the guest may connect or send to (`--allow-connect`).
    pub allow_connect: Vec<AddressRule>,
    /// Refuse connections between two guest apps over this machine's addresses, as UWP's
    /// network isolation does (`--isolate-apps`).
    pub isolate_apps: bool,
}

impl NetworkPolicy {
    /// A policy that allows everything (`--inherit-network`).
    pub fn allow_all() -> Self {
        Self {
            inherit_network: true,
            ..Self::default()
        }
    }

    /// Checks a bind of `addr`; an unspecified address (all interfaces) matches `*` and the
    /// unspecified address of either family.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<(), SocketError> {
        if self.inherit_network || self.allow_bind.iter().any(|rule| rule.matches(None, addr)) {
            return Ok(());
        }
        Err(error(
            SocketErrorStatus::AccessDenied,
            format!(
                "binding {addr} is not allowed by the host's network policy (see --allow-bind)"
            ),
        ))
    }

    /// Checks a connection or datagram to `addr`, reached through the name `name` if any.
    pub fn check_connect(&self, name: Option<&str>, addr: SocketAddr) -> Result<(), SocketError> {
        if self.inherit_network
            || self
                .allow_connect
                .iter()
                .any(|rule| rule.matches(name, addr))
        {
            return Ok(());
        }
        let shown = match name {
            Some(name) if name != addr.ip().to_string() => format!("{name} ({addr})"),
            _ => addr.to_string(),
        };
        Err(error(
            SocketErrorStatus::AccessDenied,
            format!(
                "connecting to {shown} is not allowed by the host's network policy (see --allow-connect)"
            ),
        ))
    }
}

/// One `HOST[:PORTS]` rule: `*`, an IP address, a CIDR network or a host name, and a port, a
/// range `LOW-HIGH` or `*` (the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressRule {
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Any,
    Network(IpAddr, u8),
    Name(String),
}

impl AddressRule {
    fn matches(&self, name: Option<&str>, addr: SocketAddr) -> bool {
        let port_ok = (self.ports.0..=self.ports.1).contains(&addr.port());
        let ip = addr.ip().to_canonical();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Network(net, prefix) => {
                in_network(ip, *net, *prefix) || (ip.is_unspecified() && net.is_unspecified())
            }
            HostPattern::Name(rule) => name.is_some_and(|n| n.eq_ignore_ascii_case(rule)),
        };
        port_ok && host_ok
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Why an address rule did not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid address rule {rule:?}: {why} (expected HOST[:PORTS], e.g. 127.0.0.1:8000-8100, [::1]:80, example.com, *:443)"
)]
pub struct RuleParseError {
    rule: String,
    why: &'static str,
}

impl FromStr for AddressRule {
    type Err = RuleParseError;

    fn from_str(rule: &str) -> Result<Self, Self::Err> {
        let fail = |why| RuleParseError {
            rule: rule.to_string(),
            why,
        };
        let (host, ports) = if let Some(rest) = rule.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| fail("missing ']'"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| fail("expected ':' after ']'"))?,
                    ),
                ),
            }
        } else if rule.matches(':').count() > 1 {
            (rule, None) // a bare IPv6 address or network
        } else {
            match rule.split_once(':') {
                Some((host, ports)) => (host, Some(ports)),
                None => (rule, None),
            }
        };
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some((net, prefix)) = host.split_once('/') {
            let net: IpAddr = net.parse().map_err(|_| fail("bad network address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().map_err(|_| fail("bad prefix length"))?;
            if prefix > max {
                return Err(fail("prefix length too long"));
            }
            HostPattern::Network(net, prefix)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Network(ip, if ip.is_ipv4() { 32 } else { 128 })
        } else {
            crate::host_name::HostName::parse(host).map_err(|_| fail("bad host name"))?;
            HostPattern::Name(host.to_ascii_lowercase())
        };
        let ports = match ports {
            None | Some("*") => (0, u16::MAX),
            Some(ports) => match ports.split_once('-') {
                Some((low, high)) => {
                    let low = low.parse().map_err(|_| fail("bad port"))?;
                    let high = high.parse().map_err(|_| fail("bad port"))?;
                    if low > high {
                        return Err(fail("port range is reversed"));
                    }
                    (low, high)
                }
                None => {
                    let port = ports.parse().map_err(|_| fail("bad port"))?;
                    (port, port)
                }
            },
        };
        Ok(Self { host, ports })
    }
}

impl fmt::Display for AddressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Network(IpAddr::V6(ip), 128) => write!(f, "[{ip}]")?,
            HostPattern::Network(ip, prefix) if *prefix == if ip.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{ip}")?
            }
            HostPattern::Network(ip, prefix) => write!(f, "{ip}/{prefix}")?,
            HostPattern::Name(name) => f.write_str(name)?,
        }
        write!(f, ":{}-{}", self.ports.0, self.ports.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_match() {
        let rule: AddressRule = "127.0.0.0/8:8000-8100".parse().unwrap();
        assert!(rule.matches(None, addr("127.1.2.3:8050")));
        assert!(!rule.matches(None, addr("127.1.2.3:9000")));
        assert!(!rule.matches(None, addr("10.0.0.1:8050")));
        let rule: AddressRule = "[::1]:80".parse().unwrap();
        assert!(rule.matches(None, addr("[::1]:80")));
        let rule: AddressRule = "localhost".parse().unwrap();
        assert!(rule.matches(Some("LOCALHOST"), addr("127.0.0.1:1")));
        assert!(!rule.matches(None, addr("127.0.0.1:1")));
        let rule: AddressRule = "0.0.0.0:1337".parse().unwrap();
        assert!(rule.matches(None, addr("[::]:1337")));
        for bad in ["1.2.3.4:x", "[::1", "10.0.0.0/33", "a b", "1.2.3.4:9-1"] {
            assert!(bad.parse::<AddressRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_denies() {
        let policy = NetworkPolicy::default();
        let err = policy
            .check_connect(Some("localhost"), addr("127.0.0.1:1337"))
            .unwrap_err();
        assert_eq!(err.status, SocketErrorStatus::AccessDenied);
        assert!(err.message.unwrap().contains("localhost (127.0.0.1:1337)"));
        assert!(policy.check_bind(addr("0.0.0.0:1")).is_err());
        assert!(
            NetworkPolicy::allow_all()
                .check_bind(addr("0.0.0.0:1"))
                .is_ok()
        );
    }
}
