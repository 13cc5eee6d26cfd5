//! `inspector explain PORT`: who holds a port, and which kernel rule
//! decides a would-be `bind()` and `listen()` on it.
//!
//! [`rules`] predicts the kernel's decision from the sockets on the port
//! (no I/O); [`inventory`] lists those sockets from the kernel
//! (NETLINK_SOCK_DIAG inside the target namespace, owners from `/proc`,
//! socket options via `pidfd_getfd`).

pub mod rules;

use std::net::IpAddr;

/// `addr:port`, with brackets for IPv6.
pub fn fmt_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
