//! Burn modules built on the quantized ops.

mod quant_linear;

pub use quant_linear::{QuantLinear, QuantLinearConfig};
