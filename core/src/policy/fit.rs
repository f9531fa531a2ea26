//! Weighted least squares of charge against discharge: a line, or a parabola whose curvature is
//! trusted only as far as the data proves it.
//!
//! The sums are kept raw (Σw, Σwx, Σwx², …) so that adding a point is a handful of additions and
//! forgetting (scaling every weight by the same factor) costs nothing: a common factor cancels
//! in every coefficient. The caller keeps `x` near zero (relative to where its stretch began) so
//! the raw moments stay well conditioned.

/// Weighted raw moments of points `(x, c)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Moments {
    w: f64,
    w2: f64,
    x: f64,
    xx: f64,
    x3: f64,
    x4: f64,
    x5: f64,
    x6: f64,
    c: f64,
    xc: f64,
    xxc: f64,
    x3c: f64,
    cc: f64,
}

/// A straight line through the points, centred on their weighted mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LineFit {
    /// Σw(x−x̄)².
    pub sxx: f64,
    /// Σw(x−x̄)(c−c̄).
    pub sxc: f64,
    /// Σw(c−c̄)².
    pub scc: f64,
}

impl LineFit {
    /// The residual sum of squares of the line.
    pub fn ssr(&self) -> f64 {
        (self.scc - self.sxc * self.sxc / self.sxx).max(0.0)
    }
}

/// A parabola `c = a0 + a1·φ1(x) + a2·φ2(x)` in the orthogonal basis φ1 = x − x̄,
/// φ2 = (x − x̄)² − β(x − x̄) − m2, so that each coefficient and its error are independent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct QuadraticFit {
    x_mean: f64,
    beta: f64,
    m2: f64,
    a0: f64,
    a1: f64,
    /// The curvature term: half the second derivative of c against x.
    pub a2: f64,
    /// Standard error of `a2`.
    pub a2_se: f64,
}

impl QuadraticFit {
    /// The fitted value at `x` with the curvature term replaced by `a2`.
    pub fn value_at(&self, x: f64, a2: f64) -> f64 {
        let d = x - self.x_mean;
        self.a0 + self.a1 * d + a2 * (d * d - self.beta * d - self.m2)
    }

    /// The fitted slope dc/dx at `x` with the curvature term replaced by `a2`.
    pub fn slope_at(&self, x: f64, a2: f64) -> f64 {
        self.a1 + a2 * (2.0 * (x - self.x_mean) - self.beta)
    }
}

impl Moments {
    pub fn add(&mut self, w: f64, x: f64, c: f64) {
        let xx = x * x;
        self.w += w;
        self.w2 += w * w;
        self.x += w * x;
        self.xx += w * xx;
        self.x3 += w * xx * x;
        self.x4 += w * xx * xx;
        self.x5 += w * xx * xx * x;
        self.x6 += w * xx * xx * xx;
        self.c += w * c;
        self.xc += w * x * c;
        self.xxc += w * xx * c;
        self.x3c += w * xx * x * c;
        self.cc += w * c * c;
    }

    /// Multiplies every weight by `f` (Σw² by f²).
    pub fn scale(&mut self, f: f64) {
        self.w *= f;
        self.w2 *= f * f;
        self.x *= f;
        self.xx *= f;
        self.x3 *= f;
        self.x4 *= f;
        self.x5 *= f;
        self.x6 *= f;
        self.c *= f;
        self.xc *= f;
        self.xxc *= f;
        self.x3c *= f;
        self.cc *= f;
    }

    /// The number of equally weighted points that would carry the same information.
    pub fn effective_count(&self) -> f64 {
        if self.w2 > 0.0 { self.w * self.w / self.w2 } else { 0.0 }
    }

    /// The weighted mean of c.
    pub fn mean_c(&self) -> Option<f64> {
        (self.w > 0.0).then(|| self.c / self.w).filter(|v| v.is_finite())
    }

    /// The weighted mean of x.
    pub fn mean_x(&self) -> Option<f64> {
        (self.w > 0.0).then(|| self.x / self.w).filter(|v| v.is_finite())
    }

    /// The centred sums of a straight line, when the points span some x.
    pub fn line(&self) -> Option<LineFit> {
        if self.w <= 0.0 {
            return None;
        }
        let sxx = self.xx - self.x * self.x / self.w;
        let sxc = self.xc - self.x * self.c / self.w;
        let scc = self.cc - self.c * self.c / self.w;
        (sxx > 0.0 && sxx.is_finite() && sxc.is_finite() && scc.is_finite()).then_some(LineFit { sxx, sxc, scc })
    }

    /// The parabola through the points, when there are enough of them spread over x to tell its
    /// curvature (more than three effective points and a non-degenerate spread).
    pub fn quadratic(&self) -> Option<QuadraticFit> {
        let n_eff = self.effective_count();
        if self.w <= 0.0 || n_eff <= 3.5 {
            return None;
        }
        let w = self.w;
        let xm = self.x / w;
        let (ex2, ex3, ex4) = (self.xx / w, self.x3 / w, self.x4 / w);
        // central moments from raw ones
        let m2 = ex2 - xm * xm;
        let m3 = ex3 - 3.0 * xm * ex2 + 2.0 * xm * xm * xm;
        let m4 = ex4 - 4.0 * xm * ex3 + 6.0 * xm * xm * ex2 - 3.0 * xm * xm * xm * xm;
        if !(m2 > 0.0 && m2.is_finite()) {
            return None;
        }
        let beta = m3 / m2;
        // Σwφ2² / w: the variance of x² not explained by x
        let phi2_var = m4 - m3 * m3 / m2 - m2 * m2;
        // relative to the scale of the data, anything this small is rounding noise
        if !(phi2_var > 1e-9 * m2 * m2 && phi2_var.is_finite()) {
            return None;
        }
        let cm = self.c / w;
        let s_phi1_c = self.xc - xm * self.c;
        let s_xx_c_centred = self.xxc - 2.0 * xm * self.xc + xm * xm * self.c;
        let s_phi2_c = s_xx_c_centred - beta * s_phi1_c - m2 * self.c;
        let a1 = s_phi1_c / (w * m2);
        let a2 = s_phi2_c / (w * phi2_var);
        let scc = self.cc - self.c * cm;
        let ssr = (scc - a1 * a1 * w * m2 - a2 * a2 * w * phi2_var).max(0.0);
        let a2_se = (ssr / ((n_eff - 3.0) * w * phi2_var)).sqrt();
        let fit = QuadraticFit { x_mean: xm, beta, m2, a0: cm, a1, a2, a2_se };
        [a1, a2, a2_se, cm].iter().all(|v| v.is_finite()).then_some(fit)
    }
}

/// A cubic `c = b0 + b1·u + b2·u² + b3·u³` in u = x − x0: its Taylor coefficients at x0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CubicFit {
    /// b0…b3.
    pub coef: [f64; 4],
    /// Standard errors of b0…b3.
    pub se: [f64; 4],
}

impl Moments {
    /// The least-squares cubic about `x0`, when there are enough points spread over x to tell its
    /// third-order term (more than four effective points and a well-posed system).
    pub fn cubic(&self, x0: f64) -> Option<CubicFit> {
        let n_eff = self.effective_count();
        if self.w <= 0.0 || n_eff <= 4.5 {
            return None;
        }
        // Σw·u^k and Σw·u^k·c about x0, from the raw moments by the binomial theorem
        let raw = [self.w, self.x, self.xx, self.x3, self.x4, self.x5, self.x6];
        let raw_c = [self.c, self.xc, self.xxc, self.x3c];
        let shift = |m: &[f64], k: usize| -> f64 {
            let mut sum = 0.0;
            let mut binom = 1.0;
            for (j, mj) in m.iter().enumerate().take(k + 1) {
                // C(k, j) · (−x0)^(k−j) · m[j]
                sum += binom * (-x0).powi((k - j) as i32) * mj;
                binom = binom * (k - j) as f64 / (j + 1) as f64;
            }
            sum
        };
        let s: Vec<f64> = (0..7).map(|k| shift(&raw, k)).collect();
        let b: Vec<f64> = (0..4).map(|k| shift(&raw_c, k)).collect();
        let mut a = [[0.0; 4]; 4];
        for (i, row) in a.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = s[i + j];
            }
        }
        let inv = invert4(a)?;
        let mut coef = [0.0; 4];
        for (i, c) in coef.iter_mut().enumerate() {
            *c = (0..4).map(|j| inv[i][j] * b[j]).sum();
        }
        let fitted: f64 = (0..4).map(|i| coef[i] * b[i]).sum();
        let ssr = (self.cc - fitted).max(0.0);
        let sigma2 = ssr / (n_eff - 4.0);
        let mut se = [0.0; 4];
        for (i, e) in se.iter_mut().enumerate() {
            *e = (inv[i][i].max(0.0) * sigma2 * self.w / n_eff).sqrt();
        }
        (coef.iter().chain(&se).all(|v| v.is_finite())).then_some(CubicFit { coef, se })
    }
}

/// The inverse of a symmetric positive-definite 4×4 matrix by Gauss–Jordan elimination with
/// partial pivoting; none when it is singular to working precision.
fn invert4(mut a: [[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    if !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    let mut inv = [[0.0; 4]; 4];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..4 {
        let pivot = (col..4).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        if a[pivot][col].abs() <= 1e-13 * scale {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let d = a[col][col];
        for j in 0..4 {
            a[col][j] /= d;
            inv[col][j] /= d;
        }
        for r in 0..4 {
            if r != col {
                let f = a[r][col];
                for j in 0..4 {
                    a[r][j] -= f * a[col][j];
                    inv[r][j] -= f * inv[col][j];
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_and_a_parabola_are_recovered() {
        let mut m = Moments::default();
        for i in 0..50 {
            let x = i as f64 * 0.1;
            m.add(1.0 + i as f64 * 0.01, x, 80.0 - 3.0 * x - 0.5 * x * x);
        }
        let q = m.quadratic().unwrap();
        assert!((q.a2 + 0.5).abs() < 1e-9, "{q:?}");
        assert!(q.a2_se < 1e-6, "{q:?}");
        assert!((q.slope_at(2.0, q.a2) - (-3.0 - 2.0 * 0.5 * 2.0)).abs() < 1e-9);
        assert!((q.value_at(2.0, q.a2) - (80.0 - 6.0 - 2.0)).abs() < 1e-9);

        let mut line = Moments::default();
        for i in 0..10 {
            line.add(1.0, i as f64, 50.0 - 2.0 * i as f64);
        }
        let l = line.line().unwrap();
        assert!((l.sxc / l.sxx + 2.0).abs() < 1e-12);
        assert!(l.ssr() < 1e-9);
        // a straight line has no curvature to speak of, and says so
        let q = line.quadratic().unwrap();
        assert!(q.a2.abs() < 1e-9 && q.a2_se < 1e-6, "{q:?}");
    }

    #[test]
    fn scaling_every_weight_changes_nothing() {
        let mut m = Moments::default();
        for i in 0..20 {
            let x = i as f64;
            m.add(crate::math::exp(i as f64 * 0.1), x, 90.0 - x + if i % 2 == 0 { 0.3 } else { -0.3 });
        }
        let before = m.quadratic().unwrap();
        m.scale(1e-40);
        let after = m.quadratic().unwrap();
        assert!((before.a2 - after.a2).abs() < 1e-9);
        assert!((before.a2_se / after.a2_se - 1.0).abs() < 1e-9);
        assert!((m.effective_count() - Moments { ..m }.effective_count()).abs() < 1e-12);
    }

    #[test]
    fn a_cubic_is_recovered_about_any_point() {
        let mut m = Moments::default();
        let f = |x: f64| 90.0 - 4.0 * x - 1.5 * x * x - 0.7 * x * x * x;
        for i in 0..40 {
            let x = 1.0 + i as f64 * 0.05;
            m.add(0.5 + crate::math::exp(i as f64 * 0.05), x, f(x));
        }
        let x0 = 2.9;
        let c = m.cubic(x0).unwrap();
        // Taylor coefficients at x0
        let want = [f(x0), -4.0 - 3.0 * x0 - 2.1 * x0 * x0, -1.5 - 2.1 * x0, -0.7];
        for (got, want) in c.coef.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{c:?}");
        }
        assert!(c.se.iter().all(|s| *s < 1e-4), "{c:?}");
    }

    #[test]
    fn too_few_points_give_no_parabola() {
        let mut m = Moments::default();
        m.add(1.0, 0.0, 1.0);
        m.add(1.0, 1.0, 2.0);
        m.add(1.0, 2.0, 2.0);
        assert!(m.quadratic().is_none());
        assert!(m.line().is_some());
        assert!(Moments::default().line().is_none());
    }
}
