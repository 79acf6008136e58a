# Diagnosis: the peer's decode under PyTorch's two allocators (native vs cudaMallocAsync,
# the one CubeCL's CUDA runtime uses), and with a narrow selection span.
import json, sys, torch
sys.path.insert(0, ".")
import peer_torch as p
for L in [int(x) for x in sys.argv[1].split(",")]:
    ms, by, fl = p.sparse_decode(L, 2048)
    print(json.dumps(dict(op="peer_decode_b64", L=L, ms=round(ms, 4),
                          alloc=torch.cuda.get_allocator_backend())), flush=True)
    torch.cuda.empty_cache()
