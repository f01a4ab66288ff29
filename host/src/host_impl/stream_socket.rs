//! `sockhost:sockets/stream-socket`.

use super::ok;
use crate::bindings::stream_socket::{self, HostStreamSocket};
use crate::bindings::types::{
    Certificate, ChainValidationResult, EndpointPair, RoundTripTimeStatistics,
    SocketProtectionLevel, SocketQualityOfService, SocketSslErrorSeverity,
};
use crate::conv::{SocketResult, invalid_argument, io_error, port_string};
use crate::ctx::SocketsCtxView;
use crate::host_name::HostName;
use crate::resolve::{Transport, resolve, service_port};
use crate::socket::link::TcpInput;
use crate::socket::stream::{self, StreamSocket, local_endpoint, require_remote};
use crate::tls::{certificate_info, is_ignorable, is_tls, severity};
use wasmtime::component::Resource;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

/// The most ALPN protocols a socket may offer (a ClientHello has room for far more; real
/// clients offer two or three).
const MAX_ALPN_PROTOCOLS: usize = 16;

impl SocketsCtxView<'_> {
    async fn connect_stream(
        &mut self,
        this: &Resource<StreamSocket>,
        host: HostName,
        service: &str,
        level: SocketProtectionLevel,
        local: Option<(Option<String>, String)>,
    ) -> SocketResult<()> {
        let secure = match is_tls(level) {
            Ok(secure) => secure,
            Err(e) => return ok(Err(e)),
        };
        let local = match local {
            Some((host, service)) => {
                match local_endpoint(self.ctx, host.as_deref(), &service, Transport::Tcp) {
                    Ok(addr) => Some(addr),
                    Err(e) => return ok(Err(e)),
                }
            }
            None => None,
        };
        let socket = self.table.get_mut(this)?;
        let mut settings = socket.tls().clone();
        settings.level = level;
        let control = match socket.begin_connect(host.clone(), service) {
            Ok(control) => control,
            Err(e) => return ok(Err(e)),
        };
        let connection = match stream::connect(self.ctx, &control, &host, service, local).await {
            Ok(connection) => connection,
            Err(e) => return ok(Err(e)),
        };
        if secure {
            let secured = stream::secure_client(&connection, self.ctx.tls(), &settings, &host);
            if let Err(e) = secured.await {
                return ok(Err(e));
            }
        }
        self.table.get_mut(this)?.finish_connect(connection);
        Ok(Ok(()))
    }

    fn socket(&self, this: &Resource<StreamSocket>) -> wasmtime::Result<&StreamSocket> {
        Ok(self.table.get(this)?)
    }
}

impl stream_socket::Host for SocketsCtxView<'_> {
    async fn get_endpoint_pairs(
        &mut self,
        host: Resource<HostName>,
        service: String,
    ) -> SocketResult<Vec<EndpointPair>> {
        let host = self.host_name(&host)?;
        let port = match service_port(&service, Transport::Tcp, false) {
            Ok(port) => port,
            Err(e) => return ok(Err(e)),
        };
        ok(resolve(&host, port).await.map(|addrs| {
            addrs
                .into_iter()
                .map(|addr| EndpointPair {
                    local_host_name: None,
                    local_service_name: String::new(),
                    remote_host_name: addr.ip().to_string(),
                    remote_service_name: addr.port().to_string(),
                })
                .collect()
        }))
    }
}

impl HostStreamSocket for SocketsCtxView<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<StreamSocket>> {
        Ok(self.table.push(StreamSocket::default())?)
    }

    async fn connect(
        &mut self,
        this: Resource<StreamSocket>,
        host: Resource<HostName>,
        service: String,
        level: SocketProtectionLevel,
    ) -> SocketResult<()> {
        let host = self.host_name(&host)?;
        if service.is_empty() {
            return ok(Err(invalid_argument("the remote service name is empty")));
        }
        self.connect_stream(&this, host, &service, level, None)
            .await
    }

    async fn connect_endpoint_pair(
        &mut self,
        this: Resource<StreamSocket>,
        pair: EndpointPair,
        level: SocketProtectionLevel,
    ) -> SocketResult<()> {
        let host = match require_remote(&pair.remote_host_name, &pair.remote_service_name) {
            Ok(host) => host,
            Err(e) => return ok(Err(e)),
        };
        let local = Some((pair.local_host_name, pair.local_service_name));
        self.connect_stream(&this, host, &pair.remote_service_name, level, local)
            .await
    }

    fn input_stream(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> SocketResult<Resource<DynInputStream>> {
        let input = match self.table.get(&this)?.require_connection() {
            Ok(connection) => TcpInput::new(connection.link.clone()),
            Err(e) => return ok(Err(e)),
        };
        let input: DynInputStream = Box::new(input);
        Ok(Ok(self.table.push_child(input, &this)?))
    }

    fn output_stream(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> SocketResult<Resource<DynOutputStream>> {
        let writer = match self.table.get(&this)?.require_connection() {
            Ok(connection) => connection.writer.clone(),
            Err(e) => return ok(Err(e)),
        };
        let output: DynOutputStream = Box::new(writer);
        Ok(Ok(self.table.push_child(output, &this)?))
    }

    async fn cancel_io(&mut self, this: Resource<StreamSocket>) -> SocketResult<()> {
        let Some(connection) = self.table.get(&this)?.connection().cloned() else {
            return Ok(Ok(()));
        };
        ok(connection.writer.flush_and_wait().await)
    }

    async fn close(&mut self, this: Resource<StreamSocket>) -> SocketResult<()> {
        let Some(connection) = self.table.get_mut(&this)?.close() else {
            return Ok(Ok(()));
        };
        let flushed = connection.writer.flush_and_wait().await;
        let notified = connection.link.send_close_notify().await;
        let shutdown = connection.link.shutdown_write().map_err(|e| {
            io_error(
                &e,
                format!("shut down the connection to {}", connection.remote),
            )
        });
        ok(flushed.and(notified).and(shutdown))
    }

    async fn upgrade_to_ssl(
        &mut self,
        this: Resource<StreamSocket>,
        level: SocketProtectionLevel,
        validation_host_name: Resource<HostName>,
    ) -> SocketResult<()> {
        let host = self.host_name(&validation_host_name)?;
        let socket = self.table.get(&this)?;
        let checked = is_tls(level).and_then(|secure| match secure {
            true => socket.upgradable(),
            false => Err(crate::conv::error(
                crate::bindings::types::SocketErrorStatus::NotSupported,
                "upgrade-to-ssl needs a TLS protection level",
            )),
        });
        let connection = match checked {
            Ok(connection) => connection,
            Err(e) => return ok(Err(e)),
        };
        let mut settings = socket.tls().clone();
        settings.level = level;
        // What was written in plain text goes out before the handshake starts.
        if let Err(e) = connection.writer.flush_and_wait().await {
            return ok(Err(e));
        }
        ok(stream::secure_client(&connection, self.ctx.tls(), &settings, &host).await)
    }

    fn client_certificate(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.socket(&this)?.tls().client_certificate.clone())
    }

    fn set_client_certificate(
        &mut self,
        this: Resource<StreamSocket>,
        identity: Option<String>,
    ) -> SocketResult<()> {
        if let Some(name) = &identity
            && !self.ctx.tls().has_identity(name)
        {
            return ok(Err(invalid_argument(format!(
                "the host has no TLS identity named {name:?} (see --tls-identity)"
            ))));
        }
        ok(self
            .table
            .get_mut(&this)?
            .set_tls(|t| t.client_certificate = identity))
    }

    fn ignorable_server_certificate_errors(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Vec<ChainValidationResult>> {
        Ok(self.socket(&this)?.tls().ignorable.clone())
    }

    fn set_ignorable_server_certificate_errors(
        &mut self,
        this: Resource<StreamSocket>,
        errors: Vec<ChainValidationResult>,
    ) -> SocketResult<()> {
        if let Some(fatal) = errors.iter().find(|e| !is_ignorable(**e)) {
            return ok(Err(invalid_argument(format!(
                "{fatal:?} is a fatal certificate error and cannot be ignored"
            ))));
        }
        ok(self.table.get_mut(&this)?.set_tls(|t| t.ignorable = errors))
    }

    fn min_protection_level(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<SocketProtectionLevel> {
        Ok(self.socket(&this)?.tls().min_level)
    }

    fn set_min_protection_level(
        &mut self,
        this: Resource<StreamSocket>,
        level: SocketProtectionLevel,
    ) -> SocketResult<()> {
        if !matches!(is_tls(level), Ok(true)) {
            return ok(Err(crate::conv::error(
                crate::bindings::types::SocketErrorStatus::NotSupported,
                format!("{level:?} is not a TLS version this host can require"),
            )));
        }
        ok(self.table.get_mut(&this)?.set_tls(|t| t.min_level = level))
    }

    fn alpn_protocols(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<Vec<String>> {
        Ok(self.socket(&this)?.tls().alpn.clone())
    }

    fn set_alpn_protocols(
        &mut self,
        this: Resource<StreamSocket>,
        protocols: Vec<String>,
    ) -> SocketResult<()> {
        if let Some(bad) = protocols.iter().find(|p| p.is_empty() || p.len() > 255) {
            return ok(Err(invalid_argument(format!(
                "ALPN protocol {bad:?} must be 1 to 255 bytes"
            ))));
        }
        if protocols.len() > MAX_ALPN_PROTOCOLS {
            return ok(Err(invalid_argument(format!(
                "at most {MAX_ALPN_PROTOCOLS} ALPN protocols, not {}",
                protocols.len()
            ))));
        }
        ok(self.table.get_mut(&this)?.set_tls(|t| t.alpn = protocols))
    }

    fn server_certificate(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<Certificate>> {
        let tls = self.socket(&this)?.tls_session().filter(|t| t.is_client);
        Ok(tls.and_then(|t| t.peer_chain.first()).map(certificate_info))
    }

    fn server_intermediate_certificates(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Vec<Certificate>> {
        let tls = self.socket(&this)?.tls_session().filter(|t| t.is_client);
        Ok(tls
            .map(|t| t.peer_chain.iter().skip(1).map(certificate_info).collect())
            .unwrap_or_default())
    }

    fn server_certificate_errors(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Vec<ChainValidationResult>> {
        let tls = self.socket(&this)?.tls_session();
        Ok(tls.map(|t| t.errors.clone()).unwrap_or_default())
    }

    fn server_certificate_error_severity(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<SocketSslErrorSeverity> {
        let tls = self.socket(&this)?.tls_session();
        Ok(tls.map_or(SocketSslErrorSeverity::None, |t| severity(&t.errors)))
    }

    fn peer_certificate(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<Certificate>> {
        let tls = self.socket(&this)?.tls_session();
        Ok(tls.and_then(|t| t.peer_chain.first()).map(certificate_info))
    }

    fn negotiated_alpn_protocol(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self
            .socket(&this)?
            .tls_session()
            .and_then(|t| t.alpn.clone()))
    }

    fn enable_transfer_ownership(&mut self, this: Resource<StreamSocket>) -> SocketResult<()> {
        self.enable_transfer(&this)
    }

    fn transfer_ownership(
        &mut self,
        this: Resource<StreamSocket>,
        socket_id: String,
        context: Vec<u8>,
    ) -> SocketResult<()> {
        self.transfer(&this, socket_id, context, None)
    }

    fn transfer_ownership_with_keep_alive(
        &mut self,
        this: Resource<StreamSocket>,
        socket_id: String,
        context: Vec<u8>,
        keep_alive_time_ms: u64,
    ) -> SocketResult<()> {
        if keep_alive_time_ms == 0 {
            return ok(Err(invalid_argument(
                "the keep-alive time must be positive",
            )));
        }
        let keep_alive = Some(std::time::Duration::from_millis(keep_alive_time_ms));
        self.transfer(&this, socket_id, context, keep_alive)
    }

    fn no_delay(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.no_delay())
    }

    fn set_no_delay(&mut self, this: Resource<StreamSocket>, value: bool) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.no_delay = value))
    }

    fn keep_alive(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.keep_alive())
    }

    fn set_keep_alive(&mut self, this: Resource<StreamSocket>, value: bool) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.keep_alive = value))
    }

    fn outbound_buffer_size_in_bytes(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<u32> {
        Ok(self.table.get(&this)?.outbound_buffer_size())
    }

    fn set_outbound_buffer_size_in_bytes(
        &mut self,
        this: Resource<StreamSocket>,
        value: u32,
    ) -> SocketResult<()> {
        self.table.get_mut(&this)?.set_outbound_buffer_size(value);
        Ok(Ok(()))
    }

    fn outbound_unicast_hop_limit(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<u8> {
        Ok(self.table.get(&this)?.hop_limit())
    }

    fn set_outbound_unicast_hop_limit(
        &mut self,
        this: Resource<StreamSocket>,
        value: u8,
    ) -> SocketResult<()> {
        if value == 0 {
            return ok(Err(invalid_argument("the hop limit must be at least 1")));
        }
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.hop_limit = value))
    }

    fn quality_of_service(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<SocketQualityOfService> {
        Ok(self.table.get(&this)?.control().quality_of_service)
    }

    fn set_quality_of_service(
        &mut self,
        this: Resource<StreamSocket>,
        value: SocketQualityOfService,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.quality_of_service = value))
    }

    fn serialize_connection_attempts(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<bool> {
        Ok(self
            .table
            .get(&this)?
            .control()
            .serialize_connection_attempts)
    }

    fn set_serialize_connection_attempts(
        &mut self,
        this: Resource<StreamSocket>,
        value: bool,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.serialize_connection_attempts = value))
    }

    fn local_address(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<Resource<HostName>>> {
        let ip = self.table.get(&this)?.connection().map(|c| c.local.ip());
        self.push_address(ip)
    }

    fn local_port(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<String> {
        Ok(port_string(
            self.table.get(&this)?.connection().map(|c| c.local),
        ))
    }

    fn remote_address(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<Resource<HostName>>> {
        let ip = self.table.get(&this)?.connection().map(|c| c.remote.ip());
        self.push_address(ip)
    }

    fn remote_port(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<String> {
        Ok(port_string(
            self.table.get(&this)?.connection().map(|c| c.remote),
        ))
    }

    fn remote_host_name(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<Option<Resource<HostName>>> {
        let name = self.table.get(&this)?.remote_host_name().cloned();
        name.map(|n| self.table.push(n))
            .transpose()
            .map_err(Into::into)
    }

    fn remote_service_name(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.remote_service_name().to_string())
    }

    fn protection_level(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<SocketProtectionLevel> {
        Ok(self.table.get(&this)?.protection_level())
    }

    fn round_trip_time_statistics(
        &mut self,
        this: Resource<StreamSocket>,
    ) -> wasmtime::Result<RoundTripTimeStatistics> {
        Ok(self.table.get(&this)?.round_trip_time_statistics())
    }

    fn drop(&mut self, this: Resource<StreamSocket>) -> wasmtime::Result<()> {
        let socket = self.table.delete(this)?;
        // Queued writes are still sent: the background flush keeps the connection until then.
        if let Some(connection) = socket.connection() {
            connection.writer.start_flush();
        }
        Ok(())
    }
}
