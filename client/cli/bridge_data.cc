#include "bridge_data.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "synthetic.h"

namespace cab::cli {

BridgeData MakeBridgeData(int blocks, int block_size, int dim, int bridge_rank, uint64_t seed) {
  // Dimension 0: cluster A's direction, 1: cluster B's, 2: the bridge channel, 3..: noise.
  const float s = 2.f, sigma = 0.5f, jitter = 1e-3f;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  BridgeData d;
  d.blocks = blocks;
  d.bridge_block = blocks / 4;
  d.query_block = blocks - 1;
  const int half = blocks / 2;
  std::vector<std::vector<float>> qb(blocks, std::vector<float>(dim)), kb = qb;
  for (int j = 0; j < blocks; ++j) {
    const int axis = j < half ? 0 : 1;
    qb[j][axis] = s;
    kb[j][axis] = s;
    for (int c = 3; c < dim; ++c) {
      qb[j][c] = sigma * normal(rng);
      kb[j][c] = sigma * normal(rng);
    }
  }
  // The bridge key: weakly in cluster A, mostly along the bridge channel.
  std::fill(kb[d.bridge_block].begin(), kb[d.bridge_block].end(), 0.f);
  kb[d.bridge_block][0] = 0.5f * s;
  kb[d.bridge_block][2] = s;
  // Place the bridge at `bridge_rank` among the query block's other candidates by scaling the
  // query's bridge channel: score(bridge) = q[2] * s.
  auto dot = [&](const std::vector<float>& a, const std::vector<float>& b) {
    float x = 0;
    for (int c = 0; c < dim; ++c) x += a[c] * b[c];
    return x;
  };
  std::vector<float> others;
  for (int j = 0; j < blocks; ++j)
    if (j != d.query_block && j != d.bridge_block) others.push_back(dot(qb[d.query_block], kb[j]));
  std::sort(others.begin(), others.end(), std::greater<float>());
  const int r = std::clamp(bridge_rank, 1, static_cast<int>(others.size()) - 1);
  // Between the (r-1)-th and r-th strongest others: exactly rank r (1-based).
  const float target = r == 1 ? others[0] + 1.f : 0.5f * (others[r - 2] + others[r - 1]);
  const float base = dot(qb[d.query_block], kb[d.bridge_block]);  // bridge channel still 0 here
  qb[d.query_block][2] = (target - base) / s;

  const int64_t n = static_cast<int64_t>(blocks) * block_size;
  std::vector<float> q(n * dim), k(n * dim);
  for (int j = 0; j < blocks; ++j)
    for (int t = 0; t < block_size; ++t)
      for (int c = 0; c < dim; ++c) {
        // Tiny jitter keeps tokens distinct; every token stays within 1e-3 of its block vector.
        q[(j * block_size + t) * dim + c] = qb[j][c] + jitter * normal(rng);
        k[(j * block_size + t) * dim + c] = kb[j][c] + jitter * normal(rng);
      }
  d.q = FromFloats({1, 1, n, dim}, DType::kF32, q);
  d.k = FromFloats({1, 1, n, dim}, DType::kF32, k);
  return d;
}

}  // namespace cab::cli
