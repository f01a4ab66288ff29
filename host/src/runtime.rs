//! Loading components and running them: `run` once, then each socket event in a fresh
//! instance of the component, many at a time.

use crate::bindings::{ServicePre, datagram_socket, stream_socket_listener};
use crate::ctx::{AppId, PortRegistry, SocketEvent, SocketsCtx, SocketsCtxView, SocketsView};
use crate::policy::NetworkPolicy;
use crate::resolve::Transport;
use crate::socket::datagram::DatagramSocket;
use crate::tls::TlsConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The name of the exported handlers interface.
const HANDLERS_EXPORT: &str = "sockhost:sockets/handlers@0.1.0";
/// How many events may wait for a handler before delivery waits too.
const EVENT_QUEUE: usize = 1024;
/// How many handler instances run at once by default.
pub const DEFAULT_MAX_HANDLERS: usize = 1024;

/// The data of every store: WASI's state, the resource table and the socket state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    sockets: SocketsCtx,
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
    max_handlers: usize,
    next_app: AtomicU64,
}

/// A compiled component, linked and ready to instantiate.
#[derive(Clone)]
pub struct Program {
    pre: InstancePre<HostState>,
    handlers: Option<ServicePre<HostState>>,
    name: String,
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
    /// A runtime with the given network policy.
    pub fn new(policy: NetworkPolicy) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::add_to_linker(&mut linker)?;
        Ok(Self {
            engine,
            linker,
            policy: Arc::new(policy),
            tls: Arc::new(TlsConfig::default()),
            ports: Arc::new(PortRegistry::default()),
            max_handlers: DEFAULT_MAX_HANDLERS,
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
            max_handlers: self.max_handlers,
            next_app: AtomicU64::new(1),
        }
    }

    /// Gives the runtime's guests these TLS identities, trust roots and revocation lists.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Arc::new(tls);
        self
    }

    /// Sets how many handler instances may run at once.
    pub fn set_max_handlers(&mut self, max: usize) {
        self.max_handlers = max.max(1);
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
            max_handlers: self.max_handlers,
        };
        RunningApp {
            id,
            ports: self.ports.clone(),
            task: tokio::spawn(app.run()),
        }
    }
}

/// A started app.
pub struct RunningApp {
    id: AppId,
    ports: Arc<PortRegistry>,
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

    /// Stops the app at once: its instances are dropped and their sockets closed.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything one app's task needs.
struct App {
    id: AppId,
    program: Program,
    options: RunOptions,
    engine: Engine,
    policy: Arc<NetworkPolicy>,
    tls: Arc<TlsConfig>,
    ports: Arc<PortRegistry>,
    max_handlers: usize,
}

impl App {
    fn store(&self, events: Option<mpsc::WeakSender<SocketEvent>>) -> Store<HostState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&[self.program.name.as_str()])
            .args(&self.options.args);
        match &self.options.stdout {
            Some(pipe) => wasi.stdout(pipe.clone()),
            None => wasi.inherit_stdout(),
        };
        match &self.options.stderr {
            Some(pipe) => wasi.stderr(pipe.clone()),
            None => wasi.inherit_stderr(),
        };
        if self.policy.inherit_network {
            wasi.inherit_network().allow_ip_name_lookup(true);
        }
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            sockets: SocketsCtx::new(
                self.id,
                self.policy.clone(),
                self.tls.clone(),
                self.ports.clone(),
                events,
            ),
        };
        Store::new(&self.engine, state)
    }

    async fn run(self) -> wasmtime::Result<AppExit> {
        let (events, mut received) = mpsc::channel(EVENT_QUEUE);
        let weak = self.program.handlers.as_ref().map(|_| events.downgrade());
        let mut store = self.store(weak.clone());
        let outcome = match &self.program.handlers {
            Some(service) => {
                let instance = service.instantiate_async(&mut store).await?;
                instance.wasi_cli_run().call_run(&mut store).await
            }
            None => {
                let command = CommandPre::new(self.program.pre.clone())?
                    .instantiate_async(&mut store)
                    .await?;
                command.wasi_cli_run().call_run(&mut store).await
            }
        };
        let exit = match outcome {
            Ok(Ok(())) => AppExit {
                code: 0,
                trap: None,
            },
            Ok(Err(())) => AppExit {
                code: 1,
                trap: None,
            },
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => {
                    return Ok(AppExit {
                        code: *code,
                        trap: None,
                    });
                }
                None => {
                    return Ok(AppExit {
                        code: 1,
                        trap: Some(format!("{e:?}")),
                    });
                }
            },
        };
        // Serve events while some socket of `run`'s store delivers them; the store stays
        // alive so that its listeners and sockets stay open.
        drop(events);
        let Some(service) = self.program.handlers.clone().filter(|_| exit.code == 0) else {
            return Ok(exit);
        };
        let limit = Arc::new(Semaphore::new(self.max_handlers));
        let app = Arc::new(self);
        while let Some(event) = received.recv().await {
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let app = app.clone();
            let service = service.clone();
            let weak = weak.clone();
            tokio::spawn(async move {
                if let Err(e) = app.handle(&service, weak, event).await {
                    tracing::warn!(app = app.id, error = ?e, "handler failed; only its own event is lost");
                }
                drop(permit);
            });
        }
        drop(store);
        Ok(exit)
    }

    /// Runs one event's handler in a fresh instance.
    async fn handle(
        &self,
        service: &ServicePre<HostState>,
        events: Option<mpsc::WeakSender<SocketEvent>>,
        event: SocketEvent,
    ) -> wasmtime::Result<()> {
        let mut store = self.store(events);
        let instance = service.instantiate_async(&mut store).await?;
        let handlers = instance.sockhost_sockets_handlers();
        match event {
            SocketEvent::ConnectionReceived { tag, socket } => {
                let socket = store.data_mut().table.push(*socket)?;
                let event = stream_socket_listener::ConnectionReceivedEvent {
                    listener_tag: tag,
                    socket,
                };
                handlers.call_connection_received(&mut store, &event).await
            }
            SocketEvent::MessageReceived {
                tag,
                socket,
                message,
            } => {
                let mut view = store.data_mut().sockets();
                let message = view.push_message(message)?;
                let socket = view.table.push(DatagramSocket::shared(socket))?;
                let event = datagram_socket::MessageReceivedEvent {
                    socket_tag: tag,
                    socket,
                    message,
                };
                handlers.call_message_received(&mut store, &event).await
            }
        }
    }
}
