#include "controller/rollout/move_order.h"

#include <algorithm>
#include <functional>
#include <optional>
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

absl::StatusOr<MoveOrder> OrderMoves(const MoveOrderInput& in) {
  const StackManifest& m = *in.manifest;
  MoveOrder out;
  out.stopped_first = in.stopped_first;
  auto manifest_index = [&](const std::string& name) {
    for (size_t i = 0; i < m.services.size(); ++i) {
      if (m.services[i].name == name) return i;
    }
    return m.services.size();
  };
  auto is_moving = [&](const std::string& name) {
    return std::find(in.services.begin(), in.services.end(), name) != in.services.end();
  };

  std::optional<Version> from_v, to_v;
  if (!in.from_version.empty()) {
    HOIST_ASSIGN_OR_RETURN(from_v, Version::Parse(in.from_version));
  }
  HOIST_ASSIGN_OR_RETURN(to_v, Version::Parse(in.to_version));

  // The target release alone must keep every rule.
  for (const CompatRule& r : m.rules) {
    if (!r.Allows(*to_v, *to_v)) {
      return absl::FailedPreconditionError(
          absl::StrCat("release ", in.to_version, " breaks the rule \"", r.Describe(),
                       "\" by itself (", r.service, " ", in.to_version, " with ", r.other, " ",
                       in.to_version, "); fix the rule in the manifest or the release"));
    }
  }
  if (from_v.has_value()) {
    for (const CompatRule& r : m.rules) {
      if (!r.Allows(*from_v, *from_v)) {
        out.warnings.push_back(absl::StrCat("the running release ", in.from_version,
                                            " already breaks the rule \"", r.Describe(), "\""));
      }
    }
  }

  // Groups: services joined by must_match rules move together.
  std::map<std::string, std::string> parent;
  std::function<std::string(const std::string&)> root = [&](const std::string& s) {
    auto it = parent.find(s);
    if (it == parent.end() || it->second == s) return s;
    return it->second = root(it->second);
  };
  std::map<std::string, std::vector<const CompatRule*>> group_rules;
  for (const CompatRule& r : m.rules) {
    if (r.kind != CompatRule::Kind::kMustMatch || !is_moving(r.service) || !is_moving(r.other)) continue;
    std::string a = root(r.service), b = root(r.other);
    if (manifest_index(b) < manifest_index(a)) std::swap(a, b);
    parent[b] = a;
    parent[a] = a;
  }
  for (const CompatRule& r : m.rules) {
    if (r.kind == CompatRule::Kind::kMustMatch && is_moving(r.service) && is_moving(r.other)) {
      group_rules[root(r.service)].push_back(&r);
    }
  }

  std::vector<Node> nodes;
  std::vector<MoveUnit> units;
  std::map<std::string, size_t> unit_of;
  for (const std::string& s : in.services) {
    std::string key = root(s);
    auto it = unit_of.find(key);
    if (it == unit_of.end()) {
      unit_of[key] = units.size();
      units.push_back(MoveUnit{key, {}, false, {}});
      nodes.push_back(Node{key, 1000, manifest_index(s)});
      it = unit_of.find(key);
    }
    unit_of[s] = it->second;
    units[it->second].members.push_back(s);
    const ServiceSpec* spec = m.FindService(s);
    nodes[it->second].rank = std::min(nodes[it->second].rank, RoleRank(spec->role));
    nodes[it->second].index = std::min(nodes[it->second].index, manifest_index(s));
  }

  // Order members inside each group: role rank, after:, manifest order.
  for (MoveUnit& u : units) {
    if (u.members.size() < 2) continue;
    u.together = true;
    u.name = absl::StrCat("group-", u.name);
    std::vector<Node> member_nodes;
    Edges member_edges;
    for (size_t i = 0; i < u.members.size(); ++i) {
      const ServiceSpec* spec = m.FindService(u.members[i]);
      member_nodes.push_back(Node{u.members[i], RoleRank(spec->role), manifest_index(u.members[i])});
    }
    for (size_t i = 0; i < u.members.size(); ++i) {
      for (const std::string& d : m.FindService(u.members[i])->after) {
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
    for (const CompatRule* r : group_rules[root(u.members.front())]) rule_text.push_back(absl::StrCat("\"", r->Describe(), "\""));
    std::string why = absl::StrCat(absl::StrJoin(u.members, ", "),
                                   " move together, stop-first: the rules ", absl::StrJoin(rule_text, ", "),
                                   " allow no mix of versions, so every old instance stops before "
                                   "the first new one starts (they start in the order ",
                                   absl::StrJoin(u.members, " -> "), ")");
    u.notes.push_back(why);
    out.warnings.push_back(absl::StrCat(why, "; these services are down in between"));
  }

  Edges edges;
  for (const std::string& s : in.services) {
    for (const std::string& d : m.FindService(s)->after) {
      if (!is_moving(d) || unit_of[d] == unit_of[s]) continue;
      edges[{unit_of[d], unit_of[s]}] = absl::StrCat("services.", s, ".after names ", d);
    }
  }

  std::set<std::pair<size_t, size_t>> flipped;
  const size_t limit = 4 * (units.size() + 1) * (units.size() + 1);
  for (size_t iteration = 0;; ++iteration) {
    if (iteration > limit) {
      return absl::FailedPreconditionError("no order of the services keeps every compatibility rule");
    }
    std::vector<size_t> cycle;
    std::vector<size_t> order = TopoSort(nodes, edges, &cycle);
    if (order.empty() && !units.empty()) {
      std::vector<std::string> names, whys;
      for (size_t i = 0; i + 1 < cycle.size(); ++i) {
        names.push_back(units[cycle[i]].name);
        auto it = edges.find({cycle[i], cycle[i + 1]});
        if (it != edges.end()) whys.push_back(it->second);
      }
      names.push_back(units[cycle.back()].name);
      return absl::FailedPreconditionError(
          absl::StrCat("the order constraints conflict: ", absl::StrJoin(names, " -> "), " (",
                       absl::StrJoin(whys, "; "), "); remove one of these after: entries or rules"));
    }

    // Simulate every moment of the rollout in this order.
    std::map<std::string, Running> running;
    for (const std::string& s : in.services) {
      running[s].from = from_v.has_value() && !out.stopped_first.contains(s);
    }
    std::optional<Violation> violation;
    auto check = [&](size_t unit, const std::string& moved) {
      for (const CompatRule& r : m.rules) {
        if (r.service != moved && r.other != moved) continue;
        const std::string& other = r.service == moved ? r.other : r.service;
        Running mv = running[moved];
        Running ot = is_moving(other) ? running[other] : Running{from_v.has_value(), false};
        if (!mv.to || !ot.from) continue;
        bool ok = r.service == moved ? r.Allows(*to_v, *from_v) : r.Allows(*from_v, *to_v);
        if (!ok) {
          violation = Violation{&r, moved, other, unit};
          return;
        }
      }
    };
    for (size_t pos = 0; pos < order.size() && !violation; ++pos) {
      const MoveUnit& u = units[order[pos]];
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
      auto uo = in.update_order.find(s);
      bool start_first = uo != in.update_order.end() && uo->second == UpdateOrder::kStartFirst;
      running[s].to = true;
      if (!start_first) running[s].from = false;
      check(order[pos], s);
      running[s].from = false;
    }
    if (!violation) {
      std::vector<MoveUnit> ordered;
      for (size_t i : order) ordered.push_back(units[i]);
      out.units = std::move(ordered);
      return out;
    }

    // Resolve: move the unmoved service first when the rule allows that pairing,
    // else stop it before the moved one's new version starts.
    const Violation& v = *violation;
    const CompatRule& r = *v.rule;
    auto pairing = [&](const std::string& svc, const std::string& ver, const std::string& oth,
                       const std::string& over) {
      return absl::StrCat(svc, " ", ver, " beside ", oth, " ", over);
    };
    std::string breaks = pairing(v.unmoved, in.from_version, v.moved, in.to_version);
    if (!is_moving(v.unmoved)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the rule \"", r.Describe(), "\" does not allow ", breaks, ", and ", v.unmoved,
          " is not replaced by this rollout; change the rule or the release"));
    }
    size_t mover = v.unit;
    size_t other_unit = unit_of[v.unmoved];
    // Moving the other one first must suit every rule between the two, not only this one.
    bool reverse_ok = true;
    for (const CompatRule& any : m.rules) {
      if (any.service == v.moved && any.other == v.unmoved) reverse_ok = reverse_ok && any.Allows(*from_v, *to_v);
      if (any.service == v.unmoved && any.other == v.moved) reverse_ok = reverse_ok && any.Allows(*to_v, *from_v);
    }
    bool cycle_free = !Reaches(mover, other_unit, edges, units.size());
    if (reverse_ok && cycle_free && !flipped.contains({other_unit, mover})) {
      flipped.insert({other_unit, mover});
      std::string why = absl::StrCat("the rule \"", r.Describe(), "\" does not allow ", breaks,
                                     " but allows ",
                                     pairing(v.unmoved, in.to_version, v.moved, in.from_version));
      edges[{other_unit, mover}] = absl::StrCat("rule \"", r.Describe(), "\"");
      units[other_unit].notes.push_back(absl::StrCat("moves before ", units[mover].name, ": ", why));
      out.warnings.push_back(absl::StrCat(v.unmoved, " moves before ", v.moved, ": ", why));
      continue;
    }
    if (out.stopped_first.contains(v.unmoved)) {
      return absl::FailedPreconditionError(
          absl::StrCat("no order keeps the rule \"", r.Describe(), "\" (", breaks, ")"));
    }
    std::string because;
    if (!reverse_ok) {
      because = absl::StrCat("the rules allow neither ", breaks, " (\"", r.Describe(), "\") nor ",
                             pairing(v.unmoved, in.to_version, v.moved, in.from_version));
    } else {
      because = absl::StrCat("the rule \"", r.Describe(), "\" does not allow ", breaks,
                             " and the order constraints keep ", v.unmoved, " after ", v.moved);
    }
    out.stopped_first[v.unmoved] = because;
    units[other_unit].notes.push_back(
        absl::StrCat(v.unmoved, " was stopped before ", v.moved, " moved: ", because));
    out.warnings.push_back(absl::StrCat(v.unmoved, " stops before ", v.moved,
                                        " moves and is down until its own phase: ", because));
  }
}

}  // namespace hoist::rollout
