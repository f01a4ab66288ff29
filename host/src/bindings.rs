//! Every `bindgen!` setting for the `sockhost:sockets` WIT package, in one place.
//!
//! Functions that wait on the network are `async`; the rest are plain calls. All are
//! `trappable`: the outer `wasmtime::Result` is a trap (a guest's misuse of a handle), the
//! inner `Result<_, SocketError>` is a network failure returned to the guest as a value.

#[allow(missing_docs, reason = "bindgen-generated code")]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sockhost:sockets/service",
        imports: {
            "sockhost:sockets/stream-socket.[method]stream-socket.connect": async | trappable,
            "sockhost:sockets/stream-socket.[method]stream-socket.connect-endpoint-pair": async | trappable,
            "sockhost:sockets/stream-socket.[method]stream-socket.upgrade-to-ssl": async | trappable,
            "sockhost:sockets/stream-socket.[method]stream-socket.cancel-io": async | trappable,
            "sockhost:sockets/stream-socket.[method]stream-socket.close": async | trappable,
            "sockhost:sockets/stream-socket.get-endpoint-pairs": async | trappable,
            "sockhost:sockets/stream-socket-listener.[method]stream-socket-listener.accept": async | trappable,
            "sockhost:sockets/datagram-socket.[method]datagram-socket.connect": async | trappable,
            "sockhost:sockets/datagram-socket.[method]datagram-socket.connect-endpoint-pair": async | trappable,
            "sockhost:sockets/datagram-socket.[method]datagram-socket.get-output-stream": async | trappable,
            "sockhost:sockets/datagram-socket.[method]datagram-socket.send-to": async | trappable,
            "sockhost:sockets/datagram-socket.[method]datagram-socket.receive": async | trappable,
            "sockhost:sockets/datagram-socket.[method]datagram-socket.cancel-io": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "wasi:io/poll": wasmtime_wasi_io::bindings::wasi::io::poll,
            "wasi:io/streams": wasmtime_wasi_io::bindings::wasi::io::streams,
            "wasi:io/error": wasmtime_wasi_io::bindings::wasi::io::error,
            "sockhost:sockets/types.host-name": crate::host_name::HostName,
            "sockhost:sockets/stream-socket.stream-socket": crate::socket::stream::StreamSocket,
            "sockhost:sockets/stream-socket-listener.stream-socket-listener": crate::socket::listener::StreamSocketListener,
            "sockhost:sockets/datagram-socket.datagram-socket": crate::socket::datagram::DatagramSocket,
        },
        require_store_data_send: true,
    });
}

pub use generated::Service;
pub use generated::ServicePre;
pub use generated::exports;
pub use generated::sockhost::sockets::*;
