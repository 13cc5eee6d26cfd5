//! A veth pair between two network namespaces, with an IPv4 address on
//! each end: two hosts on one machine whose traffic is not loopback.
//!
//! Some kernel rules treat loopback peers apart (`tcp_tw_reuse=2` reuses a
//! TIME_WAIT port only for a loopback peer, in `tcp_twsk_unique()`), so a
//! scenario about them must also run where production runs: between two
//! hosts. The pair is made with one rtnetlink `RTM_NEWLINK` request (what
//! `ip link add A type veth peer name B netns N` sends); addresses and
//! flags with the interface ioctls. One request does not justify a
//! netlink library: the message is 80 bytes, built and checked here.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, BorrowedFd, OwnedFd},
};

use super::{
    netns::{ifreq, set_link_flags},
    sys::{self, syscall},
};

/// `VETH_INFO_PEER` (`include/uapi/linux/veth.h`): the peer's ifinfomsg
/// and attributes, nested in `IFLA_INFO_DATA`.
const VETH_INFO_PEER: u16 = 1;
/// `struct nlmsghdr` and `struct ifinfomsg` are 16 bytes each.
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;

/// Creates the veth pair `name` (in the calling thread's namespace) and
/// `peer` (in the namespace `peer_ns`), both down and without addresses.
pub fn add_pair(name: &str, peer: &str, peer_ns: BorrowedFd<'_>) -> io::Result<()> {
    let msg = new_link_request(name, peer, peer_ns.as_raw_fd())?;
    let sock = rtnetlink_socket()?;
    // SAFETY: send reads `msg.len()` bytes of our buffer, on our socket.
    unsafe { syscall!(send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0)) }?;
    let mut buf = [0u8; 1024];
    // SAFETY: recv writes at most `buf.len()` bytes into our buffer.
    let n = unsafe {
        syscall!(recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0
        ))
    }?;
    ack(&buf[..n.unsigned_abs()]).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("creating the veth pair {name}/{peer} (RTM_NEWLINK): {e}"),
        )
    })
}

/// Gives `name` (in the calling thread's namespace) the address
/// `addr/prefix` and brings it up.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    for (request, value) in [
        (libc::SIOCSIFADDR, addr),
        (libc::SIOCSIFNETMASK, Ipv4Addr::from(mask)),
    ] {
        let mut ifr = ifreq(name)?;
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(value).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a sockaddr_in fits in the union's sockaddr (both 16
        // bytes); the ioctls read it as one.
        unsafe {
            std::ptr::write(
                (&raw mut ifr.ifr_ifru.ifru_addr).cast::<libc::sockaddr_in>(),
                sin,
            );
        }
        // SAFETY: the ioctl reads the ifreq we own, which outlives the call.
        unsafe { syscall!(ioctl(sock.as_raw_fd(), request, &ifr)) }
            .map_err(|e| io::Error::new(e.kind(), format!("setting {value} on {name}: {e}")))?;
    }
    set_link_flags(name, libc::IFF_UP)
}

fn rtnetlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers.
    let fd = unsafe {
        syscall!(socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        ))
    }?;
    // SAFETY: socket(2) succeeded: fd is new and nobody else owns it.
    unsafe { sys::owned(fd.into()) }
}

/// The `RTM_NEWLINK` request: `IFLA_IFNAME name`, `IFLA_LINKINFO {
/// IFLA_INFO_KIND "veth", IFLA_INFO_DATA { VETH_INFO_PEER { ifinfomsg,
/// IFLA_IFNAME peer, IFLA_NET_NS_FD fd } } }`.
fn new_link_request(name: &str, peer: &str, peer_ns: i32) -> io::Result<Vec<u8>> {
    for n in [name, peer] {
        if n.is_empty() || n.len() >= libc::IFNAMSIZ || n.contains(['/', '\0', ' ']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {n:?}"),
            ));
        }
    }
    let mut m = vec![0u8; NLMSG_HDR + IFINFOMSG];
    m[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    let flags =
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    attr(&mut m, libc::IFLA_IFNAME, &c_name(name));
    let info = open(&mut m, libc::IFLA_LINKINFO);
    attr(&mut m, libc::IFLA_INFO_KIND, b"veth\0");
    let data = open(&mut m, libc::IFLA_INFO_DATA);
    let peer_at = open(&mut m, VETH_INFO_PEER);
    m.extend_from_slice(&[0u8; IFINFOMSG]);
    attr(&mut m, libc::IFLA_IFNAME, &c_name(peer));
    attr(
        &mut m,
        libc::IFLA_NET_NS_FD,
        &(peer_ns as u32).to_ne_bytes(),
    );
    close(&mut m, peer_at);
    close(&mut m, data);
    close(&mut m, info);
    let len = u32::try_from(m.len()).map_err(|_| io::Error::other("netlink request too long"))?;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    Ok(m)
}

fn c_name(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// Appends one attribute, padded to 4 bytes.
fn attr(m: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = (4 + value.len()) as u16;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(value);
    pad(m);
}

/// Starts a nested attribute; [`close`] writes its length.
fn open(m: &mut Vec<u8>, ty: u16) -> usize {
    let at = m.len();
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(ty | libc::NLA_F_NESTED as u16).to_ne_bytes());
    at
}

fn close(m: &mut [u8], at: usize) {
    let len = (m.len() - at) as u16;
    m[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn pad(m: &mut Vec<u8>) {
    while !m.len().is_multiple_of(4) {
        m.push(0);
    }
}

/// The kernel's answer to a request with `NLM_F_ACK`: an `NLMSG_ERROR`
/// whose error is 0, or the errno it carries.
fn ack(b: &[u8]) -> io::Result<()> {
    if b.len() < NLMSG_HDR + 4 {
        return Err(io::Error::other("short netlink answer"));
    }
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    if ty != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other(format!(
            "unexpected netlink answer of type {ty}"
        )));
    }
    match i32::from_ne_bytes([b[16], b[17], b[18], b[19]]) {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(-code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_nests_the_peer_in_the_link_info() {
        let m = new_link_request("a0", "b0", 7).expect("request");
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        // Each nested attribute's length reaches the end of the message.
        let body = &m[NLMSG_HDR + IFINFOMSG..];
        let first = u16::from_ne_bytes([body[0], body[1]]) as usize;
        assert_eq!(&body[4..7], b"a0\0");
        let info = &body[first.next_multiple_of(4)..];
        assert_eq!(
            u16::from_ne_bytes([info[0], info[1]]) as usize,
            info.len(),
            "IFLA_LINKINFO spans the rest"
        );
        assert!(m.windows(5).any(|w| w == b"veth\0"));
        assert!(m.ends_with(&7u32.to_ne_bytes()));
        assert!(new_link_request("a/0", "b0", 7).is_err());
        assert!(new_link_request("a0", "b0-this-name-is-too-long", 7).is_err());
    }

    #[test]
    fn an_ack_is_an_error_message_with_code_zero() {
        let mut b = [0u8; 36];
        b[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(ack(&b).is_ok());
        b[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(
            ack(&b).expect_err("EEXIST").raw_os_error(),
            Some(libc::EEXIST)
        );
        assert!(ack(&b[..10]).is_err());
    }
}
