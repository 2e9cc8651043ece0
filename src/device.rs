//! Picking a Burn [`Device`] by backend name (`flex`, `ndarray`, `wgpu`, `cuda`), for the CLI and
//! the examples.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Backend names this build knows about, compiled in or not.
pub const BACKENDS: [&str; 4] = ["flex", "ndarray", "wgpu", "cuda"];

/// The default device of the backend called `name`; an error names the cargo feature to enable
/// when that backend is not compiled in.
#[allow(deprecated, unreachable_patterns)]
pub fn device_by_name(name: &str) -> Result<Device> {
    match name {
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "ndarray")]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        "flex" | "ndarray" | "wgpu" | "cuda" => {
            Err(Error::Invalid(format!("backend {name} is not compiled in (build with --features {name})")))
        }
        other => Err(Error::Invalid(format!("unknown backend {other:?} (one of {})", BACKENDS.join(", ")))),
    }
}

/// Whether `device` is a cube backend (CUDA, wgpu, …), which compiles a kernel for each new
/// shape it sees — so callers keep shapes static there (see [`KvCache`](crate::models::qwen3::KvCache)).
/// Read from the device's description, with or without `Autodiff` around it.
pub fn compiles_kernels(device: &Device) -> bool {
    format!("{device:?}").contains("Cube(")
}
