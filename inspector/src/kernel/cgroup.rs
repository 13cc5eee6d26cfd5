//! cgroup v2 ids to paths, and paths to container ids.
//!
//! The kernel programs report a cgroup by its id: the inode number of the
//! cgroup's directory in cgroupfs v2 (`kernfs_node.id`, which
//! `bpf_get_current_cgroup_id` returns too). Records show the path relative
//! to the v2 root and the container it names.
//!
//! How an id becomes a path: `open_by_handle_at` with a kernfs file handle
//! (`FILEID_KERNFS`, the 8-byte id; what `name_to_handle_at` returns for a
//! cgroupfs v2 directory) opens the cgroup's directory straight from its id,
//! and `/proc/self/fd/N` names it. That is one lookup per new id, exact
//! (no race with a cgroup created after a scan) and independent of how many
//! cgroups the host has (thousands on a Kubernetes node, where a walk of the
//! whole tree per miss would cost milliseconds). It needs
//! CAP_DAC_READ_SEARCH, which the loader of the probes has; where the call
//! is refused (a kernel or LSM without it) the resolver falls back to
//! walking the v2 mount, again on each miss.
//!
//! Resolved ids are cached (bounded; cleared when full) and ids that could
//! not be resolved are cached as such: cgroup ids are never reused, so a
//! removed cgroup stays unknown.

use std::{
    collections::HashMap,
    fs,
    os::{
        fd::{AsFd as _, AsRawFd, OwnedFd},
        unix::fs::{DirEntryExt as _, MetadataExt},
    },
    path::{Path, PathBuf},
};

/// Bound on cached ids; a host rarely has more live cgroups than this.
const MAX_CACHED: usize = 16_384;

/// `FILEID_KERNFS` (include/linux/exportfs.h): the handle type of kernfs
/// (and so cgroupfs) file handles, whose 8 bytes are the node id
/// (`kernfs_encode_fh`).
const FILEID_KERNFS: i32 = 0xfe;

/// The cgroup v2 mount point from `/proc/self/mountinfo` (fstype
/// `cgroup2`): `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified`
/// on hybrid ones.
pub fn v2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    v2_mount_in(&text)
}

/// [`v2_mount`] from the text of a mountinfo file.
pub fn v2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(point)))
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as
/// three octal digits (`show_mountinfo` -> `mangle`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A resolved cgroup: its path and the container it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: String,
    pub container: Option<String>,
}

/// Cgroup id -> path and container, cached.
#[derive(Debug, Default)]
pub struct Resolver {
    mount: Option<PathBuf>,
    /// The v2 mount, opened once, for `open_by_handle_at`.
    mount_fd: Option<OwnedFd>,
    /// Inode of the mount's root: the root cgroup's id.
    root_id: u64,
    /// False once `open_by_handle_at` was refused: walk instead.
    handles: bool,
    cache: HashMap<u64, Option<Resolved>>,
}

impl Resolver {
    /// A resolver for the v2 hierarchy of this host; one that resolves
    /// nothing where cgroup v2 is not mounted.
    pub fn new() -> Self {
        match v2_mount() {
            Some(m) => Self::at(m),
            None => Self::default(),
        }
    }

    /// A resolver for the v2 hierarchy mounted at `mount`.
    pub fn at(mount: PathBuf) -> Self {
        let root_id = fs::metadata(&mount).map(|m| m.ino()).unwrap_or(0);
        let mount_fd = fs::File::open(&mount)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_dir()))
            .map(OwnedFd::from);
        Self {
            handles: mount_fd.is_some(),
            mount: Some(mount),
            mount_fd,
            root_id,
            cache: HashMap::new(),
        }
    }

    /// Where the v2 hierarchy is mounted, if it is.
    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// The path and container of cgroup `id`; `None` when it cannot be
    /// found (removed, or no v2 mount).
    pub fn resolve(&mut self, id: u64) -> Option<&Resolved> {
        if !self.cache.contains_key(&id) {
            let found = self.lookup(id).map(|path| Resolved {
                container: container_id(&path),
                path,
            });
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
            self.cache.insert(id, found);
        }
        self.cache.get(&id).and_then(Option::as_ref)
    }

    fn lookup(&mut self, id: u64) -> Option<String> {
        let mount = self.mount.clone()?;
        if id == self.root_id {
            return Some("/".to_owned());
        }
        if self.handles {
            match self.by_handle(id) {
                Ok(full) => return relative(&mount, &full),
                // The id names no live cgroup (removed: ESTALE).
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => return None,
                // Refused or unsupported: walk from now on.
                Err(_) => self.handles = false,
            }
        }
        walk(&mount, id).and_then(|full| relative(&mount, &full))
    }

    /// Opens cgroup `id` by its kernfs file handle and names it.
    fn by_handle(&self, id: u64) -> std::io::Result<PathBuf> {
        let Some(mount_fd) = &self.mount_fd else {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        };
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `handle` is a `struct file_handle` header followed by its
        // 8 bytes of `f_handle`, as `handle_bytes` says; the kernel reads
        // only those.
        let fd = unsafe {
            crate::kernel::sys::open_by_handle(
                mount_fd.as_fd(),
                (&raw mut handle).cast::<libc::file_handle>(),
            )
        }?;
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }
}

/// `struct file_handle` with room for a kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: [u8; 8],
}

/// `full` relative to the v2 `mount`, as `/a/b` (`/` for the root).
fn relative(mount: &Path, full: &Path) -> Option<String> {
    let rest = full.strip_prefix(mount).ok()?;
    Some(format!("/{}", rest.to_string_lossy()))
}

/// The directory under `mount` whose inode is `id`, depth first.
fn walk(mount: &Path, id: u64) -> Option<PathBuf> {
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            // Only directories are cgroups; `file_type` comes from the
            // directory entry itself, without a stat.
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.ino() == id {
                return Some(e.path());
            }
            stack.push(e.path());
        }
    }
    None
}

/// The container a cgroup path belongs to: the innermost component that
/// names one, from the layouts of the common runtimes:
/// - docker, cgroupfs driver: `/docker/<64 hex>`; systemd driver:
///   `/system.slice/docker-<64 hex>.scope`
/// - containerd (Kubernetes, systemd driver):
///   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`
/// - cri-o: `.../crio-<id>.scope` (not `crio-conmon-<id>.scope`, the
///   monitor)
/// - Kubernetes, cgroupfs driver: `/kubepods/{burstable,besteffort}/pod<uid>/<64 hex>`,
///   `/kubepods/pod<uid>/<64 hex>`
/// - podman: `libpod-<id>.scope` (rootful under `machine.slice`, rootless
///   under `user@UID.service`), cgroupfs driver `/libpod_parent/libpod-<id>`
///   (not `libpod-conmon-<id>`)
/// - systemd-nspawn: `/machine.slice/systemd-nspawn@NAME.service`, or the
///   machined scope `machine-NAME.scope` (NAME unescaped: `\x2d` is `-`)
///
/// `None` for anything else.
pub fn container_id(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate().rev() {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some(id) = from_component(part, parent, &parts[..i]) {
            return Some(id);
        }
    }
    None
}

fn from_component(part: &str, parent: Option<&str>, ancestors: &[&str]) -> Option<String> {
    let scope = part.strip_suffix(".scope");
    for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
        if let Some(id) = scope.and_then(|s| s.strip_prefix(prefix))
            && is_hex_id(id)
        {
            return Some(id.to_owned());
        }
    }
    // cgroupfs drivers: the bare id under its runtime's directory.
    if parent == Some("docker") && is_full_id(part) {
        return Some(part.to_owned());
    }
    if let Some(id) = part.strip_prefix("libpod-")
        && parent == Some("libpod_parent")
        && is_hex_id(id)
    {
        return Some(id.to_owned());
    }
    if is_full_id(part)
        && ancestors.contains(&"kubepods")
        && parent.is_some_and(|p| p.starts_with("pod"))
    {
        return Some(part.to_owned());
    }
    if let Some(name) = part
        .strip_prefix("systemd-nspawn@")
        .and_then(|s| s.strip_suffix(".service"))
        && !name.is_empty()
    {
        return Some(unescape_unit(name));
    }
    if let Some(name) = scope.and_then(|s| s.strip_prefix("machine-"))
        && !name.is_empty()
    {
        return Some(unescape_unit(name));
    }
    None
}

/// A runtime's container id: hex, at least the 12 digits docker shows.
fn is_hex_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A full 64-digit id: required where the component has no runtime
/// prefix to say what it is.
fn is_full_id(s: &str) -> bool {
    s.len() == 64 && is_hex_id(s)
}

/// systemd unit-name escapes (`\xNN`) undone: machined escapes `-` in a
/// machine name as `\x2d`.
fn unescape_unit(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(hex) = s.get(i + 2..i + 4)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `--cgroup` argument as a path relative to the v2 root: a path under
/// the v2 mount (`/sys/fs/cgroup/unified/system.slice`) loses the mount.
pub fn normalize_filter(arg: &str, mount: Option<&Path>) -> String {
    let rel = mount
        .and_then(|m| Path::new(arg).strip_prefix(m).ok())
        .map(|rest| format!("/{}", rest.to_string_lossy()));
    let s = rel.unwrap_or_else(|| arg.to_owned());
    if s.starts_with('/') {
        s
    } else {
        format!("/{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e156163a0313ef0ddcbc9e75c9cfc0a1b2c3d4e5f60718293a4b5c6d7e8f9";

    fn c(path: &str) -> Option<String> {
        container_id(path)
    }

    #[test]
    fn docker_cgroupfs_and_systemd_drivers() {
        assert_eq!(c(&format!("/docker/{ID}")).as_deref(), Some(ID));
        // A sub-cgroup the container made for itself.
        assert_eq!(c(&format!("/docker/{ID}/init")).as_deref(), Some(ID));
        assert_eq!(
            c(&format!("/system.slice/docker-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(c("/system.slice/docker.service"), None);
        assert_eq!(c("/docker/notanid"), None);
    }

    #[test]
    fn kubernetes_containerd_and_crio() {
        let pod = "pod0e1a6c52_7a5d_4c1b_9e6f_1d2c3b4a5f60";
        for qos in ["burstable", "besteffort"] {
            let p = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-{pod}.slice/cri-containerd-{ID}.scope"
            );
            assert_eq!(c(&p).as_deref(), Some(ID), "{p}");
            let p = format!("/kubepods/{qos}/pod0e1a6c52-7a5d-4c1b-9e6f-1d2c3b4a5f60/{ID}");
            assert_eq!(c(&p).as_deref(), Some(ID), "{p}");
        }
        // Guaranteed pods sit right under kubepods.
        assert_eq!(
            c(&format!(
                "/kubepods/pod0e1a6c52-7a5d-4c1b-9e6f-1d2c3b4a5f60/{ID}"
            ))
            .as_deref(),
            Some(ID)
        );
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-{pod}.slice/crio-{ID}.scope"
            ))
            .as_deref(),
            Some(ID)
        );
        // The pod itself, and cri-o's monitor, are not a container.
        assert_eq!(c(&format!("/kubepods.slice/kubepods-{pod}.slice")), None);
        assert_eq!(
            c(&format!(
                "/kubepods.slice/kubepods-{pod}.slice/crio-conmon-{ID}.scope"
            )),
            None
        );
    }

    #[test]
    fn podman_rootful_rootless_and_cgroupfs() {
        assert_eq!(
            c(&format!("/machine.slice/libpod-{ID}.scope")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            c(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            ))
            .as_deref(),
            Some(ID)
        );
        // Rootless with the container's own sub-cgroup.
        assert_eq!(
            c(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            ))
            .as_deref(),
            Some(ID)
        );
        assert_eq!(
            c(&format!("/libpod_parent/libpod-{ID}")).as_deref(),
            Some(ID)
        );
        assert_eq!(c(&format!("/machine.slice/libpod-conmon-{ID}.scope")), None);
    }

    #[test]
    fn nspawn_machines() {
        assert_eq!(
            c("/machine.slice/systemd-nspawn@web.service").as_deref(),
            Some("web")
        );
        assert_eq!(
            c("/machine.slice/systemd-nspawn@web.service/payload/system.slice/nginx.service")
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            c("/machine.slice/machine-edge\\x2d1.scope").as_deref(),
            Some("edge-1")
        );
    }

    #[test]
    fn plain_services_have_no_container() {
        for p in [
            "/",
            "/system.slice/nginx.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/init.scope",
            "",
        ] {
            assert_eq!(c(p), None, "{p}");
        }
    }

    #[test]
    fn finds_the_v2_mount_of_hybrid_and_pure_hosts() {
        let hybrid = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            v2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_mount_in(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let spaced = "35 24 0:30 / /mnt/cg\\040two rw - cgroup2 none rw\n";
        assert_eq!(v2_mount_in(spaced), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(v2_mount_in("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn filter_paths_lose_the_mount() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            normalize_filter("/sys/fs/cgroup/unified/system.slice", Some(m)),
            "/system.slice"
        );
        assert_eq!(normalize_filter("/system.slice", Some(m)), "/system.slice");
        assert_eq!(normalize_filter("docker", None), "/docker");
    }

    #[test]
    fn resolves_ids_on_this_host() {
        // The root and this process's own cgroup, by id, as the kernel
        // programs report them.
        let mut r = Resolver::new();
        let Some(mount) = r.mount().map(Path::to_path_buf) else {
            eprintln!("skipped: no cgroup v2 mount");
            return;
        };
        let root = fs::metadata(&mount).map(|m| m.ino()).expect("stat v2 root");
        assert_eq!(r.resolve(root).map(|x| x.path.as_str()), Some("/"));
        let own = fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 line");
        let dir = mount.join(rel.trim_start_matches('/'));
        let id = fs::metadata(&dir)
            .map(|m| m.ino())
            .expect("stat own cgroup");
        assert_eq!(r.resolve(id).map(|x| x.path.as_str()), Some(rel));
        // A nested cgroup, where we may make one (root), by handle and by
        // walking.
        let top = mount.join(format!("inspector-unit-{}", std::process::id()));
        let nested = top.join(format!("docker-{ID}.scope"));
        if fs::create_dir_all(&nested).is_ok() {
            let nid = fs::metadata(&nested).map(|m| m.ino()).expect("stat");
            let want = format!("/inspector-unit-{}/docker-{ID}.scope", std::process::id());
            let by_handle = r.resolve(nid).cloned();
            r.handles = false;
            r.cache.clear();
            let by_walk = r.resolve(nid).cloned();
            let _ = fs::remove_dir(&nested);
            let _ = fs::remove_dir(&top);
            for found in [by_handle, by_walk] {
                let found = found.expect("resolved");
                assert_eq!(found.path, want);
                assert_eq!(found.container.as_deref(), Some(ID));
            }
        }
        assert_eq!(r.resolve(u64::MAX - 1), None);
    }
}
