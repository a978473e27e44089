//! The block types a GGUF tensor is stored in: candle's own (`GgmlDType`) and the two
//! IQ4 types candle's reader refuses (IQ4_NL, IQ4_XS), which affectbench decodes itself.
//!
//! Both IQ4 types hold 4-bit indices into ggml's fixed non-linear table of sixteen
//! int8 values, with one scale per 32 values: IQ4_NL a block of 32 with an f16 scale;
//! IQ4_XS a block of 256 with an f16 `d` and eight 6-bit sub-block scales (biased by
//! 32). A value is `d * (ls - 32) * TABLE[q]` (IQ4_XS) or `d * TABLE[q]` (IQ4_NL).
//! GGUF type ids with no decoder here are named (not just numbered) in the error.

use candle_core::quantized::GgmlDType;
use half::f16;
use std::fmt;

/// ggml's non-linear 4-bit code book shared by IQ4_NL and IQ4_XS.
pub const IQ4_TABLE: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// A tensor's storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// A type candle reads and dequantises.
    Candle(GgmlDType),
    /// 32 values: f16 d, 16 bytes of indices.
    Iq4Nl,
    /// 256 values: f16 d, u16 high scale bits, 4 bytes of low scale bits, 128 bytes of
    /// indices.
    Iq4Xs,
}

impl From<GgmlDType> for QuantType {
    fn from(d: GgmlDType) -> Self {
        QuantType::Candle(d)
    }
}

/// GGUF's type ids (ggml.h's `ggml_type`) and their names.
const GGML_TYPE_NAMES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

/// The name ggml gives type id `id`, if it has one.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    GGML_TYPE_NAMES
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, n)| *n)
}

impl QuantType {
    /// The type with GGUF id `id`, or why it cannot be read (naming the type and what
    /// to do instead).
    pub fn from_gguf_id(id: u32) -> Result<Self, String> {
        let candle = match id {
            0 => GgmlDType::F32,
            1 => GgmlDType::F16,
            2 => GgmlDType::Q4_0,
            3 => GgmlDType::Q4_1,
            6 => GgmlDType::Q5_0,
            7 => GgmlDType::Q5_1,
            8 => GgmlDType::Q8_0,
            9 => GgmlDType::Q8_1,
            10 => GgmlDType::Q2K,
            11 => GgmlDType::Q3K,
            12 => GgmlDType::Q4K,
            13 => GgmlDType::Q5K,
            14 => GgmlDType::Q6K,
            15 => GgmlDType::Q8K,
            30 => GgmlDType::BF16,
            20 => return Ok(QuantType::Iq4Nl),
            23 => return Ok(QuantType::Iq4Xs),
            other => {
                let name = ggml_type_name(other).map_or_else(
                    || format!("unknown type {other}"),
                    |n| format!("{n} (type {other})"),
                );
                return Err(format!(
                    "{name} is not a type affectbench reads (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K, IQ4_NL and IQ4_XS); use a file quantised to one of those, e.g. Q4_K_M"
                ));
            }
        };
        Ok(QuantType::Candle(candle))
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            QuantType::Candle(d) => d.block_size(),
            QuantType::Iq4Nl => 32,
            QuantType::Iq4Xs => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            QuantType::Candle(d) => d.type_size(),
            QuantType::Iq4Nl => 18,
            QuantType::Iq4Xs => 136,
        }
    }

    /// Bytes that `elems` values take, if they are whole blocks.
    pub fn bytes_for(self, elems: usize) -> Option<usize> {
        elems
            .is_multiple_of(self.block_size())
            .then(|| (elems / self.block_size()).checked_mul(self.type_size()))
            .flatten()
    }

    /// Whether candle reads this type (otherwise affectbench decodes it).
    pub fn candle(self) -> Option<GgmlDType> {
        match self {
            QuantType::Candle(d) => Some(d),
            _ => None,
        }
    }

    /// The 32-value sub-blocks of whole IQ4 blocks, in order: each one's f16 `d`, the
    /// integer its scale is `d` times (ls - 32 for IQ4_XS, 1 for IQ4_NL) and its 16
    /// bytes of indices (low nibbles the first 16 values, high nibbles the next 16).
    /// Empty for candle's types. The one reader of the IQ4 block layout: the reference
    /// decoder and the packer both go through it.
    pub fn iq4_sub_blocks(self, data: &[u8]) -> impl Iterator<Item = Iq4SubBlock<'_>> {
        let ts = self.type_size();
        let blocks = match self {
            QuantType::Candle(_) => data[..0].chunks_exact(ts),
            _ => data.chunks_exact(ts),
        };
        // A fixed array per block (no allocation: the packer runs this over every
        // weight of the model while loading), of which IQ4_NL uses the first entry.
        let per_block = if self == QuantType::Iq4Xs { 8 } else { 1 };
        blocks.flat_map(move |blk| {
            let d = f16::from_le_bytes([blk[0], blk[1]]);
            let subs: [Iq4SubBlock; 8] = match self {
                QuantType::Iq4Xs => {
                    let ls = iq4xs_scales(blk);
                    std::array::from_fn(|sub| Iq4SubBlock {
                        d,
                        multiplier: ls[sub] as i8 - 32,
                        indices: &blk[8 + 16 * sub..8 + 16 * (sub + 1)],
                    })
                }
                _ => std::array::from_fn(|_| Iq4SubBlock {
                    d,
                    multiplier: 1,
                    indices: &blk[2..18],
                }),
            };
            subs.into_iter().take(per_block)
        })
    }

    /// Dequantises whole blocks of an IQ4 type (the reference decoder; candle's types
    /// go through candle). None for candle's types.
    pub fn dequantize_iq4(self, data: &[u8]) -> Option<Vec<f32>> {
        self.candle().is_none().then(|| {
            let mut out = Vec::with_capacity(data.len() / self.type_size() * self.block_size());
            for sub in self.iq4_sub_blocks(data) {
                push_iq4_values(&mut out, sub.scale(), sub.indices);
            }
            out
        })
    }
}

/// One 32-value IQ4 sub-block as the file holds it.
#[derive(Debug, Clone, Copy)]
pub struct Iq4SubBlock<'a> {
    pub d: f16,
    /// The scale is `d` times this (ls - 32 for IQ4_XS, 1 for IQ4_NL).
    pub multiplier: i8,
    /// 16 bytes: the low nibbles index the first 16 values, the high nibbles the rest.
    pub indices: &'a [u8],
}

impl Iq4SubBlock<'_> {
    /// The scale as ggml computes it (`d * (ls - 32)` in f32).
    pub fn scale(&self) -> f32 {
        self.d.to_f32() * self.multiplier as f32
    }
}

/// The eight 6-bit sub-block scales of an IQ4_XS block (still biased by 32): low four
/// bits from `scales_l` (two per byte), high two from `scales_h` (two bits each).
pub fn iq4xs_scales(blk: &[u8]) -> [u8; 8] {
    let high = u16::from_le_bytes([blk[2], blk[3]]);
    let low = &blk[4..8];
    std::array::from_fn(|sub| {
        let l = (low[sub / 2] >> (4 * (sub % 2))) & 0x0F;
        let h = ((high >> (2 * sub)) & 3) as u8;
        l | (h << 4)
    })
}

/// 32 values of one IQ4 sub-block: the low nibbles of `qs` are the first 16, the high
/// nibbles the next 16.
fn push_iq4_values(out: &mut Vec<f32>, scale: f32, qs: &[u8]) {
    out.extend(
        qs.iter()
            .map(|q| scale * IQ4_TABLE[(q & 0x0F) as usize] as f32),
    );
    out.extend(
        qs.iter()
            .map(|q| scale * IQ4_TABLE[(q >> 4) as usize] as f32),
    );
}

impl fmt::Display for QuantType {
    /// ggml's name for the type (`Q4_K`, `IQ4_XS`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            QuantType::Candle(d) => match d {
                GgmlDType::F32 => "F32",
                GgmlDType::F16 => "F16",
                GgmlDType::BF16 => "BF16",
                GgmlDType::Q4_0 => "Q4_0",
                GgmlDType::Q4_1 => "Q4_1",
                GgmlDType::Q5_0 => "Q5_0",
                GgmlDType::Q5_1 => "Q5_1",
                GgmlDType::Q8_0 => "Q8_0",
                GgmlDType::Q8_1 => "Q8_1",
                GgmlDType::Q2K => "Q2_K",
                GgmlDType::Q3K => "Q3_K",
                GgmlDType::Q4K => "Q4_K",
                GgmlDType::Q5K => "Q5_K",
                GgmlDType::Q6K => "Q6_K",
                GgmlDType::Q8K => "Q8_K",
            },
            QuantType::Iq4Nl => "IQ4_NL",
            QuantType::Iq4Xs => "IQ4_XS",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candle_type_round_trips_through_its_gguf_id_and_name() {
        for (id, name) in GGML_TYPE_NAMES {
            if let Ok(t) = QuantType::from_gguf_id(*id) {
                assert_eq!(t.to_string(), *name, "id {id}");
            }
        }
        assert_eq!(QuantType::from_gguf_id(23), Ok(QuantType::Iq4Xs));
        let err = QuantType::from_gguf_id(16).unwrap_err();
        assert!(err.starts_with("IQ2_XXS (type 16) is not"), "{err}");
        assert!(QuantType::from_gguf_id(99)
            .unwrap_err()
            .contains("unknown type 99"));
    }

    #[test]
    fn iq4xs_scales_take_low_nibbles_then_high_bit_pairs() {
        // Sub-block 0: low 0x5, high 0b10 -> 0x25; sub-block 1: low 0xA, high 0b01 -> 0x1A.
        let mut blk = [0u8; 136];
        blk[2] = 0b0110;
        blk[4] = 0xA5;
        let s = iq4xs_scales(&blk);
        assert_eq!((s[0], s[1], s[2]), (0x25, 0x1A, 0));
    }
}
