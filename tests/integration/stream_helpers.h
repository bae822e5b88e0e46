// A synchronous client of MaskPredictor.Stream for the tests: open with a SessionConfig, send
// chunks and mask queries, read the answers, and collect the final status of a failed stream.
#pragma once

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cab/v1/cab.grpc.pb.h"
#include "problem.h"

namespace cab_it {

class StreamClient {
 public:
  explicit StreamClient(cab::v1::MaskPredictor::Stub& stub, absl::Duration deadline = absl::Seconds(60));
  ~StreamClient();

  // Writes the config and reads SessionReady; a failed stream gives its final status.
  absl::StatusOr<cab::v1::SessionReady> Open(const cab::v1::SessionConfig& config);
  bool Write(const cab::v1::StreamRequest& req);
  // The next response; nullopt when the server ended the stream.
  std::optional<cab::v1::StreamResponse> Read();
  absl::StatusOr<cab::v1::ChunkAck> SendChunk(const cab::v1::Chunk& chunk);
  absl::StatusOr<cab::v1::MaskReply> Query(const cab::v1::MaskQuery& query);
  // Half-closes, drains what is left and returns the server's final status.
  grpc::Status Finish();
  // Reads until the server ends the stream (after an error) and returns the final status.
  grpc::Status FinishAfterError();
  grpc::ClientContext& context() { return *ctx_; }

 private:
  absl::Status Failed(const char* what);
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<cab::v1::StreamRequest, cab::v1::StreamResponse>> rw_;
  bool finished_ = false;
  grpc::Status final_;
};

absl::Status ToAbsl(const grpc::Status& s);

// The stream's configuration for a problem (full Q/K chunks unless `representatives`).
cab::v1::SessionConfig ConfigFor(const ProblemShape& s, int layers, const TestMaskParams& p,
                                 cab::v1::MaskFormat format, bool representatives = false);
// A chunk of full Q/K: tokens [start, start + n) of layer `layer`.
cab::v1::Chunk FullChunk(const Problem& pb, int layer, int64_t start, int64_t n);
// A chunk of representatives for whole blocks [block_begin, block_end) of the problem.
cab::v1::Chunk RepresentativesChunk(const Problem& pb, int layer, int block_begin, int block_end);

}  // namespace cab_it
