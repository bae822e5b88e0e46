// SPEC 1 on the CPU: coarsening tokens into per-block max-L2 representative, mean and channel
// min/max, one pass over the input, incrementally (AppendTokens) or all at once (CoarsenCpu).
//
// One-shot coarsening IS an append to an empty state, and every token goes through the same
// per-token update, so appending a sequence in chunks of any size gives bit-identical state:
//  - max-L2: a token replaces the representative only if its squared norm is strictly larger
//    (ties keep the lowest index); the norm is summed in double and rounded to float once;
//  - mean: a running mean m += (x - m) / count, exact to merge without keeping the token sum;
//  - min / max: channel-wise, order-free.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cab/coarse.h"
#include "coarsen_check.h"
#include "coarsen_math.h"

namespace cab {
namespace {

using coarsen_internal::Bf16Bits;
using coarsen_internal::FirstNonFinite;
using coarsen_internal::SquaredNorm;

constexpr float kNoNorm = -1.f;  // best_norm2 of a block with no token yet: any token beats it

// Resizes every per-block array of `c` from c.blocks to `blocks`, keeping each head's existing
// blocks and initialising the new ones as empty.
void GrowBlocks(CoarseBlocks& c, int blocks) {
  const size_t heads = static_cast<size_t>(c.batch) * c.heads;
  const size_t old_m = c.blocks, new_m = blocks, dim = c.dim;
  auto grow = [&](auto& v, size_t width, auto fill) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    std::vector<T> out(heads * new_m * width, static_cast<T>(fill));
    for (size_t bh = 0; bh < heads && old_m > 0; ++bh) {
      std::copy(v.begin() + bh * old_m * width, v.begin() + (bh + 1) * old_m * width, out.begin() + bh * new_m * width);
    }
    v.swap(out);
  };
  grow(c.maxl2, dim, 0.f);
  grow(c.mean, dim, 0.f);
  grow(c.kmin, dim, std::numeric_limits<float>::infinity());
  grow(c.kmax, dim, -std::numeric_limits<float>::infinity());
  grow(c.best_norm2, 1, kNoNorm);
  grow(c.count, 1, 0);
  c.blocks = blocks;
}

// Running mean and channel bounds of one block; the arrays never overlap. Written in fixed groups
// of 8 channels because -O2's cost model vectorises those (straight-line code) but not a loop
// that needs a scalar epilogue.
inline void UpdateChannel(float& mean, float& mn, float& mx, float v, float inv_count) {
  mean += (v - mean) * inv_count;
  mn = v < mn ? v : mn;
  mx = v > mx ? v : mx;
}
void UpdateMoments(float* __restrict mean, float* __restrict mn, float* __restrict mx, const float* __restrict v,
                   float inv_count, int dim) {
  int d = 0;
  for (; d + 8 <= dim; d += 8) {
    for (int l = 0; l < 8; ++l) UpdateChannel(mean[d + l], mn[d + l], mx[d + l], v[d + l], inv_count);
  }
  for (; d < dim; ++d) UpdateChannel(mean[d], mn[d], mx[d], v[d], inv_count);
}

// Folds token `v` into block row `row` (an index over [B, H, M]) of `c`.
void AddToken(CoarseBlocks& c, size_t row, const float* v) {
  const int dim = c.dim;
  const size_t off = row * dim;
  const int32_t n = ++c.count[row];
  UpdateMoments(c.mean.data() + off, c.kmin.data() + off, c.kmax.data() + off, v, 1.f / static_cast<float>(n), dim);
  const float norm2 = static_cast<float>(SquaredNorm(v, dim));
  if (norm2 > c.best_norm2[row]) {
    c.best_norm2[row] = norm2;
    std::copy(v, v + dim, c.maxl2.data() + off);
  }
}

absl::Status CheckFinite(const TensorView& x, const char* what) {
  if (int64_t bad = FirstNonFinite(x); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": element ", bad, " is not finite"));
  }
  return absl::OkStatus();
}

absl::Status CheckSameShape(const TensorView& a, const TensorView& ref, const char* what, const char* ref_name) {
  if (a.shape != ref.shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape must equal ", ref_name, "'s"));
  }
  return absl::OkStatus();
}

// Reserves `n` floats of `out` without touching them and, for big arrays, asks the kernel for
// transparent huge pages there (one fault per 2 MiB instead of per 4 KiB; a no-op where THP is
// off). Memory that malloc hands back from its heap is already mapped and unaffected.
void ReserveUntouched(size_t n, std::vector<float>* out) {
  out->clear();
  out->reserve(n);
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t bytes = n * sizeof(float);
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(out->data());
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t aligned = (begin + page - 1) / page * page;
  if (aligned - begin < bytes) madvise(reinterpret_cast<void*>(aligned), bytes - (aligned - begin), MADV_HUGEPAGE);
}

// Reads element i of a raw array as float; a random-access iterator so that vector::assign
// converts while it copies (one pass, no zero-fill).
template <typename Raw, float (*Convert)(Raw)>
struct ConvertingIterator {
  using iterator_category = std::random_access_iterator_tag;
  using value_type = float;
  using difference_type = std::ptrdiff_t;
  using pointer = const float*;
  using reference = float;
  const Raw* p;
  float operator*() const { return Convert(*p); }
  ConvertingIterator& operator++() { return ++p, *this; }
  ConvertingIterator operator++(int) { return {p++}; }
  ConvertingIterator& operator--() { return --p, *this; }
  ConvertingIterator& operator+=(difference_type d) { return p += d, *this; }
  difference_type operator-(const ConvertingIterator& o) const { return p - o.p; }
  bool operator==(const ConvertingIterator& o) const { return p == o.p; }
  bool operator!=(const ConvertingIterator& o) const { return p != o.p; }
};
inline float HalfBits(uint16_t h) { return HalfToFloat(h); }

// `x` as floats into `out` (sized x.numel()).
void FillConverted(const TensorView& x, std::vector<float>* out) {
  const size_t n = static_cast<size_t>(x.numel());
  ReserveUntouched(n, out);
  switch (x.dtype) {
    case DType::kF32: {
      const float* p = static_cast<const float*>(x.data);
      out->assign(p, p + n);
      return;
    }
    case DType::kBF16: {
      using It = ConvertingIterator<uint16_t, Bf16Bits>;
      const uint16_t* p = static_cast<const uint16_t*>(x.data);
      out->assign(It{p}, It{p + n});
      return;
    }
    case DType::kF16: {
      using It = ConvertingIterator<uint16_t, HalfBits>;
      const uint16_t* p = static_cast<const uint16_t*>(x.data);
      out->assign(It{p}, It{p + n});
      return;
    }
  }
}

void FillCopy(const std::vector<float>& from, std::vector<float>* out) {
  ReserveUntouched(from.size(), out);
  out->assign(from.begin(), from.end());
}

// Arrays at least this big are filled concurrently by CoarseFromRepresentatives.
constexpr size_t kParallelBytes = size_t{8} << 20;

// Runs every task, each on its own thread when `parallel` and the machine has cores to spare
// (the first on the caller's thread). On a 2-core host under load the extra threads made the
// time erratic (a descheduled thread holds up the join), hence the 8-core floor.
void RunAll(bool parallel, std::initializer_list<std::function<void()>> tasks) {
  if (!parallel || std::thread::hardware_concurrency() < 8) {
    for (const auto& t : tasks) t();
    return;
  }
  std::vector<std::thread> threads;
  for (auto it = tasks.begin() + 1; it != tasks.end(); ++it) threads.emplace_back(*it);
  (*tasks.begin())();
  for (auto& t : threads) t.join();
}

}  // namespace

absl::Status CheckTensor4(const TensorView& x, const std::string& what) {
  if (x.dtype != DType::kF32 && x.dtype != DType::kF16 && x.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unknown dtype ", static_cast<int>(x.dtype)));
  }
  if (auto s = CheckTensor(x, 4, what); !s.ok()) return s;
  if (x.shape[0] > std::numeric_limits<int>::max() || x.shape[1] > std::numeric_limits<int>::max() ||
      x.shape[3] > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": batch, heads or dim too large"));
  }
  int64_t elements = 1;
  for (int64_t d : x.shape) {
    if (__builtin_mul_overflow(elements, d, &elements) || elements > (int64_t{1} << 40)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": shape has too many elements"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCoarse(const CoarseBlocks& c, const std::string& what) {
  if (c.batch < 1 || c.heads < 1 || c.blocks < 1 || c.dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": empty coarse state (batch ", c.batch, ", heads ", c.heads,
                                                   ", blocks ", c.blocks, ", dim ", c.dim, ")"));
  }
  if (c.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": block_size ", c.block_size, " must be >= 1"));
  }
  const int64_t bs = c.block_size;
  if (c.tokens <= (c.blocks - 1) * bs || c.tokens > c.blocks * bs) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": tokens ", c.tokens, " do not fill ", c.blocks,
                                                   " blocks of ", c.block_size));
  }
  const size_t rows = static_cast<size_t>(c.batch) * c.heads * c.blocks;
  const size_t elems = rows * c.dim;
  if (c.maxl2.size() != elems || c.mean.size() != elems || c.kmin.size() != elems || c.kmax.size() != elems ||
      c.best_norm2.size() != rows || c.count.size() != rows) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": arrays do not match [", c.batch, ", ", c.heads, ", ",
                                                   c.blocks, ", ", c.dim, "]"));
  }
  return absl::OkStatus();
}

size_t CoarseBlocks::MemoryBytes() const {
  return sizeof(*this) + (maxl2.capacity() + mean.capacity() + kmin.capacity() + kmax.capacity()) * sizeof(float) +
         best_norm2.capacity() * sizeof(float) + count.capacity() * sizeof(int32_t);
}

absl::Status AppendTokens(CoarseBlocks& state, const TensorView& x, int block_size) {
  if (auto s = CheckTensor4(x, "x"); !s.ok()) return s;
  if (block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("block_size: ", block_size, " must be >= 1"));
  }
  const int B = static_cast<int>(x.shape[0]), H = static_cast<int>(x.shape[1]), D = static_cast<int>(x.shape[3]);
  const int64_t n = x.shape[2];
  if (state.blocks == 0) {
    state = CoarseBlocks{};
    state.batch = B;
    state.heads = H;
    state.dim = D;
    state.block_size = block_size;
  } else {
    if (auto s = CheckCoarse(state, "state"); !s.ok()) return s;
    if (block_size != state.block_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("block_size: ", block_size, " differs from the state's ", state.block_size));
    }
    if (B != state.batch || H != state.heads || D != state.dim) {
      return absl::InvalidArgumentError(absl::StrCat("x: shape [", B, ", ", H, ", ", n, ", ", D,
                                                     "] does not continue the state's [", state.batch, ", ",
                                                     state.heads, ", N, ", state.dim, "]"));
    }
  }
  const int64_t total = state.tokens + n;
  const int64_t blocks = (total + block_size - 1) / block_size;
  if (blocks > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("x: ", total, " tokens make too many blocks"));
  }

  // Checked before touching the state, so a failure leaves it unchanged.
  if (auto s = CheckFinite(x, "x"); !s.ok()) return s;

  if (blocks > state.blocks) GrowBlocks(state, static_cast<int>(blocks));
  // Converted to float a cache-sized run of tokens at a time: one pass, no copy of the input.
  constexpr int64_t kRunTokens = 256;
  std::vector<float> run(static_cast<size_t>(std::min(n, kRunTokens)) * D);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const size_t head_row = (static_cast<size_t>(b) * H + h) * state.blocks;
      const int64_t head_start = (static_cast<int64_t>(b) * H + h) * n * D;
      for (int64_t t0 = 0; t0 < n; t0 += kRunTokens) {
        const int64_t len = std::min(kRunTokens, n - t0);
        ToFloat(x, head_start + t0 * D, len * D, run.data());
        for (int64_t t = 0; t < len; ++t) {
          const size_t block = static_cast<size_t>((state.tokens + t0 + t) / block_size);
          AddToken(state, head_row + block, run.data() + t * D);
        }
      }
    }
  }
  state.tokens = total;
  return absl::OkStatus();
}

absl::StatusOr<CoarseBlocks> CoarsenCpu(const TensorView& x, int block_size) {
  CoarseBlocks c;
  if (auto s = AppendTokens(c, x, block_size); !s.ok()) return s;
  return c;
}

absl::Status CheckRepresentatives(const TensorView& reps, const TensorView* kmin, const TensorView* kmax,
                                  int block_size, int64_t tokens) {
  if (auto s = CheckTensor4(reps, "reps"); !s.ok()) return s;
  if (block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("block_size: ", block_size, " must be >= 1"));
  }
  if (tokens < 1) return absl::InvalidArgumentError(absl::StrCat("tokens: ", tokens, " must be >= 1"));
  const int64_t M = reps.shape[2];
  if ((tokens + block_size - 1) / block_size != M) {
    return absl::InvalidArgumentError(absl::StrCat("reps: ", M, " blocks, but tokens ", tokens, " in blocks of ",
                                                   block_size, " make ", (tokens + block_size - 1) / block_size));
  }
  if ((kmin == nullptr) != (kmax == nullptr)) {
    return absl::InvalidArgumentError(kmin == nullptr ? "kmin: missing (kmax was given)"
                                                      : "kmax: missing (kmin was given)");
  }
  if (auto s = CheckFinite(reps, "reps"); !s.ok()) return s;
  if (kmin != nullptr) {
    for (auto [t, name] : {std::pair{kmin, "kmin"}, std::pair{kmax, "kmax"}}) {
      if (auto s = CheckTensor4(*t, name); !s.ok()) return s;
      if (auto s = CheckSameShape(*t, reps, name, "reps"); !s.ok()) return s;
      if (auto s = CheckFinite(*t, name); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<CoarseBlocks> CoarseFromRepresentatives(const TensorView& reps, const TensorView* kmin,
                                                       const TensorView* kmax, int block_size, int64_t tokens) {
  if (auto s = CheckRepresentatives(reps, kmin, kmax, block_size, tokens); !s.ok()) return s;
  const int64_t M = reps.shape[2];
  const bool bounds = kmin != nullptr;
  const size_t elems = static_cast<size_t>(reps.numel());
  CoarseBlocks c;
  c.batch = static_cast<int>(reps.shape[0]);
  c.heads = static_cast<int>(reps.shape[1]);
  c.blocks = static_cast<int>(M);
  c.dim = static_cast<int>(reps.shape[3]);
  c.block_size = block_size;
  c.tokens = tokens;
  c.has_bounds = bounds;
  // Each array is written once, straight from the input (no zero-fill first, no second pass),
  // into memory asked for as huge pages: on a fresh allocation, page faults were most of the cost.
  // Big arrays are filled on several threads (one array each): the page faults and copies of a
  // large request then overlap instead of queueing on one core.
  const bool parallel = elems * sizeof(float) >= kParallelBytes;
  const size_t rows = elems / c.dim;
  RunAll(parallel, {[&] { FillConverted(reps, &c.maxl2); },
                    [&] { if (bounds) FillConverted(*kmin, &c.kmin); },
                    [&] { if (bounds) FillConverted(*kmax, &c.kmax); }});
  // The copies of maxl2 (mean always; min/max without bounds) and the per-block norms read the
  // finished maxl2.
  RunAll(parallel, {[&] { FillCopy(c.maxl2, &c.mean); },
                    [&] { if (!bounds) FillCopy(c.maxl2, &c.kmin); },
                    [&] { if (!bounds) FillCopy(c.maxl2, &c.kmax); },
                    [&] {
                      c.best_norm2.resize(rows);
                      c.count.resize(rows);
                      for (size_t row = 0; row < rows; ++row) {
                        const int64_t m = static_cast<int64_t>(row % c.blocks);
                        c.best_norm2[row] = static_cast<float>(SquaredNorm(c.maxl2.data() + row * c.dim, c.dim));
                        c.count[row] = static_cast<int32_t>(std::min<int64_t>(block_size, tokens - m * block_size));
                      }
                    }});
  if (bounds) {
    for (size_t i = 0; i < elems; ++i) {
      if (c.kmin[i] > c.kmax[i]) {
        return absl::InvalidArgumentError(absl::StrCat("kmin: element ", i, " exceeds kmax"));
      }
    }
  }
  return c;
}

absl::Status AppendRepresentatives(CoarseBlocks& state, const CoarseBlocks& more) {
  if (auto s = CheckCoarse(more, "more"); !s.ok()) return s;
  if (state.blocks == 0) {
    state = more;
    return absl::OkStatus();
  }
  if (auto s = CheckCoarse(state, "state"); !s.ok()) return s;
  if (more.batch != state.batch || more.heads != state.heads || more.dim != state.dim) {
    return absl::InvalidArgumentError(absl::StrCat("more: batch/heads/dim [", more.batch, ", ", more.heads, ", ",
                                                   more.dim, "] differ from the state's [", state.batch, ", ",
                                                   state.heads, ", ", state.dim, "]"));
  }
  if (more.block_size != state.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("more: block_size ", more.block_size, " differs from the state's ",
                                                   state.block_size));
  }
  if (state.tokens != static_cast<int64_t>(state.blocks) * state.block_size) {
    return absl::InvalidArgumentError(absl::StrCat("state: ends inside block ", state.blocks - 1, " (", state.tokens,
                                                   " tokens); whole blocks can only follow whole blocks"));
  }
  if (static_cast<int64_t>(state.blocks) + more.blocks > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("more: too many blocks");
  }
  const int old_m = state.blocks;
  GrowBlocks(state, old_m + more.blocks);
  const size_t heads = static_cast<size_t>(state.batch) * state.heads;
  const size_t new_m = state.blocks, add_m = more.blocks, dim = state.dim;
  auto place = [&](auto& dst, const auto& src, size_t width) {
    for (size_t bh = 0; bh < heads; ++bh) {
      std::copy(src.begin() + bh * add_m * width, src.begin() + (bh + 1) * add_m * width,
                dst.begin() + (bh * new_m + old_m) * width);
    }
  };
  place(state.maxl2, more.maxl2, dim);
  place(state.mean, more.mean, dim);
  place(state.kmin, more.kmin, dim);
  place(state.kmax, more.kmax, dim);
  place(state.best_norm2, more.best_norm2, 1);
  place(state.count, more.count, 1);
  state.tokens += more.tokens;
  state.has_bounds = state.has_bounds && more.has_bounds;
  return absl::OkStatus();
}

}  // namespace cab
