//! One app's life: `run` in its own instance, then each socket event in a fresh instance of
//! the component (from the pre-instantiated `InstancePre`), many at a time, within limits:
//!
//! - at most `max_concurrent` handlers run at once; further events wait in the kernel's queues;
//! - a handler that runs wasm for longer than `cpu_limit` in all is trapped (epoch
//!   interruption: a tick every 10 ms, counted only while the guest executes);
//! - a connection whose handler neither reads nor writes for `idle_timeout` is closed;
//! - every guest yields its thread at each tick, so a busy handler cannot starve the others.
//!
//! Handler instances share nothing with `run`'s instance but the sockets the event carries:
//! state a component wants in its handlers comes from its arguments, its environment, or the
//! event's tag.

use crate::bindings::{
    Service, ServicePre, datagram_socket, socket_activity as activity, stream_socket_listener,
};
use crate::broker::{Broker, BrokeredSocket};
use crate::ctx::{
    AppId, Delivered, EventSender, PortRegistry, SocketEvent, SocketsCtx, SocketsView,
    WeakEventSender,
};
use crate::policy::NetworkPolicy;
use crate::runtime::{AppExit, HostState, Program, RunOptions};
use crate::socket::datagram::{DatagramMessage, DatagramSocket, Delivery, MAX_DATAGRAM, SharedUdp};
use crate::socket::link::Link;
use crate::socket::listener::StreamSocketListener;
use crate::tls::TlsConfig;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// How often the engine's epoch advances.
const TICK: Duration = Duration::from_millis(10);
/// How many idle `message-received` instances an app keeps for reuse.
const DATAGRAM_INSTANCES: usize = 64;
/// How many events may wait for a handler before delivery waits too.
const EVENT_QUEUE: usize = 1024;

/// Limits on the handler instances of an app.
#[derive(Clone, Debug)]
pub struct HandlerLimits {
    /// How many handlers run at once (`--max-handlers`).
    pub max_concurrent: usize,
    /// How long a connection's handler may go without reading or writing (`--idle-timeout`);
    /// for a datagram's handler, how long it may run at all.
    pub idle_timeout: Duration,
    /// How much time a handler may spend executing wasm (`--cpu-limit`).
    pub cpu_limit: Duration,
}

impl Default for HandlerLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 1024,
            idle_timeout: Duration::from_secs(300),
            cpu_limit: Duration::from_secs(30),
        }
    }
}

/// Advances the engine's epoch every tick while the engine lives.
pub(crate) fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("sockhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawn the epoch thread");
}

/// Everything one app's task needs.
pub(crate) struct App {
    pub(crate) id: AppId,
    pub(crate) program: Program,
    pub(crate) options: RunOptions,
    pub(crate) engine: Engine,
    pub(crate) policy: Arc<NetworkPolicy>,
    pub(crate) tls: Arc<TlsConfig>,
    pub(crate) ports: Arc<PortRegistry>,
    pub(crate) limits: HandlerLimits,
    /// The app's brokered sockets, shared by all its instances.
    pub(crate) broker: Arc<Broker>,
    /// Instances that handled a datagram and wait for the next one (see `call_datagram_handler`).
    pub(crate) idle_datagram_handlers: std::sync::Mutex<Vec<(Store<HostState>, Service)>>,
}

impl App {
    /// A store for one instance; `cpu_limit` traps it after that much wasm execution.
    fn store(
        &self,
        events: Option<WeakEventSender>,
        cpu_limit: Option<Duration>,
    ) -> Store<HostState> {
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
                self.broker.clone(),
                events,
            ),
            cpu_ticks: 0,
        };
        let mut store = Store::new(&self.engine, state);
        // The callback runs at the first tick boundary the guest crosses while executing, so
        // counting calls counts the ticks it spent running wasm (plus one per host call that
        // spanned a boundary).
        let allowed = cpu_limit.map(|limit| (limit.as_millis() / TICK.as_millis()).max(1) as u64);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut cx| {
            let used = &mut cx.data_mut().cpu_ticks;
            *used += 1;
            if allowed.is_some_and(|allowed| *used > allowed) {
                wasmtime::bail!(
                    "the handler ran wasm for longer than its CPU limit and was stopped"
                );
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Runs the app: `run`, then its events until no socket delivers any or a shutdown is
    /// requested.
    pub(crate) async fn run(
        self,
        mut shutdown: watch::Receiver<Option<Duration>>,
    ) -> wasmtime::Result<AppExit> {
        let (events, mut received) = EventSender::channel(EVENT_QUEUE);
        let weak = self.program.handlers.as_ref().map(|_| events.downgrade());
        let mut store = self.store(weak.clone(), None);
        if let Err(e) = self.adopt_inherited(&store, &events) {
            return Ok(AppExit {
                code: 1,
                trap: Some(e.to_string()),
            });
        }
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
                Some(I32Exit(code)) => AppExit {
                    code: *code,
                    trap: None,
                },
                None => AppExit {
                    code: 1,
                    trap: Some(format!("{e:?}")),
                },
            },
        };
        // Serve events while some socket delivers them (a listener's delivery task, a
        // datagram socket's `serve_datagrams` task or a running handler holds each strong
        // sender); the store stays alive so its sockets stay open.
        drop(events);
        let Some(service) = self
            .program
            .handlers
            .clone()
            .filter(|_| exit.code == 0 && exit.trap.is_none())
        else {
            return Ok(exit);
        };
        let limit = Arc::new(Semaphore::new(self.limits.max_concurrent.max(1)));
        let app = Arc::new(self);
        let mut handlers = JoinSet::new();
        let grace = loop {
            tokio::select! {
                delivered = received.recv() => {
                    let Some(Delivered { event, keep_alive }) = delivered else { break None };
                    if let SocketEvent::MessagesEnabled { tag, socket, delivery } = event {
                        let source = DatagramSource { tag, socket, delivery, keep_alive };
                        let serve = app.clone().serve_datagrams(source, limit.clone(), shutdown.clone());
                        handlers.spawn(serve);
                        continue;
                    }
                    let Ok(permit) = limit.clone().acquire_owned().await else { break None };
                    let (app, service) = (app.clone(), service.clone());
                    // Boxed: the handler's future is a few KiB, which the task would copy
                    // at each move (spawn, completion) of every event.
                    handlers.spawn(Box::pin(async move {
                        if let Err(e) = app.handle(&service, Some(keep_alive.downgrade()), event).await {
                            tracing::warn!(app = app.id, error = %e, "handler failed; only its own event is lost");
                        }
                        drop((permit, keep_alive));
                    }));
                }
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
                Ok(()) = shutdown.changed() => {
                    if let Some(grace) = *shutdown.borrow() {
                        break Some(grace);
                    }
                }
            }
        };
        // Stop accepting: closing `run`'s store closes its listeners and sockets.
        drop(received);
        drop(store);
        let finish = async { while handlers.join_next().await.is_some() {} };
        match grace {
            Some(grace) => {
                if tokio::time::timeout(grace, finish).await.is_err() {
                    tracing::warn!(
                        app = app.id,
                        tasks = handlers.len(),
                        "grace period over; stopping the handlers still running"
                    );
                    handlers.abort_all();
                }
            }
            None => finish.await,
        }
        Ok(exit)
    }

    /// Puts the listeners inherited through socket activation into the broker.
    fn adopt_inherited(
        &self,
        store: &Store<HostState>,
        events: &EventSender,
    ) -> wasmtime::Result<()> {
        if self.options.inherited_listeners.is_empty() {
            return Ok(());
        }
        if self.program.handlers.is_none() {
            wasmtime::bail!(
                "inherited listening sockets need a component that exports sockhost:sockets/handlers"
            );
        }
        let ctx = &store.data().sockets;
        let failed = |id: &str, why: String| wasmtime::format_err!("inherited socket {id}: {why}");
        for (id, listener) in &self.options.inherited_listeners {
            let listener = listener
                .try_clone()
                .map_err(|e| failed(id, e.to_string()))?;
            let listener = StreamSocketListener::inherited(ctx, listener)
                .map_err(|e| failed(id, format!("{:?}", e.message)))?;
            let socket = BrokeredSocket::Listener(Box::new(listener));
            ctx.broker()
                .transfer(id.clone(), Vec::new(), socket, None, events.clone())
                .map_err(|e| failed(id, format!("{:?}", e.message)))?;
        }
        Ok(())
    }

    /// Receives a socket's datagrams and runs `message-received` for each. A datagram that
    /// had to be waited for runs its handler within this task while no other handler runs
    /// here, so it reaches the handler without passing between tasks; any other (a backlog,
    /// or one that arrived while a handler runs) gets a task of its own, which another thread
    /// may take. Handlers of one socket run concurrently,
    /// within the app's limit; while none may start, datagrams wait in the socket's kernel
    /// queue. Stops receiving when the socket stops delivering or the app shuts down, then
    /// lets the handlers running finish.
    async fn serve_datagrams(
        self: Arc<Self>,
        source: DatagramSource,
        limit: Arc<Semaphore>,
        mut shutdown: watch::Receiver<Option<Duration>>,
    ) {
        let DatagramSource {
            tag,
            socket,
            delivery,
            keep_alive,
        } = source;
        // One future for both ends, made once: not a waiter registered per datagram.
        let stopping = delivery.clone();
        let stop = async move {
            tokio::select! {
                () = stopping.stopped() => {}
                Ok(_) = shutdown.wait_for(Option::is_some) => {}
            }
        };
        tokio::pin!(stop);
        let events = keep_alive.downgrade();
        let mut buf = vec![0; MAX_DATAGRAM];
        let mut inline = FuturesUnordered::new();
        let mut spawned = JoinSet::new();
        loop {
            let received = async {
                let mut waited = false;
                loop {
                    let Ok(permit) = limit.clone().acquire_owned().await else {
                        return None;
                    };
                    // Without a syscall when tokio last saw the socket drained.
                    if let Some(received) = socket.try_receive(&mut buf) {
                        return Some((permit, received, waited));
                    }
                    // Waits without a permit, so an idle socket holds none.
                    drop(permit);
                    let _ = socket.socket.readable().await;
                    waited = true;
                }
            };
            tokio::select! {
                biased;
                Some(handled) = inline.next(), if !inline.is_empty() => {
                    let handled: std::thread::Result<()> = handled;
                    if handled.is_err() {
                        tracing::error!(app = self.id, "a datagram handler panicked in the host");
                    }
                }
                Some(_) = spawned.join_next(), if !spawned.is_empty() => {}
                () = &mut stop => break,
                received = received => {
                    let Some((permit, received, waited)) = received else { break };
                    let message = match received {
                        Ok(message) => message,
                        Err(e) => {
                            // ICMP errors for earlier sends surface here; they end nothing.
                            tracing::debug!(error = ?e.message, "receive failed");
                            continue;
                        }
                    };
                    let handler = self.clone().handle_datagram(
                        events.clone(),
                        tag.clone(),
                        (socket.clone(), delivery.clone()),
                        message,
                        permit,
                    );
                    // Inline only while no other handler runs here: one that computes or
                    // waits would delay the next.
                    if waited && inline.is_empty() {
                        // A host panic ends this handler, not the socket's delivery.
                        inline.push(AssertUnwindSafe(handler).catch_unwind());
                    } else {
                        spawned.spawn(handler);
                    }
                }
            }
        }
        while inline.next().await.is_some() {}
        while spawned.join_next().await.is_some() {}
        drop(keep_alive);
    }

    /// Handles one datagram within the permit it was received under.
    async fn handle_datagram(
        self: Arc<Self>,
        events: WeakEventSender,
        tag: String,
        socket: (Arc<SharedUdp>, Arc<Delivery>),
        message: DatagramMessage,
        permit: OwnedSemaphorePermit,
    ) {
        // Only components with handlers serve events.
        let Some(service) = &self.program.handlers else {
            return;
        };
        let handled = self
            .call_datagram_handler(service, Some(events), tag, socket, message)
            .await;
        if let Err(e) = handled {
            tracing::warn!(app = self.id, error = %e, "handler failed; only its own datagram is lost");
        }
        drop(permit);
    }

    /// Runs `message-received` in an instance that handled an earlier datagram, or a fresh
    /// one. Instantiating costs about 100 us, far more than a datagram's work, so datagram
    /// handlers are reused (one call at a time, up to `DATAGRAM_INSTANCES` kept); an instance
    /// whose handler failed is dropped.
    async fn call_datagram_handler(
        &self,
        service: &ServicePre<HostState>,
        events: Option<WeakEventSender>,
        tag: String,
        (socket, delivery): (Arc<SharedUdp>, Arc<Delivery>),
        message: DatagramMessage,
    ) -> wasmtime::Result<()> {
        let reused = self
            .idle_datagram_handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let (mut store, instance) = match reused {
            Some((mut store, instance)) => {
                store.data_mut().cpu_ticks = 0;
                store.data_mut().sockets.set_events(events);
                (store, instance)
            }
            None => {
                let mut store = self.store(events, Some(self.limits.cpu_limit));
                let instance = service.instantiate_async(&mut store).await?;
                (store, instance)
            }
        };
        let call = async {
            let mut view = store.data_mut().sockets();
            let message = view.push_message(message)?;
            let socket = view
                .table
                .push(DatagramSocket::delivering(socket, delivery))?;
            let event = datagram_socket::MessageReceivedEvent {
                socket_tag: tag,
                socket,
                message,
            };
            instance
                .sockhost_sockets_handlers()
                .call_message_received(&mut store, &event)
                .await
        };
        let idle = self.limits.idle_timeout;
        let result = tokio::time::timeout(idle, call).await.unwrap_or_else(|_| {
            Err(wasmtime::format_err!(
                "the handler ran for {idle:?} and was stopped"
            ))
        });
        if result.is_ok() {
            let mut idle_handlers = self
                .idle_datagram_handlers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if idle_handlers.len() < DATAGRAM_INSTANCES {
                idle_handlers.push((store, instance));
            }
        }
        result
    }

    /// Runs one event's handler in a fresh instance, within the limits.
    async fn handle(
        &self,
        service: &ServicePre<HostState>,
        events: Option<WeakEventSender>,
        event: SocketEvent,
    ) -> wasmtime::Result<()> {
        let mut store = self.store(events, Some(self.limits.cpu_limit));
        let link = match &event {
            SocketEvent::ConnectionReceived { socket, .. } => {
                socket.connection().map(|c| c.link.clone())
            }
            SocketEvent::MessagesEnabled { .. } | SocketEvent::SocketActivity { .. } => None,
        };
        let call = async {
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
                SocketEvent::SocketActivity {
                    reason,
                    id,
                    context,
                    socket,
                    accepted,
                } => {
                    let table = &mut store.data_mut().table;
                    let socket = match socket {
                        BrokeredSocket::Listener(l) => {
                            activity::BrokeredSocket::StreamSocketListener(table.push(*l)?)
                        }
                        BrokeredSocket::Datagram(d) => {
                            activity::BrokeredSocket::DatagramSocket(table.push(*d)?)
                        }
                        BrokeredSocket::Stream(s) => {
                            activity::BrokeredSocket::StreamSocket(table.push(*s)?)
                        }
                    };
                    let accepted = accepted.map(|s| table.push(*s)).transpose()?;
                    let event = activity::SocketActivityEvent {
                        reason,
                        id,
                        context,
                        socket,
                        accepted,
                    };
                    handlers.call_socket_activity(&mut store, &event).await
                }
                // The app's loop serves these itself (`serve_datagrams`).
                SocketEvent::MessagesEnabled { .. } => Ok(()),
            }
        };
        let idle = self.limits.idle_timeout;
        match link {
            Some(link) => tokio::select! {
                result = call => result,
                () = idle_watch(&link, idle) => Err(wasmtime::format_err!("the connection was idle for {idle:?} and was closed")),
            },
            None => tokio::time::timeout(idle, call).await.unwrap_or_else(|_| {
                Err(wasmtime::format_err!(
                    "the handler ran for {idle:?} and was stopped"
                ))
            }),
        }
    }
}

/// A socket whose datagrams go to `message-received`.
struct DatagramSource {
    tag: String,
    socket: Arc<SharedUdp>,
    delivery: Arc<Delivery>,
    /// Keeps the app serving while the socket delivers.
    keep_alive: EventSender,
}

/// Returns once the link has seen no reads or writes for `limit`.
async fn idle_watch(link: &Link, limit: Duration) {
    loop {
        let idle = link.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}
