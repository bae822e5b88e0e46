// The C entry point a backend plugin (a shared library loaded with dlopen) exports.
// The server calls `cab_backend_create` once; it returns a cab::Backend* the caller owns, or null
// with a message in `error` (for example "no CUDA device found").
#pragma once

#include <cstddef>

// 2: cab::Backend gained the CallContext overloads and ReleaseSession (a new vtable layout).
#define CAB_PLUGIN_ABI_VERSION 2

extern "C" {
// Returns CAB_PLUGIN_ABI_VERSION; the loader refuses a plugin whose version differs.
int cab_backend_abi_version();
// options: "key=value;key=value" (for example "devices=0,1;max_batch=8"); may be empty.
void* cab_backend_create(const char* options, char* error, size_t error_len);
}
