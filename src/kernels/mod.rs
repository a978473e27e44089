//! CPU kernels the project owns. `packed` holds the weight format every GGUF quant type we
//! load is converted into; `int8_matmul` multiplies activations by it; `attention` is the
//! fused causal attention over the segmented KV cache; `activation` the gated
//! feed-forward activation.
//!
//! Why our own kernels: candle 0.11's CPU quantized matmul has no SIMD path for Q4_1 or
//! Q5_0, and its AVX-512 VNNI repack needs k % 256 == 0, which SmolLM2 (d = 576) fails, so
//! SmolLM2 Q4_1 ran at about a third of llama.cpp's decode speed.

pub mod activation;
pub mod attention;
pub mod int8_matmul;
pub mod packed;

/// A buffer whose disjoint parts are written by different tasks of the thread pool
/// (rows of an output, one row's random stream): the one place that hands a raw pointer
/// across threads.
pub(crate) struct SharedMut<T>(*mut T);

impl<T> SharedMut<T> {
    pub(crate) fn new(buffer: &mut [T]) -> Self {
        Self(buffer.as_mut_ptr())
    }

    /// The start of the buffer, for tasks whose parts are strided (a matmul's columns).
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }

    /// Elements `at..at + len`.
    ///
    /// # Safety
    /// The range lies inside the buffer, the buffer outlives the slice, and no other task
    /// touches the range while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice<'a>(&self, at: usize, len: usize) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}
