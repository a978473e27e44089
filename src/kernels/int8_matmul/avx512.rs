//! The packed int8 matmul and activation quantisation on AVX-512 VNNI: `vpdpbusd` on
//! 512-bit registers, one 64-byte load feeding a tile's 16 rows x 4 inputs. Chosen at
//! run time (`KernelPath::Avx512Vnni`) on CPUs that have it.

use super::{PackedMatrix, QuantizedActs, RowOut, TILE};
use std::arch::x86_64::*;

/// Calls `f::<NT, NIBBLES, CODEBOOK, HB, DERIVED>(args)` with the const parameters
/// of `w`'s layout. The layout is chosen once per call: a branch inside the block
/// loop cost the byte layout 10% of its prefill speed.
macro_rules! for_layout {
    ($w:expr, $f:ident::<$nt:ident>($($arg:expr),*)) => {{
        let w: &PackedMatrix = $w;
        match (w.nibbles, w.codebook.is_some(), w.high_bits, w.offset_factor.is_some()) {
            (false, _, _, true) => $f::<$nt, false, false, 0, true>($($arg),*),
            (false, _, _, false) => $f::<$nt, false, false, 0, false>($($arg),*),
            (true, true, _, true) => $f::<$nt, true, true, 0, true>($($arg),*),
            (true, true, _, false) => $f::<$nt, true, true, 0, false>($($arg),*),
            (true, false, 0, true) => $f::<$nt, true, false, 0, true>($($arg),*),
            (true, false, 0, false) => $f::<$nt, true, false, 0, false>($($arg),*),
            (true, false, 1, true) => $f::<$nt, true, false, 1, true>($($arg),*),
            (true, false, 1, false) => $f::<$nt, true, false, 1, false>($($arg),*),
            (true, false, _, true) => $f::<$nt, true, false, 2, true>($($arg),*),
            (true, false, _, false) => $f::<$nt, true, false, 2, false>($($arg),*),
        }
    }};
}

/// `quantize_row_scalar` in 16-lane steps (block a multiple of 16).
///
/// # Safety
/// The CPU supports AVX-512F and BW; `block` is a multiple of 16 dividing `x.len()`,
/// `out.qs` holds `x.len()` values and the others one per block.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row(x: &[f32], block: usize, out: RowOut<'_>) {
    let RowOut { qs, d, xsum, qsum } = out;
    assert!(qs.len() >= x.len() && block.is_multiple_of(16));
    let lim = _mm512_set1_ps(127.0);
    let nlim = _mm512_set1_ps(-127.0);
    for (b, vals) in x.chunks_exact(block).enumerate() {
        let mut m = _mm512_setzero_ps();
        for c in vals.chunks_exact(16) {
            // SAFETY: `c` holds 16 f32 (chunks_exact).
            m = _mm512_max_ps(m, _mm512_abs_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }));
        }
        let amax = _mm512_reduce_max_ps(m);
        let dx = amax / 127.0;
        let inv = _mm512_set1_ps(if dx > 0.0 { 1.0 / dx } else { 0.0 });
        let mut sum = _mm512_setzero_si512();
        for (i, c) in vals.chunks_exact(16).enumerate() {
            // SAFETY: `c` holds 16 f32 (chunks_exact).
            let v = _mm512_min_ps(
                _mm512_max_ps(
                    _mm512_mul_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, inv),
                    nlim,
                ),
                lim,
            );
            // Rounds to nearest, ties to even (the default MXCSR mode).
            let q = _mm512_cvtps_epi32(v);
            sum = _mm512_add_epi32(sum, q);
            // SAFETY: b * block + i * 16 + 16 <= x.len() <= qs.len() (asserted above).
            unsafe {
                _mm_storeu_si128(
                    qs.as_mut_ptr().add(b * block + i * 16) as *mut __m128i,
                    _mm512_cvtsepi32_epi8(q),
                )
            };
        }
        let sum = _mm512_reduce_add_epi32(sum);
        d[b] = dx;
        xsum[b] = dx * sum as f32;
        qsum[b] = sum;
    }
}

/// Every activation row against the NT tiles starting at t0: four rows at a time,
/// then one by one.
///
/// # Safety
/// As `tiles`, for every row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn all_rows<const NT: usize>(
    w: &PackedMatrix,
    acts: &QuantizedActs,
    t0: usize,
    out: *mut f32,
) {
    // SAFETY: the caller's contract, passed on.
    unsafe { for_layout!(w, rows_of::<NT>(w, acts, t0, out)) }
}

/// `all_rows` for one layout.
///
/// # Safety
/// As `all_rows`; `NIBBLES` is `w.nibbles`, `CODEBOOK` whether `w.codebook` is set,
/// `HB` is `w.high_bits`, `DERIVED` whether `w.offset_factor` is set.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_of<
    const NT: usize,
    const NIBBLES: bool,
    const CODEBOOK: bool,
    const HB: u8,
    const DERIVED: bool,
>(
    w: &PackedMatrix,
    acts: &QuantizedActs,
    t0: usize,
    out: *mut f32,
) {
    let mut i = 0;
    // SAFETY: rows i..i+MR are below acts.m; the rest is the caller's contract.
    while i + 4 <= acts.m {
        unsafe { tiles::<4, NT, NIBBLES, CODEBOOK, HB, DERIVED>(w, acts, t0, i, out) };
        i += 4;
    }
    while i < acts.m {
        // SAFETY: row i is below acts.m; the rest as above.
        unsafe { tiles::<1, NT, NIBBLES, CODEBOOK, HB, DERIVED>(w, acts, t0, i, out) };
        i += 1;
    }
}

/// The `u` of groups 2G and 2G+1 (16 rows x 4 values each) from one 64-byte vector
/// of their nibbles; with HB > 0, ORs in their bits above 4 from the lowest 2*HB
/// bits of each byte of `plane` and shifts the plane down to the next pair's. With
/// CODEBOOK the nibbles are indices, looked up in `table`.
///
/// # Safety
/// The CPU supports AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn unpack_pair<const HB: u8, const CODEBOOK: bool>(
    packed: __m512i,
    plane: &mut __m512i,
    table: __m512i,
) -> (__m512i, __m512i) {
    let low = _mm512_set1_epi8(0x0F);
    let mut lo = _mm512_and_si512(packed, low);
    let mut hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
    if HB > 0 {
        // Group 2G's bits go to bit 4 of each byte, 2G+1's too, then the next pair's
        // move down. (16-bit shifts carry bits across bytes only into positions the
        // mask drops or the block's remaining pairs never read.) The shifts, by
        // 4 - HB and 2 * HB, are immediates, so spelt out.
        let high_mask = _mm512_set1_epi8((((1u16 << HB) - 1) << 4) as i8);
        lo = _mm512_or_si512(
            lo,
            _mm512_and_si512(_mm512_slli_epi16(*plane, 4), high_mask),
        );
        let (up, next) = if HB == 1 {
            (_mm512_slli_epi16(*plane, 3), _mm512_srli_epi16(*plane, 2))
        } else {
            (_mm512_slli_epi16(*plane, 2), _mm512_srli_epi16(*plane, 4))
        };
        hi = _mm512_or_si512(hi, _mm512_and_si512(up, high_mask));
        *plane = next;
    }
    if CODEBOOK {
        // Index (0..15, bit 7 clear) -> u: one table lookup a vector.
        lo = _mm512_shuffle_epi8(table, lo);
        hi = _mm512_shuffle_epi8(table, hi);
    }
    (lo, hi)
}

/// The code book in each 128-bit lane, for `vpshufb`'s per-lane lookup (zero when
/// there is none).
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn codebook_table(w: &PackedMatrix) -> __m512i {
    match w.codebook {
        // SAFETY: `cb` holds 16 bytes.
        Some(cb) => unsafe {
            _mm512_broadcast_i32x4(_mm_loadu_si128(cb.as_ptr() as *const __m128i))
        },
        None => _mm512_setzero_si512(),
    }
}

/// One tile's d, sc, dm and m (dm and m null where they are not stored).
type TileScales = (*const half::f16, *const i8, *const half::f16, *const i8);

fn tile_scales(w: &PackedMatrix, t: usize) -> TileScales {
    let (nb, ns) = (w.blocks_per_row(), w.supers_per_row());
    // `wrapping_add`: forming the pointers needs no claim about the arrays' extent.
    let (d, sc) = (
        w.d.as_ptr().wrapping_add(t * ns * TILE),
        w.sc.as_ptr().wrapping_add(t * nb * TILE),
    );
    if w.offset_factor.is_some() {
        (d, sc, std::ptr::null(), std::ptr::null())
    } else {
        let dm = w.dm.as_ptr().wrapping_add(t * ns * TILE);
        (d, sc, dm, w.m.as_ptr().wrapping_add(t * nb * TILE))
    }
}

/// The scales d*sc and offsets (c*s or dm*m) of block `b` of one tile's 16 rows:
/// the decoder's f32 products, so its bits.
///
/// # Safety
/// `tile` is `tile_scales` of a tile of `w` and b < w.blocks_per_row(); DERIVED is
/// whether `w.offset_factor` is set and `factor` holds it; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block_scales<const DERIVED: bool>(
    w: &PackedMatrix,
    tile: TileScales,
    b: usize,
    factor: __m512,
) -> (__m512, __m512) {
    let (d, sc, dm, m) = tile;
    let sb = b >> w.blocks_per_super.trailing_zeros();
    // SAFETY: block b and its super-block are inside the tile's arrays.
    unsafe {
        let sv = _mm512_mul_ps(load_f16(d.add(sb * TILE)), load_i8(sc.add(b * TILE)));
        let ov = if DERIVED {
            _mm512_mul_ps(factor, sv)
        } else {
            _mm512_mul_ps(load_f16(dm.add(sb * TILE)), load_i8(m.add(b * TILE)))
        };
        (sv, ov)
    }
}

/// Up to TILES_PER_TASK tiles of a packed matrix with one byte per `u` and f32
/// scales and offsets, the layout `tiles_expanded` reads.
#[derive(Default)]
struct Expanded {
    qs: Vec<u8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

thread_local! {
    /// Each kernel thread's expansion buffer (an 8B model's widest tile group is
    /// 3 x 16 x 14336 bytes), reused from call to call.
    static EXPANDED: std::cell::RefCell<Expanded> = std::cell::RefCell::default();
}

/// `all_rows` for calls of many rows: expands the NT tiles at t0 once (`expand`),
/// then multiplies every row by the expansion. The same operations in the same
/// order per output, so the same bits as `all_rows` and `scalar_tile`.
///
/// # Safety
/// As `all_rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn expanded_rows<const NT: usize>(
    w: &PackedMatrix,
    acts: &QuantizedActs,
    t0: usize,
    out: *mut f32,
) {
    EXPANDED.with_borrow_mut(|e| {
        let (k, nb) = (w.k, w.blocks_per_row());
        e.qs.resize(NT * TILE * k, 0);
        e.scales.resize(NT * TILE * nb, 0.0);
        e.offsets.resize(NT * TILE * nb, 0.0);
        // SAFETY: the caller's contract, passed on; `e` holds NT tiles.
        unsafe {
            for_layout!(w, expand::<NT>(w, t0, e));
            let mut i = 0;
            while i + 4 <= acts.m {
                tiles_expanded::<4, NT>(w, e, acts, t0, i, out);
                i += 4;
            }
            while i < acts.m {
                tiles_expanded::<1, NT>(w, e, acts, t0, i, out);
                i += 1;
            }
        }
    })
}

/// Writes the NT tiles of `w` at t0 into `e`: `u` a byte each (the byte layout's
/// order) and each block's f32 scale and offset.
///
/// # Safety
/// The CPU supports AVX-512F/BW; tiles t0..t0+NT exist in `w`; `e` holds NT tiles
/// of w.k values; the const parameters are `w`'s layout (as in `rows_of`).
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn expand<
    const NT: usize,
    const NIBBLES: bool,
    const CODEBOOK: bool,
    const HB: u8,
    const DERIVED: bool,
>(
    w: &PackedMatrix,
    t0: usize,
    e: &mut Expanded,
) {
    let (k, nb, gpb) = (w.k, w.blocks_per_row(), w.block / 4);
    let table = unsafe { codebook_table(w) };
    let factor = _mm512_set1_ps(w.offset_factor.unwrap_or(0.0));
    for j in 0..NT {
        let t = t0 + j;
        // SAFETY: tile t's bytes and planes are inside `w` and tile j's inside `e`
        // (the contract); every offset below stays within one tile.
        unsafe {
            let src = w.qs.as_ptr().add(t * w.tile_bytes());
            let dst = e.qs.as_mut_ptr().add(j * TILE * k);
            if NIBBLES {
                for b in 0..nb {
                    let mut plane = if HB > 0 {
                        _mm512_loadu_si512(
                            w.high.as_ptr().add((t * nb + b) * TILE * 4) as *const __m512i
                        )
                    } else {
                        _mm512_setzero_si512()
                    };
                    for pair in b * gpb / 2..(b + 1) * gpb / 2 {
                        let packed = _mm512_loadu_si512(src.add(pair * TILE * 4) as *const __m512i);
                        let (lo, hi) = unpack_pair::<HB, CODEBOOK>(packed, &mut plane, table);
                        _mm512_storeu_si512(dst.add(2 * pair * TILE * 4) as *mut __m512i, lo);
                        _mm512_storeu_si512(dst.add((2 * pair + 1) * TILE * 4) as *mut __m512i, hi);
                    }
                }
            } else {
                std::ptr::copy_nonoverlapping(src, dst, TILE * k);
            }
            let scales = tile_scales(w, t);
            for b in 0..nb {
                let (sv, ov) = block_scales::<DERIVED>(w, scales, b, factor);
                let at = (j * nb + b) * TILE;
                _mm512_storeu_ps(e.scales.as_mut_ptr().add(at), sv);
                _mm512_storeu_ps(e.offsets.as_mut_ptr().add(at), ov);
            }
        }
    }
}

/// `tiles` on an expansion of the NT tiles of `w` at t0: MR activation rows from i0.
///
/// # Safety
/// As `tiles`; `e` is `expand` of those tiles.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)]
unsafe fn tiles_expanded<const MR: usize, const NT: usize>(
    w: &PackedMatrix,
    e: &Expanded,
    acts: &QuantizedActs,
    t0: usize,
    i0: usize,
    out: *mut f32,
) {
    // SAFETY: as in `tiles`: every offset stays inside `e` (NT tiles), `acts` and
    // this call's columns of `out`.
    unsafe {
        let (k, nb, gpb) = (w.k, w.blocks_per_row(), w.block / 4);
        let wq: [*const u8; NT] = std::array::from_fn(|j| e.qs.as_ptr().add(j * TILE * k));
        let xq = acts.qs.as_ptr();
        let mut facc = [[_mm512_setzero_ps(); NT]; MR];
        for b in 0..nb {
            let mut iacc = [[_mm512_setzero_si512(); NT]; MR];
            byte_groups::<MR, NT>(wq, xq.add(i0 * k), k, b * gpb..(b + 1) * gpb, &mut iacc);
            for j in 0..NT {
                let at = (j * nb + b) * TILE;
                let sv = _mm512_loadu_ps(e.scales.as_ptr().add(at));
                let ov = _mm512_loadu_ps(e.offsets.as_ptr().add(at));
                fold_block::<MR, NT>(&mut facc, &iacc, j, (sv, ov), acts, i0 * nb + b, nb);
            }
        }
        store_tiles::<MR, NT>(w, facc, t0, i0, out);
    }
}

/// Adds the u8 x i8 dot products of groups `groups` (byte layout) of the NT tiles at
/// `wq` with MR activation rows (from `xq`, rows `k` apart) to `iacc`.
///
/// # Safety
/// The groups are inside each tile at `wq` and each of the MR rows at `xq`; the CPU
/// supports AVX-512F/BW and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn byte_groups<const MR: usize, const NT: usize>(
    wq: [*const u8; NT],
    xq: *const i8,
    k: usize,
    groups: std::ops::Range<usize>,
    iacc: &mut [[__m512i; NT]; MR],
) {
    // SAFETY: the caller's contract.
    unsafe {
        for g in groups {
            let wv: [__m512i; NT] = std::array::from_fn(|j| {
                _mm512_loadu_si512(wq[j].add(g * TILE * 4) as *const __m512i)
            });
            for r in 0..MR {
                let x4 = _mm512_set1_epi32((xq.add(r * k + g * 4) as *const i32).read_unaligned());
                for j in 0..NT {
                    iacc[r][j] = _mm512_dpbusd_epi32(iacc[r][j], wv[j], x4);
                }
            }
        }
    }
}

/// Folds one block's integer sums of tile j into the MR rows' results: the
/// module comment's `acc = fma(isum, s*dx, acc); acc = fma(o, xsum, acc)`, for the
/// block whose activation index in the first row is `at` (rows `nb` apart).
///
/// # Safety
/// Rows' indices at + r*nb are inside `acts`; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fold_block<const MR: usize, const NT: usize>(
    facc: &mut [[__m512; NT]; MR],
    iacc: &[[__m512i; NT]; MR],
    j: usize,
    (sv, ov): (__m512, __m512),
    acts: &QuantizedActs,
    at: usize,
    nb: usize,
) {
    for r in 0..MR {
        // SAFETY: the caller's contract.
        let (dx, xsum) = unsafe {
            (
                *acts.d.get_unchecked(at + r * nb),
                *acts.xsum.get_unchecked(at + r * nb),
            )
        };
        let scale = _mm512_mul_ps(sv, _mm512_set1_ps(dx));
        facc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][j]), scale, facc[r][j]);
        facc[r][j] = _mm512_fmadd_ps(ov, _mm512_set1_ps(xsum), facc[r][j]);
    }
}

/// Writes MR rows x NT tiles of results, the last tile's rows past `w.n` left out.
///
/// # Safety
/// `out` points to `m * w.n` f32 values (m > i0 + MR - 1) whose columns of these
/// tiles this call owns; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_tiles<const MR: usize, const NT: usize>(
    w: &PackedMatrix,
    facc: [[__m512; NT]; MR],
    t0: usize,
    i0: usize,
    out: *mut f32,
) {
    for j in 0..NT {
        let t = t0 + j;
        let valid = (w.n - t * TILE).min(TILE);
        let mask: __mmask16 = if valid == TILE {
            0xFFFF
        } else {
            (1u16 << valid) - 1
        };
        for (r, row) in facc.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { _mm512_mask_storeu_ps(out.add((i0 + r) * w.n + t * TILE), mask, row[j]) };
        }
    }
}

/// 16 f16 values as f32 (exact).
///
/// # Safety
/// `p` points to 16 readable f16 values; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_f16(p: *const half::f16) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
}

/// 16 i8 values as f32 (exact).
///
/// # Safety
/// `p` points to 16 readable i8 values; the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_i8(p: *const i8) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))) }
}

/// MR activation rows starting at i0 against the 16 weight rows of each of the NT
/// tiles starting at t0. Per output, the operations and their order are those of
/// `scalar_tile`; MR and NT only change how many outputs are in flight.
///
/// # Safety
/// The CPU supports AVX-512F/BW and VNNI; tiles t0..t0+NT exist in `w`; rows
/// i0..i0+MR exist in `acts` (which matches `w`'s k and block); `out` points to
/// `acts.m * w.n` writable f32 values whose columns of these tiles no one else
/// accesses during the call.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
// Register arrays indexed by row and tile read best as index loops.
#[allow(clippy::needless_range_loop)]
pub(super) unsafe fn tiles<
    const MR: usize,
    const NT: usize,
    const NIBBLES: bool,
    const CODEBOOK: bool,
    const HB: u8,
    const DERIVED: bool,
>(
    w: &PackedMatrix,
    acts: &QuantizedActs,
    t0: usize,
    i0: usize,
    out: *mut f32,
) {
    // SAFETY: every pointer offset stays inside its buffer by the layout of
    // PackedMatrix/QuantizedActs and the index ranges of the contract; the stores
    // write only this call's tiles of `out`.
    unsafe {
        let (k, block) = (w.k, w.block);
        let (nb, gpb) = (k / block, block / 4);
        debug_assert!(w.blocks_per_super.is_power_of_two());
        debug_assert!(!w.nibbles || gpb.is_multiple_of(2));
        debug_assert!(HB == 0 || gpb * HB as usize == 8);
        let wq: [*const u8; NT] =
            std::array::from_fn(|j| w.qs.as_ptr().add((t0 + j) * w.tile_bytes()));
        // The high plane, d and sc of each tile; dm and m unless derived (no pointers
        // into arrays that are empty for this layout).
        let wh: [*const u8; NT] = std::array::from_fn(|j| {
            if HB > 0 {
                w.high.as_ptr().add((t0 + j) * nb * TILE * 4)
            } else {
                std::ptr::null()
            }
        });
        let scales: [_; NT] = std::array::from_fn(|j| tile_scales(w, t0 + j));
        let factor = _mm512_set1_ps(w.offset_factor.unwrap_or(0.0));
        let xq = acts.qs.as_ptr();
        let table = codebook_table(w);
        let mut facc = [[_mm512_setzero_ps(); NT]; MR];
        for b in 0..nb {
            let mut iacc = [[_mm512_setzero_si512(); NT]; MR];
            if NIBBLES {
                // One 64-byte load holds groups 2G (low nibbles) and 2G+1 (high);
                // the integer sums are exact, so the result is the byte layout's.
                let mut plane: [__m512i; NT] = std::array::from_fn(|j| {
                    if HB > 0 {
                        _mm512_loadu_si512(wh[j].add(b * TILE * 4) as *const __m512i)
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                for pair in b * gpb / 2..(b + 1) * gpb / 2 {
                    let packed: [__m512i; NT] = std::array::from_fn(|j| {
                        _mm512_loadu_si512(wq[j].add(pair * TILE * 4) as *const __m512i)
                    });
                    let mut lo = [_mm512_setzero_si512(); NT];
                    let mut hi = [_mm512_setzero_si512(); NT];
                    for j in 0..NT {
                        (lo[j], hi[j]) =
                            unpack_pair::<HB, CODEBOOK>(packed[j], &mut plane[j], table);
                    }
                    for r in 0..MR {
                        let at = xq.add((i0 + r) * k + pair * 8) as *const i32;
                        let x_lo = _mm512_set1_epi32(at.read_unaligned());
                        let x_hi = _mm512_set1_epi32(at.add(1).read_unaligned());
                        for j in 0..NT {
                            iacc[r][j] = _mm512_dpbusd_epi32(iacc[r][j], lo[j], x_lo);
                            iacc[r][j] = _mm512_dpbusd_epi32(iacc[r][j], hi[j], x_hi);
                        }
                    }
                }
            } else {
                let groups = b * gpb..(b + 1) * gpb;
                byte_groups::<MR, NT>(wq, xq.add(i0 * k), k, groups, &mut iacc);
            }
            for j in 0..NT {
                let (sv, ov) = block_scales::<DERIVED>(w, scales[j], b, factor);
                fold_block::<MR, NT>(&mut facc, &iacc, j, (sv, ov), acts, i0 * nb + b, nb);
            }
        }
        store_tiles::<MR, NT>(w, facc, t0, i0, out);
    }
}
