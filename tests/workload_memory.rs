//! What a questionnaire pass holds beyond the weights, counted by this binary's own
//! allocator: forked caches hold their own positions (not room reserved ahead for
//! decoding), and capturing every block keeps the vectors that are read, not every
//! block's whole stream. Both were found on an 8B file, where they were 1.1 GB and
//! 0.35 GB of `bench`'s peak; here a tiny model shows the same shape in megabytes.
//!
//! One test in this file on purpose: the counters are process-wide, and a second test
//! running alongside would add its allocations to them.

mod common;

use affectbench::bench::questionnaire_pass_capturing;
use affectbench::model::{LoadOptions, Model};
use affectbench::registry::ModelRef;
use common::{write_tiny_gguf, Tiny};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live now and the most live since `reset`.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is passed to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Bytes allocated above what was live when `f` started, at its highest.
fn peak_above_start(f: impl FnOnce()) -> usize {
    let start = LIVE.load(Ordering::SeqCst);
    PEAK.store(start, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - start
}

#[test]
fn a_questionnaire_pass_holds_its_positions_and_the_vectors_it_captures_not_more() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny {
        d: 256,
        ffn: 512,
        layers: 8,
        context: 512,
        ..Tiny::llama()
    };
    let path = dir.path().join("m.gguf");
    write_tiny_gguf(&path, &tiny, 5);
    let model = Model::load_ref(&ModelRef::GgufFile(path), &LoadOptions::default()).unwrap();

    let token = |i: usize| (i * 37 % 250) as u32 + 1;
    let prefix: Vec<u32> = (0..200).map(token).collect();
    let items: Vec<Vec<u32>> = (0..8)
        .map(|k| (0..12).map(|i| token(300 + 12 * k + i)).collect())
        .collect();
    // Two-token options, as " 1" is in Llama 3's vocabulary: each item's cache is
    // forked once more to score the second token.
    let options: Vec<Vec<u32>> = (0..4).map(|o| vec![32, token(500 + o)]).collect();
    let every_block: Vec<usize> = (0..=tiny.layers).collect();
    let pass = |capture: &[usize]| {
        questionnaire_pass_capturing(&model, &prefix, &items, &options, 32, capture).unwrap();
    };
    pass(&every_block); // the kernel threads' own buffers, allocated once

    // Per cached position: keys and values, f32, every layer.
    let kv_dim = tiny.kv_heads * tiny.hd();
    let position = tiny.layers * 2 * kv_dim * 4;
    // What the pass must hold: the prefix, each item's 12 tokens and each option
    // fork's one, every segment rounded up to whole blocks of 16 positions.
    let needed = (208 + 8 * 16 + 8 * 16) * position;
    let plain = peak_above_start(|| pass(&[]));
    // Besides the cache, the pass holds a layer's activations for 296 rows at most
    // (well under 1 MB here) and 8 rows of logits.
    assert!(
        plain < needed + needed / 2,
        "the plain pass peaked {plain} bytes above its start, for {needed} bytes of cached \
         positions: forks reserve room they never use"
    );

    let captured = peak_above_start(|| pass(&every_block));
    let kept = every_block.len() * (1 + items.len()) * tiny.d * 4;
    // One block's whole stream over the prefix: holding every block's until the pass
    // ends would add nine of them.
    let stream = prefix.len() * tiny.d * 4;
    assert!(
        captured <= plain + kept + 2 * stream,
        "capturing every block peaked {captured} bytes above its start against {plain} \
         without capture, for {kept} bytes of kept vectors: whole streams outlive their block"
    );
}
