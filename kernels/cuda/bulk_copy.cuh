// Hopper's bulk copy engine (cp.async.bulk, sm_90) completing on shared-memory mbarriers: the
// few PTX instructions the streaming kernels need, wrapped so that kernel code reads as C++.
// A copy is issued by one thread; its bytes land in shared memory without passing through
// registers, and the barrier's phase flips once all of them have arrived (complete_tx), so loads
// stream while the issuing warp computes on an earlier stage.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cab::cuda::bulk {

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// One arrival (the issuing thread's expect_tx) completes each phase, together with the bytes.
__device__ __forceinline__ void InitBarrier(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(SharedAddress(bar)) : "memory");
}

// Makes initialised barriers visible to the async proxy (the copy engine) before any copy uses them.
__device__ __forceinline__ void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// An L2 policy for data read exactly once: its lines are the first to go.
__device__ __forceinline__ uint64_t EvictFirstPolicy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

// Copies `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to shared memory and
// arms `bar` to complete its current phase when they have landed.
__device__ __forceinline__ void CopyToShared(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                                             bool evict_first, uint64_t policy) {
  const uint32_t b = SharedAddress(bar), d = SharedAddress(dst);
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(bytes) : "memory");
  if (evict_first) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(d),
        "l"(src), "r"(bytes), "r"(b), "l"(policy)
        : "memory");
  } else {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(d),
                 "l"(src), "r"(bytes), "r"(b)
                 : "memory");
  }
}

// Spins until the phase with the given parity has completed; acquire semantics, so the copied
// bytes are visible to the waiting thread afterwards.
__device__ __forceinline__ void Wait(uint64_t* bar, uint32_t parity) {
  const uint32_t b = SharedAddress(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n\t.reg .pred p;\n\t"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(b), "r"(parity)
        : "memory");
  } while (!done);
}

}  // namespace cab::cuda::bulk
