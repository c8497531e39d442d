// HAProxy's runtime API as Hoist drives it: the commands Apply sends for a
// ProxyUpdate, the parsing of HAProxy's answers, and the checks that leave the
// proxy untouched. A fake socket plays HAProxy 2.6 with the answers the real
// one gives (captured from haproxy 2.6.12).

#include "agent/haproxy.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "agent/file_util.h"
#include "shared/subprocess.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using hoist::testing::FakeClock;

constexpr char kServersHeader[] =
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state "
    "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port\n";

// HAProxy's runtime API, reduced to the commands Hoist sends.
class FakeHaproxy final : public HaproxySocket {
 public:
  struct Server {
    std::string ip;
    uint32_t port = 0;
    int admin = 1;  // added servers start in maintenance
    int sessions = 0;
  };

  explicit FakeHaproxy(FakeClock* clock) : clock_(clock) {}

  void AddBackend(const std::string& name) { backends_[name]; }
  Server& At(const std::string& backend, const std::string& server) { return backends_[backend][server]; }
  bool Has(const std::string& backend, const std::string& server) { return backends_[backend].contains(server); }
  // Sessions on a server end by themselves at `at`.
  void EndSessionsAt(const std::string& backend, const std::string& server, absl::Time at) {
    session_end_[backend + "/" + server] = at;
  }
  // Commands that change something, in order.
  const std::vector<std::string>& changes() const { return changes_; }

  absl::StatusOr<std::string> Send(absl::string_view command) override {
    for (auto& [key, at] : session_end_) {
      if (clock_->Now() >= at) {
        std::vector<std::string> parts = absl::StrSplit(key, '/');
        if (Has(parts[0], parts[1])) At(parts[0], parts[1]).sessions = 0;
      }
    }
    std::vector<std::string> w = absl::StrSplit(command, ' ', absl::SkipEmpty());
    if (command == "show backend") {
      std::string out = "# name\n";
      for (const auto& [name, servers] : backends_) absl::StrAppend(&out, name, "\n");
      return out + "\n";
    }
    if (command == "show servers state") {
      std::string out = kServersHeader;
      int be_id = 2;
      for (const auto& [be, servers] : backends_) {
        int id = 1;
        for (const auto& [name, s] : servers) {
          absl::StrAppend(&out, ++be_id, " ", be, " ", id++, " ", name, " ", s.ip, " 2 ", s.admin,
                          " 1 1 0 1 0 0 0 0 0 0 - ", s.port, " - 0 0 - - 0\n");
        }
      }
      return out + "\n";
    }
    if (command == "show stat") {
      std::string out = "# pxname,svname,qcur,qmax,scur,smax,slim,stot\nfe,FRONTEND,,,3,3,100,9\n";
      for (const auto& [be, servers] : backends_) {
        for (const auto& [name, s] : servers) absl::StrAppend(&out, be, ",", name, ",0,0,", s.sessions, ",1,,5\n");
        absl::StrAppend(&out, be, ",BACKEND,0,0,0,0,100,5\n");
      }
      return out + "\n";
    }
    if (w.size() < 3) return std::string("Unknown command.\n");
    std::vector<std::string> key = absl::StrSplit(w[0] == "shutdown" && w.size() > 3 ? w[3] : w[2], '/');
    if (key.size() != 2 || !backends_.contains(key[0])) return std::string("No such backend.\n");
    auto& servers = backends_[key[0]];
    changes_.push_back(std::string(command));
    if (w[0] == "add" && w[1] == "server") {
      if (servers.contains(key[1])) return std::string("Already exists a server with the same name in backend.\n");
      std::vector<std::string> addr = absl::StrSplit(w[3], ':');
      Server s;
      s.ip = addr[0];
      s.port = static_cast<uint32_t>(std::stoul(addr[1]));
      servers[key[1]] = s;
      return std::string("New server registered.\n");
    }
    if (!servers.contains(key[1])) return std::string("No such server.\n");
    Server& s = servers[key[1]];
    if (w[0] == "set" && w.size() == 5 && w[3] == "state") {
      if (w[4] == "ready") s.admin = 0;
      if (w[4] == "drain") s.admin = 8;
      if (w[4] == "maint") s.admin = 1;
      return std::string("\n");
    }
    if (w[0] == "set" && w.size() == 7 && w[3] == "addr") {
      s.ip = w[4];
      s.port = static_cast<uint32_t>(std::stoul(w[6]));
      return std::string("IP changed\n");
    }
    if (w[0] == "shutdown") {
      s.sessions = 0;
      return std::string("\n");
    }
    if (w[0] == "del") {
      if (s.admin != 1) return std::string("Only servers in maintenance mode can be deleted.\n");
      servers.erase(key[1]);
      return std::string("Server deleted.\n");
    }
    return std::string("Unknown command.\n");
  }

 private:
  FakeClock* clock_;
  std::map<std::string, std::map<std::string, Server>> backends_;
  std::map<std::string, absl::Time> session_end_;
  std::vector<std::string> changes_;
};

hoist::v1::ProxyBackend Backend(const std::string& name, const std::string& address, uint32_t port,
                                hoist::v1::BackendState state) {
  hoist::v1::ProxyBackend b;
  b.set_name(name);
  b.set_address(address);
  b.set_port(port);
  b.set_state(state);
  return b;
}

hoist::v1::ProxyUpdate Update(const std::string& route, std::vector<hoist::v1::ProxyBackend> backends) {
  hoist::v1::ProxyUpdate u;
  u.set_deployment("shop");
  u.set_service("proxy");
  auto* r = u.add_routes();
  r->set_name(route);
  for (auto& b : backends) *r->add_backends() = b;
  return u;
}

class HaproxyRuntimeTest : public ::testing::Test {
 protected:
  HaproxyRuntimeTest() { haproxy_.AddBackend("be_web"); }
  FakeClock clock_;
  FakeHaproxy haproxy_{&clock_};
  HaproxyRuntime runtime_{&haproxy_, &clock_};
  std::map<std::string, std::string> addresses_ = {{"web-1.0.0", "10.0.0.2"}, {"web-1.1.0", "10.0.0.3"}};
};

TEST_F(HaproxyRuntimeTest, NewServerIsAddedEnabledAndOldOneDrainedWithoutRemoval) {
  FakeHaproxy::Server old;
  old.ip = "10.0.0.2";
  old.port = 8080;
  old.admin = 0;
  haproxy_.At("be_web", "web-1.0.0") = old;

  auto report = runtime_.Apply(Update("web", {Backend("web-1.1.0", "web-1.1.0", 8080, hoist::v1::BACKEND_STATE_READY),
                                              Backend("web-1.0.0", "web-1.0.0", 8080, hoist::v1::BACKEND_STATE_DRAIN)}),
                               addresses_, absl::Seconds(5), nullptr);

  ASSERT_TRUE(report.ok()) << report.status();
  // Capacity first: the new server serves before the old one drains.
  EXPECT_THAT(haproxy_.changes(), ElementsAre("add server be_web/web-1.1.0 10.0.0.3:8080",
                                              "set server be_web/web-1.1.0 state ready",
                                              "set server be_web/web-1.0.0 state drain"));
  EXPECT_EQ(haproxy_.At("be_web", "web-1.1.0").admin, 0);
  EXPECT_EQ(haproxy_.At("be_web", "web-1.0.0").admin, 8);
}

TEST_F(HaproxyRuntimeTest, UnlistedServerIsDrainedUntilItsSessionsEndThenDeleted) {
  FakeHaproxy::Server old;
  old.ip = "10.0.0.2";
  old.port = 8080;
  old.admin = 0;
  old.sessions = 4;
  haproxy_.At("be_web", "web-1.0.0") = old;
  absl::Time start = clock_.Now();
  haproxy_.EndSessionsAt("be_web", "web-1.0.0", start + absl::Seconds(2));

  auto report = runtime_.Apply(Update("web", {Backend("web-1.1.0", "web-1.1.0", 8080, hoist::v1::BACKEND_STATE_READY)}),
                               addresses_, absl::Seconds(10), nullptr);

  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(haproxy_.Has("be_web", "web-1.0.0"));
  EXPECT_EQ(report->drained_sessions_left, 0);
  // Deleted once its sessions ended, well before the drain timeout.
  EXPECT_GE(clock_.Now() - start, absl::Seconds(2));
  EXPECT_LT(clock_.Now() - start, absl::Seconds(3));
  EXPECT_THAT(haproxy_.changes(), ElementsAre("add server be_web/web-1.1.0 10.0.0.3:8080",
                                              "set server be_web/web-1.1.0 state ready",
                                              "set server be_web/web-1.0.0 state drain",
                                              "set server be_web/web-1.0.0 state maint",
                                              "shutdown sessions server be_web/web-1.0.0",
                                              "del server be_web/web-1.0.0"));
}

TEST_F(HaproxyRuntimeTest, DrainGivesUpAtTheTimeoutAndReportsOpenSessions) {
  FakeHaproxy::Server old;
  old.ip = "10.0.0.2";
  old.port = 8080;
  old.admin = 0;
  old.sessions = 3;
  haproxy_.At("be_web", "web-1.0.0") = old;
  absl::Time start = clock_.Now();

  auto report = runtime_.Apply(Update("web", {}), addresses_, absl::Seconds(1), nullptr);

  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->drained_sessions_left, 3);
  EXPECT_LT(clock_.Now() - start, absl::Seconds(2));
  EXPECT_FALSE(haproxy_.Has("be_web", "web-1.0.0"));
}

TEST_F(HaproxyRuntimeTest, UnknownRouteChangesNothingAndNamesTheProxysRoutes) {
  auto report = runtime_.Apply(Update("api", {Backend("web-1.1.0", "web-1.1.0", 8080, hoist::v1::BACKEND_STATE_READY)}),
                               addresses_, absl::Seconds(1), nullptr);

  ASSERT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("the proxy has no route \"api\"; its routes: web"));
  EXPECT_TRUE(haproxy_.changes().empty());
}

TEST_F(HaproxyRuntimeTest, UnresolvedAddressChangesNothing) {
  auto report = runtime_.Apply(Update("web", {Backend("web-2", "nowhere", 8080, hoist::v1::BACKEND_STATE_READY)}),
                               addresses_, absl::Seconds(1), nullptr);

  ASSERT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("\"nowhere\" does not resolve"));
  EXPECT_TRUE(haproxy_.changes().empty());
}

TEST_F(HaproxyRuntimeTest, MovedServerGetsItsNewAddress) {
  FakeHaproxy::Server s;
  s.ip = "10.0.0.9";
  s.port = 80;
  s.admin = 0;
  haproxy_.At("be_web", "web-1.0.0") = s;

  auto report = runtime_.Apply(Update("web", {Backend("web-1.0.0", "web-1.0.0", 8080, hoist::v1::BACKEND_STATE_READY)}),
                               addresses_, absl::Seconds(1), nullptr);

  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(haproxy_.changes(), ElementsAre("set server be_web/web-1.0.0 addr 10.0.0.2 port 8080"));
}

// A proxy that says yes but does not do it: the read-back catches it.
class IgnoringHaproxy final : public HaproxySocket {
 public:
  absl::StatusOr<std::string> Send(absl::string_view command) override {
    if (command == "show backend") return std::string("# name\nbe_web\n\n");
    if (command == "show servers state") return std::string(kServersHeader) + "\n";
    if (absl::StartsWith(command, "add server")) return std::string("New server registered.\n");
    return std::string("\n");
  }
};

TEST(HaproxyRuntimeVerifyTest, ReadBackThatDiffersFailsNamingTheServer) {
  FakeClock clock;
  IgnoringHaproxy haproxy;
  HaproxyRuntime runtime(&haproxy, &clock);

  auto report = runtime.Apply(Update("web", {Backend("web-1.1.0", "10.0.0.3", 8080, hoist::v1::BACKEND_STATE_READY)}),
                              {{"10.0.0.3", "10.0.0.3"}}, absl::Seconds(1), nullptr);

  ASSERT_EQ(report.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(report.status().message(), HasSubstr("server be_web/web-1.1.0 is missing"));
}

TEST(HaproxyRefusalTest, RefusedCommandFailsWithHaproxysAnswer) {
  FakeClock clock;
  FakeHaproxy haproxy(&clock);
  haproxy.AddBackend("be_web");
  FakeHaproxy::Server s;
  s.ip = "10.0.0.3";
  s.port = 8080;
  haproxy.At("be_web", "dup") = s;
  // Listed twice under one name is refused earlier; here HAProxy itself refuses a second add.
  class Twice final : public HaproxySocket {
   public:
    explicit Twice(FakeHaproxy* inner) : inner_(inner) {}
    absl::StatusOr<std::string> Send(absl::string_view command) override {
      if (command == "show servers state") return std::string(kServersHeader) + "\n";  // hides "dup"
      return inner_->Send(command);
    }
    FakeHaproxy* inner_;
  } twice(&haproxy);
  HaproxyRuntime runtime(&twice, &clock);

  auto report = runtime.Apply(Update("web", {Backend("dup", "10.0.0.3", 8080, hoist::v1::BACKEND_STATE_READY)}),
                              {{"10.0.0.3", "10.0.0.3"}}, absl::Seconds(1), nullptr);

  ASSERT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(report.status().message(),
              HasSubstr("HAProxy refused `add server be_web/dup 10.0.0.3:8080`: Already exists a server"));
}

TEST(HaproxyParseTest, ServersStateFromHaproxy26) {
  std::string text = std::string(kServersHeader) +
                     "3 be_web 1 s1 127.0.0.1 2 4 1 1 0 1 0 0 8 0 0 0 - 9 - 0 0 - - 0\n"
                     "3 be_web 2 s2 10.1.2.3 2 8 1 1 0 1 0 2 0 0 0 0 - 10 - 0 0 - - 0\n"
                     "3 be_web 3 s3 - 0 1 1 1 0 1 0 0 0 0 0 0 name.invalid 11 - 0 0 - - 0\n\n";

  auto servers = ParseServersState(text);

  ASSERT_TRUE(servers.ok()) << servers.status();
  ASSERT_EQ(servers->size(), 3u);
  // "disabled" in the configuration (0x04) but set ready at runtime: serving.
  EXPECT_EQ((*servers)[0].state, hoist::v1::BACKEND_STATE_READY);
  EXPECT_EQ((*servers)[0].port, 9u);
  EXPECT_EQ((*servers)[1].address, "10.1.2.3");
  EXPECT_EQ((*servers)[1].state, hoist::v1::BACKEND_STATE_DRAIN);
  EXPECT_EQ((*servers)[2].address, "");
  EXPECT_EQ((*servers)[2].state, hoist::v1::BACKEND_STATE_MAINT);
}

TEST(HaproxyParseTest, ServersStateOfAnotherFormatIsAnError) {
  EXPECT_EQ(ParseServersState("2\n# be_id\n").status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(ParseServersState("No such backend.\n").status().code(), absl::StatusCode::kInternal);
}

TEST(HaproxyParseTest, CurrentSessionsSkipFrontendsAndBackends) {
  auto sessions = ParseCurrentSessions(
      "# pxname,svname,qcur,qmax,scur,smax\nfe_web,FRONTEND,,,7,9\nbe_web,a,0,0,2,3\nbe_web,b,0,0,0,1\n"
      "be_web,BACKEND,0,0,2,3\n\n");

  ASSERT_TRUE(sessions.ok()) << sessions.status();
  EXPECT_EQ(*sessions, (std::map<std::string, int>{{"be_web/a", 2}, {"be_web/b", 0}}));
}

TEST(HaproxyConfigTest, RendersFrontendBackendAndRuntimeApiPerRoute) {
  hoist::v1::ProxyConfig config;
  auto* f = config.add_frontends();
  f->set_route("web");
  f->set_listen_port(8080);
  HaproxyServer ready{"be_web", "web-a", "10.0.0.2", 8080, 0, hoist::v1::BACKEND_STATE_READY};
  HaproxyServer draining{"be_web", "web-b", "10.0.0.3", 8080, 8, hoist::v1::BACKEND_STATE_DRAIN};

  std::string text = RenderHaproxyConfig(config, {ready, draining});

  // The runtime API is a unix socket, never a TCP port app containers could reach.
  EXPECT_THAT(text, HasSubstr("stats socket /run/hoist-proxy/admin.sock mode 666 level admin\n"));
  EXPECT_THAT(text, Not(HasSubstr("ipv4@")));
  EXPECT_THAT(text, HasSubstr("frontend fe_web\n    bind :8080\n    default_backend be_web\n"));
  EXPECT_THAT(text, HasSubstr("    server web-a 10.0.0.2:8080\n    server web-b 10.0.0.3:8080 disabled\n"));
}

TEST(HaproxyValidateTest, BadNamesPortsAndClashesAreNamed) {
  hoist::v1::ProxyConfig config;
  auto* f = config.add_frontends();
  f->set_route("web");
  f->set_listen_port(kHaproxyRuntimePort);
  EXPECT_THAT(ValidateProxyConfig("start_instance.proxy", config).message(),
              HasSubstr("start_instance.proxy.frontends[0].listen_port: port 9999 is the proxy's runtime API"));

  hoist::v1::ProxyUpdate update = Update("web", {Backend("web a", "10.0.0.2", 8080, hoist::v1::BACKEND_STATE_READY)});
  EXPECT_THAT(ValidateProxyUpdate(update).message(), HasSubstr("proxy_update.routes[0].backends[0].name"));
  update = Update("web", {Backend("web", "10.0.0.2;rm", 8080, hoist::v1::BACKEND_STATE_READY)});
  EXPECT_THAT(ValidateProxyUpdate(update).message(), HasSubstr("proxy_update.routes[0].backends[0].address"));
  update = Update("web", {Backend("web", "10.0.0.2", 0, hoist::v1::BACKEND_STATE_READY)});
  EXPECT_THAT(ValidateProxyUpdate(update).message(), HasSubstr("proxy_update.routes[0].backends[0].port"));
  update.clear_service();
  EXPECT_THAT(ValidateProxyUpdate(update).message(), HasSubstr("proxy_update.service: missing"));
}

TEST(TarArchiveTest, TarReadsBackTheFile) {
  auto dir = hoist::testing::MakeOwnedTempDir("hoist-tar-test");
  ASSERT_TRUE(dir.ok()) << dir.status();
  std::string path = *dir + "/config.tar";
  ASSERT_TRUE(WriteFileAtomic(path, TarArchive({{"haproxy.cfg", "global\n    maxconn 64\n", 0644}})).ok());

  auto listed = RunCommand({"tar", "-tvf", path});
  auto content = RunCommand({"tar", "-xOf", path, "haproxy.cfg"});

  ASSERT_TRUE(listed.ok() && content.ok());
  EXPECT_EQ(listed->exit_code, 0) << listed->stderr_text;
  EXPECT_THAT(listed->stdout_text, HasSubstr("-rw-r--r--"));
  EXPECT_EQ(content->stdout_text, "global\n    maxconn 64\n");
  hoist::testing::RemoveTree(*dir);
}

}  // namespace
}  // namespace hoist::agent
