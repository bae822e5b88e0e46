// PredictionFlops: an estimate of the predictor's arithmetic, for diagnostics and benchmarks.
// Per query head (the formula is repeated in docs/policies.md):
//   coarsening   12 N D       Q and K: squared norm (2), mean (1), min and max (2), copy (1) per element
//   scores        2 M^2 D     S = Qc Kc^T (the full square: BLAS computes it)
//   softmax       4 M^2       max, subtract, exp, normalise
//   graph         1 M^2       one comparison per candidate in the top-r selection
//   triangles     r M^2 / 16  ~2rM directed edges, each a bitset intersection of M/64 words (AND + popcount)
//   curvature    20 r M       ~10 operations per directed edge
//   selection     2 M^2       a pass over the candidates and a partial sort
#include "cab/backend.h"

namespace cab {

double PredictionFlops(int64_t tokens, int blocks, int dim, int heads, int degree) {
  const double n = static_cast<double>(tokens), m = blocks, d = dim, r = degree;
  const double per_head = 12.0 * n * d + 2.0 * m * m * d + 4.0 * m * m + m * m + r * m * m / 16.0 + 20.0 * r * m +
                          2.0 * m * m;
  return per_head * heads;
}

}  // namespace cab
