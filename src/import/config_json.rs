//! `config.json` and `quantize_config.json`, read for the keys burn-quant uses only.
//!
//! A `serde_json::Value` of a whole file costs 32 bytes and more per JSON value, many times the
//! text of a file full of small numbers. Here every other key is skipped without allocating,
//! and a kept key whose value is an array or an object (where a scalar is expected) becomes
//! `null`: what is kept is a few dozen scalars, whatever the file holds.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Top-level keys kept: what the models read.
const MODEL_KEYS: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "rope_theta",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "torch_dtype",
];

/// Keys kept inside `quantization_config` (and at the top of `quantize_config.json`).
pub(crate) const QUANT_KEYS: &[&str] = &[
    "quant_method",
    "bits",
    "w_bit",
    "group_size",
    "q_group_size",
    "sym",
    "desc_act",
    "checkpoint_format",
    "is_marlin_format",
    "version",
    "zero_point",
];

/// The object a `config.json` holds, reduced to the keys burn-quant reads (the model's
/// hyper-parameters, and `quantization_config` reduced to the quantization's): what
/// [`HfCheckpoint::config`](super::HfCheckpoint::config) returns.
pub fn parse_config(text: &str) -> serde_json::Result<Value> {
    parse(text, MODEL_KEYS, Some("quantization_config"))
}

/// The object `quantize_config.json` holds, reduced to [`QUANT_KEYS`].
pub(crate) fn parse_quantize_config(text: &str) -> serde_json::Result<Value> {
    parse(text, QUANT_KEYS, None)
}

fn parse(text: &str, keys: &'static [&'static str], nested: Option<&'static str>) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = de.deserialize_map(Object { keys, nested })?;
    de.end()?;
    Ok(Value::Object(v))
}

/// An object reduced to `keys` (scalars) and, under `nested`, an object reduced to [`QUANT_KEYS`].
struct Object {
    keys: &'static [&'static str],
    nested: Option<&'static str>,
}

impl<'de> Visitor<'de> for Object {
    type Value = Map<String, Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<KeyIn>()? {
            match key.0 {
                Some(k) if Some(k) == self.nested => {
                    let v = map.next_value_seed(Nested)?;
                    out.insert(k.to_string(), v);
                }
                Some(k) if self.keys.contains(&k) => {
                    let Scalar(v) = map.next_value()?;
                    out.insert(k.to_string(), v);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// `quantization_config`: an object reduced to [`QUANT_KEYS`], or `null` if it is not an object.
struct Nested;

impl<'de> de::DeserializeSeed<'de> for Nested {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Nested {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Object { keys: QUANT_KEYS, nested: None }.visit_map(map).map(Value::Object)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| Value::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A key: which of the wanted keys it is (`None`: not wanted), compared without copying it.
struct KeyIn(Option<&'static str>);

impl<'de> de::Deserialize<'de> for KeyIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyIn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<KeyIn, E> {
                let known = MODEL_KEYS.iter().chain(QUANT_KEYS).chain(&["quantization_config"]).find(|&&k| k == s);
                Ok(KeyIn(known.copied()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A scalar JSON value; arrays and objects are skipped and read as `null`.
struct Scalar(Value);

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(Value::Number(v.into())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(Value::Number(v.into())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(Number::from_f64(v).map_or(Value::Null, Value::Number)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(Value::String(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(Value::Null))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Scalar(Value::Null))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Scalar(Value::Null))
            }
        }
        d.deserialize_any(V)
    }
}
