//! RMS normalisation of rows on the kernel pool.
//!
//! Why our own: candle-nn's CPU `rms_norm` splits rows over rayon's global pool, a
//! second set of threads beside the kernel pool that spins between uses and takes cores
//! from it (on a shared node the two fork-join pools also wait for each other's
//! descheduled threads). The arithmetic is candle's, term for term (a sequential f32
//! sum of squares, `x / sqrt(mean + eps) * w`), so results are bit-identical: the
//! reference path keeps candle's op and `tests` compare the two.

use super::DisjointMut;

/// `out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w` for each row `r` of `x` (rows of
/// `w.len()` values).
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    assert!(dim > 0 && x.len().is_multiple_of(dim) && out.len() == x.len());
    let rows = x.len() / dim;
    let dst = DisjointMut::new(out);
    let run = |range: std::ops::Range<usize>| {
        for r in range {
            // SAFETY: row r of `out` is written by this task only.
            let o = unsafe { dst.part(r * dim, dim) };
            rms_row(&x[r * dim..(r + 1) * dim], w, eps, o);
        }
    };
    // A decode step's few rows cost less than waking the pool.
    if rows > 1 && x.len() >= 1 << 14 {
        super::pool::pool().execute_chunked(rows, run);
    } else {
        run(0..rows);
    }
}

fn rms_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2 = x.iter().map(|&v| v * v).sum::<f32>();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &a) in out.iter_mut().zip(x).zip(w) {
        *o = v / m * a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn bit_identical_to_candles_rms_norm() {
        // Row counts on both sides of candle's serial/parallel switch (32 rows) and of
        // ours; values spanning magnitudes so rounding differences would show.
        for (rows, dim) in [(1, 576), (7, 64), (33, 576), (200, 96)] {
            let x: Vec<f32> = (0..rows * dim)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.37f32.powi((i % 5) as i32))
                .collect();
            let w: Vec<f32> = (0..dim).map(|i| 0.5 + (i % 13) as f32 * 0.11).collect();
            let eps = 1e-5;
            let xt = Tensor::from_vec(x.clone(), (rows, dim), &Device::Cpu).unwrap();
            let wt = Tensor::from_vec(w.clone(), dim, &Device::Cpu).unwrap();
            let want: Vec<f32> = candle_nn::ops::rms_norm(&xt, &wt, eps)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut got = vec![0.0; rows * dim];
            rms_norm_rows(&x, &w, eps, &mut got);
            let same = want
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{rows} x {dim}: differs from candle");
        }
    }
}
