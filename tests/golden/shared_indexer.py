"""A GLM-5.2-style conformance case with shared indexers (`indexer_types`), from DeepSeek's
reference model.

GLM-5.2 (transformers' glm_moe_dsa `GlmMoeDsaConfig.indexer_types`) runs the lightning
indexer in its "full" layers only; a "shared" layer has no indexer (no indexer tensors in
the checkpoint, no indexer key cache) and attends to the top-k of the latest full layer
before it, in prefill and in every decode step. This script imports glm5_style.py (and
through it make_golden.py, whose directory it takes as its first argument) and adds that to
the reference: a shared layer's `attn.indexer` is replaced by a module without parameters
that returns the top-k the latest full layer's indexer just chose. config.json gets GLM's
`indexer_types` list.

The golden file records, for a shared layer, `layer<i>.selected` (the reused selection,
equal to its source layer's) and no `layer<i>.index_scores` (it computes none).

usage: python3 tests/golden/shared_indexer.py GOLDEN_DIR OUTDIR [case ...]
  GOLDEN_DIR holds make_golden.py, kernel.py and ref/model.py.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import glm5_style as S  # noqa: E402  (reads GOLDEN_DIR from sys.argv[1])

G = S.G
M = G.M

# The indexer types of the case being made, and the top-k of the latest full layer's
# indexer in the forward pass running now.
INDEXER_TYPES = []
LATEST_TOPK = [None]

_indexer_forward = M.Indexer.forward


def indexer_forward(self, *a, **kw):
    idx = _indexer_forward(self, *a, **kw)
    LATEST_TOPK[0] = idx
    return idx


M.Indexer.forward = indexer_forward


class SharedIndexer(torch.nn.Module):
    """A shared layer's stand-in for the indexer: no parameters, the latest full layer's
    top-k (recorded like an indexer's, without scores)."""

    def forward(self, *a, **kw):
        idx = LATEST_TOPK[0]
        assert idx is not None, "a shared layer before any full layer"
        if G.RECORD["on"]:
            G.RECORD["scores"].append(None)
            G.RECORD["topk"].append(idx.clone())
        return idx


_transformer_init = M.Transformer.__init__


def transformer_init(self, args):
    _transformer_init(self, args)
    assert len(INDEXER_TYPES) == args.n_layers and INDEXER_TYPES[0] == "full"
    for layer, kind in zip(self.layers, INDEXER_TYPES):
        if kind == "shared":
            layer.attn.indexer = SharedIndexer()


M.Transformer.__init__ = transformer_init

_run_case = G.run_case


def run_case(*a, **kw):
    """make_golden's run_case without index scores for the shared layers."""
    rec = _run_case(*a, **kw)
    for i, kind in enumerate(INDEXER_TYPES):
        if kind == "shared":
            assert rec.pop(f"layer{i}.index_scores") is None
    return rec


G.run_case = run_case

_glm_config = G.hf_config


def shared_config(a):
    """glm5_style's config.json with GLM's `indexer_types` (and no indexer of a shared layer
    in `modules_to_not_convert`)."""
    cfg = _glm_config(a)
    cfg["indexer_types"] = list(INDEXER_TYPES)
    q = cfg.get("quantization_config")
    if q is not None:
        shared = {f"model.layers.{i}.self_attn.indexer" for i, k in enumerate(INDEXER_TYPES) if k == "shared"}
        q["modules_to_not_convert"] = [m for m in q["modules_to_not_convert"] if m not in shared]
    return cfg


G.hf_config = shared_config
G.README = G.README.replace(
    "FP8 weights are\ndequantised before each matmul.",
    "FP8 weights are\ndequantised before each matmul. Shared indexers (GLM-5.2's `indexer_types`, made by\n"
    "tests/golden/shared_indexer.py): a \"shared\" layer has no indexer and attends to the top-k of\n"
    "the latest \"full\" layer before it; it has no `index_scores` below, and its `selected` is\n"
    "that layer's.")
assert "GLM-5.2" in G.README, "glm5_style's README text changed"

CASES = {
    # Layers 2 and 3 reuse layer 1's top-k (the latest full layer, not the first).
    "glm5-shared-indexer": dict(
        args=dict(S.GLM5_STYLE, n_layers=4), seed=3, batch=2, prefill=64, decode=4,
        indexer_types=["full", "full", "shared", "shared"],
    ),
}

if __name__ == "__main__":
    outdir = sys.argv[2]
    for name in sys.argv[3:] or list(CASES):
        INDEXER_TYPES[:] = CASES[name]["indexer_types"]
        G.make_case(name, CASES[name], outdir)
