//! The layout facts the kernel programs need, read from the running
//! kernel's BTF at load time and handed to them as the `OFFSETS` global
//! (Rust eBPF has no CO-RE relocations, so nothing is compiled in).

use std::path::Path;

use inspector_common::Offsets;

use crate::kernel::btf::{Btf, BtfError};

pub(crate) const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Why the running kernel's layout cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(
        "this kernel exposes no BTF at {VMLINUX}: a kernel built with CONFIG_DEBUG_INFO_BTF=y is required"
    )]
    NoBtf,
    #[error("reading kernel layout from BTF")]
    Layout(#[from] BtfError),
    #[error(
        "kernel BTF field {0} is a bitfield that straddles bytes; this kernel's layout is not supported"
    )]
    Bitfield(&'static str),
}

/// The running kernel's BTF and the offsets read from it.
pub fn running_kernel() -> Result<(Btf, Offsets), OffsetsError> {
    if !Path::new(VMLINUX).exists() {
        return Err(OffsetsError::NoBtf);
    }
    let kernel = Btf::from_file(Path::new(VMLINUX))?;
    let offsets = kernel_offsets(&kernel)?;
    Ok((kernel, offsets))
}

/// Absolute bit offset and width of a bitfield that must sit inside one
/// byte (the programs read a single byte and shift).
fn bit(btf: &Btf, ty: &str, path: &'static str) -> Result<(u32, u32), OffsetsError> {
    let m = btf.member(ty, path)?;
    let width = if m.bitfield_size == 0 {
        8
    } else {
        m.bitfield_size
    };
    if (m.bit_offset % 8) + width > 8 {
        return Err(OffsetsError::Bitfield(path));
    }
    Ok((m.bit_offset, width))
}

/// Reads every layout fact the programs need from the kernel's BTF.
pub fn kernel_offsets(btf: &Btf) -> Result<Offsets, OffsetsError> {
    let o = |ty: &str, path: &str| btf.offset(ty, path);
    let sc = "sock_common";
    let (skc_reuse_bit, skc_reuse_width) = bit(btf, sc, "skc_reuse")?;
    let (skc_reuseport_bit, _) = bit(btf, sc, "skc_reuseport")?;
    let (skc_ipv6only_bit, _) = bit(btf, sc, "skc_ipv6only")?;
    // The programs treat a sock, a timewait sock and a request sock as
    // starting with their sock_common; check that this kernel agrees.
    for (ty, member) in [
        ("sock", "__sk_common"),
        ("inet_timewait_sock", "__tw_common"),
        ("request_sock", "__req_common"),
    ] {
        if o(ty, member)? != 0 {
            return Err(OffsetsError::Layout(BtfError::Malformed(format!(
                "struct {ty}: {member} is not at offset 0"
            ))));
        }
    }
    Ok(Offsets {
        tw_timer_handler: 0,
        filter_netns: 0,
        skc_daddr: o(sc, "skc_daddr")?,
        skc_rcv_saddr: o(sc, "skc_rcv_saddr")?,
        skc_dport: o(sc, "skc_dport")?,
        skc_num: o(sc, "skc_num")?,
        skc_family: o(sc, "skc_family")?,
        skc_state: o(sc, "skc_state")?,
        skc_reuse_bit,
        skc_reuse_width,
        skc_reuseport_bit,
        skc_ipv6only_bit,
        skc_bound_dev_if: o(sc, "skc_bound_dev_if")?,
        skc_net: o(sc, "skc_net")?,
        skc_v6_daddr: o(sc, "skc_v6_daddr")?,
        skc_v6_rcv_saddr: o(sc, "skc_v6_rcv_saddr")?,
        skc_cookie: o(sc, "skc_cookie")?,
        sk_protocol: o("sock", "sk_protocol")?,
        sk_type: o("sock", "sk_type")?,
        sk_uid: o("sock", "sk_uid")?,
        sk_reuseport_cb: o("sock", "sk_reuseport_cb")?,
        sk_receive_queue_prev: o("sock", "sk_receive_queue.prev")?,
        sk_socket: o("sock", "sk_socket")?,
        net_inum: o("net", "ns.inum")?,
        socket_sk: o("socket", "sk")?,
        socket_file: o("socket", "file")?,
        socket_alloc_inode: o("socket_alloc", "vfs_inode")?,
        inode_ino: o("inode", "i_ino")?,
        task_files: o("task_struct", "files")?,
        files_fdt: o("files_struct", "fdt")?,
        fdt_fd: o("fdtable", "fd")?,
        fdt_max_fds: o("fdtable", "max_fds")?,
        file_private_data: o("file", "private_data")?,
        icsk_accept_tail: o("inet_connection_sock", "icsk_accept_queue.rskq_accept_tail")?,
        tw_timer: o("inet_timewait_sock", "tw_timer")?,
        tw_substate: o("inet_timewait_sock", "tw_substate")?,
        timer_function: o("timer_list", "function")?,
        timer_expires: o("timer_list", "expires")?,
        skb_head: o("sk_buff", "head")?,
        skb_network_header: o("sk_buff", "network_header")?,
        skb_transport_header: o("sk_buff", "transport_header")?,
        regs_di: o("pt_regs", "di")?,
        regs_si: o("pt_regs", "si")?,
        regs_orig_ax: o("pt_regs", "orig_ax")?,
        nr_bind: libc::SYS_bind as u32,
        nr_listen: libc::SYS_listen as u32,
        nr_connect: libc::SYS_connect as u32,
        nr_accept: libc::SYS_accept as u32,
        nr_accept4: libc::SYS_accept4 as u32,
        inet_sport: o("inet_sock", "inet_sport")?,
        sk_cgroup: sock_cgroup_offset(btf),
        cgroup_kn: o("cgroup", "kn")?,
        kn_id: o("kernfs_node", "id")?,
        sk_ack_backlog: o("sock", "sk_ack_backlog")?,
        sk_max_ack_backlog: o("sock", "sk_max_ack_backlog")?,
        reuseport_prog: o("sock_reuseport", "prog")?,
        // Counted since 6.1 ("soreuseport: Fix socket selection for
        // SO_INCOMING_CPU"); older kernels weigh the CPU in the lookup's
        // score instead, which this does not see.
        reuseport_incoming_cpu: btf.offset("sock_reuseport", "incoming_cpu").unwrap_or(0),
        sk_drops: o("sock", "sk_drops")?,
        // Since 6.18 (include/net/sock.h `sk_drops_read()`): a socket with
        // per-node counters (UDP, raw) counts there instead of in
        // `sk_drops`; TCP listeners have none.
        sk_drop_counters: btf.offset("sock", "sk_drop_counters").unwrap_or(0),
        ndc_drops0: btf.offset("numa_drop_counters", "drops0").unwrap_or(0),
        ndc_drops1: btf.offset("numa_drop_counters", "drops1").unwrap_or(0),
    })
}

/// Where `struct sock` keeps its cgroup v2 pointer: `sk_cgrp_data.cgroup`
/// since 5.15 (`struct sock_cgroup_data { struct cgroup *cgroup; u32
/// classid; u16 prioidx; }`, include/linux/cgroup-defs.h; 6.1 and 6.18
/// alike). Older kernels pack it into a `val` union shared with the v1
/// net_cls/net_prio data; there the programs fall back to the owner's
/// cgroup (0 here: no `struct sock` field lives at offset 0 but
/// `__sk_common`).
fn sock_cgroup_offset(btf: &Btf) -> u32 {
    btf.offset("sock", "sk_cgrp_data.cgroup").unwrap_or(0)
}
