// The bridge experiment's input: two dense clusters of key/query blocks and one low-affinity
// bridge block in the first cluster that only the last query block (in the second cluster)
// reaches. Built so the bridge sits at rank `bridge_rank` of that query block's scores: inside its
// graph neighbourhood (rank <= graph degree) yet below the magnitude budget at high sparsity.
#pragma once

#include <cstdint>

#include "cab/tensor_file.h"

namespace cab::cli {

struct BridgeData {
  OwnedTensor q, k;   // [1, 1, N, D] fp32
  int blocks = 0;     // M
  int bridge_block = 0;
  int query_block = 0;  // the row that reaches the bridge (M - 1)
};

BridgeData MakeBridgeData(int blocks, int block_size, int dim, int bridge_rank, uint64_t seed);

}  // namespace cab::cli
