//! A linear layer (`y = x W^T`) that runs on whichever kernel suits the weights and device:
//! the packed int8 kernel for GGUF quantised weights on CPU, candle's `QMatMul` on GPUs
//! and for quant types we do not pack, and a dense matmul for float weights.

use crate::kernels::int8_matmul::{self, KernelPath};
use crate::kernels::packed::PackedMatrix;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, Layout, Module, Result, Shape, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Linear {
    /// Packed int8 weights and the micro-kernel that multiplies by them.
    Packed(Arc<PackedMatrix>, KernelPath),
    Quantized(QMatMul),
    /// Float weights shaped (out, in).
    Dense(Tensor),
}

impl Linear {
    /// Whether a row's output is bit-identical whatever the number of rows computed with
    /// it. True for the packed kernel (it works per output); candle's GEMM and quantized
    /// matmul choose kernels and blockings by shape, so their rows may differ in the
    /// last bits when batched.
    pub fn batch_invariant(&self) -> bool {
        matches!(self, Linear::Packed(..))
    }
}

impl Linear {
    /// A GGUF tensor on candle's quantized matmul (the loader packs what it can for the
    /// int8 kernel itself, from the file's bytes).
    pub fn from_qtensor(q: QTensor) -> Result<Self> {
        Ok(Linear::Quantized(QMatMul::from_qtensor(q)?))
    }

    /// Stacks layers along the output dimension when they share a packed format, so one
    /// pass over the input computes them all (q/k/v, gate/up). None if they cannot fuse.
    pub fn fuse(parts: &[&Linear]) -> Option<Linear> {
        if let Some(dense) = Self::fuse_dense(parts) {
            return Some(dense);
        }
        let packed: Option<Vec<(&PackedMatrix, KernelPath)>> = parts
            .iter()
            .map(|l| match l {
                Linear::Packed(p, path) => Some((p.as_ref(), *path)),
                _ => None,
            })
            .collect();
        let packed = packed?;
        let path = packed.first()?.1;
        if packed.iter().any(|(_, p)| *p != path) {
            return None;
        }
        let matrices: Vec<&PackedMatrix> = packed.iter().map(|(m, _)| *m).collect();
        PackedMatrix::concat_rows(&matrices).map(|p| Linear::Packed(Arc::new(p), path))
    }
}

impl Linear {
    /// Dense matrices of one dtype and input width stacked into one (out, in) matrix:
    /// one GEMM instead of several on a GPU.
    fn fuse_dense(parts: &[&Linear]) -> Option<Linear> {
        let dense: Vec<&Tensor> = parts
            .iter()
            .map(|l| match l {
                Linear::Dense(t) => Some(t),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let first = dense.first()?;
        let alike = dense
            .iter()
            .all(|t| t.dtype() == first.dtype() && t.dims().get(1) == first.dims().get(1));
        if !alike || first.rank() != 2 {
            return None;
        }
        Tensor::cat(&dense, 0).ok().map(Linear::Dense)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Packed(p, path) => x.contiguous()?.apply_op1_no_bwd(&PackedOp {
                w: p.clone(),
                path: *path,
            }),
            Linear::Quantized(q) => q.forward(x),
            Linear::Dense(w) => {
                let wanted = x.dtype();
                let x = x.to_dtype(w.dtype())?;
                let y = match *x.dims() {
                    [b, s, k] => x
                        .reshape((b * s, k))?
                        .matmul(&w.t()?)?
                        .reshape((b, s, ()))?,
                    _ => x.matmul(&w.t()?)?,
                };
                // f16 weights multiply in f16; the residual stream stays in its dtype.
                y.to_dtype(wanted)
            }
        }
    }
}

struct PackedOp {
    w: Arc<PackedMatrix>,
    path: KernelPath,
}

impl CustomOp1 for PackedOp {
    fn name(&self) -> &'static str {
        "packed-int8-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("packed matmul expects f32 activations"),
        };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("packed matmul needs contiguous input".into())
        })?;
        let x = &x[start..end];
        let dims = layout.shape().dims();
        let k = *dims.last().unwrap_or(&0);
        if k != self.w.k {
            candle_core::bail!(
                "packed matmul: input has {k} features, weight expects {}",
                self.w.k
            );
        }
        let m = x.len() / k;
        let y = int8_matmul::matmul(&self.w, x, m, self.path);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("non-empty dims") = self.w.n;
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }
}
