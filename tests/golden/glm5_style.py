"""GLM-5-style conformance cases (model_type glm_moe_dsa) from DeepSeek's reference model.

Extends ../shared/golden/make_golden.py (imported, not copied: it needs DeepSeek's
inference/model.py in ref/ beside it, see ../shared/golden/README.md) for GLM-5
(zai-org/GLM-5; transformers' glm_moe_dsa, vLLM's GlmMoeDsaForCausalLM), which is
DeepSeek-V3.2's architecture with these differences, each applied here:

  * the indexer's RoPE is interleaved like MLA's (`indexer_rope_interleave: true`): the
    reference's own apply_rotary_emb is put back (make_golden switches the indexer to
    rotate-half, DeepSeek's 2025-11 fix);
  * every RMSNorm has eps 1e-5 (`rms_norm_eps`; the reference hard-codes 1e-6); the
    indexer's k_norm stays a LayerNorm with eps 1e-6, as in GLM-5;
  * plain RoPE with base 10^6 (`rope_parameters: {rope_type: default}`): YaRN off
    (original_seq_len = max_seq_len);
  * one expert group (n_group = topk_group = 1), the heads in GLM-5's proportions (half as
    many indexer heads as attention heads, 64:32 in GLM-5; qk_nope:qk_rope:v = 3:1:4 as
    192:64:256, so v_head_dim = qk_head_dim);
  * the FP8 checkpoint's indexer projections (wq_b, wk) left in bf16 and float (not ue8m0)
    block scales, as in GLM-5-FP8 (`modules_to_not_convert` lists the indexers, no
    `scale_fmt`);
  * config.json in GLM-5's spelling (`rope_parameters`, `dtype`, a list of `eos_token_id`s,
    `rope_interleave`, `head_dim`, `qk_head_dim`, `pad_token_id`, `attention_bias`).

No MTP layer is made (`num_nextn_predict_layers: 0`; GLM-5 has one).

usage: python3 tests/golden/glm5_style.py GOLDEN_DIR OUTDIR [case ...]
  GOLDEN_DIR holds make_golden.py, kernel.py and ref/model.py.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(sys.argv[1]))
import make_golden as G  # noqa: E402

M = G.M
RMS_EPS = 1e-5

# Every RoPE interleaved: the reference's apply_rotary_emb, whatever make_golden's flag says.
M.apply_rotary_emb = G._orig_rope

_rms_init = M.RMSNorm.__init__


def rms_init(self, dim, eps=RMS_EPS):
    _rms_init(self, dim, eps)


M.RMSNorm.__init__ = rms_init

_indexer_init = M.Indexer.__init__


def indexer_init(self, *a, **kw):
    """The indexer's Linear layers in bf16 even in an FP8 model (GLM-5-FP8)."""
    dtype, M.Linear.dtype = M.Linear.dtype, torch.bfloat16
    try:
        _indexer_init(self, *a, **kw)
    finally:
        M.Linear.dtype = dtype


M.Indexer.__init__ = indexer_init

_hf_config = G.hf_config


def glm_config(a):
    """make_golden's config.json, respelled as GLM-5's."""
    cfg = _hf_config(a)
    assert a.max_seq_len <= a.original_seq_len, "GLM-5 has no YaRN"
    for key in ("rope_theta", "rope_scaling", "torch_dtype", "eos_token_id"):
        del cfg[key]
    cfg.update(
        architectures=["GlmMoeDsaForCausalLM"], model_type="glm_moe_dsa", dtype="bfloat16",
        eos_token_id=[1, 2], pad_token_id=1, rms_norm_eps=RMS_EPS, attention_bias=False,
        head_dim=a.qk_rope_head_dim, qk_head_dim=a.qk_nope_head_dim + a.qk_rope_head_dim,
        rope_parameters={"rope_theta": a.rope_theta, "rope_type": "default"},
        rope_interleave=True, indexer_rope_interleave=True, num_nextn_predict_layers=0,
    )
    q = cfg.get("quantization_config")
    if q is not None:
        if q["scale_fmt"] is None:
            del q["scale_fmt"]
        q["modules_to_not_convert"] = ["lm_head", "model.embed_tokens"] + [
            f"model.layers.{i}.{m}" for i in range(a.n_layers)
            for m in ("input_layernorm", "post_attention_layernorm", "self_attn.indexer",
                      "self_attn.kv_a_layernorm", "self_attn.q_a_layernorm")]
    return cfg


G.hf_config = glm_config
_readme = G.README
G.README = G.README.replace(
    """Made by running DeepSeek's reference DeepSeek-V3.2 model (inference/model.py of
DeepSeek-V3.2-Exp) in float32 on random weights, with the indexer's RoPE
non-interleaved (the released fix) and FP8 weights dequantised before each matmul.""",
    """GLM-5 style (model_type glm_moe_dsa): made by tests/golden/glm5_style.py, which runs
DeepSeek's reference DeepSeek-V3.2 model (inference/model.py of DeepSeek-V3.2-Exp) in
float32 on random weights with GLM-5's differences: the indexer's RoPE interleaved like
MLA's, RMSNorm eps 1e-5, plain RoPE (base 1e6, no YaRN), one expert group, the indexer's
projections in bf16 in an FP8 checkpoint with float block scales. FP8 weights are
dequantised before each matmul.""").replace("(model_type deepseek_v32)", "(model_type glm_moe_dsa, GLM-5's spelling)")
assert "released fix" not in G.README and "deepseek_v32" not in G.README, "make_golden's README text changed"

GLM5_STYLE = dict(
    G.BASE, n_heads=8, index_n_heads=4, qk_nope_head_dim=96, qk_rope_head_dim=32, v_head_dim=128,
    n_expert_groups=1, n_limited_groups=1, rope_theta=1e6, original_seq_len=G.BASE["max_seq_len"],
    dtype="fp8", scale_fmt=None,
)
CASES = {
    "glm5-style": dict(args=GLM5_STYLE, seed=3, batch=2, prefill=64, decode=4),
}

if __name__ == "__main__":
    outdir = sys.argv[2]
    for name in sys.argv[3:] or list(CASES):
        G.make_case(name, CASES[name], outdir)
