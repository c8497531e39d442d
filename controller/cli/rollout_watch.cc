#include "controller/cli/rollout_watch.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/interrupt.h"
#include "controller/cli/table.h"
#include "shared/protocol.h"

namespace hoist::cli {
namespace {

namespace v1 = hoist::v1;

constexpr int kBarWidth = 20;
// A stream that breaks this many times in a row without delivering anything
// means the controllers are gone, not failing over.
constexpr int kMaxWatchRetries = 5;

std::string BarText(const std::string& label, uint64_t done, uint64_t total) {
  done = std::min(done, total);
  int pct = total == 0 ? 0 : static_cast<int>(done * 100 / total);
  int filled = pct * kBarWidth / 100;
  return absl::StrFormat("%s [%s%s] %3d%% %s / %s", label, std::string(filled, '#'),
                         std::string(kBarWidth - filled, '-'), pct, FormatBytes(done), FormatBytes(total));
}

}  // namespace

std::string StrategyName(v1::Strategy s) { return s == v1::STRATEGY_BLUE_GREEN ? "blue-green" : "rolling"; }

RolloutPrinter::RolloutPrinter(std::ostream& out, bool tty, const v1::Rollout& rollout, Clock* clock)
    : out_(out), tty_(tty), clock_(clock), rollout_(rollout) {
  base_ = ToAbslTime(rollout_.started_at());
  for (const auto& phase : rollout_.plan().phases()) {
    phase_reasons_[phase.name()] = phase.reason();
    phase_sizes_[phase.name()] += phase.steps_size();
    for (const auto& step : phase.steps()) steps_[step.step_id()] = &step;
  }
}

std::string RolloutPrinter::Elapsed(const v1::RolloutEvent& event) {
  absl::Time at = ToAbslTime(event.at());
  if (at == absl::InfinitePast()) at = clock_->Now();
  if (base_ == absl::InfinitePast()) base_ = at;
  int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(at - base_));
  return s < 3600 ? absl::StrFormat("[%02d:%02d]", s / 60, s % 60)
                  : absl::StrFormat("[%d:%02d:%02d]", s / 3600, (s / 60) % 60, s % 60);
}

std::string RolloutPrinter::Agent(const v1::RolloutEvent& event) const {
  if (!event.agent_id().empty()) return event.agent_id();
  auto it = steps_.find(event.step_id());
  if (it != steps_.end() && !it->second->agent_id().empty()) return it->second->agent_id();
  return "controller";
}

std::string RolloutPrinter::StepText(const v1::RolloutEvent& event) const {
  auto it = steps_.find(event.step_id());
  if (it != steps_.end() && !it->second->description().empty()) return it->second->description();
  if (!event.message().empty()) return event.message();
  return event.step_id();
}

void RolloutPrinter::ClearLive() {
  if (live_shown_) {
    out_ << "\r\x1b[K";
    live_shown_ = false;
  }
}

void RolloutPrinter::DrawLive() {
  if (!tty_ || bars_.empty()) return;
  std::string line;
  for (const auto& [id, bar] : bars_) {
    if (!line.empty()) line += "   ";
    line += BarText(bar.label, bar.done, bar.total);
  }
  out_ << "\r\x1b[K" << line << std::flush;
  live_shown_ = true;
}

bool RolloutPrinter::Wide(const std::string& phase) const {
  auto it = phase_sizes_.find(phase);
  return it != phase_sizes_.end() && it->second > kWidePhase;
}

void RolloutPrinter::EndWidePhase(const v1::RolloutEvent& event) {
  if (wide_name_.empty()) return;
  std::sort(wide_.took.begin(), wide_.took.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> slowest;
  for (size_t i = 0; i < wide_.took.size() && i < 3; ++i) {
    slowest.push_back(absl::StrCat(wide_.took[i].second, " ", HumanDuration(wide_.took[i].first)));
  }
  Line(event, absl::StrCat("    ", wide_.done, "/", wide_.total, " steps done", wide_.failed > 0 ? absl::StrCat(", ", wide_.failed, " FAILED") : "",
                           slowest.empty() ? "" : absl::StrCat("; slowest: ", absl::StrJoin(slowest, ", "))));
  wide_name_.clear();
  wide_ = WidePhase();
}

void RolloutPrinter::Line(const v1::RolloutEvent& event, const std::string& text) {
  ClearLive();
  out_ << Elapsed(event) << " " << text << "\n";
  DrawLive();
}

void RolloutPrinter::OnEvent(const v1::RolloutEvent& event) {
  const std::string& kind = event.kind();
  const bool wide = absl::StartsWith(kind, "step_") && Wide(event.phase());
  if (kind == "phase_started") {
    EndWidePhase(event);
    auto it = phase_reasons_.find(event.phase());
    std::string why = it != phase_reasons_.end() && !it->second.empty() ? it->second : event.message();
    Line(event, absl::StrCat("==> ", event.phase(), why.empty() ? "" : ": ", why));
    if (Wide(event.phase())) {
      wide_name_ = event.phase();
      wide_.total = phase_sizes_[event.phase()];
      Line(event, absl::StrCat("    ", wide_.total, " steps: shown as they finish in tenths, failures at once"));
    }
  } else if (wide) {
    absl::Time at = ToAbslTime(event.at());
    if (at == absl::InfinitePast()) at = clock_->Now();
    if (kind == "step_started") {
      step_started_[event.step_id()] = at;
    } else if (kind == "step_done") {
      absl::Duration took;
      if (auto it = step_started_.find(event.step_id()); it != step_started_.end()) {
        took = at - it->second;
        step_started_.erase(it);
      }
      ++wide_.done;
      wide_.took.emplace_back(took, Agent(event));
      if (event.step_state() == v1::STEP_STATE_FAILED) {
        ++wide_.failed;
        Line(event, absl::StrFormat("    %-7s %-12s %s%s", "FAILED", Agent(event), StepText(event),
                                    event.message().empty() || event.message() == StepText(event)
                                        ? ""
                                        : absl::StrCat(": ", event.message())));
      }
      const int decile = wide_.total == 0 ? 10 : wide_.done * 10 / wide_.total;
      if (decile > wide_.printed_decile && wide_.done < wide_.total) {
        wide_.printed_decile = decile;
        Line(event, absl::StrCat("    ", wide_.done, "/", wide_.total, " steps done",
                                 wide_.failed > 0 ? absl::StrCat(", ", wide_.failed, " FAILED") : ""));
      }
    }
  } else if (kind == "step_started") {
    absl::Time at = ToAbslTime(event.at());
    step_started_[event.step_id()] = at == absl::InfinitePast() ? clock_->Now() : at;
    Line(event, absl::StrFormat("    %-7s %-12s %s", "start", Agent(event), StepText(event)));
  } else if (kind == "step_progress" && event.bytes_total() > 0) {
    Bar& bar = bars_[event.step_id()];
    bar.label = Agent(event);
    bar.done = event.bytes_done();
    bar.total = event.bytes_total();
    if (tty_) {
      DrawLive();
    } else {
      int decile = static_cast<int>(std::min(bar.done, bar.total) * 10 / bar.total);
      if (decile > bar.printed_decile) {
        bar.printed_decile = decile;
        Line(event, absl::StrCat("    pull    ", BarText(absl::StrFormat("%-12s", bar.label), bar.done, bar.total)));
      }
    }
  } else if (kind == "step_done") {
    bars_.erase(event.step_id());
    std::string took;
    if (auto it = step_started_.find(event.step_id()); it != step_started_.end()) {
      absl::Time at = ToAbslTime(event.at());
      took = HumanDuration((at == absl::InfinitePast() ? clock_->Now() : at) - it->second);
    }
    std::string text = StepText(event);
    switch (event.step_state()) {
      case v1::STEP_STATE_FAILED:
        Line(event, absl::StrFormat("    %-7s %-12s %s%s%s", "FAILED", Agent(event), text,
                                    took.empty() ? "" : absl::StrCat(" after ", took),
                                    event.message().empty() || event.message() == text
                                        ? ""
                                        : absl::StrCat(": ", event.message())));
        break;
      case v1::STEP_STATE_SKIPPED:
        Line(event, absl::StrFormat("    %-7s %-12s %s", "skipped", Agent(event), text));
        break;
      default:
        Line(event, absl::StrFormat("    %-7s %-12s %s%s", "done", Agent(event), text,
                                    took.empty() ? "" : absl::StrCat(" (", took, ")")));
    }
  } else if (kind == "step_progress") {
    if (!event.message().empty()) {
      Line(event, absl::StrFormat("    %-7s %-12s %s", "...", Agent(event), event.message()));
    }
  } else if (!event.message().empty()) {
    Line(event, event.message());
  }
}

void RolloutPrinter::Finish() {
  if (!wide_name_.empty()) {
    v1::RolloutEvent now;
    EndWidePhase(now);
  }
  ClearLive();
}

bool RolloutHasEnded(v1::RolloutState state) {
  switch (state) {
    case v1::ROLLOUT_STATE_GRACE:
    case v1::ROLLOUT_STATE_SUCCEEDED:
    case v1::ROLLOUT_STATE_FAILED:
    case v1::ROLLOUT_STATE_CANCELLED:
    case v1::ROLLOUT_STATE_ROLLED_BACK: return true;
    default: return false;
  }
}

int RolloutExitCode(v1::RolloutState state) {
  return state == v1::ROLLOUT_STATE_SUCCEEDED || state == v1::ROLLOUT_STATE_GRACE ? kExitOk : kExitFailed;
}

std::string RolloutStateName(v1::RolloutState state) {
  std::string name = v1::RolloutState_Name(state);
  absl::string_view v = name;
  absl::ConsumePrefix(&v, "ROLLOUT_STATE_");
  return std::string(v);
}

void PrintRolloutSummary(std::ostream& out, const v1::Rollout& r, absl::Time now, bool colour) {
  absl::Time start = ToAbslTime(r.started_at());
  absl::Time end = ToAbslTime(r.finished_at());
  if (end == absl::InfinitePast()) end = now;
  std::string took = start == absl::InfinitePast() ? "" : HumanDuration(end - start);
  const v1::Plan& plan = r.plan();
  std::string what = absl::StrCat(plan.deployment().empty() ? r.deployment() : plan.deployment(), " ",
                                  OrDash(plan.from_version()), " -> ", OrDash(plan.to_version()), " (",
                                  StrategyName(plan.strategy()), ")");
  std::string noun = r.is_rollback() ? "Rollback" : "Rollout";
  bool ok = RolloutExitCode(r.state()) == kExitOk;
  std::string state = Paint(r.state() == v1::ROLLOUT_STATE_ROLLED_BACK ? "ROLLED BACK" : RolloutStateName(r.state()),
                            ok ? Colour::kGreen : Colour::kRed, colour);
  out << "\n" << noun << " " << r.id() << " " << state;
  if (!took.empty()) out << (ok ? " in " : " after ") << took;
  out << ": " << what << "\n";

  std::vector<std::string> failures;
  for (const auto& phase : plan.phases()) {
    for (const auto& step : phase.steps()) {
      if (step.state() != v1::STEP_STATE_FAILED) continue;
      failures.push_back(absl::StrCat(phase.name(), ": ", step.description(), " on ", OrDash(step.agent_id()),
                                      step.error().empty() ? "" : absl::StrCat(": ", step.error())));
    }
  }
  if (!r.error().empty()) out << "  error: " << r.error() << "\n";
  if (!failures.empty()) {
    out << "  failed steps:\n";
    for (const auto& f : failures) out << "    " << f << "\n";
  }
  switch (r.state()) {
    case v1::ROLLOUT_STATE_GRACE:
      out << "  green serves; blue is kept for the grace period.\n"
          << "  switch back at once: hoist cutover --back -d " << r.deployment() << "\n"
          << "  retire blue now:     hoist cutover --finish -d " << r.deployment() << "\n";
      break;
    case v1::ROLLOUT_STATE_ROLLED_BACK:
      out << "  hoistd rolled back by itself to " << OrDash(plan.from_version())
          << "; hoist status shows what runs now.\n";
      break;
    case v1::ROLLOUT_STATE_FAILED:
    case v1::ROLLOUT_STATE_CANCELLED:
      if (!r.rollback_command().empty() && !absl::StrContains(r.error(), kNothingChangedLine)) {
        out << "  to roll back, run:\n    " << r.rollback_command() << "\n";
      } else {
        out << "  hoist status shows what runs now; hoist audit tells the whole story.\n";
      }
      break;
    default:
      break;
  }
}

int FollowRollout(Invocation& inv, const v1::Rollout& rollout) {
  auto client = inv.Client();
  if (!client.ok()) return inv.Fail(client.status());
  CliIo& io = inv.io();
  RolloutPrinter printer(inv.out(), io.stdout_tty, rollout, io.clock);
  uint64_t last_sequence = 0;
  v1::RolloutState state = rollout.state();
  int failures = 0;
  absl::Status last_error;
  while (true) {
    bool progressed = false;
    absl::Status s = (*client)->Watch(rollout.id(), last_sequence, io.interrupt,
                                      [&](const v1::WatchRolloutResponse& resp) {
                                        progressed = true;
                                        last_sequence = std::max(last_sequence, resp.event().sequence());
                                        if (resp.event().rollout_state() != v1::ROLLOUT_STATE_UNSPECIFIED) {
                                          state = resp.event().rollout_state();
                                        }
                                        if (inv.json()) inv.PrintJson(resp);
                                        else printer.OnEvent(resp.event());
                                      });
    if (io.interrupt != nullptr && io.interrupt->triggered()) {
      printer.Finish();
      inv.out().flush();
      inv.err() << "\nDetached from rollout " << rollout.id() << "; it keeps running on hoistd.\n"
                << "Re-attach with `hoist watch " << rollout.id() << "`, or see `hoist status`.\n";
      return kExitInterrupted;
    }
    if (progressed) failures = 0;
    if (s.ok()) {
      // The server ends the stream when the rollout ends; ask what it ended as.
      v1::GetRolloutRequest req;
      req.set_id(rollout.id());
      v1::GetRolloutResponse resp;
      absl::Status got = (*client)->Call("GetRollout", &OperatorClient::Stub::GetRollout, req, &resp);
      if (got.ok()) state = resp.rollout().state();
      if (RolloutHasEnded(state)) {
        printer.Finish();
        if (!got.ok()) {
          inv.err() << "hoist " << inv.verb() << ": the rollout ended " << RolloutStateName(state)
                    << " but its summary is unavailable (" << got.message() << "); see hoist status\n";
          return RolloutExitCode(state);
        }
        if (inv.json()) inv.PrintJson(resp);
        else PrintRolloutSummary(inv.out(), resp.rollout(), inv.Now(), io.stdout_tty);
        return RolloutExitCode(state);
      }
      last_error = absl::UnavailableError("the event stream ended before the rollout did");
    } else if (s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kInternal ||
               s.code() == absl::StatusCode::kUnknown || s.code() == absl::StatusCode::kAborted) {
      // A leader failover or a dropped connection: resume after the last event seen.
      last_error = s;
    } else {
      printer.Finish();
      return inv.Fail(s, "`hoist status` shows the latest rollout and its id");
    }
    if (++failures > kMaxWatchRetries) {
      printer.Finish();
      inv.err() << "hoist " << inv.verb() << ": lost the rollout's event stream: " << last_error.message() << "\n"
                << "  next: the rollout may still be running; re-attach with `hoist watch " << rollout.id()
                << "`\n";
      return ExitCodeFor(last_error);
    }
    if (inv.options().debug) {
      inv.err() << "hoist: debug: watch of " << rollout.id() << " broke (" << last_error.message()
                << "); resuming after event " << last_sequence << "\n";
    }
    io.clock->SleepFor(absl::Milliseconds(250) * failures);
  }
}

}  // namespace hoist::cli
