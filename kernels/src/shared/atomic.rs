//! Float atomics for the kernels that add into a gradient or a sum many cubes share.

use cubecl::prelude::*;

/// `dst[i] += v` in f32 without races. `native`: a float atomic add, the launch defining
/// `A` as f32 (the `Int` bound only lets the CAS branch type-check; the define maps `A` to
/// any storage type and the comptime-dead branch is never emitted); else a compare-and-swap
/// loop on the f32 bits with `A` defined as u32 (WGSL has no float atomics by default).
#[cube]
pub fn atomic_add_f32<A: Int>(dst: &mut Tensor<Atomic<A>>, i: usize, v: f32, #[comptime] native: bool) {
    if native {
        dst[i].fetch_add(A::cast_from(v));
    } else {
        let mut old = dst[i].load();
        let mut done = false;
        while !done {
            let new = A::reinterpret(f32::reinterpret(old) + v);
            let prev = dst[i].compare_exchange_weak(old, new);
            if prev == old {
                done = true;
            } else {
                old = prev;
            }
        }
    }
}
