# Run 75: v7 (base.cubin) against v7 + the dkv rows prefetched into L2 a block ahead
# (prefetch.cubin = v7 with prefetch.patch), timing only, 4K queries over 4K and 128K latents.
# The cubins (run.sh builds them with nvcc from the sources the library concatenates) are
# launched with the driver API on PyTorch's tensors; `out` and `lse` are stand-ins (random,
# 10), which change no timing. From the cubins' folder: python3 harness75.py [VARIANTS [LATENTS]]
# (comma-separated; run 75's: base,prefetch,prefetch_el and 4096,131072).
import ctypes, os, struct, sys, torch

cuda = ctypes.CDLL("libcuda.so.1")
torch.zeros(1, device="cuda")
SMEM = 231584  # DSB_SMEM_BYTES
VARIANTS = (sys.argv[1] if len(sys.argv) > 1 else "base,prefetch,prefetch_el").split(",")
LATENTS = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "4096,131072").split(",")]


def check(r, what):
    if r != 0:
        raise SystemExit(f"{what}: CUresult {r}")


class Params(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in "bt_len t_len heads kk s_len q_sb q_st q_sh kv_sb kv_ss scale_bits idx_bytes valid_bytes has_dout has_dlse".split()]


def load(name):
    mod, f = ctypes.c_void_p(), ctypes.c_void_p()
    check(cuda.cuModuleLoad(ctypes.byref(mod), os.path.abspath(name).encode()), "cuModuleLoad " + name)
    check(cuda.cuModuleGetFunction(ctypes.byref(f), mod, b"dsa_sparse_mla_bwd_wgmma"), "cuModuleGetFunction")
    check(cuda.cuFuncSetAttribute(f, 8, SMEM), "cuFuncSetAttribute")
    return f


def case(T, H, S, K):
    g = torch.Generator(device="cuda").manual_seed(T + S)
    bf = torch.bfloat16
    q = torch.randn(T, H, 576, device="cuda", generator=g).to(bf)
    kv = torch.randn(S, 576, device="cuda", generator=g).to(bf)
    idx = torch.randint(0, S, (T, K), device="cuda", dtype=torch.int32, generator=g)
    valid = torch.ones(T, K, device="cuda", dtype=torch.bool)
    out = torch.randn(T, H, 512, device="cuda", generator=g).to(bf)
    lse = torch.full((T, H), 10.0, device="cuda", dtype=bf)
    dout = torch.randn(T, H, 512, device="cuda", generator=g).to(bf)
    dq = torch.empty(T, H, 576, device="cuda", dtype=bf)
    dkv = torch.zeros(S, 576, device="cuda", dtype=torch.float32)
    scale_bits = struct.unpack("<I", struct.pack("<f", 192 ** -0.5))[0]
    p = Params(T, T, H, K, S, T * H * 576, H * 576, 576, S * 576, 576, scale_bits, 4, 1, 1, 0)
    ptrs = [ctypes.c_void_p(t.data_ptr()) for t in (q, kv, idx, valid, out, lse, dout, dout, dq, dkv)]
    args = (ctypes.c_void_p * 11)(*[ctypes.cast(ctypes.byref(a), ctypes.c_void_p) for a in ptrs + [p]])
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    # The tensors and the argument objects whose addresses `args` holds stay alive with it.
    return (args, stream, T * ((H + 63) // 64), (q, kv, idx, valid, out, lse, dout, dq, dkv, p, ptrs))


def time(f, c, reps=10):
    args, stream, grid, _ = c
    launch = lambda: check(cuda.cuLaunchKernel(f, grid, 1, 1, 384, 1, 1, SMEM, stream, args, None), "cuLaunchKernel")
    launch()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        launch()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


kernels = {v: load(v + ".cubin") for v in VARIANTS}
for S in LATENTS:
    c = case(4096, 128, S, 2048)
    flops = 2.0 * 4096 * 128 * 2048 * (3 * 576 + 2 * 512)
    for v in VARIANTS * 2:
        ms = time(kernels[v], c)
        print(f"{v:8} T=4096 H=128 S={S} K=2048: {ms:.4f} ms, {flops / ms / 1e9:.1f} TFLOP/s", flush=True)
