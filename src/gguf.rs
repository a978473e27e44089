//! Reading GGUF files: the header, typed metadata look-ups whose errors name the file and
//! the key, tensors by name, and an up-front check that the file is not truncated.

use crate::error::{Error, IoContext, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// An open GGUF file: its parsed header plus a reader for tensor data.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and parses the header, then checks every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        crate::gguf_check::check_header(path)?;
        let file = File::open(path).with_path(path)?;
        let file_len = file.metadata().with_path(path)?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| Error::Gguf {
            path: path.to_path_buf(),
            message: format!("{e} (is the file truncated or not GGUF?)"),
        })?;
        for (name, info) in &content.tensor_infos {
            // Every size from the header is checked arithmetic: hostile dims must give an
            // error, not a wrapped size or an allocation of 2^62 bytes.
            let (block, type_size) = (info.ggml_dtype.block_size(), info.ggml_dtype.type_size());
            let end = info
                .shape
                .dims()
                .iter()
                .try_fold(1usize, |n, &d| if d == 0 { None } else { n.checked_mul(d) })
                .filter(|elems| elems % block == 0)
                .and_then(|elems| (elems / block).checked_mul(type_size))
                .and_then(|bytes| {
                    content
                        .tensor_data_offset
                        .checked_add(info.offset)?
                        .checked_add(bytes as u64)
                });
            let Some(end) = end else {
                return Err(Error::Gguf {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor '{name}' has impossible dimensions {:?} for its type {:?}",
                        info.shape.dims(),
                        info.ggml_dtype
                    ),
                });
            };
            if end > file_len {
                return Err(Error::Gguf {
                    path: path.to_path_buf(),
                    message: format!(
                        "truncated: tensor '{name}' ends at byte {end} but the file has {file_len} bytes; fetch it again"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub fn architecture(&self) -> Result<String> {
        self.string("general.architecture")
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.meta_err(key, "is missing"))
    }

    fn meta_err(&self, key: &str, problem: &str) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.value(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.meta_err(key, &format!("is not a string: {e}")))
    }

    /// Any unsigned or signed integer type, as usize.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        let n = match v {
            Value::U8(x) => *x as i64,
            Value::I8(x) => *x as i64,
            Value::U16(x) => *x as i64,
            Value::I16(x) => *x as i64,
            Value::U32(x) => *x as i64,
            Value::I32(x) => *x as i64,
            Value::U64(x) => *x as i64,
            Value::I64(x) => *x,
            other => {
                return Err(self.meta_err(
                    key,
                    &format!("is not an integer ({:?})", other.value_type()),
                ))
            }
        };
        usize::try_from(n).map_err(|_| self.meta_err(key, &format!("is negative ({n})")))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        match self.value(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => Err(self.meta_err(key, &format!("is not a float ({:?})", other.value_type()))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<bool> {
        self.value(key)?
            .to_bool()
            .map_err(|e| self.meta_err(key, &format!("is not a bool: {e}")))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.has(key) {
            self.usize(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        if self.has(key) {
            self.f32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        if self.has(key) {
            self.bool(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        if self.has(key) {
            self.string(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let arr = self
            .value(key)?
            .to_vec()
            .map_err(|e| self.meta_err(key, &format!("is not an array: {e}")))?;
        arr.iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| self.meta_err(key, "has a non-string element"))
            })
            .collect()
    }

    pub fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        let arr = self
            .value(key)?
            .to_vec()
            .map_err(|e| self.meta_err(key, &format!("is not an array: {e}")))?;
        arr.iter()
            .map(|v| {
                v.to_f32()
                    .map_err(|_| self.meta_err(key, "has a non-f32 element"))
            })
            .collect()
    }

    pub fn i32s(&self, key: &str) -> Result<Vec<i32>> {
        let arr = self
            .value(key)?
            .to_vec()
            .map_err(|e| self.meta_err(key, &format!("is not an array: {e}")))?;
        arr.iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x),
                Value::U32(x) => Ok(*x as i32),
                Value::U8(x) => Ok(*x as i32),
                Value::I8(x) => Ok(*x as i32),
                _ => Err(self.meta_err(key, "has a non-integer element")),
            })
            .collect()
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads one tensor onto `device`.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                message: "is missing from the file".into(),
            });
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                message: e.to_string(),
            })
    }
}
