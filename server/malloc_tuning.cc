#include "malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>

namespace cab::server {

void TuneMallocForLargeRequests() {
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace cab::server
