//! `sockhost:sockets/stream-socket-listener`.

use super::ok;
use crate::bindings::stream_socket_listener::{self, HostStreamSocketListener};
use crate::bindings::types::{SocketProtectionLevel, SocketQualityOfService};
use crate::conv::{SocketResult, invalid_argument};
use crate::ctx::SocketsCtxView;
use crate::host_name::HostName;
use crate::resolve::Transport;
use crate::socket::listener::StreamSocketListener;
use crate::socket::stream::StreamSocket;
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, subscribe};

impl stream_socket_listener::Host for SocketsCtxView<'_> {}

impl HostStreamSocketListener for SocketsCtxView<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<StreamSocketListener>> {
        Ok(self.table.push(StreamSocketListener::default())?)
    }

    fn bind_service_name(
        &mut self,
        this: Resource<StreamSocketListener>,
        service: String,
        level: SocketProtectionLevel,
    ) -> SocketResult<()> {
        match self.bind_address(None, &service, Transport::Tcp)? {
            Ok(addr) => ok(self.table.get_mut(&this)?.bind(self.ctx, addr, level)),
            Err(e) => ok(Err(e)),
        }
    }

    fn bind_endpoint(
        &mut self,
        this: Resource<StreamSocketListener>,
        host: Option<Resource<HostName>>,
        service: String,
    ) -> SocketResult<()> {
        match self.bind_address(host.as_ref(), &service, Transport::Tcp)? {
            Ok(addr) => ok(self.table.get_mut(&this)?.bind(
                self.ctx,
                addr,
                SocketProtectionLevel::PlainSocket,
            )),
            Err(e) => ok(Err(e)),
        }
    }

    async fn accept(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> SocketResult<Resource<StreamSocket>> {
        match self.table.get_mut(&this)?.accept().await {
            Ok(socket) => Ok(Ok(self.table.push(socket)?)),
            Err(e) => ok(Err(e)),
        }
    }

    fn subscribe(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, this)
    }

    fn enable_connection_received(
        &mut self,
        this: Resource<StreamSocketListener>,
        tag: String,
    ) -> SocketResult<()> {
        let events = match self.ctx.event_sender() {
            Ok(events) => events,
            Err(e) => return ok(Err(e)),
        };
        ok(self
            .table
            .get_mut(&this)?
            .enable_connection_received(events, tag))
    }

    fn cancel_io(&mut self, this: Resource<StreamSocketListener>) -> SocketResult<()> {
        self.table.get_mut(&this)?.cancel_io();
        Ok(Ok(()))
    }

    fn enable_transfer_ownership(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> SocketResult<()> {
        self.enable_transfer(&this)
    }

    fn transfer_ownership(
        &mut self,
        this: Resource<StreamSocketListener>,
        socket_id: String,
        context: Vec<u8>,
    ) -> SocketResult<()> {
        self.transfer(&this, socket_id, context, None)
    }

    fn close(&mut self, this: Resource<StreamSocketListener>) -> wasmtime::Result<()> {
        self.table.get_mut(&this)?.close();
        Ok(())
    }

    fn no_delay(&mut self, this: Resource<StreamSocketListener>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.control().no_delay)
    }

    fn set_no_delay(
        &mut self,
        this: Resource<StreamSocketListener>,
        value: bool,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.no_delay = value))
    }

    fn keep_alive(&mut self, this: Resource<StreamSocketListener>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.control().keep_alive)
    }

    fn set_keep_alive(
        &mut self,
        this: Resource<StreamSocketListener>,
        value: bool,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.keep_alive = value))
    }

    fn outbound_buffer_size_in_bytes(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> wasmtime::Result<u32> {
        Ok(self.table.get(&this)?.control().outbound_buffer_size)
    }

    fn set_outbound_buffer_size_in_bytes(
        &mut self,
        this: Resource<StreamSocketListener>,
        value: u32,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.outbound_buffer_size = value))
    }

    fn outbound_unicast_hop_limit(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> wasmtime::Result<u8> {
        Ok(self.table.get(&this)?.control().hop_limit)
    }

    fn set_outbound_unicast_hop_limit(
        &mut self,
        this: Resource<StreamSocketListener>,
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
        this: Resource<StreamSocketListener>,
    ) -> wasmtime::Result<SocketQualityOfService> {
        Ok(self.table.get(&this)?.control().quality_of_service)
    }

    fn set_quality_of_service(
        &mut self,
        this: Resource<StreamSocketListener>,
        value: SocketQualityOfService,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.quality_of_service = value))
    }

    fn server_identity(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.tls().identity.clone())
    }

    fn set_server_identity(
        &mut self,
        this: Resource<StreamSocketListener>,
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
            .set_tls(|t| t.identity = identity))
    }

    fn client_certificate_required(
        &mut self,
        this: Resource<StreamSocketListener>,
    ) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.tls().client_certificate_required)
    }

    fn set_client_certificate_required(
        &mut self,
        this: Resource<StreamSocketListener>,
        value: bool,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_tls(|t| t.client_certificate_required = value))
    }

    fn local_port(&mut self, this: Resource<StreamSocketListener>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.local_port())
    }

    fn drop(&mut self, this: Resource<StreamSocketListener>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
