//! Kubernetes pods from cgroup paths, without the API server: the kubelet
//! names each pod's log directory `/var/log/pods/NAMESPACE_POD_UID/` with one
//! directory per container name under it, and (for the runtimes that write
//! them) links `/var/log/containers/POD_NAMESPACE_CONTAINER-ID.log` into it.
//! A cgroup path carries the pod UID and the container id
//! (`kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`, see
//! [`super::cgroup::container_id`]), so the two together name the pod and
//! the container. Read-only, and nothing but directory listings and
//! `lstat`s.
//!
//! The directory names are written by the kubelet from API objects, but
//! they are read here as untrusted text: each part is cut to the length
//! Kubernetes allows and any character outside its name alphabet is
//! replaced by `_`, so a label never carries more than a short name.
//!
//! Bounded: at most [`MAX_CACHED`] cgroups are remembered (the oldest go
//! first); a cgroup whose pod was not found is looked up again after
//! [`RETRY_AFTER`] (the kubelet creates the directory as the pod starts,
//! which may be just after its first socket call).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// Where the kubelet keeps pod logs.
pub const PODS_DIR: &str = "/var/log/pods";

/// Cgroups remembered at most.
pub const MAX_CACHED: usize = 4096;

/// A cgroup whose pod was not found is looked up again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The pod directory listing is read again at most this often when a UID
/// is missing from it.
const RELIST_AFTER: Duration = Duration::from_secs(1);

/// Longest directory name read; longer ones are not the kubelet's.
const NAME_MAX: usize = 512;

/// A container of a pod, as its labels show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    pub namespace: String,
    pub pod: String,
    /// The container's name; `None` where the pod has several and none
    /// links to this container's id.
    pub container: Option<String>,
}

/// The pod UID in a cgroup path: the systemd driver's
/// `kubepods-<qos>-pod<uid with _>.slice` or `kubepods-pod<uid>.slice`, or
/// the cgroupfs driver's `pod<uid>` under `kubepods`.
pub fn pod_uid(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if !parts.first().is_some_and(|p| p.starts_with("kubepods")) {
        return None;
    }
    parts.iter().rev().find_map(|part| {
        let uid = match part.strip_suffix(".slice") {
            Some(slice) => slice.rsplit_once("-pod")?.1.replace('_', "-"),
            None => part.strip_prefix("pod")?.to_owned(),
        };
        is_uid(&uid).then_some(uid)
    })
}

/// A pod UID: hex and dashes, as the API server makes them (a static pod's
/// is a 32-digit hash).
fn is_uid(s: &str) -> bool {
    (32..=36).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// `s` as a label: cut to `max` bytes, characters outside the Kubernetes
/// name alphabet (`[A-Za-z0-9.-]`) replaced by `_`.
pub fn clean(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// A pod log directory name split into (namespace, pod, uid); `None` when
/// it is not `NAMESPACE_POD_UID` (the namespace and pod names cannot
/// contain `_`).
pub fn split_dir_name(name: &str) -> Option<(String, String, String)> {
    if name.len() > NAME_MAX {
        return None;
    }
    let mut it = name.split('_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || ns.is_empty() || pod.is_empty() || !is_uid(uid) {
        return None;
    }
    // A namespace is a DNS label (63), a pod name a DNS subdomain (253).
    Some((clean(ns, 63), clean(pod, 253), uid.to_owned()))
}

/// Cgroup id -> pod, cached; looks in a kubelet's log directories.
#[derive(Debug)]
pub struct PodResolver {
    pods: PathBuf,
    /// `/var/log/containers`: next to `pods`.
    containers: PathBuf,
    /// UID -> pod directory name, from the last listing.
    listing: HashMap<String, String>,
    listed: Option<Instant>,
    /// Cgroup id -> (when looked up, the pod).
    cache: HashMap<u64, (Instant, Option<Arc<Pod>>)>,
}

impl PodResolver {
    /// A resolver over the kubelet tree whose pod directories are in
    /// `pods` (`/var/log/pods`).
    pub fn new(pods: &Path) -> Self {
        let containers = pods
            .parent()
            .map_or_else(|| PathBuf::from("/var/log"), Path::to_path_buf)
            .join("containers");
        Self {
            pods: pods.to_path_buf(),
            containers,
            listing: HashMap::new(),
            listed: None,
            cache: HashMap::new(),
        }
    }

    /// Whether `pods` looks like a kubelet's pod log directory.
    pub fn present(pods: &Path) -> bool {
        fs::metadata(pods).is_ok_and(|m| m.is_dir())
    }

    /// A resolver over [`PODS_DIR`] where it exists (a Kubernetes node).
    pub fn detect() -> Option<Self> {
        let dir = Path::new(PODS_DIR);
        Self::present(dir).then(|| Self::new(dir))
    }

    /// The pod of cgroup `id`, whose path (relative to the v2 root) is
    /// `path`; `None` outside a pod or where its directory is not found.
    pub fn resolve(&mut self, id: u64, path: &str) -> Option<Arc<Pod>> {
        if let Some((at, pod)) = self.cache.get(&id)
            && (pod.is_some() || at.elapsed() < RETRY_AFTER)
        {
            return pod.clone();
        }
        let pod = self.by_path(path).map(Arc::new);
        if self.cache.len() >= MAX_CACHED
            && !self.cache.contains_key(&id)
            && let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|e| *e.0)
        {
            self.cache.remove(&oldest);
        }
        self.cache.insert(id, (Instant::now(), pod.clone()));
        pod
    }

    /// The pod of the cgroup at `path`, uncached.
    pub fn by_path(&mut self, path: &str) -> Option<Pod> {
        let uid = pod_uid(path)?;
        let dir = self.dir_of(&uid)?;
        let (namespace, pod, _) = split_dir_name(&dir)?;
        let container = super::cgroup::container_id(path)
            .and_then(|id| self.container_name(&dir, &namespace, &pod, &id));
        Some(Pod {
            namespace,
            pod,
            container,
        })
    }

    /// The directory name of pod `uid`, listing the pods again when it is
    /// missing and the listing is old enough.
    fn dir_of(&mut self, uid: &str) -> Option<String> {
        if !self.listing.contains_key(uid)
            && self.listed.is_none_or(|at| at.elapsed() >= RELIST_AFTER)
        {
            self.listing = fs::read_dir(&self.pods)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let (_, _, uid) = split_dir_name(&name)?;
                    Some((uid, name))
                })
                .collect();
            self.listed = Some(Instant::now());
        }
        self.listing.get(uid).cloned()
    }

    /// The name of the container `id` of the pod in directory `dir`: the
    /// one that `/var/log/containers` links to this id, else the pod's only
    /// container.
    fn container_name(&self, dir: &str, ns: &str, pod: &str, id: &str) -> Option<String> {
        let names: Vec<String> = fs::read_dir(self.pods.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() <= NAME_MAX && !n.contains('/'))
            .take(64)
            .collect();
        let linked = names.iter().find(|name| {
            fs::symlink_metadata(self.containers.join(format!("{pod}_{ns}_{name}-{id}.log")))
                .is_ok()
        });
        match (linked, names.as_slice()) {
            (Some(name), _) | (None, [name]) => Some(clean(name, 63)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0e1a6c52-7a5d-4c1b-9e6f-1d2c3b4a5f60";
    const ID: &str = "3f4e156163a0313ef0ddcbc9e75c9cfc0a1b2c3d4e5f60718293a4b5c6d7e8f9";

    #[test]
    fn pod_uids_of_both_cgroup_drivers() {
        let u = UID.replace('-', "_");
        for p in [
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
        ] {
            assert_eq!(pod_uid(&p).as_deref(), Some(UID), "{p}");
        }
        assert_eq!(pod_uid(&format!("/system.slice/docker-{ID}.scope")), None);
        assert_eq!(pod_uid("/kubepods.slice/kubepods-besteffort.slice"), None);
        assert_eq!(pod_uid(&format!("/user.slice/pod{UID}")), None);
    }

    #[test]
    fn directory_names_are_bounded_and_cleaned() {
        assert_eq!(
            split_dir_name(&format!("kube-system_coredns-5d78c9869d-abcde_{UID}")),
            Some((
                "kube-system".into(),
                "coredns-5d78c9869d-abcde".into(),
                UID.into()
            ))
        );
        assert_eq!(split_dir_name(&format!("a_b_c_{UID}")), None);
        assert_eq!(split_dir_name("a_b_notauid"), None);
        assert_eq!(split_dir_name(&format!("_b_{UID}")), None);
        let long = "x".repeat(600);
        assert_eq!(split_dir_name(&format!("{long}_b_{UID}")), None);
        let (ns, pod, _) =
            split_dir_name(&format!("{}_p\"o\nd{{}}_{UID}", "n".repeat(100))).expect("split");
        assert_eq!(ns.len(), 63);
        assert_eq!(pod, "p_o_d__");
    }

    #[test]
    fn resolves_from_a_kubelet_tree() {
        let root = std::env::temp_dir().join(format!("inspector-pods-unit-{}", std::process::id()));
        let pods = root.join("pods");
        let dir = pods.join(format!("shop_web-0_{UID}"));
        fs::create_dir_all(dir.join("app")).expect("mkdir");
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let mut r = PodResolver::new(&pods);
        let one = r.resolve(7, &path).expect("pod");
        assert_eq!(
            *one,
            Pod {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: Some("app".into())
            }
        );
        // A second container: only the link names this id's.
        fs::create_dir_all(dir.join("sidecar")).expect("mkdir");
        assert_eq!(r.by_path(&path).and_then(|p| p.container), None);
        fs::create_dir_all(root.join("containers")).expect("mkdir");
        fs::write(
            root.join("containers")
                .join(format!("web-0_shop_sidecar-{ID}.log")),
            "",
        )
        .expect("link");
        assert_eq!(
            r.by_path(&path).and_then(|p| p.container).as_deref(),
            Some("sidecar")
        );
        assert_eq!(r.resolve(8, "/system.slice/x.service"), None);
        let _ = fs::remove_dir_all(&root);
    }
}
