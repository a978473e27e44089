//! The release binary runs on any x86-64-v3 CPU: no AMD-only SSE4a instruction anywhere,
//! and AVX-512 or AVX-VNNI instructions only inside functions that are chosen at run
//! time after checking the CPU (ours in `kernels::int8_matmul::avx512` and
//! `::avx256::avx_vnni`, candle's and crc32fast's dispatched variants). Reads the
//! disassembly with binutils' objdump.

#[test]
fn the_binary_holds_no_instruction_beyond_its_baseline_outside_run_time_dispatch() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIPPED the_binary_holds_no_instruction_beyond_its_baseline_outside_run_time_dispatch: not an x86-64 build");
        return;
    }
    let out = match std::process::Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(env!("CARGO_BIN_EXE_affectbench"))
        .output()
    {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!("SKIPPED the_binary_holds_no_instruction_beyond_its_baseline_outside_run_time_dispatch: objdump (binutils) is not installed; .ci/run installs it");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // Functions allowed AVX-512: compiled with #[target_feature] and only called after a
    // run-time CPU check.
    let dispatched = |f: &str| f.contains("avx512") || f.contains("_512") || f.contains("::amx::");
    let mut function = "";
    let mut sse4a = Vec::new();
    let mut avx512 = std::collections::BTreeSet::new();
    let mut avx_vnni = std::collections::BTreeSet::new();
    for line in text.lines() {
        if line.ends_with(">:") {
            function = line;
            continue;
        }
        let instruction = line.split('\t').nth(1).unwrap_or("");
        let mnemonic = instruction.split_whitespace().next().unwrap_or("");
        if ["extrq", "insertq", "movntsd", "movntss"].contains(&mnemonic) {
            sse4a.push(format!("{function} {instruction}"));
        }
        if (instruction.contains("%zmm") || instruction.contains("{%k")) && !dispatched(function) {
            avx512.insert(function.to_string());
        }
        // VEX-encoded vpdpbusd/vpdpwssd: AVX-VNNI, beyond x86-64-v3 (ours in
        // `avx256::avx_vnni`, candle's in `*_avxvnni`).
        if instruction.starts_with("{vex}")
            && !function.contains("avx_vnni")
            && !function.contains("avxvnni")
            && !dispatched(function)
        {
            avx_vnni.insert(function.to_string());
        }
    }
    assert!(
        sse4a.is_empty(),
        "AMD-only SSE4a instructions (SIGILL on Intel): {:?}",
        &sse4a[..sse4a.len().min(5)]
    );
    assert!(
        avx_vnni.is_empty(),
        "AVX-VNNI outside run-time-dispatched functions: {:?}",
        avx_vnni.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        avx512.is_empty(),
        "AVX-512 outside run-time-dispatched functions: {:?}",
        avx512.iter().take(5).collect::<Vec<_>>()
    );
}
