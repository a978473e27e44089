//! CPU kernels the project owns. `packed` holds the weight format every GGUF quant type we
//! load is converted into; `int8_matmul` multiplies activations by it; `attention` is the
//! fused causal attention over the segmented KV cache; `activation` the gated
//! feed-forward activation; `norm` RMS normalisation; `pool` the threads they split their
//! work over.
//!
//! Why our own kernels: candle 0.11's CPU quantized matmul has no SIMD path for Q4_1 or
//! Q5_0, and its AVX-512 VNNI repack needs k % 256 == 0, which SmolLM2 (d = 576) fails, so
//! SmolLM2 Q4_1 ran at about a third of llama.cpp's decode speed.

pub mod activation;
pub mod attention;
pub mod int8_matmul;
pub mod norm;
pub mod packed;
pub mod pool;

use std::marker::PhantomData;

/// A mutable buffer whose disjoint parts are written by different tasks of the thread
/// pool (rows of an output, one row's random stream): the one place that hands a raw
/// pointer across threads. It borrows the buffer for `'a`, so the buffer outlives every
/// part handed out, and it knows the length, so every part is bounds-checked; what the
/// type cannot check is that two tasks never take overlapping parts, which is why
/// `part` is `unsafe`.
pub(crate) struct DisjointMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<'a, T> DisjointMut<'a, T> {
    pub(crate) fn new(buffer: &'a mut [T]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _borrow: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The start of the buffer, for tasks whose parts are strided (a matmul's columns);
    /// writes through it must stay below `len()`.
    pub(crate) fn as_mut_ptr(&self) -> *mut T {
        self.ptr
    }

    /// Elements `at..at + len`. Panics if the range is outside the buffer.
    ///
    /// # Safety
    /// No other task reads or writes any element of the range while the returned slice
    /// lives (parts handed to concurrent tasks must be disjoint).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, at: usize, len: usize) -> &'a mut [T] {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.len),
            "part {at}..{at}+{len} outside a buffer of {}",
            self.len
        );
        // SAFETY: the range is inside the buffer (checked above), the buffer is borrowed
        // mutably for 'a (so it lives and nothing else uses it), and the caller
        // guarantees no other task touches the range meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

impl<T> Clone for DisjointMut<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DisjointMut<'_, T> {}
// SAFETY: a DisjointMut is a `&mut [T]` split across tasks; sending it (or sharing it)
// to another thread hands out access to `T` values there, which is sound when `T: Send`.
// The aliasing rule (disjoint parts) is the `part` caller's obligation.
unsafe impl<T: Send> Send for DisjointMut<'_, T> {}
// SAFETY: as for Send: `&DisjointMut` only gives out parts through the unsafe `part`.
unsafe impl<T: Send> Sync for DisjointMut<'_, T> {}
