//! Models built from [`QuantLinear`](crate::QuantLinear).

pub mod qwen3;
