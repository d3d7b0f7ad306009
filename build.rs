//! Lays out the release binary's code in the order `bench/symbol-order.txt`
//! lists it: the request path's functions first, then the rest of what runs
//! at start-up, so the code an idle gateway keeps resident is a few hundred
//! contiguous pages instead of 64 KiB windows all over the binary (why and
//! how the list is made: scripts/symbol-order; the figures:
//! docs/benchmarks.md, "eighth pass").
//!
//! Only where the linker is known to be lld, which takes
//! `--symbol-ordering-file`: rustc 1.90 and later link x86_64 Linux (GNU)
//! binaries with its bundled rust-lld unless a linker is configured. GNU ld
//! rejects the option, so with any configured linker, or an older rustc, the
//! binary is linked as before. Debug builds are left alone: the test suite
//! never measures their layout.
//!
//! With lld, and a glibc of 2.36 or later to link against, the relative
//! relocations are also packed (DT_RELR): the dynamic loader reads all of
//! `.rela.dyn` at every start, and packed it is a few KB instead of 312 KB.
//! lld then marks the binary as needing `GLIBC_ABI_DT_RELR`, so an older
//! glibc refuses to load it with a clear message (build where you run, as
//! the Dockerfile's builder and runtime images do).

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "bench/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release")
        || env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("RUSTC_LINKER").is_some()
        || links_with_configured_linker()
        || !rustc_links_with_lld()
    {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join(ORDER_FILE);
    if order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // The list names the symbols of the build it was made from; those a
        // later build no longer has are skipped: expected, not a warning.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if glibc_reads_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `-C linker=…`, `-C linker-flavor=…`, `-C linker-features=…` or
/// `-C link-self-contained=…` in RUSTFLAGS: someone chose how to link.
fn links_with_configured_linker() -> bool {
    env::var("CARGO_ENCODED_RUSTFLAGS")
        .map(|flags| flags.contains("linker") || flags.contains("link-self-contained"))
        .unwrap_or(false)
}

/// rustc 1.90 made its bundled lld the default linker for this target.
fn rustc_links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    reported_version(&rustc, "--version").is_some_and(|v| v >= (1, 90))
}

/// glibc 2.36 added DT_RELR; `getconf` reports the glibc linked against.
fn glibc_reads_packed_relocations() -> bool {
    // "glibc 2.36"
    reported_version("getconf", "GNU_LIBC_VERSION").is_some_and(|v| v >= (2, 36))
}

/// (major, minor) of the version a program prints as the second word of its
/// output, as `rustc --version` and `getconf GNU_LIBC_VERSION` do.
fn reported_version(program: &str, arg: &str) -> Option<(u32, u32)> {
    let out = Command::new(program).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(1)?.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
