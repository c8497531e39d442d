#include "tests/fakes/fake_step_dispatcher.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace hoist::testing {

std::string ActionName(const hoist::v1::Step& step) {
  const google::protobuf::OneofDescriptor* action = step.GetDescriptor()->FindOneofByName("action");
  const google::protobuf::FieldDescriptor* set = step.GetReflection()->GetOneofFieldDescriptor(step, action);
  return set == nullptr ? "" : set->name();
}

FakeStepDispatcher::FakeStepDispatcher(std::vector<std::string> connected, bool leading)
    : leading_(leading), connected_(connected.begin(), connected.end()) {}

void FakeStepDispatcher::SetLeading(bool leading) {
  absl::MutexLock lock(&mu_);
  leading_ = leading;
}

void FakeStepDispatcher::Connect(const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  connected_.insert(agent_id);
}

void FakeStepDispatcher::Disconnect(const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  connected_.erase(agent_id);
}

void FakeStepDispatcher::Answer(const std::string& kind, const std::string& agent_id, Reply reply,
                                std::string message) {
  absl::MutexLock lock(&mu_);
  rules_.push_back(Rule{kind, agent_id, reply, std::move(message)});
}

void FakeStepDispatcher::FillResults(ResultFn fill) {
  absl::MutexLock lock(&mu_);
  fill_ = std::move(fill);
}

void FakeStepDispatcher::ReportProgress(std::string line) {
  absl::MutexLock lock(&mu_);
  progress_ = std::move(line);
}

const FakeStepDispatcher::Rule* FakeStepDispatcher::Match(const std::string& agent_id,
                                                          const hoist::v1::Step& step) const {
  const std::string kind = ActionName(step);
  for (auto it = rules_.rbegin(); it != rules_.rend(); ++it) {
    if ((it->kind.empty() || it->kind == kind) && (it->agent_id.empty() || it->agent_id == agent_id)) return &*it;
  }
  return nullptr;
}

hoist::v1::StepResult FakeStepDispatcher::Result(const std::string& agent_id, const hoist::v1::Step& step,
                                                 Reply reply, const std::string& message) const {
  hoist::v1::StepResult r;
  r.set_step_id(step.step_id());
  r.set_epoch(step.epoch());
  if (reply == Reply::kFail) {
    r.set_outcome(hoist::v1::STEP_OUTCOME_FAILED);
    r.set_code(2);  // google.rpc.Code UNKNOWN
    r.set_message(message.empty() ? std::string("the step failed") : message);
  } else {
    r.set_outcome(hoist::v1::STEP_OUTCOME_SUCCEEDED);
  }
  if (fill_) fill_(agent_id, step, &r);
  return r;
}

void FakeStepDispatcher::ReleaseHanging(Reply reply, std::string message) {
  absl::MutexLock lock(&mu_);
  const Reply answer = reply == Reply::kFail ? Reply::kFail : Reply::kSucceed;
  for (auto& [id, entry] : journal_) {
    if (entry->done) continue;
    entry->result = Result(entry->agent_id, entry->step, answer, message);
    entry->done = true;
  }
}

bool FakeStepDispatcher::WaitHanging(size_t n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto hanging = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t count = 0;
    for (const auto& [id, entry] : journal_) count += entry->done ? 0 : 1;
    return count >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&hanging), timeout);
}

bool FakeStepDispatcher::WaitDelivered(const std::string& step_id, int times, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto delivered = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int count = 0;
    for (const Dispatch& d : dispatched_) count += d.delivered && d.step.step_id() == step_id ? 1 : 0;
    return count >= times;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&delivered), timeout);
}

std::vector<FakeStepDispatcher::Dispatch> FakeStepDispatcher::Dispatched() const {
  absl::MutexLock lock(&mu_);
  return dispatched_;
}

std::vector<std::string> FakeStepDispatcher::DeliveredIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const Dispatch& d : dispatched_) {
    if (d.delivered) ids.push_back(d.step.step_id());
  }
  return ids;
}

int FakeStepDispatcher::Executions(const std::string& step_id) const {
  absl::MutexLock lock(&mu_);
  auto it = executions_.find(step_id);
  return it == executions_.end() ? 0 : it->second;
}

bool FakeStepDispatcher::IsConnected(const std::string& agent_id) const {
  absl::MutexLock lock(&mu_);
  return connected_.contains(agent_id);
}

bool FakeStepDispatcher::Leading() const {
  absl::MutexLock lock(&mu_);
  return leading_;
}

absl::Status FakeStepDispatcher::Refuse(const std::string& agent_id, const hoist::v1::Step& step,
                                        absl::Status refusal) {
  dispatched_.push_back(Dispatch{agent_id, step, leading_, false});
  return refusal;
}

absl::StatusOr<hoist::v1::StepResult> FakeStepDispatcher::RunStep(const std::string& agent_id,
                                                                  hoist::v1::Step step,
                                                                  const ProgressFn& on_progress,
                                                                  const std::atomic<bool>* cancel) {
  const std::string id = step.step_id();
  std::shared_ptr<Entry> entry;
  bool resent = false;
  std::string progress;
  {
    absl::MutexLock lock(&mu_);
    // The checks in AgentHub::RunStep's order.
    if (id.empty()) return Refuse(agent_id, step, absl::InvalidArgumentError("step.step_id: required"));
    if (!step.has_deadline()) return Refuse(agent_id, step, absl::InvalidArgumentError("step.deadline: required"));
    if (!leading_) {
      return Refuse(agent_id, step,
                    absl::FailedPreconditionError("this replica does not lead; it cannot push steps"));
    }
    if (waiting_.contains(id)) {
      return Refuse(agent_id, step, absl::AlreadyExistsError(absl::StrCat("step ", id, " is already being run")));
    }
    // The hub waits for an agent without a session until the step's
    // deadline, then says so; here it says so at once.
    if (!connected_.contains(agent_id)) {
      return Refuse(agent_id, step,
                    absl::DeadlineExceededError(absl::StrCat("no result from agent ", agent_id, " for step ", id,
                                                             ": the agent was not connected")));
    }
    auto it = journal_.find(id);
    const Rule* rule = Match(agent_id, step);
    const Reply reply = rule == nullptr ? Reply::kSucceed : rule->reply;
    if (it == journal_.end() && reply == Reply::kUnreachable) {
      return Refuse(agent_id, step,
                    absl::UnavailableError(absl::StrCat("agent ", agent_id, " is unreachable: ",
                                                        rule->message.empty() ? "the session broke" : rule->message)));
    }
    dispatched_.push_back(Dispatch{agent_id, step, leading_, true});
    if (it != journal_.end()) {
      entry = it->second;
      resent = true;
    } else {
      entry = std::make_shared<Entry>();
      entry->agent_id = agent_id;
      entry->step = step;
      if (reply != Reply::kHang) {
        entry->result = Result(agent_id, step, reply, rule == nullptr ? "" : rule->message);
        entry->done = true;
      }
      journal_[id] = entry;
      ++executions_[id];
    }
    waiting_.insert(id);
    progress = progress_;
  }
  if (on_progress && !progress.empty()) {
    hoist::v1::StepProgress p;
    p.set_step_id(id);
    p.set_message(progress);
    on_progress(p);
  }
  absl::MutexLock lock(&mu_);
  return Await(agent_id, entry, resent, cancel);
}

absl::StatusOr<hoist::v1::StepResult> FakeStepDispatcher::Await(const std::string& agent_id,
                                                                const std::shared_ptr<Entry>& entry, bool resent,
                                                                const std::atomic<bool>* cancel) {
  const std::string& id = entry->step.step_id();
  auto cancelled = [cancel] { return cancel != nullptr && cancel->load(); };
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return entry->done || !leading_ || cancelled(); };
  // The cancel flag is the caller's and signals nothing: look again often.
  while (!ready()) mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(5));
  waiting_.erase(id);
  if (entry->done) {
    hoist::v1::StepResult r = entry->result;
    r.set_replayed(resent);
    return r;
  }
  if (!leading_) {
    return absl::FailedPreconditionError(absl::StrCat("leadership lost while step ", id, " ran on ", agent_id));
  }
  return absl::CancelledError(absl::StrCat("step ", id, " cancelled"));
}

}  // namespace hoist::testing
