//! The labels that say where a series comes from: the `netns` label of the
//! per-namespace gauges (a `/run/netns` name, else the inode), the
//! `namespace`, `pod` and `container` labels of `--kubernetes` and the
//! `container` label of `--container-label`: which metrics carry them and
//! their values, each bounded by [`label`] as any value from another
//! process.

use std::collections::HashMap;

use prometheus_client::{metrics::gauge::Gauge, registry::Registry};

use super::{Labels, Metrics, OTHER, label};
use crate::model::record::Record;

/// The network namespaces the agent reads at scrape time.
#[derive(Debug, Clone, Default)]
pub struct NetnsView {
    /// `netns` label values other than the inode: `/run/netns` names.
    pub names: HashMap<u32, String>,
    /// The pod (namespace, pod) whose network namespace it is.
    pub pods: HashMap<u32, (String, String)>,
    /// Namespaces whose sockets were read.
    pub watched: usize,
    /// Namespaces found but not read: past the cap, or gone before the
    /// read.
    pub left_out: usize,
}

impl Metrics {
    /// `base` and the container labels' keys: `namespace`, `pod` and
    /// `container` with `--kubernetes`; `container` alone with
    /// `--container-label` where `container_label` says the metric has it.
    pub(super) fn keys(&self, base: &[&'static str], container_label: bool) -> Vec<&'static str> {
        let mut keys = base.to_vec();
        if self.limits.kubernetes {
            keys.extend(["namespace", "pod", "container"]);
        } else if container_label && self.limits.container_label {
            keys.push("container");
        }
        keys
    }

    /// The values of [`Metrics::keys`]' container labels for `r`.
    pub(super) fn container_values(&self, r: &Record, container_label: bool) -> Vec<String> {
        if self.limits.kubernetes {
            let (namespace, pod) = pod_of(r);
            vec![namespace, pod, pod_container(r)]
        } else if container_label && self.limits.container_label {
            vec![container(r)]
        } else {
            Vec::new()
        }
    }
}

/// The `container` label of `r` with `--container-label`: its container
/// id or machine name, empty outside one (an empty label is no label to
/// Prometheus).
pub(super) fn container(r: &Record) -> String {
    label(r.container.as_deref().unwrap_or(""))
}

/// The `container` label of `r` with `--kubernetes`: the container's name
/// in its pod, else its id (or machine name), empty outside one.
pub(super) fn pod_container(r: &Record) -> String {
    r.k8s_container
        .as_deref()
        .map_or_else(|| container(r), label)
}

/// The (namespace, pod) labels of `r`, empty outside a pod.
pub(super) fn pod_of(r: &Record) -> (String, String) {
    (
        label(r.k8s_namespace.as_deref().unwrap_or("")),
        label(r.k8s_pod.as_deref().unwrap_or("")),
    )
}

impl Metrics {
    /// The labels of a per-namespace gauge's series: `netns`, and with
    /// `--kubernetes` the pod whose namespace it is (`container` empty:
    /// a pod's containers share it).
    pub(super) fn netns_labels(&self, netns: u32) -> Labels {
        let view = &self.kernel.netns;
        let name = view
            .names
            .get(&netns)
            .map_or_else(|| netns.to_string(), |n| label(n));
        let mut labels = vec![("netns", name)];
        if self.limits.kubernetes {
            let (ns, pod) = view
                .pods
                .get(&netns)
                .map(|(ns, pod)| (label(ns), label(pod)))
                .unwrap_or_default();
            labels.extend([
                ("namespace", ns),
                ("pod", pod),
                ("container", String::new()),
            ]);
        }
        labels
    }

    /// [`Metrics::netns_labels`] of the series past the limit.
    pub(super) fn other_netns_labels(&self) -> Labels {
        let mut labels = self.netns_labels(0);
        for l in &mut labels {
            l.1 = OTHER.to_owned();
        }
        labels
    }

    pub(super) fn register_namespaces(&self, reg: &mut Registry) {
        let gauge = |n: usize| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
            g
        };
        let view = &self.kernel.netns;
        reg.register(
            "inspector_netns_watched",
            "Network namespaces whose socket tables the TIME_WAIT and ephemeral-port gauges read at this scrape",
            gauge(view.watched),
        );
        reg.register(
            "inspector_netns_left_out",
            "Network namespaces found (named, held by a process, or seen in events) but not read: past the cap of 256, or gone before the read",
            gauge(view.left_out),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{KernelMember, KernelView, Limits, Metrics};
    use crate::{
        kernel::{Proto, pods::Pod},
        model::{
            ephemeral::DestKey,
            record::{Record, RecordType, decode_bind},
        },
    };

    fn failed(kind: RecordType, pod: bool) -> Record {
        let mut ev = inspector_common::Event::zeroed();
        ev.kind = match kind {
            RecordType::Bind => inspector_common::kind::BIND,
            _ => inspector_common::kind::CONNECT,
        };
        ev.proto = inspector_common::IPPROTO_TCP;
        ev.family = inspector_common::AF_INET;
        ev.req_port = 8080;
        ev.errno = if kind == RecordType::Bind {
            libc::EADDRINUSE
        } else {
            libc::EADDRNOTAVAIL
        };
        let mut r = decode_bind(&ev, kind);
        r.container = Some("3f4e156163a0".into());
        if pod {
            r.k8s_namespace = Some("shop".into());
            r.k8s_pod = Some("web-0".into());
            r.k8s_container = Some("app".into());
        }
        r
    }

    #[test]
    fn kubernetes_labels_on_failures_and_namespace_gauges() {
        let mut m = Metrics::new(Limits {
            kubernetes: true,
            ..Limits::default()
        });
        m.apply(&failed(RecordType::Bind, true));
        m.apply(&failed(RecordType::Connect, true));
        // A container the kubelet's directories do not name: its id.
        m.apply(&failed(RecordType::Bind, false));
        let mut view = KernelView {
            timewait: Some(vec![(11, Proto::Tcp, 443, 2)]),
            ephemeral_in_use: Some(vec![(
                DestKey {
                    netns: 11,
                    addr: "10.0.0.1".parse().expect("addr"),
                    port: 80,
                },
                3,
            )]),
            ..KernelView::default()
        };
        view.netns.names.insert(11, "cni-1".into());
        view.netns.pods.insert(11, ("shop".into(), "web-0".into()));
        m.set_kernel(view);
        let om = m.encode_openmetrics();
        for line in [
            "inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\",namespace=\"shop\",pod=\"web-0\",container=\"app\"} 1\n",
            "inspector_bind_failures_total{proto=\"tcp\",port=\"8080\",errno=\"EADDRINUSE\",namespace=\"\",pod=\"\",container=\"3f4e156163a0\"} 1\n",
            "inspector_connect_failures_total{proto=\"tcp\",errno=\"EADDRNOTAVAIL\",netns=\"0\",destination=\"0.0.0.0:8080\",namespace=\"shop\",pod=\"web-0\",container=\"app\"} 1\n",
            "inspector_timewait_sockets{netns=\"cni-1\",namespace=\"shop\",pod=\"web-0\",container=\"\",proto=\"tcp\",port=\"443\"} 2\n",
            "inspector_ephemeral_ports_in_use{netns=\"cni-1\",namespace=\"shop\",pod=\"web-0\",container=\"\",destination=\"10.0.0.1:80\"} 3\n",
        ] {
            assert!(om.contains(line), "missing {line:?} in\n{om}");
        }
    }

    #[test]
    fn members_carry_their_pod() {
        let long = format!("a\"b\n\u{1b}[2J{}", "é".repeat(300));
        let mut m = Metrics::new(Limits {
            kubernetes: true,
            ..Limits::default()
        });
        let mut d = failed(RecordType::Bind, true);
        d.kind = RecordType::Reuseport;
        d.errno = None;
        d.lport = 7000;
        d.sock = 1;
        d.pid = Some(77);
        d.comm = Some("srv".into());
        m.apply(&d);
        let mut r = failed(RecordType::Bind, true);
        r.k8s_namespace = Some(long.clone());
        r.k8s_pod = Some(long.clone());
        r.k8s_container = Some(long.clone());
        m.apply(&r);
        let mut view = KernelView {
            timewait: Some(vec![(11, Proto::Tcp, 443, 2)]),
            members: vec![KernelMember {
                sock: 2,
                proto: Some(Proto::Tcp),
                lport: 7000,
                container: Some("3f4e156163a0".into()),
                pod: Some(Arc::new(Pod {
                    namespace: long.clone(),
                    pod: "web-1".into(),
                    container: Some("app".into()),
                })),
                ..KernelMember::default()
            }],
            ..KernelView::default()
        };
        view.netns.names.insert(11, long.clone());
        view.netns.pods.insert(11, (long.clone(), long.clone()));
        m.set_kernel(view);
        let om = m.encode_openmetrics();
        assert!(
            om.contains("member=\"0\",pid=\"77\",comm=\"srv\",namespace=\"shop\",pod=\"web-0\",container=\"app\"} 1\n"),
            "{om}"
        );
        assert!(
            om.contains("member=\"1\",pid=\"\",comm=\"\",namespace=\"a"),
            "{om}"
        );
        assert!(om.contains("pod=\"web-1\",container=\"app\"} 0\n"), "{om}");
    }
}
