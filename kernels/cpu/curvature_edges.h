// Private to kernels/cpu: triangles and curvature on the edges of one head's graph (SPEC 2).
#pragma once

#include "cab/graph.h"
#include "cab/params.h"

namespace cab {

// From g->adjacency, g->degree (and g->affinity for direct-redundancy), fills g->curvature:
// the formula of p.curvature on every edge, NaN elsewhere. Triangle counts t_ij = (B B)_ij are
// taken only on edges, as popcounts of row-bitset intersections.
void ComputeCurvature(const GraphParams& p, HeadGraph* g);

}  // namespace cab
