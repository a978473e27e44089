//! Causal self-attention on the CPU over a segmented KV cache.
//!
//! The candle-op path (`Transformer::attend_reference`) issues a dozen small tensor ops
//! per sequence and layer and runs them on one thread; for a batch of short items after
//! a long shared prefix that overhead, not arithmetic, dominated the pass. Here one
//! function does a (sequence, kv head, block of queries) unit, every query head of the
//! group, reading the cache's transposed keys in place; the pool spreads the units
//! over the threads.
//!
//! Every output is computed by the same operations in the same order whatever the
//! batch, the other rows, the number of new tokens, the unit it falls in or the thread
//! count:
//!
//! ```text
//!   score_j = (sum_d q_d k_j[d]) / sqrt(hd)   one fused multiply-add chain over d per key
//!   p_j     = exp(score_j - max)               `exp` below; the sum of p_j in 16 lanes
//!                                              by position, then pairwise
//!   out     = (sum_j p_j v_j) / sum_j p_j      two fma chains over the keys per element
//!                                              (even and odd positions), then added
//! ```
//!
//! so a sequence's attention is bit-identical alone or batched (the engine's guarantee).

use crate::kernels::DisjointMut;

/// Keys and values of one cache segment: keys transposed, `(batch, kv_heads, head_dim,
/// capacity)`, values `(batch, kv_heads, capacity, head_dim)`, of which the first `len`
/// positions are valid. A batch-1 segment is shared by every row.
pub struct SegmentView<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub batch: usize,
    pub capacity: usize,
    pub len: usize,
}

impl SegmentView<'_> {
    /// Offset of (row, kv head) in either buffer, in f32s.
    fn head_base(&self, row: usize, kv_head: usize, hd: usize) -> usize {
        let r = if self.batch == 1 { 0 } else { row };
        let n_kv = self.v.len() / (self.batch * self.capacity * hd);
        (r * n_kv + kv_head) * self.capacity * hd
    }
}

/// Head layout of the attention.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// How scores become attention logits: `q . k * scale`, then, with a soft cap c (Gemma
/// 2), `c * tanh(score / c)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRule {
    pub scale: f32,
    pub softcap: Option<f32>,
}

impl ScoreRule {
    /// 1 / sqrt(head_dim), no cap.
    pub fn standard(head_dim: usize) -> Self {
        ScoreRule {
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
        }
    }
}

/// `q` is (b, s, n_head * head_dim) after rope; the new tokens' keys and values are
/// already in the segments (the cache held `offset` positions before them). Returns
/// (b, s, n_head * head_dim). Query i of a row sees key j iff j <= offset + i and, with
/// a window w, offset + i - j < w.
pub fn attention(
    q: &[f32],
    b: usize,
    s: usize,
    heads: Heads,
    segments: &[SegmentView],
    offset: usize,
    window: Option<usize>,
) -> Vec<f32> {
    let rule = ScoreRule::standard(heads.head_dim);
    attention_with(q, b, s, heads, segments, offset, window, rule)
}

/// `attention` with the scores formed by `rule`.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    q: &[f32],
    b: usize,
    s: usize,
    heads: Heads,
    segments: &[SegmentView],
    offset: usize,
    window: Option<usize>,
    rule: ScoreRule,
) -> Vec<f32> {
    let Heads {
        n_head,
        n_kv_head,
        head_dim,
    } = heads;
    let width = n_head * head_dim;
    assert_eq!(q.len(), b * s * width);
    assert!(
        HEAD_DIMS.contains(&head_dim),
        "head_dim {head_dim} is not one of {HEAD_DIMS:?}"
    );
    let mut out = vec![0f32; b * s * width];
    let total: usize = segments.iter().map(|g| g.len).sum();
    assert_eq!(
        total,
        offset + s,
        "segments must hold the cached and the new positions"
    );
    // A unit is (row, kv head, block of queries): every query head of the group reads
    // that kv head's keys while they are still in cache.
    let blocks = s.div_ceil(QUERY_BLOCK);
    let units = b * n_kv_head * blocks;
    let dst = DisjointMut::new(&mut out);
    let run = |range: std::ops::Range<usize>| {
        let mut scores = Vec::new();
        for unit in range {
            let (row, rest) = (unit / (n_kv_head * blocks), unit % (n_kv_head * blocks));
            let (kv_head, block) = (rest / blocks, rest % blocks);
            let queries = block * QUERY_BLOCK..((block + 1) * QUERY_BLOCK).min(s);
            // SAFETY: units partition the (row, query, head) outputs; each runs once.
            unsafe {
                attend_unit(
                    q,
                    dst,
                    row,
                    kv_head,
                    queries,
                    s,
                    heads,
                    segments,
                    offset,
                    window,
                    rule,
                    &mut scores,
                )
            };
        }
    };
    // Small problems (a decode step) run inline; the split never changes results.
    if units > 1 && b * s * n_head * total * head_dim >= 1 << 16 {
        crate::kernels::pool::pool().execute_chunked(units, run);
    } else {
        run(0..units);
    }
    out
}

/// Queries per unit: enough units to balance the causal triangle over the threads.
const QUERY_BLOCK: usize = 16;
/// Keys per register block of the score loop (independent fma chains in flight).
const KEY_BLOCK: usize = 128;

/// Attention for one (row, kv head, block of queries) unit, written into `dst`.
///
/// # Safety
/// No other task accesses this unit's outputs in `dst` (row `row`, queries `queries`,
/// the query heads of `kv_head`) during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn attend_unit(
    q: &[f32],
    dst: DisjointMut<f32>,
    row: usize,
    kv_head: usize,
    queries: std::ops::Range<usize>,
    s: usize,
    heads: Heads,
    segments: &[SegmentView],
    offset: usize,
    window: Option<usize>,
    rule: ScoreRule,
    scores: &mut Vec<f32>,
) {
    let Heads {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = heads;
    let group = n_head / n_kv_head;
    let width = n_head * hd;
    scores.resize(offset + queries.end, 0.0);
    for i in queries {
        let qpos = offset + i;
        let first = window.map_or(0, |w| (qpos + 1).saturating_sub(w));
        for head in kv_head * group..(kv_head + 1) * group {
            let at = (row * s + i) * width + head * hd;
            // SAFETY: these outputs belong to this unit (the caller's guarantee).
            let out = unsafe { dst.part(at, hd) };
            one_query(
                &q[at..at + hd],
                first..qpos + 1,
                rule,
                scores,
                segments,
                row,
                kv_head,
                out,
            );
        }
    }
}

/// One query over the keys at global positions `visible`: scores, softmax, and the
/// probability-weighted sum of the values.
#[allow(clippy::too_many_arguments)]
fn one_query(
    q: &[f32],
    visible: std::ops::Range<usize>,
    rule: ScoreRule,
    scores: &mut [f32],
    segments: &[SegmentView],
    row: usize,
    kv_head: usize,
    out: &mut [f32],
) {
    match q.len() {
        16 => one_query_hd::<16>(q, visible, rule, scores, segments, row, kv_head, out),
        32 => one_query_hd::<32>(q, visible, rule, scores, segments, row, kv_head, out),
        64 => one_query_hd::<64>(q, visible, rule, scores, segments, row, kv_head, out),
        128 => one_query_hd::<128>(q, visible, rule, scores, segments, row, kv_head, out),
        256 => one_query_hd::<256>(q, visible, rule, scores, segments, row, kv_head, out),
        hd => unreachable!("head_dim {hd} is not in HEAD_DIMS"),
    }
}

/// Head dimensions the kernel is compiled for (the loops are unrolled per size so the
/// accumulators live in registers).
pub const HEAD_DIMS: [usize; 5] = [16, 32, 64, 128, 256];

#[allow(clippy::too_many_arguments)]
fn one_query_hd<const HD: usize>(
    q: &[f32],
    visible: std::ops::Range<usize>,
    rule: ScoreRule,
    scores: &mut [f32],
    segments: &[SegmentView],
    row: usize,
    kv_head: usize,
    out: &mut [f32],
) {
    let q: &[f32; HD] = q.try_into().expect("q has HD values");
    let scale = rule.scale;
    // score_j = (sum over d in order of q_d * k_j[d]) * scale: one fma chain per key,
    // whatever block or segment the key falls in (blocks only decide how many chains
    // run side by side).
    let mut start = 0;
    for seg in segments {
        let (lo, hi) = (visible.start.max(start), visible.end.min(start + seg.len));
        let keys = &seg.k[seg.head_base(row, kv_head, HD)..];
        let cap = seg.capacity;
        let mut j0 = lo;
        while j0 < hi {
            let at = j0 - start;
            let n = (hi - j0).min(KEY_BLOCK);
            if n == KEY_BLOCK {
                let acc = key_block::<HD, KEY_BLOCK>(q, keys, cap, at);
                for l in 0..KEY_BLOCK {
                    scores[j0 + l] = acc[l] * scale;
                }
            } else if at + 16 <= cap {
                // A block of 16 may read past the valid keys (within the buffer); those
                // lanes are discarded.
                let acc = key_block::<HD, 16>(q, keys, cap, at);
                let n = n.min(16);
                for l in 0..n {
                    scores[j0 + l] = acc[l] * scale;
                }
                j0 += n;
                continue;
            } else {
                for l in 0..n {
                    let mut acc = 0f32;
                    for (d, &qd) in q.iter().enumerate() {
                        acc = qd.mul_add(keys[d * cap + at + l], acc);
                    }
                    scores[j0 + l] = acc * scale;
                }
            }
            j0 += n;
        }
        start += seg.len;
    }
    if let Some(cap) = rule.softcap {
        for x in &mut scores[visible.clone()] {
            *x = cap * (*x / cap).tanh();
        }
    }
    let sum = softmax_in_place(&mut scores[visible.clone()]);
    // Two accumulators (keys at even and odd positions of the visible range) so
    // consecutive fmas do not wait on each other; added at the end.
    let (mut even, mut odd) = ([0f32; HD], [0f32; HD]);
    let mut start = 0;
    for seg in segments {
        let (lo, hi) = (visible.start.max(start), visible.end.min(start + seg.len));
        let values = &seg.v[seg.head_base(row, kv_head, HD)..];
        let value = |j: usize| -> &[f32; HD] {
            values[(j - start) * HD..][..HD]
                .try_into()
                .expect("HD values")
        };
        let mut j = lo;
        if j < hi && (j - visible.start) % 2 == 1 {
            add_scaled(&mut odd, scores[j], value(j));
            j += 1;
        }
        while j + 1 < hi {
            add_scaled(&mut even, scores[j], value(j));
            add_scaled(&mut odd, scores[j + 1], value(j + 1));
            j += 2;
        }
        if j < hi {
            add_scaled(&mut even, scores[j], value(j));
        }
        start += seg.len;
    }
    let inv = 1.0 / sum;
    for (d, o) in out.iter_mut().enumerate() {
        *o = (even[d] + odd[d]) * inv;
    }
}

#[inline(always)]
fn add_scaled<const HD: usize>(acc: &mut [f32; HD], p: f32, v: &[f32; HD]) {
    for d in 0..HD {
        acc[d] = p.mul_add(v[d], acc[d]);
    }
}

/// Replaces scores by exp(score - max) and returns their sum (16 lanes by position,
/// then pairwise). Written in whole 16-lane steps so it vectorises.
fn softmax_in_place(x: &mut [f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        m[l] = if v > m[l] { v } else { m[l] };
    }
    // Max is exact, so the lane split does not matter.
    let max = m
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = exp(c[l] - max);
            lanes[l] += c[l];
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = exp(*v - max);
        lanes[l] += *v;
    }
    pairwise(lanes)
}

/// Dot products of `q` with the N keys at positions at..at+N of a transposed key buffer
/// (row stride `cap`): one fma chain over d per key.
#[inline(always)]
fn key_block<const HD: usize, const N: usize>(
    q: &[f32; HD],
    keys: &[f32],
    cap: usize,
    at: usize,
) -> [f32; N] {
    let mut acc = [0f32; N];
    for d in 0..HD {
        let kr: &[f32; N] = keys[d * cap + at..][..N].try_into().expect("N keys");
        let qd = q[d];
        for l in 0..N {
            acc[l] = qd.mul_add(kr[l], acc[l]);
        }
    }
    acc
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

/// e^x for -87 <= x <= 87 (smaller x give e^-87; callers clamp larger ones), to about 2 ulp, in plain arithmetic the compiler
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
    // 2^n from the bits of (n + 127) held in a float's mantissa (n is in [-126, 0]):
    // integer bit operations only, so the loop stays vectorised.
    let biased = (n + 127.0 + 8_388_608.0).to_bits() & 0x7F_FFFF;
    p * f32::from_bits(biased << 23)
}

/// Rotary position embedding in place on `x` (rows of `heads` x `hd`, position of row
/// i = pos0 + i / rows_per_position). `cos`/`sin` are (positions, hd/2) tables. `neox`
/// rotates (d, d + hd/2) pairs, otherwise (2d, 2d+1).
pub fn rope(
    x: &mut [f32],
    n_heads: usize,
    hd: usize,
    positions: impl Iterator<Item = usize>,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    let half = hd / 2;
    for (token, pos) in x.chunks_exact_mut(n_heads * hd).zip(positions) {
        let (c, sn) = (
            &cos[pos * half..(pos + 1) * half],
            &sin[pos * half..(pos + 1) * half],
        );
        for h in token.chunks_exact_mut(hd) {
            for d in 0..half {
                let (i1, i2) = if neox {
                    (d, d + half)
                } else {
                    (2 * d, 2 * d + 1)
                };
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
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn exp_is_close_to_libm() {
        // -80..80 (below -80 softmax weights are < 1e-34 and the clamp at -87 rules).
        for i in -1600..1600 {
            let x = -(i as f32) * 0.05;
            let (ours, libm) = (exp(x), x.exp());
            assert!(
                (ours - libm).abs() <= 4.0 * f32::EPSILON * libm,
                "{x}: {ours} vs {libm}"
            );
        }
        assert!(exp(-200.0) < 1e-37);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn uniform_keys_average_the_values() {
        let heads = Heads {
            n_head: 2,
            n_kv_head: 1,
            head_dim: 16,
        };
        let k = vec![0.5f32; 3 * 16];
        let v: Vec<f32> = (0..3).flat_map(|j| vec![j as f32; 16]).collect();
        let seg = SegmentView {
            k: &k,
            v: &v,
            batch: 1,
            capacity: 3,
            len: 3,
        };
        let q = vec![1f32; 32];
        let out = attention(&q, 1, 1, heads, &[seg], 2, None);
        assert!(out.iter().all(|&o| (o - 1.0).abs() < 1e-6), "{out:?}");
        // The first query position sees only key 0.
        let q2 = vec![1f32; 3 * 32];
        let out = attention(
            &q2,
            1,
            3,
            heads,
            &[SegmentView {
                k: &k,
                v: &v,
                batch: 1,
                capacity: 3,
                len: 3,
            }],
            0,
            None,
        );
        assert!(out[..32].iter().all(|&o| o == 0.0));
        let win = attention(
            &q2,
            1,
            3,
            heads,
            &[SegmentView {
                k: &k,
                v: &v,
                batch: 1,
                capacity: 3,
                len: 3,
            }],
            0,
            Some(1),
        );
        assert!(
            win[64..].iter().all(|&o| o == 2.0),
            "a window of 1 sees only the query's own key"
        );
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_and_in_a_batch() {
        let heads = Heads {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 32,
        };
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
            &[
                SegmentView {
                    k: &shared_k,
                    v: &shared_v,
                    batch: 1,
                    capacity: prefix,
                    len: prefix,
                },
                SegmentView {
                    k: &own_k,
                    v: &own_v,
                    batch: 2,
                    capacity: 8,
                    len: s,
                },
            ],
            prefix,
            None,
        );
        let half = own_k.len() / 2;
        let alone = attention(
            &q[s * 128..],
            1,
            s,
            heads,
            &[
                SegmentView {
                    k: &shared_k,
                    v: &shared_v,
                    batch: 1,
                    capacity: prefix,
                    len: prefix,
                },
                SegmentView {
                    k: &own_k[half..],
                    v: &own_v[half..],
                    batch: 1,
                    capacity: 8,
                    len: s,
                },
            ],
            prefix,
            None,
        );
        assert_eq!(&both[s * 128..], &alone[..]);
    }
}

#[cfg(test)]
mod naive_check {
    use super::*;

    /// Textbook attention in f64 over one segment: keys (kv_heads, hd, len), values
    /// (kv_heads, len, hd).
    fn naive(
        q: &[f32],
        s: usize,
        heads: Heads,
        k: &[f32],
        v: &[f32],
        len: usize,
        offset: usize,
    ) -> Vec<f32> {
        let Heads {
            n_head,
            n_kv_head,
            head_dim: hd,
        } = heads;
        let group = n_head / n_kv_head;
        let mut out = vec![0f32; s * n_head * hd];
        for i in 0..s {
            for h in 0..n_head {
                let kvh = h / group;
                let qv = &q[(i * n_head + h) * hd..][..hd];
                let sc: Vec<f64> = (0..=offset + i)
                    .map(|j| {
                        (0..hd)
                            .map(|d| qv[d] as f64 * k[(kvh * hd + d) * len + j] as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    out[(i * n_head + h) * hd + d] = ((0..=offset + i)
                        .map(|j| e[j] * v[(kvh * len + j) * hd + d] as f64)
                        .sum::<f64>()
                        / z) as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matches_textbook_attention_at_smollm2_shapes() {
        let heads = Heads {
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
        };
        let (offset, s, cap) = (30, 21, 64);
        let k: Vec<f32> = (0..3 * cap * 64)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let v: Vec<f32> = (0..3 * cap * 64)
            .map(|i| (i * 104729 % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let q: Vec<f32> = (0..s * 9 * 64)
            .map(|i| ((i * 15485863 % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect();
        let ours = attention(
            &q,
            1,
            s,
            heads,
            &[SegmentView {
                k: &k,
                v: &v,
                batch: 1,
                capacity: cap,
                len: offset + s,
            }],
            offset,
            None,
        );
        let want = naive(&q, s, heads, &k, &v, cap, offset);
        let diff = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "max difference {diff}");
    }
}
