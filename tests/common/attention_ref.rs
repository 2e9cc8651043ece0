//! Float64 references for Qwen3's attention ops, shared by `tests/qwen3.rs` and
//! `examples/gpu_check.rs` (which includes this file by path).
#![allow(dead_code)]

/// The RoPE angle of pair `j` of a `d`-wide head at position `p` (base 10000).
fn angle(p: usize, j: usize, d: usize) -> f64 {
    p as f64 * 10000f64.powf(-(2.0 * j as f64) / d as f64)
}

/// `cos` and `sin` tables `[s, d/2]` of positions `start..start + s` (base 10000), as f32.
pub fn rope_tables(start: usize, s: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let table = |f: fn(f64) -> f64| (0..s * half).map(|i| f(angle(start + i / half, i % half, d)) as f32).collect();
    (table(f64::cos), table(f64::sin))
}

/// Qwen3's per-head RMSNorm (`eps`, scale `gamma`) then NEOX RoPE at position `p` (base 10000)
/// of one head `x`.
pub fn norm_rope(x: &[f32], gamma: &[f32], p: usize, eps: f64) -> Vec<f64> {
    let (d, half) = (x.len(), x.len() / 2);
    let inv = 1.0 / (x.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / d as f64 + eps).sqrt();
    let n: Vec<f64> = x.iter().zip(gamma).map(|(v, g)| *v as f64 * inv * *g as f64).collect();
    let mut y = vec![0f64; d];
    for j in 0..half {
        let (c, s) = (angle(p, j, d).cos(), angle(p, j, d).sin());
        y[j] = n[j] * c - n[j + half] * s;
        y[j + half] = n[j + half] * c + n[j] * s;
    }
    y
}

/// Attention of one query `q` over rows `0..n` of keys/values `[_, d]` with scores `q·k / √d`.
pub fn attend(q: &[f64], k: &[f32], v: &[f32], n: usize) -> Vec<f64> {
    let d = q.len();
    let scores: Vec<f64> = (0..n).map(|t| (0..d).map(|j| q[j] * k[t * d + j] as f64).sum::<f64>() / (d as f64).sqrt()).collect();
    let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
    let total: f64 = e.iter().sum();
    (0..d).map(|j| (0..n).map(|t| e[t] * v[t * d + j] as f64).sum::<f64>() / total).collect()
}

/// What `ops::attention_prompt` computes, in float64: `qkv [b, s, (h + 2·kvh)·d]` at positions
/// `start..start + s`; the keys (normed, rotated) and values are written into `kc`/`vc` `[b, kvh,
/// cap, d]`, and the output `[b, s, h·d]` is returned (token `t` attends `0..=start + t`).
pub fn prompt_attention(qkv: &[f32], [gq, gk]: [&[f32]; 2], [kc, vc]: [&mut [f32]; 2], [b, s, h, kvh, d, cap]: [usize; 6], start: usize, eps: f64) -> Vec<f32> {
    let (width, g) = ((h + 2 * kvh) * d, h / kvh);
    let mut out = vec![0f32; b * s * h * d];
    for bi in 0..b {
        for t in 0..s {
            let row = &qkv[(bi * s + t) * width..][..width];
            for kh in 0..kvh {
                let kn = norm_rope(&row[(h + kh) * d..][..d], gk, start + t, eps);
                let at = ((bi * kvh + kh) * cap + start + t) * d;
                for j in 0..d {
                    kc[at + j] = kn[j] as f32;
                    vc[at + j] = row[(h + kvh + kh) * d + j];
                }
            }
        }
        for t in 0..s {
            let row = &qkv[(bi * s + t) * width..][..width];
            for hq in 0..h {
                let q = norm_rope(&row[hq * d..][..d], gq, start + t, eps);
                let base = (bi * kvh + hq / g) * cap * d;
                let o = attend(&q, &kc[base..], &vc[base..], start + t + 1);
                for j in 0..d {
                    out[((bi * s + t) * h + hq) * d + j] = o[j] as f32;
                }
            }
        }
    }
    out
}
