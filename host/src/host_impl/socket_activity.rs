//! `sockhost:sockets/socket-activity`, and the `transfer-ownership` shared by the resources.

use super::ok;
use crate::bindings::socket_activity::{self, SocketActivityInformation};
use crate::bindings::types::SocketError;
use crate::broker::BrokeredSocket;
use crate::conv::SocketResult;
use crate::ctx::SocketsCtxView;

impl socket_activity::Host for SocketsCtxView<'_> {
    fn all_sockets(&mut self) -> wasmtime::Result<Vec<SocketActivityInformation>> {
        Ok(self.ctx.broker().list())
    }
}

impl SocketsCtxView<'_> {
    /// Hands a socket taken from the guest's resource to the app's broker.
    pub(crate) fn transfer(
        &mut self,
        id: String,
        context: Vec<u8>,
        take: impl FnOnce(&mut Self) -> wasmtime::Result<Result<BrokeredSocket, SocketError>>,
    ) -> SocketResult<()> {
        let events = match self.ctx.event_sender() {
            Ok(events) => events,
            Err(e) => return ok(Err(e)),
        };
        if self.ctx.broker().list().iter().any(|s| s.id == id) {
            return ok(Err(crate::conv::invalid_argument(format!(
                "a brokered socket is already named {id:?}"
            ))));
        }
        let socket = match take(self)? {
            Ok(socket) => socket,
            Err(e) => return ok(Err(e)),
        };
        ok(self.ctx.broker().transfer(id, context, socket, events))
    }
}
