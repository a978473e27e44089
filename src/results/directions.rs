//! Steering directions: what `affectbench probe` writes and `run --directions` reads.
//!
//! One safetensors file per model: a tensor per direction, shaped (blocks, d_model) f32,
//! row k being the direction at the k-th captured block (the mean residual stream at
//! the answer position in condition `a` minus that in condition `b`, so alpha = 1 adds
//! the shift the text induced on average). The metadata names the model by sha256, the
//! blocks, and each direction's conditions and trial counts; `run` refuses a file made
//! from other weights.

use crate::error::{Error, IoContext, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The `format` metadata value.
pub const DIRECTIONS_FORMAT: &str = "affectbench-directions-1";

/// One direction: its rows per captured block and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// `rows[k]` is the direction after block `Directions::blocks[k]`.
    pub rows: Vec<Vec<f32>>,
    /// The conditions it is the difference of (a minus b) and their trial counts.
    pub a: String,
    pub b: String,
    pub trials_a: usize,
    pub trials_b: usize,
}

/// A model's directions.
#[derive(Debug, Clone, PartialEq)]
pub struct Directions {
    pub model: String,
    pub model_sha256: String,
    pub blocks: Vec<usize>,
    pub d_model: usize,
    /// The run directory the states came from.
    pub source_run: String,
    pub directions: BTreeMap<String, Direction>,
}

fn bad(path: &Path, what: String) -> Error {
    Error::Run(format!("{}: {what}", path.display()))
}

impl Directions {
    /// Writes the file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("format".into(), DIRECTIONS_FORMAT.into());
        meta.insert("model".into(), self.model.clone());
        meta.insert("model_sha256".into(), self.model_sha256.clone());
        meta.insert("source_run".into(), self.source_run.clone());
        meta.insert(
            "blocks".into(),
            self.blocks
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        let mut bytes: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, d) in &self.directions {
            meta.insert(format!("{name}.a"), d.a.clone());
            meta.insert(format!("{name}.b"), d.b.clone());
            meta.insert(format!("{name}.trials_a"), d.trials_a.to_string());
            meta.insert(format!("{name}.trials_b"), d.trials_b.to_string());
            let flat: Vec<u8> = d
                .rows
                .iter()
                .flatten()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            bytes.push((name.clone(), flat));
        }
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(name, b)| {
                TensorView::new(Dtype::F32, vec![self.blocks.len(), self.d_model], b)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| bad(path, format!("tensor {name}: {e}")))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize_to_file(views, Some(meta), path)
            .map_err(|e| bad(path, format!("could not be written: {e}")))
    }

    /// Reads a file `write` made.
    pub fn read(path: &Path) -> Result<Self> {
        let raw = std::fs::read(path).with_path(path)?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&raw)
            .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).cloned().ok_or_else(|| {
                bad(path, format!("metadata key '{k}' is missing; is this a directions file written by `affectbench probe`?"))
            })
        };
        if get("format")? != DIRECTIONS_FORMAT {
            return Err(bad(path, format!("format is not {DIRECTIONS_FORMAT}")));
        }
        let blocks: Vec<usize> = get("blocks")?
            .split(',')
            .map(|b| {
                b.parse()
                    .map_err(|_| bad(path, format!("bad block list '{b}'")))
            })
            .collect::<Result<_>>()?;
        let tensors = safetensors::SafeTensors::deserialize(&raw)
            .map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
        let mut directions = BTreeMap::new();
        let mut d_model = 0;
        for (name, view) in tensors.tensors() {
            let shape = view.shape().to_vec();
            if view.dtype() != Dtype::F32 || shape.len() != 2 || shape[0] != blocks.len() {
                return Err(bad(
                    path,
                    format!("tensor {name} is not ({}, d_model) f32", blocks.len()),
                ));
            }
            d_model = shape[1];
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let count = |k: &str| -> Result<usize> {
                get(&format!("{name}.{k}"))?
                    .parse()
                    .map_err(|_| bad(path, format!("{name}.{k} is not a count")))
            };
            directions.insert(
                name.clone(),
                Direction {
                    rows: values.chunks(shape[1]).map(<[f32]>::to_vec).collect(),
                    a: get(&format!("{name}.a"))?,
                    b: get(&format!("{name}.b"))?,
                    trials_a: count("trials_a")?,
                    trials_b: count("trials_b")?,
                },
            );
        }
        Ok(Directions {
            model: get("model")?,
            model_sha256: get("model_sha256")?,
            blocks,
            d_model,
            source_run: get("source_run")?,
            directions,
        })
    }

    /// The direction `name` after block `block`, or why there is none.
    pub fn vector(&self, name: &str, block: usize) -> std::result::Result<&[f32], String> {
        let d = self.directions.get(name).ok_or_else(|| {
            format!(
                "no direction '{name}' (the file has {})",
                self.directions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let k = self
            .blocks
            .iter()
            .position(|&b| b == block)
            .ok_or_else(|| {
                format!(
                    "direction '{name}' was not captured after block {block} (captured: {:?})",
                    self.blocks
                )
            })?;
        Ok(&d.rows[k])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_round_trip_and_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.safetensors");
        let mut directions = BTreeMap::new();
        directions.insert(
            "anxiety".to_string(),
            Direction {
                rows: vec![vec![1.0, 2.0], vec![3.0, -4.5]],
                a: "anxiety/none".into(),
                b: "neutral/none".into(),
                trials_a: 7,
                trials_b: 8,
            },
        );
        let d = Directions {
            model: "m".into(),
            model_sha256: "abc".into(),
            blocks: vec![0, 3],
            d_model: 2,
            source_run: "runs/x".into(),
            directions,
        };
        d.write(&path).unwrap();
        let back = Directions::read(&path).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.vector("anxiety", 3).unwrap(), &[3.0, -4.5]);
        assert!(back
            .vector("anxiety", 2)
            .unwrap_err()
            .contains("captured: [0, 3]"));
        assert!(back.vector("fear", 3).unwrap_err().contains("anxiety"));
    }
}
