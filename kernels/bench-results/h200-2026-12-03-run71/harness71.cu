// Run 71: v7 (kernels/src/cuda) against a variant given by the include path (-I variant first):
// l2hint/ = dkv reductions with an L2 evict_last policy, latent gathers with evict_first.
// Timing only (run 70's harness checks correctness): 4K queries over 4K and 128K latents.
#define main main70
#include "../h200-2026-12-03-run70/harness_bwd.cu"
#undef main
int main(int argc, char** argv) {
    if (argc > 1) {  // correctness of the variant too
        run(8, 128, 300, 150, true, true, 1);
        run(6, 70, 5000, 2048, false, true, 1);
    }
    run(4096, 128, 4096, 2048, false, false, 10);
    run(4096, 128, 131072, 2048, false, false, 10);
    return 0;
}
