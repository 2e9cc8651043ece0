//! Activations quantized to int8 for integer dot products, as llama.cpp's `block_q8_K`: per run
//! of 256 values one f32 scale `d = max|x| / 127`, the codes `q = round(x / d)` (so `|q| ≤ 127`
//! and `x ≈ d · q` within `d / 2`), and the sum of each 16 codes (what the offset of a
//! Q6_K-style "code − 32" weight needs). Only the opt-in int8 input mode of the CPU kernels
//! uses it (`QuantLinear::with_int8_input`); the default products are f32.

/// Values per block of [`ActQ8K`].
pub const QK8K: usize = 256;

/// `1.5 · 2^23`: adding and then subtracting it rounds a float of magnitude below `2^22` to the
/// nearest integer, ties to even.
const ROUND: f32 = 12_582_912.0;

/// The bits of [`ROUND`]: subtracted from the bits of `v + ROUND`, they leave the rounded `v`.
const ROUND_BITS: i32 = 0x4B40_0000;

/// One row of activations as int8 blocks of [`QK8K`] values (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActQ8K {
    /// One scale per block.
    pub d: Vec<f32>,
    /// The codes, `QK8K` per block.
    pub q: Vec<i8>,
    /// The sum of each run of 16 codes, 16 per block.
    pub sums16: Vec<i16>,
}

impl ActQ8K {
    /// Quantizes `x` (a multiple of [`QK8K`] values; a shorter tail is not quantized and the
    /// caller must not pass one). A block of zeros gets `d = 0` and zero codes.
    ///
    /// As ggml's `quantize_row_q8_K_ref`: `id = 127 / max|x|`, `d = 1 / id`, codes rounded to
    /// nearest with ties to even (ggml's `nearest_int`). Written as plain loops over each block
    /// so that they vectorise.
    pub fn quantize(x: &[f32]) -> Self {
        let blocks = x.len() / QK8K;
        let mut a = ActQ8K { d: Vec::with_capacity(blocks), q: vec![0; blocks * QK8K], sums16: vec![0; blocks * 16] };
        for (b, xb) in x.chunks_exact(QK8K).enumerate() {
            // The maximum |x| in 8 lanes, then across them (a form that vectorises).
            let mut lanes = [0f32; 8];
            for c in xb.chunks_exact(8) {
                for (l, v) in lanes.iter_mut().zip(c) {
                    *l = if v.abs() > *l { v.abs() } else { *l };
                }
            }
            let amax = lanes.iter().fold(0f32, |m, &v| if v > m { v } else { m });
            let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
            let qb = &mut a.q[b * QK8K..][..QK8K];
            for (q, v) in qb.iter_mut().zip(xb) {
                // ggml's `nearest_int`: |v · id| ≤ 127 (up to rounding) is far below 2^22, so
                // adding 1.5 · 2^23 rounds it to an integer (ties to even) held in the low
                // mantissa bits; the clamp keeps a NaN-free input in range.
                *q = ((v * id + ROUND).to_bits() as i32 - ROUND_BITS).clamp(-127, 127) as i8;
            }
            for (s, run) in a.sums16[b * 16..][..16].iter_mut().zip(qb.chunks_exact(16)) {
                *s = run.iter().map(|&q| i16::from(q)).sum();
            }
            a.d.push(if amax > 0.0 { 1.0 / id } else { 0.0 });
        }
        a
    }

    /// The values the codes stand for, `d · q` (for references and tests).
    pub fn dequantize(&self) -> Vec<f32> {
        self.q.iter().enumerate().map(|(i, &q)| self.d[i / QK8K] * f32::from(q)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_within_half_a_step_and_sums_add_up() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) * if i < 256 { 0.013 } else { 2.5 }).collect();
        let a = ActQ8K::quantize(&x);
        assert_eq!((a.d.len(), a.q.len(), a.sums16.len()), (2, 512, 32));
        for (i, (v, r)) in x.iter().zip(a.dequantize()).enumerate() {
            assert!((v - r).abs() <= a.d[i / QK8K] * 0.5 + 1e-6, "value {i}: {v} vs {r}");
        }
        assert!(a.q[..256].iter().any(|&q| q.abs() == 127) && a.q[256..].iter().any(|&q| q.abs() == 127));
        for (s, run) in a.sums16.iter().zip(a.q.chunks_exact(16)) {
            assert_eq!(i32::from(*s), run.iter().map(|&q| i32::from(q)).sum::<i32>());
        }
        // ggml's rounding: to nearest, ties to even (with max|x| = 127 the scale is exactly 1).
        let mut ties = vec![0f32; 256];
        ties[..7].copy_from_slice(&[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5]);
        assert_eq!(ActQ8K::quantize(&ties).q[..7], [127, 0, 2, 2, 0, -2, -2]);
        let zeros = ActQ8K::quantize(&[0.0; 256]);
        assert_eq!(zeros.d, [0.0]);
        assert!(zeros.q.iter().all(|&q| q == 0));
    }
}
