//! The double's side of a connection, acknowledging every segment it receives at once.
//!
//! The `kurrentdb` client builds its own connector and leaves Nagle's algorithm on. It writes a
//! call in several small segments (the HTTP/2 `HEADERS` frame, then the `DATA` frames of the
//! request), and Nagle holds back each segment after the first until the previous one is
//! acknowledged. Linux delays the acknowledgement of a segment that carries no reply by up to
//! 40 ms (delayed ACK): every call through the client then took about 40 ms on loopback.
//! `TCP_NODELAY` on the double's socket does not help (the waiting is on the client's side), so
//! the double turns on `TCP_QUICKACK` — acknowledge immediately — after every read. The kernel
//! leaves quick-ack mode again on its own, hence the re-arming on each read rather than once at
//! accept. Only the timing of TCP acknowledgements changes, never what is sent.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection that re-arms `TCP_QUICKACK` after every read (on Linux; elsewhere a
/// plain `TcpStream`).
#[derive(Debug)]
pub(crate) struct QuickAck(TcpStream);

impl QuickAck {
    pub(crate) fn new(socket: TcpStream) -> Self {
        let connection = Self(socket);
        connection.arm();
        connection
    }

    #[cfg(target_os = "linux")]
    fn arm(&self) {
        // A failure only costs time, as before.
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }

    #[cfg(not(target_os = "linux"))]
    fn arm(&self) {}
}

impl Connected for QuickAck {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.0).poll_read(context, buffer);
        if polled.is_ready() {
            self.arm();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}
