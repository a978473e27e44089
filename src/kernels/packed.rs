//! The packed int8 weight format: one representation for every GGUF quant type we use.
//!
//! Each ggml block type dequantises as `w = s * u + o` with small unsigned integers `u` and
//! per-block `s`, `o` (Q4_1: u = q, o = m; Q5_0: o = -16 d; Q8_0: u = q + 128, o = -128 d;
//! Q4_K and Q5_K: per 32-value sub-block s = d*sc, o = -dmin*m; Q6_K: per 16-value
//! sub-block u = q + 32, o = -32 s; Q3_K: per 16 values u = q + 4 (q in -4..3),
//! s = d*(sc-32), o = -4 s; Q2_K: per 16 values s = d*(sc & 15), o = -dmin*(sc >> 4)). Storing `u` as bytes with f32 `s` and `o` therefore holds the
//! file's weights exactly, and `u8 x i8` dot products map onto AVX-512 VNNI (`vpdpbusd`).
//!
//! Layout, in tiles of 16 output rows so one 64-byte load feeds 16 rows x 4 k-values:
//!
//! ```text
//!   qs:      [tile][k/4 groups][16 rows][4 bytes]      (u8)
//!   scales:  [tile][k/block blocks][16 rows]           (f32)
//!   offsets: [tile][k/block blocks][16 rows]           (f32)
//! ```
//! Types whose offset is a fixed multiple of the scale (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K,
//! IQ4: o = c*s) hold no offsets: the kernel computes c*s, the same f32 product the
//! decoder made, so the results are bit for bit those of the stored offsets.
//! Rows past `n` in the last tile are zero (scale 0, offset 0) and never written out.

use crate::quant::{QuantType, IQ4_TABLE};
use candle_core::quantized::GgmlDType;
use half::f16;

pub const TILE: usize = 16;

/// A weight matrix W (n outputs x k inputs) in the packed int8 format.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    pub n: usize,
    pub k: usize,
    /// Values per scale/offset block: 32, or 16 for Q6_K.
    pub block: usize,
    /// `u` (or its IQ4 index) fits in 4 bits, so two k-groups share each byte: group 2G
    /// in the low nibble, 2G+1 in the high one. Half the bytes to hold and to stream.
    pub nibbles: bool,
    /// With `nibbles`: the nibbles are indices into this table of `u` (IQ4's code book,
    /// each value + 128), looked up in the kernel. None: the nibble is `u` itself.
    pub codebook: Option<[u8; 16]>,
    pub(crate) qs: Vec<u8>,
    pub(crate) scales: Vec<f32>,
    /// Empty when `offset_factor` is set.
    pub(crate) offsets: Vec<f32>,
    /// Every block's offset is this times its scale (computed, not stored).
    pub offset_factor: Option<f32>,
}

/// Why a tensor could not be packed (the caller falls back to candle's matmul).
#[derive(Debug, Clone, PartialEq)]
pub struct Unpackable(pub String);

/// The block size a ggml type packs into, or None if we have no decoder for it.
pub fn packed_block(dtype: QuantType) -> Option<usize> {
    match dtype {
        QuantType::Iq4Nl | QuantType::Iq4Xs => Some(32),
        QuantType::Candle(
            GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q8_0
            | GgmlDType::Q4K
            | GgmlDType::Q5K,
        ) => Some(32),
        QuantType::Candle(GgmlDType::Q6K | GgmlDType::Q3K | GgmlDType::Q2K) => Some(16),
        _ => None,
    }
}

/// How weights whose `u` fits in 4 bits are held. Nibbles halve their memory and the
/// bytes decode streams, but unpacking costs compute-bound prefill about 10% on this
/// project's machine; the results are the same bits either way (the integer sums are
/// exact), so the choice is about speed and memory only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FourBit {
    Nibbles,
    Bytes,
}

impl FourBit {
    /// Nibbles for model files above 1 GiB (where memory and decode bandwidth decide),
    /// bytes below; `AFFECTBENCH_NIBBLES=1` or `0` forces one.
    pub fn for_model_bytes(bytes: u64) -> Self {
        match std::env::var("AFFECTBENCH_NIBBLES").as_deref() {
            Ok("1") => FourBit::Nibbles,
            Ok("0") => FourBit::Bytes,
            _ if bytes > 1 << 30 => FourBit::Nibbles,
            _ => FourBit::Bytes,
        }
    }
}

/// Whether a ggml type's `u` (or its code book index) fits in 4 bits (packed two per
/// byte).
pub fn packs_in_nibbles(dtype: QuantType) -> bool {
    matches!(
        dtype,
        QuantType::Candle(GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K)
            | QuantType::Iq4Nl
            | QuantType::Iq4Xs
    )
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

impl PackedMatrix {
    pub fn n_tiles(&self) -> usize {
        self.n.div_ceil(TILE)
    }

    pub fn blocks_per_row(&self) -> usize {
        self.k / self.block
    }

    /// Bytes of `qs` per tile.
    pub fn tile_bytes(&self) -> usize {
        tile_bytes(self.k, self.nibbles)
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
            self.codebook.map_or(nibble, |cb| cb[nibble as usize])
        } else {
            self.qs[((t * (self.k / 4) + g) * TILE + lane) * 4 + j]
        }
    }

    /// Bytes of weight data read per full pass (what decode streams from memory).
    pub fn storage_bytes(&self) -> usize {
        self.qs.len() + 4 * (self.scales.len() + self.offsets.len())
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
        let block = Self::packable(first_type, parts[0].2, k)?;
        for (i, &(dtype, data, n)) in parts.iter().enumerate() {
            if Self::packable(dtype, n, k)? != block {
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
        // Nibbles only where every part's nibble means the same (all plain, or all one
        // code book).
        let nibbles = allow_nibbles
            && k.is_multiple_of(8)
            && parts.iter().all(|&(dtype, _, _)| {
                packs_in_nibbles(dtype) && codebook(dtype) == codebook(first_type)
            });
        let factor = offset_factor(first_type)
            .filter(|&c| parts.iter().all(|&(d, _, _)| offset_factor(d) == Some(c)));
        let total = parts.iter().map(|p| p.2).sum();
        let mut m = Self::zeros(total, k, block, nibbles);
        if nibbles {
            m.codebook = codebook(first_type);
        }
        let nb = k / block;
        let (mut qs, mut scales, mut offsets) =
            (&mut m.qs[..], &mut m.scales[..], &mut m.offsets[..]);
        for &(dtype, data, n) in parts {
            let tiles = n.div_ceil(TILE);
            let (q, rest_q) = qs.split_at_mut(tiles * tile_bytes(k, nibbles));
            let (s, rest_s) = scales.split_at_mut(tiles * TILE * nb);
            let (o, rest_o) = offsets.split_at_mut(tiles * TILE * nb);
            pack_tiles(dtype, data, n, k, nb, nibbles, threads, q, s, o);
            (qs, scales, offsets) = (rest_q, rest_s, rest_o);
        }
        m.derive_offsets(factor);
        Ok(m)
    }

    /// Drops the stored offsets if every one is `factor` times its scale (checked, so a
    /// file whose blocks break the rule keeps them).
    fn derive_offsets(&mut self, factor: Option<f32>) {
        let Some(c) = factor else { return };
        if self
            .offsets
            .iter()
            .zip(&self.scales)
            .all(|(&o, &s)| o == c * s)
        {
            self.offsets = Vec::new();
            self.offset_factor = Some(c);
        }
    }

    /// The same matrix with every offset stored: the reference the derived offsets are
    /// compared with.
    pub fn with_stored_offsets(&self) -> Self {
        let mut m = self.clone();
        if let Some(c) = m.offset_factor.take() {
            m.offsets = m.scales.iter().map(|&s| c * s).collect();
        }
        m
    }

    /// The offset of block `b` of row `lane` in tile `t`.
    #[inline]
    fn offset_at(&self, t: usize, b: usize, lane: usize) -> f32 {
        let at = (t * self.blocks_per_row() + b) * TILE + lane;
        match self.offset_factor {
            Some(c) => c * self.scales[at],
            None => self.offsets[at],
        }
    }

    fn zeros(n: usize, k: usize, block: usize, nibbles: bool) -> Self {
        let tiles = n.div_ceil(TILE);
        Self {
            n,
            k,
            block,
            nibbles,
            codebook: None,
            qs: vec![0; tiles * tile_bytes(k, nibbles)],
            scales: vec![0.0; tiles * TILE * (k / block)],
            offsets: vec![0.0; tiles * TILE * (k / block)],
            offset_factor: None,
        }
    }

    fn set_row(&mut self, r: usize, u: &[u8], s: &[f32], o: &[f32]) {
        let (k, nb) = (self.k, self.k / self.block);
        place_row(
            &mut self.qs,
            &mut self.scales,
            &mut self.offsets,
            r,
            k,
            nb,
            self.nibbles,
            u,
            s,
            o,
        );
    }

    /// Stacks matrices with the same k and block along the output dimension (fused QKV,
    /// gate+up), so one pass over the activations feeds them all.
    pub fn concat_rows(parts: &[&PackedMatrix]) -> Option<PackedMatrix> {
        let first = parts.first()?;
        if parts.iter().any(|p| {
            p.k != first.k
                || p.block != first.block
                || p.nibbles != first.nibbles
                || p.codebook != first.codebook
                || p.offset_factor != first.offset_factor
        }) {
            return None;
        }
        let n = parts.iter().map(|p| p.n).sum();
        // Parts made of whole tiles (every q/k/v and gate/up of real models) append
        // their tiles as they are; otherwise rows move one by one.
        let (head, _) = parts.split_at(parts.len() - 1);
        if head.iter().all(|p| p.n.is_multiple_of(TILE)) {
            let mut out = PackedMatrix {
                n,
                k: first.k,
                block: first.block,
                nibbles: first.nibbles,
                codebook: first.codebook,
                offset_factor: first.offset_factor,
                qs: Vec::with_capacity(parts.iter().map(|p| p.qs.len()).sum()),
                scales: Vec::with_capacity(parts.iter().map(|p| p.scales.len()).sum()),
                offsets: Vec::with_capacity(parts.iter().map(|p| p.offsets.len()).sum()),
            };
            for p in parts {
                out.qs.extend_from_slice(&p.qs);
                out.scales.extend_from_slice(&p.scales);
                out.offsets.extend_from_slice(&p.offsets);
            }
            return Some(out);
        }
        let mut out = Self::zeros(n, first.k, first.block, first.nibbles);
        out.codebook = first.codebook;
        let mut r0 = 0;
        for p in parts {
            for r in 0..p.n {
                let (mut u, s, o) = p.row(r);
                if let Some(cb) = first.codebook {
                    // The layout holds indices: map each `u` back to its code.
                    for v in &mut u {
                        *v = cb.iter().position(|c| c == v).expect("u from this table") as u8;
                    }
                }
                out.set_row(r0 + r, &u, &s, &o);
            }
            r0 += p.n;
        }
        out.derive_offsets(first.offset_factor);
        Some(out)
    }

    /// Row r as (u, scales, offsets): the inverse of `set_row`.
    pub fn row(&self, r: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let (t, lane) = (r / TILE, r % TILE);
        let groups = self.k / 4;
        let nb = self.blocks_per_row();
        let mut u = vec![0u8; self.k];
        for g in 0..groups {
            for j in 0..4 {
                u[g * 4 + j] = self.u_at(t, lane, g, j);
            }
        }
        let s = (0..nb)
            .map(|b| self.scales[(t * nb + b) * TILE + lane])
            .collect();
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
/// Tiles are independent (each holds its 16 rows' bytes, scales and offsets), so they
/// are decoded in parallel, a contiguous run of tiles per thread: loading a large model
/// is mostly this loop.
#[allow(clippy::too_many_arguments)]
fn pack_tiles(
    dtype: QuantType,
    data: &[u8],
    n: usize,
    k: usize,
    nb: usize,
    nibbles: bool,
    threads: usize,
    qs: &mut [u8],
    scales: &mut [f32],
    offsets: &mut [f32],
) {
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    // Code book types decode to indices: nibbles keep them, bytes hold their `u`.
    let to_u = codebook(dtype).filter(|_| !nibbles);
    let tiles = n.div_ceil(TILE);
    let threads = threads.clamp(1, tiles);
    let per = tiles.div_ceil(threads);
    let qs_chunks = qs.chunks_mut(per * tile_bytes(k, nibbles));
    let scale_chunks = scales.chunks_mut(per * TILE * nb);
    let offset_chunks = offsets.chunks_mut(per * TILE * nb);
    std::thread::scope(|scope| {
        for (c, ((qs, scales), offsets)) in
            qs_chunks.zip(scale_chunks).zip(offset_chunks).enumerate()
        {
            scope.spawn(move || {
                let mut u = vec![0u8; k];
                let mut s = vec![0f32; nb];
                let mut o = vec![0f32; nb];
                let first_row = c * per * TILE;
                for r in first_row..(first_row + per * TILE).min(n) {
                    decode_row(
                        dtype,
                        &data[r * row_bytes..(r + 1) * row_bytes],
                        &mut u,
                        &mut s,
                        &mut o,
                    );
                    if let Some(cb) = to_u {
                        u.iter_mut().for_each(|v| *v = cb[*v as usize]);
                    }
                    place_row(
                        qs,
                        scales,
                        offsets,
                        r - first_row,
                        k,
                        nb,
                        nibbles,
                        &u,
                        &s,
                        &o,
                    );
                }
            });
        }
    });
}

/// Writes row `r` (counted from the start of the given slices, which begin at a tile
/// boundary) into the tiled layout.
#[allow(clippy::too_many_arguments)]
fn place_row(
    qs: &mut [u8],
    scales: &mut [f32],
    offsets: &mut [f32],
    r: usize,
    k: usize,
    nb: usize,
    nibbles: bool,
    u: &[u8],
    s: &[f32],
    o: &[f32],
) {
    let (t, lane) = (r / TILE, r % TILE);
    if nibbles {
        let pairs = k / 8;
        for pair in 0..pairs {
            let at = ((t * pairs + pair) * TILE + lane) * 4;
            for j in 0..4 {
                qs[at + j] = u[pair * 8 + j] | (u[pair * 8 + 4 + j] << 4);
            }
        }
    } else {
        let groups = k / 4;
        for g in 0..groups {
            let at = ((t * groups + g) * TILE + lane) * 4;
            qs[at..at + 4].copy_from_slice(&u[g * 4..g * 4 + 4]);
        }
    }
    for b in 0..nb {
        let at = (t * nb + b) * TILE + lane;
        scales[at] = s[b];
        offsets[at] = o[b];
    }
}

fn h(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Decodes one row of ggml blocks into (u, s, o) with w = s*u + o per `block` values
/// (for code book types, u is the index into `codebook(dtype)`).
fn decode_row(dtype: QuantType, row: &[u8], u: &mut [u8], s: &mut [f32], o: &mut [f32]) {
    let ts = dtype.type_size();
    let QuantType::Candle(ggml) = dtype else {
        for (sub, (scale, qs)) in dtype.iq4_sub_blocks(row).enumerate() {
            iq4_sub_block(scale, qs, sub, u, s, o);
        }
        return;
    };
    for (bi, blk) in row.chunks_exact(ts).enumerate() {
        match ggml {
            GgmlDType::Q4_0 => {
                let d = h(blk, 0);
                for j in 0..16 {
                    u[bi * 32 + j] = blk[2 + j] & 0x0F;
                    u[bi * 32 + j + 16] = blk[2 + j] >> 4;
                }
                s[bi] = d;
                o[bi] = -8.0 * d;
            }
            GgmlDType::Q4_1 => {
                let (d, m) = (h(blk, 0), h(blk, 2));
                for j in 0..16 {
                    u[bi * 32 + j] = blk[4 + j] & 0x0F;
                    u[bi * 32 + j + 16] = blk[4 + j] >> 4;
                }
                s[bi] = d;
                o[bi] = m;
            }
            GgmlDType::Q5_0 => {
                let d = h(blk, 0);
                let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                for j in 0..16 {
                    let hi0 = (((qh >> j) << 4) & 0x10) as u8;
                    let hi1 = ((qh >> (j + 12)) & 0x10) as u8;
                    u[bi * 32 + j] = (blk[6 + j] & 0x0F) | hi0;
                    u[bi * 32 + j + 16] = (blk[6 + j] >> 4) | hi1;
                }
                s[bi] = d;
                o[bi] = -16.0 * d;
            }
            GgmlDType::Q8_0 => {
                let d = h(blk, 0);
                for j in 0..32 {
                    u[bi * 32 + j] = (blk[2 + j] as i8 as i16 + 128) as u8;
                }
                s[bi] = d;
                o[bi] = -128.0 * d;
            }
            GgmlDType::Q4K => {
                // 256 values: d, dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
                k4_scales(blk, &mut s[bi * 8..bi * 8 + 8], &mut o[bi * 8..bi * 8 + 8]);
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
                k4_scales(blk, &mut s[bi * 8..bi * 8 + 8], &mut o[bi * 8..bi * 8 + 8]);
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
                let d = h(blk, 108);
                let sc = q3k_scales(&blk[96..108]);
                for half in 0..2 {
                    let q = &qs[32 * half..];
                    for j in 0..4 {
                        let shift = 2 * j;
                        let m = 1u8 << (4 * half + j);
                        for part in 0..2 {
                            let sub = bi * 16 + 8 * half + 2 * j + part;
                            let sv = d * (sc[8 * half + 2 * j + part] as f32 - 32.0);
                            s[sub] = sv;
                            o[sub] = -4.0 * sv;
                            for l in 0..16 {
                                let at = 16 * part + l;
                                let low = (q[at] >> shift) & 3;
                                let high = if hmask[at] & m != 0 { 4 } else { 0 };
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
                let (d, dmin) = (h(blk, 80), h(blk, 82));
                for half in 0..2 {
                    let q = &qs[32 * half..];
                    for j in 0..4 {
                        let shift = 2 * j;
                        for part in 0..2 {
                            let is = 8 * half + 2 * j + part;
                            let sub = bi * 16 + is;
                            s[sub] = d * (scales[is] & 0x0F) as f32;
                            o[sub] = -dmin * (scales[is] >> 4) as f32;
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
                let sc = &blk[192..208];
                let d = h(blk, 208);
                for half in 0..2 {
                    let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
                    let base = bi * 256 + 128 * half;
                    for l in 0..32 {
                        u[base + l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                        u[base + l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                        u[base + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        u[base + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                    // 8 sub-blocks of 16 values, in output order.
                    for (i, &scale) in sc[..8].iter().enumerate() {
                        let sub = (base + 16 * i) / 16;
                        let sv = d * (scale as i8) as f32;
                        s[sub] = sv;
                        o[sub] = -32.0 * sv;
                    }
                }
            }
            _ => unreachable!("packed_block() filters unsupported types"),
        }
    }
}

/// One 32-value IQ4 sub-block (index `sub` in the row) of scale `scale`: the low
/// nibbles of `qs` index the first 16 values, the high nibbles the next 16. `u` gets
/// the indices; their code (table value + 128) makes w = s*u + o with o = -128 s.
fn iq4_sub_block(scale: f32, qs: &[u8], sub: usize, u: &mut [u8], s: &mut [f32], o: &mut [f32]) {
    for j in 0..16 {
        u[sub * 32 + j] = qs[j] & 0x0F;
        u[sub * 32 + j + 16] = qs[j] >> 4;
    }
    s[sub] = scale;
    o[sub] = -128.0 * scale;
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

/// The eight 32-value sub-blocks' s = d*sc and o = -dmin*m of a Q4_K or Q5_K block,
/// which both start with d, dmin and twelve bytes of 6-bit scales and mins.
fn k4_scales(blk: &[u8], s: &mut [f32], o: &mut [f32]) {
    let (d, dmin) = (h(blk, 0), h(blk, 2));
    for sub in 0..8 {
        let (sc, m) = scale_min_k4(sub, &blk[4..16]);
        s[sub] = d * sc as f32;
        o[sub] = -dmin * m as f32;
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
                assert_eq!(one.qs, many.qs, "{dtype:?} {threads}");
                assert_eq!(one.scales, many.scales, "{dtype:?} {threads}");
                assert_eq!(one.offsets, many.offsets, "{dtype:?} {threads}");
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
            assert_eq!((stacked.n, &stacked.qs), (alone.n, &alone.qs));
            assert_eq!(stacked.scales, alone.scales);
            assert_eq!(stacked.offsets, alone.offsets);
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
