//! [`ToSocketAddrs`]: std's address conversions, with name lookups moved off the hub thread.
//!
//! Literal addresses (`SocketAddr`, `(IpAddr, u16)`, `"127.0.0.1:80"`, `("::1", 80)`) are
//! converted in place. A host name (`"localhost:80"`) is resolved by `getaddrinfo` on another OS
//! thread while the calling fiber parks, so a slow DNS server never stalls the other fibers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Types that convert to socket addresses: the same set std's `ToSocketAddrs` covers, so
/// switching from `std::net` is a `use` change. Sealed: it cannot be implemented outside
/// greenfiber (a user type can convert to a `SocketAddr` first).
pub trait ToSocketAddrs: sealed::Sealed {}

mod sealed {
    use std::io;
    use std::net::SocketAddr;

    /// The conversion itself; `to_addrs` may park the calling fiber for a lookup.
    pub trait Sealed {
        fn to_addrs(&self) -> io::Result<Vec<SocketAddr>>;
    }
}
use sealed::Sealed;

/// Resolves `addr` (see the module docs).
pub(crate) fn resolve(addr: &impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    addr.to_addrs()
}

/// Runs `f(addrs)` on each address in turn and returns the first success, or the last error.
pub(crate) fn each_addr<T>(
    addr: &impl ToSocketAddrs,
    mut f: impl FnMut(&SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in resolve(addr)? {
        match f(&a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any addresses")
    }))
}

macro_rules! literal {
    ($($t:ty),*) => {$(
        impl ToSocketAddrs for $t {}
        impl Sealed for $t {
            fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
                std::net::ToSocketAddrs::to_socket_addrs(self).map(Iterator::collect)
            }
        }
    )*};
}
literal!(SocketAddr, SocketAddrV4, SocketAddrV6, (IpAddr, u16), (Ipv4Addr, u16), (Ipv6Addr, u16));

impl ToSocketAddrs for str {}
impl Sealed for str {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(a) = self.parse::<SocketAddr>() {
            return Ok(vec![a]);
        }
        lookup(self.to_owned())
    }
}

impl ToSocketAddrs for (&str, u16) {}
impl Sealed for (&str, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.0.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.1)]);
        }
        let (host, port) = (self.0.to_owned(), self.1);
        off_hub(move || std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)))
            .map(Iterator::collect)
    }
}

impl ToSocketAddrs for (String, u16) {}
impl Sealed for (String, u16) {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        (self.0.as_str(), self.1).to_addrs()
    }
}

impl ToSocketAddrs for String {}
impl Sealed for String {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.as_str().to_addrs()
    }
}

impl ToSocketAddrs for [SocketAddr] {}
impl Sealed for [SocketAddr] {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(self.to_vec())
    }
}

impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}
impl<T: ToSocketAddrs + ?Sized> Sealed for &T {
    fn to_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        (**self).to_addrs()
    }
}

fn lookup(host_port: String) -> io::Result<Vec<SocketAddr>> {
    off_hub(move || std::net::ToSocketAddrs::to_socket_addrs(host_port.as_str()))
        .map(Iterator::collect)
}

/// Runs the blocking lookup `f` on the blocking thread pool; the calling fiber parks until it
/// is done while other fibers run.
fn off_hub<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    crate::threadpool::spawn_blocking(f).map_err(|e| io::Error::other(e.to_string()))?
}
