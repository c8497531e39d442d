// Proves the test fixtures use the real parts: a throw-away Postgres that
// answers queries, and Docker images built FROM scratch, pushed to and pulled
// from the local registry, and run.

#include <string>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "shared/http_client.h"
#include "tests/fixtures/docker_env.h"
#include "tests/fixtures/eventually.h"
#include "tests/fixtures/postgres_cluster.h"
#include "tests/fixtures/test_env.h"

namespace hoist::testing {
namespace {

using ::testing::HasSubstr;

TEST(PostgresFixtureTest, StartsAnswersAndSurvivesKillAndRestart) {
  auto cluster = PostgresCluster::Start();
  HOIST_REQUIRE_REAL_PART(cluster.status());
  {
    pqxx::connection conn((*cluster)->ConnectionString());
    pqxx::work tx(conn);
    EXPECT_EQ(tx.exec1("SELECT 40 + 2")[0].as<int>(), 42);
    tx.exec0("CREATE TABLE kept (v text)");
    tx.exec0("INSERT INTO kept VALUES ('still here')");
    tx.commit();
  }
  ASSERT_TRUE((*cluster)->Kill().ok());
  EXPECT_THROW(pqxx::connection((*cluster)->ConnectionString()), pqxx::broken_connection);
  ASSERT_TRUE((*cluster)->Restart().ok()) << (*cluster)->LogTail();
  pqxx::connection conn((*cluster)->ConnectionString());
  pqxx::work tx(conn);
  EXPECT_EQ(tx.exec1("SELECT v FROM kept")[0].as<std::string>(), "still here");
}

// Polls url until it answers with `want_status`, up to 20 s.
absl::StatusOr<HttpResponse> WaitForStatus(const std::string& url, long want_status) {
  absl::StatusOr<HttpResponse> last = absl::UnavailableError("not tried");
  const bool answered = Eventually(absl::Seconds(20), [&] {
    last = HttpGet(url, absl::Seconds(1));
    return last.ok() && last->status == want_status;
  });
  if (answered) return last;
  if (last.ok()) {
    return absl::DeadlineExceededError(absl::StrCat(url, " answered ", last->status, ", wanted ", want_status));
  }
  return last.status();
}

TEST(DockerFixtureTest, BuildsPushesPullsAndRunsTestImages) {
  auto env = DockerEnv::Start();
  HOIST_REQUIRE_REAL_PART(env.status());
  DockerEnv& d = **env;

  auto image = d.BuildTestImage("api", "1.0.0");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_THAT(*image, HasSubstr(d.registry()));

  // Drop the local copy so that the run below depends on a real pull.
  ASSERT_TRUE(d.Docker({"rmi", *image}).ok());
  auto pulled = d.Docker({"pull", *image});
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  // The pulled image lost the build label; label it again so cleanup finds it.
  auto id = d.Docker({"run", "-d", "--label", d.label(), "-p", "127.0.0.1::8080", *image});
  ASSERT_TRUE(id.ok()) << id.status();
  std::string container(absl::StripTrailingAsciiWhitespace(*id));
  auto port = d.Docker({"port", container, "8080/tcp"});
  ASSERT_TRUE(port.ok()) << port.status();
  std::string addr(absl::StripTrailingAsciiWhitespace(port->substr(0, port->find('\n'))));

  auto health = WaitForStatus(absl::StrCat("http://", addr, "/health"), 200);
  ASSERT_TRUE(health.ok()) << health.status();
  auto body = nlohmann::json::parse(health->body);
  EXPECT_EQ(body["version"], "1.0.0");
  EXPECT_EQ(body["status"], "ok");

  // The HEALTHCHECK baked into the image reaches Docker's own health status.
  absl::StatusOr<std::string> docker_health = absl::UnknownError("not inspected");
  Eventually(
      absl::Seconds(20),
      [&] {
        docker_health = d.Docker({"inspect", "--format", "{{.State.Health.Status}}", container});
        return !docker_health.ok() || absl::StripAsciiWhitespace(*docker_health) == "healthy";
      },
      absl::Milliseconds(100));
  ASSERT_TRUE(docker_health.ok()) << docker_health.status();
  EXPECT_EQ(absl::StripAsciiWhitespace(*docker_health), "healthy");

  // Told to be unhealthy, it says so.
  auto sick = d.Docker({"run", "-d", "--label", d.label(), "-e", "TESTSVC_UNHEALTHY=1", "-p",
                        "127.0.0.1::8080", *image});
  ASSERT_TRUE(sick.ok()) << sick.status();
  auto sick_port = d.Docker({"port", std::string(absl::StripTrailingAsciiWhitespace(*sick)), "8080/tcp"});
  ASSERT_TRUE(sick_port.ok());
  std::string sick_addr(absl::StripTrailingAsciiWhitespace(sick_port->substr(0, sick_port->find('\n'))));
  EXPECT_TRUE(WaitForStatus(absl::StrCat("http://", sick_addr, "/health"), 503).ok());

  // Cleanup by label leaves nothing of this run behind.
  ASSERT_EQ(*d.CountRunContainers(), 2);
  ASSERT_TRUE(d.Cleanup().ok());
  EXPECT_EQ(*d.CountRunContainers(), 0);
  auto images = d.Docker({"images", "-q", "--filter", absl::StrCat("label=", d.label())});
  ASSERT_TRUE(images.ok());
  EXPECT_EQ(absl::StripAsciiWhitespace(*images), "");
}

}  // namespace
}  // namespace hoist::testing
