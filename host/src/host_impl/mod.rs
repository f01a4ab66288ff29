//! Thin adapters from the generated `Host*` traits to the socket cores, one file per resource.

mod datagram;
mod listener;
mod socket_activity;
mod stream_socket;
mod types;

use crate::bindings::types::SocketError;
use crate::ctx::SocketsCtxView;
use crate::host_name::HostName;
use crate::resolve::{Transport, local_ip, service_port};
use std::net::{Ipv6Addr, SocketAddr};
use wasmtime::component::Resource;

impl SocketsCtxView<'_> {
    /// A copy of a guest's host name (the handle stays the guest's).
    fn host_name(&self, name: &Resource<HostName>) -> wasmtime::Result<HostName> {
        Ok(self.table.get(name)?.clone())
    }

    /// The address a bind asks for: the guest's local host (none for all interfaces, dual
    /// stack) and service name (empty for a free port).
    fn bind_address(
        &self,
        host: Option<&Resource<HostName>>,
        service: &str,
        transport: Transport,
    ) -> wasmtime::Result<Result<SocketAddr, SocketError>> {
        let ip = match host {
            Some(host) => match local_ip(self.table.get(host)?) {
                Ok(ip) => ip,
                Err(e) => return Ok(Err(e)),
            },
            None => Ipv6Addr::UNSPECIFIED.into(),
        };
        Ok(service_port(service, transport, true).map(|port| SocketAddr::new(ip, port)))
    }

    /// Pushes a host name for an IP address, if there is one.
    fn push_address(
        &mut self,
        ip: Option<std::net::IpAddr>,
    ) -> wasmtime::Result<Option<Resource<HostName>>> {
        ip.map(|ip| self.table.push(HostName::from_ip(ip)))
            .transpose()
            .map_err(Into::into)
    }
}

/// Turns a core result into a host result: errors are values for the guest, not traps.
fn ok<T>(result: Result<T, SocketError>) -> wasmtime::Result<Result<T, SocketError>> {
    Ok(result)
}
