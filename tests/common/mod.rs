//! Shared helpers for the integration tests: fixture access and per-backend instantiation.
#![allow(dead_code)]

use std::path::PathBuf;


/// Path of a file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A safetensors file read fully into memory.
pub struct Ref(Vec<u8>);

impl Ref {
    pub fn open(rel: &str) -> Self {
        Ref(std::fs::read(fixture(rel)).expect("fixture present"))
    }

    fn view(&self, name: &str) -> safetensors::tensor::TensorView<'_> {
        let st = safetensors::SafeTensors::deserialize(&self.0).expect("valid safetensors");
        st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"))
    }

    /// An f32 tensor's values and shape.
    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = safetensors::SafeTensors::deserialize(&self.0).expect("valid safetensors");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        (v, t.shape().to_vec())
    }

    /// An i32 tensor's values and shape.
    pub fn i32(&self, name: &str) -> (Vec<i32>, Vec<usize>) {
        let st = safetensors::SafeTensors::deserialize(&self.0).expect("valid safetensors");
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I32, "{name}");
        let v = t.data().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        (v, t.shape().to_vec())
    }

    /// A tensor's raw bytes.
    pub fn bytes(&self, name: &str) -> Vec<u8> {
        let st = safetensors::SafeTensors::deserialize(&self.0).expect("valid safetensors");
        st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}")).data().to_vec()
    }
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// For each named `fn name(device: Device)` in the calling file, generates one `#[test]` per
/// enabled backend, as `flex::name`, `ndarray::name`, `wgpu::name`, `cuda::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "flex")]
        mod flex {
            $( #[test] fn $name() { super::$name(burn::tensor::Device::flex()) } )*
        }
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        mod ndarray {
            $( #[test] fn $name() { super::$name(burn::tensor::Device::ndarray()) } )*
        }
        #[cfg(feature = "wgpu")]
        mod wgpu {
            $( #[test] fn $name() { super::$name(burn::tensor::Device::wgpu(Default::default())) } )*
        }
        #[cfg(feature = "cuda")]
        mod cuda {
            $( #[test] fn $name() { super::$name(burn::tensor::Device::cuda(0)) } )*
        }
    };
}

/// Whether the CPU kernels for `with_int8_input` run on `device`: a CPU backend on x86 with AVX2,
/// FMA and F16C (elsewhere the flag leaves the products f32).
#[allow(dead_code)]
pub fn int8_kernels_run(device: &burn::tensor::Device) -> bool {
    let name = format!("{device:?}").to_lowercase();
    let cpu = !name.contains("wgpu") && !name.contains("cuda");
    #[cfg(target_arch = "x86_64")]
    let simd = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    cpu && simd
}
