//! sockhost: WebAssembly components with UWP-style sockets on native tokio sockets.
//!
//! The `sockhost:sockets` WIT package (in `wit/`) gives components the
//! `Windows.Networking.Sockets` programming model: `stream-socket`, `stream-socket-listener`,
//! `datagram-socket`, `host-name` and `socket-error-status`, with `wasi:io` streams whose
//! writes are batched until a flush, and exported `connection-received` / `message-received`
//! handlers that the host runs in fresh instances, concurrently.
//!
//! # Layout
//! - [`bindings`]: the one `bindgen!` for the WIT package.
//! - [`socket`]: the tokio cores, one per resource, each with its state machine.
//! - `host_impl`: thin adapters from the generated traits to the cores.
//! - [`conv`]: every conversion (errno and `io::Error` to `socket-error-status`, addresses).
//! - [`policy`]: the network policy (deny by default; `--allow-bind`, `--allow-connect`).
//! - [`ctx`]: per-instance state and the registry of bound ports.
//! - [`runtime`]: loading components, running them, and serving their events.
//!
//! # Embedding
//! ```no_run
//! use sockhost::runtime::{RunOptions, Runtime};
//! use sockhost::policy::NetworkPolicy;
//!
//! # async fn example() -> wasmtime::Result<()> {
//! let runtime = Runtime::new(NetworkPolicy::allow_all())?;
//! let program = runtime.load_file("tcp_echo_client.wasm".as_ref())?;
//! let app = runtime.start(&program, RunOptions::new(["localhost", "1337", "hello"]));
//! let exit = app.wait().await?;
//! assert_eq!(exit.code, 0);
//! # Ok(())
//! # }
//! ```

mod app;
pub mod bindings;
pub mod broker;
pub mod conv;
pub mod ctx;
mod host_impl;
pub mod host_name;
pub mod policy;
pub mod resolve;
pub mod runtime;
pub mod socket;
mod sys;
pub mod tls;

pub use ctx::{SocketsCtx, SocketsCtxView, SocketsView};
pub use sys::{inherited_listeners, raise_open_file_limit};

use wasmtime::component::{HasData, Linker};

/// Marks the socket state for `bindgen!`'s `add_to_linker` functions.
struct HasSockets;

impl HasData for HasSockets {
    type Data<'a> = SocketsCtxView<'a>;
}

/// Adds every `sockhost:sockets` import to `linker`. The `wasi:io` streams and pollables the
/// sockets hand out need `wasmtime_wasi::p2::add_to_linker_async` too.
pub fn add_to_linker<T: SocketsView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::types::add_to_linker::<T, HasSockets>(linker, T::sockets)?;
    bindings::stream_socket::add_to_linker::<T, HasSockets>(linker, T::sockets)?;
    bindings::stream_socket_listener::add_to_linker::<T, HasSockets>(linker, T::sockets)?;
    bindings::datagram_socket::add_to_linker::<T, HasSockets>(linker, T::sockets)?;
    bindings::socket_activity::add_to_linker::<T, HasSockets>(linker, T::sockets)?;
    Ok(())
}
