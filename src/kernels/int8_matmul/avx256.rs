//! The packed int8 matmul on 256-bit registers, for two instruction sets from one
//! source: AVX-VNNI (`vpdpbusd` on ymm: Intel since Alder Lake, AMD since Zen 5) and
//! AVX2 (every x86-64-v3 CPU), where `vpmaddubsw` + `vpmaddwd` stand in for it.
//!
//! `vpmaddubsw` adds each pair of u8 x i8 products into an i16, saturating. Two rules
//! keep every sum exact, so the results are the reference's bits:
//! - where u < 128 (every type but Q8_0 and IQ4), a pair is at most 2*127*127 = 32258,
//!   and the pair sums of `widen_every` groups are added in i16 before they are widened
//!   to i32 (`vpmaddwd` by ones), as many as 2*(2^u_bits - 1)*127 per group allows;
//! - where u may exceed 127 (Q8_0 and IQ4 hold u = v + 128 for a signed byte v), the
//!   kernel multiplies v instead, as |v| * sign(x, v) (at most 2*128*127 = 32512 a
//!   pair), widens every group, and adds 128 * sum(x) per block back:
//!   sum(u x) = sum(v x) + 128 sum(x), exact in i32.
//!
//! A tile's 16 rows are two halves of 8 (one 32-byte vector per group of 4 inputs), each
//! self-contained in the layout (bytes, high plane and scales), so the kernels work on
//! runs of halves.

use super::{PackedMatrix, QuantizedActs, RowOut, TILE};
use std::arch::x86_64::*;

/// Rows of a half tile: one 32-byte vector holds a group of 4 inputs for each.
const HALF: usize = TILE / 2;

/// How many groups' i16 pair sums may be added before they are widened to i32 (at
/// most a block's groups): each pair sum is at most 2 * (2^u_bits - 1) * 127, and their
/// total must stay below 2^15. With u_bits of 7 or more: every group.
pub(super) fn widen_every(u_bits: u8, groups_per_block: usize) -> usize {
    if u_bits >= 7 {
        return 1;
    }
    let pair_max = 2 * ((1usize << u_bits) - 1) * 127;
    (i16::MAX as usize / pair_max).clamp(1, groups_per_block)
}

/// `quantize_row_scalar` in 8-lane steps (block a multiple of 8).
///
/// # Safety
/// The CPU supports AVX2; `block` is a multiple of 8 dividing `x.len()`, `out.qs` holds
/// `x.len()` values and the others one per block.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantize_row(x: &[f32], block: usize, out: RowOut<'_>) {
    let RowOut { qs, d, xsum, qsum } = out;
    assert!(qs.len() >= x.len() && block.is_multiple_of(8));
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let lim = _mm256_set1_ps(127.0);
    let nlim = _mm256_set1_ps(-127.0);
    for (b, vals) in x.chunks_exact(block).enumerate() {
        let mut m = _mm256_setzero_ps();
        for c in vals.chunks_exact(8) {
            // SAFETY: `c` holds 8 f32 (chunks_exact).
            m = _mm256_max_ps(
                m,
                _mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs_mask),
            );
        }
        let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps::<1>(h, h)));
        let dx = amax / 127.0;
        let inv = _mm256_set1_ps(if dx > 0.0 { 1.0 / dx } else { 0.0 });
        let mut sum = _mm256_setzero_si256();
        for (i, c) in vals.chunks_exact(8).enumerate() {
            // SAFETY: `c` holds 8 f32 (chunks_exact).
            let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, inv);
            // Clamping to the integers +-127 before rounding equals rounding first.
            // Rounds to nearest, ties to even (the default MXCSR mode).
            let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, nlim), lim));
            sum = _mm256_add_epi32(sum, q);
            // Each 128-bit lane's four values end up in its low four bytes.
            let bytes = _mm256_packs_epi16(_mm256_packs_epi32(q, q), _mm256_setzero_si256());
            let (lo, hi) = (
                _mm256_cvtsi256_si32(bytes),
                _mm256_extract_epi32::<4>(bytes),
            );
            // SAFETY: b * block + i * 8 + 8 <= x.len() <= qs.len() (asserted above).
            unsafe {
                let at = qs.as_mut_ptr().add(b * block + i * 8) as *mut i32;
                at.write_unaligned(lo);
                at.add(1).write_unaligned(hi);
            }
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b00_00_00_01>(s)));
        d[b] = dx;
        xsum[b] = dx * s as f32;
        qsum[b] = s;
    }
}

/// The `u` of groups 2G and 2G+1 of one half (8 rows x 4 values each) from one 32-byte
/// vector of their nibbles, as `avx512::unpack_pair` does for a whole tile: with HB > 0,
/// ORs in the bits above 4 from `plane` and shifts it down to the next pair's; with
/// CODEBOOK, looks the indices up in `table`.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn unpack_pair<const HB: u8, const CODEBOOK: bool>(
    packed: __m256i,
    plane: &mut __m256i,
    table: __m256i,
) -> (__m256i, __m256i) {
    let low = _mm256_set1_epi8(0x0F);
    let mut lo = _mm256_and_si256(packed, low);
    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low);
    if HB > 0 {
        // 16-bit shifts carry bits across bytes only into positions the mask drops or
        // the block's remaining pairs never read (as in the AVX-512 kernel).
        let high_mask = _mm256_set1_epi8((((1u16 << HB) - 1) << 4) as i8);
        lo = _mm256_or_si256(
            lo,
            _mm256_and_si256(_mm256_slli_epi16::<4>(*plane), high_mask),
        );
        let (up, next) = if HB == 1 {
            (
                _mm256_slli_epi16::<3>(*plane),
                _mm256_srli_epi16::<2>(*plane),
            )
        } else {
            (
                _mm256_slli_epi16::<2>(*plane),
                _mm256_srli_epi16::<4>(*plane),
            )
        };
        hi = _mm256_or_si256(hi, _mm256_and_si256(up, high_mask));
        *plane = next;
    }
    if CODEBOOK {
        lo = _mm256_shuffle_epi8(table, lo);
        hi = _mm256_shuffle_epi8(table, hi);
    }
    (lo, hi)
}

/// The code book in each 128-bit lane for `vpshufb` (zero when there is none): `u`, or
/// with `signed`, `u - 128` (the code book's own int8 values).
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn codebook_table(w: &PackedMatrix, signed: bool) -> __m256i {
    match w.codebook {
        Some(cb) => {
            // SAFETY: `cb` holds 16 bytes.
            let t = _mm256_broadcastsi128_si256(unsafe {
                _mm_loadu_si128(cb.as_ptr() as *const __m128i)
            });
            if signed {
                _mm256_xor_si256(t, _mm256_set1_epi8(-128))
            } else {
                t
            }
        }
        None => _mm256_setzero_si256(),
    }
}

/// The scales d*sc and offsets (c*s or dm*m) of block `b` of half `h` (rows 8h..8h+8
/// of the matrix): the decoder's f32 products, so its bits.
///
/// # Safety
/// Half h and block b exist in `w`; DERIVED is whether `w.offset_factor` is set and
/// `factor` holds it; the CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn half_scales<const DERIVED: bool>(
    w: &PackedMatrix,
    h: usize,
    b: usize,
    factor: __m256,
) -> (__m256, __m256) {
    let (t, side) = (h / 2, (h % 2) * HALF);
    let (nb, ns) = (w.blocks_per_row(), w.supers_per_row());
    let sb = b >> w.blocks_per_super.trailing_zeros();
    let (at_super, at_block) = ((t * ns + sb) * TILE + side, (t * nb + b) * TILE + side);
    // SAFETY: both indices are inside their arrays (half h and block b exist), and 8
    // values from each are this half's rows.
    unsafe {
        let sv = _mm256_mul_ps(
            load_f16(w.d.as_ptr().add(at_super)),
            load_i8(w.sc.as_ptr().add(at_block)),
        );
        let ov = if DERIVED {
            _mm256_mul_ps(factor, sv)
        } else {
            _mm256_mul_ps(
                load_f16(w.dm.as_ptr().add(at_super)),
                load_i8(w.m.as_ptr().add(at_block)),
            )
        };
        (sv, ov)
    }
}

/// 8 f16 values as f32 (exact).
///
/// # Safety
/// `p` points to 8 readable f16 values; the CPU supports AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn load_f16(p: *const half::f16) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

/// 8 i8 values as f32 (exact).
///
/// # Safety
/// `p` points to 8 readable i8 values; the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_i8(p: *const i8) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
}

/// One block's fold of one half and row: `acc = fma(isum, s*dx, acc)`, then
/// `acc = fma(o, xsum, acc)` (the module comment of `int8_matmul`).
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn fold(
    acc: __m256,
    isum: __m256i,
    (sv, ov): (__m256, __m256),
    dx: f32,
    xsum: f32,
) -> __m256 {
    let scale = _mm256_mul_ps(sv, _mm256_set1_ps(dx));
    let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc);
    _mm256_fmadd_ps(ov, _mm256_set1_ps(xsum), acc)
}

/// Writes row i's results for half h, its rows past `w.n` left out.
///
/// # Safety
/// `out` points to `m * w.n` f32 values (m > i) whose columns of half h the caller owns;
/// the CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_half(w: &PackedMatrix, v: __m256, h: usize, i: usize, out: *mut f32) {
    let valid = w.n.saturating_sub(h * HALF).min(HALF);
    // SAFETY: the first `valid` columns from 8h are inside row i of `out`.
    unsafe {
        let at = out.add(i * w.n + h * HALF);
        if valid == HALF {
            _mm256_storeu_ps(at, v);
        } else if valid > 0 {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lanes);
            _mm256_maskstore_ps(at, mask, v);
        }
    }
}

/// Folds block b's integer totals of half-column j into the MR rows' results (rows from
/// i0), with that half's block scales and offsets.
///
/// # Safety
/// Rows i0..i0+MR and block b exist in `acts`; the CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn fold_rows<const MR: usize, const NH: usize>(
    facc: &mut [[__m256; NH]; MR],
    totals: &[[__m256i; NH]; MR],
    j: usize,
    scales: (__m256, __m256),
    acts: &QuantizedActs,
    i0: usize,
    b: usize,
) {
    let nb = acts.k / acts.block;
    for (r, row) in facc.iter_mut().enumerate() {
        let at = (i0 + r) * nb + b;
        // SAFETY: the caller's contract.
        let (dx, xsum) = unsafe { (*acts.d.get_unchecked(at), *acts.xsum.get_unchecked(at)) };
        row[j] = unsafe { fold(row[j], totals[r][j], scales, dx, xsum) };
    }
}

/// Writes the MR rows (from i0) x NH halves (from h) of results.
///
/// # Safety
/// As `store_half`, for every row and half.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_rows<const MR: usize, const NH: usize>(
    w: &PackedMatrix,
    facc: &[[__m256; NH]; MR],
    h: usize,
    i0: usize,
    out: *mut f32,
) {
    for (r, row) in facc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { store_half(w, v, h + j, i0 + r, out) };
        }
    }
}

/// Up to TILES_PER_TASK tiles with one byte per `u` (or `u - 128` for the signed form)
/// and f32 scales and offsets, the layout `halves_expanded` reads.
#[derive(Default)]
struct Expanded {
    qs: Vec<u8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

thread_local! {
    /// Each kernel thread's expansion buffer, reused from call to call.
    static EXPANDED: std::cell::RefCell<Expanded> = std::cell::RefCell::default();
}

/// Writes the `count` tiles of `w` from t0 into `e` as `u` a byte each (the byte
/// layout's order; `u - 128` with `signed`) and each block's f32 scale and offset.
///
/// # Safety
/// The CPU supports AVX2 and F16C; tiles t0..t0+count exist in `w`; `e` holds `count`
/// tiles of w.k values; the const parameters are `w`'s layout.
#[target_feature(enable = "avx2,f16c")]
unsafe fn expand<const NIBBLES: bool, const CODEBOOK: bool, const HB: u8, const DERIVED: bool>(
    w: &PackedMatrix,
    t0: usize,
    count: usize,
    signed: bool,
    e: &mut Expanded,
) {
    let (k, nb, gpb) = (w.k, w.blocks_per_row(), w.block / 4);
    let table = unsafe { codebook_table(w, signed) };
    let flip = _mm256_set1_epi8(if signed { -128 } else { 0 });
    let factor = _mm256_set1_ps(w.offset_factor.unwrap_or(0.0));
    for j in 0..count {
        let t = t0 + j;
        // SAFETY: tile t's bytes and planes are inside `w` and tile j's inside `e` (the
        // contract); every offset below stays within one tile.
        unsafe {
            let src = w.qs.as_ptr().add(t * w.tile_bytes());
            let dst = e.qs.as_mut_ptr().add(j * TILE * k);
            if NIBBLES {
                for b in 0..nb {
                    for side in [0, HALF * 4] {
                        let mut plane = if HB > 0 {
                            _mm256_loadu_si256(w.high.as_ptr().add((t * nb + b) * TILE * 4 + side)
                                as *const __m256i)
                        } else {
                            _mm256_setzero_si256()
                        };
                        for pair in b * gpb / 2..(b + 1) * gpb / 2 {
                            let packed = _mm256_loadu_si256(
                                src.add(pair * TILE * 4 + side) as *const __m256i
                            );
                            let (lo, hi) = unpack_pair::<HB, CODEBOOK>(packed, &mut plane, table);
                            let (lo, hi) = if CODEBOOK {
                                (lo, hi)
                            } else {
                                (_mm256_xor_si256(lo, flip), _mm256_xor_si256(hi, flip))
                            };
                            _mm256_storeu_si256(
                                dst.add(2 * pair * TILE * 4 + side) as *mut __m256i,
                                lo,
                            );
                            _mm256_storeu_si256(
                                dst.add((2 * pair + 1) * TILE * 4 + side) as *mut __m256i,
                                hi,
                            );
                        }
                    }
                }
            } else {
                for at in (0..TILE * k).step_by(32) {
                    let v = _mm256_loadu_si256(src.add(at) as *const __m256i);
                    _mm256_storeu_si256(dst.add(at) as *mut __m256i, _mm256_xor_si256(v, flip));
                }
            }
            for b in 0..nb {
                for side in 0..2 {
                    let (sv, ov) = half_scales::<DERIVED>(w, 2 * t + side, b, factor);
                    let at = (j * nb + b) * TILE + side * HALF;
                    _mm256_storeu_ps(e.scales.as_mut_ptr().add(at), sv);
                    _mm256_storeu_ps(e.offsets.as_mut_ptr().add(at), ov);
                }
            }
        }
    }
}

/// Calls `expand` with the const parameters of `w`'s layout.
///
/// # Safety
/// As `expand`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn expand_any(w: &PackedMatrix, t0: usize, count: usize, signed: bool, e: &mut Expanded) {
    // SAFETY: the caller's contract, passed on.
    unsafe {
        match (
            w.nibbles,
            w.codebook.is_some(),
            w.high_bits,
            w.offset_factor.is_some(),
        ) {
            (false, _, _, true) => expand::<false, false, 0, true>(w, t0, count, signed, e),
            (false, _, _, false) => expand::<false, false, 0, false>(w, t0, count, signed, e),
            (true, true, _, true) => expand::<true, true, 0, true>(w, t0, count, signed, e),
            (true, true, _, false) => expand::<true, true, 0, false>(w, t0, count, signed, e),
            (true, false, 0, true) => expand::<true, false, 0, true>(w, t0, count, signed, e),
            (true, false, 0, false) => expand::<true, false, 0, false>(w, t0, count, signed, e),
            (true, false, 1, true) => expand::<true, false, 1, true>(w, t0, count, signed, e),
            (true, false, 1, false) => expand::<true, false, 1, false>(w, t0, count, signed, e),
            (true, false, _, true) => expand::<true, false, 2, true>(w, t0, count, signed, e),
            (true, false, _, false) => expand::<true, false, 2, false>(w, t0, count, signed, e),
        }
    }
}

/// Calls `f::<MR, NH, NIBBLES, CODEBOOK, HB, DERIVED, SIGNED>(args)` with the const
/// parameters of `w`'s layout and `signed`. Chosen once per call: a branch inside the
/// block loop slows it.
macro_rules! for_layout {
    ($w:expr, $signed:expr, $f:ident::<$mr:literal, $nh:literal>($($arg:expr),*)) => {{
        let w: &PackedMatrix = $w;
        match (w.nibbles, w.codebook.is_some(), w.high_bits, w.offset_factor.is_some(), $signed) {
            (false, _, _, true, true) => $f::<$mr, $nh, false, false, 0, true, true>($($arg),*),
            (false, _, _, true, false) => $f::<$mr, $nh, false, false, 0, true, false>($($arg),*),
            (false, _, _, false, true) => $f::<$mr, $nh, false, false, 0, false, true>($($arg),*),
            (false, _, _, false, false) => $f::<$mr, $nh, false, false, 0, false, false>($($arg),*),
            (true, true, _, true, true) => $f::<$mr, $nh, true, true, 0, true, true>($($arg),*),
            (true, true, _, true, false) => $f::<$mr, $nh, true, true, 0, true, false>($($arg),*),
            (true, true, _, false, true) => $f::<$mr, $nh, true, true, 0, false, true>($($arg),*),
            (true, true, _, false, false) => $f::<$mr, $nh, true, true, 0, false, false>($($arg),*),
            // Plain nibbles hold at most 6 bits: never the signed form.
            (true, false, 0, true, _) => $f::<$mr, $nh, true, false, 0, true, false>($($arg),*),
            (true, false, 0, false, _) => $f::<$mr, $nh, true, false, 0, false, false>($($arg),*),
            (true, false, 1, true, _) => $f::<$mr, $nh, true, false, 1, true, false>($($arg),*),
            (true, false, 1, false, _) => $f::<$mr, $nh, true, false, 1, false, false>($($arg),*),
            (true, false, _, true, _) => $f::<$mr, $nh, true, false, 2, true, false>($($arg),*),
            (true, false, _, false, _) => $f::<$mr, $nh, true, false, 2, false, false>($($arg),*),
        }
    }};
}

/// The kernels that multiply, for one instruction set: `$features` are the target
/// features of every function, `$vnni` whether `$dpbusd` (a `vpdpbusd` on ymm) does the
/// u8 x i8 dot products, instead of AVX2's `vpmaddubsw` and `vpmaddwd`.
macro_rules! kernels_256 {
    ($features:literal, $vnni:literal, $dpbusd:ident) => {
        use super::super::{QuantizedActs, EXPAND_ROWS};
        use super::{
            codebook_table, expand_any, fold_rows, half_scales, store_rows, unpack_pair,
            widen_every, Expanded, PackedMatrix, EXPANDED, HALF, TILE,
        };
        use std::arch::x86_64::*;

        const VNNI: bool = $vnni;

        /// Rows and halves of one call of `halves_direct` for four-row and one-row
        /// steps, and of `halves_expanded`: as many accumulators as 16 registers hold.
        const DIRECT_NH_4: usize = 1;
        const DIRECT_NH_1: usize = 2;
        const EXPANDED_NH: usize = 2;

        /// Computes `tiles` of the output for every activation row.
        ///
        /// # Safety
        /// As `int8_matmul::run_tiles`, for this module's CPU features.
        #[target_feature(enable = $features)]
        pub(in super::super) unsafe fn run_tiles(
            w: &PackedMatrix,
            acts: &QuantizedActs,
            tiles: std::ops::Range<usize>,
            out: *mut f32,
        ) {
            let signed = !VNNI && w.u_bits >= 8;
            let widen = widen_every(w.u_bits, w.block / 4);
            let (h0, h1) = (2 * tiles.start, 2 * tiles.end);
            // SAFETY (all calls): the caller's contract, passed on; the halves are those
            // of `tiles` and the rows below acts.m.
            unsafe {
                if acts.m >= EXPAND_ROWS {
                    EXPANDED.with_borrow_mut(|e| {
                        let (k, nb) = (w.k, w.blocks_per_row());
                        e.qs.resize(tiles.len() * TILE * k, 0);
                        e.scales.resize(tiles.len() * TILE * nb, 0.0);
                        e.offsets.resize(tiles.len() * TILE * nb, 0.0);
                        expand_any(w, tiles.start, tiles.len(), signed, e);
                        let mut i = 0;
                        while i + 4 <= acts.m {
                            for h in (h0..h1).step_by(EXPANDED_NH) {
                                if signed {
                                    halves_expanded::<4, EXPANDED_NH, true>(
                                        w, e, acts, h0, h, i, out, widen,
                                    );
                                } else {
                                    halves_expanded::<4, EXPANDED_NH, false>(
                                        w, e, acts, h0, h, i, out, widen,
                                    );
                                }
                            }
                            i += 4;
                        }
                        for i in i..acts.m {
                            for h in (h0..h1).step_by(EXPANDED_NH) {
                                if signed {
                                    halves_expanded::<1, EXPANDED_NH, true>(
                                        w, e, acts, h0, h, i, out, widen,
                                    );
                                } else {
                                    halves_expanded::<1, EXPANDED_NH, false>(
                                        w, e, acts, h0, h, i, out, widen,
                                    );
                                }
                            }
                        }
                    });
                    return;
                }
                let mut i = 0;
                while i + 4 <= acts.m {
                    for h in (h0..h1).step_by(DIRECT_NH_4) {
                        for_layout!(w, signed, halves_direct::<4, 1>(w, acts, h, i, out, widen));
                    }
                    i += 4;
                }
                for i in i..acts.m {
                    for h in (h0..h1).step_by(DIRECT_NH_1) {
                        for_layout!(w, signed, halves_direct::<1, 2>(w, acts, h, i, out, widen));
                    }
                }
            }
        }

        /// Integer sums of one block for MR rows x NH halves: i32 totals and, without
        /// VNNI, i16 pair sums not yet widened (`pending` groups of them).
        struct BlockSums<const MR: usize, const NH: usize> {
            total: [[__m256i; NH]; MR],
            pairs: [[__m256i; NH]; MR],
            pending: usize,
        }

        /// Adds one group of 4 inputs: `wv` holds each half's 8 rows x 4 weights (`u`, or
        /// `u - 128` when SIGNED), and row r's 4 activations are at `x + r * k`.
        ///
        /// # Safety
        /// The rows' 4 bytes are readable; the CPU has this module's features.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::needless_range_loop, unused_unsafe)]
        unsafe fn add_group<const MR: usize, const NH: usize, const SIGNED: bool>(
            sums: &mut BlockSums<MR, NH>,
            wv: [__m256i; NH],
            x: *const i8,
            k: usize,
            widen: usize,
        ) {
            let magnitude: [__m256i; NH] = std::array::from_fn(|j| {
                if SIGNED {
                    _mm256_abs_epi8(wv[j])
                } else {
                    wv[j]
                }
            });
            for r in 0..MR {
                // SAFETY: the caller's contract.
                let x4 =
                    _mm256_set1_epi32(unsafe { (x.add(r * k) as *const i32).read_unaligned() });
                for j in 0..NH {
                    if VNNI {
                        // SAFETY: VNNI is set only where $features include $dpbusd's
                        // (the AVX2 module compiles this call but never makes it).
                        sums.total[r][j] = unsafe { $dpbusd(sums.total[r][j], wv[j], x4) };
                    } else {
                        let p = if SIGNED {
                            _mm256_maddubs_epi16(magnitude[j], _mm256_sign_epi8(x4, wv[j]))
                        } else {
                            _mm256_maddubs_epi16(wv[j], x4)
                        };
                        sums.pairs[r][j] = _mm256_add_epi16(sums.pairs[r][j], p);
                    }
                }
            }
            if !VNNI {
                sums.pending += 1;
                if sums.pending == widen {
                    widen_pairs(sums);
                }
            }
        }

        /// Moves the i16 pair sums into the i32 totals.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::needless_range_loop)]
        fn widen_pairs<const MR: usize, const NH: usize>(sums: &mut BlockSums<MR, NH>) {
            let ones = _mm256_set1_epi16(1);
            for r in 0..MR {
                for j in 0..NH {
                    sums.total[r][j] = _mm256_add_epi32(
                        sums.total[r][j],
                        _mm256_madd_epi16(sums.pairs[r][j], ones),
                    );
                    sums.pairs[r][j] = _mm256_setzero_si256();
                }
            }
            sums.pending = 0;
        }

        /// The block's exact `sum(u x)` per row and half: widens what is pending and,
        /// for the signed form, adds 128 * sum(x) back.
        ///
        /// # Safety
        /// Rows i0..i0+MR and block b exist in `acts`; the CPU has this module's
        /// features.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::needless_range_loop)]
        unsafe fn block_totals<const MR: usize, const NH: usize, const SIGNED: bool>(
            mut sums: BlockSums<MR, NH>,
            acts: &QuantizedActs,
            i0: usize,
            b: usize,
        ) -> [[__m256i; NH]; MR] {
            if !VNNI && sums.pending > 0 {
                widen_pairs(&mut sums);
            }
            if SIGNED {
                let nb = acts.k / acts.block;
                for r in 0..MR {
                    // SAFETY: the caller's contract.
                    let s = unsafe { *acts.qsum.get_unchecked((i0 + r) * nb + b) };
                    let back = _mm256_set1_epi32(128 * s);
                    for j in 0..NH {
                        sums.total[r][j] = _mm256_add_epi32(sums.total[r][j], back);
                    }
                }
            }
            sums.total
        }

        /// MR activation rows from i0 against NH halves from h, read straight from the
        /// packed layout. Per output, the operations and their order are those of
        /// `scalar_tile`.
        ///
        /// # Safety
        /// The CPU has this module's features; halves h..h+NH exist in `w`; rows
        /// i0..i0+MR exist in `acts`; `out` points to `acts.m * w.n` writable f32 values
        /// whose columns of these halves no one else accesses during the call; the const
        /// parameters are `w`'s layout (SIGNED: `u - 128` is multiplied).
        #[target_feature(enable = $features)]
        #[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
        unsafe fn halves_direct<
            const MR: usize,
            const NH: usize,
            const NIBBLES: bool,
            const CODEBOOK: bool,
            const HB: u8,
            const DERIVED: bool,
            const SIGNED: bool,
        >(
            w: &PackedMatrix,
            acts: &QuantizedActs,
            h: usize,
            i0: usize,
            out: *mut f32,
            widen: usize,
        ) {
            // SAFETY: every offset stays inside its buffer by the layout of
            // PackedMatrix/QuantizedActs and the index ranges of the contract; the
            // stores write only these halves of `out`.
            unsafe {
                let (k, nb, gpb) = (w.k, w.blocks_per_row(), w.block / 4);
                let wq: [*const u8; NH] = std::array::from_fn(|j| {
                    let half = h + j;
                    w.qs.as_ptr()
                        .add((half / 2) * w.tile_bytes() + (half % 2) * HALF * 4)
                });
                let table = codebook_table(w, SIGNED);
                let flip = _mm256_set1_epi8(-128);
                let factor = _mm256_set1_ps(w.offset_factor.unwrap_or(0.0));
                let xq = acts.qs.as_ptr().add(i0 * k);
                let mut facc = [[_mm256_setzero_ps(); NH]; MR];
                for b in 0..nb {
                    let mut sums = BlockSums::<MR, NH> {
                        total: [[_mm256_setzero_si256(); NH]; MR],
                        pairs: [[_mm256_setzero_si256(); NH]; MR],
                        pending: 0,
                    };
                    if NIBBLES {
                        let mut plane: [__m256i; NH] = std::array::from_fn(|j| {
                            let half = h + j;
                            if HB > 0 {
                                _mm256_loadu_si256(
                                    w.high.as_ptr().add(
                                        ((half / 2) * nb + b) * TILE * 4 + (half % 2) * HALF * 4,
                                    ) as *const __m256i,
                                )
                            } else {
                                _mm256_setzero_si256()
                            }
                        });
                        for pair in b * gpb / 2..(b + 1) * gpb / 2 {
                            let mut lo = [_mm256_setzero_si256(); NH];
                            let mut hi = [_mm256_setzero_si256(); NH];
                            for j in 0..NH {
                                let packed = _mm256_loadu_si256(
                                    wq[j].add(pair * TILE * 4) as *const __m256i
                                );
                                (lo[j], hi[j]) =
                                    unpack_pair::<HB, CODEBOOK>(packed, &mut plane[j], table);
                            }
                            add_group::<MR, NH, SIGNED>(&mut sums, lo, xq.add(pair * 8), k, widen);
                            add_group::<MR, NH, SIGNED>(
                                &mut sums,
                                hi,
                                xq.add(pair * 8 + 4),
                                k,
                                widen,
                            );
                        }
                    } else {
                        for g in b * gpb..(b + 1) * gpb {
                            let wv: [__m256i; NH] = std::array::from_fn(|j| {
                                let v =
                                    _mm256_loadu_si256(wq[j].add(g * TILE * 4) as *const __m256i);
                                if SIGNED {
                                    _mm256_xor_si256(v, flip)
                                } else {
                                    v
                                }
                            });
                            add_group::<MR, NH, SIGNED>(&mut sums, wv, xq.add(g * 4), k, widen);
                        }
                    }
                    let totals = block_totals::<MR, NH, SIGNED>(sums, acts, i0, b);
                    for j in 0..NH {
                        let scales = half_scales::<DERIVED>(w, h + j, b, factor);
                        fold_rows(&mut facc, &totals, j, scales, acts, i0, b);
                    }
                }
                store_rows(w, &facc, h, i0, out);
            }
        }

        /// `halves_direct` on the expansion `e` of the tiles from half h0 (a tile's
        /// first half): MR rows from i0 against NH halves from h.
        ///
        /// # Safety
        /// As `halves_direct`; `e` is `expand` of the tiles from h0 / 2 with `SIGNED`,
        /// and holds halves h..h+NH.
        #[target_feature(enable = $features)]
        #[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
        unsafe fn halves_expanded<const MR: usize, const NH: usize, const SIGNED: bool>(
            w: &PackedMatrix,
            e: &Expanded,
            acts: &QuantizedActs,
            h0: usize,
            h: usize,
            i0: usize,
            out: *mut f32,
            widen: usize,
        ) {
            // SAFETY: as in `halves_direct`: every offset stays inside `e`, `acts` and
            // these halves of `out`.
            unsafe {
                let (k, nb, gpb) = (w.k, w.blocks_per_row(), w.block / 4);
                let local = |j: usize| h + j - h0;
                let wq: [*const u8; NH] = std::array::from_fn(|j| {
                    e.qs.as_ptr()
                        .add((local(j) / 2) * TILE * k + (local(j) % 2) * HALF * 4)
                });
                let xq = acts.qs.as_ptr().add(i0 * k);
                let mut facc = [[_mm256_setzero_ps(); NH]; MR];
                for b in 0..nb {
                    let mut sums = BlockSums::<MR, NH> {
                        total: [[_mm256_setzero_si256(); NH]; MR],
                        pairs: [[_mm256_setzero_si256(); NH]; MR],
                        pending: 0,
                    };
                    for g in b * gpb..(b + 1) * gpb {
                        let wv: [__m256i; NH] = std::array::from_fn(|j| {
                            _mm256_loadu_si256(wq[j].add(g * TILE * 4) as *const __m256i)
                        });
                        add_group::<MR, NH, SIGNED>(&mut sums, wv, xq.add(g * 4), k, widen);
                    }
                    let totals = block_totals::<MR, NH, SIGNED>(sums, acts, i0, b);
                    for j in 0..NH {
                        let at = ((local(j) / 2) * nb + b) * TILE + (local(j) % 2) * HALF;
                        let scales = (
                            _mm256_loadu_ps(e.scales.as_ptr().add(at)),
                            _mm256_loadu_ps(e.offsets.as_ptr().add(at)),
                        );
                        fold_rows(&mut facc, &totals, j, scales, acts, i0, b);
                    }
                }
                store_rows(w, &facc, h, i0, out);
            }
        }
    };
}

/// AVX2: `vpmaddubsw` + `vpmaddwd` (every x86-64-v3 CPU).
pub(super) mod avx2 {
    kernels_256!("avx2,fma,f16c", false, _mm256_dpbusd_avx_epi32);
}

/// AVX-VNNI: `vpdpbusd` on ymm, VEX-encoded.
pub(super) mod avx_vnni {
    kernels_256!("avx2,fma,f16c,avxvnni", true, _mm256_dpbusd_avx_epi32);
}

/// The AVX-VNNI kernels with the EVEX-encoded `vpdpbusd` of AVX-512 VNNI + VL, the same
/// operation: it lets a machine with AVX-512 but no AVX-VNNI (this project's CI, AMD
/// Zen 4) test the VNNI form of the 256-bit kernels bit for bit.
#[cfg(test)]
pub(super) mod evex_vnni {
    kernels_256!(
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
        true,
        _mm256_dpbusd_epi32
    );
}
