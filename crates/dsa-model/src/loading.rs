//! Memory-mapped safetensors checkpoints, including FP8 e4m3 weights.
//!
//! [`Checkpoint`] maps a single `.safetensors` file, a directory with `model.safetensors`, or
//! a sharded checkpoint (`model.safetensors.index.json`), and converts one tensor at a time:
//! BF16/F16/F32/F64 to f32, and F8_E4M3 dequantised with its block scales
//! (`<name>_scale_inv`, one float32 per `128×128` block by default, multiplied in).
//! Burn's own store cannot read F8_E4M3, hence this reader.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use dsa_model::loading::Checkpoint;
//!
//! let ckpt = Checkpoint::open("DeepSeek-V3.2")?.with_weight_block_size([128, 128])?;
//! let device = Default::default();
//! let wq_a = ckpt.read_tensor::<NdArray, 2>(
//!     "model.layers.0.self_attn.q_a_proj.weight",
//!     [1536, 7168],
//!     &device,
//! )?;
//! # Ok::<(), dsa_model::loading::LoadError>(())
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use half::{bf16, f16};
use memmap2::Mmap;
pub use safetensors::Dtype;
use safetensors::{SafeTensorError, SafeTensors};
use serde::Deserialize;

/// Suffix of the block-scale tensor of an FP8 weight: `w` is dequantised with
/// `w_scale_inv`.
pub const SCALE_SUFFIX: &str = "_scale_inv";

/// Block size of FP8 weight scales when none is configured (DeepSeek's `128×128`).
pub const DEFAULT_WEIGHT_BLOCK: [usize; 2] = [128, 128];

/// File name of a single-file checkpoint inside a directory.
pub const SINGLE_FILE: &str = "model.safetensors";

/// File name of the index of a sharded checkpoint inside a directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// An error while opening or reading a checkpoint. Every variant names the file (or the
/// checkpoint's location) and, where there is one, the tensor.
#[derive(Debug)]
pub enum LoadError {
    /// A file or directory could not be opened or read.
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file is not a valid safetensors file (truncated, corrupt header or offsets).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the safetensors parser found.
        source: SafeTensorError,
    },
    /// The index of a sharded checkpoint is malformed or inconsistent with its shards.
    Index {
        /// The index file (or the checkpoint location for tensors found in two shards).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Requested tensors are not in the checkpoint.
    MissingTensors {
        /// The absent names.
        names: Vec<String>,
        /// The checkpoint (file or directory).
        location: PathBuf,
    },
    /// [`Checkpoint::check_names`] found missing and/or unexpected tensors.
    NameMismatch {
        /// Expected but absent names.
        missing: Vec<String>,
        /// Present but not expected names.
        unexpected: Vec<String>,
        /// The checkpoint (file or directory).
        location: PathBuf,
    },
    /// A tensor (or an FP8 block scale) has another shape than expected.
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
        /// The file holding the tensor.
        file: PathBuf,
    },
    /// A tensor's dtype cannot be read by the requested method.
    UnsupportedDtype {
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: Dtype,
        /// The file holding the tensor.
        file: PathBuf,
        /// What the method reads.
        supported: &'static str,
    },
    /// An F8_E4M3 tensor has no `<name>_scale_inv` to dequantise it with.
    Fp8WithoutScale {
        /// The FP8 tensor.
        name: String,
        /// The scale tensor that was looked for.
        scale_name: String,
        /// The file holding the FP8 tensor.
        file: PathBuf,
    },
    /// The checkpoint holds a layer beyond the configuration's blocks and MTP layers
    /// (`config.json`'s `num_hidden_layers` too small, or `num_nextn_predict_layers` too).
    ExtraLayers {
        /// The highest layer index found.
        highest: usize,
        /// A tensor of that layer.
        tensor: String,
        /// The file holding it.
        file: PathBuf,
        /// The configuration's `num_hidden_layers`.
        num_hidden_layers: usize,
        /// The configuration's `num_nextn_predict_layers`.
        mtp_layers: usize,
    },
    /// A float tensor holds a value no weight may have: NaN or ±inf, or an FP8 block scale
    /// that is not finite and positive (see [`Checkpoint::allow_nonfinite`]).
    BadValue {
        /// The tensor.
        name: String,
        /// The file holding it.
        file: PathBuf,
        /// The first offending value.
        value: f32,
        /// Its index.
        index: Vec<usize>,
        /// What the values must be.
        requirement: &'static str,
    },
    /// Anything else that makes a request impossible (e.g. an FP8 tensor that is not 2-D,
    /// a zero block size).
    Invalid {
        /// The tensor or setting concerned.
        name: String,
        /// The file or checkpoint location.
        location: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            LoadError::Corrupt { path, source } => write!(
                f,
                "{} is not a valid safetensors file (truncated or corrupt): {source}",
                path.display()
            ),
            LoadError::Index { path, reason } => {
                write!(f, "sharded checkpoint index {}: {reason}", path.display())
            }
            LoadError::MissingTensors { names, location } => write!(
                f,
                "checkpoint {} lacks {} tensor(s): {}",
                location.display(),
                names.len(),
                names.join(", ")
            ),
            LoadError::NameMismatch {
                missing,
                unexpected,
                location,
            } => {
                write!(
                    f,
                    "checkpoint {} does not match the model:",
                    location.display()
                )?;
                if !missing.is_empty() {
                    write!(
                        f,
                        " {} missing tensor(s): {};",
                        missing.len(),
                        missing.join(", ")
                    )?;
                }
                if !unexpected.is_empty() {
                    write!(
                        f,
                        " {} unexpected tensor(s): {};",
                        unexpected.len(),
                        unexpected.join(", ")
                    )?;
                }
                Ok(())
            }
            LoadError::ShapeMismatch {
                name,
                expected,
                found,
                file,
            } => write!(
                f,
                "tensor `{name}` in {}: expected shape {expected:?}, found {found:?}",
                file.display()
            ),
            LoadError::UnsupportedDtype {
                name,
                dtype,
                file,
                supported,
            } => write!(
                f,
                "tensor `{name}` in {} has unsupported dtype {dtype} ({supported})",
                file.display()
            ),
            LoadError::Fp8WithoutScale {
                name,
                scale_name,
                file,
            } => write!(
                f,
                "FP8 tensor `{name}` in {} has no block scale `{scale_name}` to dequantise it",
                file.display()
            ),
            LoadError::ExtraLayers {
                highest,
                tensor,
                file,
                num_hidden_layers,
                mtp_layers,
            } => write!(
                f,
                "{} holds layers up to index {highest} (`{tensor}`), but config.json has \
                 num_hidden_layers = {num_hidden_layers} and num_nextn_predict_layers = \
                 {mtp_layers} (MTP), which allow layers 0..={}: the config does not describe \
                 this checkpoint",
                file.display(),
                (num_hidden_layers + mtp_layers).saturating_sub(1)
            ),
            LoadError::BadValue {
                name,
                file,
                value,
                index,
                requirement,
            } => write!(
                f,
                "tensor `{name}` in {} holds {value} at {index:?}: {requirement} (loading it \
                 anyway needs Checkpoint::allow_nonfinite, dsa-cli --allow-nonfinite)",
                file.display()
            ),
            LoadError::Invalid {
                name,
                location,
                reason,
            } => write!(f, "`{name}` in {}: {reason}", location.display()),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Corrupt { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Decodes one FP8 e4m3fn byte (bias 7, subnormals, no infinities, `0x7F`/`0xFF` NaN).
///
/// ```
/// use dsa_model::loading::decode_e4m3;
///
/// assert_eq!(decode_e4m3(0x38), 1.0);
/// assert_eq!(decode_e4m3(0xFE), -448.0);
/// assert_eq!(decode_e4m3(0x01), 2f32.powi(-9)); // smallest subnormal
/// assert!(decode_e4m3(0x7F).is_nan());
/// ```
pub fn decode_e4m3(byte: u8) -> f32 {
    E4M3_TO_F32[usize::from(byte)]
}

const E4M3_TO_F32: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = e4m3_value(i as u8);
        i += 1;
    }
    table
};

const fn e4m3_value(byte: u8) -> f32 {
    let exponent = ((byte >> 3) & 0x0F) as u32;
    let mantissa = (byte & 0x07) as u32;
    if exponent == 0x0F && mantissa == 0x07 {
        return f32::NAN;
    }
    let magnitude = if exponent == 0 {
        // Subnormal: mantissa/8 · 2^-6.
        mantissa as f32 / 512.0
    } else {
        // (1 + mantissa/8) · 2^(exponent - 7), written as f32 bits (bias 127).
        f32::from_bits(((exponent + 120) << 23) | (mantissa << 20))
    };
    if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// A memory-mapped safetensors checkpoint (one file or several shards).
///
/// Files stay mapped while the checkpoint lives; they must not be modified meanwhile.
#[derive(Debug)]
pub struct Checkpoint {
    location: PathBuf,
    files: Vec<MappedFile>,
    tensors: BTreeMap<String, Entry>,
    weight_block: [usize; 2],
    allow_nonfinite: bool,
}

#[derive(Debug)]
struct MappedFile {
    path: PathBuf,
    bytes: FileBytes,
}

/// The bytes of a checkpoint file: mapped, or held in memory ([`Checkpoint::from_bytes`]).
#[derive(Debug)]
enum FileBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(mmap) => mmap,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

#[derive(Debug)]
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the mapped file.
    start: usize,
    end: usize,
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens `path`: a `.safetensors` file, a `*.index.json` file, or a directory holding
    /// `model.safetensors` or `model.safetensors.index.json`. Only headers are read.
    ///
    /// ```no_run
    /// use dsa_model::loading::Checkpoint;
    ///
    /// let ckpt = Checkpoint::open("model.safetensors")?;
    /// for name in ckpt.names() {
    ///     println!("{name}: {:?} {:?}", ckpt.dtype(name)?, ckpt.shape(name)?);
    /// }
    /// # Ok::<(), dsa_model::loading::LoadError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut ckpt = Checkpoint {
            location: path.to_path_buf(),
            files: Vec::new(),
            tensors: BTreeMap::new(),
            weight_block: DEFAULT_WEIGHT_BLOCK,
            allow_nonfinite: false,
        };
        if meta.is_dir() {
            let single = path.join(SINGLE_FILE);
            let index = path.join(INDEX_FILE);
            if single.is_file() {
                ckpt.add_file(single)?;
            } else if index.is_file() {
                ckpt.add_index(&index)?;
            } else {
                return Err(LoadError::Io {
                    path: path.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("the directory holds neither {SINGLE_FILE} nor {INDEX_FILE}"),
                    ),
                });
            }
        } else if path.to_string_lossy().ends_with(".index.json") {
            ckpt.add_index(path)?;
        } else {
            ckpt.add_file(path.to_path_buf())?;
        }
        Ok(ckpt)
    }

    /// A checkpoint of one safetensors file held in memory, named `location` in errors.
    ///
    /// ```
    /// use dsa_model::loading::Checkpoint;
    ///
    /// let err = Checkpoint::from_bytes("upload.safetensors", vec![0xFF; 16]).unwrap_err();
    /// assert!(err.to_string().contains("upload.safetensors is not a valid safetensors file"));
    /// ```
    pub fn from_bytes(location: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, LoadError> {
        let location = location.into();
        let mut ckpt = Checkpoint {
            location: location.clone(),
            files: Vec::new(),
            tensors: BTreeMap::new(),
            weight_block: DEFAULT_WEIGHT_BLOCK,
            allow_nonfinite: false,
        };
        ckpt.add_bytes(location, FileBytes::Owned(bytes))?;
        Ok(ckpt)
    }

    /// Sets the block size of FP8 weight scales (the config's
    /// `quantization_config.weight_block_size`); the default is [`DEFAULT_WEIGHT_BLOCK`].
    pub fn with_weight_block_size(mut self, block: [usize; 2]) -> Result<Self, LoadError> {
        if block.contains(&0) {
            return Err(LoadError::Invalid {
                name: "weight_block_size".into(),
                location: self.location,
                reason: format!("block sizes must be positive, got {block:?}"),
            });
        }
        self.weight_block = block;
        Ok(self)
    }

    /// Whether [`Checkpoint::read_f32`] accepts NaN and ±inf weights and FP8 block scales
    /// that are not finite and positive; by default such a tensor is a
    /// [`LoadError::BadValue`], since it would make the model compute garbage.
    ///
    /// ```no_run
    /// use dsa_model::loading::Checkpoint;
    ///
    /// let ckpt = Checkpoint::open("model.safetensors")?.allow_nonfinite(true);
    /// # Ok::<(), dsa_model::loading::LoadError>(())
    /// ```
    pub fn allow_nonfinite(mut self, allow: bool) -> Self {
        self.allow_nonfinite = allow;
        self
    }

    /// The path the checkpoint was opened from.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// All tensor names (scales included), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of tensor `name` as stored.
    pub fn shape(&self, name: &str) -> Result<&[usize], LoadError> {
        Ok(&self.entry(name)?.shape)
    }

    /// The dtype of tensor `name` as stored.
    pub fn dtype(&self, name: &str) -> Result<Dtype, LoadError> {
        Ok(self.entry(name)?.dtype)
    }

    /// The file holding tensor `name`.
    pub fn file_of(&self, name: &str) -> Result<&Path, LoadError> {
        let entry = self.entry(name)?;
        Ok(self.file_path(entry))
    }

    /// Checks that tensor `name` exists with shape `expected`.
    pub fn check_shape(&self, name: &str, expected: &[usize]) -> Result<(), LoadError> {
        let entry = self.entry(name)?;
        if entry.shape != expected {
            return Err(LoadError::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
                file: self.file_path(entry).to_path_buf(),
            });
        }
        Ok(())
    }

    /// Checks that tensor `name` exists with shape `expected` and, if it is an FP8 weight,
    /// that its block scale exists with one entry per block; reads no values.
    ///
    /// ```no_run
    /// use dsa_model::loading::Checkpoint;
    ///
    /// let ckpt = Checkpoint::open("model")?.with_weight_block_size([128, 128])?;
    /// ckpt.check_tensor("model.layers.0.self_attn.q_a_proj.weight", &[1536, 7168])?;
    /// # Ok::<(), dsa_model::loading::LoadError>(())
    /// ```
    pub fn check_tensor(&self, name: &str, expected: &[usize]) -> Result<(), LoadError> {
        self.check_shape(name, expected)?;
        let entry = self.entry(name)?;
        if entry.dtype == Dtype::F8_E4M3 {
            self.fp8_scale(name, entry)?;
        }
        Ok(())
    }

    /// Reads tensor `name` as f32: BF16/F16/F64 are converted (F64 rounded), F8_E4M3 is
    /// dequantised by multiplying each block with its entry of `<name>_scale_inv` (partial
    /// blocks at the edges included). NaN or ±inf values, and FP8 block scales that are not
    /// finite and positive, are a [`LoadError::BadValue`] unless
    /// [`Checkpoint::allow_nonfinite`] is set.
    pub fn read_f32(&self, name: &str) -> Result<TensorData, LoadError> {
        let entry = self.entry(name)?;
        let bytes = self.bytes(name, entry)?;
        let values = if entry.dtype == Dtype::F8_E4M3 {
            self.dequantize_fp8(name, entry, bytes)?
        } else {
            float_values(name, entry.dtype, bytes, self.file_path(entry))?
        };
        self.check_values(
            name,
            entry,
            &values,
            |v| v.is_finite(),
            "weights must be finite",
        )?;
        Ok(TensorData::new(values, entry.shape.clone()))
    }

    /// Reads tensor `name` in its own dtype (integers, bool, F16, BF16, F32, F64), e.g.
    /// token ids or selection masks. F8_E4M3 is refused: use [`Checkpoint::read_f32`].
    pub fn read_data(&self, name: &str) -> Result<TensorData, LoadError> {
        let entry = self.entry(name)?;
        let bytes = self.bytes(name, entry)?;
        let shape = entry.shape.clone();
        Ok(match entry.dtype {
            Dtype::BOOL => TensorData::new(bytes.iter().map(|&b| b != 0).collect(), shape),
            Dtype::U8 => TensorData::new(bytes.to_vec(), shape),
            Dtype::I8 => TensorData::new(decode(bytes, i8::from_le_bytes), shape),
            Dtype::U16 => TensorData::new(decode(bytes, u16::from_le_bytes), shape),
            Dtype::I16 => TensorData::new(decode(bytes, i16::from_le_bytes), shape),
            Dtype::U32 => TensorData::new(decode(bytes, u32::from_le_bytes), shape),
            Dtype::I32 => TensorData::new(decode(bytes, i32::from_le_bytes), shape),
            Dtype::U64 => TensorData::new(decode(bytes, u64::from_le_bytes), shape),
            Dtype::I64 => TensorData::new(decode(bytes, i64::from_le_bytes), shape),
            Dtype::F16 => TensorData::new(decode(bytes, f16::from_le_bytes), shape),
            Dtype::BF16 => TensorData::new(decode(bytes, bf16::from_le_bytes), shape),
            Dtype::F32 => TensorData::new(decode(bytes, f32::from_le_bytes), shape),
            Dtype::F64 => TensorData::new(decode(bytes, f64::from_le_bytes), shape),
            dtype => {
                return Err(LoadError::UnsupportedDtype {
                    name: name.into(),
                    dtype,
                    file: self.file_path(entry).to_path_buf(),
                    supported: "read_data reads BOOL, integers, F16, BF16, F32 and F64; \
                                use read_f32 for F8_E4M3",
                })
            }
        })
    }

    /// Reads float tensor `name` (as [`Checkpoint::read_f32`]) onto `device` after checking
    /// that its shape is `expected_shape`.
    ///
    /// ```no_run
    /// use burn::backend::NdArray;
    /// use dsa_model::loading::Checkpoint;
    ///
    /// let ckpt = Checkpoint::open("model.safetensors")?;
    /// let embed = ckpt.read_tensor::<NdArray, 2>(
    ///     "model.embed_tokens.weight", [1024, 256], &Default::default())?;
    /// # Ok::<(), dsa_model::loading::LoadError>(())
    /// ```
    pub fn read_tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        expected_shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, LoadError> {
        self.check_shape(name, &expected_shape)?;
        Ok(Tensor::from_data(self.read_f32(name)?, device))
    }

    /// Compares the checkpoint's names with the model's `expected` names and reports every
    /// missing and unexpected tensor at once. `..._scale_inv` tensors are never unexpected.
    /// The `mtp_layers` layers after the `num_hidden_layers` blocks are the MTP layers
    /// (`model.layers.61.*` in DeepSeek-V3.2), whose tensors `expected` names; a layer beyond those is a [`LoadError::ExtraLayers`]: the configuration has too few
    /// layers for the checkpoint, and loading the first ones would run a wrong model.
    ///
    /// ```no_run
    /// use dsa_model::loading::Checkpoint;
    ///
    /// let ckpt = Checkpoint::open("model.safetensors")?;
    /// ckpt.check_names(&["model.embed_tokens.weight", "model.norm.weight"], 61, 1)?;
    /// # Ok::<(), dsa_model::loading::LoadError>(())
    /// ```
    pub fn check_names<S: AsRef<str>>(
        &self,
        expected: &[S],
        num_hidden_layers: usize,
        mtp_layers: usize,
    ) -> Result<(), LoadError> {
        let expected: Vec<&str> = expected.iter().map(AsRef::as_ref).collect();
        let expected_set: HashSet<&str> = expected.iter().copied().collect();
        let mut seen = HashSet::new();
        let missing: Vec<String> = expected
            .iter()
            .filter(|name| !self.contains(name) && seen.insert(**name))
            .map(|name| name.to_string())
            .collect();
        let mut unexpected = Vec::new();
        let mut beyond: Option<(usize, &str)> = None;
        for name in self.names() {
            match layer_index(name) {
                Some(layer) if layer >= num_hidden_layers + mtp_layers => {
                    if beyond.is_none_or(|(highest, _)| layer > highest) {
                        beyond = Some((layer, name));
                    }
                    continue;
                }
                _ if expected_set.contains(name) || name.ends_with(SCALE_SUFFIX) => continue,
                _ => unexpected.push(name.to_string()),
            }
        }
        if let Some((highest, tensor)) = beyond {
            return Err(LoadError::ExtraLayers {
                highest,
                tensor: tensor.into(),
                file: self.file_of(tensor)?.to_path_buf(),
                num_hidden_layers,
                mtp_layers,
            });
        }
        if missing.is_empty() && unexpected.is_empty() {
            Ok(())
        } else {
            Err(LoadError::NameMismatch {
                missing,
                unexpected,
                location: self.location.clone(),
            })
        }
    }

    /// Checks that every one of `values` (tensor `name`'s) passes `valid` unless
    /// non-finite values are allowed; the error names the first that does not.
    fn check_values(
        &self,
        name: &str,
        entry: &Entry,
        values: &[f32],
        valid: fn(&f32) -> bool,
        requirement: &'static str,
    ) -> Result<(), LoadError> {
        if self.allow_nonfinite {
            return Ok(());
        }
        let Some(flat) = values.iter().position(|v| !valid(v)) else {
            return Ok(());
        };
        // Row-major multi-index of `flat`.
        let mut index = vec![0; entry.shape.len()];
        let mut rest = flat;
        for (i, &dim) in index.iter_mut().zip(&entry.shape).rev() {
            *i = rest % dim;
            rest /= dim;
        }
        Err(LoadError::BadValue {
            name: name.into(),
            file: self.file_path(entry).to_path_buf(),
            value: values[flat],
            index,
            requirement,
        })
    }

    fn entry(&self, name: &str) -> Result<&Entry, LoadError> {
        self.tensors
            .get(name)
            .ok_or_else(|| LoadError::MissingTensors {
                names: vec![name.into()],
                location: self.location.clone(),
            })
    }

    fn file_path(&self, entry: &Entry) -> &Path {
        self.files
            .get(entry.file)
            .map_or(self.location.as_path(), |f| f.path.as_path())
    }

    fn bytes(&self, name: &str, entry: &Entry) -> Result<&[u8], LoadError> {
        self.files
            .get(entry.file)
            .and_then(|f| f.bytes.get(entry.start..entry.end))
            .ok_or_else(|| LoadError::Corrupt {
                path: self.file_path(entry).to_path_buf(),
                source: SafeTensorError::InvalidOffset(name.into()),
            })
    }

    /// The block scale of FP8 weight `name` (its name and entry), checked to exist and to
    /// have one entry per block of the weight.
    fn fp8_scale(&self, name: &str, entry: &Entry) -> Result<(String, &Entry), LoadError> {
        let file = self.file_path(entry);
        let scale_name = format!("{name}{SCALE_SUFFIX}");
        let Some(scale_entry) = self.tensors.get(&scale_name) else {
            return Err(LoadError::Fp8WithoutScale {
                name: name.into(),
                scale_name,
                file: file.to_path_buf(),
            });
        };
        let &[rows, cols] = entry.shape.as_slice() else {
            return Err(LoadError::Invalid {
                name: name.into(),
                location: file.to_path_buf(),
                reason: format!(
                    "FP8 block dequantisation needs a 2-D weight, found shape {:?}",
                    entry.shape
                ),
            });
        };
        let [block_rows, block_cols] = self.weight_block;
        self.check_shape(
            &scale_name,
            &[rows.div_ceil(block_rows), cols.div_ceil(block_cols)],
        )?;
        Ok((scale_name, scale_entry))
    }

    fn dequantize_fp8(
        &self,
        name: &str,
        entry: &Entry,
        bytes: &[u8],
    ) -> Result<Vec<f32>, LoadError> {
        let (scale_name, scale_entry) = self.fp8_scale(name, entry)?;
        let (cols, [block_rows, block_cols]) = (entry.shape[1], self.weight_block);
        let scale_cols = cols.div_ceil(block_cols);
        let scale_bytes = self.bytes(&scale_name, scale_entry)?;
        let scales = float_values(
            &scale_name,
            scale_entry.dtype,
            scale_bytes,
            self.file_path(scale_entry),
        )?;
        self.check_values(
            &scale_name,
            scale_entry,
            &scales,
            |s| s.is_finite() && *s > 0.0,
            "FP8 block scales must be finite and positive",
        )?;
        let mut out = Vec::with_capacity(bytes.len());
        if cols == 0 {
            return Ok(out);
        }
        let block_row_bytes = block_rows.saturating_mul(cols);
        for (scale_row, block) in scales
            .chunks_exact(scale_cols)
            .zip(bytes.chunks(block_row_bytes))
        {
            for row in block.chunks_exact(cols) {
                for (segment, &scale) in row.chunks(block_cols).zip(scale_row) {
                    out.extend(segment.iter().map(|&b| decode_e4m3(b) * scale));
                }
            }
        }
        Ok(out)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<(), LoadError> {
        let file = File::open(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the mapping is read-only and lives as long as `self`; as documented on
        // `Checkpoint`, the files must not be modified while the checkpoint is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        self.add_bytes(path, FileBytes::Mapped(mmap))
    }

    /// Adds a file's bytes, read from its safetensors header (nothing is allocated for the
    /// header's claims: the safetensors parser checks its length and every tensor's
    /// offsets against the bytes first).
    fn add_bytes(&mut self, path: PathBuf, bytes: FileBytes) -> Result<(), LoadError> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|source| LoadError::Corrupt {
                path: path.clone(),
                source,
            })?;
        // read_metadata checked that the offsets tile the data section up to the file's end.
        let data_start = 8 + header_len;
        let index = self.files.len();
        for (name, info) in metadata.tensors() {
            if let Some(other) = self.tensors.get(&name) {
                return Err(LoadError::Index {
                    path: self.location.clone(),
                    reason: format!(
                        "tensor `{name}` is in both {} and {}",
                        self.file_path(other).display(),
                        path.display()
                    ),
                });
            }
            let entry = Entry {
                file: index,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
            };
            self.tensors.insert(name, entry);
        }
        self.files.push(MappedFile { path, bytes });
        Ok(())
    }

    fn add_index(&mut self, index: &Path) -> Result<(), LoadError> {
        let text = std::fs::read_to_string(index).map_err(|source| LoadError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let parsed: IndexFile = serde_json::from_str(&text).map_err(|e| LoadError::Index {
            path: index.to_path_buf(),
            reason: format!("not a valid index (expected a `weight_map` object): {e}"),
        })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<&str> = parsed.weight_map.values().map(String::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        // Shards are files beside the index: no other path is opened.
        if let Some(shard) = shards.iter().find(|s| Path::new(s).file_name() != Some(std::ffi::OsStr::new(s))) {
            return Err(LoadError::Index {
                path: index.to_path_buf(),
                reason: format!("shard `{shard}` is not a file name in the index's directory"),
            });
        }
        for shard in shards {
            self.add_file(dir.join(shard)).map_err(|err| match err {
                LoadError::Io { path, source } => LoadError::Index {
                    path: index.to_path_buf(),
                    reason: format!("cannot open shard `{shard}` ({}): {source}", path.display()),
                },
                other => other,
            })?;
        }
        for (name, shard) in &parsed.weight_map {
            let found = self.tensors.get(name).map(|entry| self.file_path(entry));
            if found != Some(dir.join(shard).as_path()) {
                return Err(LoadError::Index {
                    path: index.to_path_buf(),
                    reason: match found {
                        Some(other) => format!(
                            "weight_map puts `{name}` in `{shard}`, but it is in {}",
                            other.display()
                        ),
                        None => format!("weight_map puts `{name}` in `{shard}`, which lacks it"),
                    },
                });
            }
        }
        Ok(())
    }
}

/// The layer number of `model.layers.<i>.…` names.
fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Little-endian elements of `N` bytes.
fn decode<T, const N: usize>(bytes: &[u8], convert: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|chunk| {
            let mut array = [0u8; N];
            array.copy_from_slice(chunk);
            convert(array)
        })
        .collect()
}

/// BF16/F16/F32/F64 values as f32.
fn float_values(
    name: &str,
    dtype: Dtype,
    bytes: &[u8],
    file: &Path,
) -> Result<Vec<f32>, LoadError> {
    Ok(match dtype {
        Dtype::F32 => decode(bytes, f32::from_le_bytes),
        Dtype::BF16 => decode(bytes, |b| bf16::from_le_bytes(b).to_f32()),
        Dtype::F16 => decode(bytes, |b| f16::from_le_bytes(b).to_f32()),
        Dtype::F64 => decode(bytes, |b| f64::from_le_bytes(b) as f32),
        dtype => {
            return Err(LoadError::UnsupportedDtype {
                name: name.into(),
                dtype,
                file: file.to_path_buf(),
                supported: "read_f32 reads BF16, F16, F32, F64, and F8_E4M3 with float block \
                            scales",
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeepSeekV32Config;
    use crate::test_util::{conformance_cases, TempDir};
    use burn::backend::NdArray;
    use safetensors::tensor::TensorView;

    type B = NdArray<f32>;

    /// The raw bytes, dtype string and shape of every tensor, parsed by hand.
    fn raw_tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
        let bytes = std::fs::read(path).expect("readable");
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("json");
        let data = &bytes[8 + n..];
        let mut out = BTreeMap::new();
        for (name, info) in header.as_object().expect("object") {
            if name == "__metadata__" {
                continue;
            }
            let dtype = info["dtype"].as_str().expect("dtype").to_string();
            let shape = serde_json::from_value(info["shape"].clone()).expect("shape");
            let [a, b]: [usize; 2] =
                serde_json::from_value(info["data_offsets"].clone()).expect("offsets");
            out.insert(name.clone(), (dtype, shape, data[a..b].to_vec()));
        }
        out
    }

    /// e4m3fn by formula: sign · 2^(e-7) · (1 + m/8), subnormal sign · 2^-6 · m/8.
    fn e4m3_by_formula(byte: u8) -> f32 {
        let sign = if byte & 0x80 != 0 { -1.0f32 } else { 1.0 };
        let e = i32::from((byte >> 3) & 0x0F);
        let m = f32::from(byte & 0x07);
        if e == 15 && m == 7.0 {
            f32::NAN
        } else if e == 0 {
            sign * 2f32.powi(-6) * (m / 8.0)
        } else {
            sign * 2f32.powi(e - 7) * (1.0 + m / 8.0)
        }
    }

    fn read_float_tensor(ckpt: &Checkpoint, name: &str) -> Vec<f32> {
        let shape = ckpt.shape(name).expect("present").to_vec();
        let device = Default::default();
        let data = match shape.len() {
            1 => ckpt
                .read_tensor::<B, 1>(name, [shape[0]], &device)
                .map(|t| t.into_data()),
            2 => ckpt
                .read_tensor::<B, 2>(name, [shape[0], shape[1]], &device)
                .map(|t| t.into_data()),
            3 => ckpt
                .read_tensor::<B, 3>(name, [shape[0], shape[1], shape[2]], &device)
                .map(|t| t.into_data()),
            rank => panic!("unexpected rank {rank} of {name}"),
        }
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(data.shape.as_slice(), shape.as_slice(), "{name}");
        let direct = ckpt.read_f32(name).expect("readable");
        assert_eq!(direct, data, "{name}: read_f32 and read_tensor differ");
        data.to_vec::<f32>().expect("f32")
    }

    #[test]
    fn e4m3_table_matches_the_formula() {
        for byte in 0..=255u8 {
            let (table, formula) = (decode_e4m3(byte), e4m3_by_formula(byte));
            if byte & 0x7F == 0x7F {
                assert!(table.is_nan(), "{byte:#04x}");
            } else {
                assert_eq!(table.to_bits(), formula.to_bits(), "{byte:#04x}");
            }
        }
        assert_eq!(decode_e4m3(0x7E), 448.0);
        assert_eq!(decode_e4m3(0x80).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn every_conformance_tensor_reads() {
        for case in conformance_cases() {
            let cfg = DeepSeekV32Config::from_file(case.join("config.json")).expect("config");
            let mut ckpt = Checkpoint::open(&case).expect("model.safetensors in the case dir");
            if let Some(block) = cfg.weight_block_size() {
                ckpt = ckpt.with_weight_block_size(block).expect("valid block");
            }
            let names: Vec<String> = ckpt.names().map(str::to_owned).collect();
            for name in &names {
                let values = read_float_tensor(&ckpt, name);
                assert!(
                    values.iter().all(|v| v.is_finite()),
                    "{}: {name}",
                    case.display()
                );
            }
            let weights: Vec<&String> = names
                .iter()
                .filter(|n| !n.ends_with(SCALE_SUFFIX))
                .collect();
            ckpt.check_names(
                &weights,
                cfg.num_hidden_layers,
                cfg.num_nextn_predict_layers,
            )
            .expect("names match");

            let golden = Checkpoint::open(case.join("golden.safetensors")).expect("golden");
            for name in golden.names() {
                let data = match golden.dtype(name).expect("present") {
                    Dtype::F32 => {
                        let values = read_float_tensor(&golden, name);
                        assert!(values.iter().all(|v| v.is_finite()), "{name}");
                        golden.read_data(name).expect("f32 data")
                    }
                    _ => golden.read_data(name).expect("integer data"),
                };
                assert_eq!(data.shape.as_slice(), golden.shape(name).expect("present"));
            }
            let tokens = golden.read_data("tokens").expect("tokens");
            let tokens = tokens.to_vec::<i64>().expect("I64 tokens");
            assert!(tokens
                .iter()
                .all(|&t| (0..cfg.vocab_size as i64).contains(&t)));
            for name in golden.names().filter(|n| n.ends_with("selected")) {
                let mask = golden
                    .read_data(name)
                    .expect("mask")
                    .to_vec::<u8>()
                    .expect("U8");
                assert!(mask.iter().all(|&m| m <= 1), "{name}");
            }
        }
    }

    #[test]
    fn conformance_values_match_an_independent_decoding() {
        let mut fp8_checked = 0;
        let mut bf16_checked = 0;
        let mut fp8_cases = 0;
        for case in conformance_cases() {
            let cfg = DeepSeekV32Config::from_file(case.join("config.json")).expect("config");
            fp8_cases += usize::from(cfg.quantization_config.is_some());
            let path = case.join(SINGLE_FILE);
            let block = cfg.weight_block_size().unwrap_or(DEFAULT_WEIGHT_BLOCK);
            let ckpt = Checkpoint::open(&path)
                .expect("open")
                .with_weight_block_size(block)
                .expect("block");
            let raw = raw_tensors(&path);
            for (name, (dtype, shape, bytes)) in &raw {
                let ours = ckpt
                    .read_f32(name)
                    .expect("readable")
                    .to_vec::<f32>()
                    .expect("f32");
                match dtype.as_str() {
                    "BF16" => {
                        let expected: Vec<f32> = bytes
                            .chunks_exact(2)
                            .map(|b| {
                                f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
                            })
                            .collect();
                        assert_eq!(ours, expected, "{name}");
                        bf16_checked += 1;
                    }
                    "F8_E4M3" => {
                        let (_, scale_shape, scale_bytes) = &raw[&format!("{name}_scale_inv")];
                        let scales: Vec<f32> = scale_bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect();
                        let (rows, cols) = (shape[0], shape[1]);
                        assert_eq!(
                            scale_shape,
                            &vec![rows.div_ceil(block[0]), cols.div_ceil(block[1])]
                        );
                        for r in 0..rows {
                            for c in 0..cols {
                                let scale = scales[(r / block[0]) * scale_shape[1] + c / block[1]];
                                let expected = e4m3_by_formula(bytes[r * cols + c]) * scale;
                                assert_eq!(
                                    ours[r * cols + c].to_bits(),
                                    expected.to_bits(),
                                    "{name}[{r},{c}]"
                                );
                            }
                        }
                        if cfg.index_scale_fmt() == crate::config::ScaleFmt::Ue8m0 {
                            assert!(
                                scales.iter().all(|s| s.to_bits() & 0x007F_FFFF == 0),
                                "{name}: ue8m0 scales are powers of two"
                            );
                        }
                        fp8_checked += 1;
                    }
                    _ => {}
                }
            }
        }
        assert!(bf16_checked > 0, "no BF16 tensor in the conformance cases");
        // FP8 cases include partial edge blocks (e.g. kv_a_proj_with_mqa, 160 rows).
        assert_eq!(
            fp8_checked > 0,
            fp8_cases > 0,
            "FP8 tensors iff a case is quantised"
        );
    }

    fn view<'a>(dtype: Dtype, shape: &[usize], data: &'a [u8]) -> TensorView<'a> {
        TensorView::new(dtype, shape.to_vec(), data).expect("consistent view")
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn write(path: &Path, tensors: Vec<(&str, TensorView<'_>)>) {
        safetensors::serialize_to_file(tensors, None, path).expect("serialise");
    }

    #[test]
    fn fp8_partial_blocks_and_custom_block_size() {
        let dir = TempDir::new("fp8");
        let path = dir.path().join("w.safetensors");
        // 5×3 weight, 2×2 blocks: scales 3×2, last block row and column partial.
        let weight: Vec<u8> = (0..15u8).map(|i| 0x30 + i).collect();
        let scales = [1.0f32, 2.0, 4.0, 8.0, 16.0, 32.0];
        let scale_bytes = f32_bytes(&scales);
        write(
            &path,
            vec![
                ("w", view(Dtype::F8_E4M3, &[5, 3], &weight)),
                ("w_scale_inv", view(Dtype::F32, &[3, 2], &scale_bytes)),
            ],
        );
        let ckpt = Checkpoint::open(&path)
            .expect("open")
            .with_weight_block_size([2, 2])
            .expect("block");
        let values = ckpt
            .read_f32("w")
            .expect("dequantised")
            .to_vec::<f32>()
            .expect("f32");
        for r in 0..5 {
            for c in 0..3 {
                let expected = e4m3_by_formula(weight[r * 3 + c]) * scales[(r / 2) * 2 + c / 2];
                assert_eq!(values[r * 3 + c], expected, "[{r},{c}]");
            }
        }
        // With the default 128×128 blocks the 3×2 scale has the wrong shape.
        let err = Checkpoint::open(&path)
            .expect("open")
            .read_f32("w")
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{msg}");
        assert!(
            msg.contains("w_scale_inv") && msg.contains("[1, 1]") && msg.contains("[3, 2]"),
            "{msg}"
        );
        let err = Checkpoint::open(&path)
            .expect("open")
            .with_weight_block_size([0, 128])
            .unwrap_err();
        assert!(err.to_string().contains("weight_block_size"), "{err}");
    }

    #[test]
    fn fp8_without_scale_names_both_tensors_and_the_file() {
        let dir = TempDir::new("noscale");
        let path = dir.path().join("w.safetensors");
        write(
            &path,
            vec![("layer.weight", view(Dtype::F8_E4M3, &[2, 2], &[0x38; 4]))],
        );
        let ckpt = Checkpoint::open(&path).expect("open");
        let err = ckpt.read_f32("layer.weight").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::Fp8WithoutScale { .. }), "{msg}");
        assert!(msg.contains("`layer.weight`"), "{msg}");
        assert!(msg.contains("`layer.weight_scale_inv`"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let err = ckpt.read_data("layer.weight").unwrap_err();
        assert!(err.to_string().contains("F8_E4M3"), "{err}");
    }

    /// NaN and ±inf weights, and FP8 scales that are not finite and positive, are errors
    /// naming the tensor, the file and the first bad element, unless allowed.
    #[test]
    fn nonfinite_weights_and_bad_fp8_scales_are_rejected_unless_allowed() {
        let dir = TempDir::new("nonfinite");
        let path = dir.path().join("w.safetensors");
        let nan = f32_bytes(&[1.0, 2.0, 3.0, f32::NAN, 5.0, 6.0]);
        let inf: Vec<u8> = [0.5f32, f32::NEG_INFINITY]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        // An FP8 NaN byte (0x7F) under a good scale.
        let fp8_nan = [0x38, 0x7F, 0x38, 0x38];
        let fp8 = [0x38; 4];
        let scales: Vec<(String, Vec<u8>)> = [f32::NAN, f32::INFINITY, 0.0, -0.5, 1.0]
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("q{i}"), f32_bytes(&[1.0, *s])))
            .collect();
        let scale_names: Vec<String> = scales
            .iter()
            .map(|(n, _)| format!("{n}{SCALE_SUFFIX}"))
            .collect();
        let mut tensors = vec![
            ("nan", view(Dtype::F32, &[2, 3], &nan)),
            ("inf", view(Dtype::BF16, &[2], &inf)),
            ("fp8nan", view(Dtype::F8_E4M3, &[2, 2], &fp8_nan)),
            ("fp8nan_scale_inv", view(Dtype::F32, &[1, 2], &scales[4].1)),
        ];
        for ((name, bytes), scale_name) in scales.iter().zip(&scale_names) {
            tensors.push((name.as_str(), view(Dtype::F8_E4M3, &[2, 2], &fp8)));
            tensors.push((scale_name.as_str(), view(Dtype::F32, &[1, 2], bytes)));
        }
        write(&path, tensors);
        let open = || {
            Checkpoint::open(&path)
                .expect("open")
                .with_weight_block_size([2, 1])
                .expect("block")
        };
        let ckpt = open();
        let file = path.display().to_string();
        let cases = [
            ("nan", "`nan`", "NaN at [1, 0]: weights must be finite"),
            ("inf", "`inf`", "-inf at [1]: weights must be finite"),
            (
                "fp8nan",
                "`fp8nan`",
                "NaN at [0, 1]: weights must be finite",
            ),
            (
                "q0",
                "`q0_scale_inv`",
                "NaN at [0, 1]: FP8 block scales must be finite and positive",
            ),
            ("q1", "`q1_scale_inv`", "inf at [0, 1]: FP8 block scales"),
            ("q2", "`q2_scale_inv`", "0 at [0, 1]: FP8 block scales"),
            ("q3", "`q3_scale_inv`", "-0.5 at [0, 1]: FP8 block scales"),
        ];
        for (name, tensor, what) in cases {
            let err = ckpt.read_f32(name).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, LoadError::BadValue { .. }), "{name}: {msg}");
            assert!(
                msg.contains(tensor) && msg.contains(&file) && msg.contains(what),
                "{name}: {msg}"
            );
            assert!(msg.contains("--allow-nonfinite"), "{msg}");
        }
        ckpt.read_f32("q4").expect("a good scale");
        let allowed = open().allow_nonfinite(true);
        for (name, ..) in cases {
            allowed.read_f32(name).expect("allowed");
        }
        let nan = allowed.read_f32("nan").expect("allowed");
        assert!(nan.to_vec::<f32>().expect("f32")[3].is_nan());
    }

    /// Layers after the blocks and MTP layers mean the configuration has too few layers.
    #[test]
    fn layers_beyond_num_hidden_layers_and_mtp_are_an_error() {
        let dir = TempDir::new("layers");
        let path = dir.path().join(SINGLE_FILE);
        let one = f32_bytes(&[1.0]);
        let names = [
            "model.layers.0.w",
            "model.layers.1.w",
            "model.layers.2.w",
            "model.layers.3.w",
        ];
        write(
            &path,
            names
                .iter()
                .map(|n| (*n, view(Dtype::F32, &[1], &one)))
                .collect(),
        );
        let ckpt = Checkpoint::open(dir.path()).expect("open");
        ckpt.check_names(&names, 4, 0).expect("four blocks");
        ckpt.check_names(&names, 2, 2)
            .expect("two blocks, two MTP layers");
        // The MTP layers' tensors are checked like the blocks'.
        match ckpt.check_names(&names[..3], 2, 2) {
            Err(LoadError::NameMismatch { unexpected, .. }) => assert_eq!(unexpected, ["model.layers.3.w"]),
            other => panic!("an MTP tensor beyond the expected ones: {other:?}"),
        }
        for (layers, mtp) in [(2, 0), (2, 1), (3, 0)] {
            let err = ckpt.check_names(&names[..layers], layers, mtp).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, LoadError::ExtraLayers { highest: 3, .. }),
                "{msg}"
            );
            assert_eq!(
                msg,
                format!(
                    "{} holds layers up to index 3 (`model.layers.3.w`), but config.json has \
                     num_hidden_layers = {layers} and num_nextn_predict_layers = {mtp} (MTP), \
                     which allow layers 0..={}: the config does not describe this checkpoint",
                    path.display(),
                    layers + mtp - 1
                )
            );
        }
    }

    #[test]
    fn truncated_and_garbage_files_are_corrupt() {
        let dir = TempDir::new("trunc");
        let path = dir.path().join("t.safetensors");
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
        write(&path, vec![("x", view(Dtype::F32, &[4], &data))]);
        let full = std::fs::read(&path).expect("written");
        for keep in [full.len() - 3, 20, 5, 0] {
            std::fs::write(&path, &full[..keep]).expect("truncate");
            let err = Checkpoint::open(&path).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, LoadError::Corrupt { .. } | LoadError::Io { .. }),
                "{msg}"
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").expect("write");
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(
            err.to_string().contains("not a valid safetensors file"),
            "{err}"
        );
    }

    #[test]
    fn missing_unexpected_and_misshapen_tensors() {
        let dir = TempDir::new("names");
        let path = dir.path().join(SINGLE_FILE);
        let data = f32_bytes(&[0.5; 6]);
        let tokens: Vec<u8> = [3i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let flags = [1u8, 0, 1];
        write(
            &path,
            vec![
                ("model.layers.0.w", view(Dtype::F32, &[2, 3], &data)),
                (
                    "model.layers.0.w_scale_inv",
                    view(Dtype::F32, &[1, 1], &data[..4]),
                ),
                ("model.layers.3.mtp", view(Dtype::F32, &[6], &data)),
                ("extra", view(Dtype::F32, &[3, 2], &data)),
                ("tokens", view(Dtype::I64, &[2], &tokens)),
                ("flags", view(Dtype::BOOL, &[3], &flags)),
            ],
        );
        let ckpt = Checkpoint::open(dir.path()).expect("directory with model.safetensors");
        assert!(ckpt.contains("extra") && !ckpt.contains("nope"));
        assert_eq!(ckpt.dtype("tokens").expect("present"), Dtype::I64);

        let err = ckpt.read_f32("nope").unwrap_err();
        assert!(
            err.to_string().contains("nope")
                && err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );

        let err = ckpt
            .read_tensor::<B, 2>("model.layers.0.w", [3, 2], &Default::default())
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{msg}");
        assert!(
            msg.contains("model.layers.0.w") && msg.contains("[3, 2]") && msg.contains("[2, 3]"),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let err = ckpt
            .read_tensor::<B, 1>("model.layers.0.w", [6], &Default::default())
            .unwrap_err();
        assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err}");

        let expected = [
            "model.layers.0.w",
            "tokens",
            "flags",
            "model.layers.3.mtp",
            "a.missing",
            "b.missing",
        ];
        let err = ckpt.check_names(&expected, 3, 1).unwrap_err();
        let msg = err.to_string();
        match &err {
            LoadError::NameMismatch {
                missing,
                unexpected,
                ..
            } => {
                assert_eq!(missing, &["a.missing", "b.missing"]);
                // The scale is not unexpected.
                assert_eq!(unexpected, &["extra"]);
            }
            other => panic!("wrong error: {other}"),
        }
        assert!(
            msg.contains("a.missing") && msg.contains("b.missing") && msg.contains("extra"),
            "{msg}"
        );
        let mut all = expected[..4].to_vec();
        all.push("extra");
        ckpt.check_names(&all, 3, 1)
            .expect("everything expected");
        all.retain(|n| *n != "model.layers.3.mtp");
        assert!(
            matches!(ckpt.check_names(&all, 3, 1), Err(LoadError::NameMismatch { unexpected, .. }) if unexpected == ["model.layers.3.mtp"]),
            "a tensor of the MTP layer that the model does not expect"
        );

        let tokens = ckpt.read_data("tokens").expect("tokens");
        assert_eq!(tokens.to_vec::<i64>().expect("i64"), vec![3, -1]);
        let flags = ckpt.read_data("flags").expect("flags");
        assert_eq!(
            flags.to_vec::<bool>().expect("bool"),
            vec![true, false, true]
        );
        let err = ckpt.read_f32("tokens").unwrap_err();
        assert!(
            matches!(err, LoadError::UnsupportedDtype { .. }) && err.to_string().contains("I64"),
            "{err}"
        );
    }

    #[test]
    fn sharded_checkpoints() {
        let dir = TempDir::new("shards");
        let a = f32_bytes(&[1.0, 2.0]);
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        write(
            &dir.path().join("model-1.safetensors"),
            vec![("a", view(Dtype::F32, &[2], &a))],
        );
        write(
            &dir.path().join("model-2.safetensors"),
            vec![("b", view(Dtype::BF16, &[2], &b))],
        );
        let index = dir.path().join(INDEX_FILE);
        std::fs::write(&index, r#"{"metadata": {}, "weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}"#).expect("write");
        let ckpt = Checkpoint::open(dir.path()).expect("sharded");
        assert_eq!(ckpt.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            ckpt.read_f32("b")
                .expect("bf16")
                .to_vec::<f32>()
                .expect("f32"),
            vec![1.5, -2.0]
        );
        assert!(ckpt
            .file_of("b")
            .expect("present")
            .ends_with("model-2.safetensors"));

        // An index naming a shard that does not exist.
        std::fs::write(
            &index,
            r#"{"weight_map": {"a": "model-1.safetensors", "c": "model-3.safetensors"}}"#,
        )
        .expect("write");
        let err = Checkpoint::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::Index { .. }), "{msg}");
        assert!(
            msg.contains("model-3.safetensors") && msg.contains(INDEX_FILE),
            "{msg}"
        );

        // An index naming a tensor its shard lacks.
        std::fs::write(
            &index,
            r#"{"weight_map": {"a": "model-1.safetensors", "z": "model-2.safetensors"}}"#,
        )
        .expect("write");
        let err = Checkpoint::open(&index).unwrap_err();
        assert!(err.to_string().contains("`z`"), "{err}");

        for shard in ["../model-1.safetensors", "/etc/passwd", "sub/model-1.safetensors", ""] {
            let text = serde_json::json!({"weight_map": {"a": shard}}).to_string();
            std::fs::write(&index, text).expect("write");
            let err = Checkpoint::open(dir.path()).unwrap_err();
            assert!(err.to_string().contains(&format!("shard `{shard}` is not a file name")), "{err}");
        }

        std::fs::write(&index, r#"{"weight_map": 7}"#).expect("write");
        let err = Checkpoint::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("weight_map"), "{err}");
    }

    #[test]
    fn missing_paths_are_io_errors_with_the_path() {
        let err = Checkpoint::open("/nonexistent/dsa-model/ckpt.safetensors").unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent/dsa-model/ckpt.safetensors"),
            "{err}"
        );
        let dir = TempDir::new("empty");
        let err = Checkpoint::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(SINGLE_FILE) && err.to_string().contains(INDEX_FILE),
            "{err}"
        );
    }
}
