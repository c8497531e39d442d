#pragma once

// Who may do what on hoistd. Under mTLS every call's certificate is read
// (shared/tls.h): its role (OU=role:...), name, operator level and serial.
// OperatorService takes operator certificates only, at the level each call
// needs (OperatorCallRules, the README's table); AgentService takes agent
// certificates only. Revoked certificates are refused. Every refusal is
// PERMISSION_DENIED (UNAUTHENTICATED for a revoked or unreadable
// certificate) naming the caller, the call and what it needs, and is written
// to the audit log. Without TLS (development) nothing is checked.

#include <functional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controller/rollout/rollout_store.h"
#include "shared/ca.h"
#include "shared/revocation.h"

namespace hoist {

// One row of the permission table.
struct CallRule {
  // An OperatorService method, or "Rollback --restore" for a rollback that
  // restores a backup.
  absl::string_view call;
  OperatorLevel level;
};

// Every OperatorService call and the least level it needs.
const std::vector<CallRule>& OperatorCallRules();

// The least level `call` needs; kNone when the table has no such call.
OperatorLevel LevelNeeded(absl::string_view call);

class Authorizer {
 public:
  struct Options {
    // False: a development controller without TLS; every call is allowed
    // and the actor is the peer address.
    bool tls = false;
    // May be null: nothing is revoked.
    const RevocationWatcher* revocations = nullptr;
    // Writes a refusal to the audit log; may be empty.
    std::function<void(const rollout::AuditEntry&)> audit;
  };
  explicit Authorizer(Options options) : options_(std::move(options)) {}

  // OK when the caller may make `call` (a name from OperatorCallRules), with
  // *actor set to who it is ("alice", or "operator@ipv4:..." without TLS).
  grpc::Status CheckOperator(const grpc::ServerContext& context, absl::string_view call, absl::string_view deployment,
                             std::string* actor) const;

  // The certificate of an agent opening a session: an agent certificate,
  // not revoked. Without TLS, a CertInfo with no serial.
  absl::StatusOr<CertInfo> CheckAgent(const grpc::ServerContextBase& context) const;

  bool tls() const { return options_.tls; }
  bool IsRevoked(absl::string_view serial) const {
    return options_.revocations != nullptr && !serial.empty() && options_.revocations->IsRevoked(serial);
  }

 private:
  // Logs and audits a refusal; returns it as a status with `code`.
  absl::Status Refuse(absl::StatusCode code, const std::string& actor, absl::string_view call,
                      absl::string_view deployment, const std::string& message) const;

  Options options_;
};

}  // namespace hoist
