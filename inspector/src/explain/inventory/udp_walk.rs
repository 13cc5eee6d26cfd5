//! The one rule of the UDP port check that changed between kernels,
//! measured on the running one.

use std::{io, net::Ipv4Addr};

use crate::{explain::rules::UdpWalk, kernel::netns};

/// How the running kernel's `udp_lib_lport_inuse()` ends its walk of a
/// port's chain, measured once per process in a namespace of its own (the
/// rule changed between kernel versions and its source is not always at
/// hand, so the kernel is asked): three UDP sockets on 0.0.0.0 of one port,
/// A with SO_REUSEADDR, then B with SO_REUSEADDR and SO_REUSEPORT (it
/// passes A through SO_REUSEADDR on both and goes to the chain's head),
/// then C with SO_REUSEPORT only. B is the first overlapping socket C
/// meets and a SO_REUSEPORT match: where that ends the walk C binds; where
/// every overlapping socket must allow it, A refuses it.
pub fn measured_udp_walk() -> Result<UdpWalk, String> {
    static WALK: std::sync::OnceLock<Result<UdpWalk, String>> = std::sync::OnceLock::new();
    WALK.get_or_init(|| {
        netns::in_new_netns(|_| measure_udp_walk())
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("measuring the UDP bind rule: {e}"))
    })
    .clone()
}

fn measure_udp_walk() -> io::Result<UdpWalk> {
    use socket2::{Domain, Socket, Type};
    const PORT: u16 = 40000;
    let addr: std::net::SocketAddr = (Ipv4Addr::UNSPECIFIED, PORT).into();
    let sock = |reuseaddr: bool, reuseport: bool| -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
        s.set_reuse_address(reuseaddr)?;
        s.set_reuse_port(reuseport)?;
        Ok(s)
    };
    let a = sock(true, false)?;
    a.bind(&addr.into())?;
    let b = sock(true, true)?;
    b.bind(&addr.into())?;
    let c = sock(false, true)?;
    match c.bind(&addr.into()) {
        Ok(()) => Ok(UdpWalk::FirstOverlapDecides),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(UdpWalk::EveryOverlapMustAllow),
        Err(e) => Err(e),
    }
}
