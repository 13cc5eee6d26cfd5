//! Builds the eBPF object (`inspector-ebpf`) with Debian's `rustc-web`,
//! whose sysroot ships a precompiled `core` for `bpfel-unknown-none`, so
//! neither nightly nor rust-src is needed. `cargo xtask setup` installs it.
//!
//! The inner cargo's output is captured and shown only when that build
//! fails: a successful `cargo build` of the workspace prints nothing from
//! here (forwarding it as `cargo:warning` lines buried real warnings).
//!
//! It also names the build for `inspector --version`: the commit
//! (`INSPECTOR_GIT_COMMIT`: what `cargo xtask dist` passes in the
//! environment, `unknown` for other builds, so that a development build
//! never states a commit it may no longer be, and a commit does not
//! rebuild the crate) and the SHA-256 of the embedded kernel object
//! (`INSPECTOR_EBPF_SHA256`), which tells two builds' kernel programs apart
//! whatever their version says.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use cargo_metadata::{Artifact, Message};
use sha2::{Digest as _, Sha256};

/// The kernel-side package, and the name of its one binary target.
const EBPF_PACKAGE: &str = "inspector-ebpf";

fn main() -> ExitCode {
    // One line for the cause, without the backtrace an `anyhow` error from
    // `main` prints under RUST_BACKTRACE=1: the compiler's messages, already
    // on stderr, are what matters.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // The kernel programs and the event layout they share with us.
    for dir in ["inspector-ebpf", "inspector-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    // Debian's compiler, reached through a folder holding only rustc, cargo
    // and rustdoc: put first on PATH it bypasses rustup's stable proxies
    // without putting the rest of /usr/bin ahead of the user's PATH.
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
    let bin = out_dir.join("bpf-toolchain/bin");
    fs::create_dir_all(&bin)?;
    for tool in ["rustc", "cargo", "rustdoc"] {
        let link = bin.join(tool);
        let _ = fs::remove_file(&link);
        symlink(compiler_dir.join(tool), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }

    let objects = build_ebpf(&bin, &out_dir)?;
    for (name, object) in objects {
        let dst = out_dir.join(&name);
        fs::copy(&object, &dst)
            .with_context(|| format!("copying {} to {}", object.display(), dst.display()))?;
    }

    // The object `probe.rs` embeds (the eBPF crate's binary target).
    let embedded = out_dir.join("inspector");
    let bytes = fs::read(&embedded).with_context(|| format!("reading {}", embedded.display()))?;
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=INSPECTOR_EBPF_SHA256={digest}");
    println!("cargo:rerun-if-env-changed=INSPECTOR_GIT_COMMIT");
    let commit = env::var("INSPECTOR_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=INSPECTOR_GIT_COMMIT={commit}");
    Ok(())
}

/// Runs the inner `cargo build` of the eBPF crate and returns its binaries
/// (target name, path). On failure the compiler's diagnostics go to this
/// script's stderr, which cargo shows with the failed build.
fn build_ebpf(toolchain_bin: &Path, out_dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported target endianness {other}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let path = env::join_paths(
        std::iter::once(toolchain_bin.to_owned())
            .chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())),
    )?;
    let mut cmd = Command::new(toolchain_bin.join("cargo"));
    cmd.args(["build", "--package", EBPF_PACKAGE, "--bins", "--release"])
        .args(["--target", target])
        // Diagnostics rendered as text on stderr; artifacts as JSON on stdout.
        .arg("--message-format=json-render-diagnostics")
        // A target dir of its own: sharing the outer one would deadlock on
        // cargo's lock, which the outer build holds while we run.
        .arg("--target-dir")
        .arg(out_dir.join("ebpf-target"))
        .env("PATH", path)
        .env("RUSTC", toolchain_bin.join("rustc"))
        .env("RUSTDOC", toolchain_bin.join("rustdoc"))
        // inspector-ebpf writes two BPF atomic instructions as inline
        // assembly (an unstable feature on the BPF target): allow nightly
        // features for it (its object is named `inspector`) and for
        // aya-ebpf, in this build only.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf,inspector")
        // aya-ebpf reads `bpf_target_arch` to pick the host arch's pt_regs;
        // `--btf` makes bpf-linker emit the BTF the loader relies on.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // Set for this build script by the outer cargo; they name the host
        // compiler and its wrapper, not the eBPF one.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", toolchain_bin.join("cargo").display()))?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!(
            "building the eBPF programs ({EBPF_PACKAGE}) failed with {}; the compiler's \
             messages are above",
            out.status
        );
    }
    let mut objects = Vec::new();
    for message in Message::parse_stream(out.stdout.as_slice()) {
        if let Message::CompilerArtifact(Artifact {
            executable: Some(exe),
            target,
            ..
        }) = message.context("reading the eBPF build's JSON messages")?
        {
            objects.push((target.name, exe.into_std_path_buf()));
        }
    }
    if objects.is_empty() {
        bail!("the eBPF build ({EBPF_PACKAGE}) produced no binary");
    }
    Ok(objects)
}
