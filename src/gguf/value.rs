//! GGUF metadata values.

use std::sync::Arc;

use super::cursor::Cursor;
use super::storage::Storage;
use crate::error::{Error, Result};

/// The type tag of a GGUF metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    /// u8
    U8 = 0,
    /// i8
    I8 = 1,
    /// u16
    U16 = 2,
    /// i16
    I16 = 3,
    /// u32
    U32 = 4,
    /// i32
    I32 = 5,
    /// f32
    F32 = 6,
    /// bool (one byte, 0 or 1)
    Bool = 7,
    /// u64-length-prefixed UTF-8
    String = 8,
    /// element type, u64 count, elements
    Array = 9,
    /// u64
    U64 = 10,
    /// i64
    I64 = 11,
    /// f64
    F64 = 12,
}

impl ValueType {
    /// The type for a GGUF tag.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in a file (used to bound counts).
    pub fn min_size(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// u8
    U8(u8),
    /// i8
    I8(i8),
    /// u16
    U16(u16),
    /// i16
    I16(i16),
    /// u32
    U32(u32),
    /// i32
    I32(i32),
    /// f32
    F32(f32),
    /// bool
    Bool(bool),
    /// string
    String(String),
    /// array (typed, possibly nested)
    Array(Array),
    /// u64
    U64(u64),
    /// i64
    I64(i64),
    /// f64
    F64(f64),
}

/// An array of strings. Read from a file, it stays in the file's bytes and records only where
/// each string starts (4 bytes a string: a 151k-token vocabulary costs 0.6 MB, not a heap
/// allocation per token); built in code, it holds one buffer of text and where each string ends.
#[derive(Clone)]
pub struct StringArray {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// `text[ends[i-1]..ends[i]]`.
    Owned { text: String, ends: Vec<usize> },
    /// String `i` is the GGUF string (u64 length, bytes) at `first + offsets[i]` of the file.
    InFile { storage: Arc<Storage>, first: usize, offsets: Vec<u32> },
}

impl StringArray {
    /// An empty array with room for `n` strings of `bytes` bytes in all.
    pub fn with_capacity(n: usize, bytes: usize) -> Self {
        Self { repr: Repr::Owned { text: String::with_capacity(bytes), ends: Vec::with_capacity(n) } }
    }

    /// Strings read from a file (validated UTF-8 at `first + offsets[i]`).
    pub(crate) fn in_file(storage: Arc<Storage>, first: usize, offsets: Vec<u32>) -> Self {
        Self { repr: Repr::InFile { storage, first, offsets } }
    }

    /// Appends a string (an array read from a file is copied out first).
    pub fn push(&mut self, s: &str) {
        if let Repr::InFile { .. } = self.repr {
            let mut owned = Self::with_capacity(self.len().saturating_add(1), 0);
            for t in self.iter() {
                owned.push(t);
            }
            *self = owned;
        }
        if let Repr::Owned { text, ends } = &mut self.repr {
            text.push_str(s);
            ends.push(text.len());
        }
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Owned { ends, .. } => ends.len(),
            Repr::InFile { offsets, .. } => offsets.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String `i`, if in range.
    pub fn get(&self, i: usize) -> Option<&str> {
        match &self.repr {
            Repr::Owned { text, ends } => {
                let end = *ends.get(i)?;
                let start = match i {
                    0 => 0,
                    _ => *ends.get(i.checked_sub(1)?)?,
                };
                text.get(start..end)
            }
            Repr::InFile { storage, first, offsets } => {
                let at = first.checked_add(usize::try_from(*offsets.get(i)?).ok()?)?;
                let bytes = storage.bytes();
                let len = u64::from_le_bytes(*bytes.get(at..)?.first_chunk::<8>()?);
                let start = at.checked_add(8)?;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                std::str::from_utf8(bytes.get(start..end)?).ok()
            }
        }
    }

    /// The strings in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
}

impl Default for StringArray {
    fn default() -> Self {
        Self::with_capacity(0, 0)
    }
}

impl PartialEq for StringArray {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for StringArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().take(8)).finish()?;
        if self.len() > 8 { write!(f, " ({} strings)", self.len()) } else { Ok(()) }
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut a = Self::default();
        for s in iter {
            a.push(s.as_ref());
        }
        a
    }
}

/// An array of arrays. Read from a file, it stays in the file's bytes (it records only where its
/// first element starts, and each element is built when asked for, so even a file of a million
/// empty nested arrays costs no heap until read); built in code, it holds its elements.
#[derive(Clone)]
pub struct ArrayList {
    list: List,
}

#[derive(Clone)]
enum List {
    Owned(Vec<Array>),
    /// `len` arrays (validated when the file was parsed), the first at `first`, nested `depth` deep.
    InFile { storage: Arc<Storage>, first: usize, len: usize, depth: usize },
}

impl ArrayList {
    /// Arrays read from a file (validated, `len` of them from `first`, each `depth` deep).
    pub(crate) fn in_file(storage: Arc<Storage>, first: usize, len: usize, depth: usize) -> Self {
        Self { list: List::InFile { storage, first, len, depth } }
    }

    /// Number of arrays.
    pub fn len(&self) -> usize {
        match &self.list {
            List::Owned(v) => v.len(),
            List::InFile { len, .. } => *len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arrays in order (read from the file one at a time, for one read from a file).
    pub fn iter(&self) -> impl Iterator<Item = Array> + '_ {
        let mut file = match &self.list {
            List::InFile { storage, first, depth, .. } => Some((Cursor::at(storage, *first), *depth)),
            List::Owned(_) => None,
        };
        (0..self.len()).map_while(move |i| match (&self.list, &mut file) {
            (List::Owned(v), _) => v.get(i).cloned(),
            (_, Some((c, depth))) => c.array_value(*depth).ok(),
            _ => None,
        })
    }

    /// Array `i`, if in range (a file's list is walked up to it).
    pub fn get(&self, i: usize) -> Option<Array> {
        self.iter().nth(i)
    }
}

impl From<Vec<Array>> for ArrayList {
    fn from(v: Vec<Array>) -> Self {
        Self { list: List::Owned(v) }
    }
}

impl PartialEq for ArrayList {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl std::fmt::Debug for ArrayList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().take(8)).finish()?;
        if self.len() > 8 { write!(f, " ({} arrays)", self.len()) } else { Ok(()) }
    }
}

/// A typed GGUF array.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// u8 elements
    U8(Vec<u8>),
    /// i8 elements
    I8(Vec<i8>),
    /// u16 elements
    U16(Vec<u16>),
    /// i16 elements
    I16(Vec<i16>),
    /// u32 elements
    U32(Vec<u32>),
    /// i32 elements
    I32(Vec<i32>),
    /// f32 elements
    F32(Vec<f32>),
    /// bool elements
    Bool(Vec<bool>),
    /// string elements, stored compactly (boxed: it keeps every array value small)
    String(Box<StringArray>),
    /// nested arrays (boxed, as strings are)
    Array(Box<ArrayList>),
    /// u64 elements
    U64(Vec<u64>),
    /// i64 elements
    I64(Vec<i64>),
    /// f64 elements
    F64(Vec<f64>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Element `i` as an i64 if the array holds integers (any width) and `i` is in range.
    pub fn get_i64(&self, i: usize) -> Option<i64> {
        match self {
            Array::U8(v) => v.get(i).map(|&x| x as i64),
            Array::I8(v) => v.get(i).map(|&x| x as i64),
            Array::U16(v) => v.get(i).map(|&x| x as i64),
            Array::I16(v) => v.get(i).map(|&x| x as i64),
            Array::U32(v) => v.get(i).map(|&x| x as i64),
            Array::I32(v) => v.get(i).map(|&x| x as i64),
            Array::U64(v) => v.get(i).and_then(|&x| i64::try_from(x).ok()),
            Array::I64(v) => v.get(i).copied(),
            _ => None,
        }
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type tag.
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }
}

impl Value {
    /// The type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as a u64, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as an f64, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64).or(match *self {
                Value::I8(v) => Some(v.into()),
                Value::I16(v) => Some(v.into()),
                Value::I32(v) => Some(v.into()),
                Value::I64(v) => Some(v as f64),
                _ => None,
            }),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short human-readable rendering (arrays abbreviated).
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.len() > 80 => format!("{:?}…", &s[..s.floor_char_boundary(80)]),
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{:?}; {}]", a.elem_type(), a.len()),
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
        }
    }
}

/// Looks a key up and requires it to be a non-negative integer.
pub(crate) fn expect_u64(key: &str, v: Option<&Value>) -> Result<Option<u64>> {
    match v {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::Invalid(format!("metadata {key}: expected an unsigned integer, got {:?}", v.value_type()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values stay small: arrays of strings and of arrays are boxed.
    #[test]
    fn values_are_small() {
        assert!(std::mem::size_of::<Array>() <= 32, "{}", std::mem::size_of::<Array>());
        assert!(std::mem::size_of::<Value>() <= 40, "{}", std::mem::size_of::<Value>());
    }
}
