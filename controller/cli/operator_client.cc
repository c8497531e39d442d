#include "controller/cli/operator_client.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/interrupt.h"
#include "shared/status_grpc.h"

namespace hoist::cli {
namespace {

std::string LeaderHint(const grpc::ClientContext& ctx) {
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto it = trailers.find(kLeaderTrailer);
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// The error for "no address answered": names them and what to check.
absl::Status Unreachable(const std::vector<std::string>& tried, const grpc::Status& last, absl::string_view method,
                         absl::Duration timeout) {
  std::string where = tried.size() == 1 ? absl::StrCat("controller at ", tried[0], " is")
                                        : absl::StrCat("controllers at ", absl::StrJoin(tried, ", "), " are");
  if (last.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(absl::StrCat(where, " not answering ", method, " within ",
                                                    absl::FormatDuration(timeout),
                                                    ": is hoistd overloaded? raise --timeout or set --controller"));
  }
  return absl::UnavailableError(absl::StrCat(where, " not reachable (", last.error_message(),
                                             "): is hoistd running? set --controller or $HOIST_CONTROLLER"));
}

}  // namespace

OperatorClient::OperatorClient(ConnectionOptions options) : options_(std::move(options)) {}

std::vector<std::string> OperatorClient::Addresses() const {
  std::vector<std::string> out;
  if (!preferred_.empty()) out.push_back(preferred_);
  for (const auto& a : options_.addresses) {
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  return out;
}

OperatorClient::Stub& OperatorClient::StubFor(const std::string& address) {
  auto& stub = stubs_[address];
  if (stub == nullptr) {
    grpc::ChannelArguments args;
    // A CLI call should fail fast on a dead address and move to the next one.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    stub = hoist::v1::OperatorService::NewStub(grpc::CreateCustomChannel(address, options_.credentials, args));
  }
  return *stub;
}

void OperatorClient::Debug(absl::string_view line) {
  if (options_.debug != nullptr) *options_.debug << "hoist: debug: " << line << "\n";
}

absl::Status OperatorClient::Invoke(absl::string_view method, const Attempt& attempt) {
  auto call = [&](const std::string& address, std::string* leader) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.timeout)));
    grpc::Status s = attempt(StubFor(address), ctx);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE && leader != nullptr) *leader = LeaderHint(ctx);
    return s;
  };
  std::vector<std::string> tried;
  grpc::Status last;
  for (const std::string& address : Addresses()) {
    std::string leader;
    grpc::Status s = call(address, &leader);
    tried.push_back(address);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE && !leader.empty() && leader != address) {
      Debug(absl::StrCat(address, " is a follower; retrying ", method, " on the leader at ", leader));
      s = call(leader, nullptr);
      if (s.ok()) {
        preferred_ = leader;
        return absl::OkStatus();
      }
      tried.push_back(leader);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) {
        if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) last = s;
        else return FromGrpcStatus(s);
      } else {
        last = s;
      }
      // The leader named by a follower did not answer: it may just have
      // changed; the remaining addresses might know better.
      continue;
    }
    if (s.ok()) {
      preferred_ = address;
      return absl::OkStatus();
    }
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      Debug(absl::StrCat(address, " did not answer ", method, " within ", absl::FormatDuration(options_.timeout)));
      last = s;
      continue;
    }
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      if (s.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
        return absl::UnimplementedError(absl::StrCat("the controller at ", address, " does not implement ", method,
                                                     " yet (", s.error_message(), "); upgrade hoistd"));
      }
      return FromGrpcStatus(s);
    }
    Debug(absl::StrCat(address, " is unavailable for ", method, ": ", s.error_message()));
    last = s;
  }
  return Unreachable(tried, last, method, options_.timeout);
}

absl::Status OperatorClient::Watch(const std::string& rollout_id, uint64_t after_sequence, Interrupt* interrupt,
                                   const std::function<void(const hoist::v1::WatchRolloutResponse&)>& on_event) {
  std::vector<std::string> addresses = Addresses();
  grpc::Status last;
  for (const std::string& address : addresses) {
    grpc::ClientContext ctx;
    hoist::v1::WatchRolloutRequest request;
    request.set_id(rollout_id);
    request.set_after_sequence(after_sequence);
    auto scope = std::make_unique<Interrupt::Scope>(interrupt, [&ctx] { ctx.TryCancel(); });
    auto reader = StubFor(address).WatchRollout(&ctx, request);
    hoist::v1::WatchRolloutResponse event;
    bool any = false;
    while (reader->Read(&event)) {
      any = true;
      after_sequence = std::max(after_sequence, event.event().sequence());
      on_event(event);
    }
    grpc::Status s = reader->Finish();
    scope.reset();  // the context dies with this iteration
    if (interrupt != nullptr && interrupt->triggered()) return absl::CancelledError("interrupted");
    if (s.ok()) {
      preferred_ = address;
      return absl::OkStatus();
    }
    // Events already delivered cannot be taken back: let the caller resume.
    if (any || s.error_code() != grpc::StatusCode::UNAVAILABLE) return FromGrpcStatus(s);
    Debug(absl::StrCat(address, " is unavailable for WatchRollout: ", s.error_message()));
    last = s;
  }
  return Unreachable(addresses, last, "WatchRollout", options_.timeout);
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk: return kExitOk;
    case absl::StatusCode::kNotFound: return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return kExitUsage;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnimplemented: return kExitUnavailable;
    case absl::StatusCode::kCancelled: return kExitInterrupted;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated: return kExitPermission;
    default: return kExitFailed;
  }
}

}  // namespace hoist::cli
