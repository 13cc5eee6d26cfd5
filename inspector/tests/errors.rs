//! Every error type, rendered as the user reads it (`inspector: error:`
//! and the chain of causes on one line): each cause appears once, and the
//! line is one line. A variant that put its `#[source]` into its own
//! message too would print the cause twice ("No space left on device (os
//! error 28): No space left on device (os error 28)").

use std::{error::Error, io, path::PathBuf};

use inspector::{
    commands::serve::web::WebConfigError,
    explain::{ExplainError, inventory::InventoryError},
    kernel::{
        btf::BtfError, netns::NetnsError, offsets::OffsetsError, probe::ProbeError,
        sockets::SocketTableError,
    },
    recording::{DirError, ReadError, RecordError},
    scenario::ScenarioError,
    util::errors::chain,
};

/// A root cause whose text is easy to count.
fn cause() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn path() -> PathBuf {
    PathBuf::from("/var/lib/inspector/rec")
}

#[test]
fn every_error_prints_each_cause_once_on_one_line() {
    let root = cause().to_string();
    let netns = || NetnsError::Open {
        path: path(),
        source: cause(),
    };
    let cases: Vec<(&str, Box<dyn Error>)> = vec![
        (
            "BtfError::Io",
            Box::new(BtfError::Io {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "OffsetsError::Layout",
            Box::new(OffsetsError::Layout(BtfError::Io {
                path: path(),
                source: cause(),
            })),
        ),
        (
            "ProbeError::Offsets",
            Box::new(ProbeError::Offsets(OffsetsError::Layout(BtfError::Io {
                path: path(),
                source: cause(),
            }))),
        ),
        ("NetnsError::Open", Box::new(netns())),
        (
            "NetnsError::Enter",
            Box::new(NetnsError::Enter {
                path: path(),
                source: cause(),
            }),
        ),
        ("NetnsError::Spawn", Box::new(NetnsError::Spawn(cause()))),
        (
            "SocketTableError::Read",
            Box::new(SocketTableError::Read {
                target: "tcp",
                source: cause(),
            }),
        ),
        (
            "SocketTableError::Netns",
            Box::new(SocketTableError::Netns(netns())),
        ),
        (
            "SocketTableError::NetnsInode",
            Box::new(SocketTableError::NetnsInode(cause())),
        ),
        (
            "InventoryError::Netns",
            Box::new(InventoryError::Netns(netns())),
        ),
        (
            "InventoryError::Netlink",
            Box::new(InventoryError::Netlink(cause())),
        ),
        (
            "InventoryError::Iterators",
            Box::new(InventoryError::Iterators(SocketTableError::NetnsInode(
                cause(),
            ))),
        ),
        (
            "InventoryError::Sysctl",
            Box::new(InventoryError::Sysctl(cause())),
        ),
        (
            "ExplainError::Inventory",
            Box::new(ExplainError::Inventory(InventoryError::Netlink(cause()))),
        ),
        (
            "ExplainError::Output",
            Box::new(ExplainError::Output(cause())),
        ),
        ("ScenarioError::Io", Box::new(ScenarioError::Io(cause()))),
        (
            "DirError::Create",
            Box::new(DirError::Create {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "DirError::Open",
            Box::new(DirError::Open {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "RecordError::Dir",
            Box::new(RecordError::Dir(DirError::Create {
                path: path(),
                source: cause(),
            })),
        ),
        (
            "RecordError::ReadDir",
            Box::new(RecordError::ReadDir {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "RecordError::Create",
            Box::new(RecordError::Create {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "RecordError::Write",
            Box::new(RecordError::Write {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "RecordError::Remove",
            Box::new(RecordError::Remove {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "RecordError::Compress",
            Box::new(RecordError::Compress(cause())),
        ),
        (
            "ReadError::Io",
            Box::new(ReadError::Io {
                path: path(),
                source: cause(),
            }),
        ),
        (
            "WebConfigError::Read",
            Box::new(WebConfigError::Read {
                path: path(),
                source: cause(),
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, e) in &cases {
        let line = chain(e.as_ref());
        let n = line.matches(&root).count();
        if n != 1 || line.contains('\n') {
            wrong.push(format!("{name}: {n} times: {line}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "causes not printed once:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn errors_without_a_cause_are_one_line_too() {
    let cases: Vec<Box<dyn Error>> = vec![
        Box::new(ProbeError::NoPrivilege),
        Box::new(OffsetsError::NoBtf),
        Box::new(OffsetsError::Bitfield("skc_reuse")),
        Box::new(NetnsError::NotNetns {
            path: path(),
            what: "a regular file",
        }),
        Box::new(DirError::Shared {
            path: path(),
            why: "it belongs to uid 65534, not 0".into(),
        }),
        Box::new(RecordError::Exhausted { path: path() }),
        Box::new(ReadError::NotRecording { path: path() }),
        Box::new(ReadError::Version {
            path: path(),
            v: 99,
        }),
        Box::new(ScenarioError::Setup("the old server did not bind".into())),
        Box::new(WebConfigError::Invalid {
            path: path(),
            why: "basic_auth_users: bcrypt".into(),
        }),
    ];
    for e in &cases {
        let line = chain(e.as_ref());
        assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
    }
}
