//! A structural walk of a GGUF header before candle parses it, which also reads the
//! tensor table.
//!
//! candle's reader allocates whatever a length field says (`vec![0; len]` for a string,
//! a dimension list, an array) before reading it, so a hostile or corrupt length of 2^60
//! aborts the process instead of returning an error. This walk reads the same fields
//! with every length bounded by the bytes the file has left (and dimension counts by
//! GGML's four), so such a file is refused with the byte offset and field at fault.
//! It keeps each tensor's raw type id and where that id lies, because candle refuses
//! the whole file over one type it does not know (IQ4_XS), which we decode ourselves.

use crate::error::{Error, IoContext, Result};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// GGML tensors have at most this many dimensions.
const MAX_DIMS: u64 = 4;

struct Walker<R> {
    reader: R,
    at: u64,
    len: u64,
    /// GGUF v1 wrote counts and string lengths as u32; v2 and v3 as u64.
    wide: bool,
}

impl<R: Read + Seek> Walker<R> {
    fn fail(&self, what: &str) -> String {
        format!("byte {}: {what}", self.at)
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.reader
            .read_exact(&mut b)
            .map_err(|_| self.fail(&format!("the file ends inside {what}")))?;
        self.at += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    /// A count or length field, checked against what the rest of the file can hold
    /// when each counted thing takes at least `min_bytes`.
    fn count(&mut self, what: &str, min_bytes: u64) -> std::result::Result<u64, String> {
        let n = if self.wide {
            self.u64(what)?
        } else {
            self.u32(what)? as u64
        };
        let left = self.len.saturating_sub(self.at);
        if n.saturating_mul(min_bytes.max(1)) > left {
            return Err(self.fail(&format!(
                "{what} is {n}, more than the {left} bytes left in the file can hold"
            )));
        }
        Ok(n)
    }

    fn skip(&mut self, n: u64, what: &str) -> std::result::Result<(), String> {
        if n > self.len.saturating_sub(self.at) {
            return Err(self.fail(&format!("the file ends inside {what}")));
        }
        self.reader
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| self.fail(&e.to_string()))?;
        self.at += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> std::result::Result<(), String> {
        let n = self.count(&format!("the length of {what}"), 1)?;
        self.skip(n, what)
    }

    /// A string read (bounded like `string`), lossily as UTF-8.
    fn read_string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.count(&format!("the length of {what}"), 1)?;
        let mut bytes = vec![0u8; n as usize];
        self.reader
            .read_exact(&mut bytes)
            .map_err(|_| self.fail(&format!("the file ends inside {what}")))?;
        self.at += n;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// One metadata value of type `ty`.
    /// `general.alignment`: candle divides by it, so 0 panicked inside its reader. The
    /// GGUF spec asks for a u32; it must be a power of two (the data section starts at a
    /// multiple of it).
    fn alignment(&mut self, ty: u32) -> std::result::Result<(), String> {
        if ty != 4 {
            return Err(self.fail(&format!(
                "general.alignment has value type {ty}; GGUF writes it as a u32 (type 4)"
            )));
        }
        let at = self.at;
        let value = self.u32("general.alignment")?;
        if !value.is_power_of_two() {
            return Err(format!(
                "byte {at}: general.alignment is {value}; it must be a power of two (GGUF \
                 files use 32)"
            ));
        }
        Ok(())
    }

    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<(), String> {
        match ty {
            0 | 1 | 7 => self.skip(1, "a value"),
            2 | 3 => self.skip(2, "a value"),
            4..=6 => self.skip(4, "a value"),
            10..=12 => self.skip(8, "a value"),
            8 => self.string("a string value"),
            9 if depth < 4 => {
                let elem = self.u32("an array's element type")?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let n = self.count("an array's length", min)?;
                for _ in 0..n {
                    self.value(elem, depth + 1)?;
                }
                Ok(())
            }
            9 => Err(self.fail("arrays nested more than 4 deep")),
            other => Err(self.fail(&format!("unknown metadata value type {other}"))),
        }
    }
}

/// One entry of a GGUF file's tensor table, as written.
#[derive(Debug, Clone)]
pub struct RawTensorInfo {
    pub name: String,
    /// Dimensions in GGML order (innermost first).
    pub ggml_dims: Vec<u64>,
    /// The GGUF type id (`ggml_type`).
    pub type_id: u32,
    /// The byte in the file where the type id is written.
    pub type_at: u64,
    /// Offset of the data from the start of the tensor data section.
    pub offset: u64,
}

/// What the walk learnt: the tensor table and where the tensor infos end.
#[derive(Debug, Clone)]
pub struct HeaderLayout {
    pub tensors: Vec<RawTensorInfo>,
    pub infos_end: u64,
}

/// Checks the header of the GGUF file at `path` and returns its tensor table; an error
/// names the byte and the field.
pub fn check_header(path: &Path) -> Result<HeaderLayout> {
    let file = std::fs::File::open(path).with_path(path)?;
    let len = file.metadata().with_path(path)?.len();
    let mut w = Walker {
        reader: BufReader::new(file),
        at: 0,
        len,
        wide: true,
    };
    let fail = |message: String| Error::Gguf {
        path: path.to_path_buf(),
        message: format!("{message} (is the file truncated, corrupt or not GGUF?)"),
    };
    let walk =
        |w: &mut Walker<BufReader<std::fs::File>>| -> std::result::Result<HeaderLayout, String> {
            if &w.bytes::<4>("the magic number")? != b"GGUF" {
                return Err("not a GGUF file (no GGUF magic number)".into());
            }
            let version = w.u32("the version")?;
            w.wide = match version {
                1 => false,
                2 | 3 => true,
                v => return Err(format!("GGUF version {v} is not one of 1, 2, 3")),
            };
            // A tensor info takes at least 8 + 4 + 4 + 8 bytes; a metadata entry 8 + 4.
            let tensors = w.count("the tensor count", 24)?;
            let entries = w.count("the metadata count", 12)?;
            for _ in 0..entries {
                let key = w.read_string("a metadata key")?;
                let ty = w.u32("a metadata value type")?;
                if key == "general.alignment" {
                    w.alignment(ty)?;
                } else {
                    w.value(ty, 0)?;
                }
            }
            let mut table = Vec::with_capacity(tensors as usize);
            for _ in 0..tensors {
                let name = w.read_string("a tensor name")?;
                let dims = w.u32("a tensor's dimension count")? as u64;
                if dims > MAX_DIMS {
                    return Err(w.fail(&format!(
                        "a tensor has {dims} dimensions (GGML allows at most {MAX_DIMS})"
                    )));
                }
                let ggml_dims = (0..dims)
                    .map(|_| {
                        if w.wide {
                            w.u64("a tensor's dimensions")
                        } else {
                            w.u32("a tensor's dimensions").map(u64::from)
                        }
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let type_at = w.at;
                let type_id = w.u32("a tensor's type")?;
                let offset = w.u64("a tensor's offset")?;
                table.push(RawTensorInfo {
                    name,
                    ggml_dims,
                    type_id,
                    type_at,
                    offset,
                });
            }
            Ok(HeaderLayout {
                tensors: table,
                infos_end: w.at,
            })
        };
    walk(&mut w).map_err(fail)
}
