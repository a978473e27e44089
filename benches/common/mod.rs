//! Shared set-up for the criterion benches: the benchmark model, fetched through the
//! project's own fetch path and loaded with the production kernels.
#![allow(dead_code)]

use affectbench::fetch::{fetch, FetchOptions, Source};
use affectbench::model::{Kernels, LoadOptions, Model};
use affectbench::registry::{ModelRef, Registry};

/// SmolLM2-135M-Instruct, or the model named by `AFFECTBENCH_BENCH_MODEL`.
pub fn bench_model() -> Model {
    affectbench::set_threads(affectbench::default_threads(), true).unwrap();
    let name =
        std::env::var("AFFECTBENCH_BENCH_MODEL").unwrap_or_else(|_| "smollm2-135m-instruct".into());
    let reg = Registry::builtin();
    fetch(
        reg.get(&name).expect("a registry model"),
        &FetchOptions {
            source: Source::Auto,
            force: false,
            show_progress: false,
        },
    )
    .expect("fetching the benchmark model");
    Model::load_ref(
        &ModelRef::resolve(&reg, &name).unwrap(),
        &LoadOptions {
            kernels: Kernels::Packed,
            ..Default::default()
        },
    )
    .unwrap()
}
