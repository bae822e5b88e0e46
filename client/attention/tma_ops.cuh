// Hopper asynchronous-copy primitives for prefill_wgmma_tma.cu: shared-memory mbarriers, the
// bulk tensor copy (TMA) that completes on one, named barriers for a subset of the warps, and
// warpgroup register reallocation (setmaxnreg, sm_90a; the rest is plain sm_90).
#pragma once

#include <cuda.h>  // CUtensorMap (the type only; the driver call that fills it is on the host)

#include <cstdint>

#include "cuda_common.cuh"

namespace cab::attention::cuda::dev {

// mbarrier in shared memory expecting `count` arrivals per phase.
__device__ __forceinline__ void MbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(count));
}
// Makes the initialised barriers visible to the other threads and to the copy engine.
__device__ __forceinline__ void MbarInitFence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// One arrival that also announces `bytes` of copy transactions the phase must wait for.
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(SmemAddr(bar)) : "memory");
}
// Waits until the phase with parity `parity` has completed (try_wait suspends for a while in
// hardware before the loop asks again). The braces scope the label to each inlined copy.
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "MBAR_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra MBAR_WAIT;\n}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
}

// Copies the box at coordinates (c0 innermost, c1, c2) of a 3-d tensor map into shared memory,
// completing `bytes` of transactions on `bar`. Elements outside the tensor arrive as zeros.
__device__ __forceinline__ void TmaLoad3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          SmemAddr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(SmemAddr(bar))
      : "memory");
}
// Fetches a tensor map (a kernel parameter) into the copy engine's cache ahead of the first copy.
__device__ __forceinline__ void TmaPrefetchMap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads: Sync waits for all of
// them, Arrive counts this warp in and goes on.
__device__ __forceinline__ void NamedBarrierSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void NamedBarrierArrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Register budget of the executing warpgroup (sm_90a): the producer gives registers back, the
// consumers take them. Every warp of the warpgroup executes the same instruction.
template <int kRegs>
__device__ __forceinline__ void WarpgroupRegsDec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void WarpgroupRegsInc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

}  // namespace cab::attention::cuda::dev
