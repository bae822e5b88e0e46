#include "sm_partition.h"

#include <cuda.h>  // types and enums only; the functions come from the runtime's entry-point lookup

#include "absl/strings/str_cat.h"
#include "cuda_status.h"
#include "driver_entry.h"

namespace cab::cuda {
namespace {

struct DriverFns {
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*get_resource)(CUdevice, CUdevResource*, CUdevResourceType) = nullptr;
  CUresult (*split)(CUdevResource*, unsigned*, const CUdevResource*, CUdevResource*, unsigned, unsigned) = nullptr;
  CUresult (*gen_desc)(CUdevResourceDesc*, CUdevResource*, unsigned) = nullptr;
  CUresult (*green_create)(CUgreenCtx*, CUdevResourceDesc, CUdevice, unsigned) = nullptr;
  CUresult (*green_destroy)(CUgreenCtx) = nullptr;
  CUresult (*ctx_from_green)(CUcontext*, CUgreenCtx) = nullptr;
  CUresult (*ctx_get)(CUcontext*) = nullptr;
  CUresult (*ctx_set)(CUcontext) = nullptr;
};

absl::StatusOr<DriverFns> LoadDriverFns() {
  DriverFns f;
  constexpr unsigned kGreen = 12040;  // green contexts came with CUDA 12.4
  CAB_RETURN_IF_ERROR(DriverFunction("cuDeviceGet", kGreen, &f.device_get));
  CAB_RETURN_IF_ERROR(DriverFunction("cuDeviceGetDevResource", kGreen, &f.get_resource));
  CAB_RETURN_IF_ERROR(DriverFunction("cuDevSmResourceSplitByCount", kGreen, &f.split));
  CAB_RETURN_IF_ERROR(DriverFunction("cuDevResourceGenerateDesc", kGreen, &f.gen_desc));
  CAB_RETURN_IF_ERROR(DriverFunction("cuGreenCtxCreate", kGreen, &f.green_create));
  CAB_RETURN_IF_ERROR(DriverFunction("cuGreenCtxDestroy", kGreen, &f.green_destroy));
  CAB_RETURN_IF_ERROR(DriverFunction("cuCtxFromGreenCtx", kGreen, &f.ctx_from_green));
  CAB_RETURN_IF_ERROR(DriverFunction("cuCtxGetCurrent", kGreen, &f.ctx_get));
  CAB_RETURN_IF_ERROR(DriverFunction("cuCtxSetCurrent", kGreen, &f.ctx_set));
  return f;
}

const absl::StatusOr<DriverFns>& Driver() {
  static const absl::StatusOr<DriverFns> fns = LoadDriverFns();
  return fns;
}

absl::Status Check(CUresult r, const char* what) {
  if (r == CUDA_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("sm partition: ", what, " failed (CUresult ", static_cast<int>(r), ")"));
}


// A green context over `resource` and a non-blocking runtime stream that belongs to it.
absl::StatusOr<PartitionStream> StreamOn(const DriverFns& d, CUdevice dev, CUdevResource resource) {
  CUdevResourceDesc desc{};
  CAB_RETURN_IF_ERROR(Check(d.gen_desc(&desc, &resource, 1), "cuDevResourceGenerateDesc"));
  CUgreenCtx green = nullptr;
  CAB_RETURN_IF_ERROR(Check(d.green_create(&green, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM), "cuGreenCtxCreate"));
  PartitionStream out;
  out.green_context = green;
  out.sms = static_cast<int>(resource.sm.smCount);
  // A runtime stream belongs to the context current when it is made: make the green one current
  // for that call only.
  CUcontext as_ctx = nullptr, previous = nullptr;
  absl::Status st = Check(d.ctx_from_green(&as_ctx, green), "cuCtxFromGreenCtx");
  if (st.ok()) st = Check(d.ctx_get(&previous), "cuCtxGetCurrent");
  if (st.ok()) st = Check(d.ctx_set(as_ctx), "cuCtxSetCurrent");
  if (st.ok()) {
    st = CudaStatus(cudaStreamCreateWithFlags(&out.stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    const absl::Status restored = Check(d.ctx_set(previous), "cuCtxSetCurrent (restore)");
    if (st.ok()) st = restored;
  }
  if (!st.ok()) {
    DestroyPartitionStream(&out);
    return st;
  }
  return out;
}

}  // namespace

absl::StatusOr<PartitionStream> CreatePartitionStream(int device, int wanted, PartitionStream* rest) {
  const absl::StatusOr<DriverFns>& d = Driver();
  if (!d.ok()) return d.status();
  CAB_CUDA_RETURN(cudaSetDevice(device));
  CAB_CUDA_RETURN(cudaFree(nullptr));  // the primary context exists before a green one is made from it
  CUdevice dev = 0;
  CAB_RETURN_IF_ERROR(Check(d->device_get(&dev, device), "cuDeviceGet"));
  CUdevResource all{};
  CAB_RETURN_IF_ERROR(Check(d->get_resource(dev, &all, CU_DEV_RESOURCE_TYPE_SM), "cuDeviceGetDevResource"));
  if (wanted <= 0 || static_cast<unsigned>(wanted) >= all.sm.smCount) {
    return absl::InvalidArgumentError(absl::StrCat("sm partition: wanted ", wanted, " SMs of ", all.sm.smCount));
  }
  CUdevResource part{}, left{};
  unsigned groups = 1;
  CAB_RETURN_IF_ERROR(Check(d->split(&part, &groups, &all, &left, 0, static_cast<unsigned>(wanted)),
                            "cuDevSmResourceSplitByCount"));
  absl::StatusOr<PartitionStream> out = StreamOn(*d, dev, part);
  if (!out.ok() || rest == nullptr) return out;
  absl::StatusOr<PartitionStream> other = StreamOn(*d, dev, left);
  if (!other.ok()) {
    DestroyPartitionStream(&*out);
    return other.status();
  }
  *rest = *other;
  return out;
}

void DestroyPartitionStream(PartitionStream* p) {
  if (p->stream) cudaStreamDestroy(p->stream);
  const absl::StatusOr<DriverFns>& d = Driver();
  if (p->green_context && d.ok()) d->green_destroy(static_cast<CUgreenCtx>(p->green_context));
  *p = PartitionStream{};
}

}  // namespace cab::cuda
