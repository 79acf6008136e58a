//! DeepSeek-V3.2 model configuration, for the DSA model family.
//!
//! [`DeepSeekV32Config`] reads two spellings of the same configuration:
//!
//! * the HuggingFace `config.json` (`model_type: "deepseek_v32"`, `hidden_size`,
//!   `num_hidden_layers`, `rope_scaling`, `quantization_config`, ...), also of GLM-5
//!   (`model_type: "glm_moe_dsa"`, see [`ModelType`]), with transformers 5's
//!   `rope_parameters`, `dtype` and a list of `eos_token_id`s, and
//! * the `inference/config_*.json` files of DeepSeek's reference repository
//!   (`dim`, `n_layers`, `n_heads`, `rope_factor`, `dtype`, ...), whose missing fields take
//!   the defaults of the reference `ModelArgs`.
//!
//! A document with a `model_type` or `hidden_size` key is read as HuggingFace style, any
//! other one as reference style. The HuggingFace spelling is [`DeepSeekV32Config`]'s own
//! serde derive (its field names, with the HuggingFace defaults of optional fields); the
//! reference spelling is read into the reference `ModelArgs`, defaults included, and
//! converted. Both end in the HuggingFace field names, which is also what the type
//! serialises to. In both, `null` counts as absent.
//!
//! ```
//! use dsa_model::config::DeepSeekV32Config;
//!
//! let reference = r#"{ "dim": 256, "inter_dim": 512, "moe_inter_dim": 128, "n_layers": 3,
//!     "n_dense_layers": 1, "n_heads": 4, "n_routed_experts": 8, "n_shared_experts": 1,
//!     "n_activated_experts": 2, "n_expert_groups": 2, "n_limited_groups": 1,
//!     "route_scale": 2.5, "score_func": "sigmoid", "q_lora_rank": 128, "kv_lora_rank": 128,
//!     "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "vocab_size": 1024,
//!     "index_n_heads": 4, "index_head_dim": 128, "index_topk": 16 }"#;
//! let cfg = DeepSeekV32Config::from_json_str(reference)?;
//! assert_eq!(cfg.hidden_size, 256);
//! assert!(cfg.is_moe_layer(1) && !cfg.is_moe_layer(0));
//! # Ok::<(), dsa_model::config::ConfigError>(())
//! ```

use dsa_burn::{DsaAttentionConfig, IndexerQuant};
pub use dsa_burn::YarnConfig;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The model family of a HuggingFace-style config (`model_type`). The families share one
/// architecture (MLA with DeepSeek's lightning indexer, DeepSeek-V3 MoE) and one checkpoint
/// layout (the same tensor names); they differ in the indexer's RoPE and in their sizes.
///
/// ```
/// use dsa_model::config::{DeepSeekV32Config, ModelType};
///
/// let glm5 = DeepSeekV32Config::glm5();
/// assert_eq!(glm5.model_type, ModelType::GlmMoeDsa);
/// assert_eq!(glm5.model_type.to_string(), "glm_moe_dsa");
/// assert!(glm5.indexer_rope_interleave);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelType {
    /// DeepSeek-V3.2 (`deepseek_v32`): the indexer's RoPE rotates halves (non-interleaved).
    #[serde(rename = "deepseek_v32")]
    DeepseekV32,
    /// GLM-5 (`glm_moe_dsa`, zai-org): DeepSeek-V3.2's architecture with an interleaved
    /// indexer RoPE (`indexer_rope_interleave`, true when absent), and usually
    /// `rope_parameters` instead of `rope_theta`/`rope_scaling` and a list of
    /// `eos_token_id`s.
    #[serde(rename = "glm_moe_dsa")]
    GlmMoeDsa,
}

/// One layer's indexer mode in GLM-5.2's `indexer_types` (see
/// [`DeepSeekV32Config::indexer_types`]).
///
/// ```
/// use dsa_model::config::{DeepSeekV32Config, IndexerType};
/// let mut v = serde_json::to_value(DeepSeekV32Config::glm5())?;
/// v["num_hidden_layers"] = 4.into();
/// v["first_k_dense_replace"] = 1.into();
/// v["indexer_types"] = serde_json::json!(["full", "shared", "full", "shared"]);
/// let cfg = DeepSeekV32Config::from_json_value(&v)?;
/// assert_eq!(cfg.indexer_types[1], IndexerType::Shared);
/// assert_eq!((cfg.indexer_source(1), cfg.indexer_source(3)), (0, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexerType {
    /// The layer runs its own indexer (`"full"`).
    #[serde(rename = "full")]
    Full,
    /// The layer has no indexer and reuses the top-k of the latest full layer before it
    /// (`"shared"`).
    #[serde(rename = "shared")]
    Shared,
}

impl ModelType {
    /// The `model_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::DeepseekV32 => "deepseek_v32",
            ModelType::GlmMoeDsa => "glm_moe_dsa",
        }
    }

    /// The family's name for people (`DeepSeek-V3.2`, `GLM-5`).
    pub fn family(self) -> &'static str {
        match self {
            ModelType::DeepseekV32 => "DeepSeek-V3.2",
            ModelType::GlmMoeDsa => "GLM-5",
        }
    }

    /// `indexer_rope_interleave` when a config of this family leaves it out: GLM-5's
    /// indexer rotates interleaved pairs (transformers' `GlmMoeDsaIndexer`), DeepSeek-V3.2's
    /// rotates halves.
    pub fn default_indexer_rope_interleave(self) -> bool {
        self == ModelType::GlmMoeDsa
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Width of the blocks in which the lightning indexer quantises its queries and keys to FP8
/// (one scale per block).
pub const INDEX_QUANT_BLOCK: usize = 128;

/// An error while reading or validating a configuration. Field errors name the field
/// (dotted for nested fields, e.g. `rope_scaling.factor`).
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The text is not JSON, or its top level is not an object.
    Json {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// A required field is absent (or `null`).
    Missing {
        /// The field's name.
        field: String,
    },
    /// A field has the wrong type, an unsupported value, or is inconsistent with others.
    Invalid {
        /// The field's name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// The name of the offending field, for [`ConfigError::Missing`] and
    /// [`ConfigError::Invalid`].
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let err = DeepSeekV32Config::from_json_str(r#"{"dim": 256, "n_layer": 3}"#).unwrap_err();
    /// assert_eq!(err.field(), Some("n_layer"));
    /// ```
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { field } | ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Io { .. } | ConfigError::Json { .. } => None,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            ConfigError::Json {
                path: Some(path),
                reason,
            } => write!(f, "config {} is not valid JSON: {reason}", path.display()),
            ConfigError::Json { path: None, reason } => {
                write!(f, "config is not valid JSON: {reason}")
            }
            ConfigError::Missing { field } => write!(f, "config field `{field}` is missing"),
            ConfigError::Invalid { field, reason } => {
                write!(f, "config field `{field}` is invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How MoE gate logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoringFunc {
    /// `σ(logit)`; chosen weights are renormalised to sum 1 (DeepSeek-V3/V3.2).
    Sigmoid,
    /// `softmax(logits)` over all routed experts.
    Softmax,
}

/// How routed experts are chosen (HuggingFace `topk_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopkMethod {
    /// Group-limited top-k on scores plus `e_score_correction_bias`; a group scores the sum
    /// of its two best experts (DeepSeek-V3/V3.2).
    #[default]
    NoauxTc,
    /// Plain top-k over all experts.
    Greedy,
    /// Group-limited top-k without bias; a group scores its best expert.
    GroupLimitedGreedy,
}

/// The activation of the feed-forward blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `x·σ(x)`, used as `W2(SiLU(W1·x) ⊙ W3·x)`.
    #[default]
    Silu,
}

/// Format of FP8 block scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleFmt {
    /// A plain float32 scale, `amax / 448`.
    Float,
    /// The scale rounded up to a power of two (`ue8m0`).
    Ue8m0,
}

/// RoPE scaling (`rope_scaling`). Only YaRN is supported. It reads the kind from `type` or,
/// when that is absent, from `rope_type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum RopeScaling {
    /// YaRN.
    #[serde(rename = "yarn")]
    Yarn(YarnConfig),
}

/// The kinds of `rope_scaling` supported.
#[derive(Deserialize)]
enum RopeKind {
    #[serde(rename = "yarn")]
    Yarn,
}

/// `rope_scaling` as written: its kind and the YaRN keys, with HuggingFace's defaults.
#[derive(Deserialize)]
struct RawRopeScaling {
    #[serde(rename = "type")]
    kind: Option<RopeKind>,
    rope_type: Option<RopeKind>,
    factor: f64,
    original_max_position_embeddings: usize,
    #[serde(default = "default_beta_fast")]
    beta_fast: f64,
    #[serde(default = "one")]
    beta_slow: f64,
    #[serde(default = "one")]
    mscale: f64,
    mscale_all_dim: Option<f64>,
}

impl<'de> Deserialize<'de> for RopeScaling {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawRopeScaling::deserialize(deserializer)?;
        let RopeKind::Yarn = raw.kind.or(raw.rope_type).ok_or_else(|| D::Error::missing_field("type"))?;
        Ok(RopeScaling::Yarn(YarnConfig {
            factor: raw.factor,
            original_max_position_embeddings: raw.original_max_position_embeddings,
            beta_fast: raw.beta_fast,
            beta_slow: raw.beta_slow,
            mscale: raw.mscale,
            mscale_all_dim: raw.mscale_all_dim,
        }))
    }
}

/// `rope_parameters` (transformers 5): the RoPE base and the kind of scaling, whose
/// parameters (for `yarn`) are read from the same object as [`RopeScaling`].
#[derive(Deserialize)]
struct RopeParameters {
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    rope_type: RopeType,
}

/// The `rope_type`s of `rope_parameters` supported.
#[derive(Deserialize)]
enum RopeType {
    /// Plain RoPE.
    #[serde(rename = "default")]
    Default,
    /// YaRN.
    #[serde(rename = "yarn")]
    Yarn,
}

/// Weight quantisation (`quantization_config`): FP8 e4m3 with one float32 scale per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationConfig {
    /// Always `"fp8"`.
    #[serde(deserialize_with = "fp8")]
    pub quant_method: String,
    /// Always `"e4m3"` (the default).
    #[serde(default = "default_fmt", deserialize_with = "e4m3")]
    pub fmt: String,
    /// Activation quantisation (`"dynamic"` in DeepSeek's checkpoints), if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_scheme: Option<String>,
    /// Rows × columns of a weight block sharing one `weight_scale_inv` entry (default
    /// `[128, 128]`).
    #[serde(default = "default_block_size", deserialize_with = "block_size")]
    pub weight_block_size: [usize; 2],
    /// Format of the scales (`ue8m0`: powers of two); absent means plain float32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_fmt: Option<ScaleFmt>,
}

/// The largest value of a size field (`hidden_size`, `vocab_size`, head counts and dims,
/// `max_position_embeddings`, …): 2^24.
pub const MAX_SIZE: usize = 1 << 24;

/// The most layers times routed experts a config may describe: 2^20 expert MLPs
/// (DeepSeek-V3.2 has 61 × 256), so that listing a checkpoint's tensors stays bounded.
pub const MAX_EXPERT_MLPS: usize = 1 << 20;

/// The most parameters a config may describe: 2^50 (DeepSeek-V3.2 has 2^39).
pub const MAX_PARAMETERS: u128 = 1 << 50;

/// Parameter counts; see [`DeepSeekV32Config::parameter_count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCount {
    /// Every parameter.
    pub total: usize,
    /// The parameters one token uses (shared parts and its active experts).
    pub active: usize,
}

/// A DeepSeek-V3.2 configuration, under HuggingFace field names.
///
/// Build it with [`DeepSeekV32Config::from_file`], [`DeepSeekV32Config::from_json_str`],
/// serde (`serde_json::from_str`, either spelling), or [`DeepSeekV32Config::tiny`]; the
/// readers validate. The serde attributes of the fields are the HuggingFace spelling: the
/// derive is `remote = "Self"` so that the [`Deserialize`] impl can pick the spelling and
/// validate around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct DeepSeekV32Config {
    /// HuggingFace `architectures` (informative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// The model family; any other `model_type` is an error naming the field.
    pub model_type: ModelType,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width (`dim`).
    pub hidden_size: usize,
    /// Hidden width of the dense MLP layers (`inter_dim`).
    pub intermediate_size: usize,
    /// Hidden width of each expert (`moe_inter_dim`).
    pub moe_intermediate_size: usize,
    /// Number of transformer blocks, without the MTP layer (`n_layers`).
    pub num_hidden_layers: usize,
    /// Multi-token-prediction layers stored after the blocks (`num_nextn_predict_layers`,
    /// 1 in DeepSeek-V3.2, 0 when absent): a checkpoint's layers
    /// `num_hidden_layers .. num_hidden_layers + num_nextn_predict_layers` are MTP layers
    /// (the model's [`crate::mtp`] modules); any layer beyond them is an error.
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    /// The first this-many layers use a dense MLP (`n_dense_layers`).
    pub first_k_dense_replace: usize,
    /// Every this-many-th layer after the dense ones is MoE (1 in DeepSeek-V3.2, the
    /// default).
    #[serde(default = "one")]
    pub moe_layer_freq: usize,
    /// Attention heads (`n_heads`).
    pub num_attention_heads: usize,
    /// Must equal `num_attention_heads` (MLA has no grouped KV heads), which it defaults to.
    pub num_key_value_heads: usize,
    /// Routed experts per MoE layer; 0 makes every layer dense.
    pub n_routed_experts: usize,
    /// Shared experts per MoE layer.
    pub n_shared_experts: usize,
    /// Routed experts chosen per token (`n_activated_experts`).
    pub num_experts_per_tok: usize,
    /// Expert groups (`n_expert_groups`).
    pub n_group: usize,
    /// Groups kept per token (`n_limited_groups`).
    pub topk_group: usize,
    /// Gate scoring function (`score_func`).
    pub scoring_func: ScoringFunc,
    /// Expert selection method.
    #[serde(default)]
    pub topk_method: TopkMethod,
    /// Whether the chosen experts' weights are renormalised to sum 1 (default true).
    #[serde(default = "yes")]
    pub norm_topk_prob: bool,
    /// Multiplier of the routed experts' weights (`route_scale`).
    pub routed_scaling_factor: f64,
    /// Rank of the query latent (must be positive: the indexer reads it).
    pub q_lora_rank: usize,
    /// Rank of the shared key/value latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without RoPE.
    pub qk_nope_head_dim: usize,
    /// Per-head query/key dims with RoPE (even); also the indexer's RoPE width.
    pub qk_rope_head_dim: usize,
    /// Per-head value dims.
    pub v_head_dim: usize,
    /// Feed-forward activation.
    #[serde(default)]
    pub hidden_act: Activation,
    /// Epsilon of every RMSNorm, the latents' included (default 1e-6; GLM-5 has 1e-5).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Maximum sequence length (`max_seq_len`).
    pub max_position_embeddings: usize,
    /// RoPE base (default 10000). A config may give it, as transformers 5 writes them, in
    /// `rope_parameters.rope_theta` instead (see [`DeepSeekV32Config::from_json_value`]).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling; see [`DeepSeekV32Config::yarn`] for when it applies. From
    /// `rope_parameters` when its `rope_type` is `yarn` (`default`: none).
    pub rope_scaling: Option<RopeScaling>,
    /// MLA's RoPE rotates interleaved pairs `(2i, 2i+1)` (HuggingFace `rope_interleave`,
    /// default true, as in DeepSeek's and GLM-5's checkpoints); `false` is refused.
    #[serde(default = "yes")]
    pub rope_interleave: bool,
    /// Lightning indexer heads.
    pub index_n_heads: usize,
    /// Lightning indexer head dim (a power of two, multiple of [`INDEX_QUANT_BLOCK`]).
    pub index_head_dim: usize,
    /// Tokens selected per query by the indexer.
    pub index_topk: usize,
    /// Interleaved (pairs `(2i, 2i+1)`) RoPE in the indexer instead of rotate-half: GLM-5
    /// (`true` in its config, and the default of [`ModelType::GlmMoeDsa`]); `false` for
    /// DeepSeek-V3.2 (its default).
    pub indexer_rope_interleave: bool,
    /// Per-layer indexer mode (GLM-5.2's `indexer_types`, one entry per layer of
    /// `num_hidden_layers`): a [`IndexerType::Full`] layer runs its indexer, a
    /// [`IndexerType::Shared`] one has none and attends to the top-k of the latest full
    /// layer before it ([`DeepSeekV32Config::indexer_source`]). Empty (the default, and
    /// DeepSeek-V3.2): every layer is full. A config without the field may give GLM's
    /// schedule instead, `index_topk_pattern` or `index_topk_freq` /
    /// `index_skip_topk_offset` (see [`DeepSeekV32Config::from_json_value`]). MTP layers
    /// always have their own indexer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexer_types: Vec<IndexerType>,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u64>,
    /// End-of-sequence tokens: one number (DeepSeek) or a list (GLM-5 has three); empty
    /// when absent.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub eos_token_id: Vec<u64>,
    /// Storage dtype of the unquantised weights (informative), if given; transformers 5
    /// writes it as `dtype`.
    #[serde(alias = "dtype", skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// FP8 weight quantisation; `None` for unquantised checkpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<QuantizationConfig>,
    /// Scale format of the indexer's FP8 activations when it differs from
    /// `quantization_config.scale_fmt` (the reference `scale_fmt` of an unquantised model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_fmt: Option<ScaleFmt>,
}

impl DeepSeekV32Config {
    /// Reads and validates a `config.json` of either spelling.
    ///
    /// ```no_run
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::from_file("model/config.json")?;
    /// println!("{} layers", cfg.num_hidden_layers);
    /// # Ok::<(), dsa_model::config::ConfigError>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text).map_err(|err| match err {
            ConfigError::Json { path: None, reason } => ConfigError::Json {
                path: Some(path.to_path_buf()),
                reason,
            },
            other => other,
        })
    }

    /// Parses and validates a config of either spelling from JSON text.
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let json = serde_json::to_string(&DeepSeekV32Config::tiny(1000)).unwrap();
    /// assert_eq!(DeepSeekV32Config::from_json_str(&json)?.vocab_size, 1000);
    /// # Ok::<(), dsa_model::config::ConfigError>(())
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
            path: None,
            reason: e.to_string(),
        })?;
        Self::from_json_value(&value)
    }

    /// Normalises and validates an already parsed JSON document of either spelling.
    ///
    /// A HuggingFace-style document may give the RoPE as transformers 5 writes it,
    /// `rope_parameters` (`rope_theta` and `rope_type`: `default`, or `yarn` with the keys of
    /// `rope_scaling`), as GLM-5's config does; with `rope_theta` or `rope_scaling` beside it,
    /// they must agree.
    ///
    /// ```
    /// use dsa_model::config::{DeepSeekV32Config, ModelType};
    ///
    /// let mut v = serde_json::to_value(DeepSeekV32Config::tiny(64)).unwrap();
    /// v["model_type"] = "glm_moe_dsa".into();
    /// v["rope_parameters"] = serde_json::json!({"rope_theta": 1e6, "rope_type": "default"});
    /// v.as_object_mut().unwrap().remove("rope_theta");
    /// v.as_object_mut().unwrap().remove("indexer_rope_interleave");
    /// let cfg = DeepSeekV32Config::from_json_value(&v)?;
    /// assert_eq!((cfg.model_type, cfg.rope_theta), (ModelType::GlmMoeDsa, 1e6));
    /// assert!(cfg.indexer_rope_interleave && cfg.rope_scaling.is_none());
    /// # Ok::<(), dsa_model::config::ConfigError>(())
    /// ```
    pub fn from_json_value(value: &Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = value else {
            return Err(ConfigError::Json {
                path: None,
                reason: "the top level is not an object".into(),
            });
        };
        let mut map = map.clone();
        strip_nulls(&mut map);
        let cfg = if map.contains_key("model_type") || map.contains_key("hidden_size") {
            Self::from_hf_map(map)?
        } else {
            let args: ModelArgs = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
                match field_error(e.path(), e.inner()) {
                    ConfigError::Invalid { field, reason } if reason.starts_with("unknown field") => ConfigError::invalid(
                        field,
                        "unknown field of a reference-style config (a HuggingFace-style config needs \
                         `model_type` or `hidden_size`)",
                    ),
                    other => other,
                }
            })?;
            args.into()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The HuggingFace spelling: the derive, after the defaults that depend on other fields
    /// (`num_key_value_heads`, the family's `indexer_rope_interleave`), with
    /// `rope_parameters` read into `rope_theta` and `rope_scaling`, and `dtype` preferred to
    /// `torch_dtype`.
    fn from_hf_map(mut map: Map<String, Value>) -> Result<Self, ConfigError> {
        if let Some(heads) = map.get("num_attention_heads").cloned() {
            map.entry("num_key_value_heads").or_insert(heads);
        }
        // transformers' rule: with both spellings of the (informative) dtype, `dtype` wins.
        if map.contains_key("dtype") {
            map.remove("torch_dtype");
        }
        derive_indexer_types(&mut map)?;
        // An unknown `model_type` is left to the derive, which names the field.
        if let Some(family) = map.get("model_type").and_then(|t| ModelType::deserialize(t).ok()) {
            map.entry("indexer_rope_interleave").or_insert(family.default_indexer_rope_interleave().into());
        }
        let rope = match map.remove("rope_parameters") {
            Some(value) => {
                let params: RopeParameters = nested("rope_parameters", &value)?;
                let scaling = match params.rope_type {
                    RopeType::Default => None,
                    RopeType::Yarn => Some(nested::<RopeScaling>("rope_parameters", &value)?),
                };
                Some((params.rope_theta, scaling))
            }
            None => None,
        };
        let (theta_given, scaling_given) = (map.contains_key("rope_theta"), map.contains_key("rope_scaling"));
        let mut track = serde_path_to_error::Track::new();
        let mut cfg = Self::deserialize(serde_path_to_error::Deserializer::new(Value::Object(map), &mut track))
            .map_err(|e| field_error(&track.path(), &e))?;
        if let Some((theta, scaling)) = rope {
            if theta_given && cfg.rope_theta != theta {
                return Err(ConfigError::invalid(
                    "rope_parameters.rope_theta",
                    format!("{theta} differs from rope_theta = {}", cfg.rope_theta),
                ));
            }
            if scaling_given && cfg.rope_scaling != scaling {
                return Err(ConfigError::invalid("rope_parameters", "differs from rope_scaling"));
            }
            cfg.rope_theta = theta;
            cfg.rope_scaling = scaling;
        }
        Ok(cfg)
    }

    /// DeepSeek-V3.2 at full size (the HuggingFace `config.json` of DeepSeek-V3.2-Exp):
    /// 671B parameters, 61 layers (3 dense), 256 experts of which 8 are active, FP8 e4m3
    /// weights with `ue8m0` 128×128 block scales, YaRN ×40 over 4096 positions.
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::deepseek_v32();
    /// cfg.validate()?;
    /// assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.index_topk), (7168, 61, 2048));
    /// # Ok::<(), dsa_model::config::ConfigError>(())
    /// ```
    pub fn deepseek_v32() -> Self {
        Self {
            architectures: vec!["DeepseekV32ForCausalLM".into()],
            model_type: ModelType::DeepseekV32,
            vocab_size: 129280,
            hidden_size: 7168,
            intermediate_size: 18432,
            moe_intermediate_size: 2048,
            num_hidden_layers: 61,
            num_nextn_predict_layers: 1,
            first_k_dense_replace: 3,
            moe_layer_freq: 1,
            num_attention_heads: 128,
            num_key_value_heads: 128,
            n_routed_experts: 256,
            n_shared_experts: 1,
            num_experts_per_tok: 8,
            n_group: 8,
            topk_group: 4,
            scoring_func: ScoringFunc::Sigmoid,
            topk_method: TopkMethod::NoauxTc,
            norm_topk_prob: true,
            routed_scaling_factor: 2.5,
            q_lora_rank: 1536,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            hidden_act: Activation::Silu,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 163840,
            rope_theta: 10000.0,
            rope_scaling: Some(RopeScaling::Yarn(YarnConfig {
                factor: 40.0,
                original_max_position_embeddings: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: Some(1.0),
            })),
            rope_interleave: true,
            index_n_heads: 64,
            index_head_dim: 128,
            index_topk: 2048,
            indexer_rope_interleave: false,
            indexer_types: Vec::new(),
            tie_word_embeddings: false,
            bos_token_id: Some(0),
            eos_token_id: vec![1],
            torch_dtype: Some("bfloat16".into()),
            quantization_config: Some(QuantizationConfig {
                quant_method: "fp8".into(),
                fmt: "e4m3".into(),
                activation_scheme: Some("dynamic".into()),
                weight_block_size: [128, 128],
                scale_fmt: Some(ScaleFmt::Ue8m0),
            }),
            scale_fmt: None,
        }
    }

    /// GLM-5 at full size (the HuggingFace `config.json` of zai-org/GLM-5, `glm_moe_dsa`):
    /// 78 layers (3 dense), width 6144, 64 heads with 192 + 64 query/key dims and 256 value
    /// dims, 256 experts of which 8 are active (one group), a 32-head indexer with
    /// interleaved RoPE, plain RoPE with base 10^6 over 202752 positions, one MTP layer,
    /// bf16 weights.
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::glm5();
    /// cfg.validate()?;
    /// assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.index_n_heads), (6144, 78, 32));
    /// assert!(cfg.indexer_rope_interleave && cfg.yarn().is_none());
    /// # Ok::<(), dsa_model::config::ConfigError>(())
    /// ```
    pub fn glm5() -> Self {
        Self {
            architectures: vec!["GlmMoeDsaForCausalLM".into()],
            model_type: ModelType::GlmMoeDsa,
            vocab_size: 154880,
            hidden_size: 6144,
            intermediate_size: 12288,
            moe_intermediate_size: 2048,
            num_hidden_layers: 78,
            num_nextn_predict_layers: 1,
            first_k_dense_replace: 3,
            moe_layer_freq: 1,
            num_attention_heads: 64,
            num_key_value_heads: 64,
            n_routed_experts: 256,
            n_shared_experts: 1,
            num_experts_per_tok: 8,
            n_group: 1,
            topk_group: 1,
            scoring_func: ScoringFunc::Sigmoid,
            topk_method: TopkMethod::NoauxTc,
            norm_topk_prob: true,
            routed_scaling_factor: 2.5,
            q_lora_rank: 2048,
            kv_lora_rank: 512,
            qk_nope_head_dim: 192,
            qk_rope_head_dim: 64,
            v_head_dim: 256,
            hidden_act: Activation::Silu,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 202752,
            rope_theta: 1e6,
            rope_scaling: None,
            rope_interleave: true,
            index_n_heads: 32,
            index_head_dim: 128,
            index_topk: 2048,
            indexer_rope_interleave: true,
            indexer_types: Vec::new(),
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_id: vec![154820, 154827, 154829],
            torch_dtype: Some("bfloat16".into()),
            quantization_config: None,
            scale_fmt: None,
        }
    }

    /// The full-size model of this config's family ([`DeepSeekV32Config::deepseek_v32`] or
    /// [`DeepSeekV32Config::glm5`]), for comparisons.
    pub fn family_full_size(&self) -> Self {
        match self.model_type {
            ModelType::DeepseekV32 => Self::deepseek_v32(),
            ModelType::GlmMoeDsa => Self::glm5(),
        }
    }

    /// A small DeepSeek-V3.2 for training from scratch: width 256, 4 layers (the first
    /// dense, then MoE with 8 experts of width 128, 2 active, 1 shared), 4 heads, latent
    /// ranks 128, a 4-head indexer keeping 64 tokens, no YaRN, bf16 weights.
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::tiny(32000);
    /// cfg.validate()?;
    /// assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size), (256, 4, 32000));
    /// # Ok::<(), dsa_model::config::ConfigError>(())
    /// ```
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            architectures: vec!["DeepseekV32ForCausalLM".into()],
            model_type: ModelType::DeepseekV32,
            vocab_size,
            hidden_size: 256,
            intermediate_size: 512,
            moe_intermediate_size: 128,
            num_hidden_layers: 4,
            num_nextn_predict_layers: 0,
            first_k_dense_replace: 1,
            moe_layer_freq: 1,
            num_attention_heads: 4,
            num_key_value_heads: 4,
            n_routed_experts: 8,
            n_shared_experts: 1,
            num_experts_per_tok: 2,
            n_group: 2,
            topk_group: 1,
            scoring_func: ScoringFunc::Sigmoid,
            topk_method: TopkMethod::NoauxTc,
            norm_topk_prob: true,
            routed_scaling_factor: 2.5,
            q_lora_rank: 128,
            kv_lora_rank: 128,
            qk_nope_head_dim: 64,
            qk_rope_head_dim: 32,
            v_head_dim: 64,
            hidden_act: Activation::Silu,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 2048,
            rope_theta: 10000.0,
            rope_scaling: None,
            rope_interleave: true,
            index_n_heads: 4,
            index_head_dim: 128,
            index_topk: 64,
            indexer_rope_interleave: false,
            indexer_types: Vec::new(),
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_id: Vec::new(),
            torch_dtype: Some("bfloat16".into()),
            quantization_config: None,
            scale_fmt: None,
        }
    }

    /// Checks that the configuration is complete, consistent and supported; the error names
    /// the first offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in self.sizes() {
            if value > MAX_SIZE {
                return Err(ConfigError::invalid(field, format!("{value} exceeds the largest supported size, {MAX_SIZE}")));
            }
        }
        const POSITIVE: [&str; 14] = [
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "q_lora_rank",
            "kv_lora_rank",
            "qk_nope_head_dim",
            "qk_rope_head_dim",
            "v_head_dim",
            "max_position_embeddings",
            "index_n_heads",
            "index_head_dim",
            "index_topk",
            "moe_layer_freq",
        ];
        nonzero(self.sizes().into_iter().filter(|(f, _)| POSITIVE.contains(f)), "must be positive")?;
        if self.num_key_value_heads != self.num_attention_heads {
            return Err(ConfigError::invalid(
                "num_key_value_heads",
                format!(
                    "{} differs from num_attention_heads = {} (MLA has no grouped KV heads)",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.rope_interleave {
            return Err(ConfigError::invalid(
                "rope_interleave",
                "false (rotate-half RoPE in MLA) is not supported: DeepSeek-V3.2 and GLM-5 rotate \
                 interleaved pairs",
            ));
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return Err(ConfigError::invalid(
                "qk_rope_head_dim",
                format!(
                    "{} is odd (RoPE rotates pairs of dims)",
                    self.qk_rope_head_dim
                ),
            ));
        }
        if self.index_head_dim < self.qk_rope_head_dim {
            return Err(ConfigError::invalid(
                "index_head_dim",
                format!(
                    "{} is smaller than qk_rope_head_dim = {} (the indexer applies RoPE to its \
                     first qk_rope_head_dim dims)",
                    self.index_head_dim, self.qk_rope_head_dim
                ),
            ));
        }
        if !self.index_head_dim.is_power_of_two()
            || !self.index_head_dim.is_multiple_of(INDEX_QUANT_BLOCK)
        {
            return Err(ConfigError::invalid(
                "index_head_dim",
                format!(
                    "{} must be a power of two (Hadamard rotation) and a multiple of \
                     {INDEX_QUANT_BLOCK} (FP8 quantisation block)",
                    self.index_head_dim
                ),
            ));
        }
        if !self.indexer_types.is_empty() && self.indexer_types.len() != self.num_hidden_layers {
            return Err(ConfigError::invalid(
                "indexer_types",
                format!("has {} entries, num_hidden_layers = {}", self.indexer_types.len(), self.num_hidden_layers),
            ));
        }
        if self.is_shared_indexer(0) {
            return Err(ConfigError::invalid(
                "indexer_types",
                "layer 0 is \"shared\" but no earlier layer has an indexer to share",
            ));
        }
        if self.first_k_dense_replace > self.num_hidden_layers {
            return Err(ConfigError::invalid(
                "first_k_dense_replace",
                format!(
                    "{} exceeds num_hidden_layers = {}",
                    self.first_k_dense_replace, self.num_hidden_layers
                ),
            ));
        }
        if self.first_k_dense_replace > 0 && self.intermediate_size == 0 {
            return Err(ConfigError::invalid(
                "intermediate_size",
                "must be positive when there are dense layers",
            ));
        }
        self.validate_moe()?;
        if self.num_hidden_layers.saturating_mul(self.n_routed_experts) > MAX_EXPERT_MLPS {
            return Err(ConfigError::invalid(
                "n_routed_experts",
                format!("{} experts in each of num_hidden_layers = {} layers exceed {MAX_EXPERT_MLPS} expert MLPs", self.n_routed_experts, self.num_hidden_layers),
            ));
        }
        let (total, _) = self.parameter_counts();
        if total > MAX_PARAMETERS {
            return Err(ConfigError::invalid(
                "hidden_size",
                format!("the sizes describe {total} parameters, more than the {MAX_PARAMETERS} supported"),
            ));
        }
        positive_numbers([("rms_norm_eps", self.rms_norm_eps), ("rope_theta", self.rope_theta)])?;
        if let Some(RopeScaling::Yarn(yarn)) = &self.rope_scaling {
            validate_yarn(yarn)?;
        }
        if let Some(q) = &self.quantization_config {
            if q.weight_block_size.contains(&0) {
                return Err(ConfigError::invalid(
                    "quantization_config.weight_block_size",
                    "block sizes must be positive",
                ));
            }
        }
        Ok(())
    }

    fn validate_moe(&self) -> Result<(), ConfigError> {
        if self.n_routed_experts == 0 {
            return Ok(());
        }
        nonzero(
            [
                ("moe_intermediate_size", self.moe_intermediate_size),
                ("num_experts_per_tok", self.num_experts_per_tok),
                ("n_group", self.n_group),
                ("topk_group", self.topk_group),
            ],
            "must be positive in a MoE model",
        )?;
        if self.num_experts_per_tok > self.n_routed_experts {
            return Err(ConfigError::invalid(
                "num_experts_per_tok",
                format!(
                    "{} exceeds n_routed_experts = {}",
                    self.num_experts_per_tok, self.n_routed_experts
                ),
            ));
        }
        if !self.n_routed_experts.is_multiple_of(self.n_group) {
            return Err(ConfigError::invalid(
                "n_group",
                format!(
                    "n_routed_experts = {} is not divisible by n_group = {}",
                    self.n_routed_experts, self.n_group
                ),
            ));
        }
        if self.topk_group > self.n_group {
            return Err(ConfigError::invalid(
                "topk_group",
                format!("{} exceeds n_group = {}", self.topk_group, self.n_group),
            ));
        }
        let per_group = self.n_routed_experts / self.n_group;
        if self.num_experts_per_tok > self.topk_group * per_group {
            return Err(ConfigError::invalid(
                "num_experts_per_tok",
                format!(
                    "{} exceeds the {} experts of the topk_group = {} kept groups",
                    self.num_experts_per_tok,
                    self.topk_group * per_group,
                    self.topk_group
                ),
            ));
        }
        if self.topk_method == TopkMethod::NoauxTc && self.n_group > 1 && per_group < 2 {
            return Err(ConfigError::invalid(
                "n_group",
                "noaux_tc scores a group by its two best experts: groups need at least 2 experts",
            ));
        }
        positive_numbers([("routed_scaling_factor", self.routed_scaling_factor)])
    }

    /// Query/key head dim of MLA: `qk_nope_head_dim + qk_rope_head_dim`.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// The YaRN parameters when YaRN applies, i.e. `rope_scaling` is YaRN and
    /// `max_position_embeddings > original_max_position_embeddings`.
    ///
    /// ```
    /// use dsa_model::config::{DeepSeekV32Config, RopeScaling, YarnConfig};
    ///
    /// let mut cfg = DeepSeekV32Config::tiny(1024);
    /// assert!(cfg.yarn().is_none());
    /// cfg.rope_scaling = Some(RopeScaling::Yarn(YarnConfig { factor: 4.0,
    ///     original_max_position_embeddings: 512, beta_fast: 32.0, beta_slow: 1.0,
    ///     mscale: 1.0, mscale_all_dim: Some(1.0) }));
    /// assert_eq!(cfg.yarn().map(|y| y.factor), Some(4.0)); // 2048 > 512
    /// ```
    pub fn yarn(&self) -> Option<&YarnConfig> {
        match &self.rope_scaling {
            Some(RopeScaling::Yarn(yarn))
                if self.max_position_embeddings > yarn.original_max_position_embeddings =>
            {
                Some(yarn)
            }
            _ => None,
        }
    }

    /// The attention softmax scale `qk_head_dim^-0.5 · m²`, with `m` the YaRN attention
    /// factor when YaRN applies, else 1 (see [`DsaAttentionConfig::softmax_scale`]).
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::tiny(1024); // qk_head_dim 96, no YaRN
    /// assert!((cfg.softmax_scale() - 96f64.powf(-0.5)).abs() < 1e-12);
    /// ```
    pub fn softmax_scale(&self) -> f64 {
        self.attention().softmax_scale()
    }

    /// The [`DsaAttentionConfig`] of every layer (sparse mode; the indexer quantises with
    /// [`DeepSeekV32Config::index_scale_fmt`]).
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::tiny(1024);
    /// assert_eq!(cfg.attention().num_attention_heads, cfg.num_attention_heads);
    /// ```
    pub fn attention(&self) -> DsaAttentionConfig {
        DsaAttentionConfig::new(self.hidden_size, self.num_attention_heads, self.max_position_embeddings)
            .with_rope_theta(self.rope_theta)
            .with_yarn(self.yarn().cloned())
            .with_q_lora_rank(self.q_lora_rank)
            .with_kv_lora_rank(self.kv_lora_rank)
            .with_qk_nope_head_dim(self.qk_nope_head_dim)
            .with_qk_rope_head_dim(self.qk_rope_head_dim)
            .with_v_head_dim(self.v_head_dim)
            .with_index_n_heads(self.index_n_heads)
            .with_index_head_dim(self.index_head_dim)
            .with_index_topk(self.index_topk)
            .with_index_quant(match self.index_scale_fmt() {
                ScaleFmt::Float => IndexerQuant::E4m3,
                ScaleFmt::Ue8m0 => IndexerQuant::E4m3Pow2,
            })
            .with_indexer_rope_interleave(self.indexer_rope_interleave)
            .with_rms_norm_eps(self.rms_norm_eps)
    }

    /// The [`DsaAttentionConfig`] of layer `layer` ([`DeepSeekV32Config::attention`]; a
    /// shared layer of [`DeepSeekV32Config::indexer_types`] has no indexer).
    pub fn layer_attention(&self, layer: usize) -> DsaAttentionConfig {
        self.attention().with_shared_indexer(self.is_shared_indexer(layer))
    }

    /// The blocks with an indexer of their own (all `num_hidden_layers` but the shared ones
    /// of [`DeepSeekV32Config::indexer_types`]); only they cache indexer keys.
    pub fn indexer_layers(&self) -> usize {
        (0..self.num_hidden_layers).filter(|&l| !self.is_shared_indexer(l)).count()
    }

    /// Whether layer `layer` is a shared layer of [`DeepSeekV32Config::indexer_types`]
    /// (no indexer; false for MTP layers and layers past the list).
    pub fn is_shared_indexer(&self, layer: usize) -> bool {
        self.indexer_types.get(layer) == Some(&IndexerType::Shared)
    }

    /// The layer whose indexer's top-k layer `layer` attends to: the latest full layer of
    /// [`DeepSeekV32Config::indexer_types`] at or before it (`layer` itself when full).
    pub fn indexer_source(&self, layer: usize) -> usize {
        (0..=layer).rev().find(|&l| !self.is_shared_indexer(l)).unwrap_or(0)
    }

    /// Whether layer `layer` has a MoE feed-forward (else a dense MLP).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.n_routed_experts > 0
            && layer >= self.first_k_dense_replace
            && layer.is_multiple_of(self.moe_layer_freq.max(1))
    }

    /// Format of the scales with which the indexer quantises its queries and keys: the
    /// explicit `scale_fmt`, else `quantization_config.scale_fmt`, else plain float.
    pub fn index_scale_fmt(&self) -> ScaleFmt {
        self.scale_fmt
            .or_else(|| self.quantization_config.as_ref().and_then(|q| q.scale_fmt))
            .unwrap_or(ScaleFmt::Float)
    }

    /// Block size of FP8 weight scales, when the weights are quantised.
    pub fn weight_block_size(&self) -> Option<[usize; 2]> {
        self.quantization_config
            .as_ref()
            .map(|q| q.weight_block_size)
    }

    /// Decode-cache bytes per token over all layers: the MLA latent
    /// (`kv_lora_rank + qk_rope_head_dim` values of `latent_elem_bytes` each) plus the
    /// indexer key cache (`index_head_dim` FP8 bytes and one f32 scale per
    /// [`INDEX_QUANT_BLOCK`] dims).
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let cfg = DeepSeekV32Config::tiny(1024); // 4 layers, latent 128 + 32, index dim 128
    /// assert_eq!(cfg.kv_cache_bytes_per_token(2), 4 * (160 * 2 + 128 + 4));
    /// ```
    pub fn kv_cache_bytes_per_token(&self, latent_elem_bytes: usize) -> usize {
        let latent = (self.kv_lora_rank + self.qk_rope_head_dim) * latent_elem_bytes;
        let index_keys = self.index_head_dim + 4 * self.index_head_dim.div_ceil(INDEX_QUANT_BLOCK);
        self.num_hidden_layers * latent + self.indexer_layers() * index_keys
    }

    /// Parameters of the model without the MTP layer: all of them, and those a token
    /// activates (its `num_experts_per_tok` routed experts instead of all of them). FP8
    /// block scales are not counted.
    ///
    /// ```
    /// use dsa_model::config::DeepSeekV32Config;
    ///
    /// let p = DeepSeekV32Config::deepseek_v32().parameter_count();
    /// assert_eq!(p.total / 1_000_000_000, 671);
    /// // DeepSeek's "37B activated" leaves out the 0.9B embedding.
    /// assert_eq!(p.active / 1_000_000_000, 38);
    /// ```
    pub fn parameter_count(&self) -> ParameterCount {
        let (total, active) = self.parameter_counts();
        let size = |n: u128| usize::try_from(n).unwrap_or(usize::MAX);
        ParameterCount { total: size(total), active: size(active) }
    }

    /// (total, active) parameters in saturating `u128` arithmetic, so that no size
    /// overflows ([`DeepSeekV32Config::validate`] bounds them by [`MAX_PARAMETERS`]).
    fn parameter_counts(&self) -> (u128, u128) {
        let n = |v: usize| v as u128;
        let mul = |factors: &[u128]| factors.iter().fold(1u128, |p, &f| p.saturating_mul(f));
        let sum = |terms: &[u128]| terms.iter().fold(0u128, |s, &t| s.saturating_add(t));
        let (d, h) = (n(self.hidden_size), n(self.num_attention_heads));
        let (ql, kvl, rope) = (n(self.q_lora_rank), n(self.kv_lora_rank), n(self.qk_rope_head_dim));
        let (ih, id) = (n(self.index_n_heads), n(self.index_head_dim));
        let (nope, v) = (n(self.qk_nope_head_dim), n(self.v_head_dim));
        let attention = sum(&[
            mul(&[d, ql]),
            ql,
            mul(&[ql, h, nope.saturating_add(rope)]),
            mul(&[d, kvl.saturating_add(rope)]),
            kvl,
            mul(&[kvl, h, nope.saturating_add(v)]),
            mul(&[h, v, d]),
        ]);
        // Shared layers (`indexer_types`) have no indexer.
        let indexer = sum(&[mul(&[ql, ih, id]), mul(&[d, id]), mul(&[2, id]), mul(&[d, ih])]);
        let swiglu = |hidden: u128| mul(&[3, d, hidden]);
        let experts = n(self.n_routed_experts);
        let moe_fixed = sum(&[
            mul(&[experts, d]),
            if self.topk_method == TopkMethod::NoauxTc { experts } else { 0 },
            swiglu(mul(&[n(self.n_shared_experts), n(self.moe_intermediate_size)])),
        ]);
        let expert = swiglu(n(self.moe_intermediate_size));
        let embed = mul(&[n(self.vocab_size), d]);
        let head = if self.tie_word_embeddings { 0 } else { embed };
        let common = sum(&[mul(&[2, d]), attention]);
        // Layers `first_k_dense_replace..` at multiples of `moe_layer_freq` (is_moe_layer).
        let freq = n(self.moe_layer_freq.max(1));
        let multiples_below = |x: u128| x.div_ceil(freq);
        let layers = n(self.num_hidden_layers);
        let moe_layers = match experts {
            0 => 0,
            _ => multiples_below(layers).saturating_sub(multiples_below(n(self.first_k_dense_replace).min(layers))),
        };
        let dense_layers = n(self.num_hidden_layers).saturating_sub(moe_layers);
        let dense = swiglu(n(self.intermediate_size));
        let base = sum(&[
            embed,
            head,
            d,
            mul(&[n(self.num_hidden_layers), common]),
            mul(&[n(self.indexer_layers()), indexer]),
            mul(&[dense_layers, dense]),
        ]);
        let total = sum(&[base, mul(&[moe_layers, sum(&[moe_fixed, mul(&[experts, expert])])])]);
        let active = sum(&[base, mul(&[moe_layers, sum(&[moe_fixed, mul(&[n(self.num_experts_per_tok), expert])])])]);
        (total, active)
    }

    /// Every size field with its value (checked against [`MAX_SIZE`]).
    fn sizes(&self) -> [(&'static str, usize); 24] {
        [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("moe_intermediate_size", self.moe_intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_nextn_predict_layers", self.num_nextn_predict_layers),
            ("first_k_dense_replace", self.first_k_dense_replace),
            ("moe_layer_freq", self.moe_layer_freq),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("n_routed_experts", self.n_routed_experts),
            ("n_shared_experts", self.n_shared_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("n_group", self.n_group),
            ("topk_group", self.topk_group),
            ("q_lora_rank", self.q_lora_rank),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("index_n_heads", self.index_n_heads),
            ("index_head_dim", self.index_head_dim),
            ("index_topk", self.index_topk),
        ]
    }
}

impl Serialize for DeepSeekV32Config {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The derived (`remote = "Self"`) serializer: the HuggingFace spelling.
        DeepSeekV32Config::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for DeepSeekV32Config {
    /// Reads either spelling and validates, as [`DeepSeekV32Config::from_json_value`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_json_value(&Value::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// A config in the spelling of the reference `ModelArgs` (DeepSeek's `inference/model.py`),
/// whose defaults fill the absent fields, plus the GLM-5 indexer flag.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ModelArgs {
    #[serde(rename = "max_batch_size")]
    _max_batch_size: IgnoredAny,
    max_seq_len: usize,
    dtype: Dtype,
    scale_fmt: Option<ScaleFmt>,
    vocab_size: usize,
    dim: usize,
    inter_dim: usize,
    moe_inter_dim: usize,
    n_layers: usize,
    n_dense_layers: usize,
    n_heads: usize,
    n_routed_experts: usize,
    n_shared_experts: usize,
    n_activated_experts: usize,
    n_expert_groups: usize,
    n_limited_groups: usize,
    score_func: ScoringFunc,
    route_scale: f64,
    q_lora_rank: usize,
    kv_lora_rank: usize,
    qk_nope_head_dim: usize,
    qk_rope_head_dim: usize,
    v_head_dim: usize,
    original_seq_len: usize,
    rope_theta: f64,
    rope_factor: f64,
    beta_fast: f64,
    beta_slow: f64,
    mscale: f64,
    index_n_heads: usize,
    index_head_dim: usize,
    index_topk: usize,
    indexer_rope_interleave: bool,
}

/// The reference's weight dtype.
#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    #[default]
    Bf16,
    Fp8,
}

impl Default for ModelArgs {
    fn default() -> Self {
        Self {
            _max_batch_size: IgnoredAny,
            max_seq_len: 4096 * 4,
            dtype: Dtype::Bf16,
            scale_fmt: None,
            vocab_size: 102400,
            dim: 2048,
            inter_dim: 10944,
            moe_inter_dim: 1408,
            n_layers: 27,
            n_dense_layers: 1,
            n_heads: 16,
            n_routed_experts: 64,
            n_shared_experts: 2,
            n_activated_experts: 6,
            n_expert_groups: 1,
            n_limited_groups: 1,
            score_func: ScoringFunc::Softmax,
            route_scale: 1.0,
            q_lora_rank: 0,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            original_seq_len: 4096,
            rope_theta: 10000.0,
            rope_factor: 40.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            index_n_heads: 64,
            index_head_dim: 128,
            index_topk: 2048,
            indexer_rope_interleave: false,
        }
    }
}

impl From<ModelArgs> for DeepSeekV32Config {
    fn from(a: ModelArgs) -> Self {
        let fp8 = a.dtype == Dtype::Fp8;
        Self {
            architectures: Vec::new(),
            model_type: ModelType::DeepseekV32,
            vocab_size: a.vocab_size,
            hidden_size: a.dim,
            intermediate_size: a.inter_dim,
            moe_intermediate_size: a.moe_inter_dim,
            num_hidden_layers: a.n_layers,
            // The reference's ModelArgs has no MTP layer.
            num_nextn_predict_layers: 0,
            first_k_dense_replace: a.n_dense_layers,
            moe_layer_freq: 1,
            num_attention_heads: a.n_heads,
            num_key_value_heads: a.n_heads,
            n_routed_experts: a.n_routed_experts,
            n_shared_experts: a.n_shared_experts,
            num_experts_per_tok: a.n_activated_experts,
            n_group: a.n_expert_groups,
            topk_group: a.n_limited_groups,
            scoring_func: a.score_func,
            // DeepSeek-V3.2 checkpoints carry `e_score_correction_bias` (noaux_tc); the
            // reference renormalises the chosen weights only for sigmoid scores.
            topk_method: TopkMethod::NoauxTc,
            norm_topk_prob: a.score_func == ScoringFunc::Sigmoid,
            routed_scaling_factor: a.route_scale,
            q_lora_rank: a.q_lora_rank,
            kv_lora_rank: a.kv_lora_rank,
            qk_nope_head_dim: a.qk_nope_head_dim,
            qk_rope_head_dim: a.qk_rope_head_dim,
            v_head_dim: a.v_head_dim,
            hidden_act: Activation::Silu,
            rms_norm_eps: default_rms_norm_eps(),
            max_position_embeddings: a.max_seq_len,
            rope_theta: a.rope_theta,
            rope_scaling: Some(RopeScaling::Yarn(YarnConfig {
                factor: a.rope_factor,
                original_max_position_embeddings: a.original_seq_len,
                beta_fast: a.beta_fast,
                beta_slow: a.beta_slow,
                mscale: a.mscale,
                mscale_all_dim: Some(a.mscale),
            })),
            rope_interleave: true,
            index_n_heads: a.index_n_heads,
            index_head_dim: a.index_head_dim,
            index_topk: a.index_topk,
            indexer_rope_interleave: a.indexer_rope_interleave,
            indexer_types: Vec::new(),
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_id: Vec::new(),
            torch_dtype: None,
            quantization_config: fp8.then(|| QuantizationConfig {
                quant_method: "fp8".into(),
                fmt: default_fmt(),
                activation_scheme: Some("dynamic".into()),
                weight_block_size: default_block_size(),
                scale_fmt: a.scale_fmt,
            }),
            scale_fmt: if fp8 { None } else { a.scale_fmt },
        }
    }
}

/// GLM's schedules of shared indexer layers, turned into `indexer_types` where a config
/// leaves that field out (transformers' `GlmMoeDsaConfig`): `index_topk_pattern`, one
/// letter per layer (`F` full, `S` shared) or a list of `indexer_types` names; else, when
/// `index_topk_freq` is given, layer `i` is full where `max(i − offset + 1, 0)` is a
/// multiple of the frequency, with `offset` = `index_skip_topk_offset` (2 when absent). The
/// schedule's fields are removed.
fn derive_indexer_types(map: &mut Map<String, Value>) -> Result<(), ConfigError> {
    let pattern = map.remove("index_topk_pattern").filter(|v| !v.is_null());
    let freq = map.remove("index_topk_freq").filter(|v| !v.is_null());
    let offset = map.remove("index_skip_topk_offset").filter(|v| !v.is_null());
    if map.get("indexer_types").is_some_and(|v| !v.is_null()) {
        return Ok(());
    }
    let types: Vec<Value> = match (pattern, freq) {
        (Some(Value::String(letters)), _) => letters
            .chars()
            .map(|c| match c {
                'F' => Ok("full".into()),
                'S' => Ok("shared".into()),
                other => Err(ConfigError::invalid("index_topk_pattern", format!("has {other:?}; the letters are F (full) and S (shared)"))),
            })
            .collect::<Result<_, _>>()?,
        (Some(Value::Array(names)), _) => names,
        (Some(_), _) => return Err(ConfigError::invalid("index_topk_pattern", "must be a string of F and S or a list")),
        (None, Some(freq)) => {
            let number = |field: &str, v: &Value| v.as_u64().ok_or_else(|| ConfigError::invalid(field, "must be a non-negative integer"));
            let freq = number("index_topk_freq", &freq)?.max(1);
            let offset = offset.as_ref().map_or(Ok(2), |v| number("index_skip_topk_offset", v))?;
            let layers = map.get("num_hidden_layers").and_then(Value::as_u64).unwrap_or(0).min(MAX_SIZE as u64);
            (0..layers)
                .map(|i| if (i + 1).saturating_sub(offset).is_multiple_of(freq) { "full" } else { "shared" }.into())
                .collect()
        }
        (None, None) => return Ok(()),
    };
    map.insert("indexer_types".into(), Value::Array(types));
    Ok(())
}

fn validate_yarn(yarn: &YarnConfig) -> Result<(), ConfigError> {
    if !(yarn.factor.is_finite() && yarn.factor >= 1.0) {
        return Err(ConfigError::invalid(
            "rope_scaling.factor",
            format!("{} must be a number >= 1", yarn.factor),
        ));
    }
    if yarn.original_max_position_embeddings == 0 {
        return Err(ConfigError::invalid(
            "rope_scaling.original_max_position_embeddings",
            "must be positive",
        ));
    }
    positive_numbers([("rope_scaling.beta_fast", yarn.beta_fast), ("rope_scaling.beta_slow", yarn.beta_slow)])?;
    if yarn.beta_fast < yarn.beta_slow {
        return Err(ConfigError::invalid(
            "rope_scaling.beta_fast",
            format!("{} is below beta_slow = {}", yarn.beta_fast, yarn.beta_slow),
        ));
    }
    for (field, value) in [
        ("rope_scaling.mscale", Some(yarn.mscale)),
        ("rope_scaling.mscale_all_dim", yarn.mscale_all_dim),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(ConfigError::invalid(field, "is not a finite number"));
        }
    }
    Ok(())
}

/// Fails on the first field whose value is zero, with `reason`.
fn nonzero<'a>(fields: impl IntoIterator<Item = (&'a str, usize)>, reason: &str) -> Result<(), ConfigError> {
    match fields.into_iter().find(|&(_, value)| value == 0) {
        Some((field, _)) => Err(ConfigError::invalid(field, reason)),
        None => Ok(()),
    }
}

/// Fails on the first field whose value is not a finite positive number.
fn positive_numbers<const N: usize>(fields: [(&str, f64); N]) -> Result<(), ConfigError> {
    match fields.into_iter().find(|&(_, value)| !(value.is_finite() && value > 0.0)) {
        Some((field, value)) => Err(ConfigError::invalid(field, format!("{value} is not a positive number"))),
        None => Ok(()),
    }
}

/// Removes the `null` members of `map` and of the objects within it: `null` counts as absent.
fn strip_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for v in map.values_mut() {
        if let Value::Object(inner) = v {
            strip_nulls(inner);
        }
    }
}

/// The [`ConfigError`] of a serde error at `path`: [`ConfigError::Missing`] for a missing
/// field (named under `path`), else [`ConfigError::Invalid`] naming `path`.
fn field_error(path: &serde_path_to_error::Path, err: &serde_json::Error) -> ConfigError {
    let reason = err.to_string();
    let path = path.to_string();
    if let Some(name) = reason.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`')) {
        let field = if path == "." { name.to_owned() } else { format!("{path}.{name}") };
        return ConfigError::Missing { field };
    }
    // Serde names the Rust types; say what the JSON must hold.
    let mut reason = reason
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected f64", "expected a number");
    if let Some(at) = reason.find("expected struct ") {
        reason.replace_range(at.., "expected an object");
    }
    ConfigError::invalid(path, reason)
}

/// Reads the object `value` of field `field` as a `T`; errors name the field inside it
/// (`field.key`).
fn nested<'a, T: Deserialize<'a>>(field: &str, value: &'a Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { field.to_owned() } else { format!("{field}.{inner}") };
        match field_error(e.path(), e.inner()) {
            ConfigError::Missing { field: name } => ConfigError::Missing { field: format!("{field}.{name}") },
            ConfigError::Invalid { reason, .. } => ConfigError::invalid(path, reason),
            other => other,
        }
    })
}

/// Reads one token id or a list of them.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a token id or a list of token ids")]
    enum OneOrMany {
        One(u64),
        Many(Vec<u64>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(id) => vec![id],
        OneOrMany::Many(ids) => ids,
    })
}

/// Reads a string that must be `expected`.
fn only<'de, D: Deserializer<'de>>(deserializer: D, expected: &str) -> Result<String, D::Error> {
    let value = String::deserialize(deserializer)?;
    if value == expected {
        Ok(value)
    } else {
        Err(D::Error::custom(format!("unsupported value `{value}` (supported: {expected})")))
    }
}

fn fp8<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    only(deserializer, "fp8")
}

fn e4m3<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    only(deserializer, "e4m3")
}

fn default_fmt() -> String {
    "e4m3".into()
}

/// Reads `[rows, cols]`.
fn block_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[usize; 2], D::Error> {
    let block = Vec::<usize>::deserialize(deserializer)?;
    block.try_into().map_err(|b: Vec<usize>| {
        D::Error::custom(format!("expected [rows, cols], found {} numbers", b.len()))
    })
}

fn default_block_size() -> [usize; 2] {
    [128, 128]
}

fn one<T: From<u8>>() -> T {
    T::from(1)
}

fn yes() -> bool {
    true
}

fn default_beta_fast() -> f64 {
    32.0
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::conformance_cases;

    /// Writes `cfg` under the reference repository's field names.
    fn to_reference_json(cfg: &DeepSeekV32Config) -> Value {
        let yarn = match &cfg.rope_scaling {
            Some(RopeScaling::Yarn(y)) => y.clone(),
            None => panic!("the conformance configs use YaRN"),
        };
        let quant = cfg.quantization_config.as_ref();
        let mut v = serde_json::json!({
            "max_seq_len": cfg.max_position_embeddings,
            "dtype": if quant.is_some() { "fp8" } else { "bf16" },
            "vocab_size": cfg.vocab_size,
            "dim": cfg.hidden_size,
            "inter_dim": cfg.intermediate_size,
            "moe_inter_dim": cfg.moe_intermediate_size,
            "n_layers": cfg.num_hidden_layers,
            "n_dense_layers": cfg.first_k_dense_replace,
            "n_heads": cfg.num_attention_heads,
            "n_routed_experts": cfg.n_routed_experts,
            "n_shared_experts": cfg.n_shared_experts,
            "n_activated_experts": cfg.num_experts_per_tok,
            "n_expert_groups": cfg.n_group,
            "n_limited_groups": cfg.topk_group,
            "route_scale": cfg.routed_scaling_factor,
            "score_func": cfg.scoring_func,
            "q_lora_rank": cfg.q_lora_rank,
            "kv_lora_rank": cfg.kv_lora_rank,
            "qk_nope_head_dim": cfg.qk_nope_head_dim,
            "qk_rope_head_dim": cfg.qk_rope_head_dim,
            "v_head_dim": cfg.v_head_dim,
            "original_seq_len": yarn.original_max_position_embeddings,
            "rope_theta": cfg.rope_theta,
            "rope_factor": yarn.factor,
            "beta_fast": yarn.beta_fast,
            "beta_slow": yarn.beta_slow,
            "mscale": yarn.attention_mscale(),
            "index_n_heads": cfg.index_n_heads,
            "index_head_dim": cfg.index_head_dim,
            "index_topk": cfg.index_topk,
        });
        if let Some(fmt) = quant.and_then(|q| q.scale_fmt) {
            v["scale_fmt"] = serde_json::to_value(fmt).expect("serialisable");
        }
        v
    }

    #[test]
    fn conformance_configs_parse_and_match_their_reference_spelling() {
        for case in conformance_cases() {
            let path = case.join("config.json");
            let hf = DeepSeekV32Config::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if hf.model_type == ModelType::GlmMoeDsa {
                // GLM-5-style cases (tests/cases/glm5-style) have no reference spelling.
                assert!(hf.indexer_rope_interleave, "{}", path.display());
                continue;
            }
            assert_eq!(hf.model_type, ModelType::DeepseekV32);
            assert_eq!(hf.qk_head_dim(), hf.qk_nope_head_dim + hf.qk_rope_head_dim);
            assert!(!hf.indexer_rope_interleave);
            let yarn = hf
                .yarn()
                .expect("max_position_embeddings > original: YaRN applies");
            let m = 0.1 * yarn.attention_mscale() * yarn.factor.ln() + 1.0;
            let expected = (hf.qk_head_dim() as f64).powf(-0.5) * m * m;
            assert!((hf.softmax_scale() - expected).abs() < 1e-15);
            assert!(!hf.is_moe_layer(0));
            assert!((hf.first_k_dense_replace..hf.num_hidden_layers).all(|i| hf.is_moe_layer(i)));
            if let Some(q) = &hf.quantization_config {
                assert_eq!(q.weight_block_size, [128, 128]);
                assert_eq!(hf.index_scale_fmt(), q.scale_fmt.unwrap_or(ScaleFmt::Float));
            } else {
                assert_eq!(hf.index_scale_fmt(), ScaleFmt::Float);
            }

            let reference = to_reference_json(&hf);
            let mut from_ref = DeepSeekV32Config::from_json_value(&reference)
                .unwrap_or_else(|e| panic!("{}: reference spelling: {e}", path.display()));
            // Metadata that the reference spelling does not carry.
            from_ref.architectures = hf.architectures.clone();
            from_ref.bos_token_id = hf.bos_token_id;
            from_ref.eos_token_id = hf.eos_token_id.clone();
            from_ref.torch_dtype = hf.torch_dtype.clone();
            if let (Some(a), Some(b)) = (&mut from_ref.quantization_config, &hf.quantization_config)
            {
                a.activation_scheme = b.activation_scheme.clone();
            }
            assert_eq!(from_ref, hf, "{}", path.display());

            // Serialising gives back the same configuration (HF spelling).
            let json = serde_json::to_string(&hf).expect("serialisable");
            let back: DeepSeekV32Config = serde_json::from_str(&json).expect("round trip");
            assert_eq!(back, hf);
        }
    }

    /// inference/config_671B_v3.2.json of deepseek-ai/DeepSeek-V3.2-Exp.
    const REFERENCE_671B: &str = r#"{
            "vocab_size": 129280, "dim": 7168, "inter_dim": 18432, "moe_inter_dim": 2048,
        "n_layers": 61, "n_dense_layers": 3, "n_heads": 128, "n_routed_experts": 256,
        "n_shared_experts": 1, "n_activated_experts": 8, "n_expert_groups": 8,
        "n_limited_groups": 4, "route_scale": 2.5, "score_func": "sigmoid",
        "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "dtype": "fp8", "scale_fmt": "ue8m0",
        "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048 }"#;

    #[test]
    fn reference_671b_config_uses_model_args_defaults() {
        let cfg = DeepSeekV32Config::from_json_str(REFERENCE_671B).expect("valid");
        assert_eq!(cfg.num_hidden_layers, 61);
        assert_eq!(cfg.first_k_dense_replace, 3);
        assert!(!cfg.is_moe_layer(2) && cfg.is_moe_layer(3) && cfg.is_moe_layer(60));
        assert_eq!(cfg.max_position_embeddings, 16384);
        assert_eq!(cfg.index_scale_fmt(), ScaleFmt::Ue8m0);
        assert_eq!(cfg.weight_block_size(), Some([128, 128]));
        assert!(cfg.norm_topk_prob);
        let yarn = cfg.yarn().expect("16384 > 4096");
        assert_eq!(
            (
                yarn.factor,
                yarn.original_max_position_embeddings,
                yarn.beta_fast,
                yarn.beta_slow
            ),
            (40.0, 4096, 32.0, 1.0)
        );
        let m = 0.1 * 40f64.ln() + 1.0;
        assert!((cfg.softmax_scale() - 192f64.powf(-0.5) * m * m).abs() < 1e-15);
        // bf16 latent (576 values) + 128 FP8 bytes + one f32 scale, 61 layers.
        assert_eq!(cfg.kv_cache_bytes_per_token(2), 61 * (576 * 2 + 128 + 4));
    }

    #[test]
    fn full_size_spellings_agree() {
        // HF-style, modelled on DeepSeek-V3.2-Exp's config.json (extra HF keys included).
        let hf = r#"{
            "architectures": ["DeepseekV32ForCausalLM"], "attention_bias": false,
            "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
            "hidden_act": "silu", "hidden_size": 7168, "index_head_dim": 128,
            "index_n_heads": 64, "index_topk": 2048, "initializer_range": 0.02,
            "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840,
            "model_type": "deepseek_v32", "moe_intermediate_size": 2048, "moe_layer_freq": 1,
            "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true,
            "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61,
            "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "q_lora_rank": 1536,
            "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
            "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                "quant_method": "fp8", "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
            "rms_norm_eps": 1e-06,
            "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
            "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
            "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
            "torch_dtype": "bfloat16", "use_cache": true, "v_head_dim": 128,
            "vocab_size": 129280 }"#;
        let hf = DeepSeekV32Config::from_json_str(hf).expect("valid HF config");
        assert_eq!(hf, DeepSeekV32Config::deepseek_v32());
        let mut reference: Value = serde_json::from_str(REFERENCE_671B).expect("JSON");
        reference["max_seq_len"] = 163840.into();
        let mut reference = DeepSeekV32Config::from_json_value(&reference).expect("valid");
        reference.architectures = hf.architectures.clone();
        reference.bos_token_id = hf.bos_token_id;
        reference.eos_token_id = hf.eos_token_id.clone();
        reference.torch_dtype = hf.torch_dtype.clone();
        reference.num_nextn_predict_layers = hf.num_nextn_predict_layers;
        assert_eq!(reference, hf);
    }

    #[test]
    fn yarn_needs_a_longer_context_and_falls_back_to_mscale() {
        let mut cfg = DeepSeekV32Config::tiny(100);
        cfg.rope_scaling = Some(RopeScaling::Yarn(YarnConfig {
            factor: 4.0,
            original_max_position_embeddings: 2048,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 0.7,
            mscale_all_dim: None,
        }));
        assert!(cfg.yarn().is_none(), "2048 is not above 2048");
        assert_eq!(cfg.softmax_scale(), 96f64.powf(-0.5));
        cfg.max_position_embeddings = 8192;
        let m = 0.1 * 0.7 * 4f64.ln() + 1.0;
        assert!((cfg.softmax_scale() - 96f64.powf(-0.5) * m * m).abs() < 1e-15);
    }

    #[test]
    fn glm_style_interleave_flag_is_read() {
        let mut v = serde_json::to_value(DeepSeekV32Config::tiny(64)).expect("serialisable");
        v["indexer_rope_interleave"] = Value::Bool(true);
        assert!(
            DeepSeekV32Config::from_json_value(&v)
                .expect("valid")
                .indexer_rope_interleave
        );
    }

    /// GLM-5's `config.json` (zai-org/GLM-5, as transformers 5 wrote it; its field names and
    /// values also in transformers' `GlmMoeDsaConfig` and vLLM's GLM-5 test checkpoints),
    /// with the keys our config ignores (`attention_bias`, `head_dim`, `qk_head_dim`,
    /// `pad_token_id`, ...).
    const GLM5_CONFIG: &str = r#"{
        "architectures": ["GlmMoeDsaForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "dtype": "bfloat16", "eos_token_id": [154820, 154827, 154829],
        "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "head_dim": 64,
        "hidden_size": 6144, "index_head_dim": 128, "index_n_heads": 32, "index_topk": 2048,
        "indexer_rope_interleave": true, "initializer_range": 0.02, "intermediate_size": 12288,
        "kv_lora_rank": 512, "max_position_embeddings": 202752, "moe_intermediate_size": 2048,
        "moe_layer_freq": 1, "model_type": "glm_moe_dsa", "n_group": 1, "n_routed_experts": 256,
        "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 64,
        "num_experts_per_tok": 8, "num_hidden_layers": 78, "num_key_value_heads": 64,
        "num_nextn_predict_layers": 1, "pad_token_id": 154820, "pretraining_tp": 1,
        "q_lora_rank": 2048, "qk_head_dim": 256, "qk_nope_head_dim": 192, "qk_rope_head_dim": 64,
        "rms_norm_eps": 1e-05, "rope_interleave": true,
        "rope_parameters": {"rope_theta": 1000000, "rope_type": "default"},
        "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "tie_word_embeddings": false,
        "topk_group": 1, "topk_method": "noaux_tc", "transformers_version": "5.0.2.dev0",
        "use_cache": true, "v_head_dim": 256, "vocab_size": 154880 }"#;

    #[test]
    fn glm5_config_reads_with_its_own_field_names() {
        let cfg = DeepSeekV32Config::from_json_str(GLM5_CONFIG).expect("valid GLM-5 config");
        assert_eq!(cfg, DeepSeekV32Config::glm5());
        assert_eq!(cfg.model_type, ModelType::GlmMoeDsa);
        assert!(cfg.indexer_rope_interleave && cfg.rope_interleave);
        assert_eq!((cfg.rope_theta, cfg.yarn()), (1e6, None));
        assert_eq!(cfg.eos_token_id, [154820, 154827, 154829]);
        assert_eq!(cfg.torch_dtype.as_deref(), Some("bfloat16"));
        let mut both: Value = serde_json::from_str(GLM5_CONFIG).expect("JSON");
        both["torch_dtype"] = "float32".into();
        assert_eq!(DeepSeekV32Config::from_json_value(&both).expect("valid").torch_dtype.as_deref(), Some("bfloat16"));
        assert_eq!((cfg.num_nextn_predict_layers, cfg.rms_norm_eps), (1, 1e-5));
        assert_eq!((cfg.n_group, cfg.topk_group, cfg.qk_head_dim()), (1, 1, 256));
        assert!(!cfg.is_moe_layer(2) && cfg.is_moe_layer(3) && cfg.is_moe_layer(77));
        assert!(cfg.attention().indexer_rope_interleave);
        // zai-org's model card: 744B parameters, 40B active (ours counts the 0.95B embedding).
        let p = cfg.parameter_count();
        assert_eq!((p.total / 1_000_000_000, p.active / 1_000_000_000), (743, 41));
        assert_eq!(cfg.softmax_scale(), 256f64.powf(-0.5));
        // It serialises in our (legacy HF) spelling and reads back the same.
        let back = DeepSeekV32Config::from_json_str(&serde_json::to_string(&cfg).expect("serialisable")).expect("valid");
        assert_eq!(back, cfg);
    }

    #[test]
    fn the_family_sets_the_indexer_rope_default() {
        let glm: Value = serde_json::from_str(GLM5_CONFIG).expect("JSON");
        let without_flag = |model_type: &str| {
            let mut v = glm.clone();
            v.as_object_mut().expect("object").remove("indexer_rope_interleave");
            v["model_type"] = model_type.into();
            DeepSeekV32Config::from_json_value(&v).expect("valid")
        };
        assert!(without_flag("glm_moe_dsa").indexer_rope_interleave);
        let deepseek = without_flag("deepseek_v32");
        assert!(!deepseek.indexer_rope_interleave);
        assert_eq!(deepseek.model_type, ModelType::DeepseekV32);
        // An explicit flag wins over the family's default.
        let mut v = glm.clone();
        v["indexer_rope_interleave"] = false.into();
        assert!(!DeepSeekV32Config::from_json_value(&v).expect("valid").indexer_rope_interleave);
    }

    #[test]
    fn rope_parameters_read_like_rope_theta_and_rope_scaling() {
        // DeepSeek-V3.2's YaRN written as transformers 5 writes it.
        let mut v = serde_json::to_value(DeepSeekV32Config::deepseek_v32()).expect("serialisable");
        let mut rope = v["rope_scaling"].clone();
        rope.as_object_mut().expect("object").remove("type");
        rope["rope_type"] = "yarn".into();
        rope["rope_theta"] = 10000.into();
        let map = v.as_object_mut().expect("object");
        map.remove("rope_scaling");
        map.remove("rope_theta");
        v["rope_parameters"] = rope.clone();
        assert_eq!(DeepSeekV32Config::from_json_value(&v).expect("valid"), DeepSeekV32Config::deepseek_v32());
        // Beside the legacy fields they must agree.
        v["rope_theta"] = 10000.into();
        DeepSeekV32Config::from_json_value(&v).expect("the same base");
        v["rope_theta"] = 20000.into();
        let e = DeepSeekV32Config::from_json_value(&v).unwrap_err();
        assert_names(&e, "rope_parameters.rope_theta", &["10000", "20000"]);
        let e = error_after(|v| v["rope_parameters"] = serde_json::json!({"rope_type": "linear", "factor": 2.0}));
        assert_names(&e, "rope_parameters.rope_type", &["linear", "yarn"]);
        let e = error_after(|v| v["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0}));
        assert_names(&e, "rope_parameters.original_max_position_embeddings", &["missing"]);
        let e = error_after(|v| v["rope_parameters"] = serde_json::json!({"rope_theta": "big", "rope_type": "default"}));
        assert_names(&e, "rope_parameters.rope_theta", &["big"]);
    }

    #[test]
    fn glm5_style_fields_that_are_refused_are_named() {
        let glm: Value = serde_json::from_str(GLM5_CONFIG).expect("JSON");
        let refused = |edit: fn(&mut Value)| {
            let mut v = glm.clone();
            edit(&mut v);
            DeepSeekV32Config::from_json_value(&v).expect_err("must be refused")
        };
        let e = refused(|v| v["model_type"] = "glm4_moe".into());
        assert_names(&e, "model_type", &["glm4_moe", "glm_moe_dsa", "deepseek_v32"]);
        let e = refused(|v| v["rope_interleave"] = false.into());
        assert_names(&e, "rope_interleave", &["not supported"]);
        let e = refused(|v| v["eos_token_id"] = "end".into());
        assert_names(&e, "eos_token_id", &["a token id or a list of token ids"]);
        let e = refused(|v| {
            v.as_object_mut().expect("object").remove("model_type");
        });
        assert_names(&e, "model_type", &["missing"]);
    }

    /// GLM's `indexer_types` (GLM-5.2's 78-layer layout: full at 0, 1, 2 and every 4th layer
    /// from 6, 21 in all) reads as given, and from GLM's schedules where it is absent.
    #[test]
    fn glm_indexer_types_and_schedules_are_read() {
        let mut glm: Value = serde_json::from_str(GLM5_CONFIG).expect("JSON");
        assert!(DeepSeekV32Config::from_json_value(&glm).expect("valid").indexer_types.is_empty());
        glm["num_hidden_layers"] = 78.into();
        let full: Vec<usize> = [0, 1, 2].into_iter().chain((6..78).step_by(4)).collect();
        assert_eq!(full.len(), 21);
        let names: Vec<Value> = (0..78).map(|l| if full.contains(&l) { "full" } else { "shared" }.into()).collect();
        let read = |edit: &dyn Fn(&mut Value)| {
            let mut v = glm.clone();
            edit(&mut v);
            let cfg = DeepSeekV32Config::from_json_value(&v).expect("valid");
            let full_layers: Vec<usize> = (0..78).filter(|&l| !cfg.is_shared_indexer(l)).collect();
            assert_eq!(full_layers, full);
            cfg
        };
        let cfg = read(&|v| v["indexer_types"] = Value::Array(names.clone()));
        assert_eq!(cfg.indexer_types[3], IndexerType::Shared);
        assert_eq!((cfg.indexer_source(2), cfg.indexer_source(5), cfg.indexer_source(6), cfg.indexer_source(77)), (2, 2, 6, 74));
        assert!(!cfg.is_shared_indexer(78), "an MTP layer has its own indexer");
        assert!(cfg.layer_attention(3).shared_indexer && !cfg.layer_attention(6).shared_indexer);
        // Serialised in the same spelling.
        assert_eq!(serde_json::to_value(&cfg).expect("serialisable")["indexer_types"], Value::Array(names.clone()));
        read(&|v| {
            v["index_topk_freq"] = 4.into();
            v["index_skip_topk_offset"] = 3.into();
        });
        let pattern: String = names.iter().map(|n| if n == "full" { 'F' } else { 'S' }).collect();
        read(&|v| v["index_topk_pattern"] = pattern.clone().into());
        // transformers' default offset is 2: full at 0, 1 and every 4th from 5.
        let mut v = glm.clone();
        v["index_topk_freq"] = 4.into();
        let cfg = DeepSeekV32Config::from_json_value(&v).expect("valid");
        assert_eq!((0..10).filter(|&l| !cfg.is_shared_indexer(l)).collect::<Vec<_>>(), [0, 1, 5, 9]);
        // The list wins over a schedule.
        read(&|v| {
            v["indexer_types"] = Value::Array(names.clone());
            v["index_topk_freq"] = 2.into();
        });
    }

    /// Shared layers hold no indexer parameters and cache no indexer keys.
    #[test]
    fn shared_layers_hold_no_indexer_parameters_or_keys() {
        let full = DeepSeekV32Config::glm5();
        let mut shared = full.clone();
        shared.indexer_types = (0..full.num_hidden_layers).map(|l| if l % 4 == 3 { IndexerType::Shared } else { IndexerType::Full }).collect();
        shared.validate().expect("valid");
        let n = full.num_hidden_layers / 4;
        assert_eq!(shared.indexer_layers(), full.num_hidden_layers - n);
        let (ql, ih, id, d) = (full.q_lora_rank, full.index_n_heads, full.index_head_dim, full.hidden_size);
        let indexer = ql * ih * id + d * id + 2 * id + d * ih;
        let (a, b) = (full.parameter_count(), shared.parameter_count());
        assert_eq!((a.total - b.total, a.active - b.active), (n * indexer, n * indexer));
        let key = id + 4 * id.div_ceil(INDEX_QUANT_BLOCK);
        assert_eq!(full.kv_cache_bytes_per_token(2) - shared.kv_cache_bytes_per_token(2), n * key);
        let ours = |cfg| crate::cache::CacheMemory::of(cfg, 2).ours_bytes_per_token;
        assert_eq!(ours(&full) - ours(&shared), n * id * 2);
    }

    #[test]
    fn bad_indexer_types_are_named() {
        let glm: Value = serde_json::from_str(GLM5_CONFIG).expect("JSON");
        let layers = glm["num_hidden_layers"].as_u64().expect("layers") as usize;
        let refused = |edit: &dyn Fn(&mut Value)| {
            let mut v = glm.clone();
            edit(&mut v);
            DeepSeekV32Config::from_json_value(&v).expect_err("must be refused")
        };
        let types = |first: &str| Value::Array(std::iter::once(first.into()).chain(std::iter::repeat_n("full".into(), layers - 1)).collect());
        let e = refused(&|v| v["indexer_types"] = types("shared"));
        assert_names(&e, "indexer_types", &["layer 0", "shared"]);
        let e = refused(&|v| v["indexer_types"] = types("partial"));
        assert_names(&e, "indexer_types[0]", &["partial", "full", "shared"]);
        let e = refused(&|v| v["indexer_types"] = serde_json::json!(["full", "shared"]));
        assert_names(&e, "indexer_types", &["2 entries", &format!("num_hidden_layers = {layers}")]);
        let e = refused(&|v| v["index_topk_pattern"] = "FSX".into());
        assert_names(&e, "index_topk_pattern", &["'X'"]);
        let e = refused(&|v| v["index_topk_freq"] = (-1).into());
        assert_names(&e, "index_topk_freq", &["non-negative"]);
    }

    /// Applies `edit` to the tiny config's HF JSON and returns the parse error.
    fn error_after(edit: impl FnOnce(&mut Value)) -> ConfigError {
        let mut v = serde_json::to_value(DeepSeekV32Config::tiny(64)).expect("serialisable");
        edit(&mut v);
        DeepSeekV32Config::from_json_value(&v).expect_err("must be rejected")
    }

    fn assert_names(err: &ConfigError, field: &str, words: &[&str]) {
        let msg = err.to_string();
        assert_eq!(err.field(), Some(field), "{msg}");
        assert!(msg.contains(&format!("`{field}`")), "{msg}");
        for w in words {
            assert!(msg.contains(w), "`{w}` not in: {msg}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(fn(&mut Value), &str, &[&str]); 14] = [
            (|v| v["model_type"] = "llama".into(), "model_type", &["llama", "deepseek_v32", "glm_moe_dsa"]),
            (|v| v["vocab_size"] = "many".into(), "vocab_size", &["integer", "many"]),
            (|v| v["num_experts_per_tok"] = 9.into(), "num_experts_per_tok", &["n_routed_experts"]),
            (|v| v["topk_group"] = 3.into(), "topk_group", &["n_group"]),
            (|v| v["n_group"] = 3.into(), "n_group", &["divisible"]),
            (|v| v["qk_rope_head_dim"] = 31.into(), "qk_rope_head_dim", &["odd"]),
            (|v| v["qk_rope_head_dim"] = 256.into(), "index_head_dim", &["qk_rope_head_dim"]),
            (|v| v["index_head_dim"] = 96.into(), "index_head_dim", &["power of two"]),
            (|v| v["num_key_value_heads"] = 2.into(), "num_key_value_heads", &["num_attention_heads"]),
            (|v| v["scoring_func"] = "relu".into(), "scoring_func", &["relu", "sigmoid"]),
            (|v| v["topk_method"] = "random".into(), "topk_method", &["random"]),
            (|v| v["hidden_act"] = "gelu".into(), "hidden_act", &["gelu"]),
            (|v| v["first_k_dense_replace"] = 5.into(), "first_k_dense_replace", &["num_hidden_layers"]),
            (|v| v["q_lora_rank"] = Value::Null, "q_lora_rank", &["missing"]),
        ];
        for (edit, field, words) in cases {
            assert_names(&error_after(edit), field, words);
        }
        let e = error_after(|v| {
            v.as_object_mut().expect("object").remove("hidden_size");
            v["model_type"] = "deepseek_v32".into();
        });
        assert_names(&e, "hidden_size", &["missing"]);
        let e = error_after(|v| {
            v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
        });
        assert_names(&e, "rope_scaling.type", &["linear", "yarn"]);
        let e = error_after(|v| {
            v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 0.5,
                "original_max_position_embeddings": 128});
        });
        assert_names(&e, "rope_scaling.factor", &["0.5"]);
        let e = error_after(|v| {
            v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0});
        });
        assert_names(
            &e,
            "rope_scaling.original_max_position_embeddings",
            &["missing"],
        );
        let e = error_after(|v| {
            v["quantization_config"] = serde_json::json!({"quant_method": "fp8",
                "fmt": "e5m2", "weight_block_size": [128, 128]});
        });
        assert_names(&e, "quantization_config.fmt", &["e5m2"]);
        let e = error_after(|v| {
            v["quantization_config"] = serde_json::json!({"quant_method": "fp8",
                "weight_block_size": [128]});
        });
        assert_names(
            &e,
            "quantization_config.weight_block_size",
            &["[rows, cols]"],
        );
        let e = error_after(|v| {
            v["quantization_config"] = serde_json::json!({"quant_method": "fp8",
                "scale_fmt": "e8m0x"});
        });
        assert_names(&e, "quantization_config.scale_fmt", &["e8m0x"]);
    }

    /// Sizes whose products overflow (the parameter count and the cache memory did: a panic
    /// in debug builds, `dsa-cli`'s loader fuzzing feeds such numbers) or that describe an
    /// unbounded number of tensors are refused, naming the field.
    #[test]
    fn oversized_configs_are_refused() {
        let e = error_after(|v| v["hidden_size"] = (MAX_SIZE + 1).into());
        assert_names(&e, "hidden_size", &["16777217 exceeds the largest supported size, 16777216"]);
        let e = error_after(|v| v["q_lora_rank"] = u64::MAX.into());
        assert_names(&e, "q_lora_rank", &["exceeds"]);
        let e = error_after(|v| {
            v["num_hidden_layers"] = 8192.into();
            v["n_routed_experts"] = 256.into();
        });
        assert_names(&e, "n_routed_experts", &["256 experts in each of num_hidden_layers = 8192 layers exceed 1048576 expert MLPs"]);
        let e = error_after(|v| {
            v["vocab_size"] = MAX_SIZE.into();
            v["hidden_size"] = MAX_SIZE.into();
            v["intermediate_size"] = MAX_SIZE.into();
        });
        assert_names(&e, "hidden_size", &["parameters, more than the 1125899906842624 supported"]);
        // The largest accepted sizes leave the derived sizes in range.
        let cfg = DeepSeekV32Config::from_json_value(&{
            let mut v = serde_json::to_value(DeepSeekV32Config::tiny(MAX_SIZE)).expect("serialisable");
            v["max_position_embeddings"] = MAX_SIZE.into();
            v
        })
        .expect("valid");
        assert!(cfg.parameter_count().total > cfg.parameter_count().active);
        assert!(cfg.kv_cache_bytes_per_token(4) > 0);
    }

    #[test]
    fn bad_reference_fields_are_named() {
        let e = DeepSeekV32Config::from_json_str(r#"{"dim": 256, "n_layer": 3}"#).unwrap_err();
        assert_names(&e, "n_layer", &["unknown"]);
        let e = DeepSeekV32Config::from_json_str(r#"{"dim": 256, "dtype": "int4"}"#).unwrap_err();
        assert_names(&e, "dtype", &["int4", "fp8"]);
        let e = DeepSeekV32Config::from_json_str(r#"{"score_func": "tanh"}"#).unwrap_err();
        assert_names(&e, "score_func", &["tanh"]);
        // The reference default q_lora_rank = 0 cannot feed the indexer.
        let e = DeepSeekV32Config::from_json_str(r#"{"dim": 256}"#).unwrap_err();
        assert_names(&e, "q_lora_rank", &["positive"]);
    }

    #[test]
    fn malformed_text_and_files_are_errors() {
        let e = DeepSeekV32Config::from_json_str("{ not json").unwrap_err();
        assert!(matches!(e, ConfigError::Json { .. }), "{e}");
        let e = DeepSeekV32Config::from_json_str("[1, 2]").unwrap_err();
        assert!(e.to_string().contains("object"), "{e}");
        let missing = Path::new("/nonexistent/dsa-model/config.json");
        let e = DeepSeekV32Config::from_file(missing).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/dsa-model/config.json"),
            "{e}"
        );
    }

    #[test]
    fn tiny_preset_is_valid_and_round_trips() {
        let cfg = DeepSeekV32Config::tiny(512);
        cfg.validate().expect("valid");
        assert!(cfg.yarn().is_none());
        let json = serde_json::to_string_pretty(&cfg).expect("serialisable");
        assert_eq!(DeepSeekV32Config::from_json_str(&json).expect("valid"), cfg);
        assert_eq!(
            DeepSeekV32Config::tiny(0).validate().unwrap_err().field(),
            Some("vocab_size")
        );
    }
}
