// One streaming session's state: its configuration and, per layer, the coarse state of Q and K
// (never the full tensors). Append validates a chunk against the configuration and the limits
// before it allocates; the memory it would take is checked through a callback (the manager).
// Not thread-safe: a stream processes one message at a time.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "cab/v1/cab.pb.h"
#include "mask_compute.h"
#include "options.h"
#include "wire/params_codec.h"

namespace cab::server {

class Session {
 public:
  // `backend_session` is the key its backend calls carry (cab::CallContext::session): a backend with
  // several devices keeps them on one. 0: none.
  Session(wire::SessionSpec spec, const Limits& limits, uint64_t backend_session = 0);

  const wire::SessionSpec& spec() const { return spec_; }
  int64_t tokens(int layer) const { return layers_[layer].q.tokens; }
  int64_t MemoryBytes() const;

  // `reserve(total_bytes)` is asked before the state grows; a non-OK answer aborts the append.
  // Coarsening time goes to hooks (Stage::kCoarsen), the chunk's decode to Stage::kDecode.
  absl::StatusOr<cab::v1::ChunkAck> Append(const cab::v1::Chunk& chunk,
                                           const std::function<absl::Status(int64_t)>& reserve,
                                           const StageHooks& hooks);

  // Checks a query before it is queued (layer, rows against the blocks held).
  absl::Status CheckQuery(const cab::v1::MaskQuery& q) const;
  absl::Status Query(const cab::v1::MaskQuery& q, cab::Backend& backend, const StageHooks& hooks,
                     cab::v1::MaskReply* reply) const;

 private:
  struct Layer {
    cab::CoarseBlocks q, k;
  };
  absl::Status CheckChunkTensor(const cab::TensorView& v, int64_t heads, int64_t length, const char* field) const;

  wire::SessionSpec spec_;
  Limits limits_;
  cab::CallContext call_;
  std::vector<Layer> layers_;
};

}  // namespace cab::server
