// hoist plan, upgrade, watch, rollback, cutover, cancel.
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "controller/cli/commands.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/rollout_watch.h"
#include "controller/cli/table.h"
#include "shared/config.h"
#include "shared/semver.h"

namespace hoist::cli {
namespace {

namespace v1 = hoist::v1;
using Stub = OperatorClient::Stub;

constexpr const char* kReleaseHint =
    "`hoist releases` lists the recorded releases; `hoist release create FILE` records one";

absl::StatusOr<v1::Strategy> ParseStrategy(const std::string& text) {
  if (text == "rolling") return v1::STRATEGY_ROLLING;
  if (text == "blue-green") return v1::STRATEGY_BLUE_GREEN;
  return absl::InvalidArgumentError(
      absl::StrCat("--strategy \"", text, "\" is not a strategy; use rolling or blue-green"));
}

absl::Status CheckVersion(absl::string_view what, const std::string& text) {
  auto v = Version::Parse(text);
  if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", v.status().message()));
  return absl::OkStatus();
}

void AddStrategyFlag(FlagSet& flags) {
  flags.AddString("strategy", "rolling",
                  "rolling (in place, ordered phases and batches) or blue-green (second slot, one proxy switch).");
}

size_t CountSteps(const v1::Plan& plan, std::set<std::string>* agents) {
  size_t n = 0;
  for (const auto& phase : plan.phases()) {
    n += phase.steps_size();
    for (const auto& step : phase.steps()) {
      if (!step.agent_id().empty()) agents->insert(step.agent_id());
    }
  }
  return n;
}

void PrintPlan(std::ostream& out, const v1::Plan& plan, bool colour) {
  out << "Plan for " << plan.deployment() << ": " << OrDash(plan.from_version()) << " -> " << plan.to_version()
      << " (" << StrategyName(plan.strategy()) << ")\n";
  int n = 0;
  for (const auto& phase : plan.phases()) {
    out << "\n" << ++n << ". " << Paint(phase.name(), Colour::kBold, colour) << "\n";
    if (!phase.reason().empty()) out << "   why: " << phase.reason() << "\n";
    if (phase.steps_size() == 0) continue;
    Table steps({"BATCH", "AGENT", "STEP"});
    for (int i = 0; i < phase.steps_size(); ++i) {
      const auto& step = phase.steps(i);
      steps.AddRow({i < phase.batches_size() ? std::to_string(phase.batches(i)) : "-",
                    step.agent_id().empty() ? "controller" : step.agent_id(), step.description()});
    }
    steps.Print(out, 3);
  }
  if (plan.notes_size() > 0) {
    out << "\nRelease notes (" << plan.notes_size() << (plan.notes_size() == 1 ? " release" : " releases")
        << " after " << OrDash(plan.from_version()) << "):\n";
    for (const auto& r : plan.notes()) {
      out << "\n  " << Paint(r.version(), Colour::kBold, colour) << "\n";
      if (r.notes().empty()) out << "    (no notes)\n";
      PrintIndented(out, r.notes(), 4);
      if (r.required_env_size() > 0) out << "    requires env: " << absl::StrJoin(r.required_env(), ", ") << "\n";
      for (const auto& [from, to] : r.renamed_env()) out << "    renames env: " << from << " -> " << to << "\n";
    }
  }
  if (plan.warnings_size() > 0) {
    out << "\nWarnings:\n";
    for (const auto& w : plan.warnings()) out << "  " << Paint("!", Colour::kYellow, colour) << " " << w << "\n";
  }
}

void PrintPlanSummary(std::ostream& out, const v1::Plan& plan, bool colour) {
  std::set<std::string> agents;
  size_t steps = CountSteps(plan, &agents);
  std::vector<std::string> phases, versions;
  for (const auto& phase : plan.phases()) phases.push_back(phase.name());
  for (const auto& r : plan.notes()) versions.push_back(r.version());
  out << "Upgrade " << plan.deployment() << " from " << OrDash(plan.from_version()) << " to " << plan.to_version()
      << " (" << StrategyName(plan.strategy()) << "): " << phases.size() << " phases, " << steps << " steps on "
      << agents.size() << (agents.size() == 1 ? " host" : " hosts") << "\n"
      << "  phases: " << absl::StrJoin(phases, ", ") << "\n";
  if (!versions.empty()) {
    out << "  release notes: " << absl::StrJoin(versions, ", ") << " (read them: hoist plan " << plan.to_version()
        << ")\n";
  }
  for (const auto& w : plan.warnings()) out << "  " << Paint("warning:", Colour::kYellow, colour) << " " << w << "\n";
}

// Splits a command line into words: whitespace separates, '...' and "..."
// quote, a backslash escapes the next character. No shell runs it.
absl::StatusOr<std::vector<std::string>> SplitCommand(absl::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
      else if (c == '\\' && quote == '"' && i + 1 < text.size()) word += text[++i];
      else word += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < text.size()) {
      word += text[++i];
      in_word = true;
    } else if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--smoke-test has an unclosed ", std::string(1, quote),
                                                    " quote; quote the whole command for your shell"));
  }
  if (in_word) words.push_back(std::move(word));
  if (words.empty()) return absl::InvalidArgumentError("--smoke-test is empty; give a command such as ./smoke.sh");
  return words;
}

// Asks a yes/no question on the terminal; true only for "y" or "yes".
bool Confirm(Invocation& inv, absl::string_view question) {
  inv.out() << question << " [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(*inv.io().in, answer)) return false;
  std::string a = absl::AsciiStrToLower(absl::StripAsciiWhitespace(answer));
  return a == "y" || a == "yes";
}

}  // namespace

int RunPlan(const Args& args, CliIo& io) {
  Invocation inv("plan", io);
  FlagSet flags("hoist plan VERSION [flags]",
                "Shows what an upgrade to VERSION would do, in order and why; touches nothing.\n"
                "Lists the phases with their reason, the steps with their batch and agent, the release\n"
                "notes of every release in between and the warnings to read first.");
  AddStrategyFlag(flags);
  flags.AddBool("skip-backup", "Plan without the manifest's backup (as hoist upgrade --skip-backup).");
  flags.AddExample("hoist plan 1.5.0");
  flags.AddExample("hoist plan 1.5.0 --strategy blue-green -d shop");
  if (auto code = inv.Parse(flags, args, 1, 1, "VERSION")) return *code;
  auto strategy = ParseStrategy(flags.Get("strategy"));
  if (!strategy.ok()) return inv.Usage(strategy.status().message());
  if (auto s = CheckVersion("VERSION", inv.args()[0]); !s.ok()) return inv.Usage(s.message());
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::PlanRolloutRequest req;
  req.set_deployment(*deployment);
  req.set_skip_backup(flags.GetBool("skip-backup"));
  req.set_target_version(inv.args()[0]);
  req.set_strategy(*strategy);
  v1::PlanRolloutResponse resp;
  if (auto code = inv.Fetch("PlanRollout", &Stub::PlanRollout, req, &resp, kReleaseHint)) return *code;
  PrintPlan(inv.out(), resp.plan(), io.stdout_tty);
  inv.out() << "\nNothing was changed. Start it with: hoist upgrade " << resp.plan().to_version()
            << (*strategy == v1::STRATEGY_BLUE_GREEN ? " --strategy blue-green" : "") << "\n";
  return kExitOk;
}

int RunUpgrade(const Args& args, CliIo& io) {
  Invocation inv("upgrade", io);
  FlagSet flags("hoist upgrade VERSION [flags]",
                "Upgrades the deployment to VERSION and follows it live: pre-flight, backup, pull on every\n"
                "host, ordered phases with health gates, post-check. Shows the plan and asks first unless\n"
                "--yes. Ctrl-C detaches; the rollout keeps running (hoist watch ID re-attaches).\n"
                "Exits 0 when the rollout succeeded, 1 when it failed, was cancelled or rolled back.");
  AddStrategyFlag(flags);
  flags.AddString("on-failure", "stop", "stop (and print the exact rollback command) or rollback (by itself).");
  flags.AddBool("yes", "Do not ask for confirmation (required when stdin is not a terminal).");
  flags.AddString("smoke-test", "",
                  "Command for this rollout's smoke test, in place of the manifest's smoke_test.command.\n"
                  "It runs from the new image of smoke_test.service (the manifest must name one): after\n"
                  "every instance is healthy (rolling), or before the switch (blue-green). A non-zero\n"
                  "exit fails the rollout.");
  flags.AddString("grace-period", "", "Blue-green: how long blue stays up after the switch (server default).");
  flags.AddBool("skip-backup",
                "Leave out the manifest's backup for this rollout. A rollback then cannot restore the data\n"
                "(the plan warns): use it when you took a backup of your own.");
  flags.AddExample("hoist upgrade 1.5.0");
  flags.AddExample("hoist upgrade 1.5.0 --strategy blue-green --grace-period 10m");
  flags.AddExample("hoist upgrade 1.5.0 --yes --on-failure rollback --smoke-test './smoke.sh https://shop.local'");
  if (auto code = inv.Parse(flags, args, 1, 1, "VERSION")) return *code;
  const std::string& version = inv.args()[0];
  if (auto s = CheckVersion("VERSION", version); !s.ok()) return inv.Usage(s.message());
  auto strategy = ParseStrategy(flags.Get("strategy"));
  if (!strategy.ok()) return inv.Usage(strategy.status().message());
  v1::StartRolloutRequest req;
  req.set_target_version(version);
  req.set_strategy(*strategy);
  req.set_skip_backup(flags.GetBool("skip-backup"));
  const std::string& on_failure = flags.Get("on-failure");
  if (on_failure == "stop") req.set_on_failure(v1::ON_FAILURE_STOP);
  else if (on_failure == "rollback") req.set_on_failure(v1::ON_FAILURE_ROLLBACK);
  else return inv.Usage(absl::StrCat("--on-failure \"", on_failure, "\" is not a policy; use stop or rollback"));
  if (flags.IsSet("smoke-test")) {
    auto words = SplitCommand(flags.Get("smoke-test"));
    if (!words.ok()) return inv.Usage(words.status().message());
    for (auto& w : *words) req.add_smoke_test(std::move(w));
  }
  if (flags.IsSet("grace-period")) {
    if (*strategy != v1::STRATEGY_BLUE_GREEN) return inv.Usage("--grace-period needs --strategy blue-green");
    auto grace = ParseDurationSetting("--grace-period", flags.Get("grace-period"));
    if (!grace.ok()) return inv.Usage(grace.status().message());
    req.mutable_grace_period()->set_seconds(absl::ToInt64Seconds(*grace));
  }
  bool ask = !flags.GetBool("yes");
  if (ask && !io.stdin_tty) {
    return inv.Usage("stdin is not a terminal, so there is nobody to confirm the upgrade; review it with "
                     "`hoist plan " + version + "`, then re-run with --yes");
  }
  if (ask && inv.json()) {
    return inv.Usage("--output json cannot ask for confirmation; re-run with --yes");
  }
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  req.set_deployment(*deployment);

  // The plan shown is the plan that runs: the start carries its digest, and
  // a plan that changed in between is shown again (and asked about again).
  v1::StartRolloutResponse started;
  for (int round = 1;; ++round) {
    if (!inv.json()) {
      v1::PlanRolloutRequest plan_req;
      plan_req.set_deployment(*deployment);
      plan_req.set_target_version(version);
      plan_req.set_strategy(*strategy);
      plan_req.set_skip_backup(req.skip_backup());
      plan_req.set_on_failure(req.on_failure());
      *plan_req.mutable_smoke_test() = req.smoke_test();
      if (req.has_grace_period()) *plan_req.mutable_grace_period() = req.grace_period();
      v1::PlanRolloutResponse plan;
      if (auto s = inv.Call("PlanRollout", &Stub::PlanRollout, plan_req, &plan); !s.ok()) {
        return inv.Fail(s, kReleaseHint);
      }
      PrintPlanSummary(inv.out(), plan.plan(), io.stdout_tty);
      if (ask && !Confirm(inv, absl::StrCat("Upgrade ", *deployment, " to ", version, "?"))) {
        inv.out() << "Not started; nothing changed.\n";
        return kExitFailed;
      }
      req.set_expected_plan_digest(plan.plan().digest());
    }
    absl::Status s = inv.Call("StartRollout", &Stub::StartRollout, req, &started);
    if (s.ok()) break;
    if (s.code() != absl::StatusCode::kAborted || req.expected_plan_digest().empty() || round == 3) {
      return inv.Fail(s, kReleaseHint);
    }
    inv.err() << "hoist: " << s.message() << "\n";
    inv.out() << "\nThe plan as it is now:\n";
  }
  if (inv.json()) {
    inv.PrintJson(started);
  } else {
    inv.out() << "Started rollout " << started.rollout().id() << " (Ctrl-C detaches; hoist watch "
              << started.rollout().id() << " re-attaches)\n";
  }
  return FollowRollout(inv, started.rollout());
}

int RunWatch(const Args& args, CliIo& io) {
  Invocation inv("watch", io);
  FlagSet flags("hoist watch ROLLOUT_ID [flags]",
                "Follows a rollout from its first event until it ends, then prints its summary.\n"
                "Exits 0 when it succeeded, 1 when it failed, was cancelled or rolled back; Ctrl-C detaches.");
  flags.AddExample("hoist watch r-20260115-0007");
  flags.AddExample("hoist watch r-20260115-0007 --output json | jq .event.message");
  if (auto code = inv.Parse(flags, args, 1, 1, "ROLLOUT_ID (hoist status shows the latest)")) return *code;
  v1::GetRolloutRequest req;
  req.set_id(inv.args()[0]);
  v1::GetRolloutResponse resp;
  if (auto s = inv.Call("GetRollout", &Stub::GetRollout, req, &resp); !s.ok()) {
    return inv.Fail(s, "`hoist status` shows the latest rollout and its id");
  }
  return FollowRollout(inv, resp.rollout());
}

int RunRollback(const Args& args, CliIo& io) {
  Invocation inv("rollback", io);
  FlagSet flags("hoist rollback [flags]",
                "Rolls the deployment back to the previous release (or --to VERSION) and follows it live.\n"
                "When a migration ran since the backup was taken, hoistd needs that backup restored:\n"
                "--restore BACKUP_ID, confirmed by typing the deployment's name (or --confirm NAME).");
  flags.AddString("to", "", "Version to go back to (default: the previous release).");
  flags.AddString("restore", "", "Backup to restore (hoist backups lists them).");
  flags.AddString("confirm", "", "The deployment's name, confirming the restore without a prompt.");
  flags.AddBool("no-watch", "Start the rollback and return at once.");
  flags.AddExample("hoist rollback");
  flags.AddExample("hoist rollback --to 1.4.2");
  flags.AddExample("hoist rollback --to 1.4.2 --restore b-0042 --confirm shop");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  if (flags.IsSet("to")) {
    if (auto s = CheckVersion("--to", flags.Get("to")); !s.ok()) return inv.Usage(s.message());
  }
  if (flags.IsSet("confirm") && !flags.IsSet("restore")) {
    return inv.Usage("--confirm only confirms a --restore; add --restore BACKUP_ID or drop --confirm");
  }
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  v1::RollbackRequest req;
  req.set_deployment(*deployment);
  req.set_to_version(flags.Get("to"));
  if (flags.IsSet("restore")) {
    req.set_restore_backup_id(flags.Get("restore"));
    std::string confirm = flags.Get("confirm");
    if (!flags.IsSet("confirm")) {
      if (!io.stdin_tty || inv.json()) {
        return inv.Usage(absl::StrCat("restoring backup ", flags.Get("restore"), " replaces ", *deployment,
                                      "'s data and needs confirmation; add --confirm ", *deployment));
      }
      inv.out() << "Restoring backup " << flags.Get("restore") << " replaces the data of " << *deployment
                << " with the backup's.\nType the deployment's name (" << *deployment << ") to confirm: "
                << std::flush;
      if (!std::getline(*io.in, confirm)) confirm.clear();
      confirm = std::string(absl::StripAsciiWhitespace(confirm));
      if (confirm != *deployment) {
        inv.err() << "hoist rollback: \"" << confirm << "\" is not " << *deployment
                  << "; nothing was changed\n";
        return kExitFailed;
      }
    } else if (confirm != *deployment) {
      return inv.Usage(absl::StrCat("--confirm \"", confirm, "\" does not match the deployment's name \"",
                                    *deployment, "\"; nothing was changed"));
    }
    req.set_confirm_name(confirm);
  }
  v1::RollbackResponse resp;
  if (auto s = inv.Call("Rollback", &Stub::Rollback, req, &resp); !s.ok()) {
    return inv.Fail(s, "`hoist releases` lists the releases and `hoist backups` the backups");
  }
  if (inv.json()) {
    inv.PrintJson(resp);
  } else {
    inv.out() << "Started rollback " << resp.rollout().id() << " of " << *deployment << " to "
              << OrDash(resp.rollout().plan().to_version()) << "\n";
  }
  if (flags.GetBool("no-watch")) {
    if (!inv.json()) inv.out() << "Follow it with: hoist watch " << resp.rollout().id() << "\n";
    return kExitOk;
  }
  return FollowRollout(inv, resp.rollout());
}

int RunCutover(const Args& args, CliIo& io) {
  Invocation inv("cutover", io);
  FlagSet flags("hoist cutover --back|--forward|--finish [flags]",
                "Switches a blue-green deployment's proxy during the grace period: --back to blue at once,\n"
                "--forward to green again, or --finish to end the grace period and retire blue.");
  flags.AddBool("back", "Send traffic back to blue.");
  flags.AddBool("forward", "Send traffic to green again.");
  flags.AddBool("finish", "Retire blue now; green stays.");
  flags.AddExample("hoist cutover --back");
  flags.AddExample("hoist cutover --finish -d shop");
  if (auto code = inv.Parse(flags, args, 0, 0, "")) return *code;
  v1::CutoverRequest req;
  int chosen = 0;
  if (flags.GetBool("back")) ++chosen, req.set_direction(v1::CUTOVER_DIRECTION_BACK);
  if (flags.GetBool("forward")) ++chosen, req.set_direction(v1::CUTOVER_DIRECTION_FORWARD);
  if (flags.GetBool("finish")) ++chosen, req.set_direction(v1::CUTOVER_DIRECTION_FINISH);
  if (chosen != 1) return inv.Usage("give exactly one of --back, --forward or --finish");
  auto deployment = inv.Deployment();
  if (!deployment.ok()) return inv.Fail(deployment.status());
  req.set_deployment(*deployment);
  v1::CutoverResponse resp;
  if (auto code = inv.Fetch("Cutover", &Stub::Cutover, req, &resp)) return *code;
  std::string slot = resp.live_slot() == v1::SLOT_GREEN ? "green" : "blue";
  inv.out() << "Traffic to " << *deployment << " now goes to " << slot << " (switch took "
            << HumanDuration(ToAbslDuration(resp.took())) << ")\n";
  if (req.direction() == v1::CUTOVER_DIRECTION_FINISH) {
    inv.out() << "The " << (resp.live_slot() == v1::SLOT_GREEN ? "blue" : "green")
              << " slot is being retired; hoist status shows when it is gone.\n";
  }
  return kExitOk;
}

int RunCancel(const Args& args, CliIo& io) {
  Invocation inv("cancel", io);
  FlagSet flags("hoist cancel ROLLOUT_ID [flags]",
                "Cancels a running rollout: it stops after its current steps and takes no new ones.");
  flags.AddString("reason", "", "Why, for the audit log.");
  flags.AddExample("hoist cancel r-20260115-0007 --reason 'wrong release'");
  if (auto code = inv.Parse(flags, args, 1, 1, "ROLLOUT_ID (hoist status shows the latest)")) return *code;
  v1::CancelRolloutRequest req;
  req.set_id(inv.args()[0]);
  req.set_reason(flags.Get("reason"));
  v1::CancelRolloutResponse resp;
  if (auto code = inv.Fetch("CancelRollout", &Stub::CancelRollout, req, &resp,
                            "`hoist status` shows the latest rollout and its id")) {
    return *code;
  }
  inv.out() << "Cancelling rollout " << resp.rollout().id() << " (now " << RolloutStateName(resp.rollout().state())
            << "): it stops after its current steps.\n"
            << "Follow it with: hoist watch " << resp.rollout().id() << "\n";
  return kExitOk;
}

}  // namespace hoist::cli
