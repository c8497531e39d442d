// The Docker client against FakeDockerEngine: error mapping, version
// negotiation, the JSON it sends, and the streams it parses.

#include "agent/docker/docker_client.h"
#include "agent/health_probe.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/fake_docker_engine.h"
#include "tests/fixtures/temp_dir.h"

namespace hoist::docker {
namespace {

using ::hoist::testing::FakeDockerEngine;
using ::hoist::testing::FakeResponse;
using ::hoist::testing::MultiplexedFrame;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The decoded value of query parameter `key` in a request target.
std::string QueryParam(absl::string_view target, absl::string_view key) {
  absl::string_view query = target.substr(target.find('?') + 1);
  for (absl::string_view pair : absl::StrSplit(query, '&')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (kv.first == key) return PercentDecode(kv.second);
  }
  return "<absent>";
}

std::string Message(absl::string_view message) { return json{{"message", std::string(message)}}.dump(); }

class DockerClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto engine = FakeDockerEngine::Start();
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    engine_->OnVersion("1.41");
    client_ = std::make_unique<DockerClient>(
        DockerClientOptions{.socket_path = engine_->socket_path(), .request_timeout = absl::Seconds(10), .clock = &clock_});
  }

  hoist::testing::FakeClock clock_;
  std::unique_ptr<FakeDockerEngine> engine_;
  std::unique_ptr<DockerClient> client_;
};

TEST(DockerClientDownTest, MissingSocketIsUnavailableAndNamesThePath) {
  auto dir = hoist::testing::MakeOwnedTempDir("hoist-docker-down");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string path = *dir + "/docker.sock";
  DockerClient client(path);
  auto version = client.Version();
  EXPECT_EQ(version.status().code(), absl::StatusCode::kUnavailable) << version.status();
  EXPECT_THAT(version.status().message(), HasSubstr("not reachable at " + path));
  EXPECT_THAT(version.status().message(), HasSubstr("does not exist"));
  // Every call negotiates first, so every call says the same.
  EXPECT_EQ(client.Start("web").code(), absl::StatusCode::kUnavailable);
  hoist::testing::RemoveTree(*dir);
}

TEST(DockerClientDownTest, SocketWithoutListenerIsUnavailableRefused) {
  auto dir = hoist::testing::MakeOwnedTempDir("hoist-docker-down");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string path = *dir + "/docker.sock";
  // A socket file nobody listens on any more, as a crashed dockerd leaves.
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);
  DockerClient client(path);
  auto version = client.Version();
  EXPECT_EQ(version.status().code(), absl::StatusCode::kUnavailable) << version.status();
  EXPECT_THAT(version.status().message(), HasSubstr("connection refused"));
  hoist::testing::RemoveTree(*dir);
}

TEST_F(DockerClientTest, NotFoundCarriesDockersMessage) {
  engine_->On("GET", "/v1.41/containers/ghost/json", {.status = 404, .body = Message("No such container: ghost")});
  auto info = client_->Inspect("ghost");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr("No such container: ghost"));
}

TEST_F(DockerClientTest, ConflictOnCreateIsAlreadyExists) {
  engine_->On("POST", "/v1.41/containers/create",
              {.status = 409, .body = Message("Conflict. The container name \"/api-1\" is already in use")});
  auto id = client_->Create({.name = "api-1", .image = "reg/api:1.0.0"});
  EXPECT_EQ(id.status().code(), absl::StatusCode::kAlreadyExists) << id.status();
  EXPECT_THAT(id.status().message(), HasSubstr("is already in use"));
}

TEST_F(DockerClientTest, ConflictElsewhereIsFailedPrecondition) {
  engine_->On("POST", "/v1.41/containers/api-1/kill",
              {.status = 409, .body = Message("Container api-1 is not running")});
  absl::Status s = client_->Kill("api-1");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("is not running"));
}

TEST_F(DockerClientTest, ServerErrorIsInternalWithMessage) {
  engine_->On("POST", "/v1.41/containers/api-1/start",
              {.status = 500, .body = Message("driver failed programming external connectivity")});
  absl::Status s = client_->Start("api-1");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_THAT(s.message(), HasSubstr("driver failed programming external connectivity"));
}

TEST_F(DockerClientTest, AlreadyStartedAndAlreadyStoppedAreOk) {
  engine_->On("POST", "/v1.41/containers/api-1/start", {.status = 304, .content_type = ""});
  engine_->On("POST", "/v1.41/containers/api-1/stop", {.status = 304, .content_type = ""});
  EXPECT_TRUE(client_->Start("api-1").ok());
  EXPECT_TRUE(client_->Stop("api-1", absl::Milliseconds(1500)).ok());
  auto stop = engine_->LastRequest("POST", "/v1.41/containers/api-1/stop");
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(QueryParam(stop->target, "t"), "2");  // rounded up to whole seconds
}

TEST_F(DockerClientTest, MalformedJsonIsInternalNamingTheEndpoint) {
  engine_->On("GET", "/v1.41/containers/api-1/json", {.body = R"({"Id": "abc", "Name)"});
  auto info = client_->Inspect("api-1");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr("GET /v1.41/containers/api-1/json"));
}

TEST_F(DockerClientTest, AnswerCutMidBodyIsInternalNamingTheEndpoint) {
  std::string body = json{{"Id", "abc"}, {"Name", "/api-1"}}.dump();
  engine_->On("GET", "/v1.41/containers/api-1/json", {.body = body, .cut_after = body.size() / 2});
  auto info = client_->Inspect("api-1");
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal) << info.status();
  EXPECT_THAT(info.status().message(), HasSubstr("GET /v1.41/containers/api-1/json"));
}

TEST_F(DockerClientTest, WaitPastItsTimeoutIsDeadlineExceeded) {
  engine_->On("POST", "/v1.41/containers/job-1/wait", {.hang = true});
  auto code = client_->Wait("job-1", absl::Milliseconds(300));
  EXPECT_EQ(code.status().code(), absl::StatusCode::kDeadlineExceeded) << code.status();
  EXPECT_THAT(code.status().message(), HasSubstr("job-1 did not exit within"));
}

TEST_F(DockerClientTest, WaitReturnsTheExitCode) {
  engine_->On("POST", "/v1.41/containers/job-1/wait", {.body = R"({"StatusCode":3,"Error":null})"});
  auto code = client_->Wait("job-1", absl::Seconds(5));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 3);
}

TEST(ImageReferenceTest, SplitsRegistryPortsTagsAndDigests) {
  auto a = ParseImageReference("127.0.0.1:5000/app/api:1.0.0");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->repository, "127.0.0.1:5000/app/api");
  EXPECT_EQ(a->tag, "1.0.0");

  auto b = ParseImageReference("127.0.0.1:5000/app/api@sha256:0123abcd");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->repository, "127.0.0.1:5000/app/api");
  EXPECT_EQ(b->tag, "sha256:0123abcd");

  auto c = ParseImageReference("app/api:1.0.0@sha256:0123abcd");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->repository, "app/api");
  EXPECT_EQ(c->tag, "sha256:0123abcd");

  EXPECT_EQ(ParseImageReference("127.0.0.1:5000/app/api").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseImageReference("api").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseImageReference("api:1 0").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DockerClientTest, PullParsesProgressPerLayerAcrossChunkBoundaries) {
  std::string stream =
      R"({"status":"Pulling from app/api","id":"1.0.0"})"
      "\r\n"
      R"({"status":"Already exists","progressDetail":{},"id":"aaa"})"
      "\r\n"
      R"({"status":"Pulling fs layer","progressDetail":{},"id":"bbb"})"
      "\r\n"
      R"({"status":"Pulling fs layer","progressDetail":{},"id":"ccc"})"
      "\r\n"
      R"({"status":"Downloading","progressDetail":{"current":50,"total":100},"progress":"[==>  ]","id":"bbb"})"
      "\r\n"
      R"({"status":"Downloading","progressDetail":{"current":30,"total":200},"id":"ccc"})"
      "\r\n"
      R"({"status":"Download complete","progressDetail":{},"id":"bbb"})"
      "\r\n"
      R"({"status":"Extracting","progressDetail":{"current":10,"total":100},"id":"bbb"})"
      "\r\n"
      R"({"status":"Pull complete","progressDetail":{},"id":"bbb"})"
      "\r\n"
      R"({"status":"Digest: sha256:0123"})"
      "\r\n"
      R"({"status":"Status: Downloaded newer image for 127.0.0.1:5000/app/api:1.0.0"})"
      "\r\n";
  // Chunks of 7 bytes cut lines anywhere, as a socket may.
  std::vector<std::string> chunks;
  for (size_t i = 0; i < stream.size(); i += 7) chunks.push_back(stream.substr(i, 7));
  engine_->On("POST", "/v1.41/images/create", {.chunks = chunks});

  std::vector<PullProgress> reports;
  absl::Status s = client_->Pull("127.0.0.1:5000/app/api:1.0.0",
                                 [&](const PullProgress& p) { reports.push_back(p); });
  ASSERT_TRUE(s.ok()) << s;
  // The fake clock never moves: the first report and the final one only.
  ASSERT_EQ(reports.size(), 2u);
  const PullProgress& last = reports.back();
  EXPECT_EQ(last.layers_total, 3u);
  EXPECT_EQ(last.layers_done, 2u);  // "Already exists" and "Pull complete"
  EXPECT_EQ(last.bytes_total, 300u);
  EXPECT_EQ(last.bytes_done, 130u);

  auto request = engine_->LastRequest("POST", "/v1.41/images/create");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(QueryParam(request->target, "fromImage"), "127.0.0.1:5000/app/api");
  EXPECT_EQ(QueryParam(request->target, "tag"), "1.0.0");
}

TEST_F(DockerClientTest, PullByDigestSendsTheDigestAsTag) {
  engine_->On("POST", "/v1.41/images/create", {.chunks = {R"({"status":"Digest: sha256:0123"})" "\r\n"}});
  ASSERT_TRUE(client_->Pull("127.0.0.1:5000/app/api@sha256:0123", nullptr).ok());
  auto request = engine_->LastRequest("POST", "/v1.41/images/create");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(QueryParam(request->target, "fromImage"), "127.0.0.1:5000/app/api");
  EXPECT_EQ(QueryParam(request->target, "tag"), "sha256:0123");
}

TEST_F(DockerClientTest, ErrorLineInsidePullStreamIsAFailure) {
  engine_->On("POST", "/v1.41/images/create",
              {.chunks = {R"({"status":"Pulling from app/api","id":"9.9.9"})" "\r\n",
                          R"({"errorDetail":{"message":"manifest for 127.0.0.1:5000/app/api:9.9.9 not found: manifest unknown"},)"
                          R"("error":"manifest for 127.0.0.1:5000/app/api:9.9.9 not found: manifest unknown"})" "\r\n"}});
  absl::Status s = client_->Pull("127.0.0.1:5000/app/api:9.9.9", nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("manifest unknown"));
}

TEST_F(DockerClientTest, RegistryDownInsidePullStreamIsUnavailable) {
  engine_->On("POST", "/v1.41/images/create",
              {.chunks = {R"({"error":"Get \"http://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused"})" "\n"}});
  absl::Status s = client_->Pull("127.0.0.1:5000/app/api:1.0.0", nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr("connection refused"));
}

TEST_F(DockerClientTest, GarbageInsidePullStreamIsInternal) {
  engine_->On("POST", "/v1.41/images/create", {.chunks = {"{\"status\":\"Pulling\"}\r\n", "not json\r\n"}});
  absl::Status s = client_->Pull("app/api:1.0.0", nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_THAT(s.message(), HasSubstr("/images/create"));
}

TEST(DockerClientVersionTest, NegotiatesTheLowerOfServerAndClientAndAsksOnce) {
  for (auto [server, want] : std::vector<std::pair<std::string, std::string>>{{"1.43", "1.41"}, {"1.40", "1.40"}}) {
    auto engine = FakeDockerEngine::Start();
    ASSERT_TRUE(engine.ok()) << engine.status();
    (*engine)->OnVersion(server);
    (*engine)->On("POST", absl::StrCat("/v", want, "/containers/api-1/start"), {.status = 204});
    DockerClient client((*engine)->socket_path());
    EXPECT_TRUE(client.Start("api-1").ok()) << "server " << server;
    EXPECT_TRUE(client.Start("api-1").ok()) << "server " << server;
    auto api = client.ApiVersion();
    ASSERT_TRUE(api.ok()) << api.status();
    EXPECT_EQ(*api, want) << "server " << server;
    int version_calls = 0;
    for (const auto& r : (*engine)->Requests()) version_calls += r.target == "/version" ? 1 : 0;
    EXPECT_EQ(version_calls, 1) << "server " << server;
  }
}

TEST(DockerClientVersionTest, RefusesServersTooOldOrTooNew) {
  auto engine = FakeDockerEngine::Start();
  ASSERT_TRUE(engine.ok()) << engine.status();
  DockerClient client((*engine)->socket_path());

  (*engine)->OnVersion("1.39");
  absl::Status old = client.Start("api-1");
  EXPECT_EQ(old.code(), absl::StatusCode::kFailedPrecondition) << old;
  EXPECT_THAT(old.message(), HasSubstr("1.39"));
  EXPECT_THAT(old.message(), HasSubstr("1.40 or newer"));

  (*engine)->OnVersion("1.47", "1.44");
  absl::Status too_new = client.Start("api-1");
  EXPECT_EQ(too_new.code(), absl::StatusCode::kFailedPrecondition) << too_new;
  EXPECT_THAT(too_new.message(), HasSubstr("1.44 or newer only"));
}

TEST_F(DockerClientTest, CreateSendsTheWholeSpec) {
  engine_->On("POST", "/v1.41/containers/create", {.status = 201, .body = R"({"Id":"c0ffee","Warnings":[]})"});
  ContainerSpec spec;
  spec.name = "app-api-blue-0";
  spec.image = "127.0.0.1:5000/app/api:1.0.0";
  spec.command = {"serve", "--port", "8080"};
  spec.env = {{"DATABASE_URL", "postgres://secret"}, {"MODE", "prod"}};
  spec.ports = {{.container_port = 8080, .host_port = 0, .host_ip = "127.0.0.1"},
                {.container_port = 9090, .host_port = 19090, .protocol = "udp"}};
  spec.mounts = {{.source = "app-data", .target = "/data"}, {.source = "/etc/app", .target = "/config", .read_only = true}};
  spec.network = "app-net";
  spec.network_aliases = {"api"};
  spec.labels = {{"hoist.managed", "true"}, {"hoist.service", "api"}};
  spec.restart_policy = "unless-stopped";
  spec.healthcheck = HealthConfig{.test = {"/testsvc", "probe", "http://127.0.0.1:8080/health"},
                                  .interval = absl::Milliseconds(1500),
                                  .timeout = absl::Seconds(2),
                                  .start_period = absl::Seconds(5),
                                  .retries = 4};
  spec.stop_timeout = absl::Milliseconds(9500);
  auto id = client_->Create(spec);
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "c0ffee");

  auto request = engine_->LastRequest("POST", "/v1.41/containers/create");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(QueryParam(request->target, "name"), "app-api-blue-0");
  EXPECT_EQ(request->headers["content-type"], "application/json");
  json body = json::parse(request->body);
  EXPECT_EQ(body["Image"], spec.image);
  EXPECT_EQ(body["Cmd"], json({"serve", "--port", "8080"}));
  EXPECT_EQ(body["Env"], json({"DATABASE_URL=postgres://secret", "MODE=prod"}));
  EXPECT_EQ(body["Labels"], json({{"hoist.managed", "true"}, {"hoist.service", "api"}}));
  EXPECT_EQ(body["ExposedPorts"], json({{"8080/tcp", json::object()}, {"9090/udp", json::object()}}));
  const json& host = body["HostConfig"];
  EXPECT_EQ(host["PortBindings"]["8080/tcp"], json::parse(R"([{"HostIp":"127.0.0.1","HostPort":""}])"));
  EXPECT_EQ(host["PortBindings"]["9090/udp"], json::parse(R"([{"HostIp":"","HostPort":"19090"}])"));
  EXPECT_EQ(host["Mounts"], json::parse(R"([
      {"Type":"volume","Source":"app-data","Target":"/data","ReadOnly":false},
      {"Type":"bind","Source":"/etc/app","Target":"/config","ReadOnly":true}])"));
  EXPECT_EQ(host["RestartPolicy"]["Name"], "unless-stopped");
  EXPECT_EQ(host["Privileged"], false);
  EXPECT_EQ(host["NetworkMode"], "app-net");
  EXPECT_EQ(body["NetworkingConfig"]["EndpointsConfig"]["app-net"]["Aliases"], json({"api"}));
  EXPECT_EQ(body["Healthcheck"], json::parse(R"({
      "Test":["CMD","/testsvc","probe","http://127.0.0.1:8080/health"],
      "Interval":1500000000,"Timeout":2000000000,"StartPeriod":5000000000,"Retries":4})"));
  EXPECT_EQ(body["StopTimeout"], 10);
}

TEST_F(DockerClientTest, CreateRefusesABadSpecWithoutCallingDocker) {
  ContainerSpec spec{.name = "x", .image = "app/api:1"};
  spec.mounts = {{.source = "data", .target = "relative"}};
  auto id = client_->Create(spec);
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << id.status();
  EXPECT_THAT(id.status().message(), HasSubstr("absolute target"));
  EXPECT_FALSE(engine_->LastRequest("POST", "/v1.41/containers/create").has_value());
}

TEST_F(DockerClientTest, LogsAreDemultiplexed) {
  engine_->On("GET", "/v1.41/containers/job-1/json", {.body = R"({"Id":"j1","Config":{"Tty":false}})"});
  engine_->On("GET", "/v1.41/containers/job-1/logs",
              {.content_type = "application/vnd.docker.raw-stream",
               .chunks = {MultiplexedFrame(1, "migrating\n").substr(0, 5),
                          MultiplexedFrame(1, "migrating\n").substr(5) + MultiplexedFrame(2, "boom\n"),
                          MultiplexedFrame(1, "exit 1\n")}});
  auto logs = client_->Logs("job-1", 50);
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(*logs, "migrating\nboom\nexit 1\n");
  auto request = engine_->LastRequest("GET", "/v1.41/containers/job-1/logs");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(QueryParam(request->target, "tail"), "50");
}

TEST_F(DockerClientTest, LogsOfATtyContainerAreRaw) {
  engine_->On("GET", "/v1.41/containers/tty-1/json", {.body = R"({"Id":"t1","Config":{"Tty":true}})"});
  engine_->On("GET", "/v1.41/containers/tty-1/logs", {.body = "plain text\r\n"});
  auto logs = client_->Logs("tty-1", -1);
  ASSERT_TRUE(logs.ok()) << logs.status();
  EXPECT_EQ(*logs, "plain text\r\n");
}

TEST_F(DockerClientTest, LogsCutInsideAFrameAreInternal) {
  engine_->On("GET", "/v1.41/containers/job-1/json", {.body = R"({"Id":"j1","Config":{"Tty":false}})"});
  engine_->On("GET", "/v1.41/containers/job-1/logs", {.body = MultiplexedFrame(1, "half a line").substr(0, 12)});
  auto logs = client_->Logs("job-1", 10);
  EXPECT_EQ(logs.status().code(), absl::StatusCode::kInternal) << logs.status();
  EXPECT_THAT(logs.status().message(), HasSubstr("ended inside a frame"));
}

TEST_F(DockerClientTest, ExecWritesStdinHalfClosesAndDemultiplexes) {
  engine_->On("POST", "/v1.41/containers/db-0/exec", {.status = 201, .body = R"({"Id":"e1"})"});
  engine_->On("POST", "/v1.41/exec/e1/start",
              {.status = 101,
               .content_type = "application/vnd.docker.raw-stream",
               .body = MultiplexedFrame(1, "restored 3 tables\n") + MultiplexedFrame(2, "warning: slow\n"),
               .read_until_half_close = true});
  engine_->On("GET", "/v1.41/exec/e1/json", {.body = R"({"Running":false,"ExitCode":3})"});
  auto result = client_->Exec("db-0", {"psql", "-f", "-"}, absl::Seconds(10), nullptr, "SELECT 1;\n");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_EQ(result->output, "restored 3 tables\nwarning: slow\n");

  auto create = engine_->LastRequest("POST", "/v1.41/containers/db-0/exec");
  ASSERT_TRUE(create.has_value());
  json body = json::parse(create->body);
  EXPECT_EQ(body["Cmd"], json({"psql", "-f", "-"}));
  EXPECT_EQ(body["AttachStdin"], true);
  auto start = engine_->LastRequest("POST", "/v1.41/exec/e1/start");
  ASSERT_TRUE(start.has_value());
  EXPECT_EQ(start->headers["upgrade"], "tcp");
  // The fake read until the client half-closed: stdin arrived whole.
  EXPECT_EQ(start->upgraded_input, "SELECT 1;\n");
}

TEST_F(DockerClientTest, ExecStreamsStdoutToTheSink) {
  engine_->On("POST", "/v1.41/containers/db-0/exec", {.status = 201, .body = R"({"Id":"e2"})"});
  engine_->On("POST", "/v1.41/exec/e2/start",
              {.status = 101,
               .body = MultiplexedFrame(1, "dump part 1|") + MultiplexedFrame(2, "pg_dump: done\n") +
                       MultiplexedFrame(1, "dump part 2")});
  engine_->On("GET", "/v1.41/exec/e2/json", {.body = R"({"Running":false,"ExitCode":0})"});
  std::string sunk;
  auto result = client_->Exec("db-0", {"pg_dump", "app"}, absl::Seconds(10), [&](absl::string_view data) {
    sunk.append(data.data(), data.size());
    return absl::OkStatus();
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(sunk, "dump part 1|dump part 2");
  EXPECT_EQ(result->output, "pg_dump: done\n");
  auto create = engine_->LastRequest("POST", "/v1.41/containers/db-0/exec");
  ASSERT_TRUE(create.has_value());
  EXPECT_EQ(json::parse(create->body)["AttachStdin"], false);
}

TEST_F(DockerClientTest, ExecStartErrorCarriesDockersMessage) {
  engine_->On("POST", "/v1.41/containers/db-0/exec", {.status = 201, .body = R"({"Id":"e3"})"});
  engine_->On("POST", "/v1.41/exec/e3/start", {.status = 409, .body = Message("container db-0 is paused")});
  auto result = client_->Exec("db-0", {"true"}, absl::Seconds(10));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("container db-0 is paused"));
}

TEST_F(DockerClientTest, InspectReadsStateHealthPortsAndNetworks) {
  engine_->On("GET", "/v1.41/containers/api-1/json", {.body = R"({
      "Id":"abc123","Name":"/api-1","Image":"sha256:img","Created":"2026-01-02T03:04:05.123456789Z",
      "Config":{"Image":"reg/api:1.0.0","Labels":{"hoist.service":"api"},"Tty":false},
      "State":{"Status":"running","ExitCode":0,"StartedAt":"2026-01-02T03:04:06Z","Health":{"Status":"healthy"}},
      "NetworkSettings":{"Ports":{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":"49153"}],"9000/tcp":null,
                                  "9090/tcp":[{"HostIp":"0.0.0.0","HostPort":"19090"}]},
                         "Networks":{"bridge":{"IPAddress":"172.17.0.5"}}}})"});
  auto info = client_->Inspect("api-1");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->id, "abc123");
  EXPECT_EQ(info->name, "api-1");
  EXPECT_EQ(info->image, "reg/api:1.0.0");
  EXPECT_EQ(info->image_id, "sha256:img");
  EXPECT_EQ(info->state, "running");
  EXPECT_EQ(info->health, "healthy");
  EXPECT_EQ(info->labels.at("hoist.service"), "api");
  EXPECT_EQ(info->published_ports, (std::map<std::string, uint16_t>{{"8080/tcp", 49153}, {"9090/tcp", 19090}}));
  EXPECT_EQ(info->published_ips, (std::map<std::string, std::string>{{"8080/tcp", "127.0.0.1"}}))
      << "0.0.0.0 binds every address: no specific one is recorded";
  EXPECT_EQ(info->network_ips.at("bridge"), "172.17.0.5");
  EXPECT_EQ(info->started_at, absl::FromUnixSeconds(1767323046));
}

TEST_F(DockerClientTest, ListSendsLabelFiltersAndReadsTheSummary) {
  engine_->On("GET", "/v1.41/containers/json", {.body = R"j([
      {"Id":"a","Names":["/api-0"],"Image":"reg/api:1","ImageID":"sha256:1","Labels":{"hoist.service":"api"},
       "State":"running","Status":"Up 3 minutes (unhealthy)","Created":1767323045,
       "Ports":[{"IP":"10.0.0.11","PrivatePort":8080,"PublicPort":49153,"Type":"tcp"},{"PrivatePort":9000,"Type":"tcp"}]},
      {"Id":"b","Names":["/job-0"],"State":"exited","Status":"Exited (2) 5 seconds ago","Created":1767323045}])j"});
  auto list = client_->List({"hoist.managed=true", "hoist.deployment=shop"});
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "api-0");
  EXPECT_EQ((*list)[0].health, "unhealthy");
  EXPECT_EQ((*list)[0].published_ports, (std::map<std::string, uint16_t>{{"8080/tcp", 49153}}));
  EXPECT_EQ((*list)[0].published_ips, (std::map<std::string, std::string>{{"8080/tcp", "10.0.0.11"}}));
  EXPECT_EQ((*list)[1].state, "exited");
  EXPECT_EQ((*list)[1].exit_code, 2);

  auto request = engine_->LastRequest("GET", "/v1.41/containers/json");
  ASSERT_TRUE(request.has_value());
  EXPECT_EQ(QueryParam(request->target, "all"), "1");
  EXPECT_EQ(json::parse(QueryParam(request->target, "filters")),
            json::parse(R"({"label":["hoist.managed=true","hoist.deployment=shop"]})"));
}

TEST_F(DockerClientTest, ArchivePutSendsTheTarFileAndGetStreamsIt) {
  auto dir = hoist::testing::MakeOwnedTempDir("hoist-archive");
  ASSERT_TRUE(dir.ok());
  const std::string tar = *dir + "/in.tar";
  std::string content(200000, 'x');
  {
    FILE* f = std::fopen(tar.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(content.data(), 1, content.size(), f);
    std::fclose(f);
  }
  engine_->On("PUT", "/v1.41/containers/vol-helper/archive", {.status = 200, .content_type = ""});
  engine_->On("GET", "/v1.41/containers/vol-helper/archive",
              {.content_type = "application/x-tar", .chunks = {"tar part 1,", "tar part 2"}});
  ASSERT_TRUE(client_->PutArchive("vol-helper", "/data", tar).ok());
  auto put = engine_->LastRequest("PUT", "/v1.41/containers/vol-helper/archive");
  ASSERT_TRUE(put.has_value());
  EXPECT_EQ(QueryParam(put->target, "path"), "/data");
  EXPECT_EQ(put->headers["content-type"], "application/x-tar");
  EXPECT_EQ(put->body.size(), content.size());
  EXPECT_EQ(put->body, content);

  std::string got;
  absl::Status s = client_->GetArchive("vol-helper", "/data", [&](absl::string_view data) {
    got.append(data.data(), data.size());
    return absl::OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got, "tar part 1,tar part 2");
  hoist::testing::RemoveTree(*dir);
}

TEST_F(DockerClientTest, ASinkErrorStopsTheTransferWithThatError) {
  engine_->On("GET", "/v1.41/containers/vol-helper/archive", {.chunks = {"a", "b", "c"}});
  absl::Status s = client_->GetArchive("vol-helper", "/data", [](absl::string_view) {
    return absl::ResourceExhaustedError("disk full");
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(s.message(), "disk full");
}

TEST_F(DockerClientTest, NamesThatWouldChangeThePathAreRefused) {
  EXPECT_EQ(client_->Start("../images/x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Remove("a?force=1", false, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(engine_->Requests().empty());
}

TEST_F(DockerClientTest, ConcurrentCallsFromSeveralThreadsAllSucceed) {
  engine_->On("POST", "/v1.41/containers/", {.status = 204, .content_type = ""});
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([this, i, &results] { results[i] = client_->Start(absl::StrCat("svc-", i)); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(results[i].ok()) << "thread " << i << ": " << results[i];
  int starts = 0;
  for (const auto& r : engine_->Requests()) starts += r.method == "POST" ? 1 : 0;
  EXPECT_EQ(starts, 8);
}

// A probe dials a published port where it is bound: a port published on one
// address (the host's, on the network between hosts) does not answer on
// loopback.
TEST(ContainerEndpointTest, DialsThePublishedPortOnTheAddressItIsBoundTo) {
  ContainerInfo c;
  c.published_ports = {{"8080/tcp", 18000}, {"9090/tcp", 19090}};
  c.published_ips = {{"8080/tcp", "10.0.0.13"}};
  c.network_ips = {{"shop", "172.18.0.2"}};
  EXPECT_EQ(agent::ContainerEndpoint(c, 8080), "10.0.0.13:18000");
  EXPECT_EQ(agent::ContainerEndpoint(c, 9090), "127.0.0.1:19090") << "bound on every address: loopback";
  EXPECT_EQ(agent::ContainerEndpoint(c, 7000), "172.18.0.2:7000") << "not published: the container's address";
}

}  // namespace
}  // namespace hoist::docker
