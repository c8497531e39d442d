#pragma once

// The hoist CLI's connection to hoistd: dials the controller addresses in
// order, follows a follower's "hoist-leader" redirect once, and turns gRPC
// failures into absl::Status messages that say what to do next.

#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "hoist/v1/operator.grpc.pb.h"

namespace hoist::cli {

class Interrupt;

// The trailing-metadata key a follower puts the leader's address in.
inline constexpr char kLeaderTrailer[] = "hoist-leader";

struct ConnectionOptions {
  // Controller addresses (host:port), tried in order.
  std::vector<std::string> addresses;
  // TLS or insecure credentials for every channel.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Deadline of each unary call.
  absl::Duration timeout = absl::Seconds(10);
  // Where debug lines go (redirects, retries); null for none.
  std::ostream* debug = nullptr;
};

// OperatorClient makes OperatorService calls with failover between the
// configured controllers. Not thread-safe: one per command.
class OperatorClient {
 public:
  using Stub = hoist::v1::OperatorService::Stub;
  template <class Req, class Resp>
  using Rpc = grpc::Status (Stub::*)(grpc::ClientContext*, const Req&, Resp*);

  explicit OperatorClient(ConnectionOptions options);

  // Calls one unary RPC. A controller answering UNAVAILABLE with the
  // hoist-leader trailer is skipped for that leader (once); UNAVAILABLE
  // without it moves on to the next address. The first address that answers
  // is preferred for later calls. Errors keep gRPC's code; UNAVAILABLE and
  // DEADLINE_EXCEEDED name the addresses tried and the flag to set.
  template <class Req, class Resp>
  absl::Status Call(absl::string_view method, Rpc<Req, Resp> rpc, const Req& request, Resp* response) {
    return Invoke(method, [&](Stub& stub, grpc::ClientContext& ctx) { return (stub.*rpc)(&ctx, request, response); });
  }

  // Streams a rollout's events after `after_sequence` to on_event until the
  // server ends the stream. Does not retry (the caller resumes from the last
  // sequence it saw). When `interrupt` fires the stream is cancelled and
  // CANCELLED is returned.
  absl::Status Watch(const std::string& rollout_id, uint64_t after_sequence, Interrupt* interrupt,
                     const std::function<void(const hoist::v1::WatchRolloutResponse&)>& on_event);

  // The addresses, preferred (last to answer) first.
  std::vector<std::string> Addresses() const;

 private:
  using Attempt = std::function<grpc::Status(Stub&, grpc::ClientContext&)>;
  absl::Status Invoke(absl::string_view method, const Attempt& attempt);
  Stub& StubFor(const std::string& address);
  void Debug(absl::string_view line);

  ConnectionOptions options_;
  std::string preferred_;
  std::map<std::string, std::unique_ptr<Stub>> stubs_;
};

// Maps a status to the CLI's exit code: NOT_FOUND 3, INVALID_ARGUMENT 2,
// UNAVAILABLE / DEADLINE_EXCEEDED / UNIMPLEMENTED 69, CANCELLED 130, others 1.
int ExitCodeFor(const absl::Status& status);

}  // namespace hoist::cli
