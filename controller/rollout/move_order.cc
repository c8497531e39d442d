#include "controller/rollout/move_order.h"

#include <algorithm>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/status_macros.h"
#include "shared/semver.h"

namespace hoist::rollout {
namespace {

// A directed edge "to moves after from" with the reason it exists.
using Edges = std::map<std::pair<size_t, size_t>, std::string>;

struct Node {
  std::string name;
  int rank = 0;
  size_t index = 0;  // manifest position of the first member
};

// Kahn's algorithm, lowest (rank, index) first. On a cycle, returns the nodes
// of one cycle in `cycle` and an empty order.
std::vector<size_t> TopoSort(const std::vector<Node>& nodes, const Edges& edges,
                             std::vector<size_t>* cycle) {
  const size_t n = nodes.size();
  std::vector<int> indegree(n, 0);
  for (const auto& [e, why] : edges) ++indegree[e.second];
  std::vector<size_t> order;
  std::vector<bool> done(n, false);
  while (order.size() < n) {
    std::optional<size_t> best;
    for (size_t i = 0; i < n; ++i) {
      if (done[i] || indegree[i] > 0) continue;
      if (!best || std::tie(nodes[i].rank, nodes[i].index) < std::tie(nodes[*best].rank, nodes[*best].index)) {
        best = i;
      }
    }
    if (!best) break;
    done[*best] = true;
    order.push_back(*best);
    for (const auto& [e, why] : edges) {
      if (e.first == *best) --indegree[e.second];
    }
  }
  if (order.size() == n) return order;
  // Walk predecessors among the remaining nodes until one repeats.
  std::vector<size_t> path;
  size_t cur = 0;
  while (done[cur]) ++cur;
  std::vector<int> seen_at(n, -1);
  while (seen_at[cur] < 0) {
    seen_at[cur] = static_cast<int>(path.size());
    path.push_back(cur);
    for (const auto& [e, why] : edges) {
      if (e.second == cur && !done[e.first]) {
        cur = e.first;
        break;
      }
    }
  }
  // path[seen_at[cur]..] walks backwards along edges; reverse it to read forwards.
  std::vector<size_t> c(path.begin() + seen_at[cur], path.end());
  std::reverse(c.begin(), c.end());
  c.push_back(c.front());
  *cycle = c;
  return {};
}

bool Reaches(size_t from, size_t to, const Edges& edges, size_t n) {
  std::vector<bool> seen(n, false);
  std::vector<size_t> stack = {from};
  while (!stack.empty()) {
    size_t cur = stack.back();
    stack.pop_back();
    if (cur == to) return true;
    if (seen[cur]) continue;
    seen[cur] = true;
    for (const auto& [e, why] : edges) {
      if (e.first == cur) stack.push_back(e.second);
    }
  }
  return false;
}

// What runs of a service at one moment: its old version, its new one, both or none.
struct Running {
  bool from = false;
  bool to = false;
};

struct Violation {
  const CompatRule* rule = nullptr;
  std::string moved;      // service whose new version appeared
  std::string unmoved;    // service still on the old version
  size_t unit = 0;        // unit being moved
};

std::string Pairing(const std::string& svc, const std::string& ver, const std::string& oth,
                    const std::string& over) {
  return absl::StrCat(svc, " ", ver, " beside ", oth, " ", over);
}

// OrderMoves' working state: the units that move, the order constraints
// between them (after:, and the rules' "moves first"), and what the rules
// made stop first. Run() tries an order, simulates it, and on a broken rule
// adds a constraint or a stop-first and tries again.
class MoveOrdering {
 public:
  explicit MoveOrdering(const MoveOrderInput& in) : in_(in), m_(*in.manifest) {
    out_.stopped_first = in.stopped_first;
  }

  absl::StatusOr<MoveOrder> Run();

 private:
  size_t ManifestIndex(const std::string& name) const {
    for (size_t i = 0; i < m_.services.size(); ++i) {
      if (m_.services[i].name == name) return i;
    }
    return m_.services.size();
  }
  bool IsMoving(const std::string& name) const {
    return std::find(in_.services.begin(), in_.services.end(), name) != in_.services.end();
  }
  // The group `s` moves with (union-find over must_match rules).
  std::string Root(const std::string& s) {
    auto it = parent_.find(s);
    if (it == parent_.end() || it->second == s) return s;
    return it->second = Root(it->second);
  }
  // The target release alone must keep every rule; the running one is only warned about.
  absl::Status CheckReleaseRules();
  // Groups: services joined by must_match rules move together.
  void GroupMustMatch();
  // One unit (and one node) per group or single service, in input order.
  void BuildUnits();
  // Order members inside a group: role rank, after:, manifest order.
  void OrderGroup(MoveUnit& u);
  void AddAfterEdges();
  absl::Status CycleError(const std::vector<size_t>& cycle) const;
  // Simulates every moment of the rollout in `order`; the first rule broken, if any.
  std::optional<Violation> Simulate(const std::vector<size_t>& order) const;
  // Mends a broken rule for the next try, or says why no order keeps it.
  absl::Status Resolve(const Violation& v);
  // Moves the unmoved service first; false when that would make a cycle or was tried.
  bool MoveFirst(const Violation& v, const std::string& breaks);
  absl::Status StopFirst(const Violation& v, const std::string& breaks, bool reverse_ok);

  const MoveOrderInput& in_;
  const StackManifest& m_;
  MoveOrder out_;
  std::optional<Version> from_v_, to_v_;
  std::map<std::string, std::string> parent_;
  std::map<std::string, std::vector<const CompatRule*>> group_rules_;
  std::vector<Node> nodes_;
  std::vector<MoveUnit> units_;
  std::map<std::string, size_t> unit_of_;
  Edges edges_;
  std::set<std::pair<size_t, size_t>> flipped_;
};

absl::StatusOr<MoveOrder> MoveOrdering::Run() {
  if (!in_.from_version.empty()) {
    HOIST_ASSIGN_OR_RETURN(from_v_, Version::Parse(in_.from_version));
  }
  HOIST_ASSIGN_OR_RETURN(to_v_, Version::Parse(in_.to_version));
  HOIST_RETURN_IF_ERROR(CheckReleaseRules());
  GroupMustMatch();
  BuildUnits();
  for (MoveUnit& u : units_) OrderGroup(u);
  AddAfterEdges();

  const size_t limit = 4 * (units_.size() + 1) * (units_.size() + 1);
  for (size_t iteration = 0;; ++iteration) {
    if (iteration > limit) {
      return absl::FailedPreconditionError("no order of the services keeps every compatibility rule");
    }
    std::vector<size_t> cycle;
    std::vector<size_t> order = TopoSort(nodes_, edges_, &cycle);
    if (order.empty() && !units_.empty()) return CycleError(cycle);
    std::optional<Violation> violation = Simulate(order);
    if (!violation) {
      std::vector<MoveUnit> ordered;
      for (size_t i : order) ordered.push_back(units_[i]);
      out_.units = std::move(ordered);
      return std::move(out_);
    }
    HOIST_RETURN_IF_ERROR(Resolve(*violation));
  }
}

absl::Status MoveOrdering::CheckReleaseRules() {
  for (const CompatRule& r : m_.rules) {
    if (!r.Allows(*to_v_, *to_v_)) {
      return absl::FailedPreconditionError(
          absl::StrCat("release ", in_.to_version, " breaks the rule \"", r.Describe(),
                       "\" by itself (", r.service, " ", in_.to_version, " with ", r.other, " ",
                       in_.to_version, "); fix the rule in the manifest or the release"));
    }
  }
  if (from_v_.has_value()) {
    for (const CompatRule& r : m_.rules) {
      if (!r.Allows(*from_v_, *from_v_)) {
        out_.warnings.push_back(absl::StrCat("the running release ", in_.from_version,
                                             " already breaks the rule \"", r.Describe(), "\""));
      }
    }
  }
  return absl::OkStatus();
}

void MoveOrdering::GroupMustMatch() {
  for (const CompatRule& r : m_.rules) {
    if (r.kind != CompatRule::Kind::kMustMatch || !IsMoving(r.service) || !IsMoving(r.other)) continue;
    std::string a = Root(r.service), b = Root(r.other);
    if (ManifestIndex(b) < ManifestIndex(a)) std::swap(a, b);
    parent_[b] = a;
    parent_[a] = a;
  }
  for (const CompatRule& r : m_.rules) {
    if (r.kind == CompatRule::Kind::kMustMatch && IsMoving(r.service) && IsMoving(r.other)) {
      group_rules_[Root(r.service)].push_back(&r);
    }
  }
}

void MoveOrdering::BuildUnits() {
  for (const std::string& s : in_.services) {
    std::string key = Root(s);
    auto it = unit_of_.find(key);
    if (it == unit_of_.end()) {
      unit_of_[key] = units_.size();
      units_.push_back(MoveUnit{key, {}, false, {}});
      nodes_.push_back(Node{key, 1000, ManifestIndex(s)});
      it = unit_of_.find(key);
    }
    unit_of_[s] = it->second;
    units_[it->second].members.push_back(s);
    const ServiceSpec* spec = m_.FindService(s);
    nodes_[it->second].rank = std::min(nodes_[it->second].rank, RoleRank(spec->role));
    nodes_[it->second].index = std::min(nodes_[it->second].index, ManifestIndex(s));
  }
}

void MoveOrdering::OrderGroup(MoveUnit& u) {
  if (u.members.size() < 2) return;
  u.together = true;
  u.name = absl::StrCat("group-", u.name);
  std::vector<Node> member_nodes;
  Edges member_edges;
  for (size_t i = 0; i < u.members.size(); ++i) {
    const ServiceSpec* spec = m_.FindService(u.members[i]);
    member_nodes.push_back(Node{u.members[i], RoleRank(spec->role), ManifestIndex(u.members[i])});
  }
  for (size_t i = 0; i < u.members.size(); ++i) {
    for (const std::string& d : m_.FindService(u.members[i])->after) {
      auto it = std::find(u.members.begin(), u.members.end(), d);
      if (it != u.members.end()) member_edges[{static_cast<size_t>(it - u.members.begin()), i}] = "after";
    }
  }
  std::vector<size_t> cycle;
  std::vector<size_t> order = TopoSort(member_nodes, member_edges, &cycle);  // after: has no cycles
  std::vector<std::string> sorted;
  for (size_t i : order) sorted.push_back(u.members[i]);
  u.members = sorted;
  std::vector<std::string> rule_text;
  for (const CompatRule* r : group_rules_[Root(u.members.front())]) {
    rule_text.push_back(absl::StrCat("\"", r->Describe(), "\""));
  }
  std::string why = absl::StrCat(absl::StrJoin(u.members, ", "),
                                 " move together, stop-first: the rules ", absl::StrJoin(rule_text, ", "),
                                 " allow no mix of versions, so every old instance stops before "
                                 "the first new one starts (they start in the order ",
                                 absl::StrJoin(u.members, " -> "), ")");
  u.notes.push_back(why);
  out_.warnings.push_back(absl::StrCat(why, "; these services are down in between"));
}

void MoveOrdering::AddAfterEdges() {
  for (const std::string& s : in_.services) {
    for (const std::string& d : m_.FindService(s)->after) {
      if (!IsMoving(d) || unit_of_[d] == unit_of_[s]) continue;
      edges_[{unit_of_[d], unit_of_[s]}] = absl::StrCat("services.", s, ".after names ", d);
    }
  }
}

absl::Status MoveOrdering::CycleError(const std::vector<size_t>& cycle) const {
  std::vector<std::string> names, whys;
  for (size_t i = 0; i + 1 < cycle.size(); ++i) {
    names.push_back(units_[cycle[i]].name);
    auto it = edges_.find({cycle[i], cycle[i + 1]});
    if (it != edges_.end()) whys.push_back(it->second);
  }
  names.push_back(units_[cycle.back()].name);
  return absl::FailedPreconditionError(
      absl::StrCat("the order constraints conflict: ", absl::StrJoin(names, " -> "), " (",
                   absl::StrJoin(whys, "; "), "); remove one of these after: entries or rules"));
}

std::optional<Violation> MoveOrdering::Simulate(const std::vector<size_t>& order) const {
  std::map<std::string, Running> running;
  for (const std::string& s : in_.services) {
    running[s].from = from_v_.has_value() && !out_.stopped_first.contains(s);
  }
  std::optional<Violation> violation;
  auto check = [&](size_t unit, const std::string& moved) {
    for (const CompatRule& r : m_.rules) {
      if (r.service != moved && r.other != moved) continue;
      const std::string& other = r.service == moved ? r.other : r.service;
      Running mv = running[moved];
      Running ot = IsMoving(other) ? running[other] : Running{from_v_.has_value(), false};
      if (!mv.to || !ot.from) continue;
      bool ok = r.service == moved ? r.Allows(*to_v_, *from_v_) : r.Allows(*from_v_, *to_v_);
      if (!ok) {
        violation = Violation{&r, moved, other, unit};
        return;
      }
    }
  };
  for (size_t pos = 0; pos < order.size() && !violation; ++pos) {
    const MoveUnit& u = units_[order[pos]];
    if (u.together) {
      for (const std::string& s : u.members) running[s] = {};
      for (const std::string& s : u.members) {
        running[s].to = true;
        check(order[pos], s);
        if (violation) break;
      }
      continue;
    }
    const std::string& s = u.members.front();
    auto uo = in_.update_order.find(s);
    bool start_first = uo != in_.update_order.end() && uo->second == UpdateOrder::kStartFirst;
    running[s].to = true;
    if (!start_first) running[s].from = false;
    check(order[pos], s);
    running[s].from = false;
  }
  return violation;
}

absl::Status MoveOrdering::Resolve(const Violation& v) {
  // Move the unmoved service first when the rule allows that pairing, else
  // stop it before the moved one's new version starts.
  const CompatRule& r = *v.rule;
  const std::string breaks = Pairing(v.unmoved, in_.from_version, v.moved, in_.to_version);
  if (!IsMoving(v.unmoved)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the rule \"", r.Describe(), "\" does not allow ", breaks, ", and ", v.unmoved,
        " is not replaced by this rollout; change the rule or the release"));
  }
  // Moving the other one first must suit every rule between the two, not only this one.
  bool reverse_ok = true;
  for (const CompatRule& any : m_.rules) {
    if (any.service == v.moved && any.other == v.unmoved) reverse_ok = reverse_ok && any.Allows(*from_v_, *to_v_);
    if (any.service == v.unmoved && any.other == v.moved) reverse_ok = reverse_ok && any.Allows(*to_v_, *from_v_);
  }
  if (reverse_ok && MoveFirst(v, breaks)) return absl::OkStatus();
  return StopFirst(v, breaks, reverse_ok);
}

bool MoveOrdering::MoveFirst(const Violation& v, const std::string& breaks) {
  const CompatRule& r = *v.rule;
  size_t mover = v.unit;
  size_t other_unit = unit_of_[v.unmoved];
  bool cycle_free = !Reaches(mover, other_unit, edges_, units_.size());
  if (!cycle_free || flipped_.contains({other_unit, mover})) return false;
  flipped_.insert({other_unit, mover});
  std::string why = absl::StrCat("the rule \"", r.Describe(), "\" does not allow ", breaks,
                                 " but allows ",
                                 Pairing(v.unmoved, in_.to_version, v.moved, in_.from_version));
  edges_[{other_unit, mover}] = absl::StrCat("rule \"", r.Describe(), "\"");
  units_[other_unit].notes.push_back(absl::StrCat("moves before ", units_[mover].name, ": ", why));
  out_.warnings.push_back(absl::StrCat(v.unmoved, " moves before ", v.moved, ": ", why));
  return true;
}

absl::Status MoveOrdering::StopFirst(const Violation& v, const std::string& breaks, bool reverse_ok) {
  const CompatRule& r = *v.rule;
  if (out_.stopped_first.contains(v.unmoved)) {
    return absl::FailedPreconditionError(
        absl::StrCat("no order keeps the rule \"", r.Describe(), "\" (", breaks, ")"));
  }
  std::string because;
  if (!reverse_ok) {
    because = absl::StrCat("the rules allow neither ", breaks, " (\"", r.Describe(), "\") nor ",
                           Pairing(v.unmoved, in_.to_version, v.moved, in_.from_version));
  } else {
    because = absl::StrCat("the rule \"", r.Describe(), "\" does not allow ", breaks,
                           " and the order constraints keep ", v.unmoved, " after ", v.moved);
  }
  out_.stopped_first[v.unmoved] = because;
  units_[unit_of_[v.unmoved]].notes.push_back(
      absl::StrCat(v.unmoved, " was stopped before ", v.moved, " moved: ", because));
  out_.warnings.push_back(absl::StrCat(v.unmoved, " stops before ", v.moved,
                                       " moves and is down until its own phase: ", because));
  return absl::OkStatus();
}

}  // namespace

int RoleRank(hoist::v1::Role role) {
  switch (role) {
    case hoist::v1::ROLE_DATABASE: return -1;
    case hoist::v1::ROLE_JOB: return 0;
    case hoist::v1::ROLE_API: return 1;
    case hoist::v1::ROLE_WORKER: return 2;
    case hoist::v1::ROLE_SCHEDULER: return 3;
    case hoist::v1::ROLE_WEB: return 4;
    case hoist::v1::ROLE_PROXY: return 5;
    default: return 6;
  }
}

absl::StatusOr<MoveOrder> OrderMoves(const MoveOrderInput& in) { return MoveOrdering(in).Run(); }

}  // namespace hoist::rollout
