//! `StreamSocketListener`: a listening TCP socket that hands out accepted `StreamSocket`s,
//! either to `accept` or, once enabled, to the app's `connection-received` handler.

use super::AbortOnDrop;
use super::stream::{Connection, StreamControl, StreamSocket, secure_server};
use crate::bindings::types::{SocketError, SocketErrorStatus, SocketProtectionLevel};
use crate::conv::{error, invalid_operation, io_error};
use crate::ctx::{EventSender, PortRegistration, SocketEvent, SocketsCtx};
use crate::resolve::Transport;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use wasmtime_wasi_io::poll::Pollable;

/// How many connections may wait to be accepted.
const BACKLOG: i32 = 1024;

/// Where a listener is in its life.
enum ListenerState {
    /// Created; control settings may change.
    Unbound,
    /// Bound and listening.
    Listening(Listening),
    /// Closed by `close` or `cancel-io`; nothing more is accepted.
    Closed,
}

struct Listening {
    listener: Arc<TcpListener>,
    local: SocketAddr,
    /// A connection accepted by `subscribe`'s pollable for the next `accept`.
    pending: Option<io::Result<TcpStream>>,
    /// The task that delivers connections to the handler, once enabled.
    delivery: Option<AbortOnDrop>,
    /// For a TLS listener: the configuration each accepted connection's handshake uses.
    server_config: Option<Arc<rustls::ServerConfig>>,
    _port: PortRegistration,
}

/// A TCP listener. Mirrors UWP `StreamSocketListener`.
pub struct StreamSocketListener {
    control: StreamControl,
    tls: ServerTls,
    state: ListenerState,
    /// `EnableTransferOwnership` was called.
    transfer_enabled: bool,
}

/// A listener's TLS settings (beyond UWP).
#[derive(Clone, Debug, Default)]
pub struct ServerTls {
    /// The host identity presented to clients.
    pub identity: Option<String>,
    /// Whether clients must present a certificate the host trusts.
    pub client_certificate_required: bool,
}

impl Default for StreamSocketListener {
    fn default() -> Self {
        Self {
            control: StreamControl::default(),
            tls: ServerTls::default(),
            state: ListenerState::Unbound,
            transfer_enabled: false,
        }
    }
}

impl StreamSocketListener {
    /// The control settings for accepted sockets.
    pub fn control(&self) -> &StreamControl {
        &self.control
    }

    /// Changes a control setting; only allowed before bind.
    pub fn set_control(
        &mut self,
        change: impl FnOnce(&mut StreamControl),
    ) -> Result<(), SocketError> {
        match self.state {
            ListenerState::Unbound => {
                change(&mut self.control);
                Ok(())
            }
            _ => Err(invalid_operation(
                "listener control settings cannot change after bind",
            )),
        }
    }

    /// The TLS identity and client-certificate requirement; only allowed before bind.
    pub fn set_tls(&mut self, change: impl FnOnce(&mut ServerTls)) -> Result<(), SocketError> {
        match self.state {
            ListenerState::Unbound => {
                change(&mut self.tls);
                Ok(())
            }
            _ => Err(invalid_operation(
                "listener TLS settings cannot change after bind",
            )),
        }
    }

    /// The TLS settings.
    pub fn tls(&self) -> &ServerTls {
        &self.tls
    }

    /// Binds and listens on `addr` (`[::]` for all interfaces, dual stack); with a TLS
    /// protection level, accepted connections complete a TLS handshake first.
    pub fn bind(
        &mut self,
        ctx: &SocketsCtx,
        addr: SocketAddr,
        level: SocketProtectionLevel,
    ) -> Result<(), SocketError> {
        if !matches!(self.state, ListenerState::Unbound) {
            return Err(invalid_operation("the listener is already bound"));
        }
        let server_config = if crate::tls::is_tls(level)? {
            let identity = self.tls.identity.as_deref().ok_or_else(|| {
                crate::conv::invalid_argument(
                    "a TLS listener needs a server identity (set-server-identity)",
                )
            })?;
            Some(
                ctx.tls()
                    .server_config(level, identity, self.tls.client_certificate_required)?,
            )
        } else {
            None
        };
        ctx.policy().check_bind(addr)?;
        let control = &self.control;
        let doing = || format!("listen on {addr}");
        // Linux copies these options from the listening socket to each accepted socket.
        let (socket, local) =
            super::bind_socket(addr, socket2::Type::STREAM, false, |socket, addr| {
                socket.set_tcp_nodelay(control.no_delay)?;
                control.apply_before(socket.into(), addr)
            })
            .map_err(|e| io_error(&e, doing()))?;
        socket.listen(BACKLOG).map_err(|e| io_error(&e, doing()))?;
        let listener = TcpListener::from_std(socket.into()).map_err(|e| io_error(&e, doing()))?;
        tracing::debug!(%local, "listening");
        self.state = ListenerState::Listening(Listening {
            listener: Arc::new(listener),
            local,
            pending: None,
            delivery: None,
            server_config,
            _port: ctx.ports().register(ctx.app(), Transport::Tcp, local),
        });
        Ok(())
    }

    fn listening(&mut self) -> Result<&mut Listening, SocketError> {
        match &mut self.state {
            ListenerState::Listening(l) if l.delivery.is_none() => Ok(l),
            ListenerState::Listening(_) => Err(invalid_operation(
                "the listener delivers its connections to the connection-received handler",
            )),
            ListenerState::Unbound => Err(invalid_operation("the listener is not bound")),
            ListenerState::Closed => Err(error(
                SocketErrorStatus::OperationAborted,
                "the listener is closed",
            )),
        }
    }

    /// Waits for the next connection (for a TLS listener, the next one whose handshake
    /// succeeds: a client that fails its handshake is dropped and logged, not returned).
    pub async fn accept(&mut self) -> Result<StreamSocket, SocketError> {
        let control = self.control.clone();
        let listening = self.listening()?;
        loop {
            let stream = match listening.pending.take() {
                Some(result) => result,
                None => listening.listener.accept().await.map(|(stream, _)| stream),
            };
            let doing = || format!("accept on {}", listening.local);
            let stream = stream.map_err(|e| io_error(&e, doing()))?;
            let connection = Connection::new(stream).map_err(|e| io_error(&e, doing()))?;
            if let Some(config) = &listening.server_config
                && let Err(e) = secure_server(&connection, config.clone()).await
            {
                tracing::debug!(remote = %connection.remote, error = ?e.message, "TLS handshake failed");
                continue;
            }
            return Ok(StreamSocket::accepted(connection, control));
        }
    }

    /// Sends every accepted connection to the app's handler, tagged with `tag`.
    pub fn enable_connection_received(
        &mut self,
        events: EventSender,
        tag: String,
    ) -> Result<(), SocketError> {
        let control = self.control.clone();
        let listening = self.listening()?;
        let listener = listening.listener.clone();
        let pending = listening.pending.take();
        let server_config = listening.server_config.clone();
        listening.delivery = Some(AbortOnDrop::spawn(deliver(
            listener,
            pending,
            control,
            server_config,
            events,
            tag,
        )));
        Ok(())
    }

    /// Stops accepting and closes the listening socket.
    pub fn close(&mut self) {
        self.state = ListenerState::Closed;
    }

    /// Stops delivering connections to the handler and forgets a connection accepted for
    /// `subscribe`; the listener keeps listening (so it can be transferred).
    pub fn cancel_io(&mut self) {
        if let ListenerState::Listening(l) = &mut self.state {
            l.delivery = None;
            l.pending = None;
        }
    }

    /// Allows `transfer-ownership`.
    pub fn enable_transfer(&mut self) {
        self.transfer_enabled = true;
    }

    /// Moves the listener out for the broker, leaving a closed one behind.
    pub fn take_for_transfer(&mut self) -> Result<Self, SocketError> {
        if !self.transfer_enabled {
            return Err(invalid_operation(
                "call enable-transfer-ownership before transfer-ownership",
            ));
        }
        self.listening()?;
        let closed = Self {
            state: ListenerState::Closed,
            ..Self::default()
        };
        Ok(std::mem::replace(self, closed))
    }

    /// A listener on a socket inherited from the process that started the host (socket
    /// activation); it may be transferred back to the broker.
    pub fn inherited(
        ctx: &SocketsCtx,
        listener: std::net::TcpListener,
    ) -> Result<Self, SocketError> {
        let doing = "use an inherited listening socket";
        listener
            .set_nonblocking(true)
            .map_err(|e| io_error(&e, doing))?;
        let local = crate::conv::canonical(listener.local_addr().map_err(|e| io_error(&e, doing))?);
        let listener = TcpListener::from_std(listener).map_err(|e| io_error(&e, doing))?;
        Ok(Self {
            state: ListenerState::Listening(Listening {
                listener: Arc::new(listener),
                local,
                pending: None,
                delivery: None,
                server_config: None,
                _port: ctx.ports().register(ctx.app(), Transport::Tcp, local),
            }),
            transfer_enabled: true,
            ..Self::default()
        })
    }

    /// The local port; empty before bind.
    pub fn local_port(&self) -> String {
        match &self.state {
            ListenerState::Listening(l) => l.local.port().to_string(),
            _ => String::new(),
        }
    }
}

async fn deliver(
    listener: Arc<TcpListener>,
    mut pending: Option<io::Result<TcpStream>>,
    control: StreamControl,
    server_config: Option<Arc<rustls::ServerConfig>>,
    events: EventSender,
    tag: String,
) {
    loop {
        let accepted = match pending.take() {
            Some(result) => result,
            None => listener.accept().await.map(|(stream, _)| stream),
        };
        let connection = match accepted.and_then(Connection::new) {
            Ok(connection) => connection,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: wait a little
                // instead of spinning, and keep listening.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(config) = &server_config else {
            let socket = Box::new(StreamSocket::accepted(connection, control.clone()));
            let event = SocketEvent::ConnectionReceived {
                tag: tag.clone(),
                socket,
            };
            if events.send(event).await.is_err() {
                return;
            }
            continue;
        };
        // Handshakes run on their own, so a slow client never holds up the next accept.
        let (config, events, tag, control) =
            (config.clone(), events.clone(), tag.clone(), control.clone());
        tokio::spawn(async move {
            match secure_server(&connection, config).await {
                Ok(()) => {
                    let socket = Box::new(StreamSocket::accepted(connection, control));
                    let _ = events
                        .send(SocketEvent::ConnectionReceived { tag, socket })
                        .await;
                }
                Err(e) => tracing::debug!(error = ?e.message, "TLS handshake failed"),
            }
        });
    }
}

#[async_trait::async_trait]
impl Pollable for StreamSocketListener {
    async fn ready(&mut self) {
        if let ListenerState::Listening(l) = &mut self.state
            && l.pending.is_none()
            && l.delivery.is_none()
        {
            l.pending = Some(l.listener.accept().await.map(|(stream, _)| stream));
        }
    }
}
