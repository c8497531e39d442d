#include "controller/rollout/manifest.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/rollout/release_file.h"
#include "controller/rollout/secrets.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist::rollout {
namespace {

using ::testing::HasSubstr;

// Messages as std::string, so failures print them as text.
std::string Msg(const absl::Status& s) { return std::string(s.message()); }

const std::string kExamples = std::string(HOIST_SOURCE_DIR) + "/deploy/examples/";

// A small valid manifest the error tests break one line at a time.
constexpr char kBase[] = R"(deployment: shop
hosts:
  - id: host-a
    labels: {zone: a}
  - id: host-b
    labels: {zone: b}
services:
  api:
    role: api
    repository: registry.local/shop/api
    replicas: 2
    health:
      http: {path: /health, port: 8080}
      interval: 2s
  web:
    role: web
    repository: registry.local/shop/web
)";

absl::Status ParseError(const std::string& text) {
  auto m = ParseStackManifest("stack.yaml", text);
  EXPECT_FALSE(m.ok()) << "expected the manifest to be refused:\n" << text;
  return m.status();
}

TEST(ManifestTest, ParsesTheBaseManifestWithDefaults) {
  auto m = ParseStackManifest("stack.yaml", kBase);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->deployment, "shop");
  ASSERT_EQ(m->services.size(), 2u);
  const ServiceSpec& api = m->services[0];
  EXPECT_EQ(api.name, "api");
  EXPECT_EQ(api.role, hoist::v1::ROLE_API);
  EXPECT_TRUE(api.versioned());
  EXPECT_EQ(api.replicas, 2u);
  ASSERT_TRUE(api.health.has_value());
  EXPECT_EQ(api.health->deadline, absl::Minutes(2));
  EXPECT_EQ(api.update_order, UpdateOrder::kStartFirst);
  EXPECT_EQ(api.stop_timeout, absl::Seconds(10));
  EXPECT_EQ(m->EligibleHosts(api), (std::vector<std::string>{"host-a", "host-b"}));
}

TEST(ManifestTest, ParsesThePiprioExample) {
  auto m = LoadStackManifest(kExamples + "piprio.yaml");
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> names;
  for (const ServiceSpec& s : m->services) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"api", "worker", "scheduler", "web", "proxy", "postgres"}));
  const ServiceSpec* api = m->FindService("api");
  ASSERT_TRUE(api->migration.has_value());
  EXPECT_EQ(api->migration->command, (std::vector<std::string>{"python", "migrations/run_migrations.py"}));
  EXPECT_EQ(api->health->deadline, absl::Minutes(3));
  EXPECT_TRUE(api->health->check_version);
  const ServiceSpec* worker = m->FindService("worker");
  EXPECT_EQ(worker->replicas, 3u);
  EXPECT_EQ(worker->rolling.pause, absl::Seconds(10));
  EXPECT_EQ(worker->after, (std::vector<std::string>{"api"}));
  const ServiceSpec* proxy = m->FindService("proxy");
  EXPECT_FALSE(proxy->versioned());
  ASSERT_EQ(proxy->ports.size(), 2u);
  EXPECT_EQ(proxy->ports[0].host_port, 80u);
  EXPECT_EQ(proxy->ports[0].container_port, 8080u);
  ASSERT_EQ(proxy->routes.size(), 2u);
  EXPECT_EQ(proxy->routes[0].service, "web");
  ASSERT_TRUE(m->backup.has_value());
  EXPECT_EQ(m->backup->postgres->database, "piprio");
  ASSERT_TRUE(m->smoke_test.has_value());
  EXPECT_EQ(m->smoke_test->service, "api");
}

TEST(ManifestTest, ParsesTheRatExampleWithItsMustMatchRules) {
  auto m = LoadStackManifest(kExamples + "rat.yaml");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rules.size(), 3u);
  for (const CompatRule& r : m->rules) {
    EXPECT_EQ(r.kind, CompatRule::Kind::kMustMatch);
    EXPECT_EQ(r.other, "ratd");
  }
  EXPECT_EQ(m->rules[0].Describe(), "runner must match ratd");
}

// Every stack and release in deploy/examples parses, and each release names
// exactly the versioned services of its stack.
TEST(ManifestTest, EveryExampleAndItsReleasesParse) {
  for (const char* name : {"piprio", "rat", "rack-gateway", "rytask", "betweenrows"}) {
    auto m = LoadStackManifest(kExamples + name + ".yaml");
    ASSERT_TRUE(m.ok()) << name << ": " << m.status();
    EXPECT_EQ(m->deployment, name);
    std::set<std::string> versioned;
    for (const ServiceSpec& s : m->services) {
      if (s.versioned()) versioned.insert(s.name);
    }
    int releases = 0;
    for (const auto& entry : std::filesystem::directory_iterator(kExamples)) {
      const std::string file = entry.path().filename().string();
      if (file.rfind(std::string(name) + "-release-", 0) != 0) continue;
      ++releases;
      auto r = LoadReleaseFile(entry.path().string());
      ASSERT_TRUE(r.ok()) << file << ": " << r.status();
      std::set<std::string> imaged;
      for (const auto& [service, image] : r->images()) imaged.insert(service);
      EXPECT_EQ(imaged, versioned) << file;
    }
    EXPECT_EQ(releases, 1) << name;
  }
}

TEST(ManifestTest, BadDurationNamesFileLineColumnAndField) {
  std::string text = kBase;
  text.replace(text.find("interval: 2s"), 12, "interval: fast");
  absl::Status st = ParseError(text);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:14:17: services.api.health.interval: expected a duration like \"5s\""));
  EXPECT_THAT(Msg(st), HasSubstr("got \"fast\""));
}

TEST(ManifestTest, UnknownKeyNamesTheAllowedOnes) {
  std::string text = kBase;
  text.replace(text.find("replicas: 2"), 11, "replica: 2");
  absl::Status st = ParseError(text);
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:11:5: services.api.replica: unknown key; allowed keys here: role, repository, image"));
}

TEST(ManifestTest, UnknownTopLevelKeyIsRefused) {
  absl::Status st = ParseError(std::string(kBase) + "volumes: []\n");
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:18:1: volumes: unknown key; allowed keys here: deployment, network, hosts"));
}

TEST(ManifestTest, DuplicateServiceNameIsRefused) {
  absl::Status st = ParseError(std::string(kBase) + "  api:\n    role: worker\n    repository: registry.local/shop/w\n");
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:18:3: services.api: duplicate name (first on line 8)"));
}

TEST(ManifestTest, DuplicateHostIsRefused) {
  std::string text = kBase;
  text.replace(text.find("id: host-b"), 10, "id: host-a");
  absl::Status st = ParseError(text);
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:5:9: hosts[1]: duplicate host \"host-a\" (first on line 3)"));
}

TEST(ManifestTest, UnpinnedImagesAreRefused) {
  for (const char* image : {"postgres:latest", "postgres", "registry.local:5000/postgres"}) {
    absl::Status st = ParseError(std::string(kBase) + "  db:\n    role: database\n    image: " + image + "\n");
    EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:20:12: services.db.image: expected an image pinned to a tag or digest"))
        << image;
  }
  auto pinned = ParseStackManifest(
      "stack.yaml", std::string(kBase) + "  db:\n    role: database\n    image: postgres@sha256:abc123\n");
  EXPECT_TRUE(pinned.ok()) << pinned.status();
}

TEST(ManifestTest, RepositoryWithATagIsRefused) {
  std::string text = kBase;
  text.replace(text.find("registry.local/shop/web"), 23, "registry.local/shop/web:1.0.0");
  absl::Status st = ParseError(text);
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:17:17: services.web.repository: expected a repository without tag"));
}

TEST(ManifestTest, MissingAndUnknownRolesAreRefused) {
  std::string text = kBase;
  text.replace(text.find("role: web"), 9, "role: frontend");
  EXPECT_THAT(Msg(ParseError(text)),
              HasSubstr("stack.yaml:16:11: services.web.role: expected one of api, database, job, proxy, scheduler, web, worker; got \"frontend\""));
  text = kBase;
  text.replace(text.find("    role: web\n"), 14, "");
  EXPECT_THAT(Msg(ParseError(text)), HasSubstr("stack.yaml:16:5: services.web.role: required"));
}

TEST(ManifestTest, UnknownServiceInRulesIsRefused) {
  absl::Status st = ParseError(std::string(kBase) + "rules:\n  - {service: web, must_match: apii}\n");
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:19:5: rules[0].must_match: unknown service \"apii\"; services are: api, web"));
}

TEST(ManifestTest, RequiresRuleNeedsAValidRange) {
  absl::Status st = ParseError(std::string(kBase) +
                               "rules:\n  - {service: web, requires: {service: api, range: \"banana\"}}\n");
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:19:52: rules[0].requires.range: expected a version range like \">=1.4 <2\""));
  auto ok = ParseStackManifest("stack.yaml", std::string(kBase) +
                                                 "rules:\n  - {service: web, when: \"<2\", requires: {service: api, range: \">=1.4 <2\"}}\n");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->rules[0].Describe(), "web <2 requires api >=1.4 <2");
}

TEST(ManifestTest, RouteListenDefaultsToTheProxysPortsInOrder) {
  auto m = ParseStackManifest("stack.yaml", std::string(kBase) +
                                                "  proxy:\n    role: proxy\n    image: haproxy:2.6\n"
                                                "    ports: [\"80:8080\", \"81:8081\"]\n    routes:\n"
                                                "      - {name: web, service: web, port: 3000}\n"
                                                "      - {name: api, service: api, port: 8000, listen: 9000}\n");
  ASSERT_TRUE(m.ok()) << m.status();
  const ServiceSpec* proxy = m->FindService("proxy");
  EXPECT_EQ(proxy->routes[0].listen, 8080u);
  EXPECT_EQ(proxy->routes[1].listen, 9000u);
}

TEST(ManifestTest, RouteWithoutAListenPortOrWithATakenOneIsRefused) {
  std::string proxy = "  proxy:\n    role: proxy\n    image: haproxy:2.6\n    routes:\n";
  EXPECT_THAT(Msg(ParseError(std::string(kBase) + proxy + "      - {name: web, service: web, port: 3000}\n")),
              HasSubstr("services.proxy.routes[0].listen: required: the proxy's container port this route listens on"));
  EXPECT_THAT(Msg(ParseError(std::string(kBase) + proxy + "      - {name: web, service: web, port: 3000, listen: 80}\n"
                                                          "      - {name: api, service: api, port: 8000, listen: 80}\n")),
              HasSubstr("services.proxy.routes[1].listen: port 80 is already the listen port of route \"web\""));
}

TEST(ManifestTest, UnknownServiceInAfterIsRefused) {
  std::string text = kBase;
  text += "    after: [db]\n";
  EXPECT_THAT(Msg(ParseError(text)), HasSubstr("stack.yaml:18:12: services.web.after[0]: unknown service \"db\""));
}

TEST(ManifestTest, OrderCycleIsNamed) {
  std::string text = kBase;
  text.replace(text.find("    health:"), 0, "    after: [web]\n");
  text += "    after: [api]\n";
  absl::Status st = ParseError(text);
  EXPECT_THAT(Msg(st), HasSubstr("services.api.after: order constraints form a cycle: api -> web -> api"));
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:12:12:"));
}

TEST(ManifestTest, MoreDistinctReplicasThanHostsIsRefused) {
  std::string text = kBase;
  text.replace(text.find("replicas: 2"), 11, "replicas: 3\n    placement: {distinct_hosts: true}");
  absl::Status st = ParseError(text);
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:8:3: services.api.replicas: 3 replicas need 3 distinct hosts"));
  EXPECT_THAT(Msg(st), HasSubstr("only 2 are eligible: host-a, host-b"));
}

TEST(ManifestTest, FixedHostPortsNeedDistinctHosts) {
  std::string text = kBase;
  text.replace(text.find("replicas: 2"), 11, "replicas: 3\n    ports: [\"8080:8080\"]");
  EXPECT_THAT(Msg(ParseError(text)), HasSubstr("a fixed host port allows one replica per host"));
}

TEST(ManifestTest, NoEligibleHostIsRefused) {
  std::string text = kBase;
  text += "    placement: {labels: {zone: c}}\n";
  EXPECT_THAT(Msg(ParseError(text)), HasSubstr("stack.yaml:15:3: services.web.placement: no host is eligible"));
}

TEST(ManifestTest, UnknownPlacementHostIsRefused) {
  std::string text = kBase;
  text += "    placement: {hosts: [host-z]}\n";
  EXPECT_THAT(Msg(ParseError(text)),
              HasSubstr("services.web.placement.hosts[0]: unknown host \"host-z\"; hosts are: host-a, host-b"));
}

TEST(ManifestTest, PortsClashingOnASharedHostAreRefused) {
  std::string text = kBase;
  text.replace(text.find("replicas: 2"), 11, "replicas: 1\n    ports: [\"127.0.0.1:8080:80\"]");
  text += "    ports:\n      - {container: 3000, host: 8080}\n";
  absl::Status st = ParseError(text);
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:20:9: services.web.ports[0]: host port 8080/tcp on host host-a is also published by services.api"));
}

TEST(ManifestTest, StopFirstThatCannotKeepMinHealthyIsRefused) {
  std::string text = kBase;
  text += "    replicas: 2\n    update_order: stop-first\n    rolling: {min_healthy: 2}\n";
  EXPECT_THAT(Msg(ParseError(text)),
              HasSubstr("services.web.rolling.min_healthy: min_healthy 2 with 2 replicas leaves no instance to replace stop-first"));
}

TEST(ManifestTest, HealthNeedsExactlyOneKind) {
  std::string text = kBase;
  text.replace(text.find("      interval: 2s"), 0, "      tcp: {port: 8080}\n");
  EXPECT_THAT(Msg(ParseError(text)),
              HasSubstr("stack.yaml:13:7: services.api.health: expected exactly one of http, tcp, docker or command; got 2"));
}

TEST(ManifestTest, BackupMustNameADatabaseService) {
  std::string text = std::string(kBase) + "backup:\n  postgres: {service: web, database: shop, user: shop}\n";
  EXPECT_THAT(Msg(ParseError(text)), HasSubstr("backup.postgres.service: service \"web\" does not have role database"));
}

TEST(ManifestTest, InvalidYamlIsRefusedWithItsPosition) {
  absl::Status st = ParseError("deployment: shop\nhosts: [a\n");
  EXPECT_THAT(Msg(st), HasSubstr("stack.yaml:"));
  EXPECT_THAT(Msg(st), HasSubstr("not valid YAML"));
}

TEST(ImageReferenceTest, SplitsRegistryPortTagAndDigest) {
  auto r = ParseImageReference("registry.local:5000/app/api:1.2.3");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->repository, "registry.local:5000/app/api");
  EXPECT_EQ(r->tag, "1.2.3");
  EXPECT_TRUE(r->pinned());
  auto d = ParseImageReference("registry.local:5000/app/api@sha256:abcd");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->repository, "registry.local:5000/app/api");
  EXPECT_EQ(d->digest, "sha256:abcd");
  EXPECT_TRUE(d->pinned());
  auto none = ParseImageReference("registry.local:5000/app/api");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->pinned());
  EXPECT_FALSE(ParseImageReference("api:").ok());
}


// Mangled manifests and release files (bytes dropped, swapped, duplicated,
// from a fixed seed) must come back as a status, never a crash or an exception.
TEST(ManifestMutationTest, MangledInputNeverEscapesAsACrash) {
  std::string manifest;
  {
    std::ifstream in(kExamples + "piprio.yaml");
    std::stringstream buf;
    buf << in.rdbuf();
    manifest = buf.str();
  }
  ASSERT_FALSE(manifest.empty());
  const std::string release = "version: 1.1.0\nimages: {api: reg/api:1.1.0}\nrenamed_env: {A: B}\n";
  std::mt19937 rng(20240611);
  const std::string alphabet = ":-[]{}\"'&*!|>#%@, \n\tx0";
  int parsed = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text = i % 4 == 3 ? release : manifest;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0: text.erase(at, 1 + rng() % 8); break;
        case 1: text[at] = alphabet[rng() % alphabet.size()]; break;
        default: text.insert(at, text.substr(rng() % text.size(), rng() % 16)); break;
      }
    }
    if (i % 4 == 3) {
      parsed += ParseReleaseFile("r.yaml", text).ok() ? 1 : 0;
    } else {
      auto m = ParseStackManifest("stack.yaml", text);
      if (m.ok()) {
        ++parsed;
      } else {
        EXPECT_THAT(Msg(m.status()), ::testing::StartsWith("stack.yaml")) << text;
      }
    }
  }
  // Some edits land in comments or values that stay valid; most do not.
  EXPECT_LT(parsed, 3000);
}

}  // namespace
}  // namespace hoist::rollout

namespace hoist::rollout {
namespace {

using ::testing::Not;

TEST(ManifestSecretsTest, AnEnvValueOfTheWrongShapeIsRefusedWithoutRepeatingIt) {
  std::string text = kBase;
  text += "    env:\n      DB_PASSWORD: [hunter2-secret]\n";
  absl::Status s = ParseError(text);
  EXPECT_THAT(Msg(s), HasSubstr("services.web.env.DB_PASSWORD: expected a single value"));
  EXPECT_THAT(Msg(s), HasSubstr("got a list"));
  EXPECT_THAT(Msg(s), Not(HasSubstr("hunter2")));
}

TEST(ManifestSecretsTest, TheApiShowsEnvNamesWithAFingerprintAndNoValue) {
  std::string text = kBase;
  text += "    env:\n      DB_PASSWORD: \"hunter2-secret\"\n      PORT: 8080\n";
  const std::string shown = RedactEnvValues(text, [](absl::string_view v) { return absl::StrCat("fp", v.size()); });
  EXPECT_THAT(shown, HasSubstr("DB_PASSWORD: (secret fp14)"));
  EXPECT_THAT(shown, HasSubstr("PORT: (secret fp4)"));
  EXPECT_THAT(shown, Not(HasSubstr("hunter2")));
  EXPECT_THAT(shown, HasSubstr("repository: registry.local/shop/web")) << "the rest of the manifest is kept";
  EXPECT_THAT(RedactEnvValues("{ not: [yaml", [](absl::string_view) { return std::string(); }),
              Not(HasSubstr("not:")));
}

}  // namespace
}  // namespace hoist::rollout
