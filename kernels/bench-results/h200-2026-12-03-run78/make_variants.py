# Run 78's variants of the library's v7 backward (kernels/src/cuda/sparse_mla_bwd_wgmma.cu at
# commit f69af58: mathpf landed after it), each written to <variant>/sparse_mla_bwd_wgmma.cu.
# From this folder: python3 make_variants.py
import os

src = open("../../src/cuda/sparse_mla_bwd_wgmma.cu").read()
base = src.replace("#define DSB_PREFETCH_ROWS 32768", "#define DSB_PREFETCH_ROWS 0")
producer_prefetch = '''                if (warm_dkv) {
                    // The block's dkv rows into L2 ahead of its reductions (a block from now):
                    // 18 lines of 128 bytes a row, lines c, c + 8, c + 16 by piece c.
#pragma unroll
                    for (u32 j = 0; j < 4; ++j) {
                        const long long row = rows[half][j];
                        if (row < 0) continue;
                        const char* line = (const char*)(dkv_b + (u64)row * 576) + c * 128;
                        for (u32 l = c; l < 18; l += 8, line += 8 * 128) asm volatile("prefetch.global.L2 [%0];\\n" ::"l"(line));
                    }
                }
'''
block_start = '''        const int* rws = s_rows + list * 64;
        if (wg == 0) {'''
math_prefetch = '''        const int* rws = s_rows + list * 64;
        if (p.f.bt_len / p.f.t_len * p.f.s_len > DSB_PREFETCH_ROWS) {
            // This block's dkv rows into L2 ahead of its reductions (after S or dP, dS and dQ):
            // row tid / 4, lines tid % 4 + 4 m.
            dsa_bar_wait(rows_ready(list), (blk >> 1) & 1);
            const int row = rws[tid / 4];
            if (row >= 0) {
                const char* line = (const char*)(dkv + ((u64)b * p.f.s_len + (u64)row) * 576) + (tid % 4) * 128;
                for (u32 l = tid % 4; l < 18; l += 4, line += 4 * 128) asm volatile("prefetch.global.L2 [%0];\\n" ::"l"(line));
            }
        }
        if (wg == 0) {'''
assert producer_prefetch in base and block_start in base
mathpf = base.replace(producer_prefetch, "").replace(block_start, math_prefetch)

gather = "                        wg_cp_async(k_addr + tile * DSA_TILE + r * 128 + ((c ^ (r & 7)) << 4), src, row >= 0);"
gather_ef = '                        asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\\n" ::"r"(k_addr + tile * DSA_TILE + r * 128 + ((c ^ (r & 7)) << 4)), "l"(src), "r"(row >= 0 ? 16 : 0), "l"(gather_policy) : "memory");'
rows_decl = "        long long rows[2][4];\n"
policy = rows_decl + '        u64 gather_policy;\n        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\\n" : "=l"(gather_policy));\n'


def ef(s):
    assert gather in s and rows_decl in s
    return s.replace(gather, gather_ef).replace(rows_decl, policy, 1)


for name, s in [("base", base), ("mathpf", mathpf), ("ef", ef(base)), ("mathpf_ef", ef(mathpf))]:
    os.makedirs(name, exist_ok=True)
    open(os.path.join(name, "sparse_mla_bwd_wgmma.cu"), "w").write(s)
