//! The gated feed-forward activation, act(gate) * up, in one pass over the rows.
//!
//! Candle computes it as three elementwise ops (exp, divide, multiply), each a separate
//! pass and allocation run on the calling thread, which left the second core idle for a
//! tenth of a prefill. Here each row is computed by one task of the pool, with the
//! vectorisable `attention::exp`; every element's arithmetic is fixed, so results do
//! not depend on the batch or the thread count.

use crate::kernels::attention::exp;
use crate::kernels::DisjointMut;
use candle_core::{DType, Result, Tensor};

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// act(gate) * up for (.., f) tensors of equal shape. They are read in place (a gate
/// and up narrowed from one fused projection need no copy) when every row of f values
/// is contiguous.
pub fn gated(gate: &Tensor, up: &Tensor, activation: Activation) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        candle_core::bail!(
            "gate {:?} and up {:?} differ in shape",
            gate.dims(),
            up.dims()
        );
    }
    if gate.dtype() != DType::F32 || up.dtype() != DType::F32 || !gate.device().is_cpu() {
        candle_core::bail!("the fused activation takes f32 CPU tensors");
    }
    let f = *gate.dims().last().unwrap_or(&0);
    let rows = gate.elem_count() / f.max(1);
    let (gate, up) = (rows_of_contiguous_runs(gate)?, rows_of_contiguous_runs(up)?);
    let (gs, gl) = gate.storage_and_layout();
    let (us, ul) = up.storage_and_layout();
    let (g, g_stride) = row_view(&gs, gl)?;
    let (u, u_stride) = row_view(&us, ul)?;
    let mut out = vec![0f32; rows * f];
    let dst = DisjointMut::new(&mut out);
    let run = |range: std::ops::Range<usize>| {
        for r in range {
            // SAFETY: row r of `out` is written by this task only.
            let o = unsafe { dst.part(r * f, f) };
            gated_row(
                &g[r * g_stride..][..f],
                &u[r * u_stride..][..f],
                activation,
                o,
            );
        }
    };
    if rows >= 4 {
        crate::kernels::pool::pool().execute_chunked(rows, run);
    } else {
        run(0..rows);
    }
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// The tensor itself if its rows (last dimension) are contiguous runs at a fixed stride,
/// otherwise a contiguous copy.
fn rows_of_contiguous_runs(t: &Tensor) -> Result<Tensor> {
    let strides = t.stride();
    let dims = t.dims();
    let n = dims.len();
    let last_ok = n >= 1 && strides[n - 1] == 1;
    // The outer dimensions must collapse into one row index with stride strides[n-2].
    let outer_ok = (0..n.saturating_sub(2)).all(|i| strides[i] == strides[i + 1] * dims[i + 1]);
    if last_ok && outer_ok {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// The data from the first row on, and the distance between rows.
fn row_view<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> Result<(&'a [f32], usize)> {
    let data = match storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(d)) => &d[layout.start_offset()..],
        _ => candle_core::bail!("the fused activation takes f32 CPU tensors"),
    };
    let strides = layout.stride();
    let row_stride = if strides.len() >= 2 {
        strides[strides.len() - 2]
    } else {
        0
    };
    Ok((data, row_stride))
}

fn gated_row(gate: &[f32], up: &[f32], activation: Activation, out: &mut [f32]) {
    match activation {
        Activation::Silu => {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = silu(g) * u;
            }
        }
        Activation::GeluTanh => {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = gelu_tanh(g) * u;
            }
        }
    }
}

/// x * sigmoid(x); the exponent is clamped to exp's range (|x| > 87 saturates).
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp((-x).clamp(-87.0, 87.0)))
}

/// GELU, tanh approximation, with tanh(y) = 1 - 2 / (e^{2y} + 1).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x);
    let tanh = 1.0 - 2.0 / (exp((2.0 * y).clamp(-87.0, 87.0)) + 1.0);
    0.5 * x * (1.0 + tanh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_match_their_definitions() {
        for i in -4000..4000 {
            let x = i as f32 * 0.025;
            let silu_ref = x / (1.0 + (-x as f64).exp() as f32);
            assert!(
                (silu(x) - silu_ref).abs() <= 1e-6 * silu_ref.abs().max(1.0),
                "silu({x})"
            );
            let gelu_ref = 0.5
                * x
                * (1.0
                    + (0.797_884_6f64 * x as f64 * (1.0 + 0.044715 * (x * x) as f64)).tanh()
                        as f32);
            assert!(
                (gelu_tanh(x) - gelu_ref).abs() <= 1e-5 * gelu_ref.abs().max(1.0),
                "gelu({x}): {} vs {gelu_ref}",
                gelu_tanh(x)
            );
        }
        assert!(silu(-200.0).abs() < 1e-30);
        assert_eq!(silu(200.0), 200.0);
    }

    #[test]
    fn gated_equals_rowwise_and_is_independent_of_the_batch() {
        let vals: Vec<f32> = (0..6 * 40)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
            .collect();
        let g = Tensor::from_vec(vals.clone(), (1, 6, 40), &candle_core::Device::Cpu).unwrap();
        let u = (g.clone() * 0.5).unwrap();
        let all = gated(&g, &u, Activation::Silu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let one = gated(
            &g.narrow(1, 2, 1).unwrap(),
            &u.narrow(1, 2, 1).unwrap(),
            Activation::Silu,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_eq!(&all[80..120], &one[..]);
        assert_eq!(all[7], silu(vals[7]) * vals[7] * 0.5);
        // Gate and up read in place from one fused (1, 3, 80) projection.
        let fused =
            Tensor::from_vec(vals[..240].to_vec(), (1, 3, 80), &candle_core::Device::Cpu).unwrap();
        let (g, u) = (
            fused.narrow(2, 0, 40).unwrap(),
            fused.narrow(2, 40, 40).unwrap(),
        );
        let in_place = gated(&g, &u, Activation::GeluTanh)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let copied = gated(
            &g.contiguous().unwrap(),
            &u.contiguous().unwrap(),
            Activation::GeluTanh,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_eq!(in_place, copied);
        assert_eq!(in_place[41], gelu_tanh(vals[81]) * vals[121]);
    }
}
