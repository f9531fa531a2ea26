//! Links the `hecate` binary with packed relative relocations (DT_RELR) where the C library
//! supports them (glibc 2.36, Debian 12).
//!
//! Why: the binary is position-independent, and its ~23,000 relative relocations took 546 KB of
//! RELA entries that the dynamic loader reads at every start, pages that then stay mapped for
//! the daemon's life; DT_RELR packs them into 6 KB. Measured on the README's benchmark: the
//! daemon's RSS 0.45 MB lower (README, "Performance"). GNU ld 2.38+ and lld (rustc's default
//! linker on x86_64 Linux since 1.90) both know the flag; a binary so linked needs glibc 2.36
//! to start, so the flag is left out where the C library here is older (Ubuntu 22.04, Debian 11:
//! a binary built there then runs there) or not glibc at all.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    // The check below reads the build machine's C library: only meaningful for a native build.
    if !target.ends_with("-linux-gnu") || target != host {
        return;
    }
    if glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `getconf GNU_LIBC_VERSION` says "glibc 2.36".
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.trim().strip_prefix("glibc ")?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
    Some((major, minor))
}
