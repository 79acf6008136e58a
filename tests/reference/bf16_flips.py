"""How often DeepSeek's reference model, run in bf16, flips its discrete choices
(indexer top-k selections, MoE expert choices) relative to the float32 golden.

Reuses make_golden.py of the folder in DSA_GOLDEN_DIR (default ../shared/golden beside the
repository), with DeepSeek's inference/model.py in its ref/ (sha256 af4bff72..., see that
folder's README); each case is matched by its config.json to an entry of make_golden's
CASES (rope64-yarn-fp8 needs its entry there:
dict(args=dict(BASE, dtype="fp8", scale_fmt="ue8m0", qk_rope_head_dim=64), seed=1, batch=2,
prefill=64, decode=4)).  Importing make_golden applies its
patches to the reference module M (non-interleaved indexer RoPE, matrix
Hadamard, stable indexer top-k, recording hooks, dist.broadcast no-op, and
float32 linears).  For the bf16 run we undo the float32-linear patch:
M.linear becomes the reference's own linear (F.linear in the input's dtype).

usage: python bf16_flips.py MODE CASE_DIR [CASE_DIR ...]
  MODE = f32      : make_golden's float32 rebuild (sanity check of the loader)
  MODE = bf16     : reference in bf16; FP8 weights dequantised (exactly) to bf16
                    and multiplied with bf16 activations (no activation quant)
  MODE = bf16r    : as bf16, but each bf16 linear is computed as f32 matmul of the bf16
                    operands rounded once to bf16 (exact-accumulation variant)
  MODE = bf16act  : reference in bf16 with its own FP8 path for FP8 checkpoints:
                    act_quant (e4m3, 128-blocks) of activations + fp8_gemm
                    (f32 accumulate, output in bf16)
"""
import json, os, sys
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("DSA_GOLDEN_DIR", os.path.join(HERE, "..", "..", "..", "shared", "golden")))
import make_golden as mg  # noqa: E402  (applies the patches)
M, kernel = mg.M, mg.kernel
assert mg.DEV == "cpu"

MODE = [None]


def linear_practical(x, weight, bias=None, scale_fmt=None):
    """The reference's own linear(), bf16 in / bf16 out (f32 where it passes f32)."""
    assert bias is None
    if weight.dtype != torch.float8_e4m3fn:
        if MODE[0] == "bf16r" and x.dtype == torch.bfloat16:
            return F.linear(x.float(), weight.float()).to(x.dtype)   # f32 accumulate, one rounding
        return F.linear(x, weight)                 # bf16 x bf16 -> bf16; f32 for gate/head
    if MODE[0] == "bf16act":
        xq, s = kernel.act_quant(x, 128, scale_fmt)
        return kernel.fp8_gemm(xq, s, weight, weight.scale).to(torch.get_default_dtype())
    # dequantise: e4m3 value * power-of-two (ue8m0) scale is exact in bf16
    w = kernel.dequant_blocks(weight, weight.scale).to(x.dtype)
    if MODE[0] == "bf16r":
        return F.linear(x.float(), w.float()).to(x.dtype)
    return F.linear(x, w)


def rotate_activation(x):
    """fast_hadamard_transform stand-in: f32 math on the bf16 input, output in x's dtype
    (make_golden's version builds the +-1 matrix in the default dtype, which is bf16 here)."""
    d = x.size(-1)
    h = mg.hadamard(d, x.device).float()
    return (x.float() @ h.t() * d ** -0.5).to(x.dtype)


M.rotate_activation = rotate_activation


def find_case(cfg):
    for name, spec in mg.CASES.items():
        args = M.ModelArgs(**spec["args"])
        if mg.hf_config(args) == cfg:
            return name, spec, args
    raise SystemExit("no CASES entry matches config")


def load_model(case_dir, mode):
    cfg = json.load(open(os.path.join(case_dir, "config.json")))
    name, spec, args = find_case(cfg)
    torch.set_default_device("cpu")
    torch.set_default_dtype(torch.float32 if mode == "f32" else torch.bfloat16)
    model = M.Transformer(args)
    # the reference has a gate bias only when dim == 7168; the cases have one (f32)
    for mod in model.modules():
        if isinstance(mod, M.Gate):
            mod.bias = torch.nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=torch.float32))
    sd = load_file(os.path.join(case_dir, "model.safetensors"))
    own = model.state_dict()
    used = set()
    for n, p in own.items():
        t = sd[mg.hf_name(n)]
        used.add(mg.hf_name(n))
        assert tuple(t.shape) == tuple(p.shape), n
        if p.dtype == torch.float8_e4m3fn:
            assert t.dtype == torch.float8_e4m3fn, n
            p.data.copy_(t)
        else:
            # parameter keeps the dtype the reference gives it (bf16 default, f32 norms/head/bias)
            p.data.copy_(t.to(p.dtype))
    assert used == set(sd), set(sd) - used
    for mod in model.modules():
        if isinstance(mod, M.Linear) and mod.weight.dtype == torch.float8_e4m3fn:
            mod.weight.scale = mod.scale
    if mode == "f32":
        for mod in model.modules():
            for pn, p in list(mod.named_parameters(recurse=False)):
                if p.dtype != torch.float8_e4m3fn and p.is_floating_point():
                    p.data = p.data.float()
    model.eval()
    return name, spec, args, model


def dtypes(model):
    out = {}
    for n, p in list(model.named_parameters()) + list(model.named_buffers()):
        key = n.split(".")[-2] + "." + n.split(".")[-1] if "." in n else n
        for i in range(10):
            key = key.replace(f"{i}", "")
        out.setdefault(key, str(p.dtype).replace("torch.", ""))
    return out


def run(case_dir, mode):
    MODE[0] = mode
    if mode == "f32":
        M.linear = mg.linear
        M.weight_dequant = lambda w, s: kernel.dequant_blocks(w, s)
    else:
        M.linear = linear_practical
        M.weight_dequant = lambda w, s: kernel.dequant_blocks(w, s).to(torch.get_default_dtype())
    name, spec, args, model = load_model(case_dir, mode)
    gold = load_file(os.path.join(case_dir, "golden.safetensors"))
    B, T, D = spec["batch"], spec["prefill"], spec["decode"]
    tokens = gold["tokens"]
    rec = mg.run_case(model, args, tokens, B, T, D)
    return name, args, model, rec, gold


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm()).item()


def sel_flip(s, g):
    g = g.bool(); s = s.bool()
    return (g & ~s).sum().item(), g.sum().item()


def exp_flip(e, g):
    # chosen experts (as a set per token) not in the golden's set
    e = e.reshape(-1, e.shape[-1]); g = g.reshape(-1, g.shape[-1])
    inset = (e.unsqueeze(-1) == g.unsqueeze(-2)).any(-1)
    return (~inset).sum().item(), g.numel()


def report(case_dir, mode):
    name, args, model, rec, gold = run(case_dir, mode)
    L = args.n_layers
    row = {"case": os.path.basename(case_dir.rstrip("/")), "spec": name, "mode": mode}
    sn = sd = 0
    for i in range(L):
        n, d = sel_flip(rec[f"layer{i}.selected"], gold[f"layer{i}.selected"])
        row[f"sel{i}"] = (n, d); sn += n; sd += d
        row[f"scores{i}_rel"] = rel(rec[f"layer{i}.index_scores"], gold[f"layer{i}.index_scores"])
        row[f"hidden{i}_rel"] = rel(rec[f"layer{i}.hidden"], gold[f"layer{i}.hidden"])
    row["sel_sum"] = (sn, sd)
    en = ed = 0
    dn = dd = 0
    for i in range(args.n_dense_layers, L):
        n, d = exp_flip(rec[f"layer{i}.experts"], gold[f"layer{i}.experts"])
        row[f"exp{i}"] = (n, d); en += n; ed += d
        n2, d2 = exp_flip(rec[f"decode.layer{i}.experts"], gold[f"decode.layer{i}.experts"])
        row[f"dexp{i}"] = (n2, d2); dn += n2; dd += d2
    row["exp_sum"] = (en, ed)
    row["dexp_sum"] = (dn, dd)
    row["dsel0_last"] = sel_flip(rec["decode.layer0.selected_last"], gold["decode.layer0.selected_last"])
    row["logits_rel"] = rel(rec["logits"], gold["logits"])
    row["decode_logits_rel"] = rel(rec["decode_logits"], gold["decode_logits"])
    row["attn_out0_rel"] = rel(rec["layer0.attn_out"], gold["layer0.attn_out"])
    row["dtypes"] = dtypes(model)
    row["rec_dtypes"] = {k: str(v.dtype).replace("torch.", "") for k, v in rec.items()
                         if k in ("logits", "layer0.hidden", "layer0.index_scores", "layer0.qr", "layer0.attn_out")}
    return row


def pct(t):
    n, d = t
    return f"{100.0 * n / d:6.2f}% ({n}/{d})"


if __name__ == "__main__":
    mode = sys.argv[1]
    assert mode in ("f32", "bf16", "bf16act", "bf16r")
    rows = []
    for c in sys.argv[2:]:
        r = report(c, mode)
        rows.append(r)
        print(f"== {r['case']} (CASES[{r['spec']}]) mode={mode}")
        for k, v in r.items():
            if isinstance(v, tuple):
                print(f"  {k:14s} {pct(v)}")
            elif isinstance(v, float):
                print(f"  {k:14s} {v:.6g}")
        print("  param/buffer dtypes:", r["dtypes"])
        print("  recorded dtypes:", r["rec_dtypes"])
        sys.stdout.flush()
    out = f"results_{mode}.json"  # in the working directory
    json.dump(rows, open(out, "w"), indent=1)
