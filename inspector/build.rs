//! Builds the eBPF object (`inspector-ebpf`) with Debian's `rustc-web`,
//! whose sysroot ships a precompiled `core` for `bpfel-unknown-none`, so
//! neither nightly nor rust-src is needed. `cargo xtask setup` installs it.

use std::{env, fs, os::unix::fs::symlink, path::PathBuf};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?;
    let ebpf_dir = root.join("inspector-ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("inspector-common/src").display()
    );

    // A rustup "custom toolchain" is any folder with bin/{rustc,cargo}: point
    // one at Debian's compiler so rustup's stable proxies are bypassed.
    let compiler_dir =
        PathBuf::from(env::var("INSPECTOR_BPF_RUST").unwrap_or_else(|_| "/usr/bin".into()));
    println!("cargo:rerun-if-env-changed=INSPECTOR_BPF_RUST");
    if !compiler_dir.join("rustc").exists() || !compiler_dir.join("cargo").exists() {
        bail!(
            "no eBPF-capable rustc in {}: run `cargo xtask setup` (installs Debian's rustc-web, \
             libstd-rust-web-dev-bpf and bpf-linker)",
            compiler_dir.display()
        );
    }
    let toolchain = PathBuf::from(env::var("OUT_DIR")?).join("bpf-toolchain");
    let bin = toolchain.join("bin");
    fs::create_dir_all(&bin)?;
    for tool in ["rustc", "cargo", "rustdoc"] {
        let link = bin.join(tool);
        let _ = fs::remove_file(&link);
        symlink(compiler_dir.join(tool), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let toolchain = toolchain.to_str().context("non-UTF-8 OUT_DIR")?.to_owned();
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?.to_owned();
    // inspector-ebpf writes two BPF atomic instructions as inline assembly
    // (an unstable feature on the BPF target): allow nightly features for
    // it (its object is named `inspector`) and for aya-ebpf, in the eBPF
    // build only, which inherits this variable.
    // SAFETY: a build script is single-threaded; nothing reads the
    // environment concurrently.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf,inspector") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "inspector-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
