//! Measures computed from a run's records: scale scores (`scores`, the one implementation
//! the summary, the gate and the report share), the validity gate (`validity`: whether
//! each instrument measured the model at all) and the calibrated read-out
//! (`calibration`, from the run's content-free records). Inputs are the `results` types;
//! the statistics come from `stats`.

pub mod calibration;
pub mod scores;
pub mod validity;

pub use calibration::{calibrate, Calibrated, CalibrationTable};
pub use scores::{scale_scores, Readout, ScaleScore};
pub use validity::{gate_verdicts, validity_checks, Check, GateVerdict, Verdict};
