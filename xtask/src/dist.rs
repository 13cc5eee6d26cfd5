//! `cargo xtask dist`: what a fleet installs, built into `target/dist/`
//! from a checkout:
//!
//! - `inspector-VERSION-x86_64-linux`: one static binary (glibc linked in
//!   with `+crt-static`, static-pie), the kernel programs embedded; it runs
//!   on any x86_64 Linux with BTF, whatever its C library;
//! - `inspector_VERSION_amd64.deb`: that binary, the systemd unit, the
//!   alerting rules and Prometheus example, manual pages and bash, zsh and
//!   fish completions (`dpkg-deb`, from dpkg itself);
//! - `inspector-VERSION-oci.tar`: an OCI image archive (`umoci`), from
//!   scratch: the binary and the CA certificates, tagged VERSION;
//! - `SHA256SUMS` of the three, as `sha256sum -c` reads it.
//!
//! Staging trees live in `target/dist-work/`.

use std::{
    fmt::Write as _,
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::{Artifact, Message};
use sha2::{Digest as _, Sha256};

use crate::{cargo, root, run_cmd, setup, show, step};

/// Debian packages the artifacts are made with (dpkg-deb and gzip are
/// part of every Debian system).
const TOOLS: &[&str] = &["umoci", "ca-certificates"];

/// Where the CA bundle of the image comes from (Debian's ca-certificates).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The package's one-line summary and description (control file).
const SUMMARY: &str = "watch the Linux kernel decide who gets a port";
const DESCRIPTION: &str = " inspector loads eBPF programs into the running kernel and reports every
 bind decision (who asked for which address and port, with which
 SO_REUSEADDR/SO_REUSEPORT flags, and the errno the caller saw), TCP state
 changes including TIME_WAIT, and which member of a SO_REUSEPORT group the
 kernel picked. The package ships the static binary, a hardened systemd
 unit for the Prometheus exporter (inspector serve, not enabled by
 default), alerting rules, manual pages and shell completions.
 .
 Needs Linux 5.12 or newer with BTF (/sys/kernel/btf/vmlinux).";

#[derive(clap::Args)]
pub struct Options {
    /// Build even with uncommitted changes (the binary's commit then does
    /// not describe its source).
    #[arg(long)]
    pub allow_dirty: bool,
}

/// What one `dist` run produced.
pub struct Artifacts {
    pub version: String,
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub image: PathBuf,
    pub sums: PathBuf,
}

pub fn dist(opts: &Options) -> Result<Artifacts> {
    setup::setup()?;
    setup::install_packages(TOOLS)?;
    let commit = git(&["rev-parse", "--verify", "HEAD"])
        .context("dist builds from a git checkout: no commit found")?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    if dirty && !opts.allow_dirty {
        bail!(
            "the working tree has uncommitted changes, which the binary's commit \
             ({commit}) would not describe: commit them, or pass --allow-dirty"
        );
    }
    let work = private_dir(&root().join("target/dist-work"))?;
    let out = root().join("target/dist");
    // Only what this run makes: an old version's files would otherwise
    // stay beside the new ones and out of SHA256SUMS.
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    let out = private_dir(&out)?;

    let built = build_static(&commit)?;
    let version = check_binary(&built, &commit)?;
    let binary = out.join(format!("inspector-{version}-x86_64-linux"));
    copy_mode(&built.binary, &binary, 0o700)?;

    let docs = work.join("docs");
    if docs.exists() {
        fs::remove_dir_all(&docs)?;
    }
    // The dev profile: the pages are the same from any build of the
    // command line, and `cargo test` has already built this example and
    // the library it links.
    let mut gen_docs = cargo([
        "run",
        "--quiet",
        "-p",
        "inspector",
        "--example",
        "man_and_completions",
        "--",
    ]);
    gen_docs.arg(&docs);
    step("manual pages and completions", gen_docs)?;

    let epoch = git(&["log", "-1", "--format=%ct", "HEAD"])?;
    let deb = debian_package(&work, &out, &binary, &docs, &version, &epoch)?;
    let image = oci_image(&work, &out, &binary, &version, &commit)?;

    let sums = out.join("SHA256SUMS");
    let mut text = String::new();
    for file in [&binary, &deb, &image] {
        let name = file.file_name().context("artifact name")?.to_string_lossy();
        let _ = writeln!(text, "{}  {name}", sha256_file(file)?);
    }
    write_private(&sums, text.as_bytes())?;
    println!("dist: artifacts in {}:", out.display());
    for file in [&binary, &deb, &image, &sums] {
        let size = fs::metadata(file)?.len();
        println!(
            "dist:   {:>10} bytes  {}",
            size,
            file.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    print!("{text}");
    Ok(Artifacts {
        version,
        binary,
        deb,
        image,
        sums,
    })
}

/// The static binary cargo linked, and the kernel object it embeds.
struct Built {
    binary: PathBuf,
    ebpf_object: PathBuf,
}

/// Links the release binary statically: `+crt-static` is given to the
/// binary's own compilation only (`cargo rustc`), where it decides the
/// link; the library and dependencies are the ones `cargo build --release`
/// compiles, so after that build only the binary is compiled again. (The
/// benchmarks' release builds are not those: examples and benches bring
/// the dev-dependencies, whose features change some crates' builds; in
/// `cargo xtask test` this build costs about 70 s.) The next plain build
/// links the dynamic binary again (a few seconds).
fn build_static(commit: &str) -> Result<Built> {
    let mut cmd = cargo([
        "rustc",
        "--release",
        "-p",
        "inspector",
        "--bin",
        "inspector",
        "--message-format=json-render-diagnostics",
        "--",
        "-C",
        "target-feature=+crt-static",
    ]);
    // The commit `--version` states: only a dist build states one.
    cmd.env("INSPECTOR_GIT_COMMIT", commit);
    println!("$ {}", show(&cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", show(&cmd)))?;
    if !out.status.success() {
        bail!("building the static binary failed (cargo's messages are above)");
    }
    let (mut binary, mut out_dir) = (None, None);
    for message in Message::parse_stream(out.stdout.as_slice()) {
        match message.context("reading cargo's JSON messages")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(exe),
                target,
                ..
            }) if target.name == "inspector" => binary = Some(exe.into_std_path_buf()),
            // A path package's id reads `path+file:///DIR/inspector#VERSION`.
            Message::BuildScriptExecuted(script)
                if script.package_id.repr.contains("/inspector#") =>
            {
                out_dir = Some(script.out_dir.into_std_path_buf());
            }
            _ => {}
        }
    }
    let binary = binary.context("cargo built no `inspector` binary")?;
    let out_dir = out_dir.context("cargo reported no build script run for `inspector`")?;
    Ok(Built {
        binary,
        ebpf_object: out_dir.join("inspector"),
    })
}

/// Checks that the binary is static and that `--version` names the commit
/// and the kernel object it embeds; returns the version.
fn check_binary(built: &Built, commit: &str) -> Result<String> {
    let elf =
        fs::read(&built.binary).with_context(|| format!("reading {}", built.binary.display()))?;
    if has_interpreter(&elf)? {
        bail!(
            "{} asks for a dynamic loader (PT_INTERP): the static link did not happen",
            built.binary.display()
        );
    }
    let out = Command::new(&built.binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", built.binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("`inspector --version` failed: {text}");
    }
    let info = VersionInfo::parse(&text)?;
    if info.commit != commit {
        bail!(
            "the binary says commit {}, the checkout is at {commit}",
            info.commit
        );
    }
    let object_sha = sha256_file(&built.ebpf_object)?;
    if info.ebpf_sha256 != object_sha {
        bail!(
            "the binary names kernel programs sha256:{}, but {} hashes to {object_sha}",
            info.ebpf_sha256,
            built.ebpf_object.display()
        );
    }
    println!(
        "dist: static binary {} (commit {}, kernel programs sha256:{})",
        info.version, info.commit, info.ebpf_sha256
    );
    Ok(info.version)
}

/// The lines of `inspector --version`.
#[derive(Debug, PartialEq)]
pub struct VersionInfo {
    pub version: String,
    pub commit: String,
    pub ebpf_sha256: String,
    pub capabilities: Vec<String>,
}

impl VersionInfo {
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("inspector "))
            .context("`--version` does not start with `inspector VERSION`")?
            .to_owned();
        let (mut commit, mut ebpf_sha256, mut capabilities) = (None, None, None);
        for line in lines {
            if let Some(c) = line.strip_prefix("commit ") {
                commit = Some(c.to_owned());
            } else if let Some(h) = line.strip_prefix("kernel programs sha256:") {
                ebpf_sha256 = Some(h.to_owned());
            } else if let Some(c) = line.strip_prefix("capabilities ") {
                capabilities = Some(c.split_whitespace().map(str::to_owned).collect());
            }
        }
        Ok(Self {
            version,
            commit: commit.context("`--version` names no commit")?,
            ebpf_sha256: ebpf_sha256.context("`--version` names no kernel programs")?,
            capabilities: capabilities.context("`--version` names no capabilities")?,
        })
    }
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header
/// (asks for a dynamic loader).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("truncated ELF header");
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)? + i * usize::from(phentsize);
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(true),
            Some(_) => {}
            None => bail!("truncated ELF program headers"),
        }
    }
    Ok(false)
}

/// Builds the .deb with dpkg-deb from a staged tree whose modes are set
/// here, owned by root in the archive (`--root-owner-group`).
fn debian_package(
    work: &Path,
    out: &Path,
    binary: &Path,
    docs: &Path,
    version: &str,
    epoch: &str,
) -> Result<PathBuf> {
    let tree = work.join("deb");
    if tree.exists() {
        fs::remove_dir_all(&tree)?;
    }
    let packaging = root().join("packaging");
    let files: [(PathBuf, &str, u32); 7] = [
        (binary.to_owned(), "usr/bin/inspector", 0o755),
        (
            packaging.join("inspector.service"),
            "lib/systemd/system/inspector.service",
            0o644,
        ),
        (
            packaging.join("alerts.yml"),
            "usr/share/inspector/alerts.yml",
            0o644,
        ),
        (
            packaging.join("prometheus.yml"),
            "usr/share/inspector/prometheus.yml",
            0o644,
        ),
        (
            docs.join("completions/inspector.bash"),
            "usr/share/bash-completion/completions/inspector",
            0o644,
        ),
        (
            docs.join("completions/_inspector"),
            "usr/share/zsh/vendor-completions/_inspector",
            0o644,
        ),
        (
            docs.join("completions/inspector.fish"),
            "usr/share/fish/vendor_completions.d/inspector.fish",
            0o644,
        ),
    ];
    let mut pages: Vec<PathBuf> = fs::read_dir(docs.join("man"))
        .context("reading the generated manual pages")?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    if pages.is_empty() {
        bail!("no manual pages were generated");
    }
    for (src, dst, mode) in &files {
        install(src, &tree.join(dst), *mode)?;
    }
    let man_dir = tree.join("usr/share/man/man1");
    for page in &pages {
        let name = page.file_name().context("page name")?.to_string_lossy();
        let dst = man_dir.join(format!("{name}.gz"));
        install(page, &man_dir.join(&*name), 0o644)?;
        // -n: no name or time stamp in the header, so the package is the
        // same from the same source.
        let mut gzip = Command::new("gzip");
        gzip.args(["-9", "-n", "-f"]).arg(man_dir.join(&*name));
        run_cmd(&mut gzip)?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))?;
    }
    let copyright = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: inspector

Files: *
Copyright: the inspector authors
License: MIT or Apache-2.0
 The full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";
    let doc = tree.join("usr/share/doc/inspector/copyright");
    write_mode(&doc, copyright.as_bytes(), 0o644)?;

    // Maintainer scripts: systemd is told about the unit where it runs
    // (not in a container or chroot); the service is not enabled by the
    // package, only restarted on upgrade when it was running.
    let debian = tree.join("DEBIAN");
    let postinst = "#!/bin/sh\nset -e\n\
        if [ -d /run/systemd/system ]; then\n\
        \tsystemctl daemon-reload >/dev/null || true\n\
        \tif [ \"$1\" = configure ] && [ -n \"$2\" ]; then\n\
        \t\tsystemctl try-restart inspector.service >/dev/null || true\n\
        \tfi\n\
        fi\n";
    let prerm = "#!/bin/sh\nset -e\n\
        if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n\
        \tsystemctl disable --now inspector.service >/dev/null 2>&1 || true\n\
        fi\n";
    let postrm = "#!/bin/sh\nset -e\n\
        if [ -d /run/systemd/system ]; then\n\
        \tsystemctl daemon-reload >/dev/null || true\n\
        fi\n";
    write_mode(&debian.join("postinst"), postinst.as_bytes(), 0o755)?;
    write_mode(&debian.join("prerm"), prerm.as_bytes(), 0o755)?;
    write_mode(&debian.join("postrm"), postrm.as_bytes(), 0o755)?;

    // md5sums of every installed file, as dpkg --verify reads them.
    let mut md5 = Command::new("md5sum");
    let mut installed = walk(&tree)?;
    installed.retain(|p| !p.starts_with("DEBIAN"));
    installed.sort();
    md5.current_dir(&tree).args(&installed);
    let sums = md5.output().context("running md5sum")?;
    if !sums.status.success() {
        bail!("md5sum failed on the staged package tree");
    }
    write_mode(&debian.join("md5sums"), &sums.stdout, 0o644)?;

    let installed_kib: u64 = installed
        .iter()
        .map(|p| fs::metadata(tree.join(p)).map(|m| m.len().div_ceil(1024)))
        .sum::<std::io::Result<u64>>()?;
    let control = format!(
        "Package: inspector\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: inspector authors <inspector@invalid>\n\
         Installed-Size: {installed_kib}\n\
         Section: net\n\
         Priority: optional\n\
         Description: {SUMMARY}\n{DESCRIPTION}\n"
    );
    write_mode(&debian.join("control"), control.as_bytes(), 0o644)?;

    let deb = out.join(format!("inspector_{version}_amd64.deb"));
    let mut build = Command::new("dpkg-deb");
    build
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb)
        // Archive member times, so the package is the same from one commit.
        .env("SOURCE_DATE_EPOCH", epoch);
    step("dpkg-deb", build)?;
    fs::set_permissions(&deb, fs::Permissions::from_mode(0o600))?;
    Ok(deb)
}

/// Builds the OCI image with umoci: an empty image, then one layer with
/// the binary and the CA bundle, the entry point, and the archive of the
/// image layout (`podman load`, `skopeo copy oci-archive:...`).
fn oci_image(
    work: &Path,
    out: &Path,
    binary: &Path,
    version: &str,
    commit: &str,
) -> Result<PathBuf> {
    let layout = work.join("oci");
    let rootfs = work.join("oci-rootfs");
    for dir in [&layout, &rootfs] {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
    }
    install(binary, &rootfs.join("usr/bin/inspector"), 0o755)?;
    install(
        Path::new(CA_BUNDLE),
        &rootfs.join("etc/ssl/certs/ca-certificates.crt"),
        0o644,
    )?;
    // Directories of the layer: world-readable, as in any image.
    for dir in ["usr/bin", "usr", "etc/ssl/certs", "etc/ssl", "etc"] {
        fs::set_permissions(rootfs.join(dir), fs::Permissions::from_mode(0o755))?;
    }
    let image = format!("{}:{version}", layout.display());
    let rootless: &[&str] = if setup::is_root() {
        &[]
    } else {
        &["--rootless"]
    };
    let umoci = |args: &[&str]| {
        let mut cmd = Command::new("umoci");
        cmd.args(args);
        cmd
    };
    let mut init = umoci(&["init", "--layout"]);
    init.arg(&layout);
    step("umoci init", init)?;
    step("umoci new", umoci(&["new", "--image", &image]))?;
    let mut insert = umoci(&["insert"]);
    insert
        .args(rootless)
        .args([
            "--image",
            &image,
            "--history.created_by",
            "cargo xtask dist",
        ])
        .arg(&rootfs)
        .arg("/");
    step("umoci insert", insert)?;
    let config = umoci(&[
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.entrypoint",
        "/usr/bin/inspector",
        "--config.cmd",
        "serve",
        "--config.label",
        &format!("org.opencontainers.image.version={version}"),
        "--config.label",
        &format!("org.opencontainers.image.revision={commit}"),
        "--config.label",
        "org.opencontainers.image.title=inspector",
    ]);
    step("umoci config", config)?;
    // The manifests and configs that the steps above replaced.
    let mut gc = umoci(&["gc", "--layout"]);
    gc.arg(&layout);
    step("umoci gc", gc)?;
    // The layout as a tar archive, its files in a fixed order.
    let archive = out.join(format!("inspector-{version}-oci.tar"));
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "-C",
    ])
    .arg(&layout)
    .arg("-cf")
    .arg(&archive)
    .arg(".");
    step("tar the image layout", tar)?;
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o600))?;
    Ok(archive)
}

/// `git ARGS` in the workspace root, its output trimmed.
fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(args)
        .output()
        .context("cannot run git (dist builds from a git checkout)")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }))
}

/// Creates `dir` and its missing parents with mode 0700; returns it.
pub fn private_dir(dir: &Path) -> Result<PathBuf> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_owned())
}

/// Copies `src` to `dst` (parents created 0755: a staged tree to pack)
/// with `mode`.
fn install(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dst.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    copy_mode(src, dst, mode)
}

fn copy_mode(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dst.display()))
}

/// Writes `bytes` to `path` (parents created 0755) with `mode`.
fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))?;
    // The umask may have narrowed the mode at creation.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let _ = fs::remove_file(path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// Every regular file under `dir`, relative to it.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines_parse() {
        let text = "inspector 0.1.0\ncommit abc\nkernel programs sha256:0f\n\
                    capabilities CAP_BPF CAP_PERFMON\n";
        let info = VersionInfo::parse(text).expect("parses");
        assert_eq!(
            info,
            VersionInfo {
                version: "0.1.0".into(),
                commit: "abc".into(),
                ebpf_sha256: "0f".into(),
                capabilities: vec!["CAP_BPF".into(), "CAP_PERFMON".into()],
            }
        );
        assert!(VersionInfo::parse("inspector 0.1.0\n").is_err());
    }

    #[test]
    fn the_interpreter_header_is_found() {
        // A minimal ELF64 header with one PT_INTERP program header at 0x40.
        let mut elf = vec![0u8; 0x40 + 56];
        elf[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        elf[0x20] = 0x40; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[0x40] = 3; // p_type = PT_INTERP
        assert!(has_interpreter(&elf).expect("valid"));
        elf[0x40] = 1; // PT_LOAD
        assert!(!has_interpreter(&elf).expect("valid"));
        assert!(has_interpreter(b"not an elf file at all").is_err());
    }
}
