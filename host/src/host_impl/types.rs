//! `sockhost:sockets/types`: `get-status`, `stream-error-status` and `host-name`.

use super::ok;
use crate::bindings::types::{self, HostNameType, SocketError, SocketErrorStatus};
use crate::conv::{SocketResult, StreamFailure, io_error, status_from_errno};
use crate::ctx::SocketsCtxView;
use crate::host_name::HostName;
use std::cmp::Ordering;
use wasmtime::component::Resource;

impl types::Host for SocketsCtxView<'_> {
    fn get_status(&mut self, os_error: i32) -> wasmtime::Result<SocketErrorStatus> {
        Ok(status_from_errno(os_error))
    }

    fn stream_error_status(
        &mut self,
        error: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<SocketError>> {
        let error = self.table.get(&error)?;
        if let Some(StreamFailure(socket_error)) = error.downcast_ref::<StreamFailure>() {
            return Ok(Some(socket_error.clone()));
        }
        Ok(error
            .downcast_ref::<std::io::Error>()
            .map(|e| io_error(e, "stream")))
    }
}

impl types::HostHostName for SocketsCtxView<'_> {
    fn parse(&mut self, host_name: String) -> SocketResult<Resource<HostName>> {
        match HostName::parse(&host_name) {
            Ok(name) => Ok(Ok(self.table.push(name)?)),
            Err(e) => ok(Err(e)),
        }
    }

    fn raw_name(&mut self, this: Resource<HostName>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.raw_name().to_string())
    }

    fn canonical_name(&mut self, this: Resource<HostName>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.canonical_name().to_string())
    }

    fn display_name(&mut self, this: Resource<HostName>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.display_name().to_string())
    }

    fn type_(&mut self, this: Resource<HostName>) -> wasmtime::Result<HostNameType> {
        Ok(self.table.get(&this)?.kind())
    }

    fn is_equal(
        &mut self,
        this: Resource<HostName>,
        other: Resource<HostName>,
    ) -> wasmtime::Result<bool> {
        let this = self.table.get(&this)?.canonical_name();
        Ok(this == self.table.get(&other)?.canonical_name())
    }

    fn compare(&mut self, value1: String, value2: String) -> SocketResult<i32> {
        let compared = HostName::parse(&value1).and_then(|a| {
            let b = HostName::parse(&value2)?;
            Ok(match a.canonical_name().cmp(b.canonical_name()) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            })
        });
        ok(compared)
    }

    fn drop(&mut self, this: Resource<HostName>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
