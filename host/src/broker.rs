//! The socket broker: sockets an app transferred, each watched by a task that, on activity,
//! takes the socket out of the broker and hands it to a fresh instance of the app through
//! `handlers.socket-activity`. Unread data stays in the kernel for that instance.

use crate::bindings::socket_activity::{
    SocketActivityInformation, SocketActivityKind, SocketActivityTriggerReason,
};
use crate::bindings::types::SocketError;
use crate::conv::invalid_argument;
use crate::ctx::{EventSender, SocketEvent};
use crate::socket::datagram::DatagramSocket;
use crate::socket::listener::StreamSocketListener;
use crate::socket::stream::StreamSocket;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::task::AbortHandle;

/// A socket in the broker's hands.
pub enum BrokeredSocket {
    /// A listener.
    Listener(Box<StreamSocketListener>),
    /// A datagram socket.
    Datagram(Box<DatagramSocket>),
    /// A stream socket.
    Stream(Box<StreamSocket>),
}

impl BrokeredSocket {
    fn kind(&self) -> SocketActivityKind {
        match self {
            Self::Listener(_) => SocketActivityKind::StreamSocketListener,
            Self::Datagram(_) => SocketActivityKind::DatagramSocket,
            Self::Stream(_) => SocketActivityKind::StreamSocket,
        }
    }
}

/// A socket resource that can go to the broker.
pub trait Transferable: Send + 'static {
    /// `enable-transfer-ownership`.
    fn allow_transfer(&mut self);
    /// Moves the socket out for the broker, leaving an unusable one behind.
    fn take_brokered(&mut self) -> Result<BrokeredSocket, SocketError>;
}

impl Transferable for StreamSocketListener {
    fn allow_transfer(&mut self) {
        self.enable_transfer();
    }

    fn take_brokered(&mut self) -> Result<BrokeredSocket, SocketError> {
        Ok(BrokeredSocket::Listener(Box::new(
            self.take_for_transfer()?,
        )))
    }
}

impl Transferable for DatagramSocket {
    fn allow_transfer(&mut self) {
        self.enable_transfer();
    }

    fn take_brokered(&mut self) -> Result<BrokeredSocket, SocketError> {
        Ok(BrokeredSocket::Datagram(Box::new(
            self.take_for_transfer()?,
        )))
    }
}

impl Transferable for StreamSocket {
    fn allow_transfer(&mut self) {
        self.enable_transfer();
    }

    fn take_brokered(&mut self) -> Result<BrokeredSocket, SocketError> {
        Ok(BrokeredSocket::Stream(Box::new(self.take_for_transfer()?)))
    }
}

struct Entry {
    kind: SocketActivityKind,
    context: Vec<u8>,
    watcher: AbortHandle,
}

/// One app's brokered sockets, by id.
#[derive(Default)]
pub struct Broker {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Broker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes ownership of `socket` under `id` and watches it for activity.
    pub fn transfer(
        self: &std::sync::Arc<Self>,
        id: String,
        context: Vec<u8>,
        socket: BrokeredSocket,
        keep_alive: Option<Duration>,
        events: EventSender,
    ) -> Result<(), SocketError> {
        let mut entries = self.lock();
        if entries.contains_key(&id) {
            return Err(invalid_argument(format!(
                "a brokered socket is already named {id:?}"
            )));
        }
        let kind = socket.kind();
        let broker = self.clone();
        let (task_id, task_context) = (id.clone(), context.clone());
        let watcher = tokio::spawn(async move {
            let (reason, socket, accepted) = wait_for_activity(socket, keep_alive).await;
            // Out of the broker first, so the handler can transfer it back under the same id.
            broker.lock().remove(&task_id);
            let event = SocketEvent::SocketActivity {
                reason,
                id: task_id,
                context: task_context,
                socket,
                accepted,
            };
            let _ = events.send(event).await;
        });
        entries.insert(
            id,
            Entry {
                kind,
                context,
                watcher: watcher.abort_handle(),
            },
        );
        Ok(())
    }

    /// Whether a socket is brokered under `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// The brokered sockets, for `all-sockets`.
    pub fn list(&self) -> Vec<SocketActivityInformation> {
        let mut list: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, entry)| SocketActivityInformation {
                id: id.clone(),
                socket_kind: entry.kind,
                context: entry.context.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        for entry in self.lock().values() {
            entry.watcher.abort();
        }
    }
}

/// Waits until something happens on a brokered socket.
async fn wait_for_activity(
    socket: BrokeredSocket,
    keep_alive: Option<Duration>,
) -> (
    SocketActivityTriggerReason,
    BrokeredSocket,
    Option<Box<StreamSocket>>,
) {
    use SocketActivityTriggerReason as Reason;
    match socket {
        BrokeredSocket::Listener(mut listener) => loop {
            match listener.accept().await {
                Ok(accepted) => {
                    return (
                        Reason::ConnectionAccepted,
                        BrokeredSocket::Listener(listener),
                        Some(Box::new(accepted)),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = ?e.message, "brokered listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        },
        BrokeredSocket::Datagram(datagram) => {
            datagram.readable().await;
            (
                Reason::SocketActivity,
                BrokeredSocket::Datagram(datagram),
                None,
            )
        }
        BrokeredSocket::Stream(stream) => {
            let timer = async {
                match keep_alive {
                    Some(time) => tokio::time::sleep(time).await,
                    None => std::future::pending().await,
                }
            };
            let reason = tokio::select! {
                closed = stream.peer_closed() => match closed {
                    true => Reason::SocketClosed,
                    false => Reason::SocketActivity,
                },
                () = timer => Reason::KeepAliveTimerExpired,
            };
            (reason, BrokeredSocket::Stream(stream), None)
        }
    }
}
