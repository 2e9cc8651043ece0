//! The JSON header of a safetensors file, parsed into one compact entry per tensor.
//!
//! The `safetensors` crate's own `read_metadata` goes through a `#[serde(flatten)]` map, which
//! buffers the whole header as serde content first: on a header of many small entries it holds
//! about 13 times the header's size. This parser streams the header with `serde_json` twice (once
//! to count the entries, once to fill a vector of exactly that many), keeps 56 bytes plus the
//! name and 8 bytes a dimension per tensor (a tensor's smallest JSON entry is 51 bytes), and
//! applies the checks `safetensors` does: dtype, shape and byte range agree, and the range lies in
//! the file. It reuses the crate's [`Dtype`].

use std::borrow::Cow;
use std::fmt;

use safetensors::Dtype;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// Most dimensions a tensor may have (more than any model uses; it bounds a shape's memory).
pub const MAX_RANK: usize = 8;

/// One tensor of a shard.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Tensor name.
    pub(crate) name: Box<str>,
    /// Shape.
    pub(crate) shape: Box<[usize]>,
    /// Byte range inside the shard's data section.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Element type.
    pub(crate) dtype: Dtype,
    /// Which shard holds it.
    pub(crate) shard: u32,
}

/// Parses the header of a safetensors file held in `bytes` (shard number `shard`), appending one
/// entry per tensor to `out`. Returns where the data section starts.
pub(crate) fn read(bytes: &[u8], shard: u32, out: &mut Vec<Entry>, what: &dyn fmt::Display) -> Result<usize> {
    let err = |e: String| Error::SafeTensors(format!("{what}: {e}"));
    let (len, rest) = bytes.split_first_chunk::<8>().ok_or_else(|| err("shorter than the 8-byte header length".into()))?;
    let n = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
    let header = rest.get(..n).ok_or_else(|| err(format!("header of {n} bytes exceeds the file")))?;
    let header = std::str::from_utf8(header).map_err(|e| err(format!("header is not UTF-8 ({e})")))?;
    let data_len = rest.len().saturating_sub(n);

    let count = serde_json::Deserializer::from_str(header)
        .deserialize_map(Count)
        .map_err(|e| err(format!("header: {e}")))?;
    out.reserve_exact(count);
    let first = out.len();
    let mut de = serde_json::Deserializer::from_str(header);
    de.deserialize_map(Fill { out, shard }).map_err(|e| err(format!("header: {e}")))?;
    de.end().map_err(|e| err(format!("header: {e}")))?;

    for e in out.get(first..).unwrap_or_default() {
        let elems = e.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = elems.and_then(|n| n.checked_mul(e.dtype.bitsize())).filter(|b| b.checked_rem(8) == Some(0)).map(|b| b / 8);
        let name = &e.name;
        match bytes {
            None => return Err(err(format!("tensor {name}: shape {:?} of {:?} overflows or is not whole bytes", e.shape, e.dtype))),
            Some(b) if e.end < e.start || e.end.checked_sub(e.start) != Some(b) => {
                return Err(err(format!("tensor {name}: data_offsets [{}, {}] do not hold the {b} bytes of {:?} {:?}", e.start, e.end, e.dtype, e.shape)));
            }
            Some(_) if e.end > data_len => {
                return Err(err(format!("tensor {name}: data_offsets end {} lies past the {data_len} bytes of data", e.end)));
            }
            Some(_) => {}
        }
    }
    8usize.checked_add(n).ok_or_else(|| err("header length overflows".into()))
}

/// Counts the header's tensor entries, allocating nothing.
struct Count;

impl<'de> Visitor<'de> for Count {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<usize, A::Error> {
        let mut n = 0usize;
        while let Some(Key(k)) = map.next_key::<Key>()? {
            map.next_value::<IgnoredAny>()?;
            if k != "__metadata__" {
                n = n.saturating_add(1);
            }
        }
        Ok(n)
    }
}

/// Fills the entries.
struct Fill<'a> {
    out: &'a mut Vec<Entry>,
    shard: u32,
}

impl<'de> Visitor<'de> for Fill<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(Key(name)) = map.next_key::<Key>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let info: Info = map.next_value()?;
            if self.out.len() == self.out.capacity() {
                return Err(de::Error::custom("the header changed between two reads"));
            }
            let (start, end) = info.data_offsets;
            self.out.push(Entry { name: name.into(), shape: info.shape.0, start, end, dtype: info.dtype, shard: self.shard });
        }
        Ok(())
    }
}

/// A map key, borrowed from the header unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A tensor's JSON entry.
#[derive(serde::Deserialize)]
struct Info {
    dtype: Dtype,
    shape: Shape,
    data_offsets: (usize, usize),
}

/// A shape of at most [`MAX_RANK`] dimensions, stored exactly.
struct Shape(Box<[usize]>);

impl<'de> de::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an array of at most {MAX_RANK} dimensions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
                let mut dims = [0usize; MAX_RANK];
                let mut rank = 0usize;
                while let Some(d) = seq.next_element::<usize>()? {
                    let slot = dims.get_mut(rank).ok_or_else(|| de::Error::custom(format!("shape of more than {MAX_RANK} dimensions")))?;
                    *slot = d;
                    rank = rank.saturating_add(1);
                }
                Ok(Shape(dims.get(..rank).unwrap_or_default().into()))
            }
        }
        d.deserialize_seq(V)
    }
}
