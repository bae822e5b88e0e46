// Host API: validate, then run on the backend the registry picks (backend_registry.cc).
#include "cab/attention/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "attention_internal.h"
#include "cab/attention/backend.h"

namespace cab::attention {
absl::StatusOr<Device> ParseDevice(const std::string& s) {
  if (s == "auto") return Device::kAuto;
  if (s == "cpu") return Device::kCpu;
  if (s == "cuda" || s == "gpu") return Device::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("device: unknown '", s, "' (auto, cpu, cuda)"));
}

bool CudaAvailable(std::string* why_not) {
  static std::string reason;
  static const bool available = internal::CudaDeviceAvailable(&reason);
  if (!available && why_not) *why_not = reason;
  return available;
}

absl::StatusOr<AttentionResult> BlockSparsePrefill(const TensorView& q, const TensorView& k,
                                                   const TensorView& v, const BlockMask& mask,
                                                   const PrefillOptions& options) {
  // Validate first so that a caller's mistake is reported as such whatever the device.
  auto s = internal::CheckPrefill(q, k, v, mask, options);
  if (!s.ok()) return s.status();
  auto backend = SelectPrefillBackend(options.device, q.dtype, s->head_dim, s->block_size);
  if (!backend.ok()) return backend.status();
  return (*backend)->Prefill(q, k, v, mask, options);
}

absl::StatusOr<AttentionResult> SparseDecode(const TensorView& q, const TensorView& k, const TensorView& v,
                                             const KeepIndices* keep, const DecodeOptions& options) {
  auto s = internal::CheckDecode(q, k, v, keep, options);
  if (!s.ok()) return s.status();
  auto backend = SelectDecodeBackend(options.device, q.dtype, s->head_dim);
  if (!backend.ok()) return backend.status();
  return (*backend)->Decode(q, k, v, keep, options);
}

BlockMask DenseMask(int batch, int heads, int blocks, bool causal) {
  BlockMask m;
  m.batch = batch;
  m.heads = heads;
  m.rows = m.cols = blocks;
  m.row_offsets.push_back(0);
  for (int64_t r = 0; r < static_cast<int64_t>(batch) * heads * blocks; ++r) {
    const int i = static_cast<int>(r % blocks);
    const int last = causal ? i : blocks - 1;
    for (int j = 0; j <= last; ++j) m.col_indices.push_back(j);
    m.row_offsets.push_back(static_cast<int64_t>(m.col_indices.size()));
  }
  return m;
}

absl::StatusOr<KeepIndices> BlocksToKeepIndices(const std::vector<std::vector<int32_t>>& blocks, int batch,
                                                int kv_heads, int block_size, int64_t tokens) {
  if (batch <= 0 || kv_heads <= 0) return absl::InvalidArgumentError("batch/kv_heads: must be > 0");
  if (block_size <= 0) return absl::InvalidArgumentError("block_size: must be > 0");
  if (static_cast<int64_t>(blocks.size()) != static_cast<int64_t>(batch) * kv_heads) {
    return absl::InvalidArgumentError("blocks: needs one list per (batch, kv head)");
  }
  const int64_t nblocks = (tokens + block_size - 1) / block_size;
  std::vector<std::vector<int64_t>> rows(blocks.size());
  size_t width = 0;
  for (size_t r = 0; r < blocks.size(); ++r) {
    std::vector<int32_t> sel = blocks[r];
    std::sort(sel.begin(), sel.end());
    sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
    for (int32_t j : sel) {
      if (j < 0 || j >= nblocks) return absl::InvalidArgumentError(absl::StrCat("blocks: block ", j, " out of range"));
      for (int64_t t = int64_t(j) * block_size; t < std::min(tokens, int64_t(j + 1) * block_size); ++t) rows[r].push_back(t);
    }
    if (r > 0 && rows[r].size() != width) {
      return absl::InvalidArgumentError("blocks: every (batch, kv head) must select the same number of tokens");
    }
    width = rows[r].size();
  }
  if (width == 0) return absl::InvalidArgumentError("blocks: no token selected");
  KeepIndices out;
  out.batch = batch;
  out.kv_heads = kv_heads;
  out.per_head = static_cast<int64_t>(width);
  for (const auto& row : rows) out.indices.insert(out.indices.end(), row.begin(), row.end());
  return out;
}

absl::StatusOr<double> RelativeError(const FloatTensor& a, const FloatTensor& b) {
  if (a.shape != b.shape || a.data.size() != b.data.size()) return absl::InvalidArgumentError("a: shape differs from b's");
  double num = 0, den = 0;
  for (size_t i = 0; i < a.data.size(); ++i) {
    const double d = double(a.data[i]) - double(b.data[i]);
    num += d * d;
    den += double(b.data[i]) * double(b.data[i]);
  }
  if (std::isnan(num)) return std::numeric_limits<double>::infinity();
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

namespace internal {
void ParallelFor(int64_t count, const std::function<void(int64_t)>& fn) {
  const int threads = static_cast<int>(std::min<int64_t>(count, std::max(1u, std::thread::hardware_concurrency())));
  if (threads <= 1) {
    for (int64_t i = 0; i < count; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int64_t i = next++; i < count; i = next++) fn(i);
    });
  }
  for (auto& th : pool) th.join();
}
}  // namespace internal

}  // namespace cab::attention
