//! `QuantLinear` built from arbitrary (type, bytes, shape) — one part or two fused parts of any
//! types, with an optional bias and input permutation read from the input — then multiplied on
//! the CPU and checked against the reference decode (`format::dequantize`) in f64, and its rows
//! looked up. Construction must return an error, never panic, for any input; a layer that builds
//! must give the reference's product. Building it may not allocate more than twice the input:
//! the weight stays in its blocks.

#![no_main]

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::format::dequantize;
use burn_quant::{GgmlType, QuantLinear};
use burn_quant_fuzz::*;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fn kind(i: u8) -> GgmlType {
    let all: Vec<GgmlType> = GgmlType::all().collect();
    all[usize::from(i) % all.len()]
}

/// Rows that `bytes` hold for `in_features` of `kind` (0 when the row length is invalid).
fn rows_of(kind: GgmlType, bytes: &[u8], in_features: usize) -> usize {
    match kind.row_bytes(in_features) {
        Ok(rb) if rb > 0 => bytes.len() / rb,
        _ => 0,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((h, bytes)) = LinearHeader::decode(data) else { return };
    let device = Device::flex();
    let k = usize::from(h.in_features);
    let (k1, k2) = (kind(h.kind), kind(h.kind2));
    let parts: Vec<(GgmlType, &[u8], usize)> = if h.flags & FLAG_FUSED != 0 {
        let (a, b) = bytes.split_at(usize::from(h.split).min(bytes.len()));
        vec![(k1, a, rows_of(k1, a, k)), (k2, b, rows_of(k2, b, k))]
    } else if h.flags & FLAG_EXPLICIT_ROWS != 0 {
        vec![(k1, bytes, usize::from(h.split))]
    } else {
        vec![(k1, bytes, rows_of(k1, bytes, k))]
    };
    let scope = PeakScope::start();
    let Ok(mut layer) = QuantLinear::from_gguf_fused(&parts, k, &device) else { return };
    check_bounds(&scope, data.len(), 0);
    drop(scope);
    let n: usize = parts.iter().map(|p| p.2).sum();
    assert_eq!((layer.out_features(), layer.in_features()), (n, k));
    // Values from the input itself, finite and small: x[j] in [-1, 1).
    let val = |i: usize| f32::from(bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0)) / 128.0 - 1.0;
    if h.flags & FLAG_BIAS != 0 {
        let bias: Vec<f32> = (0..n).map(val).collect();
        layer = layer.with_bias(&bias).expect("a bias of out_features values is accepted");
    }
    let mut perm: Option<Vec<u32>> = None;
    if h.flags & FLAG_PERM != 0 {
        // A rotation by `split` (always a permutation) or, for odd `split`, raw bytes (usually not one).
        let p: Vec<u32> = if h.split % 2 == 0 {
            (0..k).map(|j| ((j + usize::from(h.split)) % k.max(1)) as u32).collect()
        } else {
            (0..k).map(|j| u32::from(bytes.get(j).copied().unwrap_or(0))).collect()
        };
        match layer.clone().with_input_permutation(&p) {
            Ok(l) => {
                layer = l;
                perm = Some(p);
            }
            Err(_) => {}
        }
    }
    if n == 0 || k == 0 || n.saturating_mul(k) > 1 << 20 {
        return;
    }
    let m = if h.flags & FLAG_BATCH != 0 { 3 } else { 1 };
    let x: Vec<f32> = (0..m * k).map(|i| val(i * 7 + 3)).collect();
    let y = layer.try_forward(Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device)).expect("input width matches");
    let y: Vec<f32> = y.into_data().try_to_vec::<f32>().expect("f32 output");
    // Reference: each part decoded by the format layer, the product in f64.
    let mut w = Vec::with_capacity(n * k);
    for &(kind, b, rows) in &parts {
        match dequantize(kind, b, rows, k) {
            Ok(v) => w.extend(v),
            Err(_) => return, // an unsupported type builds a layer but has no reference decode
        }
    }
    for r in 0..m {
        for o in 0..n {
            let (mut dot, mut mag) = (0f64, 0f64);
            for j in 0..k {
                let xj = f64::from(x[r * k + perm.as_ref().map_or(j, |p| p[j] as usize)]);
                let wj = f64::from(w[o * k + j]);
                dot += wj * xj;
                mag += (wj * xj).abs();
            }
            if h.flags & FLAG_BIAS != 0 {
                dot += f64::from(val(o));
                mag += f64::from(val(o)).abs();
            }
            let got = f64::from(y[r * n + o]);
            if !(mag <= f64::from(f32::MAX)) {
                continue; // terms beyond f32's range: the f32 product may overflow, as it should
            }
            assert!((got - dot).abs() <= 1e-5 * mag + 1e-30, "y[{r},{o}] = {got}, reference {dot} (|w||x| = {mag})");
        }
    }
    if let Ok(rows) = layer.try_rows(&[0, (n - 1) as u32]) {
        assert_eq!(rows.dims(), [2, k]);
    }
    assert!(layer.try_rows(&[n as u32]).is_err());
});
