//! Our forward pass against candle-transformers' on the three real models, in four
//! checks (figures measured on this project's machine are in docs/design.md and docs/performance.md):
//!
//! 1. The model code: our transformer running candle's own quantized matmul (and candle's
//!    attention ops, `OpPath::Reference`) must equal
//!    candle-transformers within 1e-3 on every step (same arithmetic, different code).
//! 2. The fast path: with our packed int8 kernels the top-1 token must agree with
//!    candle-transformers at every step (unless the exact f32 arithmetic itself has the
//!    two candidates within 0.1 logits: then rounding decides, and the test reports
//!    it), and the max logit difference stay below 5% of
//!    the logit range. (Both quantise activations to 8 bits, in different block layouts,
//!    so they cannot agree to the last digit.)
//! 3. Accuracy: against dense f32 weights with unquantised activations (the exact
//!    arithmetic of the file's weights), our packed path must be no further off than
//!    candle's kernels are (with a 25% margin).
//! 4. The fused CPU attention (the default) against the candle-op attention, on dense
//!    f32 weights: logits within 1e-3 at every step.

use crate::common;

use affectbench::model::reference::ReferenceModel;
use affectbench::model::{Activation, Kernels, KvCache, LoadOptions, Model, OpPath};
use affectbench::registry::{ModelRef, Registry};
use common::{argmax, max_abs_diff};

const PROMPT: &str =
    "You are walking home alone at night when you hear footsteps behind you. How do you feel?";
const STEPS: usize = 5;
/// Logit margin (in exact f32 arithmetic) below which two candidates count as tied.
const NEAR_TIE: f32 = 0.1;

fn load(name: &str, kernels: Kernels) -> Model {
    common::real_model(name);
    let reg = Registry::builtin();
    // candle-transformers' quantized_gemma3 uses SiLU where Gemma 3 uses GELU-tanh: pin
    // ours to SiLU when comparing so that everything else is compared as is.
    let activation_override = name.starts_with("gemma").then_some(Activation::Silu);
    let opts = LoadOptions {
        kernels,
        activation_override,
        ..Default::default()
    };
    Model::load_ref(&ModelRef::resolve(&reg, name).unwrap(), &opts).unwrap()
}

/// Logits for the prompt and then `STEPS` greedy continuations (driven by `driver`'s
/// choices so all implementations see the same tokens).
fn trajectory(m: &Model, prompt: &[u32], tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = KvCache::new(m.transformer.config.n_layer);
    let mut out = vec![m.transformer.last_logits(prompt, &mut cache).unwrap()];
    for &t in tokens {
        out.push(m.transformer.last_logits(&[t], &mut cache).unwrap());
    }
    out
}

fn reference_trajectory(name: &str, prompt: &[u32], tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut r = ReferenceModel::load(&common::real_model(name)).unwrap();
    let mut out = vec![r.forward(prompt, 0).unwrap()];
    for (i, &t) in tokens.iter().enumerate() {
        out.push(r.forward(&[t], prompt.len() + i).unwrap());
    }
    out
}

fn check(name: &str) {
    let packed = load(name, Kernels::Packed);
    let prompt = packed.tokenizer.encode(PROMPT, true).unwrap();
    // The greedy continuation of the fast path drives every implementation.
    let mut cache = KvCache::new(packed.transformer.config.n_layer);
    let mut logits = packed.transformer.last_logits(&prompt, &mut cache).unwrap();
    let mut tokens = Vec::new();
    for _ in 0..STEPS {
        let t = argmax(&logits) as u32;
        tokens.push(t);
        logits = packed.transformer.last_logits(&[t], &mut cache).unwrap();
    }
    let fast = trajectory(&packed, &prompt, &tokens);
    drop(packed);
    // Check 1 compares code with identical arithmetic, so it runs candle's attention ops
    // as candle-transformers does.
    let mut on_candle = load(name, Kernels::Candle);
    on_candle.transformer.op_path = OpPath::Reference;
    let ours_on_candle = trajectory(&on_candle, &prompt, &tokens);
    drop(on_candle);
    let mut dense_model = load(name, Kernels::DenseF32);
    let dense = trajectory(&dense_model, &prompt, &tokens);
    // 4. Fused vs candle-op attention on dense weights (with 8-bit activations a
    // last-bit difference can flip one activation's rounding and grow through the
    // layers, which would hide what is compared here).
    dense_model.transformer.op_path = OpPath::Reference;
    let dense_reference_attention = trajectory(&dense_model, &prompt, &tokens);
    drop(dense_model);
    for step in 0..=STEPS {
        let diff = max_abs_diff(&dense[step], &dense_reference_attention[step]);
        assert!(
            diff < 1e-3,
            "{name} step {step}: fused attention differs from the candle-op attention by {diff}"
        );
    }
    let reference = reference_trajectory(name, &prompt, &tokens);

    for step in 0..=STEPS {
        let code_diff = max_abs_diff(&ours_on_candle[step], &reference[step]);
        assert!(code_diff < 1e-3, "{name} step {step}: our model on candle kernels differs from candle-transformers by {code_diff}");

        let (f, r, d) = (&fast[step], &reference[step], &dense[step]);
        let (top_f, top_r) = (argmax(f), argmax(r));
        if top_f != top_r {
            // Allowed only where the exact arithmetic itself is a near-tie between the two
            // candidates, i.e. where 8-bit activation rounding legitimately decides.
            let exact_margin = (d[top_f] - d[top_r]).abs();
            assert!(
                exact_margin < NEAR_TIE,
                "{name} step {step}: top-1 {top_f} vs reference {top_r}, exact margin {exact_margin}"
            );
            eprintln!("{name} step {step}: near-tie ({exact_margin:.4} logits in f32): packed picks {top_f}, reference {top_r}");
        }
        let range =
            r.iter().cloned().fold(f32::MIN, f32::max) - r.iter().cloned().fold(f32::MAX, f32::min);
        let fast_diff = max_abs_diff(f, r);
        assert!(
            fast_diff < 0.05 * range,
            "{name} step {step}: packed vs reference {fast_diff} (range {range})"
        );

        let (ours_err, candle_err) = (max_abs_diff(f, d), max_abs_diff(r, d));
        assert!(
            ours_err <= 1.25 * candle_err + 1e-3,
            "{name} step {step}: packed is {ours_err} from dense f32, candle's kernels {candle_err}"
        );
        eprintln!("{name} step {step}: packed-vs-ref {fast_diff:.4}, |packed-f32| {ours_err:.4}, |candle-f32| {candle_err:.4}, code {code_diff:.2e}");
    }
}

#[test]
fn smollm2_matches_candle_transformers() {
    check("smollm2-135m-instruct");
}

#[test]
fn qwen2_matches_candle_transformers() {
    check("qwen2.5-coder-0.5b-instruct");
}

#[test]
fn gemma3_matches_candle_transformers_apart_from_its_activation() {
    check("gemma3-270m");
}
