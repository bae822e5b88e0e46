// Test helpers shared by the kernel tests: seeded random tensors in every dtype, and naive
// double-precision references of SPEC 1-2 written as plain loops, independent of kernels/cpu.
//
// Random values lie on a grid (k / 64 with |k| <= 127), so they are exact in fp32, fp16 and bf16
// alike and squared norms and dot products are exact sums: the reference and the code under test
// then agree on ties (max-L2 ties, equal scores) instead of both rounding differently.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cab/coarse.h"
#include "cab/params.h"
#include "cab/tensor.h"

namespace cab {
namespace test {

// An owning tensor: raw bytes in `dtype` plus the exact values they encode.
struct OwnedTensor {
  std::vector<int64_t> shape;
  DType dtype = DType::kF32;
  std::vector<uint8_t> bytes;
  std::vector<double> values;  // exact, row-major
  // The view points into `bytes`; it stays valid while this object lives (and is not copied away).
  TensorView view() const { return TensorView{bytes.data(), dtype, shape}; }
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
};

inline int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Encodes exact values (representable in `dtype`) as little-endian bytes.
inline OwnedTensor FromValues(const std::vector<int64_t>& shape, DType dtype, std::vector<double> values) {
  OwnedTensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.values = std::move(values);
  const size_t n = t.values.size();
  t.bytes.resize(n * DTypeSize(dtype));
  for (size_t i = 0; i < n; ++i) {
    const float f = static_cast<float>(t.values[i]);
    if (dtype == DType::kF32) {
      std::memcpy(t.bytes.data() + 4 * i, &f, 4);
    } else {
      const uint16_t h = dtype == DType::kF16 ? FloatToHalf(f) : FloatToBF16(f);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    }
  }
  return t;
}

// Seeded random tensor with values k * step, k uniform in [-max_k, max_k]. With the defaults
// (step 1/64, max_k 127) every value has at most 8 significant bits: exact in every dtype.
inline OwnedTensor RandomTensor(const std::vector<int64_t>& shape, DType dtype, uint64_t seed,
                                double step = 1.0 / 64, int max_k = 127) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(-max_k, max_k);
  std::vector<double> v(static_cast<size_t>(Numel(shape)));
  for (double& x : v) x = dist(rng) * step;
  return FromValues(shape, dtype, std::move(v));
}

// ---- SPEC 1: coarsening -------------------------------------------------------------------------

struct NaiveCoarse {
  int batch = 0, heads = 0, blocks = 0, dim = 0;
  std::vector<double> maxl2, mean, kmin, kmax;  // [B, H, M, D]
  std::vector<int64_t> argmax;                  // [B, H, M]: token index (in the sequence) picked
  std::vector<int> count;                       // [B, H, M]
  size_t Offset(int b, int h, int m) const { return ((static_cast<size_t>(b) * heads + h) * blocks + m) * dim; }
};

// x: values of [B, H, N, D]. Max-L2 ties go to the lowest token index.
inline NaiveCoarse NaiveCoarsen(const std::vector<double>& x, int B, int H, int64_t N, int D, int block_size) {
  NaiveCoarse c;
  c.batch = B;
  c.heads = H;
  c.blocks = static_cast<int>((N + block_size - 1) / block_size);
  c.dim = D;
  const size_t rows = static_cast<size_t>(B) * H * c.blocks;
  c.maxl2.assign(rows * D, 0);
  c.mean.assign(rows * D, 0);
  c.kmin.assign(rows * D, 0);
  c.kmax.assign(rows * D, 0);
  c.argmax.assign(rows, -1);
  c.count.assign(rows, 0);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      for (int m = 0; m < c.blocks; ++m) {
        const size_t row = (static_cast<size_t>(b) * H + h) * c.blocks + m;
        const int64_t begin = static_cast<int64_t>(m) * block_size;
        const int64_t end = std::min<int64_t>(N, begin + block_size);
        double best = -1;
        for (int64_t t = begin; t < end; ++t) {
          const double* v = &x[((static_cast<size_t>(b) * H + h) * N + t) * D];
          double n2 = 0;
          for (int d = 0; d < D; ++d) n2 += v[d] * v[d];
          if (n2 > best) {
            best = n2;
            c.argmax[row] = t;
          }
          for (int d = 0; d < D; ++d) {
            c.mean[row * D + d] += v[d];
            if (t == begin || v[d] < c.kmin[row * D + d]) c.kmin[row * D + d] = v[d];
            if (t == begin || v[d] > c.kmax[row * D + d]) c.kmax[row * D + d] = v[d];
          }
        }
        c.count[row] = static_cast<int>(end - begin);
        const double* best_v = &x[((static_cast<size_t>(b) * H + h) * N + c.argmax[row]) * D];
        for (int d = 0; d < D; ++d) {
          c.mean[row * D + d] /= c.count[row];
          c.maxl2[row * D + d] = best_v[d];
        }
      }
    }
  }
  return c;
}

// Copies one head's [M, D] slice of a float vector laid out as CoarseBlocks is, into doubles.
inline std::vector<double> HeadSlice(const std::vector<float>& v, const CoarseBlocks& c, int b, int h) {
  const size_t off = c.Offset(b, h, 0);
  return std::vector<double>(v.begin() + off, v.begin() + off + static_cast<size_t>(c.blocks) * c.dim);
}
inline std::vector<double> HeadSlice(const std::vector<double>& v, const NaiveCoarse& c, int b, int h) {
  const size_t off = c.Offset(b, h, 0);
  return std::vector<double>(v.begin() + off, v.begin() + off + static_cast<size_t>(c.blocks) * c.dim);
}

// ---- SPEC 2: scores, affinity, graph, curvature ------------------------------------------------

inline bool InSupport(int i, int j, bool causal) { return !causal || j <= i; }

// S_ij = q_i . k_j / sqrt(D) on the support, -inf elsewhere. q, k: [M, D].
inline std::vector<double> NaiveDotScores(const std::vector<double>& q, const std::vector<double>& k, int M, int D,
                                          bool causal) {
  std::vector<double> s(static_cast<size_t>(M) * M, -std::numeric_limits<double>::infinity());
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) {
      if (!InSupport(i, j, causal)) continue;
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += q[static_cast<size_t>(i) * D + d] * k[static_cast<size_t>(j) * D + d];
      s[static_cast<size_t>(i) * M + j] = dot / std::sqrt(static_cast<double>(D));
    }
  }
  return s;
}

// Quest's bound: S_ij = sum_d max(q_d * kmin_jd, q_d * kmax_jd) / sqrt(D).
inline std::vector<double> NaiveQuestScores(const std::vector<double>& q, const std::vector<double>& kmin,
                                            const std::vector<double>& kmax, int M, int D, bool causal) {
  std::vector<double> s(static_cast<size_t>(M) * M, -std::numeric_limits<double>::infinity());
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) {
      if (!InSupport(i, j, causal)) continue;
      double sum = 0;
      for (int d = 0; d < D; ++d) {
        const double qd = q[static_cast<size_t>(i) * D + d];
        sum += std::max(qd * kmin[static_cast<size_t>(j) * D + d], qd * kmax[static_cast<size_t>(j) * D + d]);
      }
      s[static_cast<size_t>(i) * M + j] = sum / std::sqrt(static_cast<double>(D));
    }
  }
  return s;
}

// Row softmax over the support (0 elsewhere).
inline std::vector<double> NaiveSoftmax(const std::vector<double>& s, int M, bool causal) {
  std::vector<double> a(static_cast<size_t>(M) * M, 0);
  for (int i = 0; i < M; ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int j = 0; j < M; ++j) {
      if (InSupport(i, j, causal)) mx = std::max(mx, s[static_cast<size_t>(i) * M + j]);
    }
    double sum = 0;
    for (int j = 0; j < M; ++j) {
      if (InSupport(i, j, causal)) sum += std::exp(s[static_cast<size_t>(i) * M + j] - mx);
    }
    for (int j = 0; j < M; ++j) {
      if (InSupport(i, j, causal)) a[static_cast<size_t>(i) * M + j] = std::exp(s[static_cast<size_t>(i) * M + j] - mx) / sum;
    }
  }
  return a;
}

struct NaiveGraphResult {
  std::vector<int> adjacency;  // M x M, symmetric 0/1, zero diagonal
  std::vector<int> degree;     // M
  // Rows whose r-th and (r+1)-th strongest candidates are within `tie_tolerance` of each other:
  // a float implementation may legitimately pick differently there.
  std::vector<bool> ambiguous;
};

// Each row i picks its r strongest support blocks by A, self excluded, ties to the lower j
// (a plain selection: repeatedly take the best not yet picked); then symmetrise.
inline NaiveGraphResult NaiveGraph(const std::vector<double>& a, int M, int r, bool causal, double tie_tolerance = 0) {
  NaiveGraphResult g;
  g.adjacency.assign(static_cast<size_t>(M) * M, 0);
  g.degree.assign(M, 0);
  g.ambiguous.assign(M, false);
  for (int i = 0; i < M; ++i) {
    std::vector<bool> picked(M, false);
    double last = 0;
    int npicked = 0;
    for (int round = 0; round < r; ++round) {
      int best = -1;
      for (int j = 0; j < M; ++j) {
        if (j == i || !InSupport(i, j, causal) || picked[j]) continue;
        if (best < 0 || a[static_cast<size_t>(i) * M + j] > a[static_cast<size_t>(i) * M + best]) best = j;
      }
      if (best < 0) break;
      picked[best] = true;
      last = a[static_cast<size_t>(i) * M + best];
      ++npicked;
      g.adjacency[static_cast<size_t>(i) * M + best] = 1;
      g.adjacency[static_cast<size_t>(best) * M + i] = 1;
    }
    if (npicked == r && tie_tolerance > 0) {
      for (int j = 0; j < M; ++j) {
        if (j == i || !InSupport(i, j, causal) || picked[j]) continue;
        if (a[static_cast<size_t>(i) * M + j] >= last - tie_tolerance) g.ambiguous[i] = true;
      }
    }
  }
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) g.degree[i] += g.adjacency[static_cast<size_t>(i) * M + j];
  }
  return g;
}

// Triangles as the dense product (B B)_ij of the adjacency matrix (every pair, edge or not).
inline std::vector<int64_t> NaiveTriangles(const std::vector<int>& adj, int M) {
  std::vector<int64_t> t(static_cast<size_t>(M) * M, 0);
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) {
      int64_t sum = 0;
      for (int l = 0; l < M; ++l) sum += adj[static_cast<size_t>(i) * M + l] * adj[static_cast<size_t>(l) * M + j];
      t[static_cast<size_t>(i) * M + j] = sum;
    }
  }
  return t;
}

// Curvature per SPEC 2 on edges, NaN elsewhere. a: the affinity (direct-redundancy uses the edge's
// affinity max(A_ij, A_ji): under causal masking that is the later block's affinity to the earlier).
inline std::vector<double> NaiveCurvature(const std::vector<int>& adj, const std::vector<int64_t>& tri,
                                          const std::vector<double>& a, int M, CurvatureKind kind,
                                          double lambda = 1.0) {
  std::vector<int> deg(M, 0);
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) deg[i] += adj[static_cast<size_t>(i) * M + j];
  }
  std::vector<double> f(static_cast<size_t>(M) * M, std::numeric_limits<double>::quiet_NaN());
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) {
      const size_t ij = static_cast<size_t>(i) * M + j;
      if (!adj[ij]) continue;
      const double di = deg[i], dj = deg[j], t = static_cast<double>(tri[ij]);
      const double dmax = std::max(di, dj), dmin = std::min(di, dj);
      switch (kind) {
        case CurvatureKind::kBalanced:
          f[ij] = 2 / di + 2 / dj - 2 + 2 * t / dmax + t / dmin;
          break;
        case CurvatureKind::kForman:
          f[ij] = 4 - di - dj + 3 * t;
          break;
        case CurvatureKind::kDirectRedundancy:
          f[ij] = std::max(a[ij], a[static_cast<size_t>(j) * M + i]) - lambda * t / dmax;
          break;
      }
    }
  }
  return f;
}

}  // namespace test
}  // namespace cab
