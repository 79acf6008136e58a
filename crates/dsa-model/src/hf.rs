//! HuggingFace checkpoint names → Burn modules.
//!
//! HF stores a linear layer's weight as `[out, in]` (`<prefix>.weight`); Burn's [`Linear`]
//! holds `[in, out]`. Every loader checks shapes against the configuration, so a wrong
//! checkpoint fails with the tensor's name, the expected and found shapes, and its file.

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use dsa_burn::DsaAttention;

use crate::config::DeepSeekV32Config;
use crate::loading::{Checkpoint, LoadError};

/// A bias-free linear layer from `<prefix>.weight` of shape `[d_out, d_in]`.
pub fn linear<B: Backend>(
    ckpt: &Checkpoint,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<Linear<B>, LoadError> {
    let w = ckpt.read_tensor::<B, 2>(&format!("{prefix}.weight"), [d_out, d_in], device)?;
    Ok(Linear { weight: Param::from_tensor(w.transpose()), bias: None })
}

/// An RMSNorm from `<prefix>.weight`.
pub fn rms_norm<B: Backend>(ckpt: &Checkpoint, prefix: &str, d: usize, eps: f64, device: &B::Device) -> Result<RmsNorm<B>, LoadError> {
    let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init(device);
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

/// Layer `layer`'s attention (`model.layers.<layer>.self_attn.*`): MLA and its indexer.
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
    let p = format!("model.layers.{layer}.self_attn");
    let (d, h, eps) = (cfg.hidden_size, cfg.num_attention_heads, cfg.rms_norm_eps);
    let (ql, kvl, rope) = (cfg.q_lora_rank, cfg.kv_lora_rank, cfg.qk_rope_head_dim);
    let mut attn = cfg.attention().init::<B>(device);
    attn.wq_a = linear(ckpt, &format!("{p}.q_a_proj"), d, ql, device)?;
    attn.q_norm = rms_norm(ckpt, &format!("{p}.q_a_layernorm"), ql, eps, device)?;
    attn.wq_b = linear(ckpt, &format!("{p}.q_b_proj"), ql, h * cfg.qk_head_dim(), device)?;
    attn.wkv_a = linear(ckpt, &format!("{p}.kv_a_proj_with_mqa"), d, kvl + rope, device)?;
    attn.kv_norm = rms_norm(ckpt, &format!("{p}.kv_a_layernorm"), kvl, eps, device)?;
    attn.wkv_b = linear(ckpt, &format!("{p}.kv_b_proj"), kvl, h * (cfg.qk_nope_head_dim + cfg.v_head_dim), device)?;
    attn.wo = linear(ckpt, &format!("{p}.o_proj"), h * cfg.v_head_dim, d, device)?;
    let (ih, id) = (cfg.index_n_heads, cfg.index_head_dim);
    let ix = &mut attn.indexer;
    ix.wq_b = linear(ckpt, &format!("{p}.indexer.wq_b"), ql, ih * id, device)?;
    ix.wk = linear(ckpt, &format!("{p}.indexer.wk"), d, id, device)?;
    ix.k_norm = layer_norm(ckpt, &format!("{p}.indexer.k_norm"), id, 1e-6, device)?;
    ix.weights_proj = linear(ckpt, &format!("{p}.indexer.weights_proj"), d, ih, device)?;
    Ok(attn)
}
