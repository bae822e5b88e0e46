#include "commands.h"

namespace cab::cli {

// One line per subcommand; keep the order of `cab-client help`.
const Command kCommands[] = {
    {"info", "version, backend, devices, limits and policies of the server", RunInfo},
    {"predict", "predict a block mask (synthetic by --seed, or --input=FILE)", RunPredict},
    {"evict", "KV-cache keep-indices for an eviction policy", RunEvict},
    {"bridge-demo", "does each policy keep a low-affinity bridge block? (table vs sparsity)", RunBridgeDemo},
    {"bench", "latency percentiles and throughput with K concurrent calls or streams", RunBench},
    {"attention", "block-sparse vs dense attention on the server's mask and keep-indices (error, recall, speedup)",
     RunAttention},
    {nullptr, nullptr, nullptr},
};

}  // namespace cab::cli
