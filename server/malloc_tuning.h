// glibc malloc settings for a server whose requests carry tens of MB (tensors, representatives).
#pragma once

namespace cab::server {

// By default glibc maps every large block (above a threshold that only grows as far as 32 MiB)
// fresh from the kernel and unmaps it when freed, and trims freed heap tops: every large request
// then pays page faults (the kernel zeroing each new 4 KiB page) for its message strings and its
// coarse arrays. This keeps blocks up to 32 MiB (glibc's ceiling) in malloc's heaps and returns
// free heap memory to the kernel only beyond 1 GiB, so the next request reuses the pages. The
// process keeps its peak working set. Skipped when GLIBC_TUNABLES is set (the operator decides).
// Call first thing in main, before any thread starts.
void TuneMallocForLargeRequests();

}  // namespace cab::server
