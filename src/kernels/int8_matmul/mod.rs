//! `y = x W^T` with W in the packed int8 format and x quantised per block to int8.
//!
//! Every output element is computed by the same sequence of operations whatever the
//! number of activation rows, the thread count or which other rows share the call:
//!
//! ```text
//!   acc = 0
//!   for each block b (in order):
//!       isum = sum_j u[r,j] * xq[i,j]               exact i32
//!       acc  = fma(isum as f32, s[r,b] * dx[i,b], acc)
//!       acc  = fma(o[r,b], xsum[i,b], acc)          xsum = dx * sum_j xq[i,j]
//! ```
//!
//! so results are bit-identical across batch sizes and schedules (the property the
//! scoring engine relies on), and every path equals the scalar reference exactly: the
//! integer sums are exact whatever their order, and the two f32 steps are the same
//! operations. Threads split the output tiles; each output is owned by one thread.
//!
//! The paths, one file each: `avx512` (AVX-512 VNNI), `avx256` (AVX-VNNI and AVX2, on
//! 256-bit registers), `portable` (plain Rust the compiler vectorises: aarch64 NEON and
//! any other target) and `scalar_tile` here, the reference, which runs only when asked.

#[cfg(target_arch = "x86_64")]
mod avx256;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use super::packed::{PackedMatrix, TILE};
use super::DisjointMut;

/// Activations quantised to int8 per block, as the kernel consumes them.
pub struct QuantizedActs {
    pub m: usize,
    pub k: usize,
    pub block: usize,
    pub qs: Vec<i8>,
    /// Per (row, block): the scale dx.
    pub d: Vec<f32>,
    /// Per (row, block): dx * sum of the block's quantised values.
    pub xsum: Vec<f32>,
    /// Per (row, block): the sum of the block's quantised values (exact), which the
    /// AVX2 path adds back after multiplying `u - 128` instead of `u`.
    pub qsum: Vec<i32>,
}

impl QuantizedActs {
    /// Symmetric per-block quantisation: dx = max|x| / 127, q = round(x / dx) (ties to
    /// even), on the fastest path this CPU has (every path gives the same bits).
    pub fn quantize(x: &[f32], m: usize, k: usize, block: usize) -> Self {
        Self::quantize_on(x, m, k, block, best_path())
    }

    /// `quantize` with the SIMD of `path` (the scalar loop for `Scalar` and `Portable`).
    /// Rows are independent, so long inputs (prefill) are split across threads.
    pub fn quantize_on(x: &[f32], m: usize, k: usize, block: usize, path: KernelPath) -> Self {
        assert_eq!(x.len(), m * k);
        assert_eq!(k % block, 0);
        path.assert_supported();
        let nb = k / block;
        let mut acts = Self {
            m,
            k,
            block,
            qs: vec![0i8; m * k],
            d: vec![0f32; m * nb],
            xsum: vec![0f32; m * nb],
            qsum: vec![0i32; m * nb],
        };
        let (qs, d, xsum, qsum) = (
            DisjointMut::new(&mut acts.qs),
            DisjointMut::new(&mut acts.d),
            DisjointMut::new(&mut acts.xsum),
            DisjointMut::new(&mut acts.qsum),
        );
        let quantize_rows = |range: std::ops::Range<usize>| {
            for row in range {
                // SAFETY: each row's slices are disjoint and written by one task only.
                let out = unsafe {
                    RowOut {
                        qs: qs.part(row * k, k),
                        d: d.part(row * nb, nb),
                        xsum: xsum.part(row * nb, nb),
                        qsum: qsum.part(row * nb, nb),
                    }
                };
                quantize_row(&x[row * k..(row + 1) * k], block, out, path);
            }
        };
        if m >= 16 {
            crate::kernels::pool::pool().execute_chunked(m, quantize_rows);
        } else {
            quantize_rows(0..m);
        }
        acts
    }
}

/// One activation row's share of `QuantizedActs`: its values and one entry per block.
pub(crate) struct RowOut<'a> {
    pub qs: &'a mut [i8],
    pub d: &'a mut [f32],
    pub xsum: &'a mut [f32],
    pub qsum: &'a mut [i32],
}

fn quantize_row(x: &[f32], block: usize, out: RowOut<'_>, path: KernelPath) {
    #[cfg(target_arch = "x86_64")]
    match path {
        // SAFETY (both): the CPU has the path's features (`assert_supported` in
        // `quantize_on`); the slices are a whole row and its blocks.
        KernelPath::Avx512Vnni if block.is_multiple_of(16) => {
            return unsafe { avx512::quantize_row(x, block, out) };
        }
        KernelPath::Avx2 | KernelPath::AvxVnni if block.is_multiple_of(8) => {
            return unsafe { avx256::quantize_row(x, block, out) };
        }
        _ => {}
    }
    quantize_row_scalar(x, block, out)
}

/// The reference quantisation; the SIMD versions give the same bits (max and integer
/// sums are exact, and all round half to even).
fn quantize_row_scalar(x: &[f32], block: usize, out: RowOut<'_>) {
    for (b, vals) in x.chunks_exact(block).enumerate() {
        let amax = vals.iter().fold(0f32, |a, v| a.max(v.abs()));
        let dx = amax / 127.0;
        let inv = if dx > 0.0 { 1.0 / dx } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in out.qs[b * block..(b + 1) * block].iter_mut().zip(vals) {
            *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            sum += *q as i32;
        }
        out.d[b] = dx;
        out.xsum[b] = dx * sum as f32;
        out.qsum[b] = sum;
    }
}

/// Which implementation of the packed int8 matmul runs. All give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// One output at a time through the layout's accessors: the reference.
    Scalar,
    /// Plain Rust over fixed-size arrays, vectorised by the compiler for the target
    /// (NEON on aarch64, the build's baseline on x86-64).
    Portable,
    /// AVX2 `vpmaddubsw` on 256-bit registers (x86-64-v3: Intel since Haswell, AMD
    /// since Zen).
    Avx2,
    /// AVX-VNNI `vpdpbusd` on 256-bit registers (Intel since Alder Lake, AMD since Zen 5).
    AvxVnni,
    /// AVX-512 VNNI `vpdpbusd` on 512-bit registers (Intel since Ice Lake server, AMD
    /// since Zen 4).
    Avx512Vnni,
}

impl KernelPath {
    /// Every path, in the order `best_path` prefers them (fastest first).
    pub const ALL: [KernelPath; 5] = [
        KernelPath::Avx512Vnni,
        KernelPath::AvxVnni,
        KernelPath::Avx2,
        KernelPath::Portable,
        KernelPath::Scalar,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelPath::Scalar => "scalar",
            KernelPath::Portable => "portable",
            KernelPath::Avx2 => "avx2",
            KernelPath::AvxVnni => "avx-vnni",
            KernelPath::Avx512Vnni => "avx512-vnni",
        }
    }

    /// The path called `name` (as `name()` spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The CPU features this path needs, as /proc/cpuinfo and `is_x86_feature_detected!`
    /// name them (empty: any CPU).
    pub fn required_features(self) -> &'static [&'static str] {
        match self {
            KernelPath::Scalar | KernelPath::Portable => &[],
            KernelPath::Avx2 => &["avx2", "fma", "f16c"],
            KernelPath::AvxVnni => &["avx2", "fma", "f16c", "avxvnni"],
            KernelPath::Avx512Vnni => &["avx512f", "avx512bw", "avx512vnni"],
        }
    }

    /// The required features this CPU lacks; for an x86 path on another architecture,
    /// "x86_64" itself.
    pub fn missing_features(self) -> Vec<&'static str> {
        let needs = self.required_features();
        if needs.is_empty() {
            return Vec::new();
        }
        #[cfg(target_arch = "x86_64")]
        {
            needs.iter().copied().filter(|f| !cpu_has(f)).collect()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            vec!["x86_64"]
        }
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        self.missing_features().is_empty()
    }

    /// Panics unless this CPU can run the path: running one it cannot would execute
    /// instructions it lacks (undefined behaviour), so every entry point checks.
    fn assert_supported(self) {
        let missing = self.missing_features();
        assert!(
            missing.is_empty(),
            "the {} int8 kernel needs CPU features this CPU lacks: {}",
            self.name(),
            missing.join(", ")
        );
    }

    /// Whether a run on this path is expected to be slow: the reference, or the
    /// portable path where a SIMD path exists.
    pub fn slow_here(self) -> bool {
        match self {
            KernelPath::Scalar => true,
            KernelPath::Portable => best_path() != KernelPath::Portable,
            _ => false,
        }
    }
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(feature: &str) -> bool {
    match feature {
        "avx2" => std::is_x86_feature_detected!("avx2"),
        "fma" => std::is_x86_feature_detected!("fma"),
        "f16c" => std::is_x86_feature_detected!("f16c"),
        "avxvnni" => std::is_x86_feature_detected!("avxvnni"),
        "avx512f" => std::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
        "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
        other => unreachable!("no detection for CPU feature {other}"),
    }
}

/// The fastest path this CPU supports: AVX-512 VNNI, AVX-VNNI, AVX2, then portable.
/// The scalar reference is never chosen; it runs only when asked for.
pub fn best_path() -> KernelPath {
    KernelPath::ALL
        .into_iter()
        .find(|p| *p != KernelPath::Scalar && p.supported())
        .unwrap_or(KernelPath::Portable)
}

/// A short description of this CPU for benchmark tables: its model name (from
/// /proc/cpuinfo where there is one) and the int8 paths it supports.
pub fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let paths: Vec<&str> = KernelPath::ALL
        .into_iter()
        .filter(|p| *p != KernelPath::Scalar && p.supported())
        .map(KernelPath::name)
        .collect();
    format!("{model} ({})", paths.join(", "))
}

/// y (m x n, row-major) = x (m x k) W^T.
pub fn matmul(w: &PackedMatrix, x: &[f32], m: usize, path: KernelPath) -> Vec<f32> {
    let acts = QuantizedActs::quantize_on(x, m, w.k, w.block, path);
    let mut y = vec![0f32; m * w.n];
    matmul_quantized(w, &acts, &mut y, path);
    y
}

/// As `matmul`, with activations already quantised (they can be shared by several W).
pub fn matmul_quantized(w: &PackedMatrix, acts: &QuantizedActs, y: &mut [f32], path: KernelPath) {
    assert_eq!(acts.k, w.k);
    assert_eq!(acts.block, w.block);
    assert_eq!(y.len(), acts.m * w.n);
    path.assert_supported();
    let out = DisjointMut::new(y);
    debug_assert_eq!(out.len(), acts.m * w.n);
    // Threads take groups of TILES_PER_TASK tiles so the micro-kernel can keep several
    // independent accumulator chains per activation row (see `run_tiles`).
    let groups = w.n_tiles().div_ceil(TILES_PER_TASK);
    // The kernel pool (bounded spin, then block): rayon's park/wake per matmul was a
    // third of decode time, candle's pool collapses on a shared node (see `pool`).
    crate::kernels::pool::pool().execute_chunked(groups, |range| {
        for g in range {
            let tiles = g * TILES_PER_TASK..((g + 1) * TILES_PER_TASK).min(w.n_tiles());
            // SAFETY: `out` holds acts.m x w.n values (asserted above) and tiles t write
            // only columns [16t, 16t+16) of it, which no other task touches; the CPU
            // runs `path` (asserted above).
            unsafe { run_tiles(w, acts, tiles, out.as_mut_ptr(), path) };
        }
    });
}

/// Calls with at least this many activation rows expand their tiles first (see
/// `run_tiles`).
const EXPAND_ROWS: usize = 8;

/// Tiles one task handles together: each weight vector loaded feeds this many fewer
/// broadcasts, and MR x TILES_PER_TASK accumulators hide `vpdpbusd`'s latency.
const TILES_PER_TASK: usize = 3;

/// Computes `tiles` of the output for every activation row.
///
/// # Safety
/// `out` points to `acts.m * w.n` writable f32 values, of which the columns of `tiles`
/// (16 per tile, below `w.n`) are not accessed by anyone else during the call; the CPU
/// supports `path` (`KernelPath::supported`).
unsafe fn run_tiles(
    w: &PackedMatrix,
    acts: &QuantizedActs,
    tiles: std::ops::Range<usize>,
    out: *mut f32,
    path: KernelPath,
) {
    match path {
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx512Vnni => {
            let t0 = tiles.start;
            // Decode (fewer than 4 rows) streams weights once per call and measured
            // faster one tile at a time (criterion `int8_matmul`, rows = 1).
            // SAFETY: the CPU features and `out` are this function's own contract.
            // Calls of many rows (prefill, a questionnaire item) unpack their tiles once
            // into bytes and f32 scales instead of once per four rows.
            if tiles.len() == TILES_PER_TASK && acts.m >= EXPAND_ROWS {
                unsafe { avx512::expanded_rows::<TILES_PER_TASK>(w, acts, t0, out) };
            } else if tiles.len() == TILES_PER_TASK && acts.m >= 4 {
                unsafe { avx512::all_rows::<TILES_PER_TASK>(w, acts, t0, out) };
            } else if acts.m >= EXPAND_ROWS {
                for t in tiles {
                    // SAFETY: as above.
                    unsafe { avx512::expanded_rows::<1>(w, acts, t, out) };
                }
            } else {
                for t in tiles {
                    // SAFETY: as above.
                    unsafe { avx512::all_rows::<1>(w, acts, t, out) };
                }
            }
        }
        // SAFETY (both): this function's own contract.
        #[cfg(target_arch = "x86_64")]
        KernelPath::AvxVnni => unsafe { avx256::avx_vnni::run_tiles(w, acts, tiles, out) },
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2 => unsafe { avx256::avx2::run_tiles(w, acts, tiles, out) },
        KernelPath::Portable => {
            // SAFETY: this function's own contract.
            unsafe { portable::run_tiles(w, acts, tiles, out) }
        }
        KernelPath::Scalar => {
            for t in tiles {
                // SAFETY: `out` is this function's own contract.
                unsafe { scalar_tile(w, acts, t, out) }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("{} is refused on this architecture", path.name()),
    }
}

/// The reference: the same operations in the same order, one output at a time.
///
/// # Safety
/// `out` points to `acts.m * w.n` writable f32 values whose columns of tile `t` no one
/// else accesses during the call.
unsafe fn scalar_tile(w: &PackedMatrix, acts: &QuantizedActs, t: usize, out: *mut f32) {
    let (k, block) = (w.k, w.block);
    let nb = k / block;
    for i in 0..acts.m {
        for lane in 0..TILE {
            let r = t * TILE + lane;
            if r >= w.n {
                break;
            }
            let mut acc = 0f32;
            for b in 0..nb {
                let mut isum = 0i32;
                for g in b * block / 4..(b + 1) * block / 4 {
                    for j in 0..4 {
                        isum += w.u_at(t, lane, g, j) as i32 * acts.qs[i * k + g * 4 + j] as i32;
                    }
                }
                let (s, o) = (w.scale_at(t, b, lane), w.offset_at(t, b, lane));
                acc = (isum as f32).mul_add(s * acts.d[i * nb + b], acc);
                acc = o.mul_add(acts.xsum[i * nb + b], acc);
            }
            // SAFETY: i < acts.m and r < w.n, so the index is inside `out`, and this
            // column belongs to tile t (the caller's contract).
            unsafe { *out.add(i * w.n + r) = acc };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantType;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn random_matrix(n: usize, k: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn pack(dtype: GgmlDType, n: usize, k: usize) -> (PackedMatrix, QTensor) {
        let w = Tensor::from_vec(random_matrix(n, k, 7), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let data = q.data().unwrap();
        (PackedMatrix::from_ggml(dtype, &data, n, k).unwrap(), q)
    }

    #[test]
    fn packing_reproduces_ggml_dequantisation_exactly() {
        for dtype in ALL_TYPES {
            let (n, k) = (20, 512);
            let (p, q) = pack(dtype, n, k);
            let reference = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (r, reference_row) in reference.iter().enumerate() {
                let ours = p.dequantize_row(r);
                for j in 0..k {
                    let (a, b) = (ours[j], reference_row[j]);
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{dtype:?} row {r} col {j}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Every path this CPU runs but the reference itself.
    fn fast_paths() -> Vec<KernelPath> {
        KernelPath::ALL
            .into_iter()
            .filter(|p| *p != KernelPath::Scalar && p.supported())
            .collect()
    }

    #[test]
    fn every_path_equals_the_scalar_reference_bit_for_bit() {
        // 53 rows: a task of three tiles and a lone partial one (5 rows); 72: a last
        // tile of exactly one half; 8: one half only. Rows 1-7 read the packed layout
        // directly (four, then one at a time), 8 and more expand their tiles first.
        let paths = fast_paths();
        assert!(paths.contains(&KernelPath::Portable));
        for dtype in ALL_TYPES {
            for n in [53, 72, 8] {
                let k = 512;
                let w = Tensor::from_vec(random_matrix(n, k, 7), (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let data = q.data().unwrap();
                let nibbles = PackedMatrix::from_ggml(dtype, &data, n, k).unwrap();
                let bytes = PackedMatrix::from_ggml_bytes(dtype, &data, n, k).unwrap();
                for m in [1, 2, 3, 4, 5, 7, 8, 9, 13, 24] {
                    let x = random_matrix(m, k, 3 + m as u64);
                    for p in [&nibbles, &bytes] {
                        let reference = matmul(p, &x, m, KernelPath::Scalar);
                        for &path in &paths {
                            assert_eq!(
                                matmul(p, &x, m, path),
                                reference,
                                "{dtype:?} {path} nibbles={} n={n} m={m}",
                                p.nibbles
                            );
                        }
                        check_vnni_256(p, &x, m, &reference);
                    }
                }
            }
        }
    }

    /// The 256-bit VNNI kernels, run with AVX-512 VNNI's EVEX encoding where the CPU
    /// has no AVX-VNNI (the same operation), against `reference`.
    fn check_vnni_256(w: &PackedMatrix, x: &[f32], m: usize, reference: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512vl") && KernelPath::Avx512Vnni.supported() {
            let acts = QuantizedActs::quantize_on(x, m, w.k, w.block, KernelPath::Scalar);
            let mut y = vec![0f32; m * w.n];
            for g in 0..w.n_tiles().div_ceil(TILES_PER_TASK) {
                let tiles = g * TILES_PER_TASK..((g + 1) * TILES_PER_TASK).min(w.n_tiles());
                // SAFETY: the CPU has the features (checked above); one thread owns `y`.
                unsafe { avx256::evex_vnni::run_tiles(w, &acts, tiles, y.as_mut_ptr()) };
            }
            assert_eq!(y, reference, "256-bit VNNI m={m} nibbles={}", w.nibbles);
            return;
        }
        if KernelPath::AvxVnni.supported() {
            return;
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        // Where the CPU has AVX-VNNI, the `avx-vnni` path itself was checked.
        SAID.call_once(|| {
            crate::say!("SKIPPED the 256-bit VNNI kernels' check: this CPU has neither AVX-VNNI nor AVX-512 VNNI + VL")
        });
    }

    /// Raw ggml blocks of `dtype` whose bytes come from `fill`, with finite f16 scales:
    /// every `u` a block can hold, including the extremes the AVX2 kernel must not
    /// saturate on.
    fn blocks(dtype: QuantType, rows: usize, k: usize, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (size, values) = (dtype.type_size(), dtype.block_size());
        let scales: &[usize] = match dtype {
            QuantType::Candle(GgmlDType::Q4_1 | GgmlDType::Q4K | GgmlDType::Q5K) => &[0, 2],
            QuantType::Candle(GgmlDType::Q2K) => &[80, 82],
            QuantType::Candle(GgmlDType::Q3K) => &[108],
            QuantType::Candle(GgmlDType::Q6K) => &[208],
            _ => &[0],
        };
        let mut data: Vec<u8> = (0..rows * k / values * size).map(&fill).collect();
        for blk in data.chunks_exact_mut(size) {
            for &at in scales {
                let d = half::f16::from_f32(rng.random_range(-0.02f32..0.02));
                blk[at..at + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        data
    }

    #[test]
    fn every_path_equals_the_reference_on_extreme_weights_and_activations() {
        use rand::{Rng, SeedableRng};
        let types: Vec<QuantType> = ALL_TYPES
            .into_iter()
            .map(QuantType::from)
            .chain([QuantType::Iq4Nl, QuantType::Iq4Xs])
            .collect();
        let (n, k) = (40, 512);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let random_bytes: Vec<u8> = (0..n * k * 2).map(|_| rng.random()).collect();
        type Fill<'a> = Box<dyn Fn(usize) -> u8 + 'a>;
        let fills: [(&str, Fill); 5] = [
            ("random", Box::new(|i| random_bytes[i])),
            ("0xff", Box::new(|_| 0xFF)),
            ("0x7f", Box::new(|_| 0x7F)),
            ("0x80", Box::new(|_| 0x80)),
            ("0x00", Box::new(|_| 0x00)),
        ];
        // All +127, all -127, and random.
        let activations = |m: usize| -> Vec<(&str, Vec<f32>)> {
            vec![
                ("+1", vec![1.0; m * k]),
                ("-1", vec![-1.0; m * k]),
                ("random", random_matrix(m, k, 23)),
            ]
        };
        for dtype in types {
            for (fill_name, fill) in &fills {
                let data = blocks(dtype, n, k, fill);
                let nibbles = PackedMatrix::from_ggml(dtype, &data, n, k).unwrap();
                let bytes = PackedMatrix::from_ggml_bytes(dtype, &data, n, k).unwrap();
                for p in [&nibbles, &bytes] {
                    for m in [1, 4, 9] {
                        for (x_name, x) in activations(m) {
                            let reference = matmul(p, &x, m, KernelPath::Scalar);
                            for path in fast_paths() {
                                assert_eq!(
                                    matmul(p, &x, m, path),
                                    reference,
                                    "{dtype} {path} weights {fill_name} x {x_name} nibbles={} m={m}",
                                    p.nibbles
                                );
                            }
                            check_vnni_256(p, &x, m, &reference);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_weight_is_below_two_to_its_types_u_bits() {
        let types: Vec<QuantType> = ALL_TYPES
            .into_iter()
            .map(QuantType::from)
            .chain([QuantType::Iq4Nl, QuantType::Iq4Xs])
            .collect();
        for dtype in types {
            for fill in [0xFFu8, 0x7F, 0x00, 0x55] {
                let (n, k) = (16, 256);
                let data = blocks(dtype, n, k, |_| fill);
                for p in [
                    PackedMatrix::from_ggml(dtype, &data, n, k).unwrap(),
                    PackedMatrix::from_ggml_bytes(dtype, &data, n, k).unwrap(),
                ] {
                    assert_eq!(p.u_bits, crate::kernels::packed::u_bits(dtype));
                    for r in 0..n {
                        let most = p.row(r).0.into_iter().max().unwrap() as u32;
                        assert!(most < 1 << p.u_bits, "{dtype} fill {fill:#x}: u {most}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_int16_sums_are_widened_before_they_could_overflow() {
        for (bits, gpb, most) in [
            (2, 8, 8),
            (3, 4, 4),
            (4, 8, 8),
            (5, 8, 4),
            (6, 4, 2),
            (8, 8, 1),
        ] {
            let every = avx256_widen_every(bits, gpb);
            assert_eq!(every, most, "u_bits {bits}");
            if bits < 8 {
                let pair = 2 * ((1i64 << bits) - 1) * 127;
                assert!(pair * every as i64 <= i16::MAX as i64, "u_bits {bits}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn avx256_widen_every(bits: u8, gpb: usize) -> usize {
        avx256::widen_every(bits, gpb)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn avx256_widen_every(_: u8, _: usize) -> usize {
        unreachable!()
    }

    #[test]
    fn auto_never_picks_the_reference_and_every_path_has_a_name() {
        assert_ne!(best_path(), KernelPath::Scalar);
        assert!(best_path().supported());
        for path in KernelPath::ALL {
            assert_eq!(KernelPath::from_name(path.name()), Some(path));
        }
        assert!(KernelPath::Portable.supported() && KernelPath::Scalar.supported());
        // A path the CPU lacks names what is missing, and only that.
        for path in KernelPath::ALL {
            let missing = path.missing_features();
            assert_eq!(missing.is_empty(), path.supported(), "{path}");
            for f in &missing {
                assert!(
                    path.required_features().contains(f) || *f == "x86_64",
                    "{path}: {f}"
                );
            }
        }
    }

    /// Every type the packed kernels read (candle's; the IQ4 types are in
    /// tests/iq4_quants.rs, since candle cannot quantise to them).
    const ALL_TYPES: [GgmlDType; 9] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q3K,
        GgmlDType::Q2K,
    ];

    #[test]
    fn the_nibble_layout_gives_the_byte_layouts_results_bit_for_bit() {
        // Every type but Q8_0, whose 8 bits have no nibble layout; Q5_0, Q5_K and Q6_K
        // keep their bits above 4 in the high plane.
        for dtype in ALL_TYPES.into_iter().filter(|&t| t != GgmlDType::Q8_0) {
            let (n, k) = (37, 512);
            let w = Tensor::from_vec(random_matrix(n, k, 13), (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let data = q.data().unwrap();
            let nibbles = PackedMatrix::from_ggml(dtype, &data, n, k).unwrap();
            let bytes = PackedMatrix::from_ggml_bytes(dtype, &data, n, k).unwrap();
            assert!(nibbles.nibbles && !bytes.nibbles, "{dtype:?}");
            assert_eq!(2 * nibbles.qs.len(), bytes.qs.len());
            for r in [0, 16, 36] {
                assert_eq!(nibbles.row(r), bytes.row(r), "{dtype:?} row {r}");
            }
            for m in [1, 5, 9] {
                let x = random_matrix(m, k, 17);
                let reference = matmul(&bytes, &x, m, KernelPath::Scalar);
                for path in fast_paths() {
                    assert_eq!(
                        matmul(&nibbles, &x, m, path),
                        reference,
                        "{dtype:?} {path:?} m={m}"
                    );
                }
            }
        }
    }

    #[test]
    fn derived_offsets_give_the_stored_offsets_results_bit_for_bit() {
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::Q3K,
        ] {
            let (n, k) = (53, 512);
            let (derived, _) = pack(dtype, n, k);
            assert!(derived.offset_factor.is_some(), "{dtype:?}");
            assert!(derived.dm.is_empty() && derived.m.is_empty(), "{dtype:?}");
            let stored = derived.with_stored_offsets();
            for r in [0, 17, 52] {
                assert_eq!(derived.row(r), stored.row(r), "{dtype:?} row {r}");
            }
            for m in [1, 5, 9] {
                let x = random_matrix(m, k, 19);
                let reference = matmul(&stored, &x, m, KernelPath::Scalar);
                for path in fast_paths() {
                    assert_eq!(
                        matmul(&stored, &x, m, path),
                        reference,
                        "{dtype:?} {path:?}"
                    );
                    assert_eq!(
                        matmul(&derived, &x, m, path),
                        reference,
                        "{dtype:?} {path:?}"
                    );
                }
            }
        }
        // Types with free offsets keep them.
        let (q4k, _) = pack(GgmlDType::Q4K, 16, 256);
        assert!(q4k.offset_factor.is_none() && !q4k.dm.is_empty() && !q4k.m.is_empty());
    }

    #[test]
    fn packed_weights_take_about_the_files_bytes() {
        // The types of Q4_K_M, Q5_K_M, Q6_K and Q8_0 files. Before the format kept the
        // file's f16 d and small integer scales, Q4_K took 0.75 bytes per weight (f32
        // scale and offset per 32) against the file's 0.5625, and Q6_K 1.25 against
        // 0.82 (a byte per 6-bit value): a model took 1.4x its file in memory.
        for (dtype, most) in [
            (GgmlDType::Q4K, 1.03),
            (GgmlDType::Q5K, 1.03),
            (GgmlDType::Q6K, 1.001),
            (GgmlDType::Q8_0, 1.03),
        ] {
            let (n, k) = (64, 1024);
            let (p, q) = pack(dtype, n, k);
            let file = q.data().unwrap().len();
            let ratio = p.storage_bytes() as f64 / file as f64;
            assert!(ratio <= most, "{dtype:?}: {ratio:.3}x the file's bytes");
        }
    }

    #[test]
    fn every_paths_quantisation_equals_the_scalar_reference() {
        let mut x = random_matrix(3, 512, 9);
        x[5] = 0.0;
        x[40..72].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
        x[100] = 2.5 * x[101].abs().max(1e-3); // a block maximum
        x[200] = -3.0; // a negative block maximum
        x[300] = 0.5 * x[301].abs().max(1e-3) / 127.0; // a tie-sized value
        for block in [16, 32] {
            let reference = QuantizedActs::quantize_on(&x, 3, 512, block, KernelPath::Scalar);
            for path in fast_paths() {
                let q = QuantizedActs::quantize_on(&x, 3, 512, block, path);
                assert_eq!(
                    (&q.qs, &q.d, &q.xsum, &q.qsum),
                    (
                        &reference.qs,
                        &reference.d,
                        &reference.xsum,
                        &reference.qsum
                    ),
                    "{path} block {block}"
                );
            }
        }
    }

    #[test]
    fn each_row_is_independent_of_its_batch() {
        let (p, _) = pack(GgmlDType::Q4_1, 48, 256);
        let x = random_matrix(9, 256, 5);
        for path in fast_paths() {
            let batched = matmul(&p, &x, 9, path);
            for i in 0..9 {
                let single = matmul(&p, &x[i * 256..(i + 1) * 256], 1, path);
                assert_eq!(
                    &batched[i * 48..(i + 1) * 48],
                    &single[..],
                    "{path} row {i}"
                );
            }
        }
    }

    #[test]
    fn result_is_close_to_the_float_product() {
        let (n, k) = (32, 512);
        let (p, q) = pack(GgmlDType::Q8_0, n, k);
        let wf = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let x = random_matrix(1, k, 11);
        let y = matmul(&p, &x, 1, best_path());
        for r in 0..n {
            let exact: f32 = (0..k).map(|j| wf[r][j] * x[j]).sum();
            assert!(
                (y[r] - exact).abs() < 0.05 * exact.abs().max(1.0),
                "row {r}: {} vs {exact}",
                y[r]
            );
        }
    }
}
