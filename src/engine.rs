//! The engine configuration: every choice of arithmetic in one value, set from flags
//! (whose defaults environment variables may set), turned into load options, and
//! recorded in run.json as what actually ran, so a resume can refuse a different one.

use crate::kernels::int8_matmul::{best_path, KernelPath};
use crate::model::{Kernels, LoadOptions, Model, OpPath};
use crate::results::EngineRecord;
use crate::Result;

/// How models are loaded and computed.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `cpu`, `cuda:N` or `metal`, as the user gave it.
    pub device: String,
    /// The linear layers' kernels.
    pub weights: Kernels,
    /// The packed int8 micro-kernel; `None` picks the fastest this CPU has.
    pub int8_kernel: Option<KernelPath>,
    /// Fused CPU attention/activation where they apply, or the candle-op reference.
    pub ops: OpPath,
    pub threads: usize,
    /// Most rows in one batch (items prefilled together, lockstep decoding).
    pub batch_size: usize,
    /// Run units of trials through the fixed-plan batched path even on the CPU (it is
    /// what every other device runs; on the CPU it is for tests and dry runs).
    pub force_fixed_plan: bool,
    /// How packed 4-bit weights are held (None: by model size,
    /// `FourBit::for_model_bytes`). Speed and memory only: the results are the same bits.
    pub four_bit: Option<crate::kernels::packed::FourBit>,
}

/// Why a run's results are reproducible, as run.json records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// The packed CPU kernels compute every row alone: any batching, thread count or
    /// resume gives the same bits.
    BatchInvariant,
    /// Rows share passes whose bits depend on the pass (GPU GEMMs choose kernels by
    /// shape), so each unit's composition is fixed by the plan and `--batch-size`: the
    /// same device model, driver and library versions and batch size give the same bits.
    FixedPlan,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::BatchInvariant => "batch_invariant",
            Guarantee::FixedPlan => "fixed_plan",
        }
    }
}

/// The default batch cap.
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// The default batch cap on GPUs.
pub const DEFAULT_GPU_BATCH_SIZE: usize = 256;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            device: "cpu".into(),
            weights: Kernels::Packed,
            int8_kernel: None,
            ops: OpPath::Fused,
            threads: crate::default_threads(),
            batch_size: DEFAULT_BATCH_SIZE,
            force_fixed_plan: false,
            four_bit: None,
        }
    }
}

impl EngineConfig {
    /// The int8 micro-kernel that will run.
    pub fn resolved_int8_kernel(&self) -> KernelPath {
        self.int8_kernel.unwrap_or_else(best_path)
    }

    /// The weights that load: the packed int8 kernels are CPU code, so elsewhere the
    /// default becomes dense f16 for the device's GEMMs.
    pub fn resolved_weights(&self) -> Kernels {
        if self.weights == Kernels::Packed && self.device != "cpu" {
            Kernels::DenseF16
        } else {
            self.weights
        }
    }

    /// Whether units run through the fixed-plan batched path: on every device but the
    /// CPU, and on the CPU when forced.
    pub fn fixed_plan(&self) -> bool {
        self.force_fixed_plan || self.device != "cpu"
    }

    pub fn guarantee(&self) -> Guarantee {
        if self.fixed_plan() {
            Guarantee::FixedPlan
        } else {
            Guarantee::BatchInvariant
        }
    }

    /// Options for loading a model under this configuration.
    pub fn load_options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: crate::model::parse_device(&self.device)?,
            kernels: self.resolved_weights(),
            int8_kernel: self.resolved_int8_kernel(),
            ops: self.ops,
            activation_override: None,
            four_bit: self.four_bit,
        })
    }

    /// What ran, as run.json records it: the weights and op path the loaded models
    /// actually use (packed weights fall back to candle's kernels off-CPU; fused ops to
    /// the reference where a head dim has no fused kernel).
    pub fn record(&self, models: &[Model]) -> EngineRecord {
        let packed = models.iter().any(|m| m.transformer.uses_packed_weights());
        // What the models actually hold (a safetensors directory loads f32 whatever
        // was asked; a GGUF whose output matrix does not pack runs candle's kernels).
        let mut kinds: Vec<&str> = models
            .iter()
            .map(|m| m.transformer.weights_kind().name())
            .collect();
        kinds.dedup();
        let weights = if kinds.is_empty() {
            self.resolved_weights().name().to_string()
        } else if packed && kinds.iter().any(|k| *k != Kernels::Packed.name()) {
            // Packed layers with a few candle ones (matrices that do not pack): packed.
            Kernels::Packed.name().to_string()
        } else {
            kinds.join("+")
        };
        let mut ops: Vec<&str> = models
            .iter()
            .map(|m| m.transformer.op_path.name())
            .collect();
        ops.dedup();
        EngineRecord {
            device: self.device.clone(),
            threads: self.threads,
            batch_size: Some(self.batch_size),
            weights: Some(weights),
            int8_kernel: Some(
                if packed {
                    self.resolved_int8_kernel().name()
                } else {
                    "none"
                }
                .to_string(),
            ),
            ops: Some(if ops.is_empty() {
                self.ops.name().to_string()
            } else {
                ops.join("+")
            }),
            guarantee: Some(self.guarantee().name().to_string()),
            accelerator: self
                .fixed_plan()
                .then(|| crate::device_info::describe(&self.device)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed::FourBit;

    #[test]
    fn the_four_bit_layout_reaches_the_load_options() {
        // Regression: the layout was read from the environment inside the packed format,
        // out of the engine configuration's reach.
        for layout in [None, Some(FourBit::Nibbles), Some(FourBit::Bytes)] {
            let config = EngineConfig {
                four_bit: layout,
                ..EngineConfig::default()
            };
            assert_eq!(config.load_options().unwrap().four_bit, layout);
        }
    }
}
