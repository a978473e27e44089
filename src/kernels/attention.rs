//! Causal self-attention on the CPU over a segmented KV cache.
//!
//! The candle-op path (`Transformer::attend_reference`) issues a dozen small tensor ops
//! per sequence and layer and runs them on one thread; for a batch of short items after
//! a long shared prefix that overhead, not arithmetic, dominated the pass. Here one
//! function does a (sequence, kv head, block of queries) unit: it transposes that kv
//! head's keys once, then serves every query head of the group; the pool spreads the
//! units over the threads.
//!
//! Every output is computed by the same operations in the same order whatever the
//! batch, the other rows, the number of new tokens, the unit it falls in or the thread
//! count:
//!
//! ```text
//!   score_j = (sum_d q_d k_j[d]) / sqrt(hd)   one fused multiply-add chain over d per key
//!   p_j     = exp(score_j - max)               `exp` below; the sum of p_j in 16 lanes
//!                                              by position, then pairwise
//!   out     = (sum_j p_j v_j) / sum_j p_j      one fma chain over the keys per element
//! ```
//!
//! so a sequence's attention is bit-identical alone or batched (the engine's guarantee).

use crate::kernels::int8_matmul::OutPtr;

/// Keys and values of one cache segment: `(batch, kv_heads, capacity, head_dim)`
/// buffers of which the first `len` positions are valid. A batch-1 segment is shared by
/// every row.
pub struct SegmentView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub batch: usize,
    pub capacity: usize,
    pub len: usize,
}

/// Head layout of the attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// `q` is (b, s, n_head * head_dim) after rope; the new tokens' keys and values are
/// already in the segments (the cache held `offset` positions before them). Returns
/// (b, s, n_head * head_dim). Query i of a row sees key j iff j <= offset + i and, with
/// a window w, offset + i - j < w.
pub fn attention(q: &[f32], b: usize, s: usize, heads: Heads, segments: &[SegmentView], offset: usize, window: Option<usize>) -> Vec<f32> {
    let Heads { n_head, n_kv_head, head_dim } = heads;
    let width = n_head * head_dim;
    assert_eq!(q.len(), b * s * width);
    let mut out = vec![0f32; b * s * width];
    let total: usize = segments.iter().map(|g| g.len).sum();
    assert_eq!(total, offset + s, "segments must hold the cached and the new positions");
    // A unit is (row, kv head, block of queries): the kv head's keys are transposed
    // once per unit and serve every query head of the group.
    let blocks = s.div_ceil(QUERY_BLOCK);
    let units = b * n_kv_head * blocks;
    let dst = OutPtr(out.as_mut_ptr());
    let run = |range: std::ops::Range<usize>| {
        let dst = dst;
        let mut scratch = Scratch::default();
        for unit in range {
            let (row, rest) = (unit / (n_kv_head * blocks), unit % (n_kv_head * blocks));
            let (kv_head, block) = (rest / blocks, rest % blocks);
            let queries = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(s);
            // SAFETY: the unit writes only its own (row, query, head) outputs.
            unsafe { attend_unit(q, dst, row, kv_head, queries, s, heads, segments, offset, window, &mut scratch) };
        }
    };
    // Small problems (a decode step) run inline; the split never changes results.
    if units > 1 && b * s * n_head * total * head_dim >= 1 << 16 {
        candle_core::utils::barrier_pool().execute_chunked(units, run);
    } else {
        run(0..units);
    }
    out
}

const QUERY_BLOCK: usize = 16;
/// Keys per register block of the score loop.
const KEY_BLOCK: usize = 32;

#[derive(Default)]
struct Scratch {
    /// Keys transposed, (head_dim, keys).
    keys_t: Vec<f32>,
    scores: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
unsafe fn attend_unit(q: &[f32], dst: OutPtr, row: usize, kv_head: usize, queries: std::ops::Range<usize>, s: usize, heads: Heads, segments: &[SegmentView], offset: usize, window: Option<usize>, scratch: &mut Scratch) {
    let Heads { n_head, n_kv_head, head_dim: hd } = heads;
    let group = n_head / n_kv_head;
    let width = n_head * hd;
    let last_pos = offset + queries.end - 1;
    let first_key = window.map_or(0, |w| (offset + queries.start + 1).saturating_sub(w));
    let nk = last_pos + 1 - first_key;
    // Transpose the unit's keys: keys_t[d * nk + (j - first_key)] = k_j[d].
    scratch.keys_t.resize(hd * nk, 0.0);
    let kt = &mut scratch.keys_t;
    for_each_key(segments, row, kv_head, hd, first_key..last_pos + 1, |j, k, _| {
        for (d, &x) in k.iter().enumerate() {
            kt[d * nk + j - first_key] = x;
        }
    });
    scratch.scores.resize(nk.next_multiple_of(KEY_BLOCK), 0.0);
    let scale = 1.0 / (hd as f32).sqrt();
    for i in queries {
        let qpos = offset + i;
        let first = window.map_or(0, |w| (qpos + 1).saturating_sub(w));
        for head in kv_head * group..(kv_head + 1) * group {
            let at = (row * s + i) * width + head * hd;
            let out = std::slice::from_raw_parts_mut(dst.0.add(at), hd);
            softmax_weighted_values(&q[at..at + hd], &scratch.keys_t, nk, first - first_key..qpos + 1 - first_key, first_key, scale, &mut scratch.scores, segments, row, kv_head, out);
        }
    }
}

/// One query: scores over the visible keys (local indices into the transposed keys),
/// softmax, and the probability-weighted sum of the values.
#[allow(clippy::too_many_arguments)]
fn softmax_weighted_values(q: &[f32], keys_t: &[f32], nk: usize, visible: std::ops::Range<usize>, first_key: usize, scale: f32, scores: &mut [f32], segments: &[SegmentView], row: usize, kv_head: usize, out: &mut [f32]) {
    let hd = q.len();
    // score_j = (sum over d in order of q_d * k_j[d]) * scale: one fma chain per key,
    // whatever block the key falls in.
    let mut j0 = visible.start;
    while j0 < visible.end {
        let mut acc = [0f32; KEY_BLOCK];
        let n = (visible.end - j0).min(KEY_BLOCK);
        if n == KEY_BLOCK {
            for (d, &qd) in q.iter().enumerate() {
                let kr = &keys_t[d * nk + j0..d * nk + j0 + KEY_BLOCK];
                for l in 0..KEY_BLOCK {
                    acc[l] = qd.mul_add(kr[l], acc[l]);
                }
            }
        } else {
            for (d, &qd) in q.iter().enumerate() {
                let kr = &keys_t[d * nk + j0..d * nk + j0 + n];
                for l in 0..n {
                    acc[l] = qd.mul_add(kr[l], acc[l]);
                }
            }
        }
        for l in 0..n {
            scores[j0 + l] = acc[l] * scale;
        }
        j0 += n;
    }
    let vis = &mut scores[visible.clone()];
    let max = vis.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut lanes = [0f32; 16];
    for chunk in vis.chunks_mut(16) {
        for (l, p) in chunk.iter_mut().enumerate() {
            *p = exp(*p - max);
            lanes[l] += *p;
        }
    }
    let sum = pairwise(lanes);
    out.fill(0.0);
    let mut local = visible.start;
    for_each_key(segments, row, kv_head, hd, first_key + visible.start..first_key + visible.end, |_, _, v| {
        let p = scores[local];
        local += 1;
        for (o, &x) in out.iter_mut().zip(v) {
            *o = p.mul_add(x, *o);
        }
    });
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

fn pairwise(mut lanes: [f32; 16]) -> f32 {
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

/// e^x for -87 <= x <= 0 (softmax arguments; smaller x give e^-87), to about 2 ulp, in plain arithmetic the compiler
/// vectorises: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n from
/// the exponent bits. Deterministic like any fixed sequence of IEEE operations.
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p: f32 = 1.0 / 720.0;
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// Calls `f(j, key, value)` for global positions j in `range`, in cache order.
fn for_each_key(segments: &[SegmentView], row: usize, kv_head: usize, hd: usize, range: std::ops::Range<usize>, mut f: impl FnMut(usize, &[f32], &[f32])) {
    let mut start = 0;
    for seg in segments {
        let (lo, hi) = (range.start.max(start), range.end.min(start + seg.len));
        if lo < hi {
            let r = if seg.batch == 1 { 0 } else { row };
            let n_kv = seg.k.len() / (seg.batch * seg.capacity * hd);
            let base = (r * n_kv + kv_head) * seg.capacity;
            for j in lo..hi {
                let at = (base + j - start) * hd;
                f(j, &seg.k[at..at + hd], &seg.v[at..at + hd]);
            }
        }
        start += seg.len;
    }
}

/// Rotary position embedding in place on `x` (rows of `heads` x `hd`, position of row
/// i = pos0 + i / rows_per_position). `cos`/`sin` are (positions, hd/2) tables. `neox`
/// rotates (d, d + hd/2) pairs, otherwise (2d, 2d+1).
pub fn rope(x: &mut [f32], n_heads: usize, hd: usize, positions: impl Iterator<Item = usize>, cos: &[f32], sin: &[f32], neox: bool) {
    let half = hd / 2;
    for (token, pos) in x.chunks_exact_mut(n_heads * hd).zip(positions) {
        let (c, sn) = (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
        for h in token.chunks_exact_mut(hd) {
            for d in 0..half {
                let (i1, i2) = if neox { (d, d + half) } else { (2 * d, 2 * d + 1) };
                let (x1, x2) = (h[i1], h[i2]);
                h[i1] = x1 * c[d] - x2 * sn[d];
                h[i2] = x1 * sn[d] + x2 * c[d];
            }
        }
    }
}

/// RMS normalisation of each `hd`-long head vector in place (Gemma 3's q/k norms).
pub fn rms_norm_heads(x: &mut [f32], hd: usize, weight: &[f32], eps: f32) {
    for h in x.chunks_exact_mut(hd) {
        let mean = h.iter().map(|v| v * v).sum::<f32>() / hd as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for (v, w) in h.iter_mut().zip(weight) {
            *v = *v * inv * w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn exp_is_close_to_libm() {
        // Down to -80 (below that softmax weights are < 1e-34 and the clamp at -87 rules).
        for i in 0..1600 {
            let x = -(i as f32) * 0.05;
            let (ours, libm) = (exp(x), x.exp());
            assert!((ours - libm).abs() <= 4.0 * f32::EPSILON * libm, "{x}: {ours} vs {libm}");
        }
        assert!(exp(-200.0) < 1e-37);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn uniform_keys_average_the_values() {
        let heads = Heads { n_head: 2, n_kv_head: 1, head_dim: 16 };
        let k = vec![0.5f32; 3 * 16];
        let v: Vec<f32> = (0..3).flat_map(|j| vec![j as f32; 16]).collect();
        let seg = SegmentView { k: &k, v: &v, batch: 1, capacity: 3, len: 3 };
        let q = vec![1f32; 32];
        let out = attention(&q, 1, 1, heads, &[seg], 2, None);
        assert!(out.iter().all(|&o| (o - 1.0).abs() < 1e-6), "{out:?}");
        // The first query position sees only key 0.
        let q2 = vec![1f32; 3 * 32];
        let out = attention(&q2, 1, 3, heads, &[SegmentView { k: &k, v: &v, batch: 1, capacity: 3, len: 3 }], 0, None);
        assert!(out[..32].iter().all(|&o| o == 0.0));
        let win = attention(&q2, 1, 3, heads, &[SegmentView { k: &k, v: &v, batch: 1, capacity: 3, len: 3 }], 0, Some(1));
        assert!(win[64..].iter().all(|&o| o == 2.0), "a window of 1 sees only the query's own key");
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_and_in_a_batch() {
        let heads = Heads { n_head: 4, n_kv_head: 2, head_dim: 32 };
        let (prefix, s) = (40, 5);
        let shared_k = seq(2 * prefix * 32, 1);
        let shared_v = seq(2 * prefix * 32, 2);
        // Two rows with their own new keys (batch-2 segment, capacity 8).
        let own_k = seq(2 * 2 * 8 * 32, 3);
        let own_v = seq(2 * 2 * 8 * 32, 4);
        let q = seq(2 * s * 128, 5);
        let both = attention(
            &q,
            2,
            s,
            heads,
            &[SegmentView { k: &shared_k, v: &shared_v, batch: 1, capacity: prefix, len: prefix }, SegmentView { k: &own_k, v: &own_v, batch: 2, capacity: 8, len: s }],
            prefix,
            None,
        );
        let half = own_k.len() / 2;
        let alone = attention(
            &q[s * 128..],
            1,
            s,
            heads,
            &[SegmentView { k: &shared_k, v: &shared_v, batch: 1, capacity: prefix, len: prefix }, SegmentView { k: &own_k[half..], v: &own_v[half..], batch: 1, capacity: 8, len: s }],
            prefix,
            None,
        );
        assert_eq!(&both[s * 128..], &alone[..]);
    }
}

#[cfg(test)]
mod naive_check {
    use super::*;

    /// Textbook attention in f64 over one contiguous (kv_heads, len, hd) cache.
    fn naive(q: &[f32], s: usize, heads: Heads, k: &[f32], v: &[f32], len: usize, offset: usize) -> Vec<f32> {
        let Heads { n_head, n_kv_head, head_dim: hd } = heads;
        let group = n_head / n_kv_head;
        let mut out = vec![0f32; s * n_head * hd];
        for i in 0..s {
            for h in 0..n_head {
                let kvh = h / group;
                let qv = &q[(i * n_head + h) * hd..][..hd];
                let sc: Vec<f64> = (0..=offset + i).map(|j| (0..hd).map(|d| qv[d] as f64 * k[(kvh * len + j) * hd + d] as f64).sum::<f64>() / (hd as f64).sqrt()).collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    out[(i * n_head + h) * hd + d] = ((0..=offset + i).map(|j| e[j] * v[(kvh * len + j) * hd + d] as f64).sum::<f64>() / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_textbook_attention_at_smollm2_shapes() {
        let heads = Heads { n_head: 9, n_kv_head: 3, head_dim: 64 };
        let (offset, s, cap) = (30, 21, 64);
        let k: Vec<f32> = (0..3 * cap * 64).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0).collect();
        let v: Vec<f32> = (0..3 * cap * 64).map(|i| (i * 104729 % 1000) as f32 / 500.0 - 1.0).collect();
        let q: Vec<f32> = (0..s * 9 * 64).map(|i| ((i * 15485863 % 1000) as f32 / 500.0 - 1.0) * 2.0).collect();
        let ours = attention(&q, 1, s, heads, &[SegmentView { k: &k, v: &v, batch: 1, capacity: cap, len: offset + s }], offset, None);
        let want = naive(&q, s, heads, &k, &v, cap, offset);
        let diff = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "max difference {diff}");
    }
}
