#include "parallel_coarsen.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cab::client_internal {
namespace {

// Copies slices of `per` elements per (b, h) from `src` (with `src_blocks`) into `dst` at block
// `at` of `dst_blocks`.
template <typename T>
void Place(const std::vector<T>& src, int src_blocks, std::vector<T>& dst, int dst_blocks, int at, int bh_count,
           int width) {
  for (int bh = 0; bh < bh_count; ++bh)
    std::copy_n(src.begin() + static_cast<size_t>(bh) * src_blocks * width, static_cast<size_t>(src_blocks) * width,
                dst.begin() + (static_cast<size_t>(bh) * dst_blocks + at) * width);
}

}  // namespace

int CoarsenThreads(int threads) {
  return threads > 0 ? threads : static_cast<int>(std::min<unsigned>(8, std::max(1u, std::thread::hardware_concurrency())));
}

absl::StatusOr<CoarseBlocks> CoarsenParallel(const TensorView& x, int block_size, int threads) {
  if (x.shape.size() != 4 || x.numel() <= 0) return CoarsenCpu(x, block_size);  // its own errors
  const int64_t B = x.shape[0], H = x.shape[1], N = x.shape[2], D = x.shape[3];
  threads = CoarsenThreads(threads);
  const int slices = static_cast<int>(B * H);
  if (threads <= 1 || slices <= 1) return CoarsenCpu(x, block_size);

  std::vector<absl::StatusOr<CoarseBlocks>> parts(slices);
  const size_t slice_bytes = static_cast<size_t>(N * D) * DTypeSize(x.dtype);
  std::vector<std::thread> pool;
  const int workers = std::min(threads, slices);
  for (int w = 0; w < workers; ++w)
    pool.emplace_back([&, w] {
      for (int s = w; s < slices; s += workers) {
        TensorView v{static_cast<const char*>(x.data) + s * slice_bytes, x.dtype, {1, 1, N, D}};
        parts[s] = CoarsenCpu(v, block_size);
      }
    });
  for (auto& t : pool) t.join();
  for (auto& p : parts)
    if (!p.ok()) return p.status();

  const CoarseBlocks& first = *parts[0];
  CoarseBlocks out;
  out.batch = static_cast<int>(B);
  out.heads = static_cast<int>(H);
  out.blocks = first.blocks;
  out.dim = first.dim;
  out.block_size = first.block_size;
  out.tokens = first.tokens;
  const size_t rep = static_cast<size_t>(first.blocks) * first.dim, per = first.blocks;
  for (auto* v : {&out.maxl2, &out.mean, &out.kmin, &out.kmax}) v->resize(rep * slices);
  out.best_norm2.resize(per * slices);
  out.count.resize(per * slices);
  for (int s = 0; s < slices; ++s) {
    const CoarseBlocks& p = *parts[s];
    std::copy(p.maxl2.begin(), p.maxl2.end(), out.maxl2.begin() + s * rep);
    std::copy(p.mean.begin(), p.mean.end(), out.mean.begin() + s * rep);
    std::copy(p.kmin.begin(), p.kmin.end(), out.kmin.begin() + s * rep);
    std::copy(p.kmax.begin(), p.kmax.end(), out.kmax.begin() + s * rep);
    std::copy(p.best_norm2.begin(), p.best_norm2.end(), out.best_norm2.begin() + s * per);
    std::copy(p.count.begin(), p.count.end(), out.count.begin() + s * per);
  }
  return out;
}

absl::Status ConcatBlocks(CoarseBlocks& state, const CoarseBlocks& more) {
  if (state.blocks == 0) {
    state = more;
    return absl::OkStatus();
  }
  if (state.batch != more.batch || state.heads != more.heads || state.dim != more.dim ||
      state.block_size != more.block_size)
    return absl::InvalidArgumentError("coarse state: shapes or block sizes differ");
  if (state.tokens % state.block_size != 0)
    return absl::FailedPreconditionError(
        absl::StrCat("coarse state: ", state.tokens, " tokens do not end on a block boundary"));
  const int bh = state.batch * state.heads, m0 = state.blocks, m1 = more.blocks, m = m0 + m1;
  auto grow = [&](auto& dst, const auto& src, int width) {
    std::remove_reference_t<decltype(dst)> out(static_cast<size_t>(bh) * m * width);
    Place(dst, m0, out, m, 0, bh, width);
    Place(src, m1, out, m, m0, bh, width);
    dst.swap(out);
  };
  grow(state.maxl2, more.maxl2, state.dim);
  grow(state.mean, more.mean, state.dim);
  grow(state.kmin, more.kmin, state.dim);
  grow(state.kmax, more.kmax, state.dim);
  grow(state.best_norm2, more.best_norm2, 1);
  grow(state.count, more.count, 1);
  state.blocks = m;
  state.tokens += more.tokens;
  return absl::OkStatus();
}

}  // namespace cab::client_internal
