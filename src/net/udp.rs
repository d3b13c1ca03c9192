//! [`UdpSocket`]: `std::net::UdpSocket` whose receives (and, rarely, sends) park the fiber.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

use super::addr::{ToSocketAddrs, each_addr, resolve};
use super::io::{Registered, Timeouts};
use crate::hub::reactor::Direction::{Read as R, Write as W};

/// A UDP socket (`std::net::UdpSocket`, cooperative). `!Send`: it is registered with the hub
/// of the thread that created it.
pub struct UdpSocket {
    io: Registered<mio::net::UdpSocket>,
    timeouts: Rc<Timeouts>,
}

impl UdpSocket {
    /// Binds to `addr` (each resolved address in turn until one works).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        let s = each_addr(&addr, |a| mio::net::UdpSocket::bind(*a))?;
        Ok(UdpSocket { io: Registered::new(s)?, timeouts: Rc::default() })
    }

    /// Takes over a std socket, making it non-blocking underneath; its read and write
    /// timeouts carry over, and so does a non-blocking mode the program had set.
    pub fn from_std(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
        let nb = super::sys::is_nonblocking(s.as_raw_fd())?;
        let timeouts = Rc::new(Timeouts::new(s.read_timeout()?, s.write_timeout()?, nb));
        s.set_nonblocking(true)?;
        let s = mio::net::UdpSocket::from_std(s);
        Ok(UdpSocket { io: Registered::new(s)?, timeouts })
    }

    /// Receives one datagram and its sender; parks until one arrives (or the read timeout).
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.do_io(R, self.timeouts.read_wait(), |s| s.recv_from(buf))
    }

    /// Like `recv_from`, leaving the datagram queued.
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.do_io(R, self.timeouts.read_wait(), |s| s.peek_from(buf))
    }

    /// Sends `buf` to the first address `addr` resolves to (as std does).
    pub fn send_to<A: ToSocketAddrs>(&self, buf: &[u8], addr: A) -> io::Result<usize> {
        let Some(to) = resolve(&addr)?.into_iter().next() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no addresses to send data to",
            ));
        };
        self.io.do_io(W, self.timeouts.write_wait(), |s| s.send_to(buf, to))
    }

    /// Sets the default peer for `send`/`recv` (each resolved address in turn).
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(&addr, |a| self.io.get().connect(*a))
    }

    /// Sends to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.io.do_io(W, self.timeouts.write_wait(), |s| s.send(buf))
    }

    /// Receives from the connected peer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.do_io(R, self.timeouts.read_wait(), |s| s.recv(buf))
    }

    /// Like `recv`, leaving the datagram queued.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.do_io(R, self.timeouts.read_wait(), |s| s.peek(buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().local_addr()
    }

    /// The connected peer's address (`NotConnected` if none).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get().peer_addr()
    }

    /// A second handle with its own fd and registration; timeouts are shared.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let fd = self.io.get().as_fd().try_clone_to_owned()?;
        let s = mio::net::UdpSocket::from_std(std::net::UdpSocket::from(fd));
        Ok(UdpSocket { io: Registered::new(s)?, timeouts: self.timeouts.clone() })
    }

    /// Sets `SO_BROADCAST`.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.io.get().set_broadcast(on)
    }

    /// Gets `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.io.get().broadcast()
    }

    /// Sets `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_ttl(ttl)
    }

    /// Gets `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.get().ttl()
    }

    /// Joins an IPv4 multicast group.
    pub fn join_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.io.get().join_multicast_v4(multiaddr, interface)
    }

    /// Joins an IPv6 multicast group.
    pub fn join_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.io.get().join_multicast_v6(multiaddr, interface)
    }

    /// Leaves an IPv4 multicast group (`IP_DROP_MEMBERSHIP`).
    pub fn leave_multicast_v4(&self, multiaddr: &Ipv4Addr, interface: &Ipv4Addr) -> io::Result<()> {
        self.io.get().leave_multicast_v4(multiaddr, interface)
    }

    /// Leaves an IPv6 multicast group (`IPV6_DROP_MEMBERSHIP`).
    pub fn leave_multicast_v6(&self, multiaddr: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.io.get().leave_multicast_v6(multiaddr, interface)
    }

    /// Sets `IP_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.io.get().set_multicast_loop_v4(on)
    }

    /// `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.io.get().multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`.
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.io.get().set_multicast_ttl_v4(ttl)
    }

    /// `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.io.get().multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.io.get().set_multicast_loop_v6(on)
    }

    /// `IPV6_MULTICAST_LOOP`.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.io.get().multicast_loop_v6()
    }

    /// Takes the pending `SO_ERROR`.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get().take_error()
    }
}

super::tcp::fd_traits!(UdpSocket);

super::io::timeout_methods!(UdpSocket);
