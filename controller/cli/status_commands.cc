// hoist status, matrix, agents, backups, lock status, audit.
#include <algorithm>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "controller/cli/commands.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/rollout_watch.h"
#include "controller/cli/table.h"
#include "shared/protocol.h"
#include "shared/proto_names.h"

namespace hoist::cli {
namespace {

namespace v1 = hoist::v1;
using Stub = OperatorClient::Stub;


std::string HealthName(v1::Health h) {
  switch (h) {
    case v1::HEALTH_STARTING: return "starting";
    case v1::HEALTH_HEALTHY: return "healthy";
    case v1::HEALTH_UNHEALTHY: return "unhealthy";
    default: return "unknown";
  }
}

std::string StateName(v1::ContainerState s) {
  std::string name = v1::ContainerState_Name(s);
  absl::string_view v = name;
  absl::ConsumePrefix(&v, "CONTAINER_STATE_");
  return s == v1::CONTAINER_STATE_UNSPECIFIED ? "unknown" : absl::AsciiStrToLower(v);
}

void PrintLock(std::ostream& out, const v1::Lock& lock, absl::Time now) {
  out << "held by rollout " << lock.rollout_id() << " (" << OrDash(lock.owner()) << ") since "
      << FormatAge(lock.acquired_at(), now);
}

}  // namespace

int RunStatus(const Args& args, CliIo& io) {
  Invocation inv("status", io);
  FlagSet flags("hoist status [flags]",
                "Summarises a deployment: pinned release, latest rollout, deploy lock, every instance with\n"
                "its health, and the problems hoistd sees (unhealthy instances, lost agents, skew).");
  flags.AddExample("hoist status");
  flags.AddExample("hoist status -d shop --output json");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::GetStatusRequest req;
  req.set_deployment(*deployment);
  v1::GetStatusResponse resp;
  if (auto code = inv.Fetch("GetStatus", &Stub::GetStatus, req, &resp)) return *code;
  std::ostream& out = inv.out();
  bool colour = io.stdout_tty;
  const v1::Deployment& d = resp.deployment();
  out << "Deployment " << d.name() << "\n"
      << "  pinned version  " << (d.pinned_version().empty() ? "none yet" : d.pinned_version()) << "\n"
      << "  manifest        sha256 " << ShortDigest(d.manifest_sha256()) << ", applied "
      << FormatAge(d.updated_at(), inv.Now()) << "\n";
  if (resp.has_latest_rollout()) {
    const v1::Rollout& r = resp.latest_rollout();
    out << "  latest rollout  " << r.id() << " " << (r.is_rollback() ? "rollback " : "")
        << OrDash(r.plan().from_version()) << " -> " << OrDash(r.plan().to_version()) << " "
        << Paint(RolloutStateName(r.state()), RolloutExitCode(r.state()) == kExitOk ? Colour::kGreen : Colour::kRed,
                 colour && RolloutHasEnded(r.state()))
        << ", started " << FormatAge(r.started_at(), inv.Now()) << (r.started_by().empty() ? "" : " by ")
        << r.started_by() << "\n";
    if (!RolloutHasEnded(r.state())) out << "                  follow it: hoist watch " << r.id() << "\n";
    // Why it stopped: the error's first lines (the rest, with the events: hoist watch ID).
    if (!r.error().empty() &&
        (r.state() == v1::ROLLOUT_STATE_FAILED || r.state() == v1::ROLLOUT_STATE_CANCELLED)) {
      std::vector<std::string> lines = absl::StrSplit(r.error(), '\n', absl::SkipWhitespace());
      for (size_t i = 0; i < lines.size() && i < 4; ++i) {
        if (absl::StartsWith(lines[i], "to roll back:")) continue;  // shown below
        out << (i == 0 ? "  why             " : "                  ") << lines[i] << "\n";
      }
    }
    if (!r.rollback_command().empty() && !absl::StrContains(r.error(), kNothingChangedLine) &&
        (r.state() == v1::ROLLOUT_STATE_FAILED || r.state() == v1::ROLLOUT_STATE_CANCELLED)) {
      out << "                  roll back: " << r.rollback_command() << "\n";
    }
  } else {
    out << "  latest rollout  none\n";
  }
  out << "  deploy lock     ";
  if (resp.has_lock() && !resp.lock().rollout_id().empty()) PrintLock(out, resp.lock(), inv.Now());
  else out << "free";
  out << "\n\n";
  if (resp.instances_size() == 0) {
    out << "No instances reported yet.\n";
  } else {
    Table table({"SERVICE", "REPLICA", "SLOT", "HOST", "VERSION", "STATE", "HEALTH"});
    std::vector<const v1::InstanceStatus*> rows;
    for (const auto& i : resp.instances()) rows.push_back(&i);
    std::sort(rows.begin(), rows.end(), [](const auto* a, const auto* b) {
      const auto& x = a->container().instance();
      const auto& y = b->container().instance();
      return std::make_tuple(x.service(), static_cast<int>(x.slot()), x.replica()) <
             std::make_tuple(y.service(), static_cast<int>(y.slot()), y.replica());
    });
    for (const auto* i : rows) {
      const v1::ContainerInfo& c = i->container();
      std::string health = HealthName(c.health());
      if (c.health() == v1::HEALTH_UNHEALTHY) health = Paint(health, Colour::kRed, colour);
      table.AddRow({c.instance().service(), std::to_string(c.instance().replica()), SlotName(c.instance().slot()),
                    OrDash(i->host_name().empty() ? i->agent_id() : i->host_name()), OrDash(c.version()),
                    StateName(c.state()), health});
    }
    table.Print(out);
  }
  if (resp.problems_size() > 0) {
    out << "\nProblems:\n";
    for (const auto& p : resp.problems()) out << "  " << Paint("!", Colour::kRed, colour) << " " << p << "\n";
  } else {
    out << "\nNo problems.\n";
  }
  return kExitOk;
}

int RunMatrix(const Args& args, CliIo& io) {
  Invocation inv("matrix", io);
  FlagSet flags("hoist matrix [flags]",
                "Shows which version runs where: service x host x slot -> version, image digest and\n"
                "healthy/instances. Cells whose version differs from the pinned release are marked with *,\n"
                "and compatibility rules broken by what runs now are listed.");
  flags.AddExample("hoist matrix");
  flags.AddExample("hoist matrix -d shop --output json | jq '.cells[] | select(.skew)'");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::GetVersionMatrixRequest req;
  req.set_deployment(*deployment);
  v1::GetVersionMatrixResponse resp;
  if (auto code = inv.Fetch("GetVersionMatrix", &Stub::GetVersionMatrix, req, &resp)) return *code;
  std::ostream& out = inv.out();
  bool colour = io.stdout_tty;
  out << "Version matrix of " << (resp.deployment().empty() ? *deployment : resp.deployment()) << " (pinned "
      << (resp.pinned_version().empty() ? "none" : resp.pinned_version()) << ")\n\n";
  if (resp.cells_size() == 0) {
    out << "Nothing runs yet.\n";
  } else {
    std::vector<const v1::MatrixCell*> cells;
    for (const auto& c : resp.cells()) cells.push_back(&c);
    std::sort(cells.begin(), cells.end(), [](const auto* a, const auto* b) {
      return std::make_tuple(a->service(), a->host_name(), a->agent_id(), static_cast<int>(a->slot())) <
             std::make_tuple(b->service(), b->host_name(), b->agent_id(), static_cast<int>(b->slot()));
    });
    Table table({"SERVICE", "HOST", "ADDRESS", "SLOT", "VERSION", "DIGEST", "HEALTHY"});
    int skewed = 0, drifted = 0;
    for (const auto* c : cells) {
      std::string version = OrDash(c->version());
      if (c->skew()) {
        ++skewed;
        version = Paint(absl::StrCat(version, " *"), Colour::kYellow, colour);
      }
      std::string digest = ShortDigest(c->image_digest());
      if (c->digest_drift()) {
        ++drifted;
        digest = Paint(absl::StrCat(digest, " !"), Colour::kRed, colour);
      }
      std::string healthy = absl::StrCat(c->healthy(), "/", c->instances());
      if (c->healthy() < c->instances()) healthy = Paint(healthy, Colour::kRed, colour);
      table.AddRow({c->service(), OrDash(c->host_name().empty() ? c->agent_id() : c->host_name()),
                    OrDash(c->host_address()), SlotName(c->slot()), version, digest, healthy});
    }
    table.Print(out);
    if (skewed > 0) {
      out << "\n* " << skewed << (skewed == 1 ? " cell runs" : " cells run") << " a version other than the pinned "
          << OrDash(resp.pinned_version()) << "\n";
    }
    if (drifted > 0) {
      out << "\n! " << drifted << (drifted == 1 ? " cell runs" : " cells run")
          << " another image digest than release " << OrDash(resp.pinned_version())
          << " recorded: its tag was pushed again after the release was first pulled\n";
    }
  }
  if (resp.violations_size() > 0) {
    out << "\nCompatibility violations:\n";
    for (const auto& v : resp.violations()) out << "  " << Paint("!", Colour::kRed, colour) << " " << v << "\n";
  }
  return kExitOk;
}

int RunAgents(const Args& args, CliIo& io) {
  Invocation inv("agents", io);
  FlagSet flags("hoist agents [flags]",
                "Lists the agents: id, host, its address and Docker engine ID (distinct hosts have distinct\n"
                "ones), versions, whether each is connected to the leader or lost, and how long ago its\n"
                "last heartbeat arrived.");
  flags.AddExample("hoist agents");
  flags.AddExample("hoist agents --output json");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  v1::ListAgentsResponse resp;
  if (auto code = inv.Fetch("ListAgents", &Stub::ListAgents, v1::ListAgentsRequest(), &resp)) return *code;
  if (resp.agents_size() == 0) {
    inv.out() << "No agents have registered yet; start hoist-agent on each Docker host with --controller.\n";
    return kExitOk;
  }
  bool colour = io.stdout_tty;
  Table table({"ID", "HOST", "ADDRESS", "ENGINE", "AGENT", "DOCKER", "STATE", "LAST HEARTBEAT"});
  for (const auto& a : resp.agents()) {
    std::string state = a.lost() ? Paint("lost", Colour::kRed, colour)
                                 : (a.connected() ? "connected" : Paint("disconnected", Colour::kYellow, colour));
    // The engine ID's first field is enough to tell hosts apart in a table;
    // --output json has it whole.
    std::string engine(absl::string_view(a.docker_engine_id()).substr(0, a.docker_engine_id().find(':')));
    table.AddRow({a.id(), OrDash(a.host_name()), OrDash(a.address()), OrDash(engine), OrDash(a.agent_version()),
                  OrDash(a.docker_version()), state,
                  FormatAge(a.last_heartbeat(), inv.Now())});
  }
  table.Print(inv.out());
  return kExitOk;
}

int RunBackups(const Args& args, CliIo& io) {
  Invocation inv("backups", io);
  FlagSet flags("hoist backups [flags]",
                "Lists a deployment's backups, newest first: the release they were taken at, their size and\n"
                "whether every artifact was read back and matched its sha256.");
  flags.AddExample("hoist backups");
  flags.AddExample("hoist backups -d shop --output json");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::ListBackupsRequest req;
  req.set_deployment(*deployment);
  v1::ListBackupsResponse resp;
  if (auto code = inv.Fetch("ListBackups", &Stub::ListBackups, req, &resp)) return *code;
  if (resp.backups_size() == 0) {
    inv.out() << "No backups of " << *deployment << " yet; hoist upgrade takes one before it changes anything.\n";
    return kExitOk;
  }
  Table table({"ID", "VERSION", "TAKEN", "SIZE", "ARTIFACTS", "VERIFIED", "AGENT", "ROLLOUT"});
  for (const auto& b : resp.backups()) {
    uint64_t size = 0;
    std::vector<std::string> kinds;
    for (const auto& a : b.artifacts()) {
      size += a.size_bytes();
      kinds.push_back(a.kind());
    }
    table.AddRow({b.id(), OrDash(b.version()), FormatTime(b.created_at()), FormatBytes(size),
                  kinds.empty() ? "-" : absl::StrJoin(kinds, ","), b.verified() ? "yes" : "NO", OrDash(b.agent_id()),
                  OrDash(b.rollout_id())});
  }
  table.Print(inv.out());
  return kExitOk;
}

int RunLockStatus(const Args& args, CliIo& io) {
  Invocation inv("lock status", io);
  FlagSet flags("hoist lock status [flags]",
                "Lists the deploy locks held now: one rollout at a time per deployment.");
  flags.AddExample("hoist lock status");
  flags.AddExample("hoist lock status --output json");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  v1::ListLocksResponse resp;
  if (auto code = inv.Fetch("ListLocks", &Stub::ListLocks, v1::ListLocksRequest(), &resp)) return *code;
  if (resp.locks_size() == 0) {
    inv.out() << "No deploy lock is held.\n";
    return kExitOk;
  }
  Table table({"DEPLOYMENT", "ROLLOUT", "OWNER", "SINCE"});
  for (const auto& l : resp.locks()) {
    table.AddRow({l.deployment(), l.rollout_id(), OrDash(l.owner()), FormatAge(l.acquired_at(), inv.Now())});
  }
  table.Print(inv.out());
  return kExitOk;
}

int RunAudit(const Args& args, CliIo& io) {
  Invocation inv("audit", io);
  FlagSet flags("hoist audit [flags]",
                "Shows the audit log, newest first: who did what to which deployment, and how it ended.\n"
                "Every deployment's entries unless --deployment is given.");
  flags.AddString("limit", "50", "Most entries to show (1 to 1000).");
  flags.AddString("before", "", "Only entries older than this id (to page back).");
  flags.AddExample("hoist audit --limit 20");
  flags.AddExample("hoist audit -d shop --output json");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  uint32_t limit = 0;
  if (!absl::SimpleAtoi(flags.Get("limit"), &limit) || limit < 1 || limit > 1000) {
    return inv.Usage(absl::StrCat("--limit \"", flags.Get("limit"), "\" must be a whole number from 1 to 1000"));
  }
  v1::ListAuditEventsRequest req;
  req.set_deployment(inv.options().deployment);
  req.set_limit(limit);
  if (flags.IsSet("before")) {
    uint64_t before = 0;
    if (!absl::SimpleAtoi(flags.Get("before"), &before) || before == 0) {
      return inv.Usage(absl::StrCat("--before \"", flags.Get("before"), "\" must be an audit entry id"));
    }
    req.set_before_id(before);
  }
  v1::ListAuditEventsResponse resp;
  if (auto code = inv.Fetch("ListAuditEvents", &Stub::ListAuditEvents, req, &resp)) return *code;
  if (resp.events_size() == 0) {
    inv.out() << "The audit log is empty.\n";
    return kExitOk;
  }
  bool colour = io.stdout_tty;
  Table table({"ID", "TIME", "ACTOR", "ACTION", "DEPLOYMENT", "ROLLOUT", "OUTCOME", "DETAIL"});
  for (const auto& e : resp.events()) {
    std::string outcome = e.outcome() == "ok" ? e.outcome() : Paint(OrDash(e.outcome()), Colour::kRed, colour);
    table.AddRow({std::to_string(e.id()), FormatTime(e.at()), OrDash(e.actor()), e.action(), OrDash(e.deployment()),
                  OrDash(e.rollout_id()), outcome, e.detail()});
  }
  table.Print(inv.out());
  if (resp.events_size() == static_cast<int>(limit)) {
    inv.out() << "\nOlder entries: hoist audit --before " << resp.events(resp.events_size() - 1).id() << "\n";
  }
  return kExitOk;
}

}  // namespace hoist::cli
