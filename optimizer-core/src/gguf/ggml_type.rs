//! The ggml tensor types of llama.cpp build 11434: ids, block sizes and bytes per block.
//!
//! Source: `enum ggml_type` in ggml/include/ggml.h:389-433 and the `type_traits` table in
//! ggml/src/ggml.c:632-946; block structs and their `static_assert`s in ggml/src/ggml-common.h:176-461.

use std::fmt;

use serde::{Serialize, Serializer};

/// A ggml tensor type that llama.cpp 11434 can load from a GGUF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
#[allow(missing_docs)] // the names are ggml's own
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    Bf16,
    Tq1_0,
    Tq2_0,
    Mxfp4,
    Nvfp4,
    Q1_0,
    Q2_0,
}

/// What a GGUF type id means to llama.cpp 11434.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeId {
    /// A type llama.cpp can load.
    Known(GgmlType),
    /// An id that was used once and whose support was removed (4, 5, 31-33, 36-38): llama.cpp
    /// rejects files that still carry it.
    Removed(u32),
    /// An id llama.cpp 11434 does not know (43 and above).
    Unknown(u32),
}

/// (type, id, name as ggml prints it, elements per block, bytes per block, quantized)
const TABLE: [(GgmlType, u32, &str, u64, u64, bool); 35] = [
    (GgmlType::F32, 0, "F32", 1, 4, false),
    (GgmlType::F16, 1, "F16", 1, 2, false),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18, true),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20, true),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22, true),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24, true),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34, true),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36, true),
    (GgmlType::Q2K, 10, "Q2_K", 256, 84, true),
    (GgmlType::Q3K, 11, "Q3_K", 256, 110, true),
    (GgmlType::Q4K, 12, "Q4_K", 256, 144, true),
    (GgmlType::Q5K, 13, "Q5_K", 256, 176, true),
    (GgmlType::Q6K, 14, "Q6_K", 256, 210, true),
    (GgmlType::Q8K, 15, "Q8_K", 256, 292, true),
    (GgmlType::Iq2Xxs, 16, "IQ2_XXS", 256, 66, true),
    (GgmlType::Iq2Xs, 17, "IQ2_XS", 256, 74, true),
    (GgmlType::Iq3Xxs, 18, "IQ3_XXS", 256, 98, true),
    (GgmlType::Iq1S, 19, "IQ1_S", 256, 50, true),
    (GgmlType::Iq4Nl, 20, "IQ4_NL", 32, 18, true),
    (GgmlType::Iq3S, 21, "IQ3_S", 256, 110, true),
    (GgmlType::Iq2S, 22, "IQ2_S", 256, 82, true),
    (GgmlType::Iq4Xs, 23, "IQ4_XS", 256, 136, true),
    (GgmlType::I8, 24, "I8", 1, 1, false),
    (GgmlType::I16, 25, "I16", 1, 2, false),
    (GgmlType::I32, 26, "I32", 1, 4, false),
    (GgmlType::I64, 27, "I64", 1, 8, false),
    (GgmlType::F64, 28, "F64", 1, 8, false),
    (GgmlType::Iq1M, 29, "IQ1_M", 256, 56, true),
    (GgmlType::Bf16, 30, "BF16", 1, 2, false),
    (GgmlType::Tq1_0, 34, "TQ1_0", 256, 54, true),
    (GgmlType::Tq2_0, 35, "TQ2_0", 256, 66, true),
    (GgmlType::Mxfp4, 39, "MXFP4", 32, 17, true),
    (GgmlType::Nvfp4, 40, "NVFP4", 64, 36, true),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18, true),
    (GgmlType::Q2_0, 42, "Q2_0", 64, 18, true),
];

impl GgmlType {
    /// Every type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|row| row.0)
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, u64, u64, bool) {
        // The table holds every variant exactly once (tested below), so the search always succeeds;
        // the fallback to row 0 only keeps this function total.
        TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[0])
    }

    /// Classifies a GGUF type id.
    pub fn from_id(id: u32) -> TypeId {
        match TABLE.iter().find(|row| row.1 == id) {
            Some(row) => TypeId::Known(row.0),
            None if matches!(id, 4 | 5 | 31..=33 | 36..=38) => TypeId::Removed(id),
            None => TypeId::Unknown(id),
        }
    }

    /// The type whose name ggml prints (`"Q4_K"`, `"q8_0"`, `"bf16"`; case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.2.eq_ignore_ascii_case(name)).map(|row| row.0)
    }

    /// The GGUF/ggml type id.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The name ggml prints, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (`blck_size`).
    pub fn block_size(self) -> u64 {
        self.row().3
    }

    /// Bytes per block (`type_size`).
    pub fn type_size(self) -> u64 {
        self.row().4
    }

    /// ggml's `is_quantized` trait: decides the CUDA row padding (ggml-cuda.cu:897-919).
    pub fn is_quantized(self) -> bool {
        self.row().5
    }

    /// Bytes of one row of `ne0` elements (`ggml_row_size`), or `None` if `ne0` is not a multiple of
    /// the block size (llama.cpp rejects such a tensor) or the size overflows.
    pub fn row_size(self, ne0: u64) -> Option<u64> {
        if ne0 % self.block_size() != 0 {
            return None;
        }
        (ne0 / self.block_size()).checked_mul(self.type_size())
    }

    /// Bytes of a contiguous tensor of shape `dims` (ggml order, `ne0` first): `ggml_nbytes`
    /// (ggml.c:1298-1321). `None` if `ne0` is not a multiple of the block size or on overflow.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        let (&ne0, rest) = dims.split_first()?;
        rest.iter().try_fold(self.row_size(ne0)?, |acc, &d| acc.checked_mul(d))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GgmlType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_up_to_the_count_is_classified() {
        let known = (0..43).filter(|&id| matches!(GgmlType::from_id(id), TypeId::Known(_))).count();
        assert_eq!(known, 35);
        for id in [4, 5, 31, 32, 33, 36, 37, 38] {
            assert_eq!(GgmlType::from_id(id), TypeId::Removed(id));
        }
        assert_eq!(GgmlType::from_id(43), TypeId::Unknown(43));
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_id(t.id()), TypeId::Known(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn sizes_match_ggml() {
        // Q4_K {2048, 512, 512}: 2048/256*144 bytes per row
        assert_eq!(GgmlType::Q4K.tensor_bytes(&[2048, 512, 512]), Some(8 * 144 * 512 * 512));
        assert_eq!(GgmlType::Mxfp4.tensor_bytes(&[2880, 2880, 128]), Some(90 * 17 * 2880 * 128));
        assert_eq!(GgmlType::Nvfp4.row_size(128), Some(72));
        assert_eq!(GgmlType::Q1_0.row_size(128), Some(18));
        assert_eq!(GgmlType::Q2_0.row_size(64), Some(18));
        assert_eq!(GgmlType::Q6K.row_size(192), None);
        assert_eq!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]), None);
        assert_eq!(GgmlType::F32.tensor_bytes(&[]), None);
    }
}
