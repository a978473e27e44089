//! Schema 1 -> schema 2, as edits of the JSON before it is read into the current types
//! (which then check every field as for a new file). These describe files that already
//! exist: never change them to follow a later schema; add the next step instead.
//!
//! What changed in schema 2:
//! - run.json: `device` and `threads` moved into `engine`, which also records the
//!   weights, int8 kernel, op path and batch size (unknown for schema 1: null); `shard`
//!   and `scoring` may be absent in schema 1 (the oldest runs predate them).
//! - trials.jsonl: each trial carries its `seed` (schema 1: the run's); `judge` may be
//!   absent in schema 1.

use serde_json::{json, Map, Value};

fn object(v: &mut Value) -> Result<&mut Map<String, Value>, String> {
    v.as_object_mut()
        .ok_or_else(|| "expected a JSON object".to_string())
}

/// A schema-1 run.json as schema 2 reads it.
pub(super) fn header_to_v2(mut header: Value) -> Result<Value, String> {
    let h = object(&mut header)?;
    let device = h
        .remove("device")
        .ok_or("schema 1 run.json without \"device\"")?;
    let threads = h
        .remove("threads")
        .ok_or("schema 1 run.json without \"threads\"")?;
    h.insert("engine".into(), json!({ "device": device, "threads": threads, "batch_size": null, "weights": null, "int8_kernel": null, "ops": null }));
    h.entry("shard").or_insert(Value::Null);
    h.insert("trials_failed".into(), Value::Null);
    h.insert("snapshot".into(), Value::Null);
    h.entry("scoring").or_insert(json!([]));
    Ok(header)
}

/// A schema-1 trial record as schema 2 reads it, with the run's `seed`.
pub(super) fn trial_to_v2(mut trial: Value, seed: u64) -> Result<Value, String> {
    let t = object(&mut trial)?;
    t.insert("seed".into(), json!(seed));
    t.entry("judge").or_insert(Value::Null);
    Ok(trial)
}
