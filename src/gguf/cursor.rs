//! A bounds-checked reader over a GGUF file's bytes: the one place that knows how metadata
//! values and tensor infos are encoded. The parser walks the header with it once to validate
//! everything (allocating nothing per item); accessors walk it again later, from offsets the
//! parse recorded, to build the values a caller asks for.

use std::sync::Arc;

use super::storage::Storage;
use super::value::{Array, ArrayList, StringArray, Value, ValueType};
use super::{MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::error::{Error, Result};
use crate::format::GgmlType;

/// A tensor info as it lies in the file, borrowed from it.
pub(super) struct InfoRef<'a> {
    pub(super) name: &'a str,
    pub(super) dims: [u64; MAX_DIMS],
    pub(super) rank: usize,
    pub(super) kind: GgmlType,
    pub(super) offset: u64,
    pub(super) size: u64,
}

impl InfoRef<'_> {
    /// The dimensions, `ne[0]` first.
    pub(super) fn dims(&self) -> &[u64] {
        self.dims.get(..self.rank).unwrap_or_default()
    }
}

/// A position in a file's bytes.
pub(super) struct Cursor<'a> {
    pub(super) pos: usize,
    pub(super) storage: &'a Arc<Storage>,
}

impl<'a> Cursor<'a> {
    pub(super) fn at(storage: &'a Arc<Storage>, pos: usize) -> Self {
        Self { pos, storage }
    }

    fn bytes(&self) -> &'a [u8] {
        self.storage.bytes()
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes().len().saturating_sub(self.pos)
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::gguf(
                self.pos as u64,
                format!("truncated: {what} needs {n} bytes, {} left", self.remaining()),
            ));
        }
        let end = self.pos.saturating_add(n);
        let s = self.bytes().get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a u64 count of items each at least `min_size` bytes, rejecting counts the rest of
    /// the file cannot hold (so nothing is ever allocated from an unchecked number).
    pub(super) fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let fits = self.remaining().checked_div(min_size).unwrap_or(usize::MAX) as u64;
        if n > fits {
            return Err(Error::gguf(at, format!("{what} {n} exceeds what the remaining {} bytes can hold", self.remaining())));
        }
        Ok(n as usize)
    }

    pub(super) fn str(&mut self, what: &str) -> Result<&'a str> {
        let len = self.count(what, 1)?;
        let at = self.pos as u64;
        std::str::from_utf8(self.take(len, what)?)
            .map_err(|e| Error::gguf(at, format!("{what} is not valid UTF-8 ({e})")))
    }

    pub(super) fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let at = self.pos as u64;
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| Error::gguf(at, format!("unknown metadata value type {id}")))
    }

    fn bool(&mut self) -> Result<bool> {
        let at = self.pos as u64;
        match self.array::<1>("bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::gguf(at, format!("bool value {b} is neither 0 nor 1"))),
        }
    }

    /// One metadata entry's key and value type; the cursor is left on the value.
    pub(super) fn entry_head(&mut self) -> Result<(&'a str, ValueType)> {
        let key = self.str("metadata key")?;
        Ok((key, self.value_type("metadata value type")?))
    }

    /// Validates a value of type `ty` and steps over it, allocating nothing.
    pub(super) fn skip_value(&mut self, ty: ValueType, depth: usize) -> Result<()> {
        match ty {
            ValueType::Bool => self.bool().map(drop),
            ValueType::String => self.str("string").map(drop),
            ValueType::Array => self.skip_array(depth),
            fixed => self.take(fixed.min_size(), "value").map(drop),
        }
    }

    fn skip_array(&mut self, depth: usize) -> Result<()> {
        let (ty, n) = self.array_head(depth)?;
        self.skip_elements(ty, n, depth)
    }

    fn skip_elements(&mut self, ty: ValueType, n: usize, depth: usize) -> Result<()> {
        match ty {
            ValueType::Bool | ValueType::String | ValueType::Array => {
                for _ in 0..n {
                    self.skip_value(ty, depth.saturating_add(1))?;
                }
                Ok(())
            }
            fixed => self.take(n.saturating_mul(fixed.min_size()), "array elements").map(drop),
        }
    }

    /// An array's element type and length, checked against the bytes left and the nesting depth.
    fn array_head(&mut self, depth: usize) -> Result<(ValueType, usize)> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::gguf(self.pos as u64, format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
        }
        let ty = self.value_type("array element type")?;
        let n = self.count("array length", ty.min_size())?;
        Ok((ty, n))
    }

    /// Builds the value of type `ty` at the cursor. Strings and numbers are copied out; arrays of
    /// strings and of arrays stay in the file (see [`StringArray`] and [`ArrayList`]).
    pub(super) fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>("u8")?[0]),
            ValueType::I8 => Value::I8(self.array::<1>("i8")?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            ValueType::U32 => Value::U32(self.u32("u32")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.str("string")?.to_string()),
            ValueType::U64 => Value::U64(self.u64("u64")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            ValueType::Array => Value::Array(self.array_value(depth)?),
        })
    }

    /// Builds the array at the cursor (its element type, length, elements).
    pub(super) fn array_value(&mut self, depth: usize) -> Result<Array> {
        let (ty, n) = self.array_head(depth)?;
        fn fixed<T, const N: usize>(c: &mut Cursor, n: usize, f: fn([u8; N]) -> T) -> Result<Vec<T>> {
            let raw = c.take(n.saturating_mul(N), "array elements")?;
            Ok(raw.chunks_exact(N).map(|b| f(b.try_into().unwrap_or([0; N]))).collect())
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n, "array elements")?.to_vec()),
            ValueType::I8 => Array::I8(fixed(self, n, |b: [u8; 1]| b[0] as i8)?),
            ValueType::U16 => Array::U16(fixed(self, n, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(fixed(self, n, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(fixed(self, n, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(fixed(self, n, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(fixed(self, n, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(fixed(self, n, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(fixed(self, n, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(fixed(self, n, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool()?);
                }
                Array::Bool(v)
            }
            ValueType::String => Array::String(Box::new(self.strings(n)?)),
            ValueType::Array => {
                let first = self.pos;
                self.skip_elements(ValueType::Array, n, depth)?;
                Array::Array(Box::new(ArrayList::in_file(Arc::clone(self.storage), first, n, depth.saturating_add(1))))
            }
        })
    }

    /// `n` strings, left in the file: the array records where each one starts (validated as
    /// UTF-8 here, read in place later).
    fn strings(&mut self, n: usize) -> Result<StringArray> {
        let first = self.pos;
        let mut offsets = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.pos.saturating_sub(first);
            offsets.push(u32::try_from(at).map_err(|_| Error::gguf(self.pos as u64, "a string array larger than 4 GiB"))?);
            self.str("string")?;
        }
        Ok(StringArray::in_file(Arc::clone(self.storage), first, offsets))
    }

    /// One tensor info, validated: rank, dimensions, type, size and offset alignment.
    pub(super) fn tensor_info(&mut self, alignment: u64) -> Result<InfoRef<'a>> {
        let at = self.pos as u64;
        let name = self.str("tensor name")?;
        let rank = self.u32("tensor rank")? as usize;
        if rank == 0 || rank > MAX_DIMS {
            return Err(Error::gguf(at, format!("tensor {name}: rank {rank} (1..={MAX_DIMS} allowed)")));
        }
        let mut dims = [0u64; MAX_DIMS];
        for d in dims.iter_mut().take(rank) {
            *d = self.u64("tensor dimension")?;
            if *d > i64::MAX as u64 {
                return Err(Error::gguf(at, format!("tensor {name}: dimension {d} out of range")));
            }
        }
        let type_id = self.u32("tensor type")?;
        let kind = GgmlType::from_id(type_id)
            .map_err(|_| Error::gguf(at, format!("tensor {name}: unknown ggml type id {type_id}")))?;
        let offset = self.u64("tensor offset")?;
        let size = tensor_size(name, dims.get(..rank).unwrap_or_default(), kind).map_err(|e| Error::gguf(at, e))?;
        if offset.checked_rem(alignment) != Some(0) {
            return Err(Error::gguf(at, format!("tensor {name}: offset {offset} is not a multiple of the alignment {alignment}")));
        }
        Ok(InfoRef { name, dims, rank, kind, offset, size })
    }
}

/// Bytes of a tensor of `dims` and `kind`, with overflow and block-alignment checks. The element
/// count must fit in an `i64` (as in ggml), and so must the product of the non-zero dimensions
/// (a zero dimension makes the size 0, but the other dimensions still become a row count).
fn tensor_size(name: &str, dims: &[u64], kind: GgmlType) -> std::result::Result<u64, String> {
    dims.iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("tensor {name}: dimensions {dims:?} hold more than 2^63 elements"))?;
    let cols = dims.first().copied().unwrap_or(1);
    let block = kind.block_elems() as u64;
    if cols.checked_rem(block) != Some(0) {
        return Err(format!("tensor {name}: {cols} columns is not a multiple of {kind}'s {block}"));
    }
    let mut size = cols
        .checked_div(block)
        .unwrap_or(0)
        .checked_mul(kind.block_bytes() as u64)
        .ok_or_else(|| format!("tensor {name}: size overflows"))?;
    for &d in dims.iter().skip(1) {
        size = size.checked_mul(d).ok_or_else(|| format!("tensor {name}: size overflows"))?;
    }
    Ok(size)
}
