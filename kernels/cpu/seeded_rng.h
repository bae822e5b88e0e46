// Deterministic random streams for the random mask and eviction policies. Written out here (not
// <random>) so that a seed gives the same answer on every standard library and every backend.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace cab::cpu {

class SeededRng {
 public:
  // The stream depends only on the seed and the coordinates (for example batch, head, row), so a
  // result does not change with the number of threads or the order work items run in.
  SeededRng(uint64_t seed, std::initializer_list<uint64_t> coordinates) : state_(seed) {
    for (uint64_t c : coordinates) state_ ^= Next() + c;
  }

  uint64_t Next() {  // SplitMix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  // Uniform integer in [0, bound), bound > 0 (multiply-shift; bias below 2^-30 for bounds < 2^34).
  uint64_t Below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * bound) >> 64);
  }

 private:
  uint64_t state_;
};

}  // namespace cab::cpu
