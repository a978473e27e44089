//! Reading GGUF files: the header, typed metadata look-ups whose errors name the file and
//! the key, tensors by name, and an up-front check that the file is not truncated.

use crate::error::{Error, IoContext, Result};
use crate::quant::QuantType;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A tensor as the file stores it.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub quant: QuantType,
    /// Row-major dimensions (outermost first), as candle reports them.
    pub shape: Vec<usize>,
    /// Offset of the data from the start of the tensor data section.
    pub offset: u64,
}

impl TensorEntry {
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open GGUF file: its parsed header plus a reader for tensor data.
pub struct GgufFile {
    pub path: PathBuf,
    /// candle's view: the metadata, and the tensors of the types candle reads.
    pub content: Content,
    /// Every tensor, of every type we read (candle's and the IQ4 types).
    tensors: HashMap<String, TensorEntry>,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and parses the header, then checks every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let layout = crate::gguf_check::check_header(path)?;
        let file = File::open(path).with_path(path)?;
        let file_len = file.metadata().with_path(path)?.len();
        let mut reader = BufReader::new(file);
        let gguf_err = |message: String| Error::Gguf {
            path: path.to_path_buf(),
            message,
        };
        let mut tensors = HashMap::new();
        let mut not_candles = Vec::new();
        for t in &layout.tensors {
            let quant = QuantType::from_gguf_id(t.type_id).map_err(|why| Error::Tensor {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                message: why,
            })?;
            if quant.candle().is_none() {
                not_candles.push(t);
            }
            let shape = t
                .ggml_dims
                .iter()
                .rev()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    gguf_err(format!("tensor '{}' has impossible dimensions", t.name))
                })?;
            tensors.insert(
                t.name.clone(),
                TensorEntry {
                    quant,
                    shape,
                    offset: t.offset,
                },
            );
        }
        let candle_err =
            |e: candle_core::Error| gguf_err(format!("{e} (is the file truncated or not GGUF?)"));
        let content = if not_candles.is_empty() {
            Content::read(&mut reader).map_err(candle_err)?
        } else {
            // candle refuses a whole file over one tensor type it does not know. Its
            // metadata reader gets a copy of the header in which those tensors say F32
            // (type id 0); they are then dropped from candle's table, and only our own
            // decoder reads their data, by the true type kept in `tensors`.
            let mut header = vec![0u8; layout.infos_end as usize];
            reader.read_exact(&mut header).with_path(path)?;
            for t in &not_candles {
                let at = t.type_at as usize;
                header[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
            let mut content = Content::read(&mut Cursor::new(header)).map_err(candle_err)?;
            for t in &not_candles {
                content.tensor_infos.remove(&t.name);
            }
            content
        };
        for (name, entry) in &tensors {
            // Every size from the header is checked arithmetic: hostile dims must give an
            // error, not a wrapped size or an allocation of 2^62 bytes.
            let bytes = entry
                .shape
                .iter()
                .try_fold(1usize, |n, &d| if d == 0 { None } else { n.checked_mul(d) })
                .and_then(|elems| entry.quant.bytes_for(elems));
            let Some(bytes) = bytes else {
                return Err(gguf_err(format!(
                    "tensor '{name}' has impossible dimensions {:?} for its type {}",
                    entry.shape, entry.quant
                )));
            };
            // The offset is blamed on its own: dimensions that are fine must not be
            // reported as the fault.
            let end = content
                .tensor_data_offset
                .checked_add(entry.offset)
                .and_then(|start| start.checked_add(bytes as u64));
            let Some(end) = end else {
                return Err(gguf_err(format!(
                    "tensor '{name}' has an impossible offset {} (its data would start past \
                     any file: the data section begins at byte {})",
                    entry.offset, content.tensor_data_offset
                )));
            };
            if end > file_len {
                return Err(gguf_err(format!(
                    "truncated: tensor '{name}' ends at byte {end} but the file has {file_len} bytes; fetch it again"
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            tensors,
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
        self.tensors.contains_key(name)
    }

    /// Every tensor in the file, by name.
    pub fn tensor_entries(&self) -> &HashMap<String, TensorEntry> {
        &self.tensors
    }

    fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensors.get(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message: "is missing from the file".into(),
        })
    }

    fn tensor_err(&self, name: &str, message: String) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            message,
        }
    }

    /// Tensor `name` as stored: its type, row-major shape and raw blocks.
    pub fn raw(&mut self, name: &str) -> Result<(QuantType, Vec<usize>, Vec<u8>)> {
        let entry = self.entry(name)?.clone();
        let bytes = entry
            .quant
            .bytes_for(entry.elems())
            .expect("sizes checked when the file was opened");
        let mut data = vec![0u8; bytes];
        let start = self.content.tensor_data_offset + entry.offset;
        self.reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.reader.read_exact(&mut data))
            .map_err(|e| self.tensor_err(name, e.to_string()))?;
        Ok((entry.quant, entry.shape, data))
    }

    /// Reads one tensor onto `device`. A type candle does not know (IQ4) comes back
    /// dequantised to F32 by our reference decoder; the packed kernels read those
    /// through `raw` instead.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let entry = self.entry(name)?.clone();
        if entry.quant.candle().is_none() {
            let (quant, shape, data) = self.raw(name)?;
            let values = quant
                .dequantize_iq4(&data)
                .expect("every type candle does not read is an IQ4 type");
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            return candle_core::quantized::ggml_file::qtensor_from_ggml(
                GgmlDType::F32,
                &bytes,
                shape,
                device,
            )
            .map_err(|e| self.tensor_err(name, e.to_string()));
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| self.tensor_err(name, e.to_string()))
    }
}
