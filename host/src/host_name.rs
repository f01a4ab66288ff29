//! `HostName`: parsing and normalizing host names and IP literals.

use crate::bindings::types::{HostNameType, SocketError};
use crate::conv::invalid_argument;
use std::net::IpAddr;
use std::sync::OnceLock;

/// A parsed host name. Mirrors `Windows.Networking.HostName`.
#[derive(Clone, Debug)]
pub struct HostName {
    names: Names,
    kind: HostNameType,
    ip: Option<IpAddr>,
}

/// A host name's strings.
#[derive(Clone, Debug)]
enum Names {
    /// Parsed from what a guest gave.
    Given { raw: String, canonical: String },
    /// An address the host found: both names are the address, formatted on first use
    /// (a received datagram carries two host names that its handler rarely reads).
    Found(OnceLock<String>),
}

impl PartialEq for HostName {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.ip == other.ip
            && self.raw_name() == other.raw_name()
            && self.canonical_name() == other.canonical_name()
    }
}

impl Eq for HostName {}

impl HostName {
    /// Parses a DNS name or an IP literal; see `host-name.parse` in the WIT for the rules.
    pub fn parse(raw: &str) -> Result<Self, SocketError> {
        let bare = raw
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(raw);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self {
                names: Names::Given {
                    raw: raw.to_string(),
                    canonical: ip.to_string(),
                },
                kind: match ip {
                    IpAddr::V4(_) => HostNameType::Ipv4,
                    IpAddr::V6(_) => HostNameType::Ipv6,
                },
                ip: Some(ip),
            });
        }
        let name = raw.strip_suffix('.').unwrap_or(raw);
        validate_dns_name(name)
            .map_err(|why| invalid_argument(format!("host name {raw:?}: {why}")))?;
        Ok(Self {
            names: Names::Given {
                raw: raw.to_string(),
                canonical: name.to_lowercase(),
            },
            kind: HostNameType::DomainName,
            ip: None,
        })
    }

    /// A host name for an IP address the host found (a local or remote address).
    pub fn from_ip(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self {
            names: Names::Found(OnceLock::new()),
            kind: match ip {
                IpAddr::V4(_) => HostNameType::Ipv4,
                IpAddr::V6(_) => HostNameType::Ipv6,
            },
            ip: Some(ip),
        }
    }

    /// The string it was made from.
    pub fn raw_name(&self) -> &str {
        match &self.names {
            Names::Given { raw, .. } => raw,
            Names::Found(text) => self.found_text(text),
        }
    }

    /// The normalized name.
    pub fn canonical_name(&self) -> &str {
        match &self.names {
            Names::Given { canonical, .. } => canonical,
            Names::Found(text) => self.found_text(text),
        }
    }

    fn found_text<'a>(&self, text: &'a OnceLock<String>) -> &'a str {
        text.get_or_init(|| self.ip.map(|ip| ip.to_string()).unwrap_or_default())
    }

    /// The name for display: the raw name without IPv6 brackets.
    pub fn display_name(&self) -> &str {
        let raw = self.raw_name();
        raw.strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(raw)
    }

    /// Whether it is a DNS name or an IP literal.
    pub fn kind(&self) -> HostNameType {
        self.kind
    }

    /// The address, for IP literals.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }
}

fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        if !label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err("characters a host name cannot have");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_literals() {
        let name = HostName::parse("Example.COM.").unwrap();
        assert_eq!(name.canonical_name(), "example.com");
        assert_eq!(name.kind(), HostNameType::DomainName);
        let v6 = HostName::parse("[0:0::1]").unwrap();
        assert_eq!(v6.canonical_name(), "::1");
        assert_eq!(v6.display_name(), "0:0::1");
        assert_eq!(v6.kind(), HostNameType::Ipv6);
        assert_eq!(
            HostName::parse("127.0.0.1").unwrap().kind(),
            HostNameType::Ipv4
        );
    }

    #[test]
    fn found_addresses_are_named_on_first_use() {
        let found = HostName::from_ip("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(found.kind(), HostNameType::Ipv4);
        assert_eq!(found.raw_name(), "10.0.0.1");
        assert_eq!(found.canonical_name(), "10.0.0.1");
        assert_eq!(found, HostName::parse("10.0.0.1").unwrap());
        let v6 = HostName::from_ip("fe80::1".parse().unwrap());
        assert_eq!(v6.clone().display_name(), "fe80::1");
        assert_ne!(v6, HostName::parse("[fe80::1]").unwrap());
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "",
            "a b",
            "exa mple.com",
            "a..b",
            "-a.com",
            "a/b",
            "x@y",
            &"a".repeat(64),
        ] {
            let err = HostName::parse(bad).unwrap_err();
            assert_eq!(
                err.status,
                crate::bindings::types::SocketErrorStatus::InvalidArgument,
                "{bad:?}"
            );
        }
    }
}
