//! Rolling sockets up for a screen: the ones that are the same to the
//! reader (state, owner, options) become one row with a count, their
//! peers, ports and expiry times summarised.

use std::{collections::HashMap, hash::Hash, net::IpAddr};

use crate::explain::words::fmt_addr;

/// `items` grouped by `key`, groups in the order of their first member.
pub(super) fn group<T, K: Hash + Eq>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> Vec<Vec<T>> {
    let mut index: HashMap<K, usize> = HashMap::new();
    let mut groups: Vec<Vec<T>> = Vec::new();
    for item in items {
        let k = key(&item);
        match index.get(&k) {
            Some(&i) => groups[i].push(item),
            None => {
                index.insert(k, groups.len());
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// The far ends of a group's sockets: one address, `ADDR:*` for one host
/// on several ports, `N peers` for several hosts, `*` for none
/// (unconnected sockets).
pub(super) fn remotes(peers: &[(IpAddr, u16)]) -> String {
    let connected: Vec<&(IpAddr, u16)> = peers
        .iter()
        .filter(|(a, p)| !a.is_unspecified() || *p != 0)
        .collect();
    let Some(&&(first_ip, first_port)) = connected.first() else {
        return "*".into();
    };
    if connected
        .iter()
        .all(|&&(a, p)| a == first_ip && p == first_port)
    {
        return fmt_addr(first_ip, first_port);
    }
    if connected.iter().all(|&&(a, _)| a == first_ip) {
        return match first_ip {
            IpAddr::V4(a) => format!("{a}:*"),
            IpAddr::V6(a) => format!("[{a}]:*"),
        };
    }
    let mut hosts: Vec<IpAddr> = connected.iter().map(|&&(a, _)| a).collect();
    hosts.sort_unstable();
    hosts.dedup();
    format!("{} peers", hosts.len())
}

/// Ports as ranges: `40000-40003,40007`; past `max` characters, the rest
/// is counted (`... +5`).
pub(super) fn ports(ports: &[u16], max: usize) -> String {
    let mut ps = ports.to_vec();
    ps.sort_unstable();
    ps.dedup();
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for p in ps {
        match runs.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(p) => *hi = p,
            _ => runs.push((p, p)),
        }
    }
    let mut out = String::new();
    for (i, &(lo, hi)) in runs.iter().enumerate() {
        let part = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        if !out.is_empty() && out.len() + part.len() + 1 > max {
            let rest: usize = runs[i..].iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
            out.push_str(&format!(",+{rest}"));
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&part);
    }
    out
}

/// When a group's sockets expire: `12-58 s`, `12 s`; `None` for sockets
/// without a timer.
pub(super) fn expiry(ms: impl IntoIterator<Item = u32>) -> Option<String> {
    let (mut lo, mut hi) = (None::<u32>, None::<u32>);
    for m in ms {
        lo = Some(lo.map_or(m, |l| l.min(m)));
        hi = Some(hi.map_or(m, |h| h.max(m)));
    }
    let (a, b) = lo.zip(hi)?;
    let w = crate::explain::words::within(a, b);
    Some(w.strip_prefix("in ").unwrap_or(&w).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn groups_keep_first_seen_order() {
        let g = group([3, 1, 3, 2, 1, 3], |x| *x);
        assert_eq!(g, vec![vec![3, 3, 3], vec![1, 1], vec![2]]);
    }

    #[test]
    fn summaries() {
        assert_eq!(remotes(&[(ip("0.0.0.0"), 0)]), "*");
        assert_eq!(remotes(&[(ip("127.0.0.1"), 5000); 3]), "127.0.0.1:5000");
        assert_eq!(
            remotes(&[(ip("127.0.0.1"), 1), (ip("127.0.0.1"), 2)]),
            "127.0.0.1:*"
        );
        assert_eq!(remotes(&[(ip("::1"), 1), (ip("::1"), 2)]), "[::1]:*");
        assert_eq!(
            remotes(&[
                (ip("10.0.0.1"), 1),
                (ip("10.0.0.2"), 2),
                (ip("10.0.0.1"), 3)
            ]),
            "2 peers"
        );
        assert_eq!(
            ports(&[40003, 40000, 40001, 40002, 40007], 40),
            "40000-40003,40007"
        );
        assert_eq!(ports(&[1, 3, 5, 7, 9, 11], 6), "1,3,5,+3");
        assert_eq!(expiry([11_200, 57_100, 30_000]).as_deref(), Some("12-58 s"));
        assert_eq!(expiry([]), None);
    }
}
