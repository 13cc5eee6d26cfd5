//! Everything that talks to the kernel: the system-call seam (`sys`), the
//! running kernel's BTF and the offsets read from it, loading and attaching
//! the eBPF programs (`probe`), the socket iterators (`sockets`), network
//! namespaces and the veth pairs between them, cgroups and the pods they belong to, and the kernel's numbers as types (errno, TCP
//! state, protocol: re-exported here from `numbers`).
//!
//! Nothing here knows about records, explanations or front ends: the
//! layers above call down, never the other way.

pub mod btf;
pub mod cgroup;
pub mod netns;
mod numbers;
pub mod offsets;
pub mod pods;
pub mod probe;
pub mod sockets;
pub mod sys;
pub mod veth;

pub use numbers::*;
