//! The packed int8 weight format: one representation for every GGUF quant type we use.
//!
//! Each ggml block type dequantises as `w = s * u + o` with small unsigned integers `u`
//! per weight and a scale `s` and offset `o` per block, where the file holds `s` as an
//! f16 `d` per super-block times a small integer `sc` per block, and `o` either as a
//! fixed multiple `c` of `s` or as an f16 `dm` per super-block times a small integer `m`:
//!
//! ```text
//!   type     block  blocks/super  u              s = d * sc      o
//!   Q4_0       32        1        q              d               -8 s
//!   Q4_1       32        1        q              d               m (dm = m, m = 1)
//!   Q5_0       32        1        q (5 bits)     d               -16 s
//!   Q8_0       32        1        q + 128        d               -128 s
//!   Q2_K       16       16        q              d * (sc & 15)   -dmin * (sc >> 4)
//!   Q3_K       16       16        q + 4          d * (sc - 32)   -4 s
//!   Q4_K/Q5_K  32        8        q (4/5 bits)   d * sc          -dmin * m
//!   Q6_K       16       16        q + 32         d * sc          -32 s
//!   IQ4_NL     32        1        TABLE[q] + 128 d               -128 s
//!   IQ4_XS     32        8        TABLE[q] + 128 d * (ls - 32)   -128 s
//! ```
//!
//! The format keeps exactly those parts, so it holds a file's weights in about the
//! file's bytes, and the kernel multiplies them out with the f32 products ggml's
//! decoder makes (`d * sc`, `dm * m`, `c * s`): the same bits. `u8 x i8` dot products
//! map onto AVX-512 VNNI (`vpdpbusd`).
//!
//! Layout, in tiles of 16 output rows so one 64-byte load feeds 16 rows x 4 k-values:
//!
//! ```text
//!   qs:     [tile][k/4 groups][16 rows][4 bytes]   u, one byte each, or
//!           [tile][k/8 pairs][16 rows][4 bytes]    the low 4 bits of u, two groups a byte
//!   high:   [tile][k/block][16 rows][4 bytes]      with nibbles: u's bits above 4 (HB
//!                                                  of them), group g of a block at bit
//!                                                  HB*g (a block has 8/HB groups)
//!   d:      [tile][k/super][16 rows]  f16          dm: the same, where o is not c*s
//!   sc:     [tile][k/block][16 rows]  i8           m:  the same, where o is not c*s
//! ```
//! Rows past `n` in the last tile are zero (d 0) and never written out.

use crate::quant::{QuantType, IQ4_TABLE};
use candle_core::quantized::GgmlDType;
use half::f16;

pub const TILE: usize = 16;

/// A weight matrix W (n outputs x k inputs) in the packed int8 format.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    pub n: usize,
    pub k: usize,
    /// Values per block (one `sc` and `m` each): 32, or 16 for Q2_K, Q3_K and Q6_K.
    pub block: usize,
    /// Blocks per super-block (one `d` and `dm` each): a power of two.
    pub blocks_per_super: usize,
    /// The low 4 bits of `u` (or its IQ4 index) are held two groups a byte: group 2G in
    /// the low nibble, 2G+1 in the high one; `high_bits` more bits per value (5- and
    /// 6-bit types) are in the `high` plane. Fewer bytes to hold and to stream.
    pub nibbles: bool,
    /// With `nibbles`: 0, 1 (Q5_0, Q5_K) or 2 (Q6_K).
    pub high_bits: u8,
    /// With `nibbles`: the nibbles are indices into this table of `u` (IQ4's code book,
    /// each value + 128), looked up in the kernel. None: the nibble is `u` itself.
    pub codebook: Option<[u8; 16]>,
    pub(crate) qs: Vec<u8>,
    pub(crate) high: Vec<u8>,
    pub(crate) d: Vec<f16>,
    pub(crate) sc: Vec<i8>,
    /// Empty when `offset_factor` is set.
    pub(crate) dm: Vec<f16>,
    pub(crate) m: Vec<i8>,
    /// Every block's offset is this times its scale (computed, not stored).
    pub offset_factor: Option<f32>,
    /// Every `u` is below 2^u_bits: how many 16-bit products the AVX2 kernel may add
    /// before they could overflow, and whether it needs its signed form (8).
    pub u_bits: u8,
}

/// One row as the file holds it (see the module comment): `u` per value, `d` and `dm`
/// per super-block, `sc` and `m` per block (`dm` and `m` unused where o = c*s).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowParts {
    pub u: Vec<u8>,
    pub d: Vec<f16>,
    pub sc: Vec<i8>,
    pub dm: Vec<f16>,
    pub m: Vec<i8>,
}

impl RowParts {
    fn zeros(k: usize, block: usize, blocks_per_super: usize) -> Self {
        let (nb, ns) = (k / block, k / block / blocks_per_super);
        Self {
            u: vec![0; k],
            d: vec![f16::ZERO; ns],
            sc: vec![0; nb],
            dm: vec![f16::ZERO; ns],
            m: vec![0; nb],
        }
    }
}

/// Why a tensor could not be packed (the caller falls back to candle's matmul).
#[derive(Debug, Clone, PartialEq)]
pub struct Unpackable(pub String);

/// The block size a ggml type packs into and its blocks per super-block, or None if we
/// have no decoder for it.
pub fn packed_blocks(dtype: QuantType) -> Option<(usize, usize)> {
    match dtype {
        QuantType::Iq4Nl => Some((32, 1)),
        QuantType::Iq4Xs => Some((32, 8)),
        QuantType::Candle(
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q8_0,
        ) => Some((32, 1)),
        QuantType::Candle(GgmlDType::Q4K | GgmlDType::Q5K) => Some((32, 8)),
        QuantType::Candle(GgmlDType::Q6K | GgmlDType::Q3K | GgmlDType::Q2K) => Some((16, 16)),
        _ => None,
    }
}

/// The block size a ggml type packs into, or None if we have no decoder for it.
pub fn packed_block(dtype: QuantType) -> Option<usize> {
    packed_blocks(dtype).map(|(block, _)| block)
}

/// How weights whose `u` fits in 4 to 6 bits are held. Nibbles (plus a plane of the
/// bits above 4) bring the memory and the bytes decode streams down to about the file's,
/// but unpacking costs compute-bound prefill about 10% on this project's machine; the
/// results are the same bits either way (the integer sums are exact), so the choice is
/// about speed and memory only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FourBit {
    Nibbles,
    Bytes,
}

impl FourBit {
    /// Nibbles for model files above 1 GiB (where memory and decode bandwidth decide),
    /// bytes below. `--four-bit` (`EngineConfig::four_bit`) overrides it.
    pub fn for_model_bytes(bytes: u64) -> Self {
        if bytes > 1 << 30 {
            FourBit::Nibbles
        } else {
            FourBit::Bytes
        }
    }
}

/// The bits of `u` (or its code book index) above 4 that a nibble layout of the type
/// holds in the `high` plane, or None where it has no nibble layout (Q8_0's 8 bits).
pub fn nibble_high_bits(dtype: QuantType) -> Option<u8> {
    match dtype {
        QuantType::Candle(
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K | GgmlDType::Q3K | GgmlDType::Q2K,
        )
        | QuantType::Iq4Nl
        | QuantType::Iq4Xs => Some(0),
        QuantType::Candle(GgmlDType::Q5_0 | GgmlDType::Q5K) => Some(1),
        QuantType::Candle(GgmlDType::Q6K) => Some(2),
        _ => None,
    }
}

/// The bits `u` takes in a type's packed form (every `u` < 2^bits): 8 where it is a
/// byte offset by 128 (Q8_0, the IQ4 code book).
pub fn u_bits(dtype: QuantType) -> u8 {
    match dtype {
        QuantType::Candle(GgmlDType::Q2K) => 2,
        QuantType::Candle(GgmlDType::Q3K) => 3,
        QuantType::Candle(GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K) => 4,
        QuantType::Candle(GgmlDType::Q5_0 | GgmlDType::Q5K) => 5,
        QuantType::Candle(GgmlDType::Q6K) => 6,
        _ => 8,
    }
}

/// The c of types whose every offset is c times the scale (see the module comment).
pub fn offset_factor(dtype: QuantType) -> Option<f32> {
    match dtype {
        QuantType::Candle(GgmlDType::Q4_0) => Some(-8.0),
        QuantType::Candle(GgmlDType::Q5_0) => Some(-16.0),
        QuantType::Candle(GgmlDType::Q8_0) | QuantType::Iq4Nl | QuantType::Iq4Xs => Some(-128.0),
        QuantType::Candle(GgmlDType::Q6K) => Some(-32.0),
        QuantType::Candle(GgmlDType::Q3K) => Some(-4.0),
        _ => None,
    }
}

/// The table from a type's 4-bit index to `u`, for types whose values are a code book
/// (IQ4: ggml's int8 values + 128); None where the decoded value is `u` itself.
pub fn codebook(dtype: QuantType) -> Option<[u8; 16]> {
    matches!(dtype, QuantType::Iq4Nl | QuantType::Iq4Xs)
        .then(|| IQ4_TABLE.map(|v| (v as i16 + 128) as u8))
}

/// Bytes of `qs` per tile for k inputs.
fn tile_bytes(k: usize, nibbles: bool) -> usize {
    if nibbles {
        TILE * k / 2
    } else {
        TILE * k
    }
}

/// The shape of one packed matrix's arrays, which every constructor and reader shares.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    k: usize,
    block: usize,
    blocks_per_super: usize,
    nibbles: bool,
    high_bits: u8,
    derived: bool,
}

impl Shape {
    fn blocks(&self) -> usize {
        self.k / self.block
    }
    fn supers(&self) -> usize {
        self.blocks() / self.blocks_per_super
    }
    fn qs_per_tile(&self) -> usize {
        tile_bytes(self.k, self.nibbles)
    }
    fn high_per_tile(&self) -> usize {
        if self.high_bits > 0 {
            self.blocks() * TILE * 4
        } else {
            0
        }
    }
    fn offsets_per_tile(&self) -> (usize, usize) {
        if self.derived {
            (0, 0)
        } else {
            (self.supers() * TILE, self.blocks() * TILE)
        }
    }
}

/// Mutable views of a run of whole tiles of every array (what one packing thread owns).
struct TilesMut<'a> {
    qs: &'a mut [u8],
    high: &'a mut [u8],
    d: &'a mut [f16],
    sc: &'a mut [i8],
    dm: &'a mut [f16],
    m: &'a mut [i8],
}

impl<'a> TilesMut<'a> {
    /// Splits off the first `tiles` tiles.
    fn split(self, shape: &Shape, tiles: usize) -> (TilesMut<'a>, TilesMut<'a>) {
        let (dm_per, m_per) = shape.offsets_per_tile();
        let (qs, qs_rest) = self.qs.split_at_mut(tiles * shape.qs_per_tile());
        let (high, high_rest) = self.high.split_at_mut(tiles * shape.high_per_tile());
        let (d, d_rest) = self.d.split_at_mut(tiles * shape.supers() * TILE);
        let (sc, sc_rest) = self.sc.split_at_mut(tiles * shape.blocks() * TILE);
        let (dm, dm_rest) = self.dm.split_at_mut(tiles * dm_per);
        let (m, m_rest) = self.m.split_at_mut(tiles * m_per);
        (
            TilesMut {
                qs,
                high,
                d,
                sc,
                dm,
                m,
            },
            TilesMut {
                qs: qs_rest,
                high: high_rest,
                d: d_rest,
                sc: sc_rest,
                dm: dm_rest,
                m: m_rest,
            },
        )
    }

    /// Writes row `r` (counted from the start of these tiles) into the tiled layout.
    fn place_row(&mut self, shape: &Shape, r: usize, row: &RowParts) {
        let (t, lane) = (r / TILE, r % TILE);
        let (k, nb, ns) = (shape.k, shape.blocks(), shape.supers());
        let u = &row.u;
        if shape.nibbles {
            let pairs = k / 8;
            for pair in 0..pairs {
                let at = ((t * pairs + pair) * TILE + lane) * 4;
                for j in 0..4 {
                    self.qs[at + j] =
                        (u[pair * 8 + j] & 0x0F) | ((u[pair * 8 + 4 + j] & 0x0F) << 4);
                }
            }
            if shape.high_bits > 0 {
                let groups_per_block = shape.block / 4;
                for g in 0..k / 4 {
                    let (b, in_block) = (g / groups_per_block, g % groups_per_block);
                    let at = ((t * nb + b) * TILE + lane) * 4;
                    for j in 0..4 {
                        let bits = u[g * 4 + j] >> 4;
                        self.high[at + j] |= bits << (shape.high_bits as usize * in_block);
                    }
                }
            }
        } else {
            let groups = k / 4;
            for g in 0..groups {
                let at = ((t * groups + g) * TILE + lane) * 4;
                self.qs[at..at + 4].copy_from_slice(&u[g * 4..g * 4 + 4]);
            }
        }
        for s in 0..ns {
            let at = (t * ns + s) * TILE + lane;
            self.d[at] = row.d[s];
            if !shape.derived {
                self.dm[at] = row.dm[s];
            }
        }
        for b in 0..nb {
            let at = (t * nb + b) * TILE + lane;
            self.sc[at] = row.sc[b];
            if !shape.derived {
                self.m[at] = row.m[b];
            }
        }
    }
}

impl PackedMatrix {
    pub fn n_tiles(&self) -> usize {
        self.n.div_ceil(TILE)
    }

    pub fn blocks_per_row(&self) -> usize {
        self.k / self.block
    }

    pub fn supers_per_row(&self) -> usize {
        self.blocks_per_row() / self.blocks_per_super
    }

    /// Bytes of `qs` per tile.
    pub fn tile_bytes(&self) -> usize {
        tile_bytes(self.k, self.nibbles)
    }

    fn shape(&self) -> Shape {
        Shape {
            k: self.k,
            block: self.block,
            blocks_per_super: self.blocks_per_super,
            nibbles: self.nibbles,
            high_bits: self.high_bits,
            derived: self.offset_factor.is_some(),
        }
    }

    /// `u` of row `lane` of tile `t` at input 4g + j (the layout's one reader outside
    /// the SIMD kernel).
    #[inline]
    pub fn u_at(&self, t: usize, lane: usize, g: usize, j: usize) -> u8 {
        if self.nibbles {
            let at = ((t * (self.k / 8) + g / 2) * TILE + lane) * 4 + j;
            let nibble = if g.is_multiple_of(2) {
                self.qs[at] & 0x0F
            } else {
                self.qs[at] >> 4
            };
            if self.high_bits > 0 {
                let groups_per_block = self.block / 4;
                let (b, in_block) = (g / groups_per_block, g % groups_per_block);
                let at = ((t * self.blocks_per_row() + b) * TILE + lane) * 4 + j;
                let hb = self.high_bits as usize;
                let bits = (self.high[at] >> (hb * in_block)) & ((1 << hb) - 1);
                return nibble | (bits << 4);
            }
            self.codebook.map_or(nibble, |cb| cb[nibble as usize])
        } else {
            self.qs[((t * (self.k / 4) + g) * TILE + lane) * 4 + j]
        }
    }

    /// The scale of block `b` of row `lane` in tile `t`: d * sc, the decoder's product.
    #[inline]
    pub fn scale_at(&self, t: usize, b: usize, lane: usize) -> f32 {
        let nb = self.blocks_per_row();
        let d = self.d[(t * self.supers_per_row() + b / self.blocks_per_super) * TILE + lane];
        d.to_f32() * self.sc[(t * nb + b) * TILE + lane] as f32
    }

    /// The offset of block `b` of row `lane` in tile `t`: c * s or dm * m.
    #[inline]
    pub fn offset_at(&self, t: usize, b: usize, lane: usize) -> f32 {
        match self.offset_factor {
            Some(c) => c * self.scale_at(t, b, lane),
            None => {
                let nb = self.blocks_per_row();
                let dm =
                    self.dm[(t * self.supers_per_row() + b / self.blocks_per_super) * TILE + lane];
                dm.to_f32() * self.m[(t * nb + b) * TILE + lane] as f32
            }
        }
    }

    /// Bytes of weight data read per full pass (what decode streams from memory).
    pub fn storage_bytes(&self) -> usize {
        self.qs.len()
            + self.high.len()
            + 2 * (self.d.len() + self.dm.len())
            + self.sc.len()
            + self.m.len()
    }

    /// Whether an n x k matrix of `dtype` packs (its packed block size), or why not:
    /// the one rule `from_ggml` and `models inspect` share.
    pub fn packable(dtype: impl Into<QuantType>, n: usize, k: usize) -> Result<usize, Unpackable> {
        let dtype = dtype.into();
        let block = packed_block(dtype)
            .ok_or_else(|| Unpackable(format!("no packed decoder for {dtype}")))?;
        if n == 0 || k == 0 {
            return Err(Unpackable(format!("a {n}x{k} matrix has no elements")));
        }
        if !k.is_multiple_of(dtype.block_size()) || !k.is_multiple_of(4) {
            return Err(Unpackable(format!(
                "k = {k} is not a multiple of the block size"
            )));
        }
        Ok(block)
    }

    /// Packs a row-major ggml tensor (n rows of k values) from its raw bytes.
    pub fn from_ggml(
        dtype: impl Into<QuantType>,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<Self, Unpackable> {
        let threads = crate::kernels::pool::pool().threads();
        Self::from_ggml_on(dtype.into(), data, n, k, threads)
    }

    /// `from_ggml` on `threads` threads (the result does not depend on it).
    fn from_ggml_on(
        dtype: QuantType,
        data: &[u8],
        n: usize,
        k: usize,
        threads: usize,
    ) -> Result<Self, Unpackable> {
        Self::stacked_on(&[(dtype, data, n)], k, threads, true)
    }

    /// `from_ggml` with one byte per weight whatever the type: the reference the
    /// nibble layout is compared with.
    pub fn from_ggml_bytes(
        dtype: impl Into<QuantType>,
        data: &[u8],
        n: usize,
        k: usize,
    ) -> Result<Self, Unpackable> {
        Self::stacked_on(&[(dtype.into(), data, n)], k, 1, false)
    }

    /// Packs matrices with the same k straight into one stacked matrix (the rows of the
    /// first, then the second ...), as `concat_rows` of each packed alone would give,
    /// without holding both copies: fused q/k/v and gate/up are most of a model's
    /// weights. Every part but the last must be whole tiles, and all share a block size.
    pub fn from_ggml_stacked(
        parts: &[(QuantType, &[u8], usize)],
        k: usize,
        four_bit: FourBit,
    ) -> Result<Self, Unpackable> {
        let threads = crate::kernels::pool::pool().threads();
        Self::stacked_on(parts, k, threads, four_bit == FourBit::Nibbles)
    }

    fn stacked_on(
        parts: &[(QuantType, &[u8], usize)],
        k: usize,
        threads: usize,
        allow_nibbles: bool,
    ) -> Result<Self, Unpackable> {
        let Some(&(first_type, _, _)) = parts.first() else {
            return Err(Unpackable("nothing to pack".into()));
        };
        Self::packable(first_type, parts[0].2, k)?;
        let blocks = packed_blocks(first_type).expect("packable");
        for (i, &(dtype, data, n)) in parts.iter().enumerate() {
            Self::packable(dtype, n, k)?;
            if packed_blocks(dtype) != Some(blocks) {
                return Err(Unpackable(format!(
                    "{dtype} packs in blocks other than {first_type}'s"
                )));
            }
            if i + 1 < parts.len() && !n.is_multiple_of(TILE) {
                return Err(Unpackable(format!("{n} rows is not whole tiles")));
            }
            let row_bytes = k / dtype.block_size() * dtype.type_size();
            if data.len() != row_bytes * n {
                return Err(Unpackable(format!(
                    "expected {} bytes for {n}x{k} {dtype}, got {}",
                    row_bytes * n,
                    data.len()
                )));
            }
        }
        let (block, blocks_per_super) = blocks;
        if !k.is_multiple_of(block * blocks_per_super) {
            return Err(Unpackable(format!(
                "k = {k} is not a multiple of the super-block size"
            )));
        }
        // Nibbles only where every part's nibble means the same (all plain, or all one
        // code book) and has as many bits above it.
        let high_bits = nibble_high_bits(first_type);
        let nibbles = allow_nibbles
            && k.is_multiple_of(8)
            && high_bits.is_some()
            && parts.iter().all(|&(dtype, _, _)| {
                nibble_high_bits(dtype) == high_bits && codebook(dtype) == codebook(first_type)
            });
        let factor = offset_factor(first_type)
            .filter(|&c| parts.iter().all(|&(d, _, _)| offset_factor(d) == Some(c)));
        let total = parts.iter().map(|p| p.2).sum();
        let shape = Shape {
            k,
            block,
            blocks_per_super,
            nibbles,
            high_bits: if nibbles { high_bits.unwrap_or(0) } else { 0 },
            derived: factor.is_some(),
        };
        let mut m = Self::zeros(total, shape);
        m.offset_factor = factor;
        m.u_bits = parts
            .iter()
            .map(|&(dtype, _, _)| u_bits(dtype))
            .max()
            .unwrap_or(8);
        if nibbles {
            m.codebook = codebook(first_type);
        }
        let mut rest = m.tiles_mut();
        for &(dtype, data, n) in parts {
            let (these, after) = rest.split(&shape, n.div_ceil(TILE));
            pack_tiles(dtype, data, n, &shape, threads, these)?;
            rest = after;
        }
        Ok(m)
    }

    fn tiles_mut(&mut self) -> TilesMut<'_> {
        TilesMut {
            qs: &mut self.qs,
            high: &mut self.high,
            d: &mut self.d,
            sc: &mut self.sc,
            dm: &mut self.dm,
            m: &mut self.m,
        }
    }

    /// The same matrix with every offset stored: the reference the derived offsets are
    /// compared with. Each c is a power of two, so c*d is exact in f16 (below its
    /// overflow) and (c*d)*sc is the bits of c*(d*sc).
    pub fn with_stored_offsets(&self) -> Self {
        let mut m = self.clone();
        if let Some(c) = m.offset_factor.take() {
            m.dm = m.d.iter().map(|&d| f16::from_f32(c * d.to_f32())).collect();
            assert!(
                m.dm.iter()
                    .zip(&m.d)
                    .all(|(dm, d)| dm.to_f32() == c * d.to_f32()),
                "c*d is not exact in f16"
            );
            m.m = m.sc.clone();
        }
        m
    }

    fn zeros(n: usize, shape: Shape) -> Self {
        let tiles = n.div_ceil(TILE);
        let (dm_per, m_per) = shape.offsets_per_tile();
        Self {
            n,
            k: shape.k,
            block: shape.block,
            blocks_per_super: shape.blocks_per_super,
            nibbles: shape.nibbles,
            high_bits: shape.high_bits,
            codebook: None,
            qs: vec![0; tiles * shape.qs_per_tile()],
            high: vec![0; tiles * shape.high_per_tile()],
            d: vec![f16::ZERO; tiles * shape.supers() * TILE],
            sc: vec![0; tiles * shape.blocks() * TILE],
            dm: vec![f16::ZERO; tiles * dm_per],
            m: vec![0; tiles * m_per],
            offset_factor: None,
            u_bits: 8,
        }
    }

    /// Stacks matrices with the same k and format along the output dimension (fused
    /// QKV, gate+up), so one pass over the activations feeds them all.
    pub fn concat_rows(parts: &[&PackedMatrix]) -> Option<PackedMatrix> {
        let first = parts.first()?;
        let shape = first.shape();
        if parts.iter().any(|p| {
            p.shape() != shape
                || p.codebook != first.codebook
                || p.offset_factor != first.offset_factor
        }) {
            return None;
        }
        let n = parts.iter().map(|p| p.n).sum();
        let u_bits = parts.iter().map(|p| p.u_bits).max().unwrap_or(8);
        let mut out = Self::zeros(0, shape);
        out.n = n;
        out.codebook = first.codebook;
        out.offset_factor = first.offset_factor;
        out.u_bits = u_bits;
        // Parts made of whole tiles (every q/k/v and gate/up of real models) append
        // their tiles as they are; otherwise rows move one by one.
        let (head, _) = parts.split_at(parts.len() - 1);
        if head.iter().all(|p| p.n.is_multiple_of(TILE)) {
            for p in parts {
                out.qs.extend_from_slice(&p.qs);
                out.high.extend_from_slice(&p.high);
                out.d.extend_from_slice(&p.d);
                out.sc.extend_from_slice(&p.sc);
                out.dm.extend_from_slice(&p.dm);
                out.m.extend_from_slice(&p.m);
            }
            return Some(out);
        }
        let mut out = Self::zeros(n, shape);
        out.codebook = first.codebook;
        out.offset_factor = first.offset_factor;
        out.u_bits = u_bits;
        let mut tiles = out.tiles_mut();
        let mut r0 = 0;
        for p in parts {
            for r in 0..p.n {
                let mut row = p.row_parts(r);
                if let Some(cb) = first.codebook {
                    // The layout holds indices: map each `u` back to its code.
                    for v in &mut row.u {
                        *v = cb.iter().position(|c| c == v).expect("u from this table") as u8;
                    }
                }
                tiles.place_row(&shape, r0 + r, &row);
            }
            r0 += p.n;
        }
        Some(out)
    }

    /// Row r as the parts the file holds (`u` decoded through the code book): the
    /// inverse of packing.
    pub fn row_parts(&self, r: usize) -> RowParts {
        let (t, lane) = (r / TILE, r % TILE);
        let (nb, ns) = (self.blocks_per_row(), self.supers_per_row());
        let mut row = RowParts::zeros(self.k, self.block, self.blocks_per_super);
        for g in 0..self.k / 4 {
            for j in 0..4 {
                row.u[g * 4 + j] = self.u_at(t, lane, g, j);
            }
        }
        for s in 0..ns {
            row.d[s] = self.d[(t * ns + s) * TILE + lane];
            if self.offset_factor.is_none() {
                row.dm[s] = self.dm[(t * ns + s) * TILE + lane];
            }
        }
        for b in 0..nb {
            row.sc[b] = self.sc[(t * nb + b) * TILE + lane];
            if self.offset_factor.is_none() {
                row.m[b] = self.m[(t * nb + b) * TILE + lane];
            }
        }
        row
    }

    /// Row r as (u, scales, offsets), each scale and offset the f32 the kernel uses.
    pub fn row(&self, r: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let (t, lane) = (r / TILE, r % TILE);
        let nb = self.blocks_per_row();
        let u = self.row_parts(r).u;
        let s = (0..nb).map(|b| self.scale_at(t, b, lane)).collect();
        let o = (0..nb).map(|b| self.offset_at(t, b, lane)).collect();
        (u, s, o)
    }

    /// Row r dequantised to f32 (tests and the embedding table use this).
    pub fn dequantize_row(&self, r: usize) -> Vec<f32> {
        let (u, s, o) = self.row(r);
        u.iter()
            .enumerate()
            .map(|(j, &q)| s[j / self.block] * q as f32 + o[j / self.block])
            .collect()
    }
}

/// Decodes the n rows of `data` into tiled slices that start at a tile boundary.
/// Tiles are independent (each holds its 16 rows' values and scales), so they are
/// decoded in parallel, a contiguous run of tiles per thread: loading a large model is
/// mostly this loop.
fn pack_tiles(
    dtype: QuantType,
    data: &[u8],
    n: usize,
    shape: &Shape,
    threads: usize,
    mut out: TilesMut<'_>,
) -> Result<(), Unpackable> {
    let row_bytes = shape.k / dtype.block_size() * dtype.type_size();
    // Code book types decode to indices: nibbles keep them, bytes hold their `u`.
    let to_u = codebook(dtype).filter(|_| !shape.nibbles);
    let tiles = n.div_ceil(TILE);
    let threads = threads.clamp(1, tiles);
    let per = tiles.div_ceil(threads);
    let mut chunks = Vec::with_capacity(threads);
    for c in 0..threads {
        let take = per.min(tiles - (c * per).min(tiles));
        let (these, rest) = out.split(shape, take);
        chunks.push(these);
        out = rest;
    }
    // A type whose offsets are c*s, stacked with one whose are not (or another c), stores
    // them: dm = c*d (exact in f16 for any real scale, as c is a power of two; checked)
    // and m = sc, whose product is the bits of c*s.
    let store_factor = offset_factor(dtype).filter(|_| !shape.derived);
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(c, mut chunk)| {
                scope.spawn(move || {
                    let mut row = RowParts::zeros(shape.k, shape.block, shape.blocks_per_super);
                    let first_row = c * per * TILE;
                    for r in first_row..(first_row + per * TILE).min(n) {
                        decode_row(dtype, &data[r * row_bytes..(r + 1) * row_bytes], &mut row);
                        if let Some(cb) = to_u {
                            row.u.iter_mut().for_each(|v| *v = cb[*v as usize]);
                        }
                        if let Some(c) = store_factor {
                            for (dm, d) in row.dm.iter_mut().zip(&row.d) {
                                *dm = f16::from_f32(c * d.to_f32());
                                if dm.to_f32() != c * d.to_f32() {
                                    return Err(Unpackable(format!(
                                        "row {r}: the offset {c} x {d} does not fit an f16"
                                    )));
                                }
                            }
                            row.m.copy_from_slice(&row.sc);
                        }
                        chunk.place_row(shape, r - first_row, &row);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a packing thread panicked"))
    })
}

fn h(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Decodes one row of ggml blocks into its parts (see the module comment; for code
/// book types, u is the index into `codebook(dtype)`).
fn decode_row(dtype: QuantType, data: &[u8], row: &mut RowParts) {
    let ts = dtype.type_size();
    let RowParts { u, d, sc, dm, m } = row;
    let QuantType::Candle(ggml) = dtype else {
        // IQ4_XS: eight sub-blocks per super-block of one d; IQ4_NL: one.
        let per_super = sc.len() / d.len();
        for (i, sub) in dtype.iq4_sub_blocks(data).enumerate() {
            for j in 0..16 {
                u[i * 32 + j] = sub.indices[j] & 0x0F;
                u[i * 32 + j + 16] = sub.indices[j] >> 4;
            }
            d[i / per_super] = sub.d;
            sc[i] = sub.multiplier;
        }
        return;
    };
    for (bi, blk) in data.chunks_exact(ts).enumerate() {
        match ggml {
            GgmlDType::Q4_0 | GgmlDType::Q4_1 => {
                let at = if ggml == GgmlDType::Q4_1 { 4 } else { 2 };
                for j in 0..16 {
                    u[bi * 32 + j] = blk[at + j] & 0x0F;
                    u[bi * 32 + j + 16] = blk[at + j] >> 4;
                }
                (d[bi], sc[bi]) = (h(blk, 0), 1);
                if ggml == GgmlDType::Q4_1 {
                    (dm[bi], m[bi]) = (h(blk, 2), 1);
                }
            }
            GgmlDType::Q5_0 => {
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let hi0 = (((qh >> j) << 4) & 0x10) as u8;
                    let hi1 = ((qh >> (j + 12)) & 0x10) as u8;
                    u[bi * 32 + j] = (blk[6 + j] & 0x0F) | hi0;
                    u[bi * 32 + j + 16] = (blk[6 + j] >> 4) | hi1;
                }
                (d[bi], sc[bi]) = (h(blk, 0), 1);
            }
            GgmlDType::Q8_0 => {
                for j in 0..32 {
                    u[bi * 32 + j] = (blk[2 + j] as i8 as i16 + 128) as u8;
                }
                (d[bi], sc[bi]) = (h(blk, 0), 1);
            }
            GgmlDType::Q4K => {
                // 256 values: d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
                k4_scales(blk, bi, d, sc, dm, m);
                let qs = &blk[16..144];
                for j in 0..4 {
                    for l in 0..32 {
                        u[bi * 256 + 64 * j + l] = qs[32 * j + l] & 0x0F;
                        u[bi * 256 + 64 * j + 32 + l] = qs[32 * j + l] >> 4;
                    }
                }
            }
            GgmlDType::Q5K => {
                // 256 values: d, dmin, 12 bytes of 6-bit scales/mins, qh[32] (the fifth
                // bit, two sub-blocks per bit pair), qs[128] (nibbles).
                k4_scales(blk, bi, d, sc, dm, m);
                let qh = &blk[16..48];
                let qs = &blk[48..176];
                for j in 0..4 {
                    let (bit1, bit2) = (1u8 << (2 * j), 2u8 << (2 * j));
                    for l in 0..32 {
                        let hi1 = if qh[l] & bit1 != 0 { 16 } else { 0 };
                        let hi2 = if qh[l] & bit2 != 0 { 16 } else { 0 };
                        u[bi * 256 + 64 * j + l] = (qs[32 * j + l] & 0x0F) | hi1;
                        u[bi * 256 + 64 * j + 32 + l] = (qs[32 * j + l] >> 4) | hi2;
                    }
                }
            }
            GgmlDType::Q3K => {
                // 256 values: hmask[32] (the third bit, set means +0, clear means -4),
                // qs[64] (2 bits), scales[12] (sixteen 6-bit scales, biased by 32), d.
                let hmask = &blk[0..32];
                let qs = &blk[32..96];
                d[bi] = h(blk, 108);
                let scales = q3k_scales(&blk[96..108]);
                for half in 0..2 {
                    let q = &qs[32 * half..];
                    for j in 0..4 {
                        let shift = 2 * j;
                        let mask = 1u8 << (4 * half + j);
                        for part in 0..2 {
                            let is = 8 * half + 2 * j + part;
                            let sub = bi * 16 + is;
                            sc[sub] = scales[is] as i8 - 32;
                            for l in 0..16 {
                                let at = 16 * part + l;
                                let low = (q[at] >> shift) & 3;
                                let high = if hmask[at] & mask != 0 { 4 } else { 0 };
                                u[sub * 16 + l] = low | high;
                            }
                        }
                    }
                }
            }
            GgmlDType::Q2K => {
                // 256 values: scales[16] (scale low nibble, min high nibble), qs[64]
                // (2 bits), d, dmin.
                let scales = &blk[0..16];
                let qs = &blk[16..80];
                (d[bi], dm[bi]) = (h(blk, 80), -h(blk, 82));
                for half in 0..2 {
                    let q = &qs[32 * half..];
                    for j in 0..4 {
                        let shift = 2 * j;
                        for part in 0..2 {
                            let is = 8 * half + 2 * j + part;
                            let sub = bi * 16 + is;
                            sc[sub] = (scales[is] & 0x0F) as i8;
                            m[sub] = (scales[is] >> 4) as i8;
                            for l in 0..16 {
                                u[sub * 16 + l] = (q[16 * part + l] >> shift) & 3;
                            }
                        }
                    }
                }
            }
            GgmlDType::Q6K => {
                // 256 values: ql[128], qh[64], scales[16] (i8), d.
                let ql = &blk[0..128];
                let qh = &blk[128..192];
                let scales = &blk[192..208];
                d[bi] = h(blk, 208);
                for half in 0..2 {
                    let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
                    let base = bi * 256 + 128 * half;
                    for l in 0..32 {
                        u[base + l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                        u[base + l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                        u[base + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        u[base + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                }
                // 16 sub-blocks of 16 values, in output order.
                for (i, &scale) in scales.iter().enumerate() {
                    sc[bi * 16 + i] = scale as i8;
                }
            }
            _ => unreachable!("packed_block() filters unsupported types"),
        }
    }
}

/// ggml's unpacking of Q3_K's sixteen 6-bit scales (still biased by 32) from 12 bytes.
fn q3k_scales(packed: &[u8]) -> [u8; 16] {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let aux = [
        (a0 & k2) | ((tmp & k1) << 4),
        (a1 & k2) | (((tmp >> 2) & k1) << 4),
        ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
        ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
    ];
    let mut out = [0u8; 16];
    for (i, w) in aux.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Super-block `bi` of a Q4_K or Q5_K row (both start with d, dmin and twelve bytes of
/// 6-bit scales and mins): s = d*sc and o = -dmin*m for its eight 32-value blocks.
fn k4_scales(blk: &[u8], bi: usize, d: &mut [f16], sc: &mut [i8], dm: &mut [f16], m: &mut [i8]) {
    (d[bi], dm[bi]) = (h(blk, 0), -h(blk, 2));
    for sub in 0..8 {
        let (scale, min) = scale_min_k4(sub, &blk[4..16]);
        (sc[bi * 8 + sub], m[bi * 8 + sub]) = (scale as i8, min as i8);
    }
}

/// ggml's unpacking of the 6-bit scale and min of Q4_K sub-block j.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn quantised(n: usize, k: usize, dtype: GgmlDType, seed: f32) -> Vec<u8> {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 1.7).fract())
            .collect();
        let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&t, dtype)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    type Arrays = (Vec<u8>, Vec<u8>, Vec<f16>, Vec<i8>, Vec<f16>, Vec<i8>);

    fn arrays(p: &PackedMatrix) -> Arrays {
        (
            p.qs.clone(),
            p.high.clone(),
            p.d.clone(),
            p.sc.clone(),
            p.dm.clone(),
            p.m.clone(),
        )
    }

    fn rows(m: &PackedMatrix) -> Vec<(Vec<u8>, Vec<f32>, Vec<f32>)> {
        (0..m.n).map(|r| m.row(r)).collect()
    }

    #[test]
    fn packing_in_parallel_equals_packing_on_one_thread() {
        // 37 rows: three tiles, the last one partial.
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
            let data = quantised(37, 256, dtype, 1.0);
            let one = PackedMatrix::from_ggml_on(dtype.into(), &data, 37, 256, 1).unwrap();
            for threads in [2, 3, 8] {
                let many =
                    PackedMatrix::from_ggml_on(dtype.into(), &data, 37, 256, threads).unwrap();
                assert_eq!(arrays(&one), arrays(&many), "{dtype:?} {threads}");
            }
        }
    }

    #[test]
    fn packing_stacked_equals_packing_alone_then_stacking() {
        let (qa, qb) = (
            quantised(32, 256, GgmlDType::Q4K, 4.0),
            quantised(21, 256, GgmlDType::Q5K, 5.0),
        );
        // Q5_K's u needs 5 bits, so the stack is bytes throughout.
        let a = PackedMatrix::from_ggml_bytes(GgmlDType::Q4K, &qa, 32, 256).unwrap();
        let b = PackedMatrix::from_ggml_bytes(GgmlDType::Q5K, &qb, 21, 256).unwrap();
        let alone = PackedMatrix::concat_rows(&[&a, &b]).unwrap();
        for threads in [1, 3] {
            let stacked = PackedMatrix::stacked_on(
                &[
                    (GgmlDType::Q4K.into(), &qa, 32),
                    (GgmlDType::Q5K.into(), &qb, 21),
                ],
                256,
                threads,
                true,
            )
            .unwrap();
            assert_eq!(stacked.n, alone.n);
            assert_eq!(arrays(&stacked), arrays(&alone));
        }
        // Types whose offsets are different multiples of the scale (Q5_0's -16, Q8_0's
        // -128: a q/k/v stack of Qwen2.5's Q5_0 file) stack with their offsets stored.
        let (q5, q8) = (
            quantised(32, 256, GgmlDType::Q5_0, 7.0),
            quantised(21, 256, GgmlDType::Q8_0, 8.0),
        );
        for nibbles in [false, true] {
            let stacked = PackedMatrix::stacked_on(
                &[
                    (GgmlDType::Q5_0.into(), &q5, 32),
                    (GgmlDType::Q8_0.into(), &q8, 21),
                ],
                256,
                2,
                nibbles,
            )
            .unwrap();
            assert!(stacked.offset_factor.is_none());
            let a = PackedMatrix::from_ggml_bytes(GgmlDType::Q5_0, &q5, 32, 256).unwrap();
            let b = PackedMatrix::from_ggml_bytes(GgmlDType::Q8_0, &q8, 21, 256).unwrap();
            let apart: Vec<_> = rows(&a).into_iter().chain(rows(&b)).collect();
            assert_eq!(rows(&stacked), apart, "nibbles {nibbles}");
        }
        // A part of partial tiles before another, or mixed block sizes, is refused.
        assert!(PackedMatrix::from_ggml_stacked(
            &[
                (GgmlDType::Q5K.into(), &qb, 21),
                (GgmlDType::Q4K.into(), &qa, 32)
            ],
            256,
            FourBit::Bytes
        )
        .is_err());
        let q6 = quantised(32, 256, GgmlDType::Q6K, 6.0);
        assert!(PackedMatrix::from_ggml_stacked(
            &[
                (GgmlDType::Q4K.into(), &qa, 32),
                (GgmlDType::Q6K.into(), &q6, 32)
            ],
            256,
            FourBit::Bytes
        )
        .is_err());
    }

    #[test]
    fn stacking_whole_tiles_equals_stacking_row_by_row() {
        let (a, b) = (
            PackedMatrix::from_ggml(
                GgmlDType::Q8_0,
                &quantised(32, 64, GgmlDType::Q8_0, 2.0),
                32,
                64,
            )
            .unwrap(),
            PackedMatrix::from_ggml(
                GgmlDType::Q8_0,
                &quantised(20, 64, GgmlDType::Q8_0, 3.0),
                20,
                64,
            )
            .unwrap(),
        );
        // [a, b] takes the tile path, [b, a] the row path; both hold the parts' rows.
        for parts in [[&a, &b], [&b, &a]] {
            let stacked = PackedMatrix::concat_rows(&parts).unwrap();
            let expected: Vec<_> = parts.iter().flat_map(|p| rows(p)).collect();
            assert_eq!(rows(&stacked), expected);
            assert_eq!(stacked.qs.len(), stacked.n_tiles() * TILE * 64);
        }
    }
}
