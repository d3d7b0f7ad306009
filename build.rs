//! Lays out the release binary's code in the order `bench/symbol-order.txt`
//! lists it: what an idle gateway runs as one block, the request path's
//! functions first, so the code an idle gateway keeps resident is a few
//! hundred contiguous pages instead of 64 KiB windows all over the binary
//! (why and how the list is made: scripts/symbol-order; the figures:
//! docs/benchmarks.md, "eighth pass").
//!
//! With a glibc of 2.36 or later to link against, the relative relocations
//! are also packed (DT_RELR): the dynamic loader reads all of `.rela.dyn` at
//! every start, and packed it is a few KB instead of 312 KB. The linker then
//! marks the binary as needing `GLIBC_ABI_DT_RELR`, so an older glibc refuses
//! to load it with a clear message (build where you run, as the Dockerfile's
//! builder and runtime images do).
//!
//! Both are linker options that not every linker takes (lld does; GNU ld has
//! no `--symbol-ordering-file`), and which linker a build uses depends on the
//! toolchain and the user's configuration. So each is tried first: a one-line
//! program linked the way this build links (same rustc, target, RUSTFLAGS and
//! configured linker) with the option; only if that link succeeds is the
//! option passed on. Debug builds are left alone: nothing measures their
//! layout.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const ORDER_FILE: &str = "bench/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    if env::var("PROFILE").as_deref() != Ok("release")
        || env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
    {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join(ORDER_FILE);
    let mut layout = Vec::new();
    if order.is_file() {
        layout.push(format!("-Wl,--symbol-ordering-file={}", order.display()));
        // The list names the symbols of the build it was made from; those a
        // later build no longer has are skipped: expected, not a warning.
        layout.push("-Wl,--no-warn-symbol-ordering".to_owned());
    }
    if !layout.is_empty() && links_with(&layout) {
        for arg in &layout {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
    // Only where the glibc `getconf` reports is the one linked against: a
    // native build for a GNU target.
    let native_gnu = env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
        && env::var("HOST").ok() == env::var("TARGET").ok();
    let relr = ["-Wl,-z,pack-relative-relocs".to_owned()];
    if native_gnu && glibc_reads_packed_relocations() && links_with(&relr) {
        println!("cargo:rustc-link-arg-bins={}", relr[0]);
    }
}

/// Whether an empty program links with `args` added, the way this build's
/// binaries are linked.
fn links_with(args: &[String]) -> bool {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = out_dir.join("link_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let mut probe = Command::new(rustc);
    probe
        .arg(&source)
        .arg("--crate-type=bin")
        .arg("-o")
        .arg(out_dir.join("link_probe"));
    if let Ok(target) = env::var("TARGET") {
        probe.arg("--target").arg(target);
    }
    // The user's flags (a `-C linker`, `-C link-arg=-fuse-ld=…`) and
    // configured linker choose the linker for the real link; so here too.
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        probe.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        probe
            .arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    for arg in args {
        probe.arg("-C").arg(format!("link-arg={arg}"));
    }
    probe.output().is_ok_and(|out| out.status.success())
}

/// glibc 2.36 added DT_RELR.
fn glibc_reads_packed_relocations() -> bool {
    // "glibc 2.36"
    reported_version("getconf", "GNU_LIBC_VERSION").is_some_and(|v| v >= (2, 36))
}

/// (major, minor) of the version a program prints as the second word of its
/// output, as `getconf GNU_LIBC_VERSION` does.
fn reported_version(program: &str, arg: &str) -> Option<(u32, u32)> {
    let out = Command::new(program).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(1)?.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
