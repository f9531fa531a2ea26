//! `exp` and `powf` for the battery physics, from the `libm` crate (a port of musl's libm) instead
//! of the C library's.
//!
//! Why: the trigger policy's decisions must not depend on which glibc the host has. glibc's
//! `exp`/`pow` have changed between releases (their last-bit rounding is not specified), so the
//! same trace could cross the shutdown threshold one poll apart on two hosts, and `hecate simulate`
//! on a laptop would not replay exactly what the daemon on the UPS host decided. The `libm`
//! crate's results are fixed by its version in `Cargo.lock`. `clippy.toml` keeps `f64::exp` and
//! `f64::powf` out of the code.

/// e^x
#[inline]
pub fn exp(x: f64) -> f64 {
    libm::exp(x)
}

/// x^y
#[inline]
pub fn powf(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_identities_the_physics_relies_on() {
        assert_eq!(exp(0.0), 1.0);
        assert!((exp(1.0) - std::f64::consts::E).abs() < 1e-15);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(powf(0.0, 1.2), 0.0);
        assert_eq!(powf(1.0, 1.3), 1.0);
        assert!((powf(0.5, 2.0) - 0.25).abs() < 1e-16);
        assert!(powf(-1.0, 0.5).is_nan());
    }
}
