// SPEC 1 on the CPU: coarsening tokens into per-block max-L2 representative, mean and channel
// min/max, one pass over the input, incrementally (AppendTokens) or all at once (CoarsenCpu).
//
// One-shot coarsening IS an append to an empty state, and every token goes through the same
// per-token update, so appending a sequence in chunks of any size gives bit-identical state:
//  - max-L2: a token replaces the representative only if its squared norm is strictly larger
//    (ties keep the lowest index); the norm is summed in double and rounded to float once;
//  - mean: a running mean m += (x - m) / count, exact to merge without keeping the token sum;
//  - min / max: channel-wise, order-free.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cab/coarse.h"
#include "coarsen_check.h"

namespace cab {
namespace {

constexpr float kNoNorm = -1.f;  // best_norm2 of a block with no token yet: any token beats it

double SquaredNorm(const float* v, int dim) {
  double s = 0;
  for (int d = 0; d < dim; ++d) s += static_cast<double>(v[d]) * v[d];
  return s;
}

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

// Folds token `v` into block row `row` (an index over [B, H, M]) of `c`.
void AddToken(CoarseBlocks& c, size_t row, const float* v) {
  const int dim = c.dim;
  const size_t off = row * dim;
  const int32_t n = ++c.count[row];
  const float inv = 1.f / static_cast<float>(n);
  float* mean = c.mean.data() + off;
  float* mn = c.kmin.data() + off;
  float* mx = c.kmax.data() + off;
  for (int d = 0; d < dim; ++d) {
    mean[d] += (v[d] - mean[d]) * inv;
    mn[d] = v[d] < mn[d] ? v[d] : mn[d];
    mx[d] = v[d] > mx[d] ? v[d] : mx[d];
  }
  const float norm2 = static_cast<float>(SquaredNorm(v, dim));
  if (norm2 > c.best_norm2[row]) {
    c.best_norm2[row] = norm2;
    std::copy(v, v + dim, c.maxl2.data() + off);
  }
}

// Returns the index of the first non-finite value of v[0..n), or -1.
int64_t FirstNonFinite(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) return i;
  }
  return -1;
}

absl::Status CheckSameShape(const TensorView& a, const TensorView& ref, const char* what, const char* ref_name) {
  if (a.shape != ref.shape) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": shape must equal ", ref_name, "'s"));
  }
  return absl::OkStatus();
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

  // Convert and check the whole input before touching the state, so a failure leaves it unchanged.
  std::vector<float> buf(static_cast<size_t>(x.numel()));
  ToFloat(x, 0, x.numel(), buf.data());
  if (int64_t bad = FirstNonFinite(buf.data(), x.numel()); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("x: element ", bad, " is not finite"));
  }

  if (blocks > state.blocks) GrowBlocks(state, static_cast<int>(blocks));
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const size_t head_row = (static_cast<size_t>(b) * H + h) * state.blocks;
      const float* src = buf.data() + (static_cast<size_t>(b) * H + h) * n * D;
      for (int64_t t = 0; t < n; ++t) {
        const size_t block = static_cast<size_t>((state.tokens + t) / block_size);
        AddToken(state, head_row + block, src + t * D);
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

absl::StatusOr<CoarseBlocks> CoarseFromRepresentatives(const TensorView& reps, const TensorView* kmin,
                                                       const TensorView* kmax, int block_size, int64_t tokens) {
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
  const size_t elems = static_cast<size_t>(reps.numel());
  CoarseBlocks c;
  c.batch = static_cast<int>(reps.shape[0]);
  c.heads = static_cast<int>(reps.shape[1]);
  c.blocks = static_cast<int>(M);
  c.dim = static_cast<int>(reps.shape[3]);
  c.block_size = block_size;
  c.tokens = tokens;
  c.maxl2.resize(elems);
  ToFloat(reps, 0, reps.numel(), c.maxl2.data());
  if (int64_t bad = FirstNonFinite(c.maxl2.data(), reps.numel()); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrCat("reps: element ", bad, " is not finite"));
  }
  c.mean = c.maxl2;
  c.has_bounds = kmin != nullptr;
  if (c.has_bounds) {
    for (auto [t, name] : {std::pair{kmin, "kmin"}, std::pair{kmax, "kmax"}}) {
      if (auto s = CheckTensor4(*t, name); !s.ok()) return s;
      if (auto s = CheckSameShape(*t, reps, name, "reps"); !s.ok()) return s;
    }
    c.kmin.resize(elems);
    c.kmax.resize(elems);
    ToFloat(*kmin, 0, kmin->numel(), c.kmin.data());
    ToFloat(*kmax, 0, kmax->numel(), c.kmax.data());
    for (size_t i = 0; i < elems; ++i) {
      if (!std::isfinite(c.kmin[i]) || !std::isfinite(c.kmax[i])) {
        return absl::InvalidArgumentError(absl::StrCat(std::isfinite(c.kmin[i]) ? "kmax" : "kmin", ": element ", i,
                                                       " is not finite"));
      }
      if (c.kmin[i] > c.kmax[i]) {
        return absl::InvalidArgumentError(absl::StrCat("kmin: element ", i, " exceeds kmax"));
      }
    }
  } else {
    c.kmin = c.maxl2;
    c.kmax = c.maxl2;
  }
  const size_t rows = elems / c.dim;
  c.best_norm2.resize(rows);
  c.count.resize(rows);
  for (size_t row = 0; row < rows; ++row) {
    const int64_t m = static_cast<int64_t>(row % c.blocks);
    c.best_norm2[row] = static_cast<float>(SquaredNorm(c.maxl2.data() + row * c.dim, c.dim));
    c.count[row] = static_cast<int32_t>(std::min<int64_t>(block_size, tokens - m * block_size));
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
