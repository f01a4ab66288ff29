//! Per-instance socket state (`SocketsCtx`) and what the instances of one app share: the
//! network policy, the registry of bound ports, and the channel that carries socket events to
//! the app's handler instances.

use crate::bindings::types::{SocketError, SocketErrorStatus};
use crate::broker::Broker;
use crate::conv::error;
use crate::policy::NetworkPolicy;
use crate::resolve::Transport;
use crate::socket::datagram::{Delivery, SharedUdp};
use crate::socket::stream::StreamSocket;
use crate::tls::TlsConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use wasmtime::component::ResourceTable;

/// Identifies one guest app (one component run and its handler instances).
pub type AppId = u64;

/// Something that happened on a socket whose events go to the app's exported handlers.
pub enum SocketEvent {
    /// A listener accepted a connection (`ConnectionReceived`).
    ConnectionReceived {
        /// The tag of the listener.
        tag: String,
        /// The accepted, connected socket (boxed: it is much larger than the other event).
        socket: Box<StreamSocket>,
    },
    /// Something happened on a brokered socket (`SocketActivityTrigger`).
    SocketActivity {
        /// Why.
        reason: crate::bindings::socket_activity::SocketActivityTriggerReason,
        /// The id it was transferred under.
        id: String,
        /// The context it was transferred with.
        context: Vec<u8>,
        /// The socket, going back to the app.
        socket: crate::broker::BrokeredSocket,
        /// For a listener: the connection it accepted.
        accepted: Option<Box<StreamSocket>>,
    },
    /// A datagram socket enabled `message-received`: the app receives its datagrams and
    /// runs the handler for each (`MessageReceived`).
    MessagesEnabled {
        /// The tag of the socket.
        tag: String,
        /// The socket, shared with the one that enabled the handler.
        socket: Arc<SharedUdp>,
        /// Stopped when the socket is closed or `cancel-io` is called.
        delivery: Arc<Delivery>,
    },
}

/// Sends events to an app's handlers. Each event carries a clone of the sender, so the app
/// keeps serving while a handler runs (a handler may enable or transfer sockets in turn).
#[derive(Clone)]
pub struct EventSender(mpsc::Sender<Delivered>);

/// The weak form of [`EventSender`], held by instances: an app whose sockets no longer deliver
/// events, and which runs no handler, ends.
#[derive(Clone)]
pub struct WeakEventSender(mpsc::WeakSender<Delivered>);

/// An event as the app's loop receives it.
pub struct Delivered {
    /// The event.
    pub event: SocketEvent,
    /// Keeps the app serving until the event's handler finishes.
    pub keep_alive: EventSender,
}

impl EventSender {
    /// A channel for one app's events.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Delivered>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (Self(sender), receiver)
    }

    /// Sends an event; fails once the app no longer serves events.
    pub async fn send(&self, event: SocketEvent) -> Result<(), ()> {
        let delivered = Delivered {
            event,
            keep_alive: self.clone(),
        };
        self.0.send(delivered).await.map_err(|_| ())
    }

    /// Sends an event without waiting: into the app's queue if it has room, else from a task
    /// that waits for room.
    pub fn send_soon(&self, event: SocketEvent) {
        let delivered = Delivered {
            event,
            keep_alive: self.clone(),
        };
        if let Err(mpsc::error::TrySendError::Full(delivered)) = self.0.try_send(delivered) {
            let sender = self.0.clone();
            tokio::spawn(async move {
                let _ = sender.send(delivered).await;
            });
        }
    }

    /// The weak form.
    pub fn downgrade(&self) -> WeakEventSender {
        WeakEventSender(self.0.downgrade())
    }
}

impl WeakEventSender {
    /// The strong form, while the app serves events.
    pub fn upgrade(&self) -> Option<EventSender> {
        self.0.upgrade().map(EventSender)
    }
}

/// The socket state of one component instance.
pub struct SocketsCtx {
    app: AppId,
    policy: Arc<NetworkPolicy>,
    tls: Arc<TlsConfig>,
    ports: Arc<PortRegistry>,
    /// The app's brokered sockets, shared by all its instances.
    broker: Arc<Broker>,
    /// Where events go; `None` when the component exports no handlers. Weak, so that the app
    /// stops serving once no socket delivers events any more.
    events: Option<WeakEventSender>,
}

impl SocketsCtx {
    /// A context for an instance of `app`.
    pub fn new(
        app: AppId,
        policy: Arc<NetworkPolicy>,
        tls: Arc<TlsConfig>,
        ports: Arc<PortRegistry>,
        broker: Arc<Broker>,
        events: Option<WeakEventSender>,
    ) -> Self {
        Self {
            app,
            policy,
            tls,
            ports,
            broker,
            events,
        }
    }

    /// The network policy.
    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// The host's TLS identities and trust roots.
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }

    /// The app this instance belongs to.
    pub fn app(&self) -> AppId {
        self.app
    }

    /// The app's socket broker.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The registry of bound ports.
    pub fn ports(&self) -> &Arc<PortRegistry> {
        &self.ports
    }

    /// Replaces the events channel (a reused handler instance gets its new event's).
    pub(crate) fn set_events(&mut self, events: Option<WeakEventSender>) {
        self.events = events;
    }

    /// A sender for events, or `not-supported` when the component has no handlers.
    pub fn event_sender(&self) -> Result<EventSender, SocketError> {
        self.events
            .as_ref()
            .and_then(WeakEventSender::upgrade)
            .ok_or_else(|| {
                error(
                    SocketErrorStatus::NotSupported,
                    "this component does not export sockhost:sockets/handlers",
                )
            })
    }

    /// Checks a connection or datagram to `addr` against the policy and app isolation.
    pub fn check_connect(
        &self,
        name: Option<&str>,
        addr: SocketAddr,
        transport: Transport,
    ) -> Result<(), SocketError> {
        self.policy.check_connect(name, addr)?;
        if self.policy.isolate_apps
            && addr.ip().to_canonical().is_loopback()
            && let Some(owner) = self.ports.owner(transport, addr.port())
            && owner != self.app
        {
            return Err(error(
                SocketErrorStatus::AccessDenied,
                format!(
                    "{addr} belongs to another app, and apps are isolated from each other (--isolate-apps)"
                ),
            ));
        }
        Ok(())
    }
}

/// Access to the socket state in a store's data, as `wasmtime_wasi::WasiView` gives WASI's.
pub trait SocketsView: Send {
    /// The socket state and the resource table.
    fn sockets(&mut self) -> SocketsCtxView<'_>;
}

/// The socket state of an instance and its resource table.
pub struct SocketsCtxView<'a> {
    /// The socket state.
    pub ctx: &'a mut SocketsCtx,
    /// The instance's resources.
    pub table: &'a mut ResourceTable,
}

/// The local ports bound by every app of a host: for `--isolate-apps`, and so that an
/// embedder (the demo, tests) can learn which port a guest bound.
#[derive(Default)]
pub struct PortRegistry {
    entries: Mutex<Vec<PortEntry>>,
    changed: watch::Sender<u64>,
}

#[derive(Clone, Copy)]
struct PortEntry {
    id: u64,
    app: AppId,
    transport: Transport,
    addr: SocketAddr,
}

/// Removes a port from the registry when the socket that bound it goes away.
pub struct PortRegistration {
    registry: Arc<PortRegistry>,
    id: u64,
}

impl Drop for PortRegistration {
    fn drop(&mut self) {
        self.registry.lock().retain(|e| e.id != self.id);
        self.registry.changed.send_modify(|v| *v += 1);
    }
}

impl PortRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PortEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `app` bound `addr`.
    pub fn register(
        self: &Arc<Self>,
        app: AppId,
        transport: Transport,
        addr: SocketAddr,
    ) -> PortRegistration {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        self.lock().push(PortEntry {
            id,
            app,
            transport,
            addr,
        });
        self.changed.send_modify(|v| *v += 1);
        PortRegistration {
            registry: self.clone(),
            id,
        }
    }

    /// The app that bound a port, if any.
    pub fn owner(&self, transport: Transport, port: u16) -> Option<AppId> {
        self.lock()
            .iter()
            .find(|e| e.transport == transport && e.addr.port() == port)
            .map(|e| e.app)
    }

    /// The addresses an app has bound, oldest first.
    pub fn bound_by(&self, app: AppId, transport: Transport) -> Vec<SocketAddr> {
        self.lock()
            .iter()
            .filter(|e| e.app == app && e.transport == transport)
            .map(|e| e.addr)
            .collect()
    }

    /// Waits until `app` has bound a port of `transport` and returns the first.
    pub async fn wait_bound(&self, app: AppId, transport: Transport) -> SocketAddr {
        let mut changed = self.changed.subscribe();
        loop {
            if let Some(addr) = self.bound_by(app, transport).first() {
                return *addr;
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
