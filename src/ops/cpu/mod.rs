//! The CPU backends (burn-flex and burn-ndarray): thin adapters that borrow the tensors' memory
//! and run the shared fused [`kernel`].

pub mod attention;
pub mod elementwise;
pub mod kernel;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_int8_tokens;
#[cfg(target_arch = "x86_64")]
mod x86_vnni_tokens;

#[allow(unused_imports)]
use super::{QuantLayout, QuantMatmulBackend};
#[allow(unused_imports)]
use burn::tensor::TensorData;
#[allow(unused_imports)]
use super::decode::PromptDims;

/// Output shape: the input's leading dims with the last replaced by `last`.
#[allow(dead_code)]
fn out_shape(shape: &[usize], last: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}

/// Runs `f(x, m, weight bytes)` and panics with the kernel's message on an invariant violation
/// (QuantLinear validates shapes before it reaches the backend).
#[allow(dead_code)]
fn run(f: impl FnOnce() -> crate::Result<Vec<f32>>) -> Vec<f32> {
    match f() {
        Ok(y) => y,
        Err(e) => panic!("quantized matmul: {e}"),
    }
}

#[cfg(feature = "flex")]
mod flex {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::DType;
    use burn_flex::FlexTensor;

    fn f32_contiguous(x: FlexTensor) -> FlexTensor {
        if x.dtype() == DType::F32 && x.as_slice::<f32>().is_some() {
            x
        } else {
            FlexTensor::from_data(x.into_data().convert::<f32>())
        }
    }

    fn words(w: &FlexTensor) -> std::borrow::Cow<'_, [u32]> {
        match w.as_slice::<u32>() {
            Some(s) => s.into(),
            None => w.clone().into_data().convert::<u32>().try_into_vec::<u32>().unwrap_or_default().into(),
        }
    }

    fn apply(x: FlexTensor, weight: FlexTensor, layout: &QuantLayout, k: usize, n: usize, f: fn(&[f32], usize, &[u8], &QuantLayout) -> crate::Result<Vec<f32>>) -> FlexTensor {
        let x = f32_contiguous(x);
        let shape = out_shape(x.layout().shape().as_slice(), n);
        let xs = x.as_slice::<f32>().unwrap_or_default();
        let w = words(&weight);
        let y = run(|| f(xs, xs.len() / k.max(1), bytemuck::cast_slice(&w), layout));
        FlexTensor::from_data(TensorData::new(y, shape))
    }

    /// The RMSNorm in one pass (`elementwise::rms_norm`); the other ops' default bodies (Burn's
    /// own primitives) build on it.
    impl crate::ops::DecodeOpsBackend for Flex {
        fn rms_norm(x: FlexTensor, gamma: FlexTensor, eps: f32) -> FlexTensor {
            let (x, gamma) = (f32_contiguous(x), f32_contiguous(gamma));
            let shape = x.layout().shape().as_slice().to_vec();
            if shape.last() != Some(&gamma.layout().shape().num_elements()) {
                // Not one scale per value of a row: Burn's ops decide (broadcast or refuse).
                return crate::ops::decode::rms_norm_composed::<Self>(x, gamma, eps);
            }
            let y = super::elementwise::rms_norm(x.as_slice::<f32>().unwrap_or_default(), gamma.as_slice::<f32>().unwrap_or_default(), eps);
            FlexTensor::from_data(TensorData::new(y, shape))
        }

        fn attention_prompt(
            qkv: FlexTensor,
            q_gamma: FlexTensor,
            k_gamma: FlexTensor,
            cos: FlexTensor,
            sin: FlexTensor,
            k_cache: FlexTensor,
            v_cache: FlexTensor,
            start: usize,
            heads: usize,
            kv_heads: usize,
            eps: f32,
            scale: f32,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let shape = |t: &FlexTensor| t.layout().shape().as_slice().to_vec();
            let n = |t: &FlexTensor| t.layout().shape().num_elements();
            let cache_shape = shape(&k_cache);
            let dims = PromptDims::of(&shape(&qkv), [&cache_shape, &shape(&v_cache)], [&q_gamma, &k_gamma, &cos, &sin].map(n), start, [heads, kv_heads]);
            let Some(dims) = dims else {
                return crate::ops::decode::attention_prompt_composed::<Self>(qkv, [q_gamma, k_gamma], [cos, sin], [k_cache, v_cache], start, [heads, kv_heads], eps, scale);
            };
            let [qkv, q_gamma, k_gamma, cos, sin] = [qkv, q_gamma, k_gamma, cos, sin].map(f32_contiguous);
            fn slice(t: &FlexTensor) -> &[f32] {
                t.as_slice::<f32>().unwrap_or_default()
            }
            let vec = |t: FlexTensor| t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
            let (mut kc, mut vc) = (vec(k_cache), vec(v_cache));
            let out = super::attention::attention_prompt(slice(&qkv), [slice(&q_gamma), slice(&k_gamma)], [slice(&cos), slice(&sin)], [&mut kc, &mut vc], dims, eps, scale);
            let tensor = |v: Vec<f32>, shape: Vec<usize>| FlexTensor::from_data(TensorData::new(v, shape));
            (tensor(out, vec![dims.batch, dims.seq, heads * dims.d]), tensor(kc, cache_shape.clone()), tensor(vc, cache_shape))
        }
    }

    impl QuantMatmulBackend for Flex {
        fn quant_matmul(x: FlexTensor, weight: FlexTensor, layout: QuantLayout) -> FlexTensor {
            apply(x, weight, &layout, layout.in_features, layout.out_features(), kernel::matmul)
        }

        fn quant_matmul_norm(x: FlexTensor, gamma: FlexTensor, eps: f32, weight: FlexTensor, layout: QuantLayout) -> FlexTensor {
            Self::quant_matmul(<Self as crate::ops::DecodeOpsBackend>::rms_norm(x, gamma, eps), weight, layout)
        }

        fn quant_matmul_swiglu_add(gu: FlexTensor, weight: FlexTensor, layout: QuantLayout, r: FlexTensor) -> FlexTensor {
            // The SwiGLU in one pass (`elementwise::swiglu`), then the product and its residual.
            let gu = f32_contiguous(gu);
            if gu.layout().shape().as_slice().last() != Some(&(2 * layout.in_features)) {
                return Self::quant_matmul_add(crate::ops::decode::swiglu_composed::<Self>(gu), weight, layout, r);
            }
            let shape = out_shape(gu.layout().shape().as_slice(), layout.in_features);
            let x = super::elementwise::swiglu(gu.as_slice::<f32>().unwrap_or_default(), layout.in_features);
            Self::quant_matmul_add(FlexTensor::from_data(TensorData::new(x, shape)), weight, layout, r)
        }

        fn quant_matmul_transposed(g: FlexTensor, weight: FlexTensor, layout: QuantLayout) -> FlexTensor {
            apply(g, weight, &layout, layout.out_features(), layout.in_features, kernel::matmul_transposed)
        }

        fn quant_rows(ids: FlexTensor, weight: FlexTensor, layout: QuantLayout) -> FlexTensor {
            let ids = ids.into_data().convert::<i64>().try_into_vec::<i64>().unwrap_or_default();
            let w = words(&weight);
            let y = run(|| kernel::gather_rows(&ids, bytemuck::cast_slice(&w), &layout));
            FlexTensor::from_data(TensorData::new(y, [ids.len(), layout.in_features]))
        }
    }
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)]
mod ndarray {
    use super::*;
    use burn::backend::{NdArray, TensorMetadata};
    use burn_ndarray::NdArrayTensor;

    fn floats(x: &NdArrayTensor) -> std::borrow::Cow<'_, [f32]> {
        match x {
            NdArrayTensor::F32(s) => match s.view().to_slice() {
                Some(sl) => sl.into(),
                None => s.view().iter().copied().collect::<Vec<_>>().into(),
            },
            NdArrayTensor::F64(s) => s.view().iter().map(|v| *v as f32).collect::<Vec<_>>().into(),
            other => panic!("quantized matmul: expected a float input, got {:?}", other.dtype()),
        }
    }

    /// The packed words; a weight stored under another integer dtype (e.g. after a record
    /// conversion) is reinterpreted word by word.
    fn words(w: &NdArrayTensor) -> std::borrow::Cow<'_, [u32]> {
        match w {
            NdArrayTensor::U32(s) => match s.view().to_slice() {
                Some(sl) => sl.into(),
                None => s.view().iter().copied().collect::<Vec<_>>().into(),
            },
            NdArrayTensor::I32(s) => s.view().iter().map(|v| *v as u32).collect::<Vec<_>>().into(),
            NdArrayTensor::I64(s) => s.view().iter().map(|v| *v as u32).collect::<Vec<_>>().into(),
            NdArrayTensor::U64(s) => s.view().iter().map(|v| *v as u32).collect::<Vec<_>>().into(),
            other => panic!("quantized matmul: expected u32 weight words, got {:?}", other.dtype()),
        }
    }

    fn apply(x: NdArrayTensor, weight: NdArrayTensor, layout: &QuantLayout, k: usize, n: usize, f: fn(&[f32], usize, &[u8], &QuantLayout) -> crate::Result<Vec<f32>>) -> NdArrayTensor {
        let shape = out_shape(x.shape().as_slice(), n);
        let xs = floats(&x);
        let w = words(&weight);
        let y = run(|| f(&xs, xs.len() / k.max(1), bytemuck::cast_slice(&w), layout));
        NdArrayTensor::from_data(TensorData::new(y, shape))
    }

    /// The RMSNorm in one pass, as on flex; the other ops' default bodies build on it.
    impl crate::ops::DecodeOpsBackend for NdArray {
        fn rms_norm(x: NdArrayTensor, gamma: NdArrayTensor, eps: f32) -> NdArrayTensor {
            let shape = x.shape().as_slice().to_vec();
            if shape.last() != Some(&gamma.shape().num_elements()) {
                return crate::ops::decode::rms_norm_composed::<Self>(x, gamma, eps);
            }
            let y = super::elementwise::rms_norm(&floats(&x), &floats(&gamma), eps);
            NdArrayTensor::from_data(TensorData::new(y, shape))
        }

        fn attention_prompt(
            qkv: NdArrayTensor,
            q_gamma: NdArrayTensor,
            k_gamma: NdArrayTensor,
            cos: NdArrayTensor,
            sin: NdArrayTensor,
            k_cache: NdArrayTensor,
            v_cache: NdArrayTensor,
            start: usize,
            heads: usize,
            kv_heads: usize,
            eps: f32,
            scale: f32,
        ) -> (NdArrayTensor, NdArrayTensor, NdArrayTensor) {
            let shape = |t: &NdArrayTensor| t.shape().as_slice().to_vec();
            let n = |t: &NdArrayTensor| t.shape().num_elements();
            let cache_shape = shape(&k_cache);
            let dims = PromptDims::of(&shape(&qkv), [&cache_shape, &shape(&v_cache)], [&q_gamma, &k_gamma, &cos, &sin].map(n), start, [heads, kv_heads]);
            let Some(dims) = dims else {
                return crate::ops::decode::attention_prompt_composed::<Self>(qkv, [q_gamma, k_gamma], [cos, sin], [k_cache, v_cache], start, [heads, kv_heads], eps, scale);
            };
            let (mut kc, mut vc) = (floats(&k_cache).into_owned(), floats(&v_cache).into_owned());
            let out = super::attention::attention_prompt(&floats(&qkv), [&floats(&q_gamma), &floats(&k_gamma)], [&floats(&cos), &floats(&sin)], [&mut kc, &mut vc], dims, eps, scale);
            let tensor = |v: Vec<f32>, shape: Vec<usize>| NdArrayTensor::from_data(TensorData::new(v, shape));
            (tensor(out, vec![dims.batch, dims.seq, heads * dims.d]), tensor(kc, cache_shape.clone()), tensor(vc, cache_shape))
        }
    }

    impl QuantMatmulBackend for NdArray {
        fn quant_matmul(x: NdArrayTensor, weight: NdArrayTensor, layout: QuantLayout) -> NdArrayTensor {
            apply(x, weight, &layout, layout.in_features, layout.out_features(), kernel::matmul)
        }

        fn quant_matmul_norm(x: NdArrayTensor, gamma: NdArrayTensor, eps: f32, weight: NdArrayTensor, layout: QuantLayout) -> NdArrayTensor {
            Self::quant_matmul(<Self as crate::ops::DecodeOpsBackend>::rms_norm(x, gamma, eps), weight, layout)
        }

        fn quant_matmul_swiglu_add(gu: NdArrayTensor, weight: NdArrayTensor, layout: QuantLayout, r: NdArrayTensor) -> NdArrayTensor {
            // As on flex: the SwiGLU in one pass, then the product and its residual.
            if gu.shape().as_slice().last() != Some(&(2 * layout.in_features)) {
                return Self::quant_matmul_add(crate::ops::decode::swiglu_composed::<Self>(gu), weight, layout, r);
            }
            let shape = out_shape(gu.shape().as_slice(), layout.in_features);
            let x = super::elementwise::swiglu(&floats(&gu), layout.in_features);
            Self::quant_matmul_add(NdArrayTensor::from_data(TensorData::new(x, shape)), weight, layout, r)
        }

        fn quant_matmul_transposed(g: NdArrayTensor, weight: NdArrayTensor, layout: QuantLayout) -> NdArrayTensor {
            apply(g, weight, &layout, layout.out_features(), layout.in_features, kernel::matmul_transposed)
        }

        fn quant_rows(ids: NdArrayTensor, weight: NdArrayTensor, layout: QuantLayout) -> NdArrayTensor {
            let ids: Vec<i64> = match &ids {
                NdArrayTensor::I64(s) => s.view().iter().copied().collect(),
                NdArrayTensor::I32(s) => s.view().iter().map(|&v| v as i64).collect(),
                NdArrayTensor::U32(s) => s.view().iter().map(|&v| v as i64).collect(),
                NdArrayTensor::U64(s) => s.view().iter().map(|&v| v as i64).collect(),
                other => panic!("quantized row lookup: expected integer ids, got {:?}", other.dtype()),
            };
            let w = words(&weight);
            let y = run(|| kernel::gather_rows(&ids, bytemuck::cast_slice(&w), &layout));
            NdArrayTensor::from_data(TensorData::new(y, [ids.len(), layout.in_features]))
        }
    }
}
