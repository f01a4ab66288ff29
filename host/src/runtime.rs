//! Loading components and running them: `run` once, then each socket event in a fresh
//! instance of the component, many at a time.

use crate::app::App;
use crate::bindings::ServicePre;
use crate::ctx::{AppId, PortRegistry, SocketsCtx, SocketsCtxView, SocketsView};
use crate::policy::NetworkPolicy;
use crate::resolve::Transport;
use crate::tls::TlsConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The name of the exported handlers interface.
const HANDLERS_EXPORT: &str = "sockhost:sockets/handlers@0.1.0";

pub use crate::app::HandlerLimits;

/// Instance slots beyond the handlers': an app's `run` instance and the idle datagram
/// handler instances it keeps for reuse (up to 64), which hold slots but no handler permit.
/// The pool is the runtime's, shared by its apps: sized for one app (as the CLI runs);
/// several busy apps share `max_concurrent` handler slots between them.
const APP_SLOTS: usize = 128;
/// The most handlers one runtime can run at once (`--max-handlers`). Every slot reserves
/// 8 GiB of address space (two 4 GiB linear-memory reservations, which spare guests bounds
/// checks), so 10,240 handlers keep a runtime near 82 TiB of the 128 TiB a process has (a
/// `ulimit -v` below that makes the runtime fail to start). Every slot's async stack costs two
/// memory mappings from the start and a live instance about two more: about 42,000 at the
/// maximum, under Linux's default `vm.max_map_count` of 65,530.
pub const MAX_HANDLERS: usize = 10_240;
/// The most linear memory one guest instance may grow to.
pub const MAX_GUEST_MEMORY: usize = 1 << 30;

/// The data of every store: WASI's state, the resource table and the socket state.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) sockets: SocketsCtx,
    /// Epoch ticks the instance has spent executing wasm since it was (re)used.
    pub(crate) cpu_ticks: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl SocketsView for HostState {
    fn sockets(&mut self) -> SocketsCtxView<'_> {
        SocketsCtxView {
            ctx: &mut self.sockets,
            table: &mut self.table,
        }
    }
}

/// Compiles and runs components under one network policy.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    policy: Arc<NetworkPolicy>,
    tls: Arc<TlsConfig>,
    ports: Arc<PortRegistry>,
    limits: HandlerLimits,
    /// How many handlers the instance pool has room for.
    handler_slots: usize,
    next_app: AtomicU64,
}

/// A compiled component, linked and ready to instantiate.
#[derive(Clone)]
pub struct Program {
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) handlers: Option<ServicePre<HostState>>,
    pub(crate) name: String,
}

impl Program {
    /// Whether the component exports `sockhost:sockets/handlers`.
    pub fn has_handlers(&self) -> bool {
        self.handlers.is_some()
    }
}

/// How to run a component: its arguments and where its output goes.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The arguments after the program name.
    pub args: Vec<String>,
    /// Captures standard output instead of inheriting it.
    pub stdout: Option<MemoryOutputPipe>,
    /// Captures standard error instead of inheriting it.
    pub stderr: Option<MemoryOutputPipe>,
    /// Listening sockets handed over by the process that started the host (systemd socket
    /// activation), by name; they start in the app's broker.
    pub inherited_listeners: Vec<(String, Arc<std::net::TcpListener>)>,
}

impl RunOptions {
    /// Options with these arguments and inherited output.
    pub fn new<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// How an app ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppExit {
    /// The exit code: 0 for success, 1 for `run` returning an error, or what the guest passed
    /// to `exit`.
    pub code: i32,
    /// The trap, if the guest's `run` trapped.
    pub trap: Option<String>,
}

impl Runtime {
    /// A runtime with the given network policy and the default [`HandlerLimits`].
    pub fn new(policy: NetworkPolicy) -> wasmtime::Result<Self> {
        Self::with_limits(policy, HandlerLimits::default())
    }

    /// A runtime with the given network policy whose instance pool is sized for `limits`:
    /// `max_concurrent` handlers (at most [`MAX_HANDLERS`]) plus room for apps.
    pub fn with_limits(policy: NetworkPolicy, limits: HandlerLimits) -> wasmtime::Result<Self> {
        check_handler_count(limits.max_concurrent, MAX_HANDLERS)?;
        let slots = u32::try_from(limits.max_concurrent + APP_SLOTS)?;
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Epochs let the host stop a handler that loops and make every guest yield its
        // thread regularly (see `crate::app`).
        config.epoch_interruption(true);
        // Handler instances come and go with connections: the pooling allocator keeps their
        // memories, tables and stacks in preallocated slots instead of mapping new ones.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 4)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(slots)
            .max_memory_size(MAX_GUEST_MEMORY)
            .pagemap_scan(wasmtime::Enabled::Auto);
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a freed slot's dirty pages are reset
        // in place rather than unmapped, so the next instance takes no page faults on them:
        // ~125 us per connection became ~57-70 us (`sockhost-bench connection`). The pages a
        // slot touched stay resident after it is freed. Without PAGEMAP_SCAN, keeping memory
        // resident would zero the whole first MiB of every freed slot, so it stays off.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Copying our guests' few KiB of data segments costs no more than mapping an image,
        // and saves a memory mapping per live instance, which 10,000 idle connections need.
        config.memory_init_cow(false);
        let engine = Engine::new(&config)?;
        crate::app::start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::add_to_linker(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            policy: Arc::new(policy),
            tls: Arc::new(TlsConfig::default()),
            ports: Arc::new(PortRegistry::default()),
            handler_slots: limits.max_concurrent,
            limits,
            next_app: AtomicU64::new(1),
        })
    }

    /// A runtime with another policy that shares this one's engine, linker and compiled
    /// programs (a [`Program`] loaded by either runs in both), with its own port registry.
    pub fn with_policy(&self, policy: NetworkPolicy) -> Self {
        Self {
            engine: self.engine.clone(),
            linker: self.linker.clone(),
            policy: Arc::new(policy),
            tls: self.tls.clone(),
            ports: Arc::new(PortRegistry::default()),
            limits: self.limits.clone(),
            handler_slots: self.handler_slots,
            next_app: AtomicU64::new(1),
        }
    }

    /// Gives the runtime's guests these TLS identities, trust roots and revocation lists.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Arc::new(tls);
        self
    }

    /// Sets the limits on handler instances; `max_concurrent` must fit the instance pool
    /// this runtime was made with (see [`Runtime::with_limits`]).
    pub fn set_limits(&mut self, limits: HandlerLimits) -> wasmtime::Result<()> {
        check_handler_count(limits.max_concurrent, self.handler_slots)?;
        self.limits = limits;
        Ok(())
    }

    /// The registry of ports bound by this runtime's apps.
    pub fn ports(&self) -> &Arc<PortRegistry> {
        &self.ports
    }

    /// Compiles a component from a file.
    pub fn load_file(&self, path: &Path) -> wasmtime::Result<Program> {
        let bytes = std::fs::read(path)
            .map_err(|e| wasmtime::format_err!("cannot read {}: {e}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.load(&name, &bytes)
    }

    /// Compiles a component from its bytes; `name` becomes its program name (`argv[0]`).
    pub fn load(&self, name: &str, bytes: &[u8]) -> wasmtime::Result<Program> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| e.context(format!("{name} is not a valid WebAssembly component")))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| e.context(format!("{name} needs imports this host does not provide")))?;
        let exports_handlers = component
            .component_type()
            .exports(&self.engine)
            .any(|(export, _)| export == HANDLERS_EXPORT);
        let handlers = if exports_handlers {
            Some(ServicePre::new(pre.clone())?)
        } else {
            None
        };
        Ok(Program {
            pre,
            handlers,
            name: name.to_string(),
        })
    }

    /// Starts an app: calls its `run`, then serves its socket events until no socket
    /// delivers events any more.
    pub fn start(&self, program: &Program, options: RunOptions) -> RunningApp {
        let id = self.next_app.fetch_add(1, Ordering::Relaxed);
        let app = App {
            id,
            program: program.clone(),
            options,
            engine: self.engine.clone(),
            policy: self.policy.clone(),
            tls: self.tls.clone(),
            ports: self.ports.clone(),
            limits: self.limits.clone(),
            broker: Arc::default(),
            idle_datagram_handlers: Default::default(),
        };
        let (shutdown, requested) = watch::channel(None);
        RunningApp {
            id,
            ports: self.ports.clone(),
            shutdown,
            task: tokio::spawn(app.run(requested)),
        }
    }
}

/// Refuses a handler count of 0 or above `most`.
fn check_handler_count(count: usize, most: usize) -> wasmtime::Result<()> {
    if count == 0 || count > most {
        wasmtime::bail!("the handler limit must be between 1 and {most}, not {count}");
    }
    Ok(())
}

/// A started app.
pub struct RunningApp {
    id: AppId,
    ports: Arc<PortRegistry>,
    shutdown: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<wasmtime::Result<AppExit>>,
}

impl RunningApp {
    /// The app's id in the port registry.
    pub fn id(&self) -> AppId {
        self.id
    }

    /// Waits until the app has bound a port and returns its address.
    pub async fn bound(&self, transport: Transport) -> SocketAddr {
        self.ports.wait_bound(self.id, transport).await
    }

    /// Whether the app has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the app ends.
    pub async fn wait(mut self) -> wasmtime::Result<AppExit> {
        (&mut self.task)
            .await
            .map_err(|e| wasmtime::format_err!("the app's task failed: {e}"))?
    }

    /// Starts a graceful shutdown: the app stops accepting connections and datagrams, and
    /// handlers that are running get `grace` to finish before they are stopped.
    pub fn shutdown(&self, grace: Duration) {
        let _ = self.shutdown.send(Some(grace));
    }

    /// A handle that can start the graceful shutdown after `wait` took the app.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Stops the app at once: its instances are dropped and their sockets closed.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Starts an app's graceful shutdown; see [`RunningApp::shutdown`].
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<Option<Duration>>);

impl ShutdownHandle {
    /// Starts the graceful shutdown with `grace` for running handlers.
    pub fn shutdown(&self, grace: Duration) {
        let _ = self.0.send(Some(grace));
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent: usize) -> HandlerLimits {
        HandlerLimits {
            max_concurrent,
            ..HandlerLimits::default()
        }
    }

    #[test]
    fn handler_limit_must_fit_the_pool() {
        let policy = NetworkPolicy::default;
        assert!(Runtime::with_limits(policy(), limits(MAX_HANDLERS + 1)).is_err());
        assert!(Runtime::with_limits(policy(), limits(0)).is_err());
        let mut runtime = Runtime::with_limits(policy(), limits(8)).unwrap();
        runtime.set_limits(limits(8)).unwrap();
        let err = runtime.set_limits(limits(9)).unwrap_err();
        assert!(err.to_string().contains("between 1 and 8, not 9"), "{err}");
        let mut other = runtime.with_policy(policy());
        assert!(other.set_limits(limits(9)).is_err());
    }
}
