//! KMIP's TTLV encoding (KMIP 1.x spec, section 9.1): every item is a
//! 3-byte tag, a 1-byte type, a 4-byte big-endian length and a value padded
//! to a multiple of 8 bytes. Written by hand because no maintained Rust
//! KMIP crate covers Encrypt/Decrypt (kmip-protocol 0.4.3 is the newest).
//!
//! The decoder is strict (lengths, padding, types, nesting depth, total
//! size) since its input comes from the network.

use std::fmt;

/// Most nested structures accepted in a response.
const MAX_DEPTH: usize = 16;
/// Largest message accepted (a response never needs more here).
pub const MAX_MESSAGE: usize = 1 << 20;

/// A decoded or to-be-encoded value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    Text(String),
    Bytes(Vec<u8>),
    DateTime(i64),
    Interval(u32),
}

/// A tagged item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: u32,
    pub value: Value,
}

/// Byte strings can be key material: they are wiped when the item drops.
impl Drop for Item {
    fn drop(&mut self) {
        if let Value::Bytes(b) | Value::BigInteger(b) = &mut self.value {
            zeroize::Zeroize::zeroize(b);
        }
    }
}

/// Byte strings can be key material: `Debug` prints their length only.
impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Bytes(b) => write!(f, "{:06x}=<{} bytes>", self.tag, b.len()),
            Value::Text(t) => write!(f, "{:06x}={t:?}", self.tag),
            _ => write!(f, "{:06x}={}", self.tag, self.value.scalar()),
        }
    }
}

impl Value {
    fn type_byte(&self) -> u8 {
        match self {
            Value::Structure(_) => 0x01,
            Value::Integer(_) => 0x02,
            Value::LongInteger(_) => 0x03,
            Value::BigInteger(_) => 0x04,
            Value::Enumeration(_) => 0x05,
            Value::Boolean(_) => 0x06,
            Value::Text(_) => 0x07,
            Value::Bytes(_) => 0x08,
            Value::DateTime(_) => 0x09,
            Value::Interval(_) => 0x0A,
        }
    }

    fn scalar(&self) -> i128 {
        match self {
            Value::Integer(v) => *v as i128,
            Value::LongInteger(v) | Value::DateTime(v) => *v as i128,
            Value::Enumeration(v) | Value::Interval(v) => *v as i128,
            Value::Boolean(b) => *b as i128,
            _ => 0,
        }
    }
}

/// Why a message does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TtlvError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown item type 0x{ty:02x} at byte {at}")]
    BadType { ty: u8, at: usize },
    #[error("item of type 0x{ty:02x} at byte {at} has length {len}")]
    BadLength { ty: u8, at: usize, len: u32 },
    #[error("non-zero padding at byte {0}")]
    BadPadding(usize),
    #[error("text at byte {0} is not UTF-8")]
    BadText(usize),
    #[error("structures nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("message of {0} bytes is larger than {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

impl Item {
    pub fn new(tag: u32, value: Value) -> Self {
        Self { tag, value }
    }
    pub fn structure(tag: u32, items: Vec<Item>) -> Self {
        Self::new(tag, Value::Structure(items))
    }
    pub fn int(tag: u32, v: i32) -> Self {
        Self::new(tag, Value::Integer(v))
    }
    pub fn enumeration(tag: u32, v: u32) -> Self {
        Self::new(tag, Value::Enumeration(v))
    }
    pub fn text(tag: u32, v: &str) -> Self {
        Self::new(tag, Value::Text(v.to_string()))
    }
    pub fn bytes(tag: u32, v: &[u8]) -> Self {
        Self::new(tag, Value::Bytes(v.to_vec()))
    }

    /// The children of a structure (empty for a scalar).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(v) => v,
            _ => &[],
        }
    }
    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }
    /// Every child with `tag`.
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag == tag)
    }
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_datetime(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(v) => Some(v),
            _ => None,
        }
    }

    /// The TTLV bytes of this item, in a buffer allocated once at its
    /// final size (no copies of key bytes left behind by growth).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        debug_assert_eq!(out.len(), out.capacity());
        out
    }

    fn encoded_len(&self) -> usize {
        let body = match &self.value {
            Value::Structure(items) => items.iter().map(Item::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_) | Value::DateTime(_) | Value::Boolean(_) => 8,
            Value::BigInteger(b) | Value::Bytes(b) => b.len(),
            Value::Text(t) => t.len(),
        };
        8 + body.next_multiple_of(8)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_byte());
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.encode_into(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(b) => out.extend_from_slice(&(*b as u64).to_be_bytes()),
            Value::BigInteger(b) | Value::Bytes(b) => out.extend_from_slice(b),
            Value::Text(t) => out.extend_from_slice(t.as_bytes()),
        }
        let len = out.len() - start;
        out[len_at..len_at + 4].copy_from_slice(&(len as u32).to_be_bytes());
        out.resize(start + len.next_multiple_of(8), 0);
    }

    /// Decodes exactly one item filling `buf`.
    pub fn decode(buf: &[u8]) -> Result<Item, TtlvError> {
        if buf.len() > MAX_MESSAGE {
            return Err(TtlvError::TooLarge(buf.len()));
        }
        let (item, used) = decode_at(buf, 0, 0)?;
        if used != buf.len() {
            return Err(TtlvError::Trailing(buf.len() - used));
        }
        Ok(item)
    }
}

/// The length a message declares in its first 8 bytes, header included.
pub fn message_len(header: &[u8; 8]) -> usize {
    8 + u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")) as usize
}

fn decode_at(buf: &[u8], at: usize, depth: usize) -> Result<(Item, usize), TtlvError> {
    if depth > MAX_DEPTH {
        return Err(TtlvError::TooDeep);
    }
    let head = buf.get(at..at + 8).ok_or(TtlvError::Truncated(at))?;
    let tag = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let ty = head[3];
    let len = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
    let start = at + 8;
    let end = start
        .checked_add(len as usize)
        .filter(|e| *e <= buf.len())
        .ok_or(TtlvError::Truncated(at))?;
    let padded = start + (len as usize).next_multiple_of(8);
    if ty != 0x01 && padded > buf.len() {
        return Err(TtlvError::Truncated(end));
    }
    let body = &buf[start..end];
    let fixed = |want: u32| {
        if len == want {
            Ok(())
        } else {
            Err(TtlvError::BadLength { ty, at, len })
        }
    };
    let value = match ty {
        0x01 => {
            let mut items = Vec::new();
            let mut p = start;
            while p < end {
                let (item, next) = decode_at(&buf[..end], p, depth + 1)?;
                items.push(item);
                p = next;
            }
            return Ok((Item::new(tag, Value::Structure(items)), end));
        }
        0x02 => fixed(4).map(|_| Value::Integer(i32::from_be_bytes(arr(body))))?,
        0x05 => fixed(4).map(|_| Value::Enumeration(u32::from_be_bytes(arr(body))))?,
        0x0A => fixed(4).map(|_| Value::Interval(u32::from_be_bytes(arr(body))))?,
        0x03 => fixed(8).map(|_| Value::LongInteger(i64::from_be_bytes(arr(body))))?,
        0x09 => fixed(8).map(|_| Value::DateTime(i64::from_be_bytes(arr(body))))?,
        0x06 => {
            fixed(8)?;
            match u64::from_be_bytes(arr(body)) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(TtlvError::BadLength { ty, at, len }),
            }
        }
        0x04 if len % 8 == 0 => Value::BigInteger(body.to_vec()),
        0x07 => Value::Text(
            std::str::from_utf8(body)
                .map_err(|_| TtlvError::BadText(start))?
                .to_string(),
        ),
        0x08 => Value::Bytes(body.to_vec()),
        0x04 => return Err(TtlvError::BadLength { ty, at, len }),
        _ => return Err(TtlvError::BadType { ty, at }),
    };
    if buf[end..padded].iter().any(|b| *b != 0) {
        return Err(TtlvError::BadPadding(end));
    }
    Ok((Item::new(tag, value), padded))
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().expect("length checked")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding examples of the KMIP 1.2 specification, section 9.1.2.
    fn spec_vectors() -> Vec<(Item, &'static str)> {
        vec![
            (Item::int(0x420020, 8), "42002002000000040000000800000000"),
            (
                Item::new(0x420020, Value::LongInteger(123456789000000000)),
                "420020030000000801B69B4BA5749200",
            ),
            (
                Item::new(
                    0x420020,
                    Value::BigInteger(hex::decode("0000000003FD35EB6BC2DF4618080000").unwrap()),
                ),
                "42002004000000100000000003FD35EB6BC2DF4618080000",
            ),
            (
                Item::enumeration(0x420020, 255),
                "4200200500000004000000FF00000000",
            ),
            (
                Item::new(0x420020, Value::Boolean(true)),
                "42002006000000080000000000000001",
            ),
            (
                Item::text(0x420020, "Hello World"),
                "420020070000000B48656C6C6F20576F726C640000000000",
            ),
            (
                Item::bytes(0x420020, &[1, 2, 3]),
                "42002008000000030102030000000000",
            ),
            (
                Item::new(0x420020, Value::DateTime(0x47DA67F8)),
                "42002009000000080000000047DA67F8",
            ),
            (
                Item::new(0x420020, Value::Interval(864000)),
                "4200200A00000004000D2F0000000000",
            ),
            (
                Item::structure(
                    0x420020,
                    vec![Item::enumeration(0x420004, 254), Item::int(0x420005, 255)],
                ),
                "42002001000000204200040500000004000000FE000000004200050200000004000000FF00000000",
            ),
        ]
    }

    #[test]
    fn kmip_spec_examples_encode_and_decode() {
        for (item, hex_want) in spec_vectors() {
            let want = hex::decode(hex_want).unwrap();
            assert_eq!(item.encode(), want, "{item:?}");
            assert_eq!(item.encoded_len(), want.len(), "allocated once");
            assert_eq!(Item::decode(&want).unwrap(), item);
        }
    }

    #[test]
    fn damaged_input_is_refused() {
        let good = hex::decode("420020070000000B48656C6C6F20576F726C640000000000").unwrap();
        assert!(matches!(
            Item::decode(&good[..20]),
            Err(TtlvError::Truncated(_))
        ));
        let mut pad = good.clone();
        pad[23] = 1;
        assert_eq!(Item::decode(&pad), Err(TtlvError::BadPadding(19)));
        let mut ty = good.clone();
        ty[3] = 0x0F;
        assert!(matches!(Item::decode(&ty), Err(TtlvError::BadType { .. })));
        let int = hex::decode("42002002000000050000000800000000").unwrap();
        assert!(matches!(
            Item::decode(&int),
            Err(TtlvError::BadLength { .. })
        ));
        let mut deep = Item::int(0x420001, 1);
        for _ in 0..20 {
            deep = Item::structure(0x420001, vec![deep]);
        }
        assert_eq!(Item::decode(&deep.encode()), Err(TtlvError::TooDeep));
    }

    #[test]
    fn key_bytes_do_not_show_in_debug() {
        let i = Item::structure(0x420043, vec![Item::bytes(0x420043, &[0xAB; 32])]);
        let s = format!("{i:?}");
        assert!(s.contains("<32 bytes>") && !s.contains("ab") && !s.contains("171"));
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Item::decode(&b);
        }
    }
}
