// One PredictMask request's score operands on the host, as UploadOperands (operand_upload.h) reads
// them: from a host coarse state (fp32 arrays), or straight from the representatives a client sent
// (fp32 values or bf16 bits, as they arrived: no coarse state is built for them).
#pragma once

#include <cstdint>

#include "cab/coarse.h"
#include "cab/params.h"
#include "cab/tensor.h"

namespace cab::cuda {

struct HostOperands {
  int batch = 0, q_heads = 0, kv_heads = 0, blocks = 0, dim = 0;
  // The query representative [B, Hq, M, D] and the key feature of a dot estimator [B, Hkv, M, D]:
  // fp32 values, or else bf16 bits.
  const float* q = nullptr;
  const float* k = nullptr;
  const uint16_t* q_bf16 = nullptr;
  const uint16_t* k_bf16 = nullptr;
  // Quest's key bounds [B, Hkv, M, D] (from a coarse state only).
  const float* kmin = nullptr;
  const float* kmax = nullptr;

  size_t q_elems() const { return static_cast<size_t>(batch) * q_heads * blocks * dim; }
  size_t k_elems() const { return static_cast<size_t>(batch) * kv_heads * blocks * dim; }

  // The arrays of a coarse pair that the scores read: the query coarsening's vectors, the estimator's
  // key vectors (Quest: the bounds).
  static HostOperands FromCoarse(const CoarseBlocks& q, const CoarseBlocks& k, Coarsening query_coarsening,
                                 Estimator estimator) {
    HostOperands o;
    o.batch = q.batch;
    o.q_heads = q.heads;
    o.kv_heads = k.heads;
    o.blocks = q.blocks;
    o.dim = q.dim;
    o.q = (query_coarsening == Coarsening::kMaxL2 ? q.maxl2 : q.mean).data();
    if (estimator == Estimator::kQuest) {
      o.kmin = k.kmin.data();
      o.kmax = k.kmax.data();
    } else {
      o.k = (estimator == Estimator::kMean ? k.mean : k.maxl2).data();
    }
    return o;
  }

  // Client-sent representatives (fp32 or bf16; validated by the caller), which serve every
  // coarsening and dot estimator alike.
  static HostOperands FromRepresentatives(const TensorView& q, const TensorView& k) {
    HostOperands o;
    o.batch = static_cast<int>(q.shape[0]);
    o.q_heads = static_cast<int>(q.shape[1]);
    o.kv_heads = static_cast<int>(k.shape[1]);
    o.blocks = static_cast<int>(q.shape[2]);
    o.dim = static_cast<int>(q.shape[3]);
    if (q.dtype == DType::kBF16) o.q_bf16 = static_cast<const uint16_t*>(q.data);
    else o.q = static_cast<const float*>(q.data);
    if (k.dtype == DType::kBF16) o.k_bf16 = static_cast<const uint16_t*>(k.data);
    else o.k = static_cast<const float*>(k.data);
    return o;
  }
};

}  // namespace cab::cuda
