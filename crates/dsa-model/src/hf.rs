//! HuggingFace checkpoint names → Burn modules.
//!
//! GLM-5 checkpoints (`glm_moe_dsa`) use DeepSeek-V3.2's names (`self_attn.indexer.wq_b`,
//! `mlp.experts.<e>.gate_proj`, `mlp.gate.e_score_correction_bias`, its MTP layer as
//! `model.layers.<num_hidden_layers>.*`, ...); GLM-5-FP8 leaves the indexer's projections
//! unquantised, which loads like any tensor without `weight_scale_inv`.
//!
//! HF stores a linear layer's weight as `[out, in]` (`<prefix>.weight`); Burn's [`Linear`]
//! holds `[in, out]`. Every loader checks shapes against the configuration, so a wrong
//! checkpoint fails with the tensor's name, the expected and found shapes, and its file.
//! [`model`] first compares the checkpoint with [`expected_tensors`] ([`check_tensors`]):
//! every missing and unexpected tensor at once, then the first tensor of another shape than
//! the config's, before any weight is read. Tensors are converted one at a time from the
//! memory-mapped files, so the checkpoint is never held in memory twice.

use std::fmt;
use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use dsa_burn::{DsaAttention, RmsNorm};

use crate::config::{ConfigError, DeepSeekV32Config};
use crate::loading::{Checkpoint, LoadError};
use crate::mlp::Mlp;
use crate::model::{Block, DeepSeekV32, FeedForward};
use crate::moe::{Experts, Moe, MoeConfig};
use crate::mtp::MtpLayer;

/// A bias-free linear layer from `<prefix>.weight` of shape `[d_out, d_in]`.
pub fn linear<B: Backend>(
    ckpt: &Checkpoint,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>, LoadError> {
    Ok(Linear { weight: Param::from_tensor(linear_weight(ckpt, prefix, d_in, d_out, device)?), bias: None })
}

/// The weight `<prefix>.weight` of shape `[d_out, d_in]` as Burn's [`Linear`] holds it,
/// `[d_in, d_out]`.
fn linear_weight<B: Backend>(ckpt: &Checkpoint, prefix: &str, d_in: usize, d_out: usize, device: &B::Device) -> Result<Tensor<B, 2>, LoadError> {
    Ok(ckpt.read_tensor::<B, 2>(&format!("{prefix}.weight"), [d_out, d_in], device)?.transpose())
}

/// An RMSNorm from `<prefix>.weight`.
pub fn rms_norm<B: Backend>(ckpt: &Checkpoint, prefix: &str, d: usize, eps: f64, device: &B::Device) -> Result<RmsNorm<B>, LoadError> {
    let mut norm = RmsNorm::new(d, eps, device);
    norm.gamma = Param::from_tensor(ckpt.read_tensor(&format!("{prefix}.weight"), [d], device)?);
    Ok(norm)
}

/// A LayerNorm with bias from `<prefix>.weight` and `<prefix>.bias`.
pub fn layer_norm<B: Backend>(ckpt: &Checkpoint, prefix: &str, d: usize, eps: f64, device: &B::Device) -> Result<LayerNorm<B>, LoadError> {
    let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = Param::from_tensor(ckpt.read_tensor(&format!("{prefix}.weight"), [d], device)?);
    norm.beta = Some(Param::from_tensor(ckpt.read_tensor(&format!("{prefix}.bias"), [d], device)?));
    Ok(norm)
}

/// Layer `layer`'s attention (`model.layers.<layer>.self_attn.*`): MLA and its indexer
/// (none in a shared layer of `indexer_types`, whose checkpoint has no indexer tensors).
///
/// ```no_run
/// use burn::backend::NdArray;
/// use dsa_model::{hf, Checkpoint, DeepSeekV32Config};
///
/// let cfg = DeepSeekV32Config::from_file("model/config.json")?;
/// let ckpt = Checkpoint::open("model")?;
/// let attn = hf::attention::<NdArray>(&ckpt, &cfg, 0, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn attention<B: Backend>(ckpt: &Checkpoint, cfg: &DeepSeekV32Config, layer: usize, device: &B::Device) -> Result<DsaAttention<B>, LoadError> {
    let p = format!("{}.self_attn", layer_prefix(layer));
    let (d, h, eps) = (cfg.hidden_size, cfg.num_attention_heads, cfg.rms_norm_eps);
    let (ql, kvl, rope) = (cfg.q_lora_rank, cfg.kv_lora_rank, cfg.qk_rope_head_dim);
    let mut attn = cfg.layer_attention(layer).init::<B>(device);
    attn.wq_a = linear(ckpt, &format!("{p}.q_a_proj"), d, ql, device)?;
    attn.q_norm = rms_norm(ckpt, &format!("{p}.q_a_layernorm"), ql, eps, device)?;
    attn.wq_b = linear(ckpt, &format!("{p}.q_b_proj"), ql, h * cfg.qk_head_dim(), device)?;
    attn.wkv_a = linear(ckpt, &format!("{p}.kv_a_proj_with_mqa"), d, kvl + rope, device)?;
    attn.kv_norm = rms_norm(ckpt, &format!("{p}.kv_a_layernorm"), kvl, eps, device)?;
    attn.wkv_b = linear(ckpt, &format!("{p}.kv_b_proj"), kvl, h * (cfg.qk_nope_head_dim + cfg.v_head_dim), device)?;
    attn.wo = linear(ckpt, &format!("{p}.o_proj"), h * cfg.v_head_dim, d, device)?;
    let (ih, id) = (cfg.index_n_heads, cfg.index_head_dim);
    // A shared layer (`indexer_types`) has no indexer tensors.
    let Some(ix) = &mut attn.indexer else { return Ok(attn) };
    ix.wq_b = linear(ckpt, &format!("{p}.indexer.wq_b"), ql, ih * id, device)?;
    ix.wk = linear(ckpt, &format!("{p}.indexer.wk"), d, id, device)?;
    ix.k_norm = layer_norm(ckpt, &format!("{p}.indexer.k_norm"), id, 1e-6, device)?;
    ix.weights_proj = linear(ckpt, &format!("{p}.indexer.weights_proj"), d, ih, device)?;
    Ok(attn)
}

/// The tensor-name prefix of block `layer`.
fn layer_prefix(layer: usize) -> String {
    format!("model.layers.{layer}")
}

/// The three projections of a SwiGLU MLP, in HF order.
const MLP_PROJECTIONS: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];

/// A SwiGLU MLP from `<prefix>.{gate_proj,up_proj,down_proj}.weight`.
pub fn mlp<B: Backend>(ckpt: &Checkpoint, prefix: &str, d_model: usize, hidden: usize, device: &B::Device) -> Result<Mlp<B>, LoadError> {
    let [gate, up, down] = MLP_PROJECTIONS.map(|p| format!("{prefix}.{p}"));
    Ok(Mlp {
        gate_proj: linear(ckpt, &gate, d_model, hidden, device)?,
        up_proj: linear(ckpt, &up, d_model, hidden, device)?,
        down_proj: linear(ckpt, &down, hidden, d_model, device)?,
    })
}

/// `n` routed experts from `<prefix>.<e>.{gate_proj,up_proj,down_proj}.weight`
/// (`e` in `0..n`), each projection stacked over the experts.
pub fn experts<B: Backend>(ckpt: &Checkpoint, prefix: &str, n: usize, d_model: usize, hidden: usize, device: &B::Device) -> Result<Experts<B>, LoadError> {
    let stacked = |proj: &str, d_in, d_out| -> Result<Param<Tensor<B, 3>>, LoadError> {
        let weights = (0..n).map(|e| linear_weight(ckpt, &format!("{prefix}.{e}.{proj}"), d_in, d_out, device)).collect::<Result<_, _>>()?;
        Ok(Param::from_tensor(Tensor::stack(weights, 0)))
    };
    let [gate, up, down] = MLP_PROJECTIONS;
    Ok(Experts { gate_proj: stacked(gate, d_model, hidden)?, up_proj: stacked(up, d_model, hidden)?, down_proj: stacked(down, hidden, d_model)? })
}

/// Layer `layer`'s mixture of experts (`model.layers.<layer>.mlp.*`).
pub fn moe<B: Backend>(ckpt: &Checkpoint, cfg: &DeepSeekV32Config, layer: usize, device: &B::Device) -> Result<Moe<B>, LoadError> {
    let p = format!("{}.mlp", layer_prefix(layer));
    let moe_cfg = MoeConfig::from_config(cfg);
    let (d, e) = (moe_cfg.d_model, moe_cfg.n_routed_experts);
    // Lazily initialised: the random weights are never materialised, only replaced.
    let mut moe = moe_cfg.init::<B>(device);
    moe.gate = linear(ckpt, &format!("{p}.gate"), d, e, device)?;
    moe.e_score_correction_bias = match moe_cfg.correction_bias {
        true => Some(Param::from_tensor(ckpt.read_tensor(&format!("{p}.gate.e_score_correction_bias"), [e], device)?)),
        false => None,
    };
    moe.experts = experts(ckpt, &format!("{p}.experts"), e, d, moe_cfg.expert_hidden, device)?;
    moe.shared_experts = moe_cfg
        .shared()
        .map(|c| mlp(ckpt, &format!("{p}.shared_experts"), c.d_model, c.hidden, device))
        .transpose()?;
    Ok(moe)
}

/// Block `layer` (`model.layers.<layer>.*`): norms, attention and feed-forward.
pub fn block<B: Backend>(ckpt: &Checkpoint, cfg: &DeepSeekV32Config, layer: usize, device: &B::Device) -> Result<Block<B>, LoadError> {
    let p = layer_prefix(layer);
    let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
    Ok(Block {
        input_layernorm: rms_norm(ckpt, &format!("{p}.input_layernorm"), d, eps, device)?,
        self_attn: attention(ckpt, cfg, layer, device)?,
        post_attention_layernorm: rms_norm(ckpt, &format!("{p}.post_attention_layernorm"), d, eps, device)?,
        mlp: if cfg.is_moe_layer(layer) {
            FeedForward::Moe(moe(ckpt, cfg, layer, device)?)
        } else {
            FeedForward::Dense(mlp(ckpt, &format!("{p}.mlp"), d, cfg.intermediate_size, device)?)
        },
    })
}

/// MTP module `layer` (`model.layers.<layer>.*`, `layer` from `num_hidden_layers` on):
/// `enorm`, `hnorm`, `eh_proj`, `shared_head.norm`, its block's tensors, and its own
/// `embed_tokens` and `shared_head.head` where the checkpoint has them
/// ([`MTP_OPTIONAL`]; otherwise it shares the main model's).
pub fn mtp_layer<B: Backend>(ckpt: &Checkpoint, cfg: &DeepSeekV32Config, layer: usize, device: &B::Device) -> Result<MtpLayer<B>, LoadError> {
    let p = layer_prefix(layer);
    let (d, v, eps) = (cfg.hidden_size, cfg.vocab_size, cfg.rms_norm_eps);
    let [embed, head] = MTP_OPTIONAL.map(|part| format!("{p}.{part}"));
    let embed_tokens = match ckpt.contains(&format!("{embed}.weight")) {
        true => Some(Embedding { weight: Param::from_tensor(ckpt.read_tensor(&format!("{embed}.weight"), [v, d], device)?) }),
        false => None,
    };
    Ok(MtpLayer {
        enorm: rms_norm(ckpt, &format!("{p}.enorm"), d, eps, device)?,
        hnorm: rms_norm(ckpt, &format!("{p}.hnorm"), d, eps, device)?,
        eh_proj: linear(ckpt, &format!("{p}.eh_proj"), 2 * d, d, device)?,
        block: block(ckpt, cfg, layer, device)?,
        norm: rms_norm(ckpt, &format!("{p}.shared_head.norm"), d, eps, device)?,
        embed_tokens,
        head: ckpt.contains(&format!("{head}.weight")).then(|| linear(ckpt, &head, d, v, device)).transpose()?,
    })
}

/// The tensors of an MTP layer that a checkpoint may hold or leave to the main model
/// (`[vocab, d_model]` each): DeepSeek-V3's store copies of the embedding and the head.
pub const MTP_OPTIONAL: [&str; 2] = ["embed_tokens", "shared_head.head"];

/// Every tensor (without FP8 `_scale_inv` companions) a checkpoint of `cfg` holds, MTP
/// layers included (without their [`MTP_OPTIONAL`] tensors), with its shape as stored (a
/// linear layer's weight is `[out, in]`).
///
/// ```
/// use dsa_model::{hf, DeepSeekV32Config};
/// let cfg = DeepSeekV32Config::tiny(64);
/// let tensors = hf::expected_tensors(&cfg);
/// let (_, shape) = tensors.iter().find(|(n, _)| n == "model.embed_tokens.weight").unwrap();
/// assert_eq!(shape, &[64, cfg.hidden_size]);
/// ```
pub fn expected_tensors(cfg: &DeepSeekV32Config) -> Vec<(String, Vec<usize>)> {
    let (d, v, h) = (cfg.hidden_size, cfg.vocab_size, cfg.num_attention_heads);
    let (ql, kvl, rope) = (cfg.q_lora_rank, cfg.kv_lora_rank, cfg.qk_rope_head_dim);
    let (ih, id) = (cfg.index_n_heads, cfg.index_head_dim);
    let mut tensors = vec![("model.embed_tokens.weight".to_string(), vec![v, d]), ("model.norm.weight".to_string(), vec![d])];
    if !cfg.tie_word_embeddings {
        tensors.push(("lm_head.weight".into(), vec![v, d]));
    }
    let mlp = |tensors: &mut Vec<(String, Vec<usize>)>, prefix: &str, d_model: usize, hidden: usize| {
        let [gate, up, down] = MLP_PROJECTIONS;
        tensors.push((format!("{prefix}.{gate}.weight"), vec![hidden, d_model]));
        tensors.push((format!("{prefix}.{up}.weight"), vec![hidden, d_model]));
        tensors.push((format!("{prefix}.{down}.weight"), vec![d_model, hidden]));
    };
    for layer in 0..cfg.num_hidden_layers + cfg.num_nextn_predict_layers {
        let p = layer_prefix(layer);
        if layer >= cfg.num_hidden_layers {
            for (part, shape) in [("enorm", vec![d]), ("hnorm", vec![d]), ("eh_proj", vec![d, 2 * d]), ("shared_head.norm", vec![d])] {
                tensors.push((format!("{p}.{part}.weight"), shape));
            }
        }
        for (part, shape) in [
            ("input_layernorm.weight", vec![d]),
            ("post_attention_layernorm.weight", vec![d]),
            ("self_attn.q_a_proj.weight", vec![ql, d]),
            ("self_attn.q_a_layernorm.weight", vec![ql]),
            ("self_attn.q_b_proj.weight", vec![h * cfg.qk_head_dim(), ql]),
            ("self_attn.kv_a_proj_with_mqa.weight", vec![kvl + rope, d]),
            ("self_attn.kv_a_layernorm.weight", vec![kvl]),
            ("self_attn.kv_b_proj.weight", vec![h * (cfg.qk_nope_head_dim + cfg.v_head_dim), kvl]),
            ("self_attn.o_proj.weight", vec![d, h * cfg.v_head_dim]),
        ] {
            tensors.push((format!("{p}.{part}"), shape));
        }
        if !cfg.is_shared_indexer(layer) {
            for (part, shape) in [
                ("wq_b.weight", vec![ih * id, ql]),
                ("wk.weight", vec![id, d]),
                ("k_norm.weight", vec![id]),
                ("k_norm.bias", vec![id]),
                ("weights_proj.weight", vec![ih, d]),
            ] {
                tensors.push((format!("{p}.self_attn.indexer.{part}"), shape));
            }
        }
        if cfg.is_moe_layer(layer) {
            let moe_cfg = MoeConfig::from_config(cfg);
            let e = moe_cfg.n_routed_experts;
            tensors.push((format!("{p}.mlp.gate.weight"), vec![e, d]));
            if moe_cfg.correction_bias {
                tensors.push((format!("{p}.mlp.gate.e_score_correction_bias"), vec![e]));
            }
            for expert in 0..e {
                mlp(&mut tensors, &format!("{p}.mlp.experts.{expert}"), d, moe_cfg.expert_hidden);
            }
            if let Some(shared) = moe_cfg.shared() {
                mlp(&mut tensors, &format!("{p}.mlp.shared_experts"), shared.d_model, shared.hidden);
            }
        } else {
            mlp(&mut tensors, &format!("{p}.mlp"), d, cfg.intermediate_size);
        }
    }
    tensors
}

/// The names of [`expected_tensors`].
///
/// ```
/// use dsa_model::{hf, DeepSeekV32Config};
/// let names = hf::expected_names(&DeepSeekV32Config::tiny(64));
/// assert!(names.contains(&"model.layers.1.mlp.experts.7.down_proj.weight".to_string()));
/// assert!(names.contains(&"model.layers.0.self_attn.indexer.k_norm.bias".to_string()));
/// ```
pub fn expected_names(cfg: &DeepSeekV32Config) -> Vec<String> {
    expected_tensors(cfg).into_iter().map(|(name, _)| name).collect()
}

/// Checks a checkpoint against `cfg` without reading any weight: the names
/// ([`Checkpoint::check_names`]: every missing and unexpected tensor, layers beyond the
/// config's blocks and MTP layers), then every tensor's shape and the shape of each FP8
/// weight's block scale ([`Checkpoint::check_tensor`]), the first mismatch an error naming
/// the tensor, both shapes and the file. [`model`] and `dsa-cli info` run it.
pub fn check_tensors(ckpt: &Checkpoint, cfg: &DeepSeekV32Config) -> Result<(), LoadError> {
    let mut tensors = expected_tensors(cfg);
    for layer in cfg.num_hidden_layers..cfg.num_hidden_layers + cfg.num_nextn_predict_layers {
        let optional = MTP_OPTIONAL.map(|part| format!("{}.{part}.weight", layer_prefix(layer)));
        tensors.extend(optional.into_iter().filter(|name| ckpt.contains(name)).map(|name| (name, vec![cfg.vocab_size, cfg.hidden_size])));
    }
    let names: Vec<&str> = tensors.iter().map(|(name, _)| name.as_str()).collect();
    ckpt.check_names(&names, cfg.num_hidden_layers, cfg.num_nextn_predict_layers)?;
    tensors.iter().try_for_each(|(name, shape)| ckpt.check_tensor(name, shape))
}

/// The whole model from a checkpoint. The checkpoint is checked first ([`check_tensors`]):
/// every missing and unexpected tensor is reported in one [`LoadError::NameMismatch`] (the
/// config's `num_nextn_predict_layers` MTP layers included, a layer beyond them is a
/// [`LoadError::ExtraLayers`]), then the first tensor of
/// another shape than the config's is a [`LoadError::ShapeMismatch`]; then each tensor is
/// converted (NaN and ±inf are a [`LoadError::BadValue`] unless
/// [`Checkpoint::allow_nonfinite`]).
///
/// ```no_run
/// use burn::backend::NdArray;
/// use dsa_model::{hf, Checkpoint, DeepSeekV32Config};
///
/// let cfg = DeepSeekV32Config::from_file("model/config.json")?;
/// let ckpt = Checkpoint::open("model")?;
/// let model = hf::model::<NdArray>(&ckpt, &cfg, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn model<B: Backend>(ckpt: &Checkpoint, cfg: &DeepSeekV32Config, device: &B::Device) -> Result<DeepSeekV32<B>, LoadError> {
    check_tensors(ckpt, cfg)?;
    let (d, v) = (cfg.hidden_size, cfg.vocab_size);
    let embed = ckpt.read_tensor::<B, 2>("model.embed_tokens.weight", [v, d], device)?;
    let lm_head = match cfg.tie_word_embeddings {
        true => Linear { weight: Param::from_tensor(embed.clone().transpose()), bias: None },
        false => linear(ckpt, "lm_head", d, v, device)?,
    };
    Ok(DeepSeekV32 {
        embed_tokens: Embedding { weight: Param::from_tensor(embed) },
        layers: (0..cfg.num_hidden_layers).map(|layer| block(ckpt, cfg, layer, device)).collect::<Result<_, _>>()?,
        norm: rms_norm(ckpt, "model.norm", d, cfg.rms_norm_eps, device)?,
        lm_head,
        mtp: (cfg.num_nextn_predict_layers > 0)
            .then(|| (cfg.num_hidden_layers..cfg.num_hidden_layers + cfg.num_nextn_predict_layers).map(|layer| mtp_layer(ckpt, cfg, layer, device)).collect())
            .transpose()?,
    })
}

/// Why a model directory could not be loaded.
#[derive(Debug)]
pub enum ModelLoadError {
    /// `config.json` is unreadable or invalid.
    Config(ConfigError),
    /// The weights are unreadable or do not match the configuration.
    Checkpoint(LoadError),
}

impl fmt::Display for ModelLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelLoadError::Config(e) => e.fmt(f),
            ModelLoadError::Checkpoint(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ModelLoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelLoadError::Config(e) => Some(e),
            ModelLoadError::Checkpoint(e) => Some(e),
        }
    }
}

impl From<ConfigError> for ModelLoadError {
    fn from(e: ConfigError) -> Self {
        ModelLoadError::Config(e)
    }
}

impl From<LoadError> for ModelLoadError {
    fn from(e: LoadError) -> Self {
        ModelLoadError::Checkpoint(e)
    }
}

/// Opens a HuggingFace model directory (`config.json` and `model.safetensors` or a sharded
/// `model.safetensors.index.json`) with the FP8 block size of its config.
pub fn open(dir: impl AsRef<Path>) -> Result<(DeepSeekV32Config, Checkpoint), ModelLoadError> {
    let dir = dir.as_ref();
    let cfg = DeepSeekV32Config::from_file(dir.join("config.json"))?;
    let mut ckpt = Checkpoint::open(dir)?;
    if let Some(block) = cfg.weight_block_size() {
        ckpt = ckpt.with_weight_block_size(block)?;
    }
    Ok((cfg, ckpt))
}

/// Loads the model of a HuggingFace directory (see [`open`] and [`model`]).
///
/// ```no_run
/// use burn::backend::NdArray;
/// use dsa_model::hf;
///
/// let (cfg, model) = hf::load::<NdArray>("DeepSeek-V3.2-Exp", &Default::default())?;
/// # Ok::<(), hf::ModelLoadError>(())
/// ```
pub fn load<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<(DeepSeekV32Config, DeepSeekV32<B>), ModelLoadError> {
    let (cfg, ckpt) = open(dir)?;
    let model = model(&ckpt, &cfg, device)?;
    Ok((cfg, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{conformance_cases, TempDir};
    use burn::backend::NdArray;
    use safetensors::tensor::TensorView;
    use safetensors::SafeTensors;

    type B = NdArray<f32>;

    /// Copies a conformance case's config and weights to a temporary directory, letting
    /// `edit` change the list of (name, dtype, shape, bytes) tensors first.
    fn edited_case(edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>)) -> TempDir {
        let case = &conformance_cases()[0];
        let dir = TempDir::new("hf-model");
        std::fs::copy(case.join("config.json"), dir.path().join("config.json")).expect("copy config");
        let bytes = std::fs::read(case.join(crate::loading::SINGLE_FILE)).expect("read weights");
        let st = SafeTensors::deserialize(&bytes).expect("valid case");
        let mut tensors: Vec<_> = st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
        edit(&mut tensors);
        let views: Vec<(String, TensorView<'_>)> =
            tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("consistent"))).collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(crate::loading::SINGLE_FILE)).expect("write");
        dir
    }

    type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

    /// A BF16 tensor of `shape` with distinct values (from `seed`): its bytes and values.
    fn bf16_tensor(shape: &[usize], seed: usize) -> (Vec<u8>, Vec<f32>) {
        let n: usize = shape.iter().product();
        let values: Vec<half::bf16> = (0..n).map(|i| half::bf16::from_f32(((i * 37 + seed * 11) % 101) as f32 / 101.0 - 0.5)).collect();
        (values.iter().flat_map(|v| v.to_le_bytes()).collect(), values.iter().map(|v| v.to_f32()).collect())
    }

    /// Adds MTP layer `layer` of width `d` to the tensors of a case: `enorm`, `hnorm`,
    /// `eh_proj` and `shared_head.norm` (BF16, distinct values), and, unless the case has
    /// them already, its block as a copy of block `layer - 1`'s tensors.
    fn add_mtp_layer(t: &mut Tensors, layer: usize, d: usize) {
        let (from, to) = (format!("model.layers.{}.", layer - 1), format!("model.layers.{layer}."));
        if !t.iter().any(|(n, ..)| n.starts_with(&to)) {
            let copies: Tensors = t.iter().filter(|(n, ..)| n.starts_with(&from)).map(|(n, dt, s, b)| (n.replacen(&from, &to, 1), *dt, s.clone(), b.clone())).collect();
            t.extend(copies);
        }
        for (i, (part, shape)) in [("enorm", vec![d]), ("hnorm", vec![d]), ("eh_proj", vec![d, 2 * d]), ("shared_head.norm", vec![d])].into_iter().enumerate() {
            let (bytes, _) = bf16_tensor(&shape, layer * 4 + i);
            t.push((format!("{to}{part}.weight"), safetensors::Dtype::BF16, shape, bytes));
        }
    }

    /// Rewrites the `config.json` in `dir` with `edit`.
    fn edit_config(dir: &TempDir, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
        let path = dir.path().join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
        edit(cfg.as_object_mut().expect("object"));
        std::fs::write(&path, cfg.to_string()).expect("write config");
    }

    #[test]
    fn checkpoint_sizes_match_the_parameter_count() {
        for case in conformance_cases() {
            let (cfg, ckpt) = open(&case).expect("case opens");
            check_tensors(&ckpt, &cfg).expect("names and shapes match");
            let names = expected_names(&cfg);
            let stored: usize = names.iter().map(|n| ckpt.shape(n).expect("present").iter().product::<usize>()).sum();
            assert_eq!(stored, cfg.parameter_count().total, "{}", case.display());
            let model = model::<B>(&ckpt, &cfg, &Default::default()).expect("loads");
            // The routing bias is a parameter too; Burn counts every loaded value.
            assert_eq!(burn::module::Module::num_params(&model), stored, "{}", case.display());
        }
    }

    #[test]
    fn missing_and_unexpected_tensors_are_all_named() {
        let dir = edited_case(|t| {
            t.retain(|(n, ..)| n != "model.norm.weight" && n != "model.layers.1.mlp.experts.3.up_proj.weight");
            t.push(("model.layers.0.mlp.extra.weight".into(), safetensors::Dtype::F32, vec![1], vec![0; 4]));
            // The MTP layer (index num_hidden_layers) is checked like the blocks.
            add_mtp_layer(t, 3, 256);
            t.retain(|(n, ..)| n != "model.layers.3.hnorm.weight");
            t.push(("model.layers.3.eh_bias.weight".into(), safetensors::Dtype::F32, vec![1], vec![0; 4]));
        });
        edit_config(&dir, |cfg| {
            cfg.insert("num_nextn_predict_layers".into(), 1.into());
        });
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        let msg = err.to_string();
        match &err {
            ModelLoadError::Checkpoint(LoadError::NameMismatch { missing, unexpected, .. }) => {
                assert_eq!(missing, &["model.norm.weight", "model.layers.1.mlp.experts.3.up_proj.weight", "model.layers.3.hnorm.weight"]);
                let mut unexpected = unexpected.clone();
                unexpected.sort();
                assert_eq!(unexpected, ["model.layers.0.mlp.extra.weight", "model.layers.3.eh_bias.weight"]);
            }
            other => panic!("wrong error: {other}"),
        }
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    /// A shared layer (`indexer_types`) loads without indexer tensors and has no indexer;
    /// a full layer's missing indexer tensor, or a shared layer's present one, is named.
    #[test]
    fn shared_layers_have_no_indexer_tensors() {
        let shared = |cfg: &mut serde_json::Map<String, serde_json::Value>| {
            assert_eq!(cfg["num_hidden_layers"], 3, "the case has layers 0..=2");
            cfg.insert("indexer_types".into(), serde_json::json!(["full", "full", "shared"]));
        };
        let dir = edited_case(|t| t.retain(|(n, ..)| !n.starts_with("model.layers.2.self_attn.indexer.")));
        edit_config(&dir, shared);
        let (cfg, model) = load::<B>(dir.path(), &Default::default()).expect("loads");
        assert!(cfg.is_shared_indexer(2) && model.layers[2].self_attn.indexer.is_none() && model.layers[1].self_attn.indexer.is_some());

        let dir = edited_case(|t| t.retain(|(n, ..)| n != "model.layers.1.self_attn.indexer.wk.weight"));
        edit_config(&dir, shared);
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        match &err {
            ModelLoadError::Checkpoint(LoadError::NameMismatch { missing, unexpected, .. }) => {
                assert_eq!(missing, &["model.layers.1.self_attn.indexer.wk.weight"]);
                assert_eq!(unexpected.len(), 5, "layer 2's indexer tensors: {unexpected:?}");
                assert!(unexpected.iter().all(|n| n.starts_with("model.layers.2.self_attn.indexer.")), "{unexpected:?}");
            }
            other => panic!("wrong error: {other}"),
        }
        // Reading the full layer alone names the tensor too.
        let ckpt = Checkpoint::open(dir.path()).expect("opens");
        let msg = attention::<B>(&ckpt, &cfg, 1, &Default::default()).unwrap_err().to_string();
        assert!(msg.contains("model.layers.1.self_attn.indexer.wk.weight"), "{msg}");
    }

    /// A config with fewer layers than the checkpoint loads only if its MTP layers account
    /// for the rest.
    #[test]
    fn layers_beyond_the_config_are_an_error_unless_mtp() {
        let dir = edited_case(|_| {});
        edit_config(&dir, |cfg| {
            assert_eq!(cfg["num_hidden_layers"], 3, "the case has layers 0..=2");
            cfg.insert("num_hidden_layers".into(), 1.into());
            cfg.insert("first_k_dense_replace".into(), 1.into());
            cfg.insert("num_nextn_predict_layers".into(), 1.into());
        });
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelLoadError::Checkpoint(LoadError::ExtraLayers { highest: 2, .. })), "{msg}");
        assert!(msg.contains("up to index 2") && msg.contains("model.safetensors"), "{msg}");
        assert!(msg.contains("num_hidden_layers = 1") && msg.contains("num_nextn_predict_layers = 1"), "{msg}");
        // Layers 1 and 2 as two MTP layers need their MTP tensors: a 1-layer model.
        let two_mtp = |cfg: &mut serde_json::Map<String, serde_json::Value>| {
            cfg.insert("num_hidden_layers".into(), 1.into());
            cfg.insert("first_k_dense_replace".into(), 1.into());
            cfg.insert("num_nextn_predict_layers".into(), 2.into());
        };
        edit_config(&dir, two_mtp);
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        assert!(matches!(&err, ModelLoadError::Checkpoint(LoadError::NameMismatch { missing, .. }) if missing.contains(&"model.layers.1.enorm.weight".to_string())), "{err}");
        let dir = edited_case(|t| (1..=2).for_each(|layer| add_mtp_layer(t, layer, 256)));
        edit_config(&dir, two_mtp);
        let (cfg, model) = load::<B>(dir.path(), &Default::default()).expect("layers 1 and 2 are MTP layers");
        assert_eq!((cfg.num_hidden_layers, model.layers.len(), model.mtp_layers().len()), (1, 1, 2));
    }

    /// An MTP layer's tensors land where they belong: its own norms and projection, its
    /// block, and its own embedding and head when the checkpoint has them (the main
    /// model's otherwise); the parameter count covers them.
    #[test]
    fn mtp_layers_load_from_their_tensors() {
        for own_copies in [false, true] {
            let dir = edited_case(|t| {
                add_mtp_layer(t, 3, 256);
                if own_copies {
                    for (from, to) in [("model.embed_tokens.weight", "model.layers.3.embed_tokens.weight"), ("lm_head.weight", "model.layers.3.shared_head.head.weight")] {
                        let (_, dt, s, b) = t.iter().find(|(n, ..)| n == from).expect("present").clone();
                        t.push((to.into(), dt, s, b));
                    }
                }
            });
            edit_config(&dir, |cfg| {
                cfg.insert("num_nextn_predict_layers".into(), 1.into());
            });
            let (cfg, ckpt) = open(dir.path()).expect("opens");
            let model = model::<B>(&ckpt, &cfg, &Default::default()).expect("loads");
            let mtp = &model.mtp_layers()[0];
            let d = cfg.hidden_size;
            let values = |shape: &[usize], seed| burn::tensor::TensorData::new(bf16_tensor(shape, seed).1, shape.to_vec());
            mtp.enorm.gamma.val().into_data().assert_eq(&values(&[d], 12), true);
            mtp.hnorm.gamma.val().into_data().assert_eq(&values(&[d], 13), true);
            mtp.norm.gamma.val().into_data().assert_eq(&values(&[d], 15), true);
            // HF's [out, in] = [d, 2d] is Burn's [2d, d].
            let eh = Tensor::<B, 2>::from_data(values(&[d, 2 * d], 14), &Default::default());
            mtp.eh_proj.weight.val().into_data().assert_eq(&eh.transpose().into_data(), true);
            let (block, copied) = (&mtp.block.self_attn, &model.layers[2].self_attn);
            block.wkv_b.weight.val().into_data().assert_eq(&copied.wkv_b.weight.val().into_data(), true);
            let wk = |attn: &DsaAttention<B>| attn.indexer.as_ref().expect("an indexer").wk.weight.val().into_data();
            wk(block).assert_eq(&wk(copied), true);
            assert!(matches!(mtp.block.mlp, FeedForward::Moe(_)));
            assert_eq!((mtp.embed_tokens.is_some(), mtp.head.is_some()), (own_copies, own_copies));
            if let (Some(embed), Some(head)) = (&mtp.embed_tokens, &mtp.head) {
                embed.weight.val().into_data().assert_eq(&model.embed_tokens.weight.val().into_data(), true);
                head.weight.val().into_data().assert_eq(&model.lm_head.weight.val().into_data(), true);
            }
            let stored: usize = ckpt.names().filter(|n| !n.ends_with("_scale_inv")).map(|n| ckpt.shape(n).expect("present").iter().product::<usize>()).sum();
            assert_eq!(burn::module::Module::num_params(&model), stored);
        }
    }

    #[test]
    fn nonfinite_weights_are_rejected_with_the_tensor_unless_allowed() {
        let target = "model.layers.2.self_attn.kv_a_layernorm.weight";
        let dir = edited_case(|t| {
            let (_, dtype, _, bytes) = t.iter_mut().find(|(n, ..)| n == target).expect("present");
            assert_eq!(*dtype, safetensors::Dtype::BF16);
            // Element 1 becomes a BF16 NaN.
            bytes[2..4].copy_from_slice(&half::bf16::NAN.to_le_bytes());
        });
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelLoadError::Checkpoint(LoadError::BadValue { .. })), "{msg}");
        assert!(msg.contains(&format!("`{target}`")) && msg.contains("model.safetensors") && msg.contains("NaN at [1]"), "{msg}");
        let (cfg, ckpt) = open(dir.path()).expect("opens");
        model::<B>(&ckpt.allow_nonfinite(true), &cfg, &Default::default()).expect("allowed");
    }

    /// A config whose sizes contradict the checkpoint is refused before any weight is read,
    /// naming the first mismatching tensor, both shapes and the file; an FP8 scale of the
    /// wrong shape for the config's block size is one too.
    #[test]
    fn a_config_contradicting_the_shapes_names_the_first_mismatch() {
        let dir = edited_case(|_| {});
        edit_config(&dir, |cfg| {
            assert_eq!(cfg["intermediate_size"], 512);
            cfg.insert("intermediate_size".into(), 384.into());
        });
        let (cfg, ckpt) = open(dir.path()).expect("opens");
        let err = check_tensors(&ckpt, &cfg).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{msg}");
        assert!(msg.starts_with("tensor `model.layers.0.mlp.gate_proj.weight` in ") && msg.ends_with("expected shape [384, 256], found [512, 256]"), "{msg}");
        assert!(matches!(model::<B>(&ckpt, &cfg, &Default::default()), Err(LoadError::ShapeMismatch { .. })));

        let fp8 = conformance_cases().into_iter().find(|c| c.ends_with("tiny-fp8")).expect("the FP8 case");
        let (cfg, ckpt) = open(&fp8).expect("opens");
        check_tensors(&ckpt, &cfg).expect("the case matches its config");
        let ckpt = ckpt.with_weight_block_size([64, 128]).expect("block");
        let err = check_tensors(&ckpt, &cfg).unwrap_err();
        assert!(matches!(err, LoadError::ShapeMismatch { ref name, .. } if name.ends_with("_scale_inv")), "{err}");
    }

    #[test]
    fn a_misshapen_tensor_names_tensor_shapes_and_file() {
        let dir = edited_case(|t| {
            let o = t.iter_mut().find(|(n, ..)| n == "model.layers.2.self_attn.o_proj.weight").expect("present");
            // Keep the bytes, claim half the columns twice as many rows: same size, wrong shape.
            o.2 = vec![o.2[0] * 2, o.2[1] / 2];
        });
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ModelLoadError::Checkpoint(LoadError::ShapeMismatch { .. }) | ModelLoadError::Checkpoint(LoadError::Invalid { .. })), "{msg}");
        assert!(msg.contains("model.layers.2.self_attn.o_proj.weight"), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");
    }

    #[test]
    fn bad_config_and_truncated_weights_are_errors() {
        let dir = edited_case(|_| {});
        let config = dir.path().join("config.json");
        let text = std::fs::read_to_string(&config).expect("config");
        std::fs::write(&config, text.replace("\"n_group\": 2", "\"n_group\": 3")).expect("write");
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        assert!(matches!(&err, ModelLoadError::Config(e) if e.field() == Some("n_group")), "{err}");

        std::fs::write(&config, text).expect("write");
        let weights = dir.path().join(crate::loading::SINGLE_FILE);
        let bytes = std::fs::read(&weights).expect("weights");
        std::fs::write(&weights, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = load::<B>(dir.path(), &Default::default()).unwrap_err();
        assert!(err.to_string().contains("not a valid safetensors file") && err.to_string().contains("model.safetensors"), "{err}");
    }
}
