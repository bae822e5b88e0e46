// The smallest useful cab::Client program: ask a server for its backend, then one mask.
//   cab-client-example --server=127.0.0.1:50051
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cab/client.h"

int main(int argc, char** argv) {
  std::string server = "127.0.0.1:50051";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help")) {
      std::printf("usage: cab-client-example [--server=HOST:PORT]\n");
      return 0;
    }
    if (!std::strncmp(argv[i], "--server=", 9)) server = argv[i] + 9;
  }
  cab::ClientOptions options;
  options.target = server;
  auto client = cab::Client::Create(options);
  if (!client.ok()) return std::fprintf(stderr, "%s\n", client.status().ToString().c_str()), 2;
  auto info = (*client)->Info();
  if (!info.ok()) return std::fprintf(stderr, "%s\n", info.status().ToString().c_str()), 1;

  // Random Q/K: 1 batch, 2 heads, 512 tokens, 32 dims.
  const int64_t n = 512, d = 32;
  std::vector<float> q(2 * n * d), k(2 * n * d);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (auto& x : q) x = normal(rng);
  for (auto& x : k) x = normal(rng);
  cab::PredictInput in;
  in.block_size = 64;
  in.params.sparsity = 0.75f;
  in.q = cab::TensorView{q.data(), cab::DType::kF32, {1, 2, n, d}};
  in.k = cab::TensorView{k.data(), cab::DType::kF32, {1, 2, n, d}};
  in.representatives = true;
  auto reply = (*client)->Predict(in);
  if (!reply.ok()) return std::fprintf(stderr, "%s\n", reply.status().ToString().c_str()), 1;
  std::printf("backend %s: kept %ld of %d x %d blocks (density %.3f)\n", info->backend().c_str(),
              static_cast<long>(reply->mask.kept()), reply->mask.rows, reply->mask.cols, reply->density);
  return 0;
}
