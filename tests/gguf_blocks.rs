//! The format layer and QuantLinear against ggml's own output (tests/fixtures/gguf-blocks,
//! copied from ../shared/fixtures/gguf-blocks; see its README for how ggml/gguf-py made it).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use burn_quant::format::{dequantize, quantize::quantize};
use burn_quant::gguf::GgufFile;
use burn_quant::{GgmlType, QuantLinear};
use common::{Ref, fixture, rel_err};

const NAMES: [&str; 13] = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K"];

fn blocks() -> (GgufFile, Ref) {
    (GgufFile::open(fixture("gguf-blocks/blocks.gguf")).unwrap(), Ref::open("gguf-blocks/blocks-ref.safetensors"))
}

#[test]
fn reader_sees_the_fixture_metadata_and_tensors() {
    let (g, _) = blocks();
    assert_eq!(g.version, 3);
    assert_eq!(g.get_str("general.architecture"), Some("quant-blocks"));
    assert_eq!(g.get_u64("fixture.rows").unwrap(), Some(64));
    assert_eq!(g.get_u64("fixture.cols").unwrap(), Some(512));
    assert_eq!(g.tensor_count(), 13);
    for name in NAMES {
        let t = g.tensor(&format!("w.{name}")).unwrap();
        assert_eq!(t.shape(), vec![64, 512]);
        assert_eq!(t.kind, GgmlType::from_name(name).unwrap());
    }
}

#[test]
fn decode_is_bit_exact_with_ggml_for_all_13_types() {
    let (g, r) = blocks();
    for name in NAMES {
        let t = format!("w.{name}");
        let raw = g.tensor_data(&t).unwrap();
        assert_eq!(raw, r.bytes(&format!("{t}.raw")).as_slice(), "{t}: raw bytes");
        let (want, _) = r.f32(&format!("{t}.dequant"));
        let got = dequantize(g.tensor(&t).unwrap().kind, raw, 64, 512).unwrap();
        let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(bad.is_none(), "{t}: first mismatch at {:?}: {} vs {}", bad, got[bad.unwrap()], want[bad.unwrap()]);
    }
}

#[test]
fn quantizers_match_ggml_bit_for_bit() {
    let (_, r) = blocks();
    for name in ["q4_0", "q8_0", "q4_K", "q6_K"] {
        let t = format!("w.{name}");
        let (src, _) = r.f32(&format!("{t}.source"));
        let got = quantize(GgmlType::from_name(name).unwrap(), &src).unwrap();
        let want = r.bytes(&format!("{t}.raw"));
        let bad = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(got.len(), want.len(), "{t}");
        assert!(bad.is_none(), "{t}: first differing byte {:?} (block {})", bad, bad.unwrap() / GgmlType::from_name(name).unwrap().block_bytes());
    }
}

/// The int4 round-to-nearest quantizer (no reference implementation of it in the fixtures:
/// checked by its definition) on the fixture's source weights (zero rows, outliers, one-signed
/// rows, rows whose f16 step is subnormal or underflows): every weight decodes within half a step
/// of itself, plus what the f16 rounding of the step moves the range's end by (`|range − 15·d|`),
/// and where the step is not zero the group's codes reach 0 or 15.
#[test]
fn int4_quantizer_rounds_to_the_nearest_step() {
    let (_, r) = blocks();
    let (src, _) = r.f32("w.q4_0.source");
    for kind in [GgmlType::I4_32, GgmlType::I4_64, GgmlType::I4_128] {
        let g = kind.block_elems();
        let bytes = quantize(kind, &src).unwrap();
        assert_eq!(bytes.len(), src.len() / g * kind.block_bytes());
        let got = dequantize(kind, &bytes, 64, 512).unwrap();
        for (b, blk) in bytes.chunks_exact(kind.block_bytes()).enumerate() {
            let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            let x = &src[b * g..(b + 1) * g];
            let range = x.iter().fold(0f32, |m, &v| m.max(v)) - x.iter().fold(0f32, |m, &v| m.min(v));
            let bound = 0.5 * d + (range - 15.0 * d).abs() + 1e-6 * range;
            let codes: Vec<u8> = blk[4..].iter().flat_map(|&c| [c & 15, c >> 4]).collect();
            assert!(d == 0.0 || codes.iter().any(|&c| c == 0 || c == 15), "{kind:?} group {b}: codes {codes:?}");
            for (i, &v) in x.iter().enumerate() {
                let i = b * g + i;
                assert!((got[i] - v).abs() <= bound, "{kind:?} weight {i}: {} for {v} (step {d}, bound {bound})", got[i]);
            }
        }
        let zeros = quantize(kind, &vec![0.0; g]).unwrap();
        assert!(dequantize(kind, &zeros, 1, g).unwrap().iter().all(|&v| v == 0.0), "{kind:?}");
    }
}

fn forward_matches_float64_reference(device: Device) {
    let (g, r) = blocks();
    for name in NAMES {
        let t = format!("w.{name}");
        let info = g.tensor(&t).unwrap();
        let layer = QuantLinear::from_gguf_bytes(info.kind, g.tensor_data(&t).unwrap(), 64, 512, &device).unwrap();
        for m in [1usize, 3, 17] {
            let (x, _) = r.f32(&format!("x.m{m}"));
            let (want, _) = r.f32(&format!("{t}.y.m{m}"));
            let x = Tensor::<2>::from_data(TensorData::new(x, [m, 512]), &device);
            let y = layer.forward(x).into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let e = rel_err(&y, &want);
            assert!(e <= 1e-5, "{t} m={m}: relative error {e:e}");
        }
    }
}

fn forward_keeps_leading_dims(device: Device) {
    let (g, r) = blocks();
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q4_K, g.tensor_data("w.q4_K").unwrap(), 64, 512, &device).unwrap();
    let (x, _) = r.f32("x.m17");
    let (want, _) = r.f32("w.q4_K.y.m17");
    // 17 rows as [1, 17, 512] and the first 12 of them as [2, 2, 3, 512].
    let x3 = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, 17, 512]), &device);
    let y3 = layer.forward(x3);
    assert_eq!(y3.dims(), [1, 17, 64]);
    assert!(rel_err(&y3.into_data().try_to_vec::<f32>().unwrap(), &want) <= 1e-5);
    let x4 = Tensor::<4>::from_data(TensorData::new(x[..12 * 512].to_vec(), [2, 2, 3, 512]), &device);
    let y4 = layer.forward(x4);
    assert_eq!(y4.dims(), [2, 2, 3, 64]);
    assert!(rel_err(&y4.into_data().try_to_vec::<f32>().unwrap(), &want[..12 * 64]) <= 1e-5);
}

/// The layer's weight decoded on the device (the row-lookup kernel on GPU backends) is bit-exact
/// with ggml's `dequantize_row_*` for all 13 types.
fn device_decode_is_bit_exact(device: Device) {
    let (g, r) = blocks();
    for name in NAMES {
        let t = format!("w.{name}");
        let info = g.tensor(&t).unwrap();
        let layer = QuantLinear::from_gguf_bytes(info.kind, g.tensor_data(&t).unwrap(), 64, 512, &device).unwrap();
        let got = layer.dequantize().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let (want, _) = r.f32(&format!("{t}.dequant"));
        let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(bad.is_none(), "{t}: first differing value at {bad:?}: {} vs {}", got[bad.unwrap()], want[bad.unwrap()]);
    }
}

/// Row counts that are not a multiple of any kernel tile (61 of the 64 rows), each type, on the
/// decode and prefill paths.
fn odd_row_counts(device: Device) {
    let (g, r) = blocks();
    for name in NAMES {
        let t = format!("w.{name}");
        let info = g.tensor(&t).unwrap();
        let bytes = g.tensor_data(&t).unwrap();
        let rows = 61;
        let layer = QuantLinear::from_gguf_bytes(info.kind, &bytes[..rows * bytes.len() / 64], rows, 512, &device).unwrap();
        for m in [1usize, 3, 17] {
            let (x, _) = r.f32(&format!("x.m{m}"));
            let (want, _) = r.f32(&format!("{t}.y.m{m}"));
            let want: Vec<f32> = want.chunks_exact(64).flat_map(|row| row[..rows].to_vec()).collect();
            let y = layer.forward(Tensor::<2>::from_data(TensorData::new(x, [m, 512]), &device));
            let e = rel_err(&y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), &want);
            assert!(e <= 1e-5, "{t} {rows} rows m={m}: relative error {e:e}");
        }
    }
}

/// ggml's Q6_K blocks as rows of 2048 (four fixture rows each: the same bytes, since rows are
/// contiguous runs of blocks), which a layer stores regrouped as Q6_Kx4: the decode on the device
/// is bit-exact with ggml's, and products at one, three and 17 token rows (each path: one row's
/// registers, the decode kernel's decoded weights, prefill) match a float64 product of that
/// decode, on 15 rows (not a multiple of any kernel's row group) and two groups per row.
fn regrouped_q6k_matches_ggml(device: Device) {
    let (g, r) = blocks();
    let (rows, cols) = (15usize, 2048usize);
    let bytes = &g.tensor_data("w.q6_K").unwrap()[..rows * 4 * GgmlType::Q6_K.row_bytes(512).unwrap()];
    let layer = QuantLinear::from_gguf_bytes(GgmlType::Q6_K, bytes, rows, cols, &device).unwrap();
    assert_eq!(layer.layout().parts[0].kind, GgmlType::Q6_Kx4);
    let (dequant, _) = r.f32("w.q6_K.dequant");
    let want = &dequant[..rows * cols];
    let got = layer.dequantize().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let bad = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(bad.is_none(), "first differing value at {bad:?}: {} vs {}", got[bad.unwrap()], want[bad.unwrap()]);
    for m in [1usize, 3, 17] {
        // Four copies of the fixture's input, each scaled differently, as one row of 2048.
        let (x, _) = r.f32(&format!("x.m{m}"));
        let x: Vec<f32> = x.chunks_exact(512).flat_map(|row| (0..4).flat_map(move |c| row.iter().map(move |v| v * (1.0 + c as f32 / 4.0)))).collect();
        let y_ref: Vec<f32> = (0..m)
            .flat_map(|t| {
                let xt = &x[t * cols..(t + 1) * cols];
                (0..rows).map(move |j| want[j * cols..(j + 1) * cols].iter().zip(xt).map(|(w, v)| *w as f64 * *v as f64).sum::<f64>() as f32)
            })
            .collect();
        let y = layer.forward(Tensor::<2>::from_data(TensorData::new(x, [m, cols]), &device));
        let e = rel_err(&y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(), &y_ref);
        assert!(e <= 1e-5, "m={m}: relative error {e:e}");
    }
}

backend_tests!(forward_matches_float64_reference, forward_keeps_leading_dims, device_decode_is_bit_exact, odd_row_counts, regrouped_q6k_matches_ggml);
