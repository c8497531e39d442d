#include "controller/rollout/planner.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/rollout/step_kind.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist::rollout {
namespace {

namespace v1 = ::hoist::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

// Messages as std::string, so failures print them as text.
std::string Msg(const absl::Status& s) { return std::string(s.message()); }

const std::string kExamples = std::string(HOIST_SOURCE_DIR) + "/deploy/examples/";

StackManifest Manifest(const std::string& text) {
  auto m = ParseStackManifest("stack.yaml", text);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : StackManifest{};
}

StackManifest Example(const std::string& name) {
  auto m = LoadStackManifest(kExamples + name);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : StackManifest{};
}

// A release with repository:version for every versioned service.
v1::Release ReleaseOf(const StackManifest& m, const std::string& version) {
  v1::Release r;
  r.set_deployment(m.deployment);
  r.set_version(version);
  r.set_notes("notes of " + version);
  for (const ServiceSpec& s : m.services) {
    if (s.versioned()) (*r.mutable_images())[s.name] = s.repository + ":" + version;
  }
  return r;
}

// Every host connected with room to spare; when `version` is set, every
// replica runs it, healthy, on eligible host r % n.
std::vector<AgentState> AgentsOf(const StackManifest& m, const std::string& version) {
  std::vector<AgentState> agents;
  for (const HostSpec& h : m.hosts) {
    AgentState a;
    a.id = h.id;
    a.connected = true;
    a.labels = h.labels;
    a.image_disk_free_bytes = 100ull << 30;
    a.backup_disk_free_bytes = 100ull << 30;
    agents.push_back(a);
  }
  if (version.empty()) return agents;
  for (const ServiceSpec& s : m.services) {
    if (s.role == v1::ROLE_JOB) continue;
    std::vector<std::string> eligible = m.EligibleHosts(s);
    for (uint32_t r = 0; r < s.replicas; ++r) {
      const std::string& host = eligible[r % eligible.size()];
      v1::ContainerInfo c;
      c.mutable_instance()->set_deployment(m.deployment);
      c.mutable_instance()->set_service(s.name);
      c.mutable_instance()->set_slot(v1::SLOT_BLUE);
      c.mutable_instance()->set_replica(r);
      std::string v = version;
      if (!s.versioned()) v = ParseImageReference(s.image)->tag;
      c.set_version(v);
      c.set_name(m.deployment + "-" + s.name + "-blue-" + std::to_string(r) + "-" + v);
      c.set_state(v1::CONTAINER_STATE_RUNNING);
      c.set_health(v1::HEALTH_HEALTHY);
      for (AgentState& a : agents) {
        if (a.id == host) a.containers.push_back(c);
      }
    }
  }
  return agents;
}

PlanInput UpgradeInput(const StackManifest& m, const std::string& from, const std::string& to) {
  PlanInput in;
  in.manifest = m;
  in.agents = AgentsOf(m, from);
  in.current = ReleaseOf(m, from);
  in.target = ReleaseOf(m, to);
  return in;
}

std::vector<std::string> PhaseNames(const Plan& plan) {
  std::vector<std::string> out;
  for (const PlanPhase& ph : plan.phases) out.push_back(ph.name);
  return out;
}

// "p05-s003-start-api-0" -> "start-api-0"
std::string Slug(const PlanStep& s) { return s.id.substr(std::string("p05-s003-").size()); }

std::vector<std::string> Slugs(const PlanPhase& ph) {
  std::vector<std::string> out;
  for (const PlanStep& s : ph.steps) out.push_back(Slug(s));
  return out;
}

// "slug@batch" for each step of a phase.
std::vector<std::string> SlugsWithBatches(const PlanPhase& ph) {
  std::vector<std::string> out;
  for (const PlanStep& s : ph.steps) out.push_back(Slug(s) + "@" + std::to_string(s.batch));
  return out;
}

// Every agent on a Docker engine of its own (separate hosts).
void OnSeparateEngines(PlanInput& in) {
  for (AgentState& a : in.agents) a.docker_engine_id = "ENGINE-" + a.id;
}

Plan MustPlan(const PlanInput& in) {
  auto plan = PlanRollout(in);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *plan : Plan{};
}

TEST(PlannerTest, PiprioUpgradeFollowsPiprioOrder) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  EXPECT_THAT(PhaseNames(plan),
              ElementsAre("preflight", "backup", "pull", "pin", "stop-scheduler", "migrate-api", "replace-api",
                          "replace-worker", "start-scheduler", "replace-web", "reload-proxy", "postcheck",
                          "smoke-test", "undo-gate"));
  EXPECT_EQ(plan.from_version, "1.0.0");
  EXPECT_EQ(plan.to_version, "1.1.0");
  EXPECT_EQ(plan.backup_id, "piprio-pre-1.1.0");
  EXPECT_EQ(plan.rollback_command, "hoist rollback -d piprio --to 1.0.0 --restore piprio-pre-1.1.0 --confirm piprio");
  EXPECT_THAT(plan.FindPhase("stop-scheduler")->reason, HasSubstr("role scheduler"));
  EXPECT_THAT(plan.FindPhase("replace-worker")->reason, HasSubstr("worker after api (services.worker.after)"));
  EXPECT_THAT(plan.FindPhase("reload-proxy")->reason, HasSubstr("role proxy"));
}

TEST(PlannerTest, PiprioPullsEveryNewImageOnEveryHostInOneBatch) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  const PlanPhase* pull = plan.FindPhase("pull");
  ASSERT_NE(pull, nullptr);
  EXPECT_THAT(Slugs(*pull), ElementsAre("pull-app-1-api", "pull-app-1-worker", "pull-app-1-scheduler",
                                        "pull-app-1-web", "pull-app-2-api", "pull-app-2-worker",
                                        "pull-app-2-web"));
  for (const PlanStep& s : pull->steps) {
    EXPECT_EQ(s.batch, 0u) << s.id;
    EXPECT_EQ(s.kind, StepKind::kPullImage);
    EXPECT_TRUE(s.action.has_pull_image());
    EXPECT_THAT(s.action.pull_image().image(), HasSubstr(":1.1.0"));
  }
}

TEST(PlannerTest, MigrationGateRunsFromTheNewApiImageBeforeApiMoves) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  const PlanPhase* migrate = plan.FindPhase("migrate-api");
  ASSERT_NE(migrate, nullptr);
  // First the database must answer (its host may just have restarted), then the job.
  ASSERT_EQ(migrate->steps.size(), 2u);
  EXPECT_EQ(Slug(migrate->steps[0]), "probe-postgres-0");
  EXPECT_EQ(migrate->steps[0].agent_id, "db-1");
  const PlanStep& job = migrate->steps[1];
  EXPECT_GT(job.batch, migrate->steps[0].batch) << "the migration waits for the probe";
  EXPECT_EQ(job.kind, StepKind::kRunJob);
  EXPECT_EQ(job.agent_id, "app-1");
  ASSERT_TRUE(job.action.has_run_job());
  EXPECT_EQ(job.action.run_job().name(), "migrate");
  EXPECT_EQ(job.action.run_job().version(), "1.1.0");
  EXPECT_EQ(job.action.run_job().spec().image(), "registry.local:5000/piprio/api:1.1.0");
  EXPECT_THAT(job.action.run_job().spec().command(), ElementsAre("python", "migrations/run_migrations.py"));
  EXPECT_EQ(job.action.run_job().spec().ports_size(), 0) << "a job must not take the service's ports";
  EXPECT_EQ(job.timeout, absl::Minutes(10) + absl::Seconds(30));
  EXPECT_THAT(migrate->reason, HasSubstr("non-zero exit stops the rollout"));
}

TEST(PlannerTest, FailedGateIsUndoneByTheLastPhaseThatRunsOnlyThen) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  ASSERT_FALSE(plan.phases.empty());
  const PlanPhase& undo = plan.phases.back();
  EXPECT_EQ(undo.name, kUndoGatePhase);
  EXPECT_THAT(undo.reason, HasSubstr("only when a migration gate or a one-shot job before the moves fails"));
  // The old pin, then the scheduler (stopped before the gate) started again
  // at 1.0.0 where it ran, and probed.
  EXPECT_THAT(SlugsWithBatches(undo),
              ElementsAre("pin-back@0", "restart-scheduler-0@1", "probe-scheduler-0@2"));
  const PlanStep& start = undo.steps.at(1);
  EXPECT_EQ(start.kind, StepKind::kStartInstance);
  EXPECT_EQ(start.agent_id, "app-1");
  EXPECT_EQ(start.action.start_instance().version(), "1.0.0");
  EXPECT_EQ(start.action.start_instance().spec().image(), "registry.local:5000/piprio/scheduler:1.0.0");
}

TEST(PlannerTest, ApiIsReplacedStartFirstOneReplicaAtATimeWithProxyDraining) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  const PlanPhase* api = plan.FindPhase("replace-api");
  ASSERT_NE(api, nullptr);
  EXPECT_THAT(SlugsWithBatches(*api),
              ElementsAre("start-api-0@0", "probe-api-0@1", "proxy-proxy-edge-1@2", "stop-api-0@3",
                          "remove-api-0@4", "start-api-1@5", "probe-api-1@6", "proxy-proxy-edge-1@7",
                          "stop-api-1@8", "remove-api-1@9"));
  const PlanStep& start = api->steps[0];
  EXPECT_EQ(start.agent_id, "app-1");
  const v1::StartInstance& si = start.action.start_instance();
  EXPECT_EQ(si.version(), "1.1.0");
  EXPECT_EQ(si.instance().service(), "api");
  EXPECT_EQ(si.instance().replica(), 0u);
  EXPECT_EQ(si.container_name(), "");
  EXPECT_EQ(si.spec().image(), "registry.local:5000/piprio/api:1.1.0");
  EXPECT_EQ(si.spec().network(), "piprio");
  EXPECT_EQ(si.spec().env().at("PIPRIO_LOG_LEVEL"), "info");
  EXPECT_THAT(si.spec().env_files(), ElementsAre("/etc/piprio/piprio.env"));
  EXPECT_EQ(si.spec().stop_timeout().seconds(), 30);
  const v1::ProbeHealth& probe = api->steps[1].action.probe_health();
  EXPECT_EQ(probe.check().http().path(), "/health");
  EXPECT_EQ(probe.check().http().expected_version(), "1.1.0");
  EXPECT_EQ(probe.check().deadline().seconds(), 180);
  EXPECT_EQ(probe.version(), "1.1.0");
  // While replica 0 is replaced, the proxy sends new requests to the new
  // container and drains the old one.
  const v1::ProxyUpdate& update = api->steps[2].action.proxy_update();
  ASSERT_EQ(update.routes_size(), 1);
  EXPECT_EQ(update.routes(0).name(), "api");
  std::map<std::string, v1::BackendState> states;
  for (const v1::ProxyBackend& b : update.routes(0).backends()) states[b.name()] = b.state();
  EXPECT_EQ(states["piprio-api-blue-0-1.0.0"], v1::BACKEND_STATE_DRAIN);
  EXPECT_EQ(states["piprio-api-blue-0-1.1.0"], v1::BACKEND_STATE_READY);
  EXPECT_EQ(states["piprio-api-blue-1-1.0.0"], v1::BACKEND_STATE_READY);
  EXPECT_EQ(update.routes(0).backends(0).port(), 8000u);
  const v1::StopInstance& stop = api->steps[3].action.stop_instance();
  EXPECT_EQ(stop.version(), "1.0.0");
  EXPECT_EQ(stop.timeout().seconds(), 30);
  EXPECT_EQ(api->steps[4].action.remove_instance().version(), "1.0.0");
}

TEST(PlannerTest, WorkersMoveOneAtATimeWithAPauseBetweenBatches) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  const PlanPhase* workers = plan.FindPhase("replace-worker");
  ASSERT_NE(workers, nullptr);
  std::vector<std::string> kinds;
  for (const PlanStep& s : workers->steps) kinds.emplace_back(StepKindName(s.kind));
  EXPECT_THAT(kinds, ElementsAre("start_instance", "probe_health", "stop_instance", "remove_instance", "pause",
                                 "start_instance", "probe_health", "stop_instance", "remove_instance", "pause",
                                 "start_instance", "probe_health", "stop_instance", "remove_instance"));
  for (const PlanStep& s : workers->steps) {
    if (s.kind == StepKind::kPause) {
      EXPECT_EQ(s.timeout, absl::Seconds(10));
      EXPECT_TRUE(s.agent_id.empty());
    }
  }
  EXPECT_THAT(workers->reason, HasSubstr("1 at a time"));
  EXPECT_THAT(workers->reason, HasSubstr("pause 10s between batches"));
}

TEST(PlannerTest, StopFirstBatchesKeepMinHealthy) {
  StackManifest m = Manifest(R"(deployment: shop
hosts: [h1, h2]
services:
  worker:
    role: worker
    repository: reg/worker
    replicas: 5
    update_order: stop-first
    rolling: {max_parallel: 3, min_healthy: 3, pause: 2s}
    health: {docker: true}
)");
  Plan plan = MustPlan(UpgradeInput(m, "1.0.0", "1.1.0"));
  const PlanPhase* ph = plan.FindPhase("replace-worker");
  ASSERT_NE(ph, nullptr);
  // 5 replicas, 3 must stay healthy: 2 per batch although max_parallel is 3.
  int stopped = 0, worst = 0;
  uint32_t last_batch = 0;
  std::set<uint32_t> stop_batches;
  for (const PlanStep& s : ph->steps) {
    ASSERT_GE(s.batch, last_batch) << "steps are listed in batch order";
    last_batch = s.batch;
    if (s.kind == StepKind::kStopInstance) {
      ++stopped;
      stop_batches.insert(s.batch);
    }
    if (s.kind == StepKind::kProbeHealth) --stopped;
    worst = std::max(worst, stopped);
  }
  EXPECT_EQ(worst, 2) << "never more than replicas - min_healthy down at once";
  EXPECT_EQ(stop_batches.size(), 3u) << "batches of 2, 2 and 1";
  int pauses = 0;
  for (const PlanStep& s : ph->steps) pauses += s.kind == StepKind::kPause ? 1 : 0;
  EXPECT_EQ(pauses, 2);
  EXPECT_THAT(ph->reason, HasSubstr("2 at a time, at least 3 of 5 stay healthy"));
}

TEST(PlannerTest, RatComponentsMoveTogetherStopFirst) {
  Plan plan = MustPlan(UpgradeInput(Example("rat.yaml"), "1.0.0", "1.1.0"));
  EXPECT_THAT(PhaseNames(plan), ElementsAre("preflight", "backup", "pull", "pin", "replace-group-ratd",
                                            "postcheck", "smoke-test"));
  const PlanPhase* group = plan.FindPhase("replace-group-ratd");
  ASSERT_NE(group, nullptr);
  EXPECT_THAT(group->reason, HasSubstr("ratd, runner, ratq, portal move together, stop-first"));
  EXPECT_THAT(group->reason, HasSubstr("\"runner must match ratd\""));
  // Every old instance stops before the first new one starts: no mix of versions.
  size_t last_stop = 0, first_start = group->steps.size();
  std::vector<std::string> start_order;
  for (size_t i = 0; i < group->steps.size(); ++i) {
    const PlanStep& s = group->steps[i];
    if (s.kind == StepKind::kStopInstance) last_stop = i;
    if (s.kind == StepKind::kStartInstance) {
      first_start = std::min(first_start, i);
      start_order.push_back(s.instance->service() + "-" + std::to_string(s.instance->replica()));
    }
  }
  EXPECT_LT(last_stop, first_start);
  EXPECT_THAT(start_order, ElementsAre("ratd-0", "runner-0", "runner-1", "ratq-0", "portal-0"));
  bool warned = std::any_of(plan.warnings.begin(), plan.warnings.end(),
                            [](const std::string& w) { return w.find("move together") != std::string::npos; });
  EXPECT_TRUE(warned) << "the stop-first choice is a warning too";
}

constexpr char kWebApi[] = R"(deployment: shop
hosts: [h1, h2]
services:
  api:
    role: api
    repository: reg/api
    health: {http: {path: /health, port: 8080}}
  web:
    role: web
    repository: reg/web
    health: {http: {path: /, port: 3000}}
)";

TEST(PlannerTest, RequiresRuleMovesWebFirstWhenNewApiBreaksOldWeb) {
  StackManifest m = Manifest(std::string(kWebApi) +
                             "rules:\n  - {service: web, when: \"<2\", requires: {service: api, range: \">=1.4 <2\"}}\n");
  Plan plan = MustPlan(UpgradeInput(m, "1.5.0", "2.0.0"));
  EXPECT_THAT(PhaseNames(plan), ElementsAre("preflight", "pull", "pin", "replace-web", "replace-api", "postcheck"));
  EXPECT_THAT(plan.FindPhase("replace-web")->reason,
              HasSubstr("moves before api: the rule \"web <2 requires api >=1.4 <2\" does not allow web 1.5.0 beside "
                        "api 2.0.0 but allows web 2.0.0 beside api 1.5.0"));
}

TEST(PlannerTest, RequiresRulesThatForbidBothOrdersStopWebFirst) {
  StackManifest m = Manifest(std::string(kWebApi) +
                             "rules:\n"
                             "  - {service: web, when: \"<2\", requires: {service: api, range: \"<2\"}}\n"
                             "  - {service: web, when: \">=2\", requires: {service: api, range: \">=2\"}}\n");
  Plan plan = MustPlan(UpgradeInput(m, "1.5.0", "2.0.0"));
  EXPECT_THAT(PhaseNames(plan),
              ElementsAre("preflight", "pull", "pin", "stop-web", "replace-api", "start-web", "postcheck"));
  EXPECT_THAT(plan.FindPhase("stop-web")->reason, HasSubstr("the rules allow neither web 1.5.0 beside api 2.0.0 (\"web <2 requires api <2\") nor web 2.0.0 beside api 1.5.0"));
  bool warned = std::any_of(plan.warnings.begin(), plan.warnings.end(), [](const std::string& w) {
    return w.find("web stops before api moves") != std::string::npos;
  });
  EXPECT_TRUE(warned);
}

// A failed gate puts back a service a rule stopped early, proxy routes
// included: the undo phase sends the proxy the restarted containers.
TEST(PlannerTest, UndoGateSetsTheProxyRoutesOfARestartedServiceBack) {
  StackManifest m = Manifest(R"(deployment: shop
network: shop
hosts: [h1, h2]
services:
  api:
    role: api
    repository: reg/api
    health: {http: {path: /health, port: 8080}}
    migration: {command: [/app, migrate]}
  web:
    role: web
    repository: reg/web
    health: {http: {path: /, port: 3000}}
  proxy:
    role: proxy
    image: reg/haproxy:2.6
    placement: {hosts: [h2]}
    ports: ["80:8080"]
    routes:
      - {name: web, service: web, port: 3000}
rules:
  - {service: web, when: "<2", requires: {service: api, range: "<2"}}
  - {service: web, when: ">=2", requires: {service: api, range: ">=2"}}
)");
  Plan plan = MustPlan(UpgradeInput(m, "1.5.0", "2.0.0"));
  const PlanPhase* undo = plan.FindPhase("undo-gate");
  ASSERT_NE(undo, nullptr) << ::testing::PrintToString(PhaseNames(plan));
  const PlanStep* back = nullptr;
  for (const PlanStep& st : undo->steps) {
    if (st.kind == StepKind::kProxyUpdate) back = &st;
  }
  ASSERT_NE(back, nullptr) << ::testing::PrintToString(Slugs(*undo));
  ASSERT_EQ(back->action.proxy_update().routes_size(), 1);
  const v1::ProxyRoute& route = back->action.proxy_update().routes(0);
  EXPECT_EQ(route.name(), "web");
  ASSERT_EQ(route.backends_size(), 1);
  EXPECT_EQ(route.backends(0).name(), "shop-web-blue-0-1.5.0");
  EXPECT_EQ(route.backends(0).state(), v1::BACKEND_STATE_READY);
  EXPECT_GT(back->batch, undo->steps.front().batch) << "after the restarts";
}

TEST(PlannerTest, AfterConstraintThatForbidsTheFlipMakesWebStopFirst) {
  std::string text = std::string(kWebApi) + "    after: [api]\n" +
                     "rules:\n  - {service: web, when: \"<2\", requires: {service: api, range: \">=1.4 <2\"}}\n";
  Plan plan = MustPlan(UpgradeInput(Manifest(text), "1.5.0", "2.0.0"));
  EXPECT_THAT(PhaseNames(plan),
              ElementsAre("preflight", "pull", "pin", "stop-web", "replace-api", "start-web", "postcheck"));
  EXPECT_THAT(plan.FindPhase("stop-web")->reason, HasSubstr("the order constraints keep web after api"));
}

TEST(PlannerTest, ReleaseThatBreaksARuleByItselfIsRefused) {
  StackManifest m = Manifest(std::string(kWebApi) +
                             "rules:\n  - {service: web, requires: {service: api, range: \"<2\"}}\n");
  auto plan = PlanRollout(UpgradeInput(m, "1.5.0", "2.0.0"));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("release 2.0.0 breaks the rule \"web requires api <2\" by itself"));
}

TEST(PlannerTest, FixedHostPortForcesStopFirstWithAWarning) {
  StackManifest m = Manifest(R"(deployment: shop
hosts: [h1]
services:
  api:
    role: api
    repository: reg/api
    ports: ["127.0.0.1:8080:8080"]
    health: {http: {path: /health, port: 8080}}
)");
  Plan plan = MustPlan(UpgradeInput(m, "1.0.0", "1.1.0"));
  EXPECT_THAT(Slugs(*plan.FindPhase("replace-api")),
              ElementsAre("stop-api-0", "remove-api-0", "start-api-0", "probe-api-0"));
  bool warned = std::any_of(plan.warnings.begin(), plan.warnings.end(), [](const std::string& w) {
    return w.find("api is replaced stop-first although the manifest asks start-first: it publishes host port 8080") !=
           std::string::npos;
  });
  EXPECT_TRUE(warned);
}

// The proxy_update steps of a plan, in order.
std::vector<const PlanStep*> ProxyUpdates(const Plan& plan) {
  std::vector<const PlanStep*> out;
  for (const PlanPhase& ph : plan.phases) {
    for (const PlanStep& st : ph.steps) {
      if (st.kind == StepKind::kProxyUpdate) out.push_back(&st);
    }
  }
  return out;
}

TEST(PlannerTest, BackendOnAnotherDockerHostIsPublishedOnItsHostsAddressAndAddressedOnceStarted) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  for (AgentState& a : in.agents) {
    a.docker_engine_id = "ENGINE-" + a.id;  // four separate Docker hosts
    // The running web replicas were published at their host's address.
    for (v1::ContainerInfo& c : a.containers) {
      if (c.instance().service() != "web") continue;
      v1::PortMapping* p = c.add_published_ports();
      p->set_container_port(3000);
      p->set_host_port(32000 + c.instance().replica());
      p->set_host_ip(a.id == "app-1" ? "10.0.0.11" : "10.0.0.12");
      p->set_protocol("tcp");
    }
  }
  Plan plan = MustPlan(in);
  // web's new instances publish 3000 on a port Docker chooses, on their host's address only.
  std::map<std::string, std::string> bound;  // step slug -> host_ip:host_port->container_port
  for (const PlanPhase& ph : plan.phases) {
    for (const PlanStep& st : ph.steps) {
      if (st.kind != StepKind::kStartInstance || st.instance->service() != "web") continue;
      ASSERT_EQ(st.action.start_instance().spec().ports_size(), 1) << st.description;
      const v1::PortMapping& p = st.action.start_instance().spec().ports(0);
      bound[Slug(st)] = absl::StrCat(p.host_ip(), ":", p.host_port(), "->", p.container_port());
    }
  }
  EXPECT_THAT(bound, ElementsAre(Pair("start-web-0", "10.0.0.11:0->3000"), Pair("start-web-1", "10.0.0.12:0->3000")));
  // The proxy on edge-1 gets the old replicas at the ports the inventory
  // reports, and the new ones as "fill in from the start result".
  std::vector<const PlanStep*> updates = ProxyUpdates(plan);
  ASSERT_FALSE(updates.empty());
  std::set<std::string> old_backends, new_backends;
  for (const PlanStep* st : updates) {
    for (const v1::ProxyRoute& route : st->action.proxy_update().routes()) {
      if (route.name() != "web") continue;
      for (const v1::ProxyBackend& b : route.backends()) {
        if (b.has_instance()) {
          EXPECT_EQ(b.address(), "");
          EXPECT_EQ(b.container_port(), 3000u);
          new_backends.insert(absl::StrCat(b.instance().service(), "-", b.instance().replica(), "@", b.version()));
        } else {
          old_backends.insert(absl::StrCat(b.address(), ":", b.port(), "@", b.name()));
        }
      }
    }
  }
  EXPECT_THAT(old_backends, ElementsAre("10.0.0.11:32000@piprio-web-blue-0-1.0.0", "10.0.0.12:32001@piprio-web-blue-1-1.0.0"));
  EXPECT_THAT(new_backends, ElementsAre("web-0@1.1.0", "web-1@1.1.0"));
  // A fixed host port would have made the replacement stop-first; this one is start-first.
  EXPECT_THAT(Slugs(*plan.FindPhase("replace-web")), ::testing::Contains("start-web-0"));
  const auto& steps = plan.FindPhase("replace-web")->steps;
  auto at = [&](const std::string& slug) {
    return std::find_if(steps.begin(), steps.end(), [&](const PlanStep& st) { return Slug(st) == slug; }) - steps.begin();
  };
  EXPECT_LT(at("start-web-0"), at("stop-web-0")) << "web is replaced start-first";
}

TEST(PlannerTest, OldReplicaWithoutAPublishedPortGetsNoTrafficAndThePlanSaysSo) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  OnSeparateEngines(in);
  Plan plan = MustPlan(in);
  EXPECT_THAT(plan.warnings, ::testing::Contains(HasSubstr(
                                 "web replica 0 (1.0.0) on app-1 publishes no host port for 3000, so the proxy on "
                                 "another Docker host cannot reach it")));
  for (const PlanStep* st : ProxyUpdates(plan)) {
    for (const v1::ProxyRoute& route : st->action.proxy_update().routes()) {
      for (const v1::ProxyBackend& b : route.backends()) {
        EXPECT_TRUE(b.has_instance()) << st->description << ": " << b.name() << " has no address the proxy reaches";
      }
    }
  }
}

TEST(PlannerTest, ProxyRouteToAHostWithoutAnIpAddressIsRefused) {
  StackManifest m = Example("piprio.yaml");
  for (HostSpec& h : m.hosts) {
    if (h.id == "app-1") h.address = "app-1.internal";
  }
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  OnSeparateEngines(in);
  auto plan = PlanRollout(in);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << plan.status();
  EXPECT_THAT(Msg(plan.status()), HasSubstr("cannot wire piprio across its hosts"));
  EXPECT_THAT(Msg(plan.status()),
              HasSubstr("services.proxy.routes.web sends traffic to web:3000, which runs on another Docker host than "
                        "the proxy (edge-1), and these hosts have no IP address to publish it on: app-1 "
                        "(\"app-1.internal\")"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("services.proxy.routes.api sends traffic to api:8000"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("Give each host its IP in hosts[].address"));
  // Without a manifest address, the address the agent reported serves.
  for (HostSpec& h : in.manifest.hosts) {
    if (h.id == "app-1") h.address = "";
  }
  for (AgentState& a : in.agents) {
    if (a.id == "app-1") a.address = "10.0.0.11";
  }
  EXPECT_TRUE(PlanRollout(in).ok()) << PlanRollout(in).status();
}

TEST(PlannerTest, ProxyRouteAcrossDockerHostsWithAFixedPortOrOnOneEngineIsWired) {
  // Hosts sharing one engine resolve each other's container names.
  PlanInput shared = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  for (AgentState& a : shared.agents) a.docker_engine_id = "ONE-ENGINE";
  EXPECT_TRUE(PlanRollout(shared).ok()) << PlanRollout(shared).status();
  // On separate engines, a fixed host port is reached at the host's address.
  StackManifest m = Manifest(R"(deployment: shop
network: shop
hosts:
  - {id: app-1, address: 10.0.0.11}
  - {id: edge-1, address: 10.0.0.10}
services:
  web:
    role: web
    repository: registry.local:5000/shop/web
    placement: {hosts: [app-1]}
    ports: ["3000:3000"]
  proxy:
    role: proxy
    image: registry.local:5000/haproxy:2.6.12
    placement: {hosts: [edge-1]}
    ports: ["80:8080"]
    routes:
      - {name: web, service: web, port: 3000, listen: 8080}
)");
  PlanInput apart = UpgradeInput(m, "1.0.0", "1.1.0");
  OnSeparateEngines(apart);
  auto plan = PlanRollout(apart);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const v1::ProxyUpdate* update = nullptr;
  for (const PlanPhase& ph : plan->phases) {
    for (const PlanStep& st : ph.steps) {
      if (st.kind == StepKind::kProxyUpdate) update = &st.action.proxy_update();
    }
  }
  ASSERT_NE(update, nullptr);
  ASSERT_GT(update->routes_size(), 0);
  ASSERT_GT(update->routes(0).backends_size(), 0);
  EXPECT_EQ(update->routes(0).backends(0).address(), "10.0.0.11");
  EXPECT_EQ(update->routes(0).backends(0).port(), 3000u);
}

// The forward_update steps of a phase, by slug.
std::map<std::string, const v1::ForwardUpdate*> Forwards(const PlanPhase& ph) {
  std::map<std::string, const v1::ForwardUpdate*> out;
  for (const PlanStep& st : ph.steps) {
    if (st.kind == StepKind::kForwardUpdate) out[Slug(st)] = &st.action.forward_update();
  }
  return out;
}

TEST(PlannerTest, ServicesOnOtherDockerHostsAreReachedByNameThroughForwarders) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  for (AgentState& a : in.agents) {
    a.docker_engine_id = "ENGINE-" + a.id;  // four separate Docker hosts
    for (v1::ContainerInfo& c : a.containers) {  // postgres published 5432 on db-1's address
      if (c.instance().service() != "postgres") continue;
      v1::PortMapping* p = c.add_published_ports();
      p->set_container_port(5432);
      p->set_host_port(32100);
      p->set_host_ip("10.0.0.20");
      p->set_protocol("tcp");
    }
  }
  Plan plan = MustPlan(in);
  // Before anything moves: postgres (expose: [5432]) gets a forwarder on
  // every other Docker host of the stack, pointed at db-1's published port.
  const PlanPhase* forward = plan.FindPhase("forward");
  ASSERT_NE(forward, nullptr) << ::testing::PrintToString(PhaseNames(plan));
  auto steps = Forwards(*forward);
  for (const char* host : {"app-1", "app-2", "edge-1"}) {
    ASSERT_TRUE(steps.contains(absl::StrCat("forward-postgres-", host))) << host;
    const v1::ForwardUpdate& f = *steps.at(absl::StrCat("forward-postgres-", host));
    EXPECT_EQ(f.service(), "postgres");
    EXPECT_EQ(f.network(), "piprio");
    ASSERT_EQ(f.ports_size(), 1);
    EXPECT_EQ(f.ports(0).listen_port(), 5432u);
    ASSERT_EQ(f.ports(0).targets_size(), 1);
    EXPECT_EQ(absl::StrCat(f.ports(0).targets(0).address(), ":", f.ports(0).targets(0).port()), "10.0.0.20:32100");
  }
  EXPECT_FALSE(steps.contains("forward-postgres-db-1")) << "postgres runs there";
  // The worker runs on app hosts only and listens on nothing declared: no forwarder.
  for (const auto& [slug, f] : steps) EXPECT_NE(f->service(), "worker") << slug;

  // api (app-1, app-2) is replaced start-first; its forwarders on edge-1 and
  // db-1 move to the new instances (addressed once started) after their
  // probes and before the old ones stop.
  const PlanPhase& replace = *plan.FindPhase("replace-api");
  auto at = [&](const std::string& slug) {
    auto it = std::find_if(replace.steps.begin(), replace.steps.end(), [&](const PlanStep& st) { return Slug(st) == slug; });
    EXPECT_NE(it, replace.steps.end()) << slug;
    return it == replace.steps.end() ? -1 : it->batch;
  };
  auto api = Forwards(replace);
  EXPECT_TRUE(api.contains("forward-api-edge-1") && api.contains("forward-api-db-1"))
      << ::testing::PrintToString(Slugs(replace));
  EXPECT_GT(at("forward-api-db-1"), at("probe-api-0"));
  EXPECT_LT(at("forward-api-db-1"), at("stop-api-0"));
  for (const auto& [slug, f] : api) {
    if (f->service() != "api") continue;
    ASSERT_EQ(f->ports_size(), 1) << slug;
    EXPECT_EQ(f->ports(0).listen_port(), 8000u);
    for (const v1::ProxyBackend& t : f->ports(0).targets()) {
      EXPECT_TRUE(t.has_instance()) << slug << ": the old replicas drain, the new ones are addressed once started";
      EXPECT_EQ(t.version(), "1.1.0");
      EXPECT_EQ(t.container_port(), 8000u);
    }
  }
  // Each new api instance publishes 8000 on its host's address.
  for (const PlanStep& st : replace.steps) {
    if (st.kind != StepKind::kStartInstance) continue;
    ASSERT_EQ(st.action.start_instance().spec().ports_size(), 1);
    EXPECT_EQ(st.action.start_instance().spec().ports(0).host_ip(), st.agent_id == "app-1" ? "10.0.0.11" : "10.0.0.12");
    EXPECT_EQ(st.action.start_instance().spec().ports(0).host_port(), 0u);
  }
  EXPECT_THAT(plan.warnings, Not(::testing::Contains(HasSubstr("postgres replica 0"))));
}

TEST(PlannerTest, NameThatCannotBeForwardedIsRefusedAndOneEngineNeedsNoForwarder) {
  StackManifest m = Example("piprio.yaml");
  for (HostSpec& h : m.hosts) {
    if (h.id == "db-1") h.address = "db-1.internal";
  }
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  OnSeparateEngines(in);
  auto plan = PlanRollout(in);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << plan.status();
  EXPECT_THAT(Msg(plan.status()),
              HasSubstr("services.postgres is reached by its name (postgres:5432) from app-1, app-2, edge-1, which "
                        "run on other Docker hosts than postgres, and its hosts have no IP address to publish it on: "
                        "db-1 (\"db-1.internal\")"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("Give each host its IP in hosts[].address"));

  // Agents on one engine resolve every name themselves.
  for (AgentState& a : in.agents) a.docker_engine_id = "ONE-ENGINE";
  Plan one = MustPlan(in);
  for (const PlanPhase& ph : one.phases) EXPECT_TRUE(Forwards(ph).empty()) << ph.name;
  EXPECT_EQ(one.FindPhase("forward"), nullptr);
}

TEST(PlannerTest, InitialDeployStartsEverythingDatabaseFirst) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in;
  in.manifest = m;
  in.agents = AgentsOf(m, "");
  in.target = ReleaseOf(m, "1.1.0");
  in.options.host_env["app-1"] = {"PIPRIO_SECRET_KEY"};
  Plan plan = MustPlan(in);
  EXPECT_TRUE(plan.initial_deploy);
  EXPECT_EQ(plan.from_version, "");
  EXPECT_THAT(PhaseNames(plan),
              ElementsAre("preflight", "pull", "pin", "start-postgres", "migrate-api", "start-api", "start-worker",
                          "start-scheduler", "start-web", "start-proxy", "postcheck", "smoke-test"));
  EXPECT_THAT(SlugsWithBatches(*plan.FindPhase("start-postgres")), ElementsAre("start-postgres-0@0", "probe-postgres-0@1"));
  EXPECT_THAT(SlugsWithBatches(*plan.FindPhase("start-api")),
              ElementsAre("start-api-0@0", "start-api-1@0", "probe-api-0@1", "probe-api-1@1"));
  for (const PlanStep* s : plan.AllSteps()) {
    EXPECT_NE(s->kind, StepKind::kStopInstance) << s->id;
    EXPECT_NE(s->kind, StepKind::kBackup) << s->id;
  }
  // The pinned database image is pulled too, and started under its tag.
  const PlanStep& pg = plan.FindPhase("start-postgres")->steps[0];
  EXPECT_EQ(pg.action.start_instance().spec().image(), "registry.local:5000/postgres:15.4");
  EXPECT_EQ(pg.action.start_instance().version(), "15.4");
  // The proxy gets its routes once it runs.
  const PlanPhase* proxy = plan.FindPhase("start-proxy");
  ASSERT_EQ(proxy->steps.back().kind, StepKind::kProxyUpdate);
  EXPECT_EQ(proxy->steps.back().action.proxy_update().routes_size(), 2);
  // It names the proxy service, and the proxy starts with a frontend per route.
  EXPECT_EQ(proxy->steps.back().action.proxy_update().service(), "proxy");
  const v1::StartInstance& start = proxy->steps.front().action.start_instance();
  ASSERT_EQ(start.proxy().frontends_size(), 2);
  EXPECT_EQ(start.proxy().frontends(0).route(), "web");
  EXPECT_EQ(start.proxy().frontends(0).listen_port(), 8080u);
  EXPECT_EQ(start.proxy().frontends(1).listen_port(), 8443u);
  // Other services start without one.
  EXPECT_FALSE(plan.FindPhase("start-web")->steps.front().action.start_instance().has_proxy());
}

TEST(PlannerTest, RollbackWithRestoreStopsAppRestoresThenStartsOldRelease) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in = UpgradeInput(m, "1.1.0", "1.0.0");
  RollbackOptions opts;
  v1::BackupRecord record;
  record.set_id("piprio-pre-1.1.0");
  record.set_agent_id("db-1");
  v1::BackupArtifact* a = record.add_artifacts();
  a->set_kind("postgres");
  a->set_source("piprio");
  a->set_path("/var/lib/hoist/backups/piprio-pre-1.1.0/piprio.dump");
  a->set_sha256("ab12");
  opts.restore = record;
  auto plan = PlanRollback(in, opts);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->is_rollback);
  EXPECT_THAT(PhaseNames(*plan),
              ElementsAre("preflight", "pull", "pin", "stop-app", "restore", "start-api", "start-worker",
                          "start-scheduler", "start-web", "reload-proxy", "postcheck"));
  const PlanPhase* stop = plan->FindPhase("stop-app");
  for (const PlanStep& s : stop->steps) {
    EXPECT_EQ(s.kind, StepKind::kStopInstance);
    EXPECT_NE(s.instance->service(), "postgres");
    EXPECT_NE(s.instance->service(), "proxy");
    EXPECT_EQ(s.batch, s.instance->service() == "scheduler" ? 0u : 1u) << s.id;
  }
  const PlanStep& restore = plan->FindPhase("restore")->steps.at(0);
  EXPECT_EQ(restore.kind, StepKind::kRestore);
  EXPECT_EQ(restore.agent_id, "db-1");
  EXPECT_EQ(restore.action.restore().backup_id(), "piprio-pre-1.1.0");
  EXPECT_EQ(restore.action.restore().artifacts_size(), 1);
  EXPECT_EQ(restore.action.restore().database_instance().service(), "postgres");
  EXPECT_EQ(restore.action.restore().database_user(), "piprio");
  // No migration on the way back, and the old version starts.
  EXPECT_EQ(plan->FindPhase("migrate-api"), nullptr);
  const PlanStep& start = plan->FindPhase("start-api")->steps.at(0);
  EXPECT_EQ(Slug(start), "remove-api-0");
  for (const PlanStep& s : plan->FindPhase("start-api")->steps) {
    if (s.kind == StepKind::kStartInstance) {
      EXPECT_EQ(s.action.start_instance().version(), "1.0.0");
    }
  }
}

TEST(PlannerTest, RollbackWithoutRestoreMovesBackInRoleOrder) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.1.0", "1.0.0");
  auto plan = PlanRollback(in, RollbackOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(PhaseNames(*plan), ElementsAre("preflight", "pull", "pin", "stop-scheduler", "replace-api",
                                             "replace-worker", "start-scheduler", "replace-web", "reload-proxy",
                                             "postcheck"));
}

TEST(PlannerTest, RefusesAnOlderTargetAsARollback) {
  auto plan = PlanRollout(UpgradeInput(Example("piprio.yaml"), "1.1.0", "1.0.0"));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(plan.status()),
              HasSubstr("target 1.0.0 is older than the running 1.1.0: that is a rollback: use hoist rollback"));
  auto same = PlanRollout(UpgradeInput(Example("piprio.yaml"), "1.1.0", "1.1.0"));
  EXPECT_THAT(Msg(same.status()), HasSubstr("piprio already runs 1.1.0"));
  auto rollback = PlanRollback(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"), RollbackOptions{});
  EXPECT_THAT(Msg(rollback.status()), HasSubstr("that is an upgrade"));
}

TEST(PlannerTest, RefusesAReleaseMissingAnImage) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  in.target.mutable_images()->erase("worker");
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("release 1.1.0 has no image for worker"));
}

TEST(PlannerTest, RefusesAReleaseNamingAnUnknownService) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  (*in.target.mutable_images())["crawler"] = "reg/crawler:1.1.0";
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("release 1.1.0 names unknown service(s) crawler"));
}

TEST(PlannerTest, RefusesWhenAnAgentIsMissingOrDisconnected) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  in.agents[1].connected = false;
  in.agents.pop_back();
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("agents missing: app-2 is not connected; db-1 has never connected"));
}

// A health result the hosts reported earlier may be old: the plan warns and
// pre-flight probes every running instance with a health check again, in one
// batch, before anything is touched. A container that does not run at all is
// refused at once.
TEST(PlannerTest, PreflightProbesEveryInstanceAndRefusesOneThatDoesNotRun) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  in.agents[0].containers[0].set_health(v1::HEALTH_UNHEALTHY);
  auto plan = PlanRollout(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->warnings, testing::Contains(HasSubstr(
                                  "api replica 0 (1.0.0) was last reported unhealthy; pre-flight probes it again")));
  ASSERT_EQ(plan->phases.front().name, "preflight");
  std::set<std::string> probed;
  for (const PlanStep& st : plan->phases.front().steps) {
    if (st.kind != StepKind::kProbeHealth) continue;
    EXPECT_EQ(st.batch, 0u) << st.id;
    ASSERT_TRUE(st.action.has_probe_health()) << st.id;
    EXPECT_FALSE(st.action.probe_health().version().empty()) << st.id;
    probed.insert(absl::StrCat(st.instance->service(), "/", st.instance->replica(), "@", st.agent_id));
  }
  size_t checked = 0;
  for (const AgentState& a : in.agents) {
    for (const v1::ContainerInfo& c : a.containers) {
      const ServiceSpec* s = in.manifest.FindService(c.instance().service());
      if (s == nullptr || !s->health.has_value() || s->role == v1::ROLE_JOB) continue;
      ++checked;
      EXPECT_TRUE(probed.contains(absl::StrCat(c.instance().service(), "/", c.instance().replica(), "@", a.id)))
          << c.name() << " is not probed by pre-flight";
    }
  }
  EXPECT_GT(checked, 2u);
  EXPECT_EQ(probed.size(), checked);

  in.agents[0].containers[0].set_state(v1::CONTAINER_STATE_EXITED);
  auto refused = PlanRollout(in);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(refused.status()), HasSubstr("pre-flight found 1 problem(s) with piprio; nothing was touched: api "
                                               "replica 0 (1.0.0) is not running (EXITED)"));
}

TEST(PlannerTest, RequiredAndRenamedEnvAreChecked) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  in.target.add_required_env("PIPRIO_SECRET_KEY");
  (*in.target.mutable_renamed_env())["PIPRIO_LOG_LEVEL"] = "PIPRIO_LOG";
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()),
              HasSubstr("PIPRIO_LOG_LEVEL was renamed to PIPRIO_LOG in 1.1.0: rename it in services.api.env"));
  EXPECT_THAT(Msg(plan.status()),
              HasSubstr("release 1.1.0 requires PIPRIO_SECRET_KEY, which no service's env and no host's env files set"));
  in.options.host_env["app-1"] = {"PIPRIO_SECRET_KEY", "PIPRIO_LOG"};
  auto ok = PlanRollout(in);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_THAT(ok->warnings, testing::Contains(HasSubstr("PIPRIO_LOG_LEVEL (renamed to PIPRIO_LOG) is still set")));
}

TEST(PlannerTest, RefusesLowDisk) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  in.agents[0].image_disk_free_bytes = 10ull << 20;
  auto plan = PlanRollout(in);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("app-1 has 10 MiB free for images; at least 1024 MiB are needed"));
}

// --- blue-green ---

PlanInput BlueGreenInput(const std::string& file = "piprio.yaml") {
  PlanInput in = UpgradeInput(Example(file), "1.0.0", "1.1.0");
  in.strategy = v1::STRATEGY_BLUE_GREEN;
  in.options.grace_period = absl::Minutes(5);
  return in;
}

// Moves every container the agents report into `slot`.
void MoveToSlot(PlanInput& in, v1::Slot slot) {
  for (AgentState& a : in.agents) {
    for (v1::ContainerInfo& c : a.containers) {
      c.mutable_instance()->set_slot(slot);
      std::string name = c.name();
      size_t at = name.find("-blue-");
      if (at != std::string::npos && slot == v1::SLOT_GREEN) name.replace(at, 6, "-green-");
      c.set_name(name);
    }
  }
  in.live_slot = slot;
}

TEST(PlannerTest, BlueGreenStartsASecondSlotThenSwitchesTheProxyInOneStep) {
  Plan plan = MustPlan(BlueGreenInput());
  EXPECT_EQ(plan.strategy, v1::STRATEGY_BLUE_GREEN);
  EXPECT_EQ(plan.target_slot, v1::SLOT_GREEN);
  EXPECT_EQ(plan.grace_period, absl::Minutes(5));
  EXPECT_THAT(PhaseNames(plan),
              ElementsAre("preflight", "backup", "pull", "migrate-api", "start-green", "smoke-test",
                          "handover-scheduler", "pin", "switch", "grace", "retire-blue", "postcheck"));
  // Every new instance starts in the green slot, beside blue, and is probed there.
  const PlanPhase* start = plan.FindPhase("start-green");
  ASSERT_NE(start, nullptr);
  int starts = 0;
  for (const PlanStep& s : start->steps) {
    ASSERT_TRUE(s.instance.has_value()) << s.id;
    EXPECT_EQ(s.instance->slot(), v1::SLOT_GREEN) << s.id;
    if (s.kind == StepKind::kStartInstance) {
      ++starts;
      EXPECT_EQ(s.batch, 0u) << s.id;
      EXPECT_NE(s.instance->service(), "scheduler");
    } else {
      EXPECT_EQ(s.kind, StepKind::kProbeHealth) << s.id;
      EXPECT_EQ(s.batch, 1u) << s.id;
    }
  }
  EXPECT_EQ(starts, 2 + 3 + 2);  // api, worker, web; the scheduler waits for the handover
  EXPECT_THAT(plan.FindPhase("migrate-api")->reason, HasSubstr("expand-only"));
  EXPECT_THAT(start->reason, HasSubstr("proxy untouched"));
  // Scheduler: blue stops before green starts.
  EXPECT_THAT(SlugsWithBatches(*plan.FindPhase("handover-scheduler")),
              ElementsAre("stop-scheduler-0@0", "start-scheduler-0@1", "probe-scheduler-0@2"));
  EXPECT_EQ(plan.FindPhase("handover-scheduler")->steps[0].instance->slot(), v1::SLOT_BLUE);
  EXPECT_EQ(plan.FindPhase("handover-scheduler")->steps[1].instance->slot(), v1::SLOT_GREEN);

  // The switch: one proxy_update on the proxy's one host, every route at once.
  const PlanPhase* sw = plan.FindPhase("switch");
  ASSERT_NE(sw, nullptr);
  ASSERT_EQ(sw->steps.size(), 2u);
  EXPECT_EQ(sw->steps[0].kind, StepKind::kProxyUpdate);
  EXPECT_EQ(sw->steps[0].agent_id, "edge-1");
  EXPECT_EQ(sw->steps[1].kind, StepKind::kLiveSlot);
  EXPECT_EQ(sw->steps[1].batch, 1u);
  const v1::ProxyUpdate& update = sw->steps[0].action.proxy_update();
  ASSERT_EQ(update.routes_size(), 2);
  for (const v1::ProxyRoute& r : update.routes()) {
    std::map<std::string, v1::BackendState> states;
    for (const v1::ProxyBackend& b : r.backends()) states[b.name()] = b.state();
    EXPECT_EQ(states.size(), 4u) << r.name();
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(states[absl::StrCat("piprio-", r.name(), "-green-", i, "-1.1.0")], v1::BACKEND_STATE_READY);
      EXPECT_EQ(states[absl::StrCat("piprio-", r.name(), "-blue-", i, "-1.0.0")], v1::BACKEND_STATE_DRAIN);
    }
  }
  // Pinned just before the switch, not before green is healthy.
  EXPECT_EQ(plan.FindPhase("pin")->steps[0].kind, StepKind::kPin);
  const PlanPhase* grace = plan.FindPhase("grace");
  ASSERT_EQ(grace->steps.size(), 1u);
  EXPECT_EQ(grace->steps[0].kind, StepKind::kGrace);
  EXPECT_EQ(grace->steps[0].timeout, absl::Minutes(5));
  // Retire: blue leaves the proxy first, then stops, then goes.
  const PlanPhase* retire = plan.FindPhase("retire-blue");
  ASSERT_NE(retire, nullptr);
  EXPECT_EQ(retire->steps[0].kind, StepKind::kProxyUpdate);
  EXPECT_EQ(retire->steps[0].batch, 0u);
  for (const v1::ProxyRoute& r : retire->steps[0].action.proxy_update().routes()) {
    for (const v1::ProxyBackend& b : r.backends()) {
      EXPECT_THAT(b.name(), HasSubstr("-green-"));
      EXPECT_EQ(b.state(), v1::BACKEND_STATE_READY);
    }
  }
  int removes = 0;
  for (const PlanStep& s : retire->steps) {
    if (s.kind == StepKind::kProxyUpdate) continue;
    EXPECT_EQ(s.instance->slot(), v1::SLOT_BLUE) << s.id;
    EXPECT_NE(s.instance->service(), "postgres") << s.id;
    EXPECT_EQ(s.batch, s.kind == StepKind::kStopInstance ? 1u : 2u) << s.id;
    removes += s.kind == StepKind::kRemoveInstance;
  }
  EXPECT_EQ(removes, 2 + 3 + 1 + 2);
  for (const PlanStep& s : plan.FindPhase("postcheck")->steps) EXPECT_EQ(s.instance->slot(), v1::SLOT_GREEN);
  // The database and the proxy are shared by both slots.
  for (const PlanStep* s : plan.AllSteps()) {
    if (s->kind == StepKind::kStartInstance) {
      EXPECT_NE(s->instance->service(), "postgres");
      EXPECT_NE(s->instance->service(), "proxy");
    }
  }
  EXPECT_EQ(ToProto(plan).target_slot(), v1::SLOT_GREEN);
  EXPECT_EQ(ToProto(plan).grace_period().seconds(), 300);
}

TEST(PlannerTest, BlueGreenFromGreenStartsInBlue) {
  PlanInput in = BlueGreenInput();
  MoveToSlot(in, v1::SLOT_GREEN);
  Plan plan = MustPlan(in);
  EXPECT_EQ(plan.target_slot, v1::SLOT_BLUE);
  EXPECT_NE(plan.FindPhase("start-blue"), nullptr);
  EXPECT_NE(plan.FindPhase("retire-green"), nullptr);
  for (const PlanStep& s : plan.FindPhase("start-blue")->steps) EXPECT_EQ(s.instance->slot(), v1::SLOT_BLUE);
  std::map<std::string, v1::BackendState> states;
  for (const v1::ProxyBackend& b : plan.FindPhase("switch")->steps[0].action.proxy_update().routes(0).backends()) {
    states[b.name()] = b.state();
  }
  EXPECT_EQ(states["piprio-web-blue-0-1.1.0"], v1::BACKEND_STATE_READY);
  EXPECT_EQ(states["piprio-web-green-0-1.0.0"], v1::BACKEND_STATE_DRAIN);
}

TEST(PlannerTest, RollingPlanReplacesTheLiveSlotWhenGreenServes) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  MoveToSlot(in, v1::SLOT_GREEN);
  Plan plan = MustPlan(in);
  for (const PlanStep* s : plan.AllSteps()) {
    if (s->instance.has_value()) {
      EXPECT_EQ(s->instance->slot(), v1::SLOT_GREEN) << s->id;
    }
  }
  EXPECT_EQ(plan.target_slot, v1::SLOT_UNSPECIFIED);
}

TEST(PlannerTest, BlueGreenClearsGreenLeftoversFirst) {
  PlanInput in = BlueGreenInput();
  v1::ContainerInfo left = in.agents[0].containers[0];
  left.mutable_instance()->set_slot(v1::SLOT_GREEN);
  left.set_version("1.1.0");
  left.set_state(v1::CONTAINER_STATE_EXITED);
  in.agents[0].containers.push_back(left);
  Plan plan = MustPlan(in);
  const PlanPhase* clear = plan.FindPhase("clear-green");
  ASSERT_NE(clear, nullptr);
  EXPECT_THAT(PhaseNames(plan)[2], "clear-green");
  ASSERT_EQ(clear->steps.size(), 1u);  // stopped already: removed only
  EXPECT_EQ(clear->steps[0].kind, StepKind::kRemoveInstance);
  EXPECT_EQ(clear->steps[0].instance->slot(), v1::SLOT_GREEN);
  EXPECT_EQ(clear->steps[0].action.remove_instance().version(), "1.1.0");
}

// Blue-green runs both releases at once (and, on a shared network, both
// slots answer to the service names), so a rule that forbids the mix is
// refused with the way out; a rule the mix keeps plans as before.
TEST(PlannerTest, BlueGreenRefusesARuleItCannotPlanAround) {
  std::ifstream in_file(kExamples + "piprio.yaml");
  std::stringstream text;
  text << in_file.rdbuf();
  struct Case {
    std::string rules;
    std::string refusal;  // empty: the plan goes through
  };
  const std::vector<Case> cases = {
      {"  - {service: worker, must_match: api}\n",
       "the rule \"worker must match api\" forbids worker and api at different versions, and blue-green runs "
       "1.0.0 and 1.1.0 at once"},
      {"  - {service: web, requires: {service: api, range: \">=1.1\"}}\n",
       "forbids web 1.1.0 beside api 1.0.0, and both slots answer to the same service names on network piprio"},
      {"  - {service: web, requires: {service: api, range: \"<1.1\"}}\n",
       "release 1.1.0 breaks the rule \"web requires api"},
      {"  - {service: web, requires: {service: api, range: \">=1.0 <2\"}}\n", ""},
  };
  for (const Case& c : cases) {
    PlanInput in = BlueGreenInput();
    in.manifest = Manifest(text.str() + "rules:\n" + c.rules);
    auto plan = PlanRollout(in);
    if (c.refusal.empty()) {
      EXPECT_TRUE(plan.ok()) << c.rules << plan.status();
      continue;
    }
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << c.rules;
    EXPECT_THAT(Msg(plan.status()), HasSubstr(c.refusal)) << c.rules;
    EXPECT_THAT(Msg(plan.status()), HasSubstr("or use --strategy rolling")) << c.rules;
  }
}

TEST(PlannerTest, BlueGreenRefusesAFirstDeploy) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in;
  in.manifest = m;
  in.agents = AgentsOf(m, "");
  in.target = ReleaseOf(m, "1.0.0");
  in.strategy = v1::STRATEGY_BLUE_GREEN;
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("deploy 1.0.0 with --strategy rolling first"));
}

TEST(PlannerTest, BlueGreenRefusesHostPortsAndAMissingProxy) {
  StackManifest m = Manifest(R"(deployment: shop
hosts: [h1]
services:
  web:
    role: web
    repository: registry.test/shop/web
    ports: ["8080:8080"]
)");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  in.strategy = v1::STRATEGY_BLUE_GREEN;
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("services.web.ports publishes host port 8080"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("no service with role proxy and routes"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("or use --strategy rolling"));
}

TEST(PlannerTest, BlueGreenRefusesWhenNoProxyRuns) {
  PlanInput in = BlueGreenInput();
  for (AgentState& a : in.agents) {
    std::erase_if(a.containers, [](const v1::ContainerInfo& c) { return c.instance().service() == "proxy"; });
  }
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("no proxy instance runs, so there is no proxy to switch"));
}

TEST(PlannerTest, BlueGreenPreviewRouteReachesGreenBeforeTheSmokeTest) {
  StackManifest m = Manifest(R"(deployment: shop
network: shop
hosts: [h1]
services:
  web:
    role: web
    repository: registry.test/shop/web
    replicas: 2
    ports: [{container: 8080}]
  proxy:
    role: proxy
    image: registry.test/haproxy:2.6
    ports: ["80:8080", "8081:8081"]
    routes:
      - {name: web, service: web, port: 8080, listen: 8080}
      - {name: web-preview, service: web, port: 8080, listen: 8081}
smoke_test:
  service: web
  command: [/app, smoke]
)");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  in.strategy = v1::STRATEGY_BLUE_GREEN;
  Plan plan = MustPlan(in);
  std::vector<std::string> names = PhaseNames(plan);
  auto at = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  ASSERT_LT(at("preview"), static_cast<long>(names.size()));
  EXPECT_LT(at("start-green"), at("preview"));
  EXPECT_LT(at("preview"), at("smoke-test"));
  EXPECT_LT(at("smoke-test"), at("switch"));
  const v1::ProxyUpdate& preview = plan.FindPhase("preview")->steps[0].action.proxy_update();
  ASSERT_EQ(preview.routes_size(), 1);
  EXPECT_EQ(preview.routes(0).name(), "web-preview");
  for (const v1::ProxyBackend& b : preview.routes(0).backends()) EXPECT_THAT(b.name(), HasSubstr("-green-"));
  // The switch leaves the preview route alone.
  const v1::ProxyUpdate& sw = plan.FindPhase("switch")->steps[0].action.proxy_update();
  ASSERT_EQ(sw.routes_size(), 1);
  EXPECT_EQ(sw.routes(0).name(), "web");
}

TEST(PlannerTest, OrderConflictBetweenAfterAndMustMatchIsNamed) {
  StackManifest m = Manifest(R"(deployment: shop
hosts: [h1]
services:
  api:
    role: api
    repository: reg/api
    after: [web]
  worker:
    role: worker
    repository: reg/worker
  web:
    role: web
    repository: reg/web
    after: [worker]
rules:
  - {service: worker, must_match: api}
)");
  auto plan = PlanRollout(UpgradeInput(m, "1.0.0", "1.1.0"));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("the order constraints conflict: web -> group-api -> web (services.api.after names web; services.web.after names worker)"));
}

TEST(PlannerTest, ReplicasStayOnTheHostTheyRunOn) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  // Move worker replica 0 from app-1 to app-2 in the observed state.
  for (AgentState& a : in.agents) {
    if (a.id != "app-1") continue;
    auto it = std::find_if(a.containers.begin(), a.containers.end(), [](const v1::ContainerInfo& c) {
      return c.instance().service() == "worker" && c.instance().replica() == 0;
    });
    v1::ContainerInfo c = *it;
    a.containers.erase(it);
    for (AgentState& b : in.agents) {
      if (b.id == "app-2") b.containers.push_back(c);
    }
  }
  Plan plan = MustPlan(in);
  for (const PlanStep& s : plan.FindPhase("replace-worker")->steps) {
    if (s.kind == StepKind::kStartInstance && s.instance->replica() == 0) {
      EXPECT_EQ(s.agent_id, "app-2");
    }
  }
}

TEST(PlannerTest, DatabaseIsNeverReplaced) {
  Plan plan = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  for (const PlanStep* s : plan.AllSteps()) {
    if (s->instance.has_value() && s->instance->service() == "postgres") {
      // Probes only read its health.
      EXPECT_TRUE(s->kind == StepKind::kPostcheck || s->kind == StepKind::kProbeHealth)
          << s->id << " touches the database";
    }
  }
  const PlanStep& backup = plan.FindPhase("backup")->steps.at(0);
  EXPECT_EQ(backup.agent_id, "db-1");
  EXPECT_EQ(backup.action.backup().items(0).postgres().database(), "piprio");
  EXPECT_EQ(backup.action.backup().items_size(), 4);  // dump, pgdata, two config files
}

TEST(PlannerTest, StepIdsAreStableUniqueAndProtoKeepsBatches) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  Plan a = MustPlan(in);
  Plan b = MustPlan(in);
  std::set<std::string> ids;
  const std::regex pattern("p[0-9]{2}-s[0-9]{3}-[a-z0-9.-]+");
  std::vector<std::string> ids_a, ids_b;
  for (const PlanStep* s : a.AllSteps()) {
    EXPECT_TRUE(std::regex_match(s->id, pattern)) << s->id;
    EXPECT_TRUE(ids.insert(s->id).second) << "duplicate id " << s->id;
    ids_a.push_back(s->id);
  }
  for (const PlanStep* s : b.AllSteps()) ids_b.push_back(s->id);
  EXPECT_EQ(ids_a, ids_b);
  EXPECT_EQ(a.AllSteps().front()->id, "p01-s001-agents");

  v1::Plan proto = ToProto(a);
  ASSERT_EQ(proto.phases_size(), static_cast<int>(a.phases.size()));
  for (int i = 0; i < proto.phases_size(); ++i) {
    const v1::PlannedPhase& p = proto.phases(i);
    EXPECT_EQ(p.name(), a.phases[i].name);
    EXPECT_EQ(p.reason(), a.phases[i].reason);
    ASSERT_EQ(p.batches_size(), p.steps_size());
    for (int j = 0; j < p.steps_size(); ++j) {
      EXPECT_EQ(p.steps(j).step_id(), a.phases[i].steps[j].id);
      EXPECT_EQ(p.steps(j).kind(), StepKindName(a.phases[i].steps[j].kind));
      EXPECT_EQ(p.batches(j), a.phases[i].steps[j].batch);
      EXPECT_EQ(p.steps(j).state(), v1::STEP_STATE_PENDING);
    }
  }
  ASSERT_EQ(proto.notes_size(), 1);
  EXPECT_EQ(proto.notes(0).version(), "1.1.0");
}

// The rules that read a stored step's phase (the executor's undo of a failed
// gate, a cutover's switch) read its role from its name.
TEST(PlannerTest, EveryPhaseNameReadsBackAsTheRoleThePlannerGaveIt) {
  Plan rolling = MustPlan(UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0"));
  Plan blue_green = MustPlan(BlueGreenInput());
  for (const Plan* plan : {&rolling, &blue_green}) {
    for (const PlanPhase& ph : plan->phases) EXPECT_EQ(PhaseRoleOf(ph.name), ph.role) << ph.name;
  }
  EXPECT_EQ(rolling.FindPhase("preflight")->role, PhaseRole::kPreflight);
  EXPECT_EQ(rolling.FindPhase("pull")->role, PhaseRole::kPull);
  EXPECT_EQ(rolling.FindPhase("migrate-api")->role, PhaseRole::kMigrationGate);
  EXPECT_EQ(rolling.FindPhase("replace-api")->role, PhaseRole::kReplace);
  EXPECT_EQ(rolling.FindPhase("start-scheduler")->role, PhaseRole::kStart);
  EXPECT_EQ(rolling.FindPhase("stop-scheduler")->role, PhaseRole::kOther);
  EXPECT_EQ(rolling.FindPhase(kUndoGatePhase)->role, PhaseRole::kUndoGate);
  EXPECT_EQ(blue_green.FindPhase("start-green")->role, PhaseRole::kStart);
  EXPECT_EQ(blue_green.FindPhase("switch")->role, PhaseRole::kSwitch);
}

TEST(StepKindTest, EveryKindReadsBackFromItsNameAndAnUnknownNameIsNone) {
  for (int k = 0; k <= static_cast<int>(StepKind::kGrace); ++k) {
    const auto kind = static_cast<StepKind>(k);
    EXPECT_EQ(ParseStepKind(StepKindName(kind)), kind) << StepKindName(kind);
  }
  EXPECT_EQ(StepKindName(StepKind::kRunJob), "run_job");
  EXPECT_FALSE(ParseStepKind("run-job").has_value());
  EXPECT_FALSE(ParseStepKind("").has_value());
}

TEST(StepKindTest, PhaseNamesReadBackAsTheirRoles) {
  for (PhaseRole role : {PhaseRole::kPreflight, PhaseRole::kPull, PhaseRole::kMigrationGate, PhaseRole::kOneShotJob,
                         PhaseRole::kStart, PhaseRole::kReplace, PhaseRole::kSwitch, PhaseRole::kUndoGate}) {
    EXPECT_EQ(PhaseRoleOf(PhaseName(role, "api")), role) << PhaseName(role, "api");
  }
  EXPECT_EQ(PhaseName(PhaseRole::kOneShotJob, "migrate"), "run-migrate");
  EXPECT_EQ(PhaseName(PhaseRole::kSwitch), "switch");
  EXPECT_EQ(PhaseRoleOf("stop-app"), PhaseRole::kOther);
  EXPECT_EQ(PhaseRoleOf("reload-proxy"), PhaseRole::kOther);
}

TEST(StepKindTest, MigrationsAreGateJobsAndOneShotJobsNamedForThem) {
  EXPECT_TRUE(RunsMigrations(StepKind::kRunJob, PhaseRole::kMigrationGate, "migrate"));
  EXPECT_TRUE(RunsMigrations(StepKind::kRunJob, PhaseRole::kOneShotJob, "db-migrations"));
  EXPECT_FALSE(RunsMigrations(StepKind::kRunJob, PhaseRole::kOneShotJob, "seed"));
  EXPECT_FALSE(RunsMigrations(StepKind::kProbeHealth, PhaseRole::kMigrationGate, ""));
}

TEST(PlannerTest, NotesCoverEveryReleaseBetweenCurrentAndTarget) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.3.0");
  in.intermediate = {ReleaseOf(m, "1.2.0"), ReleaseOf(m, "0.9.0"), ReleaseOf(m, "1.1.0"), ReleaseOf(m, "1.4.0")};
  Plan plan = MustPlan(in);
  std::vector<std::string> versions;
  for (const v1::Release& r : plan.notes) versions.push_back(r.version());
  EXPECT_THAT(versions, ElementsAre("1.1.0", "1.2.0", "1.3.0"));
}


TEST(PlannerTest, FirstDeployRefusesWhenContainersAlreadyRun) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  in.current.reset();
  auto plan = PlanRollout(in);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("no release is pinned for piprio but its containers already run"));
}

TEST(PlannerTest, ReplicasBeyondTheManifestAreStoppedAndRemoved) {
  StackManifest m = Manifest(R"(deployment: shop
hosts: [h1, h2]
services:
  worker:
    role: worker
    repository: reg/worker
    replicas: 3
    health: {docker: true}
)");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  in.manifest.services[0].replicas = 2;  // the manifest shrank since the workers started
  Plan plan = MustPlan(in);
  std::vector<std::string> slugs = Slugs(*plan.FindPhase("replace-worker"));
  ASSERT_GE(slugs.size(), 2u);
  EXPECT_EQ(slugs[slugs.size() - 2], "stop-worker-2");
  EXPECT_EQ(slugs.back(), "remove-worker-2");
  for (const std::string& s : slugs) EXPECT_NE(s, "start-worker-2");
}

TEST(PlannerTest, AlreadyUpgradedReplicasAreLeftAlone) {
  StackManifest m = Example("piprio.yaml");
  PlanInput in = UpgradeInput(m, "1.0.0", "1.1.0");
  // A resumed rollout: api replica 0 already runs 1.1.0, healthy.
  for (AgentState& a : in.agents) {
    for (v1::ContainerInfo& c : a.containers) {
      if (c.instance().service() == "api" && c.instance().replica() == 0) c.set_version("1.1.0");
    }
  }
  Plan plan = MustPlan(in);
  EXPECT_THAT(Slugs(*plan.FindPhase("replace-api")),
              ElementsAre("start-api-1", "probe-api-1", "proxy-proxy-edge-1", "stop-api-1", "remove-api-1"));
}


TEST(PlannerTest, RestoreRefusesABackupHeldAwayFromTheDatabase) {
  PlanInput in = UpgradeInput(Example("piprio.yaml"), "1.1.0", "1.0.0");
  RollbackOptions opts;
  v1::BackupRecord record;
  record.set_id("piprio-pre-1.1.0");
  record.set_agent_id("app-1");
  record.add_artifacts()->set_kind("postgres");
  opts.restore = record;
  auto plan = PlanRollback(in, opts);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(plan.status()), HasSubstr("backup piprio-pre-1.1.0 is held by app-1 but postgres runs on db-1"));
}

// The digest that ties a plan shown to the plan started (hoist upgrade).
TEST(PlanDigestTest, SamePlanAgreesWhateverItsBackupStampAndAnyChangeDisagrees) {
  PlanInput shown = UpgradeInput(Example("piprio.yaml"), "1.0.0", "1.1.0");
  PlanInput started = shown;
  started.options.backup_suffix = "20261201-101500-0a1b";  // StartRollout's time stamp
  const Plan a = MustPlan(shown);
  const Plan b = MustPlan(started);
  ASSERT_NE(a.backup_id, b.backup_id);
  EXPECT_EQ(PlanDigest(a), PlanDigest(b)) << "only the backup's time stamp differs";
  EXPECT_EQ(PlanDigest(a).size(), 16u);
  EXPECT_EQ(ToProto(a).digest(), PlanDigest(a));

  // What runs where changed (a host on an engine of its own now), the
  // failure policy, or the backup left out: another plan.
  PlanInput separate = shown;
  OnSeparateEngines(separate);
  EXPECT_NE(PlanDigest(MustPlan(separate)), PlanDigest(a));
  PlanInput rolled_back_on_failure = shown;
  rolled_back_on_failure.options.on_failure = hoist::v1::ON_FAILURE_ROLLBACK;
  EXPECT_NE(PlanDigest(MustPlan(rolled_back_on_failure)), PlanDigest(a));
  PlanInput no_backup = shown;
  no_backup.options.skip_backup = true;
  EXPECT_NE(PlanDigest(MustPlan(no_backup)), PlanDigest(a));
}


}  // namespace
}  // namespace hoist::rollout
