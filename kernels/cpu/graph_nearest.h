// Private to kernels/cpu: the r-nearest block graph of one head (SPEC 2).
#pragma once

#include "cab/graph.h"

namespace cab {

// From g->affinity (M x M), fills g->adjacency and g->degree: each row i links to its `degree`
// strongest support blocks by A, self excluded, ties to the lower j; edges are undirected.
void BuildNearestGraph(int degree, bool causal, HeadGraph* g);

}  // namespace cab
