//! The packed int8 matmul in plain Rust, for every target: fixed-size arrays and
//! element-wise loops that the compiler vectorises (NEON on aarch64, the build's
//! baseline on x86-64), no bounds checks inside the inner loops.
//!
//! A group of 4 inputs of a tile is 64 bytes, `[16 rows][4 inputs]`. Instead of a dot
//! product per row (a strided reduction), each weight is multiplied by its input's
//! activation, from a pattern of the group's 4 activations repeated, and added into
//! one of 64 sums; once per block each row's 4 sums are added. The products fit in i16 (|u| <= 255,
//! |x| <= 127), a block's sums too for types of up to 6 bits, and every sum is exact, so
//! the results are the scalar reference's bits.

use super::{PackedMatrix, QuantizedActs, TILE};
use half::slice::HalfFloatSliceExt;

/// Weights in one group of 4 inputs of a tile: 16 rows x 4.
const GROUP: usize = TILE * 4;

thread_local! {
    /// Each kernel thread's activation patterns, reused from call to call.
    static PATTERNS: std::cell::RefCell<Vec<i16>> = std::cell::RefCell::default();
}

/// Computes `tiles` of the output for every activation row.
///
/// # Safety
/// `out` points to `acts.m * w.n` writable f32 values, of which the columns of `tiles`
/// are not accessed by anyone else during the call.
pub(super) unsafe fn run_tiles(
    w: &PackedMatrix,
    acts: &QuantizedActs,
    tiles: std::ops::Range<usize>,
    out: *mut f32,
) {
    PATTERNS.with_borrow_mut(|patterns| {
        let mut i = 0;
        while i < acts.m {
            let rows = if acts.m - i >= 4 { 4 } else { 1 };
            fill_patterns(acts, i, rows, patterns);
            for t in tiles.clone() {
                // SAFETY (both): the caller's contract, passed on; rows i..i+rows exist.
                if rows == 4 {
                    unsafe { store(w, &tile_rows::<4>(w, t, acts, patterns, i), t, i, out) };
                } else {
                    unsafe { store(w, &tile_rows::<1>(w, t, acts, patterns, i), t, i, out) };
                }
            }
            i += rows;
        }
    })
}

/// Writes tile t's results of rows i0.., its rows past `w.n` left out.
///
/// # Safety
/// `out` points to `m * w.n` f32 values (m >= i0 + results.len()) whose columns of tile
/// t the caller owns.
unsafe fn store(w: &PackedMatrix, results: &[[f32; TILE]], t: usize, i0: usize, out: *mut f32) {
    for (r, row) in results.iter().enumerate() {
        for (lane, &v) in row.iter().enumerate() {
            let col = t * TILE + lane;
            if col < w.n {
                // SAFETY: row i0 + r < m and col < w.n, so the index is inside `out`;
                // the column is tile t's (the caller's contract).
                unsafe { *out.add((i0 + r) * w.n + col) = v };
            }
        }
    }
}

/// For rows i0..i0+rows and each group of 4 inputs, that group's activations repeated
/// to 16 values: `[row][group][16]`.
fn fill_patterns(acts: &QuantizedActs, i0: usize, rows: usize, patterns: &mut Vec<i16>) {
    let (k, groups) = (acts.k, acts.k / 4);
    patterns.resize(rows * groups * 16, 0);
    for r in 0..rows {
        let x = &acts.qs[(i0 + r) * k..(i0 + r + 1) * k];
        let dst = &mut patterns[r * groups * 16..(r + 1) * groups * 16];
        for (p, x4) in dst.chunks_exact_mut(16).zip(x.chunks_exact(4)) {
            let x4 = [x4[0] as i16, x4[1] as i16, x4[2] as i16, x4[3] as i16];
            for copy in p.chunks_exact_mut(4) {
                copy.copy_from_slice(&x4);
            }
        }
    }
}

/// MR activation rows from i0 against tile t: each row's 16 results.
fn tile_rows<const MR: usize>(
    w: &PackedMatrix,
    t: usize,
    acts: &QuantizedActs,
    patterns: &[i16],
    i0: usize,
) -> [[f32; TILE]; MR] {
    let (nb, gpb) = (w.blocks_per_row(), w.block / 4);
    let groups = w.k / 4;
    // Products are at most (2^u_bits - 1) * 127; where a block's worth of them fits in
    // i16 they are summed there (half the width, so twice the lanes an instruction).
    let in_i16 = ((1i32 << w.u_bits) - 1) * 127 * gpb as i32 <= i16::MAX as i32;
    let mut facc = [[0f32; TILE]; MR];
    let mut u = [0u8; GROUP];
    for b in 0..nb {
        let mut isums = [[0i32; TILE]; MR];
        if in_i16 {
            let mut sums16 = [[0i16; GROUP]; MR];
            for g in b * gpb..(b + 1) * gpb {
                group_u(w, t, b, g, &mut u);
                for (r, sum) in sums16.iter_mut().enumerate() {
                    let pattern = pattern(patterns, r * groups + g);
                    for (sum, u) in sum.chunks_exact_mut(16).zip(u.chunks_exact(16)) {
                        for e in 0..16 {
                            // No overflow: the bound checked above.
                            sum[e] = sum[e].wrapping_add(u[e] as i16 * pattern[e]);
                        }
                    }
                }
            }
            for (isum, narrow) in isums.iter_mut().zip(&sums16) {
                for lane in 0..TILE {
                    isum[lane] = narrow[4 * lane] as i32
                        + narrow[4 * lane + 1] as i32
                        + narrow[4 * lane + 2] as i32
                        + narrow[4 * lane + 3] as i32;
                }
            }
        } else {
            let mut sums = [[0i32; GROUP]; MR];
            for g in b * gpb..(b + 1) * gpb {
                group_u(w, t, b, g, &mut u);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let pattern = pattern(patterns, r * groups + g);
                    for (sum, u) in sum.chunks_exact_mut(16).zip(u.chunks_exact(16)) {
                        for e in 0..16 {
                            sum[e] += (u[e] as i16 * pattern[e]) as i32;
                        }
                    }
                }
            }
            for (isum, sum) in isums.iter_mut().zip(&sums) {
                for lane in 0..TILE {
                    isum[lane] =
                        sum[4 * lane] + sum[4 * lane + 1] + sum[4 * lane + 2] + sum[4 * lane + 3];
                }
            }
        }
        let (scales, offsets) = block_scales(w, t, b);
        for (r, isum) in isums.iter().enumerate() {
            let at = (i0 + r) * nb + b;
            let (dx, xsum) = (acts.d[at], acts.xsum[at]);
            for lane in 0..TILE {
                let acc = (isum[lane] as f32).mul_add(scales[lane] * dx, facc[r][lane]);
                facc[r][lane] = offsets[lane].mul_add(xsum, acc);
            }
        }
    }
    facc
}

/// Group g's activation pattern (see `fill_patterns`).
#[inline]
fn pattern(patterns: &[i16], group: usize) -> &[i16; 16] {
    patterns[group * 16..group * 16 + 16]
        .try_into()
        .expect("16 values")
}

/// The scales d*sc and offsets (c*s or dm*m) of block b of tile t's 16 rows: the
/// products `PackedMatrix::scale_at` and `offset_at` make, a tile at a time.
fn block_scales(w: &PackedMatrix, t: usize, b: usize) -> ([f32; TILE], [f32; TILE]) {
    let (nb, ns) = (w.blocks_per_row(), w.supers_per_row());
    let at_super = (t * ns + b / w.blocks_per_super) * TILE;
    let at_block = (t * nb + b) * TILE;
    let mut d = [0f32; TILE];
    // The slice conversion uses the CPU's f16 instructions where it has them (exact,
    // as every f16 is an f32).
    w.d[at_super..at_super + TILE].convert_to_f32_slice(&mut d);
    let sc = &w.sc[at_block..at_block + TILE];
    let scales: [f32; TILE] = std::array::from_fn(|l| d[l] * sc[l] as f32);
    let offsets: [f32; TILE] = match w.offset_factor {
        Some(c) => std::array::from_fn(|l| c * scales[l]),
        None => {
            let mut dm = [0f32; TILE];
            w.dm[at_super..at_super + TILE].convert_to_f32_slice(&mut dm);
            let m = &w.m[at_block..at_block + TILE];
            std::array::from_fn(|l| dm[l] * m[l] as f32)
        }
    };
    (scales, offsets)
}

/// The `u` of group g (in block b) of tile t, `[16 rows][4 inputs]`.
#[inline(always)]
fn group_u(w: &PackedMatrix, t: usize, b: usize, g: usize, u: &mut [u8; GROUP]) {
    if !w.nibbles {
        let at = t * w.tile_bytes() + g * GROUP;
        u.copy_from_slice(&w.qs[at..at + GROUP]);
        return;
    }
    // Group 2G in the low nibbles of a pair's 64 bytes, 2G+1 in the high ones.
    let at = t * w.tile_bytes() + (g / 2) * GROUP;
    let packed: &[u8; GROUP] = w.qs[at..at + GROUP].try_into().expect("64 bytes");
    let shift = 4 * (g % 2) as u32;
    for e in 0..GROUP {
        u[e] = (packed[e] >> shift) & 0x0F;
    }
    if w.high_bits > 0 {
        let hb = w.high_bits as u32;
        let in_block = (g % (w.block / 4)) as u32;
        let at = (t * w.blocks_per_row() + b) * GROUP;
        let plane: &[u8; GROUP] = w.high[at..at + GROUP].try_into().expect("64 bytes");
        let mask = (1u8 << hb) - 1;
        for e in 0..GROUP {
            u[e] |= ((plane[e] >> (hb * in_block)) & mask) << 4;
        }
    } else if let Some(cb) = w.codebook {
        for v in u.iter_mut() {
            *v = cb[(*v & 0x0F) as usize];
        }
    }
}
