//! What a fixed-plan run's bits depend on beyond the plan: the device model, its driver
//! and the CUDA version the binary was built against (GPU GEMM kernels are chosen by
//! the library for the device), or the CPU model on the CPU.

/// A one-line description of `device` (`cpu`, `cuda:N`, `metal`), for run.json and
/// `bench`.
pub fn describe(device: &str) -> String {
    if device == "cpu" {
        return format!("cpu: {}", crate::kernels::int8_matmul::cpu_description());
    }
    if let Some(ordinal) = device.strip_prefix("cuda") {
        let ordinal = ordinal.trim_start_matches(':');
        let ordinal = if ordinal.is_empty() { "0" } else { ordinal };
        return format!(
            "{}, CUDA {} (built against)",
            nvidia_smi(ordinal).unwrap_or_else(|| format!(
                "CUDA device {ordinal} (nvidia-smi not found: GPU name and driver unknown)"
            )),
            option_env!("AFFECTBENCH_CUDA_VERSION").unwrap_or("unknown")
        );
    }
    device.to_string()
}

/// `NAME, driver VERSION` of GPU `ordinal` from nvidia-smi, where it runs.
fn nvidia_smi(ordinal: &str) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version",
            "--format=csv,noheader",
            &format!("--id={ordinal}"),
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (name, driver) = line.split_once(',')?;
    Some(format!("{}, driver {}", name.trim(), driver.trim()))
}
