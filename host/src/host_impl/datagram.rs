//! `sockhost:sockets/datagram-socket`.

use super::ok;
use crate::bindings::datagram_socket::{self, DatagramMessage, HostDatagramSocket};
use crate::bindings::types::{EndpointPair, SocketQualityOfService};
use crate::conv::{SocketResult, port_string};
use crate::ctx::SocketsCtxView;
use crate::host_name::HostName;
use crate::resolve::Transport;
use crate::socket::datagram::{self as core, DatagramSocket};
use crate::socket::stream::{local_endpoint, require_remote};
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, subscribe};
use wasmtime_wasi_io::streams::DynOutputStream;

impl SocketsCtxView<'_> {
    /// Hands a received datagram to the guest.
    pub(crate) fn push_message(
        &mut self,
        message: core::DatagramMessage,
    ) -> wasmtime::Result<DatagramMessage> {
        Ok(DatagramMessage {
            remote_address: self.table.push(HostName::from_ip(message.remote.ip()))?,
            remote_port: message.remote.port().to_string(),
            local_address: self.table.push(HostName::from_ip(message.local))?,
            data: message.data,
        })
    }
}

impl datagram_socket::Host for SocketsCtxView<'_> {}

impl HostDatagramSocket for SocketsCtxView<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<DatagramSocket>> {
        Ok(self.table.push(DatagramSocket::default())?)
    }

    fn bind_service_name(
        &mut self,
        this: Resource<DatagramSocket>,
        service: String,
    ) -> SocketResult<()> {
        match self.bind_address(None, &service, Transport::Udp)? {
            Ok(addr) => ok(self.table.get_mut(&this)?.bind(self.ctx, addr)),
            Err(e) => ok(Err(e)),
        }
    }

    fn bind_endpoint(
        &mut self,
        this: Resource<DatagramSocket>,
        host: Option<Resource<HostName>>,
        service: String,
    ) -> SocketResult<()> {
        match self.bind_address(host.as_ref(), &service, Transport::Udp)? {
            Ok(addr) => ok(self.table.get_mut(&this)?.bind(self.ctx, addr)),
            Err(e) => ok(Err(e)),
        }
    }

    async fn connect(
        &mut self,
        this: Resource<DatagramSocket>,
        host: Resource<HostName>,
        service: String,
    ) -> SocketResult<()> {
        let host = self.host_name(&host)?;
        ok(self
            .table
            .get_mut(&this)?
            .connect(self.ctx, &host, &service)
            .await)
    }

    async fn connect_endpoint_pair(
        &mut self,
        this: Resource<DatagramSocket>,
        pair: EndpointPair,
    ) -> SocketResult<()> {
        let host = match require_remote(&pair.remote_host_name, &pair.remote_service_name) {
            Ok(host) => host,
            Err(e) => return ok(Err(e)),
        };
        let local = local_endpoint(
            self.ctx,
            pair.local_host_name.as_deref(),
            &pair.local_service_name,
            Transport::Udp,
        );
        let socket = self.table.get_mut(&this)?;
        let result = match local {
            Ok(local) => socket.bind(self.ctx, local),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            return ok(Err(e));
        }
        ok(socket
            .connect(self.ctx, &host, &pair.remote_service_name)
            .await)
    }

    fn output_stream(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> SocketResult<Resource<DynOutputStream>> {
        let writer = match self.table.get_mut(&this)?.connected_writer() {
            Ok(writer) => writer,
            Err(e) => return ok(Err(e)),
        };
        let output: DynOutputStream = Box::new(writer);
        Ok(Ok(self.table.push_child(output, &this)?))
    }

    async fn get_output_stream(
        &mut self,
        this: Resource<DatagramSocket>,
        host: Resource<HostName>,
        service: String,
    ) -> SocketResult<Resource<DynOutputStream>> {
        let host = self.host_name(&host)?;
        let writer = match self
            .table
            .get_mut(&this)?
            .writer_to(self.ctx, &host, &service)
            .await
        {
            Ok(writer) => writer,
            Err(e) => return ok(Err(e)),
        };
        let output: DynOutputStream = Box::new(writer);
        Ok(Ok(self.table.push_child(output, &this)?))
    }

    async fn send_to(
        &mut self,
        this: Resource<DatagramSocket>,
        data: Vec<u8>,
        host: Resource<HostName>,
        service: String,
    ) -> SocketResult<()> {
        let host = self.host_name(&host)?;
        ok(self
            .table
            .get_mut(&this)?
            .send_to(self.ctx, &data, &host, &service)
            .await)
    }

    async fn receive(&mut self, this: Resource<DatagramSocket>) -> SocketResult<DatagramMessage> {
        match self.table.get_mut(&this)?.receive().await {
            Ok(message) => Ok(Ok(self.push_message(message)?)),
            Err(e) => ok(Err(e)),
        }
    }

    fn subscribe(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.table, this)
    }

    fn enable_message_received(
        &mut self,
        this: Resource<DatagramSocket>,
        tag: String,
    ) -> SocketResult<()> {
        let events = match self.ctx.event_sender() {
            Ok(events) => events,
            Err(e) => return ok(Err(e)),
        };
        ok(self
            .table
            .get_mut(&this)?
            .enable_message_received(events, tag))
    }

    fn join_multicast_group(
        &mut self,
        this: Resource<DatagramSocket>,
        group: Resource<HostName>,
    ) -> SocketResult<()> {
        let group = self.host_name(&group)?;
        ok(self.table.get_mut(&this)?.join_multicast_group(&group))
    }

    async fn cancel_io(&mut self, this: Resource<DatagramSocket>) -> SocketResult<()> {
        ok(self.table.get_mut(&this)?.cancel_io().await)
    }

    fn enable_transfer_ownership(&mut self, this: Resource<DatagramSocket>) -> SocketResult<()> {
        self.enable_transfer(&this)
    }

    fn transfer_ownership(
        &mut self,
        this: Resource<DatagramSocket>,
        socket_id: String,
        context: Vec<u8>,
    ) -> SocketResult<()> {
        self.transfer(&this, socket_id, context, None)
    }

    fn close(&mut self, this: Resource<DatagramSocket>) -> wasmtime::Result<()> {
        self.table.get_mut(&this)?.close();
        Ok(())
    }

    fn quality_of_service(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> wasmtime::Result<SocketQualityOfService> {
        Ok(self.table.get(&this)?.control().quality_of_service)
    }

    fn set_quality_of_service(
        &mut self,
        this: Resource<DatagramSocket>,
        value: SocketQualityOfService,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.quality_of_service = value))
    }

    fn outbound_unicast_hop_limit(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> wasmtime::Result<u8> {
        Ok(self.table.get(&this)?.control().hop_limit)
    }

    fn set_outbound_unicast_hop_limit(
        &mut self,
        this: Resource<DatagramSocket>,
        value: u8,
    ) -> SocketResult<()> {
        ok(self.table.get_mut(&this)?.set_hop_limit(value))
    }

    fn inbound_buffer_size_in_bytes(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> wasmtime::Result<u32> {
        Ok(self.table.get(&this)?.inbound_buffer_size())
    }

    fn set_inbound_buffer_size_in_bytes(
        &mut self,
        this: Resource<DatagramSocket>,
        value: u32,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.inbound_buffer_size = value))
    }

    fn dont_fragment(&mut self, this: Resource<DatagramSocket>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.control().dont_fragment)
    }

    fn set_dont_fragment(
        &mut self,
        this: Resource<DatagramSocket>,
        value: bool,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.dont_fragment = value))
    }

    fn multicast_only(&mut self, this: Resource<DatagramSocket>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.multicast_only())
    }

    fn set_multicast_only(
        &mut self,
        this: Resource<DatagramSocket>,
        value: bool,
    ) -> SocketResult<()> {
        ok(self
            .table
            .get_mut(&this)?
            .set_control(|c| c.multicast_only = value))
    }

    fn local_address(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> wasmtime::Result<Option<Resource<HostName>>> {
        let ip = self.table.get(&this)?.local().map(|a| a.ip());
        self.push_address(ip)
    }

    fn local_port(&mut self, this: Resource<DatagramSocket>) -> wasmtime::Result<String> {
        Ok(port_string(self.table.get(&this)?.local()))
    }

    fn remote_address(
        &mut self,
        this: Resource<DatagramSocket>,
    ) -> wasmtime::Result<Option<Resource<HostName>>> {
        let ip = self.table.get(&this)?.remote().map(|a| a.ip());
        self.push_address(ip)
    }

    fn remote_port(&mut self, this: Resource<DatagramSocket>) -> wasmtime::Result<String> {
        Ok(port_string(self.table.get(&this)?.remote()))
    }

    fn drop(&mut self, this: Resource<DatagramSocket>) -> wasmtime::Result<()> {
        self.table.delete(this)?.release();
        Ok(())
    }
}
