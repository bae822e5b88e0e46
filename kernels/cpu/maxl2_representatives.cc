// MaxL2Representatives: only the max-L2 pick of SPEC 1, for callers that send representatives and
// need nothing else (cab::Client's unary requests). CoarsenCpu also keeps each block's running mean
// and channel bounds, three read-modify-write passes per token that such a caller throws away; and
// the picked token is copied as its own bytes, so no conversion back from float is needed.
#include <algorithm>
#include <cstring>
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

// SquaredNorm of a token read straight from its raw values: the same four double lanes summed in
// the same order, so the same float as SquaredNorm after ToFloat (a product of two floats is exact
// in double, so contracting it into an FMA changes nothing either).
template <typename Raw, typename Load>
inline float TokenNorm2(const Raw* p, int D, Load load) {
  double acc[4] = {0, 0, 0, 0};
  int d = 0;
  for (; d + 4 <= D; d += 4) {
    for (int l = 0; l < 4; ++l) {
      const double v = load(p[d + l]);
      acc[l] += v * v;
    }
  }
  for (; d < D; ++d) {
    const double v = load(p[d]);
    acc[0] += v * v;
  }
  return static_cast<float>((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

// Per block of one slice (tokens [N, D] of type Raw): the index of the token CoarsenCpu keeps, the
// first of largest squared norm.
template <typename Raw, typename Load>
void PickTokens(const Raw* slice, int64_t N, int D, int block_size, Load load, std::vector<int64_t>* picks) {
  for (int64_t first = 0, m = 0; first < N; first += block_size, ++m) {
    const int64_t last = std::min(N, first + block_size);
    float best = -1.f;  // below any norm: the block's first token always takes it
    int64_t pick = first;
    for (int64_t t = first; t < last; ++t) {
      const float norm2 = TokenNorm2(slice + t * D, D, load);
      if (norm2 > best) {
        best = norm2;
        pick = t;
      }
    }
    (*picks)[m] = pick;
  }
}

// Slice s = (b, h) of x: per block the picked token's bytes, copied to out [block, D]. Returns the
// index within the slice of a non-finite element, or -1 (then nothing is written).
int64_t PickSlice(const TensorView& x, int64_t s, int block_size, uint8_t* out) {
  const int64_t N = x.shape[2];
  const int D = static_cast<int>(x.shape[3]);
  const size_t token_bytes = static_cast<size_t>(D) * DTypeSize(x.dtype);
  const uint8_t* slice = static_cast<const uint8_t*>(x.data) + static_cast<size_t>(s) * N * token_bytes;
  if (int64_t bad = FirstNonFinite(TensorView{slice, x.dtype, {N * D}}); bad >= 0) return bad;
  std::vector<int64_t> picks((N + block_size - 1) / block_size);
  const auto* f32 = reinterpret_cast<const float*>(slice);
  const auto* f16 = reinterpret_cast<const uint16_t*>(slice);
  switch (x.dtype) {
    case DType::kF32: PickTokens(f32, N, D, block_size, [](float v) { return v; }, &picks); break;
    case DType::kBF16: PickTokens(f16, N, D, block_size, [](uint16_t v) { return Bf16Bits(v); }, &picks); break;
    case DType::kF16: PickTokens(f16, N, D, block_size, [](uint16_t v) { return HalfToFloat(v); }, &picks); break;
  }
  for (size_t m = 0; m < picks.size(); ++m) {
    std::memcpy(out + m * token_bytes, slice + static_cast<size_t>(picks[m]) * token_bytes, token_bytes);
  }
  return -1;
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> MaxL2Representatives(const TensorView& x, int block_size, int threads) {
  if (auto s = CheckTensor4(x, "x"); !s.ok()) return s;
  if (block_size < 1) return absl::InvalidArgumentError(absl::StrCat("block_size: ", block_size, " must be >= 1"));
  const int64_t B = x.shape[0], H = x.shape[1], N = x.shape[2], D = x.shape[3];
  const int64_t M = (N + block_size - 1) / block_size;
  if (M > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("x: ", N, " tokens make too many blocks"));
  }
  const int64_t slices = B * H;
  const size_t slice_out = static_cast<size_t>(M) * D * DTypeSize(x.dtype);
  std::vector<uint8_t> out(static_cast<size_t>(slices) * slice_out);
  std::vector<int64_t> bad(slices, -1);
  const int workers = static_cast<int>(std::clamp<int64_t>(threads, 1, slices));
  auto work = [&](int w) {
    for (int64_t s = w; s < slices; s += workers) bad[s] = PickSlice(x, s, block_size, out.data() + s * slice_out);
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  // The first non-finite element of x, as CoarsenCpu names it.
  for (int64_t s = 0; s < slices; ++s) {
    if (bad[s] >= 0) {
      return absl::InvalidArgumentError(absl::StrCat("x: element ", s * N * D + bad[s], " is not finite"));
    }
  }
  return out;
}

}  // namespace cab
