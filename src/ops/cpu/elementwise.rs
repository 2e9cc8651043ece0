//! Element-wise ops the CPU backends do in one pass instead of Burn's composed primitives: the
//! SwiGLU before a down projection (Burn's `sigmoid`, two slices and two products are five
//! passes over the data, and its `exp` is a libm call per value) and the RMSNorm.

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` in two parts (Cody–Waite): the high part has few enough bits that `n · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// `1.5 · 2²³`: adding and subtracting it rounds an f32 of magnitude < 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `eˣ` for `x` in [-87, 88] (clamped there), branch-free so that loops over it vectorise:
/// `2ⁿ · p(r)` with `n` the nearest integer to `x · log2 e`, `r = x − n · ln 2` (|r| ≤ 0.35) and
/// `p` the degree-7 Taylor polynomial (relative error below 2e-8 on that range, plus the
/// rounding of the few operations: within a few ulps of libm's `expf`).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n is in [-126, 127]: 2ⁿ is a normal float, built from its exponent bits.
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

/// `silu(gate) ⊙ up` of `gu` (`[m, 2k]` row-major: each row `gate` then `up`) → `[m, k]`, with
/// `silu(g) = g / (1 + e^-g)`.
pub fn swiglu(gu: &[f32], k: usize) -> Vec<f32> {
    let mut out = vec![0f32; gu.len() / 2];
    if k > 0 {
        pulp::Arch::new().dispatch(SwiGlu { gu, k, out: &mut out });
    }
    out
}

/// [`swiglu`] as a [`pulp::WithSimd`] struct, so that its loop is compiled (and vectorised) for
/// the CPU's widest float instructions.
struct SwiGlu<'a> {
    gu: &'a [f32],
    k: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for SwiGlu<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (row, o) in self.gu.chunks_exact(2 * self.k).zip(self.out.chunks_exact_mut(self.k)) {
            let (gate, up) = row.split_at(self.k);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + exp(-g)) * u;
            }
        }
    }
}

/// `x / √(mean(x²) + eps) · gamma` over each row of `gamma.len()` values of `x` (row-major).
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if !gamma.is_empty() {
        pulp::Arch::new().dispatch(RmsNorm { x, gamma, eps, out: &mut out });
    }
    out
}

/// `Σ x²` in eight running sums, so the loop vectorises (and rounds like a pairwise sum); inline,
/// for the callers' [`pulp::WithSimd`] loops.
#[inline(always)]
pub fn sum_squares(row: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// [`rms_norm`] as a [`pulp::WithSimd`] struct (see [`SwiGlu`]).
struct RmsNorm<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    eps: f32,
    out: &'a mut [f32],
}

impl pulp::WithSimd for RmsNorm<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let n = self.gamma.len();
        for (row, o) in self.x.chunks_exact(n).zip(self.out.chunks_exact_mut(n)) {
            let inv = 1.0 / (sum_squares(row) / n as f32 + self.eps).sqrt();
            for ((o, &v), &g) in o.iter_mut().zip(row).zip(self.gamma) {
                *o = v * inv * g;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulps() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst <= 5e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    #[test]
    fn rms_norm_matches_float64() {
        for n in [4usize, 13, 256, 1027] {
            let x: Vec<f32> = (0..3 * n).map(|i| ((i * 37) % 41) as f32 * 0.05 - 1.0 + (i / n) as f32).collect();
            let gamma: Vec<f32> = (0..n).map(|j| 0.25 + (j % 7) as f32 * 0.2).collect();
            let got = rms_norm(&x, &gamma, 1e-6);
            for (r, row) in x.chunks_exact(n).enumerate() {
                let inv = 1.0 / (row.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / n as f64 + 1e-6).sqrt();
                for j in 0..n {
                    let want = row[j] as f64 * inv * gamma[j] as f64;
                    assert!((got[r * n + j] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "n {n}, row {r}, value {j}");
                }
            }
        }
    }

    #[test]
    fn swiglu_matches_float64() {
        let (m, k) = (3, 37);
        let gu: Vec<f32> = (0..m * 2 * k).map(|i| ((i * 53) % 97) as f32 * 0.31 - 15.0).collect();
        let got = swiglu(&gu, k);
        for t in 0..m {
            for j in 0..k {
                let (g, u) = (gu[t * 2 * k + j] as f64, gu[t * 2 * k + k + j] as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                let e = (got[t * k + j] as f64 - want).abs() / want.abs().max(1e-30);
                assert!(e <= 1e-6, "row {t}, value {j}: {} vs {want}", got[t * k + j]);
            }
        }
        let extremes = swiglu(&[-100.0, 100.0, 0.0, 2.0, 2.0, 2.0], 3);
        assert_eq!(extremes[2], 0.0);
        assert!(extremes[0].abs() < 1e-30 && (extremes[1] - 200.0).abs() < 1e-4);
    }
}
