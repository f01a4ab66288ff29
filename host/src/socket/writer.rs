//! The output side of socket streams: a write queue that is sent on flush, so that the
//! batched-send pattern (many writes, one flush) reaches the kernel as few calls.
//!
//! State machine of one queue:
//! - idle: writes append to the queue; `check-write` grants what is left of the budget;
//! - flushing: a flush was asked for; the queue is being sent, first synchronously in the
//!   guest's call, then (if the socket is full) by a background task; writes are refused
//!   (`check-write` is 0) until it is empty, then back to idle;
//! - failed: a send failed; every later call returns that error.

use crate::bindings::types::SocketError;
use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError, StreamResult};

/// How many bytes may wait in a queue before it is sent without a flush.
pub const QUEUE_LIMIT: usize = 1 << 20;

/// Queued writes, oldest first.
#[derive(Default)]
pub struct Queue {
    /// The buffers, each one `write` call (one datagram for UDP).
    pub buffers: VecDeque<Bytes>,
    /// Their total length.
    pub len: usize,
}

impl Queue {
    /// Drops the first `n` bytes (a partial vectored write).
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let front = self.buffers.front_mut().expect("advanced past the queue");
            if n >= front.len() {
                n -= front.len();
                self.buffers.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// Drops the first buffer (a datagram that was sent).
    pub fn pop(&mut self) {
        if let Some(front) = self.buffers.pop_front() {
            self.len -= front.len();
        }
    }
}

/// Where a queue's bytes go: a TCP stream or a UDP destination.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Sends from the front of the queue without waiting, removing what was sent. Returns
    /// `WouldBlock` when the socket cannot take more now.
    fn try_send(&self, queue: &mut Queue) -> io::Result<()>;
    /// Waits until the socket can take more.
    async fn writable(&self) -> io::Result<()>;
    /// The largest single write (a datagram's limit for UDP).
    fn max_write(&self) -> usize;
    /// Names the operation in error messages ("send to 127.0.0.1:9").
    fn describe(&self) -> String;
}

struct State {
    queue: Queue,
    flushing: bool,
    error: Option<SocketError>,
    background: bool,
}

/// A shared write queue over a sink; clones are handles on the same queue.
pub struct BatchWriter<S: Sink> {
    sink: Arc<S>,
    state: Arc<Mutex<State>>,
    done: Arc<Notify>,
}

impl<S: Sink> Clone for BatchWriter<S> {
    fn clone(&self) -> Self {
        Self {
            sink: self.sink.clone(),
            state: self.state.clone(),
            done: self.done.clone(),
        }
    }
}

impl<S: Sink> BatchWriter<S> {
    /// An empty queue over `sink`.
    pub fn new(sink: S) -> Self {
        Self {
            sink: Arc::new(sink),
            state: Arc::new(Mutex::new(State {
                queue: Queue::default(),
                flushing: false,
                error: None,
                background: false,
            })),
            done: Arc::new(Notify::new()),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether writes are queued or being sent.
    pub fn has_pending(&self) -> bool {
        let state = self.lock();
        state.queue.len > 0 || state.flushing
    }

    /// Starts sending everything queued; returns at once.
    pub fn start_flush(&self) {
        let mut state = self.lock();
        if state.error.is_some() {
            return;
        }
        state.flushing = true;
        self.send_now(&mut state);
    }

    /// Sends what the socket takes now; leaves the rest to a background task.
    fn send_now(&self, state: &mut State) {
        if state.background {
            return;
        }
        match self.sink.try_send(&mut state.queue) {
            Ok(()) => self.finish(state, None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                state.background = true;
                let writer = self.clone();
                tokio::spawn(async move { writer.send_in_background().await });
            }
            Err(e) => {
                let error = crate::conv::io_error(&e, self.sink.describe());
                self.finish(state, Some(error));
            }
        }
    }

    async fn send_in_background(self) {
        loop {
            let ready = self.sink.writable().await;
            let mut state = self.lock();
            let result = ready.and_then(|()| self.sink.try_send(&mut state.queue));
            match result {
                Ok(()) => {
                    state.background = false;
                    self.finish(&mut state, None);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    state.background = false;
                    let error = crate::conv::io_error(&e, self.sink.describe());
                    self.finish(&mut state, Some(error));
                    return;
                }
            }
        }
    }

    fn finish(&self, state: &mut State, error: Option<SocketError>) {
        if let Some(error) = error {
            state.queue = Queue::default();
            state.error = Some(error);
        }
        state.flushing = false;
        self.done.notify_waiters();
    }

    /// Waits until nothing is being flushed; returns the stream's error, if it failed.
    pub async fn wait_flushed(&self) -> Result<(), SocketError> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if let Some(error) = &state.error {
                    return Err(error.clone());
                }
                if !state.flushing {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Sends everything queued and waits until it is sent.
    pub async fn flush_and_wait(&self) -> Result<(), SocketError> {
        self.start_flush();
        self.wait_flushed().await
    }

    fn failed(error: &SocketError) -> StreamError {
        StreamError::LastOperationFailed(wasmtime::Error::new(crate::conv::StreamFailure(
            error.clone(),
        )))
    }
}

#[async_trait::async_trait]
impl<S: Sink> Pollable for BatchWriter<S> {
    async fn ready(&mut self) {
        let _ = self.wait_flushed().await;
    }
}

impl<S: Sink> OutputStream for BatchWriter<S> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut state = self.lock();
        if let Some(error) = &state.error {
            return Err(Self::failed(error));
        }
        if state.flushing
            || state.queue.len + bytes.len() > QUEUE_LIMIT
            || bytes.len() > self.sink.max_write()
        {
            return Err(StreamError::trap("write exceeds the permit of check-write"));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        state.queue.len += bytes.len();
        state.queue.buffers.push_back(bytes);
        if state.queue.len >= QUEUE_LIMIT {
            state.flushing = true;
            self.send_now(&mut state);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.start_flush();
        match &self.lock().error {
            Some(error) => Err(Self::failed(error)),
            None => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let state = self.lock();
        if let Some(error) = &state.error {
            return Err(Self::failed(error));
        }
        if state.flushing {
            return Ok(0);
        }
        Ok((QUEUE_LIMIT - state.queue.len).min(self.sink.max_write()))
    }
}
