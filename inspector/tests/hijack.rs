//! A UDP bind that takes another user's traffic is marked as it happens:
//! root holds 127.0.0.1:P with SO_REUSEADDR, uid 65534 binds the same
//! address with SO_REUSEADDR (allowed: `udp_lib_lport_inuse()` compares no
//! uids for SO_REUSEADDR) and, bound last, gets every unicast datagram.

mod common;

use std::time::Duration;

use common::{addr, collect, of_type, pipeline, udp};
use inspector::{
    explain::annotate::Annotator,
    filter::Filter,
    netns::in_new_netns,
    sys::{BindSpec, fork_as},
};

#[test]
fn a_cross_uid_udp_reuseaddr_bind_is_marked_as_a_hijack() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let mut annotator = Annotator::default();
    let (netns, root, child) = in_new_netns(|netns| {
        let root = udp();
        root.set_reuse_address(true).expect("SO_REUSEADDR");
        root.bind(&addr("127.0.0.1:7310")).expect("root bind");
        let spec = BindSpec {
            addr: "127.0.0.1:7310".parse().expect("addr"),
            stream: false,
            reuseaddr: true,
            reuseport: false,
            v6only: None,
            listen: None,
            count_on_release: false,
        };
        let child = fork_as(65534, &spec, true).expect("fork");
        (netns, root, child)
    })
    .expect("netns");
    assert_eq!(child.report.first_error(), None, "the kernel allows it");
    let mut recs = collect(&mut p, netns, Duration::from_secs(3), |r| {
        of_type(r, "bind").iter().any(|b| b.uid == Some(65534))
    });
    annotator.annotate(&mut recs, Some(&p.tracker));
    let binds = of_type(&recs, "bind");
    let first = binds
        .iter()
        .find(|b| b.uid == Some(0))
        .expect("root's bind");
    assert_eq!(first.explanation, None, "nobody shared it then: {first:?}");
    let later = binds
        .iter()
        .find(|b| b.uid == Some(65534))
        .expect("uid 65534's bind");
    let why = later.explanation.as_deref().unwrap_or_default();
    assert!(why.starts_with("hijack risk: UDP 127.0.0.1:7310"), "{why}");
    assert!(why.contains("uid 0"), "{why}");
    drop(child);
    drop(root);
}
