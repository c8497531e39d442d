#include "controller/authorizer.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/status_grpc.h"
#include "shared/tls.h"
#include "spdlog/spdlog.h"

namespace hoist {

const std::vector<CallRule>& OperatorCallRules() {
  static const std::vector<CallRule> kRules = {
      {"GetDeployment", OperatorLevel::kViewer},
      {"ListDeployments", OperatorLevel::kViewer},
      {"GetRelease", OperatorLevel::kViewer},
      {"ListReleases", OperatorLevel::kViewer},
      {"GetRollout", OperatorLevel::kViewer},
      {"ListRollouts", OperatorLevel::kViewer},
      {"WatchRollout", OperatorLevel::kViewer},
      {"GetStatus", OperatorLevel::kViewer},
      {"GetVersionMatrix", OperatorLevel::kViewer},
      {"ListAgents", OperatorLevel::kViewer},
      {"ListBackups", OperatorLevel::kViewer},
      {"ListAuditEvents", OperatorLevel::kViewer},
      {"ListLocks", OperatorLevel::kViewer},
      {"CreateRelease", OperatorLevel::kDeployer},
      {"PlanRollout", OperatorLevel::kDeployer},
      {"StartRollout", OperatorLevel::kDeployer},
      {"CancelRollout", OperatorLevel::kDeployer},
      {"Rollback", OperatorLevel::kDeployer},
      {"Cutover", OperatorLevel::kDeployer},
      {"ApplyStack", OperatorLevel::kAdmin},
      {"Rollback --restore", OperatorLevel::kAdmin},
  };
  return kRules;
}

OperatorLevel LevelNeeded(absl::string_view call) {
  for (const CallRule& rule : OperatorCallRules()) {
    if (rule.call == call) return rule.level;
  }
  return OperatorLevel::kNone;
}

namespace {

// What a certificate of the wrong role is, for a refusal.
std::string Presents(const CertInfo& cert) {
  return cert.kind.has_value() ? absl::StrCat("a ", CertKindName(*cert.kind), " certificate")
                               : std::string("a certificate without a Hoist role");
}

}  // namespace

absl::Status Authorizer::Refuse(absl::StatusCode code, const std::string& actor, absl::string_view call,
                                absl::string_view deployment, const std::string& message) const {
  spdlog::warn("refused {} to {}: {}", std::string(call), actor, message);
  if (options_.audit) {
    options_.audit({.actor = actor,
                    .action = std::string(call),
                    .deployment = std::string(deployment),
                    .rollout_id = "",
                    .outcome = "refused",
                    .detail = message});
  }
  return absl::Status(code, message);
}

grpc::Status Authorizer::CheckOperator(const grpc::ServerContext& context, absl::string_view call,
                                       absl::string_view deployment, std::string* actor) const {
  if (!options_.tls) {
    *actor = absl::StrCat("operator@", context.peer());
    return grpc::Status::OK;
  }
  auto cert = PeerCertificate(context);
  if (!cert.ok()) {
    *actor = absl::StrCat("unknown@", context.peer());
    return ToGrpcStatus(Refuse(absl::StatusCode::kUnauthenticated, *actor, call, deployment,
                               absl::StrCat("cannot read the caller's certificate: ", cert.status().message())));
  }
  *actor = cert->common_name;
  if (IsRevoked(cert->serial)) {
    return ToGrpcStatus(Refuse(absl::StatusCode::kUnauthenticated, *actor, call, deployment,
                               absl::StrCat("the certificate of \"", *actor, "\" (serial ", cert->serial,
                                            ") is revoked; ask an admin for a new one (hoist ca issue)")));
  }
  const OperatorLevel needed = LevelNeeded(call);
  if (!cert->kind.has_value() || *cert->kind != CertKind::kOperator) {
    return ToGrpcStatus(Refuse(absl::StatusCode::kPermissionDenied, *actor, call, deployment,
                               absl::StrCat("\"", *actor, "\" presents ", Presents(*cert), "; ", call,
                                            " needs an operator certificate with level ", OperatorLevelName(needed),
                                            " or above (hoist ca issue operator NAME --level ",
                                            OperatorLevelName(needed), ")")));
  }
  if (needed == OperatorLevel::kNone) {
    return ToGrpcStatus(Refuse(absl::StatusCode::kPermissionDenied, *actor, call, deployment,
                               absl::StrCat(call, " is not in hoistd's permission table; nobody may call it")));
  }
  if (cert->level < needed) {
    return ToGrpcStatus(Refuse(absl::StatusCode::kPermissionDenied, *actor, call, deployment,
                               absl::StrCat("operator \"", *actor, "\" has level ", OperatorLevelName(cert->level),
                                            "; ", call, " needs ", OperatorLevelName(needed),
                                            " (an admin issues one with: hoist ca issue operator ", *actor,
                                            " --level ", OperatorLevelName(needed), " --force)")));
  }
  return grpc::Status::OK;
}

absl::StatusOr<CertInfo> Authorizer::CheckAgent(const grpc::ServerContextBase& context) const {
  if (!options_.tls) return CertInfo{};
  const absl::string_view call = "AgentService.Session";
  auto cert = PeerCertificate(context);
  if (!cert.ok()) {
    return Refuse(absl::StatusCode::kUnauthenticated, absl::StrCat("unknown@", context.peer()), call, "",
                  absl::StrCat("cannot read the agent's certificate: ", cert.status().message()));
  }
  if (IsRevoked(cert->serial)) {
    return Refuse(absl::StatusCode::kUnauthenticated, cert->common_name, call, "",
                  absl::StrCat("the certificate of \"", cert->common_name, "\" (serial ", cert->serial,
                               ") is revoked; issue the host a new one (hoist ca issue agent ", cert->common_name,
                               " --force)"));
  }
  if (!cert->kind.has_value() || *cert->kind != CertKind::kAgent) {
    return Refuse(absl::StatusCode::kPermissionDenied, cert->common_name, call, "",
                  absl::StrCat("\"", cert->common_name, "\" presents ", Presents(*cert),
                               "; only agent certificates open agent sessions (hoist ca issue agent ID)"));
  }
  if (cert->not_after - absl::Now() < kCertificateExpiryWarning) {
    spdlog::warn("the certificate of agent {} expires on {}: issue a new one (hoist ca issue agent {} --force)",
                 cert->common_name, absl::FormatTime("%Y-%m-%d", cert->not_after, absl::UTCTimeZone()),
                 cert->common_name);
  }
  return cert;
}

}  // namespace hoist
