//! Measures how far each kernel path's logits are from the dense-f32 reference on a
//! real model: `cargo run --release --example accuracy_probe -- MODEL`.

use affectbench::model::reference::ReferenceModel;
use affectbench::model::{Activation, Kernels, KvCache, LoadOptions, Model};
use affectbench::registry::{ModelRef, Registry};

fn main() -> anyhow::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "smollm2-135m-instruct".into());
    let reg = Registry::builtin();
    let r = ModelRef::resolve(&reg, &name)?;
    let act = if name.starts_with("gemma") {
        Some(Activation::Silu)
    } else {
        None
    };
    let load = |k| {
        Model::load_ref(
            &r,
            &LoadOptions {
                kernels: k,
                activation_override: act,
                ..Default::default()
            },
        )
    };
    let (packed, candle, dense) = (
        load(Kernels::Packed)?,
        load(Kernels::Candle)?,
        load(Kernels::DenseF32)?,
    );
    let prompt = packed.tokenizer.encode(
        "You are walking home alone at night when you hear footsteps behind you. How do you feel?",
        true,
    )?;
    let run = |m: &Model| -> anyhow::Result<Vec<f32>> {
        Ok(m.transformer
            .last_logits(&prompt, &mut KvCache::new(m.transformer.config.n_layer))?)
    };
    let (p, c, d) = (run(&packed)?, run(&candle)?, run(&dense)?);
    let mut reference =
        ReferenceModel::load(&affectbench::cache::cached_file(reg.get(&name).unwrap())?)?;
    let refl = reference.forward(&prompt, 0)?;
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let range = d.iter().cloned().fold(f32::NEG_INFINITY, f32::max)
        - d.iter().cloned().fold(f32::INFINITY, f32::min);
    println!("{name}: logit range {range:.2}; max|diff| vs dense f32: packed {:.4}, candle-kernels {:.4}, candle-transformers {:.4}; packed vs candle-transformers {:.4}",
        diff(&p, &d), diff(&c, &d), diff(&refl, &d), diff(&p, &refl));
    Ok(())
}
