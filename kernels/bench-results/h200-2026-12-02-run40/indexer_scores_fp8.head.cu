l_mut_30 = l_29;
const bool l_31 = l_9 < info.scalars_uint32[1];
if (l_31) {
const float l_32 = l_mut_13 / l_mut_30;
const float l_33 = max(float(-448.0), min(float(448.0), l_32));
const uint32 l_34 = reinterpret_cast<uint32 const&>(l_33);
const uint32 l_35 = l_34 & uint32(2147483647);
const uint32 l_36 = l_35 >> uint32(23);
l_mut_13 = float(0.0);
const bool l_37 = l_36 != uint32(0);
if (l_37) {
const int32 l_38 = int32(l_36);
const int32 l_39 = l_38 - int32(127);
const uint32 l_40 = l_35 & uint32(8388607);
const uint32 l_41 = l_40 | uint32(8388608);
const int32 l_42 = int32(14) - l_39;
l_mut_43 = l_42;
const bool l_44 = l_mut_43 < int32(20);
if (l_44) {
l_mut_43 = int32(20);
}
const bool l_45 = l_mut_43 < int32(25);
if (l_45) {
const uint32 l_46 = uint32(l_mut_43);
const uint32 l_47 = l_41 >> l_46;
l_mut_19 = l_47;
const uint32 l_48 = uint32(1) << l_46;
const uint32 l_49 = l_48 - uint32(1);
const uint32 l_50 = l_41 & l_49;
const uint32 l_51 = l_46 - uint32(1);
const uint32 l_52 = uint32(1) << l_51;
const bool l_53 = l_50 > l_52;
const bool l_54 = l_50 == l_52;
const uint32 l_55 = l_mut_19 & uint32(1);
const bool l_56 = l_55 == uint32(1);
const bool l_57 = l_54 && l_56;
const bool l_58 = l_53 || l_57;
if (l_58) {
l_mut_19 = l_mut_19 + uint32(1);
}
const int32 l_59 = l_39 - int32(23);
const int32 l_60 = l_59 + l_mut_43;
const int32 l_61 = l_60 + int32(127);
const uint32 l_62 = uint32(l_61);
const uint32 l_63 = l_62 << uint32(23);
const float l_64 = reinterpret_cast<float const&>(l_63);
const float l_65 = float(l_mut_19);
const float l_66 = l_65 * l_64;
l_mut_13 = l_66;
}
}
const uint32 l_67 = reinterpret_cast<uint32 const&>(l_mut_13);
const uint32 l_68 = l_34 & uint32(2147483648);
const uint32 l_69 = l_67 | l_68;
const float l_70 = reinterpret_cast<float const&>(l_69);
const __nv_fp8_storage_t l_71 = __nv_cvt_float_to_fp8(l_70, __NV_NOSAT, __NV_E4M3);
const uint32 l_80 = info.static_meta[uint32(1)];
const uint32 l_81 = l_80 * uint32(1);
const bool l_82 = l_12 < l_81;
if (l_82) {
buffer_1[l_12] = l_71;
}
}
const bool l_72 = threadIdxGlobal == uint32(0);
if (l_72) {
const uint32 l_83 = info.static_meta[uint32(2)];
const uint32 l_84 = l_83 * uint32(1);
const bool l_85 = l_4 < l_84;
if (l_85) {
buffer_2[l_4] = l_mut_30;
}
}

}
```
[END_KERNEL_COMPILATION]

| 116.95331ms | QuantizeBlockKernel | CudaRuntime
| 61.154µs   | QuantizeBlockKernel | CudaRuntime
[START_KERNEL_COMPILATION]
name: dsa_kernels::indexer_fp8::indexer_scores_fp8::IndexerScoresFp8<
    cubecl_cuda::runtime::CudaRuntime,
>
id: KernelId {
    type: dsa_kernels::indexer_fp8::indexer_scores_fp8::IndexerScoresFp8<cubecl_cuda::runtime::CudaRuntime>,
    address_type: U32,
    cube_dim: CubeDim {
        x: 256,
        y: 1,
        z: 1,
    },
    mode: Unchecked,
    info: IndexerScoresFp8Info {
        causal: true,
        d: 128,
        mt: 4,
        kp: 1,
        chunk: 2048,
        dtypes: [
            Scalar(Float(BF16)),
            Scalar(Float(F32)),
        ],
        q: TensorCompilationArg {
            inplace: None,
        },
        w: TensorCompilationArg {
            inplace: None,
        },
        sq: TensorCompilationArg {
            inplace: None,
        },
        k: TensorCompilationArg {
            inplace: None,
        },
        sk: TensorCompilationArg {
            inplace: None,
        },
        out: TensorCompilationArg {
            inplace: None,
        },
        t_len: (),
        s_len: (),
        heads: (),
        offset: (),
        neg_inf: (),
    },
}
source:
```cpp
#include <cuda_runtime.h>
#include <cuda_fp8.h>
#include <cuda_bf16.h>
#include <mma.h>
typedef unsigned int uint;
typedef unsigned char uint8;
typedef unsigned short uint16;
typedef unsigned int uint32;
typedef unsigned long long int uint64;
typedef signed char int8;
typedef signed short int16;
typedef signed int int32;
typedef signed long long int int64;

struct __align__(8) __nv_fp8_storage_t_8 {
    __nv_fp8_storage_t i_0;
    __nv_fp8_storage_t i_1;
    __nv_fp8_storage_t i_2;
    __nv_fp8_storage_t i_3;
    __nv_fp8_storage_t i_4;
    __nv_fp8_storage_t i_5;
    __nv_fp8_storage_t i_6;
    __nv_fp8_storage_t i_7;
};
struct __align__(8) float_2 {
    float i_0;
    float i_1;
};
struct __align__(8) __nv_fp8x2_storage_t_4 {
    __nv_fp8x2_storage_t i_0;
    __nv_fp8x2_storage_t i_1;
    __nv_fp8x2_storage_t i_2;
    __nv_fp8x2_storage_t i_3;
};
struct __align__(4) __nv_fp8_storage_t_4 {
    __nv_fp8_storage_t i_0;
    __nv_fp8_storage_t i_1;
    __nv_fp8_storage_t i_2;
    __nv_fp8_storage_t i_3;
};
struct __align__(4) __nv_fp8x2_storage_t_2 {
    __nv_fp8x2_storage_t i_0;
    __nv_fp8x2_storage_t i_1;
};
struct info_st {
    float scalars_float[2];
uint32 scalars_uint32[4];uint32 static_meta[30];
};

inline __device__ void
__mma_m16n8k32___nv_fp8_storage_t___nv_fp8_storage_t_float(uint32 const &reg_a_0, uint32 const &reg_a_1, uint32 const &reg_a_2, uint32 const &reg_a_3, uint32 const &reg_b_0, uint32 const &reg_b_1, float const &reg_c_0, float const &reg_c_1, float const &reg_c_2, float const &reg_c_3, float &reg_d_0, float &reg_d_1, float &reg_d_2, float &reg_d_3) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"
               " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
               : "=f"(reg_d_0), "=f"(reg_d_1), "=f"(reg_d_2), "=f"(reg_d_3)
               : "r"(reg_a_0), "r"(reg_a_1), "r"(reg_a_2), "r"(reg_a_3), "r"(reg_b_0), "r"(reg_b_1), "f"(reg_c_0), "f"(reg_c_1), "f"(reg_c_2), "f"(reg_c_3));
    }
    

extern "C" __global__ void __launch_bounds__(256)indexer_scores_fp8_f_bf16_sc_f32 (
    const __nv_fp8_storage_t_4* __restrict__ buffer_0, const __nv_bfloat16* __restrict__ buffer_1, const float* __restrict__ buffer_2, const __nv_fp8_storage_t_8* __restrict__ buffer_3, const float* __restrict__ buffer_4, __nv_bfloat16* buffer_5, const uint32* __restrict__ dynamic_meta, const __grid_constant__ info_st info
) {
uint32 threadIdxGlobal = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * (blockDim.x * blockDim.y);
uint32 warpSizeChecked = min(warpSize, blockDim.x * blockDim.y * blockDim.z);
extern __shared__ __align__(8) uint8 dynamic_shared_mem[];
// Shared array size: 64, 256 bytes
float *shared_memory_34 = reinterpret_cast<float*>(&dynamic_shared_mem[8704]);
// Shared array size: 1088, 8704 bytes
__nv_fp8_storage_t_8 *shared_memory_33 = reinterpret_cast<__nv_fp8_storage_t_8*>(&dynamic_shared_mem[0]);
__nv_fp8_storage_t_4 l_arr_36[64];

float l_arr_37[8];

__nv_fp8_storage_t_8 l_arr_903[4];

float_2 l_arr_1107[8];

__nv_fp8_storage_t_8 l_arr_1116[1];

__nv_fp8_storage_t_4 l_arr_1122[4];

float_2 l_arr_1127[2];

__nv_fp8_storage_t_4 l_arr_1132[4];

float_2 l_arr_1137[2];

__nv_fp8_storage_t_4 l_arr_1142[4];

float_2 l_arr_1147[2];

__nv_fp8_storage_t_4 l_arr_1152[4];

float_2 l_arr_1157[2];

__nv_fp8_storage_t_8 l_arr_1162[1];

__nv_fp8_storage_t_4 l_arr_1168[4];

float_2 l_arr_1173[2];

__nv_fp8_storage_t_4 l_arr_1178[4];

float_2 l_arr_1183[2];

__nv_fp8_storage_t_4 l_arr_1188[4];

float_2 l_arr_1193[2];

__nv_fp8_storage_t_4 l_arr_1198[4];

float_2 l_arr_1203[2];

__nv_fp8_storage_t_8 l_arr_1208[1];

__nv_fp8_storage_t_4 l_arr_1214[4];

float_2 l_arr_1219[2];

__nv_fp8_storage_t_4 l_arr_1224[4];

float_2 l_arr_1229[2];

__nv_fp8_storage_t_4 l_arr_1234[4];

float_2 l_arr_1239[2];

__nv_fp8_storage_t_4 l_arr_1244[4];

float_2 l_arr_1249[2];

__nv_fp8_storage_t_8 l_arr_1254[1];

__nv_fp8_storage_t_4 l_arr_1260[4];

float_2 l_arr_1265[2];

__nv_fp8_storage_t_4 l_arr_1270[4];

float_2 l_arr_1275[2];

__nv_fp8_storage_t_4 l_arr_1280[4];

float_2 l_arr_1285[2];

__nv_fp8_storage_t_4 l_arr_1290[4];

float_2 l_arr_1295[2];

float l_arr_1102[16];

float_2 l_arr_1386[8];

__nv_fp8_storage_t_8 l_arr_1395[1];

__nv_fp8_storage_t_4 l_arr_1401[4];

float_2 l_arr_1406[2];

__nv_fp8_storage_t_4 l_arr_1411[4];

float_2 l_arr_1416[2];

__nv_fp8_storage_t_4 l_arr_1421[4];

float_2 l_arr_1426[2];

__nv_fp8_storage_t_4 l_arr_1431[4];

float_2 l_arr_1436[2];

__nv_fp8_storage_t_8 l_arr_1441[1];

__nv_fp8_storage_t_4 l_arr_1447[4];

float_2 l_arr_1452[2];

__nv_fp8_storage_t_4 l_arr_1457[4];

float_2 l_arr_1462[2];

__nv_fp8_storage_t_4 l_arr_1467[4];

float_2 l_arr_1472[2];

__nv_fp8_storage_t_4 l_arr_1477[4];

float_2 l_arr_1482[2];

__nv_fp8_storage_t_8 l_arr_1487[1];

__nv_fp8_storage_t_4 l_arr_1493[4];

float_2 l_arr_1498[2];

__nv_fp8_storage_t_4 l_arr_1503[4];

float_2 l_arr_1508[2];

__nv_fp8_storage_t_4 l_arr_1513[4];

float_2 l_arr_1518[2];

__nv_fp8_storage_t_4 l_arr_1523[4];

float_2 l_arr_1528[2];

__nv_fp8_storage_t_8 l_arr_1533[1];

__nv_fp8_storage_t_4 l_arr_1539[4];

float_2 l_arr_1544[2];

__nv_fp8_storage_t_4 l_arr_1549[4];

float_2 l_arr_1554[2];

__nv_fp8_storage_t_4 l_arr_1559[4];

float_2 l_arr_1564[2];

__nv_fp8_storage_t_4 l_arr_1569[4];

float_2 l_arr_1574[2];

float_2 l_arr_1663[8];

__nv_fp8_storage_t_8 l_arr_1672[1];

__nv_fp8_storage_t_4 l_arr_1678[4];

float_2 l_arr_1683[2];

__nv_fp8_storage_t_4 l_arr_1688[4];

float_2 l_arr_1693[2];

__nv_fp8_storage_t_4 l_arr_1698[4];

float_2 l_arr_1703[2];

__nv_fp8_storage_t_4 l_arr_1708[4];

float_2 l_arr_1713[2];

__nv_fp8_storage_t_8 l_arr_1718[1];

__nv_fp8_storage_t_4 l_arr_1724[4];

float_2 l_arr_1729[2];

__nv_fp8_storage_t_4 l_arr_1734[4];

float_2 l_arr_1739[2];

__nv_fp8_storage_t_4 l_arr_1744[4];

float_2 l_arr_1749[2];

__nv_fp8_storage_t_4 l_arr_1754[4];

float_2 l_arr_1759[2];

__nv_fp8_storage_t_8 l_arr_1764[1];

__nv_fp8_storage_t_4 l_arr_1770[4];

float_2 l_arr_1775[2];

__nv_fp8_storage_t_4 l_arr_1780[4];

float_2 l_arr_1785[2];

__nv_fp8_storage_t_4 l_arr_1790[4];

float_2 l_arr_1795[2];

__nv_fp8_storage_t_4 l_arr_1800[4];

float_2 l_arr_1805[2];

__nv_fp8_storage_t_8 l_arr_1810[1];

__nv_fp8_storage_t_4 l_arr_1816[4];

float_2 l_arr_1821[2];

__nv_fp8_storage_t_4 l_arr_1826[4];

float_2 l_arr_1831[2];

__nv_fp8_storage_t_4 l_arr_1836[4];

float_2 l_arr_1841[2];

__nv_fp8_storage_t_4 l_arr_1846[4];

float_2 l_arr_1851[2];

float_2 l_arr_1940[8];

__nv_fp8_storage_t_8 l_arr_1949[1];

__nv_fp8_storage_t_4 l_arr_1955[4];

float_2 l_arr_1960[2];

__nv_fp8_storage_t_4 l_arr_1965[4];

float_2 l_arr_1970[2];

__nv_fp8_storage_t_4 l_arr_1975[4];

float_2 l_arr_1980[2];

__nv_fp8_storage_t_4 l_arr_1985[4];

float_2 l_arr_1990[2];

__nv_fp8_storage_t_8 l_arr_1995[1];

__nv_fp8_storage_t_4 l_arr_2001[4];

float_2 l_arr_2006[2];

__nv_fp8_storage_t_4 l_arr_2011[4];

float_2 l_arr_2016[2];

__nv_fp8_storage_t_4 l_arr_2021[4];

float_2 l_arr_2026[2];

__nv_fp8_storage_t_4 l_arr_2031[4];

float_2 l_arr_2036[2];

__nv_fp8_storage_t_8 l_arr_2041[1];

__nv_fp8_storage_t_4 l_arr_2047[4];

float_2 l_arr_2052[2];

__nv_fp8_storage_t_4 l_arr_2057[4];

float_2 l_arr_2062[2];

__nv_fp8_storage_t_4 l_arr_2067[4];

float_2 l_arr_2072[2];

__nv_fp8_storage_t_4 l_arr_2077[4];

float_2 l_arr_2082[2];

__nv_fp8_storage_t_8 l_arr_2087[1];

__nv_fp8_storage_t_4 l_arr_2093[4];

float_2 l_arr_2098[2];

__nv_fp8_storage_t_4 l_arr_2103[4];

float_2 l_arr_2108[2];

__nv_fp8_storage_t_4 l_arr_2113[4];

float_2 l_arr_2118[2];

__nv_fp8_storage_t_4 l_arr_2123[4];

float_2 l_arr_2128[2];

float_2 l_arr_2217[8];

__nv_fp8_storage_t_8 l_arr_2226[1];

__nv_fp8_storage_t_4 l_arr_2232[4];

float_2 l_arr_2237[2];

__nv_fp8_storage_t_4 l_arr_2242[4];

float_2 l_arr_2247[2];

__nv_fp8_storage_t_4 l_arr_2252[4];

float_2 l_arr_2257[2];

__nv_fp8_storage_t_4 l_arr_2262[4];

float_2 l_arr_2267[2];

__nv_fp8_storage_t_8 l_arr_2272[1];

__nv_fp8_storage_t_4 l_arr_2278[4];

float_2 l_arr_2283[2];

__nv_fp8_storage_t_4 l_arr_2288[4];

float_2 l_arr_2293[2];

__nv_fp8_storage_t_4 l_arr_2298[4];

float_2 l_arr_2303[2];

__nv_fp8_storage_t_4 l_arr_2308[4];

float_2 l_arr_2313[2];

__nv_fp8_storage_t_8 l_arr_2318[1];

__nv_fp8_storage_t_4 l_arr_2324[4];

float_2 l_arr_2329[2];

__nv_fp8_storage_t_4 l_arr_2334[4];

float_2 l_arr_2339[2];

__nv_fp8_storage_t_4 l_arr_2344[4];

float_2 l_arr_2349[2];

__nv_fp8_storage_t_4 l_arr_2354[4];

float_2 l_arr_2359[2];

__nv_fp8_storage_t_8 l_arr_2364[1];

__nv_fp8_storage_t_4 l_arr_2370[4];

float_2 l_arr_2375[2];

__nv_fp8_storage_t_4 l_arr_2380[4];

float_2 l_arr_2385[2];

__nv_fp8_storage_t_4 l_arr_2390[4];

float_2 l_arr_2395[2];

__nv_fp8_storage_t_4 l_arr_2400[4];

float_2 l_arr_2405[2];

float_2 l_arr_2494[8];

__nv_fp8_storage_t_8 l_arr_2503[1];

__nv_fp8_storage_t_4 l_arr_2509[4];

float_2 l_arr_2514[2];

__nv_fp8_storage_t_4 l_arr_2519[4];

float_2 l_arr_2524[2];

__nv_fp8_storage_t_4 l_arr_2529[4];

float_2 l_arr_2534[2];

__nv_fp8_storage_t_4 l_arr_2539[4];

float_2 l_arr_2544[2];

__nv_fp8_storage_t_8 l_arr_2549[1];

__nv_fp8_storage_t_4 l_arr_2555[4];

float_2 l_arr_2560[2];

__nv_fp8_storage_t_4 l_arr_2565[4];

float_2 l_arr_2570[2];

__nv_fp8_storage_t_4 l_arr_2575[4];

float_2 l_arr_2580[2];

__nv_fp8_storage_t_4 l_arr_2585[4];

float_2 l_arr_2590[2];

__nv_fp8_storage_t_8 l_arr_2595[1];

__nv_fp8_storage_t_4 l_arr_2601[4];

float_2 l_arr_2606[2];

__nv_fp8_storage_t_4 l_arr_2611[4];

float_2 l_arr_2616[2];

__nv_fp8_storage_t_4 l_arr_2621[4];

float_2 l_arr_2626[2];

__nv_fp8_storage_t_4 l_arr_2631[4];

float_2 l_arr_2636[2];

__nv_fp8_storage_t_8 l_arr_2641[1];

__nv_fp8_storage_t_4 l_arr_2647[4];

float_2 l_arr_2652[2];

__nv_fp8_storage_t_4 l_arr_2657[4];

float_2 l_arr_2662[2];

__nv_fp8_storage_t_4 l_arr_2667[4];

float_2 l_arr_2672[2];

__nv_fp8_storage_t_4 l_arr_2677[4];

float_2 l_arr_2682[2];

float_2 l_arr_2771[8];

__nv_fp8_storage_t_8 l_arr_2780[1];

__nv_fp8_storage_t_4 l_arr_2786[4];

float_2 l_arr_2791[2];

__nv_fp8_storage_t_4 l_arr_2796[4];

float_2 l_arr_2801[2];

__nv_fp8_storage_t_4 l_arr_2806[4];

float_2 l_arr_2811[2];

__nv_fp8_storage_t_4 l_arr_2816[4];

float_2 l_arr_2821[2];

__nv_fp8_storage_t_8 l_arr_2826[1];

__nv_fp8_storage_t_4 l_arr_2832[4];

float_2 l_arr_2837[2];

__nv_fp8_storage_t_4 l_arr_2842[4];

float_2 l_arr_2847[2];

__nv_fp8_storage_t_4 l_arr_2852[4];

float_2 l_arr_2857[2];

__nv_fp8_storage_t_4 l_arr_2862[4];

float_2 l_arr_2867[2];

__nv_fp8_storage_t_8 l_arr_2872[1];

__nv_fp8_storage_t_4 l_arr_2878[4];

float_2 l_arr_2883[2];

__nv_fp8_storage_t_4 l_arr_2888[4];

float_2 l_arr_2893[2];

__nv_fp8_storage_t_4 l_arr_2898[4];

float_2 l_arr_2903[2];

__nv_fp8_storage_t_4 l_arr_2908[4];

float_2 l_arr_2913[2];

__nv_fp8_storage_t_8 l_arr_2918[1];

__nv_fp8_storage_t_4 l_arr_2924[4];

float_2 l_arr_2929[2];

__nv_fp8_storage_t_4 l_arr_2934[4];

float_2 l_arr_2939[2];

__nv_fp8_storage_t_4 l_arr_2944[4];

float_2 l_arr_2949[2];

__nv_fp8_storage_t_4 l_arr_2954[4];

float_2 l_arr_2959[2];

float_2 l_arr_3048[8];

__nv_fp8_storage_t_8 l_arr_3057[1];

__nv_fp8_storage_t_4 l_arr_3063[4];

float_2 l_arr_3068[2];

__nv_fp8_storage_t_4 l_arr_3073[4];

float_2 l_arr_3078[2];

__nv_fp8_storage_t_4 l_arr_3083[4];

float_2 l_arr_3088[2];

__nv_fp8_storage_t_4 l_arr_3093[4];

float_2 l_arr_3098[2];

__nv_fp8_storage_t_8 l_arr_3103[1];

__nv_fp8_storage_t_4 l_arr_3109[4];

float_2 l_arr_3114[2];

__nv_fp8_storage_t_4 l_arr_3119[4];

float_2 l_arr_3124[2];

__nv_fp8_storage_t_4 l_arr_3129[4];

float_2 l_arr_3134[2];

__nv_fp8_storage_t_4 l_arr_3139[4];

float_2 l_arr_3144[2];

__nv_fp8_storage_t_8 l_arr_3149[1];

__nv_fp8_storage_t_4 l_arr_3155[4];

float_2 l_arr_3160[2];

__nv_fp8_storage_t_4 l_arr_3165[4];

float_2 l_arr_3170[2];

__nv_fp8_storage_t_4 l_arr_3175[4];

float_2 l_arr_3180[2];

__nv_fp8_storage_t_4 l_arr_3185[4];

float_2 l_arr_3190[2];

__nv_fp8_storage_t_8 l_arr_3195[1];

__nv_fp8_storage_t_4 l_arr_3201[4];

float_2 l_arr_3206[2];

__nv_fp8_storage_t_4 l_arr_3211[4];

float_2 l_arr_3216[2];

__nv_fp8_storage_t_4 l_arr_3221[4];

float_2 l_arr_3226[2];

__nv_fp8_storage_t_4 l_arr_3231[4];

float_2 l_arr_3236[2];

uint32 l_mut_21;
uint32 l_mut_24;
uint32 l_mut_26;
uint32 l_mut_904;
float l_mut_142;
float l_mut_1300;
float l_mut_1301;
const uint32 l_0 = info.scalars_uint32[0] + uint32(8);
const uint32 l_1 = l_0 - uint32(1);
const uint32 l_2 = l_1 / uint32(8);
const uint32 l_3 = blockIdx.y * gridDim.x;
const uint32 l_4 = l_3 + blockIdx.x;
const uint32 l_5 = dynamic_meta[info.static_meta[uint32(23)] + uint32(0)];
const uint32 l_6 = l_5 * l_2;
const bool l_7 = l_4 >= l_6;
if (l_7) {
return;}
const uint32 l_8 = l_4 / l_2;
const uint32 l_9 = l_4 % l_2;
const uint32 l_10 = l_9 * uint32(8);
const uint32 l_11 = threadIdxGlobal / uint32(32);
const uint32 l_12 = threadIdxGlobal % uint32(32);
const uint32 l_13 = l_12 / uint32(4);
const uint32 l_14 = l_12 % uint32(4);
const uint32 l_15 = l_11 / uint32(1);
const uint32 l_16 = l_10 + l_15;
const uint32 l_17 = l_11 % uint32(1);
const bool l_18 = l_16 < info.scalars_uint32[0];
const uint32 l_19 = blockIdx.z * uint32(2048);
const uint32 l_20 = l_19 + uint32(2048);
l_mut_21 = l_20;
const bool l_22 = l_mut_21 > info.scalars_uint32[1];
if (l_22) {
l_mut_21 = info.scalars_uint32[1];
}
const uint32 l_23 = l_10 + uint32(8);
l_mut_24 = l_23;
const bool l_25 = l_mut_24 > info.scalars_uint32[0];
if (l_25) {
l_mut_24 = info.scalars_uint32[0];
}
l_mut_24 = l_mut_24 - uint32(1);
l_mut_26 = l_mut_21;
const uint32 l_27 = l_mut_24 + info.scalars_uint32[3];
const uint32 l_28 = l_27 + uint32(1);
const bool l_29 = l_28 < l_mut_26;
const bool l_30 = bool(true) && l_29;
if (l_30) {
const uint32 l_31 = l_mut_24 + info.scalars_uint32[3];
const uint32 l_32 = l_31 + uint32(1);
l_mut_26 = l_32;
}
l_mut_24 = l_19;
const bool l_35 = l_19 < l_mut_26;
if (l_35) {
const uint32 l_38 = uint32(0) + l_13;
const uint32 l_39 = l_38 + uint32(0);
const bool l_40 = l_39 < info.scalars_uint32[2];
const bool l_41 = l_18 && l_40;
const uint32 l_42 = l_8 * info.scalars_uint32[0];
const uint32 l_43 = l_42 + l_16;
const uint32 l_44 = l_43 * info.scalars_uint32[2];
const uint32 l_45 = l_44 + l_39;
const uint32 l_46 = l_14 * uint32(8);
const uint32 l_47 = l_46 + uint32(0);
const uint32 l_48 = l_47 + uint32(0);
const bool l_49 = l_48 < uint32(32);
const bool l_50 = l_41 && l_49;
const uint32 l_51 = l_45 * uint32(32);
const uint32 l_52 = l_51 + l_48;
const uint32 l_53 = (l_50) ? l_52 : uint32(0);
const __nv_fp8_storage_t_4 l_54 = buffer_0[l_53];
const uint32 l_55 = reinterpret_cast<uint32 const&>(l_54);
const uint32 l_56 = (l_50) ? l_55 : uint32(0);
const __nv_fp8_storage_t_4 l_57 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_56);
l_arr_36[uint32(0)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_57);
const uint32 l_58 = l_14 * uint32(8);
const uint32 l_59 = l_58 + uint32(0);
const uint32 l_60 = l_59 + uint32(1);
const bool l_61 = l_60 < uint32(32);
const bool l_62 = l_41 && l_61;
const uint32 l_63 = l_45 * uint32(32);
const uint32 l_64 = l_63 + l_60;
const uint32 l_65 = (l_62) ? l_64 : uint32(0);
const __nv_fp8_storage_t_4 l_66 = buffer_0[l_65];
const uint32 l_67 = reinterpret_cast<uint32 const&>(l_66);
const uint32 l_68 = (l_62) ? l_67 : uint32(0);
const __nv_fp8_storage_t_4 l_69 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_68);
l_arr_36[uint32(2)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_69);
const uint32 l_70 = l_14 * uint32(8);
const uint32 l_71 = l_70 + uint32(2);
const uint32 l_72 = l_71 + uint32(0);
const bool l_73 = l_72 < uint32(32);
const bool l_74 = l_41 && l_73;
const uint32 l_75 = l_45 * uint32(32);
const uint32 l_76 = l_75 + l_72;
const uint32 l_77 = (l_74) ? l_76 : uint32(0);
const __nv_fp8_storage_t_4 l_78 = buffer_0[l_77];
const uint32 l_79 = reinterpret_cast<uint32 const&>(l_78);
const uint32 l_80 = (l_74) ? l_79 : uint32(0);
const __nv_fp8_storage_t_4 l_81 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_80);
l_arr_36[uint32(4)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_81);
const uint32 l_82 = l_14 * uint32(8);
const uint32 l_83 = l_82 + uint32(2);
const uint32 l_84 = l_83 + uint32(1);
const bool l_85 = l_84 < uint32(32);
const bool l_86 = l_41 && l_85;
const uint32 l_87 = l_45 * uint32(32);
const uint32 l_88 = l_87 + l_84;
const uint32 l_89 = (l_86) ? l_88 : uint32(0);
const __nv_fp8_storage_t_4 l_90 = buffer_0[l_89];
const uint32 l_91 = reinterpret_cast<uint32 const&>(l_90);
const uint32 l_92 = (l_86) ? l_91 : uint32(0);
const __nv_fp8_storage_t_4 l_93 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_92);
l_arr_36[uint32(6)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_93);
const uint32 l_94 = l_14 * uint32(8);
const uint32 l_95 = l_94 + uint32(4);
const uint32 l_96 = l_95 + uint32(0);
const bool l_97 = l_96 < uint32(32);
const bool l_98 = l_41 && l_97;
const uint32 l_99 = l_45 * uint32(32);
const uint32 l_100 = l_99 + l_96;
const uint32 l_101 = (l_98) ? l_100 : uint32(0);
const __nv_fp8_storage_t_4 l_102 = buffer_0[l_101];
const uint32 l_103 = reinterpret_cast<uint32 const&>(l_102);
const uint32 l_104 = (l_98) ? l_103 : uint32(0);
const __nv_fp8_storage_t_4 l_105 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_104);
l_arr_36[uint32(8)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_105);
const uint32 l_106 = l_14 * uint32(8);
const uint32 l_107 = l_106 + uint32(4);
const uint32 l_108 = l_107 + uint32(1);
const bool l_109 = l_108 < uint32(32);
const bool l_110 = l_41 && l_109;
const uint32 l_111 = l_45 * uint32(32);
const uint32 l_112 = l_111 + l_108;
const uint32 l_113 = (l_110) ? l_112 : uint32(0);
const __nv_fp8_storage_t_4 l_114 = buffer_0[l_113];
const uint32 l_115 = reinterpret_cast<uint32 const&>(l_114);
const uint32 l_116 = (l_110) ? l_115 : uint32(0);
const __nv_fp8_storage_t_4 l_117 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_116);
l_arr_36[uint32(10)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_117);
const uint32 l_118 = l_14 * uint32(8);
const uint32 l_119 = l_118 + uint32(6);
const uint32 l_120 = l_119 + uint32(0);
const bool l_121 = l_120 < uint32(32);
const bool l_122 = l_41 && l_121;
const uint32 l_123 = l_45 * uint32(32);
const uint32 l_124 = l_123 + l_120;
const uint32 l_125 = (l_122) ? l_124 : uint32(0);
const __nv_fp8_storage_t_4 l_126 = buffer_0[l_125];
const uint32 l_127 = reinterpret_cast<uint32 const&>(l_126);
const uint32 l_128 = (l_122) ? l_127 : uint32(0);
const __nv_fp8_storage_t_4 l_129 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_128);
l_arr_36[uint32(12)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_129);
const uint32 l_130 = l_14 * uint32(8);
const uint32 l_131 = l_130 + uint32(6);
const uint32 l_132 = l_131 + uint32(1);
const bool l_133 = l_132 < uint32(32);
const bool l_134 = l_41 && l_133;
const uint32 l_135 = l_45 * uint32(32);
const uint32 l_136 = l_135 + l_132;
const uint32 l_137 = (l_134) ? l_136 : uint32(0);
const __nv_fp8_storage_t_4 l_138 = buffer_0[l_137];
const uint32 l_139 = reinterpret_cast<uint32 const&>(l_138);
const uint32 l_140 = (l_134) ? l_139 : uint32(0);
const __nv_fp8_storage_t_4 l_141 = reinterpret_cast<__nv_fp8_storage_t_4 const&>(l_140);
l_arr_36[uint32(14)] = reinterpret_cast< __nv_fp8_storage_t_4 const&>(l_141);
l_mut_142 = float(0.0);
if (l_41) {
const __nv_bfloat16 l_143 = buffer_1[l_45];
const float l_144 = float(l_143);
const float l_145 = buffer_2[l_45];
const float l_146 = l_144 * l_145;
l_mut_142 = l_146;
}
l_arr_37[uint32(0)] = l_mut_142;
const uint32 l_147 = uint32(0) + l_13;
const uint32 l_148 = l_147 + uint32(8);
const bool l_149 = l_148 < info.scalars_uint32[2];
const bool l_150 = l_18 && l_149;
const uint32 l_151 = l_8 * info.scalars_uint32[0];
const uint32 l_152 = l_151 + l_16;
const uint32 l_153 = l_152 * info.scalars_uint32[2];
const uint32 l_154 = l_153 + l_148;
