// The plan as the operator API carries it: the digest that tells a plan
// shown from the same plan started later, and the proto form.

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "controller/rollout/planner.h"
#include "controller/rollout/planner_internal.h"
#include "google/protobuf/text_format.h"
#include "shared/sha256.h"

namespace hoist::rollout {

using internal::DurationProto;

std::string PlanDigest(const Plan& plan) {
  Sha256 hash;
  auto clean = [&](absl::string_view text) {
    return plan.backup_id.empty() ? std::string(text) : absl::StrReplaceAll(text, {{plan.backup_id, "<backup>"}});
  };
  // Each value with its length first: no two different plans read the same.
  auto add = [&](absl::string_view value) {
    hash.Update(absl::StrCat(value.size(), ":"));
    hash.Update(value);
  };
  // Text, not wire bytes: the placeholder must replace the backup id
  // without a length in front of it telling the two apart. (Map entries
  // print in key order.)
  auto text = [](const google::protobuf::Message& m) {
    std::string out;
    google::protobuf::TextFormat::PrintToString(m, &out);
    return out;
  };
  add(plan.deployment);
  add(plan.from_version);
  add(plan.to_version);
  add(absl::StrCat(plan.strategy, "/", plan.target_slot, "/", absl::ToInt64Milliseconds(plan.grace_period), "/",
                   plan.on_failure));
  for (const std::string& w : plan.warnings) add(clean(w));
  for (const PlanPhase& ph : plan.phases) {
    add(ph.name);
    for (const PlanStep& st : ph.steps) {
      add(StepKindName(st.kind));
      add(st.agent_id);
      add(clean(st.description));
      add(absl::StrCat(st.batch, "/", absl::ToInt64Milliseconds(st.timeout)));
      add(st.instance.has_value() ? text(*st.instance) : std::string());
      add(clean(text(st.action)));
    }
  }
  return hash.HexDigest().substr(0, 16);
}

hoist::v1::Plan ToProto(const Plan& plan) {
  hoist::v1::Plan out;
  out.set_deployment(plan.deployment);
  out.set_from_version(plan.from_version);
  out.set_to_version(plan.to_version);
  out.set_strategy(plan.strategy);
  out.set_target_slot(plan.target_slot);
  if (plan.grace_period > absl::ZeroDuration()) *out.mutable_grace_period() = DurationProto(plan.grace_period);
  for (const PlanPhase& ph : plan.phases) {
    hoist::v1::PlannedPhase* p = out.add_phases();
    p->set_name(ph.name);
    p->set_reason(ph.reason);
    for (const PlanStep& s : ph.steps) {
      hoist::v1::PlannedStep* ps = p->add_steps();
      ps->set_step_id(s.id);
      ps->set_agent_id(s.agent_id);
      ps->set_description(s.description);
      ps->set_kind(std::string(StepKindName(s.kind)));
      if (s.instance.has_value()) *ps->mutable_instance() = *s.instance;
      ps->set_state(hoist::v1::STEP_STATE_PENDING);
      p->add_batches(s.batch);
    }
  }
  for (const hoist::v1::Release& r : plan.notes) *out.add_notes() = r;
  for (const std::string& w : plan.warnings) out.add_warnings(w);
  out.set_digest(PlanDigest(plan));
  return out;
}

}  // namespace hoist::rollout
