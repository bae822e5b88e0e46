// cab::Session: one bidirectional stream per sequence.
//
//   cab::SessionOptions so;  so.layers = 32; so.heads = 32; so.kv_heads = 8; so.head_dim = 128;
//   auto session = client->OpenSession(so);
//   (*session)->Append(layer, q_chunk, k_chunk);      // q [B, Hq, n, D], k [B, Hkv, n, D], in order
//   auto mask = (*session)->Mask(layer, 0, 0);        // rows [0, end) of the tokens sent so far
//
// Calls on one Session are serialised (it is one stream); use one Session per sequence.
//
// Replicas: a session stays on the replica its stream reached. When the stream breaks with
// UNAVAILABLE (the replica died, drained or the connection dropped) the session opens a new stream
// (the channel may pick another replica), replays what the server needs -- the configuration and
// the coarse representatives of every chunk sent so far, which the session keeps client-side
// (O(blocks * D) floats per layer and head) -- and retries the pending call. The caller sees the
// call succeed, a larger reconnects() count, possibly a new session_id(), and on a replayed stream
// the chunks travel as representatives. See docs/client.md for the exact behaviour.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/client_options.h"
#include "cab/client_types.h"
#include "cab/coarse.h"
#include "cab/v1/cab.grpc.pb.h"

namespace grpc {
class ClientContext;
}

namespace cab {

class Client;

struct SessionOptions {
  int layers = 1;
  int heads = 0;          // Hq
  int kv_heads = 0;       // Hkv (0: heads)
  int head_dim = 0;       // D
  int block_size = 64;
  int batch = 1;
  DType dtype = DType::kF32;  // dtype the chunks travel in
  MaskParams params;          // row_begin/row_end are ignored here: each Mask call names its rows
  MaskFormat format = MaskFormat::kBsr;
  // Coarsen every chunk here and send only representatives (64x fewer bytes at block 64). Chunks
  // must then start on a block boundary: only a layer's last chunk may end mid-block.
  bool representatives = false;
  std::string session_id;     // optional; the server makes one when empty
  // Keep the coarse state of full-token chunks client-side so that a broken stream can be
  // replayed (costs a client-side coarsening of every chunk, about what the server spends).
  // false: a full-token session fails with the stream's error instead. Representatives
  // sessions always keep theirs (it is what they sent).
  bool replay = true;
};

class Session {
 public:
  ~Session();  // closes the stream (the server frees the session)
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends the next n tokens of `layer`: q [B, Hq, n, D], k [B, Hkv, n, D] (any dtype; sent in
  // SessionOptions::dtype). Returns once the server acknowledged the chunk.
  absl::Status Append(int layer, const TensorView& q, const TensorView& k, const CallOptions& call = {});
  // The mask of `layer` over query blocks [row_begin, row_end) (row_end 0: through the last block).
  absl::StatusOr<MaskReply> Mask(int layer, int row_begin = 0, int row_end = 0, bool diagnostics = false,
                                 const CallOptions& call = {});
  // Half-closes the stream and waits for the server's final status.
  absl::Status Close();

  const std::string& session_id() const { return session_id_; }
  int64_t tokens(int layer) const;   // tokens `layer` holds
  int reconnects() const { return reconnects_; }
  int64_t session_bytes() const { return session_bytes_; }  // coarse state the server reported

 private:
  friend class Client;
  struct Stream;
  struct Layer {
    int64_t tokens = 0;         // tokens sent (and held client-side as coarse state)
    CoarseBlocks q, k;          // what the server holds, kept for replay
    bool replayed_partial = false;  // server holds this layer as representatives ending mid-block
  };
  Session(Client* client, SessionOptions options);

  absl::Status Open(const CallOptions& call, bool replay);
  absl::StatusOr<v1::StreamResponse> RoundTrip(const v1::StreamRequest& request, const CallOptions& call);
  absl::StatusOr<v1::StreamResponse> WithReconnect(const v1::StreamRequest& request, const CallOptions& call);
  absl::Status BuildChunk(int layer, int64_t start, const TensorView& q, const TensorView& k,
                          v1::Chunk* chunk);
  void ReplayChunk(int layer, v1::Chunk* chunk) const;
  bool CanReplay() const;
  void DropStream();  // closes the current stream, if any, and collects its status

  Client* client_;
  SessionOptions options_;
  std::unique_ptr<Stream> stream_;
  std::vector<Layer> layers_;
  bool replay_mode_ = false;   // the current stream was opened by a replay (representatives)
  bool need_resync_ = false;   // the server lacks chunks the client holds: reopen and replay first
  absl::Status broken_;        // the server rejected a chunk: client and server state differ for good
  std::string session_id_;
  int reconnects_ = 0;
  int64_t session_bytes_ = 0;
  uint64_t next_request_id_ = 1;
  std::mutex mu_;
};

}  // namespace cab
