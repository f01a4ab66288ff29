//! `sockhost:sockets/socket-activity`, and the `transfer-ownership` shared by the resources.

use super::ok;
use crate::bindings::socket_activity::{self, SocketActivityInformation};
use crate::broker::Transferable;
use crate::conv::{SocketResult, invalid_argument};
use crate::ctx::SocketsCtxView;
use wasmtime::component::Resource;

impl socket_activity::Host for SocketsCtxView<'_> {
    fn all_sockets(&mut self) -> wasmtime::Result<Vec<SocketActivityInformation>> {
        Ok(self.ctx.broker().list())
    }
}

impl SocketsCtxView<'_> {
    /// `enable-transfer-ownership` of any socket resource.
    pub(crate) fn enable_transfer<T: Transferable>(
        &mut self,
        this: &Resource<T>,
    ) -> SocketResult<()> {
        if let Err(e) = self.ctx.event_sender() {
            return ok(Err(e));
        }
        self.table.get_mut(this)?.allow_transfer();
        Ok(Ok(()))
    }

    /// `transfer-ownership` of any socket resource: hands it to the app's broker.
    pub(crate) fn transfer<T: Transferable>(
        &mut self,
        this: &Resource<T>,
        id: String,
        context: Vec<u8>,
        keep_alive: Option<std::time::Duration>,
    ) -> SocketResult<()> {
        let events = match self.ctx.event_sender() {
            Ok(events) => events,
            Err(e) => return ok(Err(e)),
        };
        // Checked before the socket leaves the guest's resource, so a refusal loses nothing.
        if self.ctx.broker().contains(&id) {
            return ok(Err(invalid_argument(format!(
                "a brokered socket is already named {id:?}"
            ))));
        }
        let socket = match self.table.get_mut(this)?.take_brokered() {
            Ok(socket) => socket,
            Err(e) => return ok(Err(e)),
        };
        ok(self
            .ctx
            .broker()
            .transfer(id, context, socket, keep_alive, events))
    }
}
