// testsvc: the tiny, scriptable HTTP service used by the Hoist test fixtures.
//
// Hoist's integration tests need an application whose misbehaviour they can
// dial in: slow starts, failing or flapping health checks, crashes, slow
// requests and one-shot migration jobs. The fixtures compile this file
// statically and bake it into FROM-scratch images, so it may rely on nothing
// but libc and the C++ standard library. That rules out getaddrinfo for
// names (it needs NSS, which a static binary lacks), so a URL's host is a
// numeric IPv4 address or a name looked up with one DNS query (an A record)
// to the first nameserver of /etc/resolv.conf (Docker's embedded DNS on a
// user network, where service names resolve), and there is no curl in the image for HEALTHCHECKs or smoke tests, hence the
// `probe` and `get` commands.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kMaxConnections = 512;
constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 1024 * 1024;
constexpr int kMaxDelayMs = 24 * 60 * 60 * 1000;
// Blocking waits are sliced this finely so that shutdown is noticed quickly.
constexpr int kPollIntervalMs = 100;
constexpr milliseconds kIdleTimeout{60'000};
constexpr milliseconds kDrainTimeout{10'000};
constexpr int kSendTimeoutMs = 10'000;
constexpr int kProbeTimeoutMs = 2'000;
// `get` is pointed at deliberately slow endpoints, so it waits longer.
constexpr int kGetTimeoutMs = 10'000;
constexpr char kTextPlain[] = "text/plain; charset=utf-8";

constexpr char kUsage[] = R"(usage: testsvc [serve] [flags]  (the default)
  --port N               TESTSVC_PORT, default 8080
  --version V            TESTSVC_VERSION, default 0.0.0
  --role R               TESTSVC_ROLE, default app
  --start-delay-ms N     TESTSVC_START_DELAY_MS: sleep before listening
  --data-file PATH       TESTSVC_DATA_FILE: on start, before listening,
                         append "<role> <version> migrated" to PATH (the
                         stand-in for an app's start-up migrations)
  --unhealthy            TESTSVC_UNHEALTHY=1: /health starts out 503
  --exit-after-ms N      TESTSVC_EXIT_AFTER_MS: exit after N ms (crash)
  --exit-code C          TESTSVC_EXIT_CODE: code for that exit, default 1
  --response-delay-ms N  TESTSVC_RESPONSE_DELAY_MS: delay each GET /
       testsvc job [--exit-code N] [--print TEXT]... [--sleep-ms N]
                         print TEXTs and version=$TESTSVC_VERSION, sleep
       testsvc probe URL GET within 2 s; exit 0 on 2xx, else 1
       testsvc exec PROGRAM [ARG]...
                         replace testsvc with PROGRAM (an absolute path),
                         so that an image whose entrypoint is testsvc can
                         run another program it carries (psql for a
                         migration); exit 127 if it cannot be run
       testsvc get URL   GET and print the body; exit 0 on 2xx, else 1
Flags also take --flag=value and override the env vars. A URL's host is a
numeric IPv4 address, localhost, or a name asked of the nameserver in
/etc/resolv.conf (an A record), e.g. http://api:8080/version. Endpoints:
GET / /health /version; POST /control/healthy /control/unhealthy
/control/exit?code=N.
)";

// Set by the SIGTERM/SIGINT handler; everything else polls it.
std::atomic<bool> g_shutdown_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free,
              "the signal handler needs a lock-free flag");

void Log(const std::string& message) {
  // A single fputs per line keeps lines from concurrent threads intact.
  std::fputs(("testsvc: " + message + "\n").c_str(), stderr);
}

[[noreturn]] void UsageError(const std::string& message) {
  Log(message + " (see testsvc --help)");
  std::exit(2);
}

[[noreturn]] void PrintUsageAndExit() {
  std::fputs(kUsage, stdout);
  std::exit(0);
}

std::optional<int> ToInt(std::string_view text, int min, int max) {
  int value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < min ||
      value > max) {
    return std::nullopt;
  }
  return value;
}

int ParseIntOrDie(std::string_view text, int min, int max,
                  const std::string& what) {
  std::optional<int> value = ToInt(text, min, max);
  if (!value) {
    UsageError(what + " expects an integer in [" + std::to_string(min) +
               ", " + std::to_string(max) + "], got \"" + std::string(text) +
               "\"");
  }
  return *value;
}

std::optional<std::string> Env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string_view Trim(std::string_view text) {
  size_t begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(" \t") - begin + 1);
}

// Matches "--name value" and "--name=value", advancing *i past a separate
// value. Values may start with "-" so that `--print -x` works.
bool TakeFlag(const std::vector<std::string>& args, size_t* i,
              std::string_view name, std::string* value) {
  const std::string& arg = args[*i];
  if (arg == name) {
    if (*i + 1 >= args.size()) {
      UsageError(std::string(name) + " expects a value");
    }
    *value = args[++*i];
    return true;
  }
  if (arg.starts_with(name) && arg.size() > name.size() &&
      arg[name.size()] == '=') {
    *value = arg.substr(name.size() + 1);
    return true;
  }
  return false;
}

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t sent = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return false;
    data.remove_prefix(static_cast<size_t>(sent));
  }
  return true;
}

void SetSocketTimeout(int fd, int option, int ms) {
  timeval timeout{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, option, &timeout, sizeof timeout);
}

// ---------------------------------------------------------------------------
// serve

struct ServeConfig {
  int port = 8080;
  std::string version = "0.0.0";
  std::string role = "app";
  int start_delay_ms = 0;
  bool unhealthy = false;
  int exit_after_ms = -1;  // Negative: never.
  int exit_code = 1;       // A simulated crash should look like a failure.
  int response_delay_ms = 0;
  std::string data_file;
};

// A numeric serve option, settable by flag or environment variable.
struct IntOption {
  const char* flag;
  const char* env;
  int min;
  int max;
  int ServeConfig::*field;
};

constexpr IntOption kIntOptions[] = {
    {"--port", "TESTSVC_PORT", 1, 65535, &ServeConfig::port},
    {"--start-delay-ms", "TESTSVC_START_DELAY_MS", 0, kMaxDelayMs,
     &ServeConfig::start_delay_ms},
    {"--exit-after-ms", "TESTSVC_EXIT_AFTER_MS", 0, kMaxDelayMs,
     &ServeConfig::exit_after_ms},
    {"--exit-code", "TESTSVC_EXIT_CODE", 0, 255, &ServeConfig::exit_code},
    {"--response-delay-ms", "TESTSVC_RESPONSE_DELAY_MS", 0, kMaxDelayMs,
     &ServeConfig::response_delay_ms},
};

ServeConfig ParseServeConfig(const std::vector<std::string>& args) {
  ServeConfig config;
  // Environment first, so that the flags parsed afterwards win.
  for (const IntOption& option : kIntOptions) {
    if (std::optional<std::string> value = Env(option.env)) {
      config.*option.field =
          ParseIntOrDie(*value, option.min, option.max, option.env);
    }
  }
  if (auto value = Env("TESTSVC_VERSION")) config.version = *value;
  if (auto value = Env("TESTSVC_ROLE")) config.role = *value;
  if (auto value = Env("TESTSVC_DATA_FILE")) config.data_file = *value;
  if (auto value = Env("TESTSVC_UNHEALTHY")) {
    config.unhealthy = *value == "1" || *value == "true";
  }
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") PrintUsageAndExit();
    if (args[i] == "--unhealthy") {
      config.unhealthy = true;
      continue;
    }
    if (TakeFlag(args, &i, "--version", &config.version) ||
        TakeFlag(args, &i, "--role", &config.role) ||
        TakeFlag(args, &i, "--data-file", &config.data_file)) {
      continue;
    }
    std::string value;
    const IntOption* matched = nullptr;
    for (const IntOption& option : kIntOptions) {
      if (TakeFlag(args, &i, option.flag, &value)) {
        matched = &option;
        break;
      }
    }
    if (matched == nullptr) {
      UsageError("unknown flag \"" + args[i] + "\" for serve");
    }
    config.*matched->field =
        ParseIntOrDie(value, matched->min, matched->max, matched->flag);
  }
  return config;
}

struct ServerState {
  ServeConfig config;
  std::atomic<bool> healthy{true};
  std::atomic<int> active_connections{0};
};

struct Request {
  std::string method;
  std::string path;
  std::string query;
  size_t content_length = 0;
  bool chunked = false;
  bool keep_alive = true;
};

struct Response {
  int status = 200;
  std::string content_type = kTextPlain;
  std::string body;
};

// Returns the trimmed value of header `name` in a lower-cased header block
// (each header preceded by "\r\n"), or "" if it is absent.
std::string HeaderValue(std::string_view headers, std::string_view name) {
  size_t at = headers.find("\r\n" + std::string(name) + ":");
  if (at == std::string_view::npos) return "";
  size_t start = at + name.size() + 3;
  return std::string(
      Trim(headers.substr(start, headers.find("\r\n", start) - start)));
}

// Parses a request head, excluding its final blank line.
bool ParseRequestHead(std::string_view head, Request* request) {
  std::string_view line = head.substr(0, head.find("\r\n"));
  size_t first_space = line.find(' ');
  size_t last_space = line.rfind(' ');
  if (first_space == std::string_view::npos || last_space == first_space) {
    return false;
  }
  request->method = line.substr(0, first_space);
  std::string_view target =
      line.substr(first_space + 1, last_space - first_space - 1);
  std::string_view version = line.substr(last_space + 1);
  if (target.empty() || !version.starts_with("HTTP/1.")) return false;
  size_t question = target.find('?');
  request->path = target.substr(0, question);
  if (question != std::string_view::npos) {
    request->query = target.substr(question + 1);
  }

  std::string headers = Lower(head.substr(line.size()));
  if (std::string length = HeaderValue(headers, "content-length");
      !length.empty()) {
    std::optional<int> parsed =
        ToInt(length, 0, std::numeric_limits<int>::max());
    if (!parsed) return false;
    request->content_length = static_cast<size_t>(*parsed);
  }
  request->chunked = !HeaderValue(headers, "transfer-encoding").empty();
  // HTTP/1.1 keeps connections open unless told otherwise; 1.0 the reverse.
  std::string connection = HeaderValue(headers, "connection");
  request->keep_alive =
      version == "HTTP/1.0"
          ? connection.find("keep-alive") != std::string::npos
          : connection.find("close") == std::string::npos;
  return true;
}

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Answers one request. Sets *exit_code when the process should exit once the
// response has been sent.
Response Route(const Request& request, ServerState* state,
               std::optional<int>* exit_code) {
  const ServeConfig& config = state->config;
  bool get = request.method == "GET";
  bool post = request.method == "POST";
  if (get && request.path == "/") {
    std::this_thread::sleep_for(milliseconds(config.response_delay_ms));
    return {200, kTextPlain,
            "hello from " + config.role + " " + config.version + "\n"};
  }
  // Any path ending in /health (an app's /api/v1/health) is the health check.
  if (get && (request.path == "/health" || request.path.ends_with("/health"))) {
    bool healthy = state->healthy;
    return {healthy ? 200 : 503, "application/json",
            std::string("{\"status\":\"") + (healthy ? "ok" : "unhealthy") +
                "\",\"version\":" + JsonString(config.version) +
                ",\"role\":" + JsonString(config.role) + "}"};
  }
  if (get && request.path == "/version") {
    return {200, kTextPlain, config.version + "\n"};
  }
  if (post && (request.path == "/control/unhealthy" ||
               request.path == "/control/healthy")) {
    state->healthy = request.path == "/control/healthy";
    return {200, kTextPlain, "ok"};
  }
  if (post && request.path == "/control/exit") {
    std::string query = "&" + request.query + "&";
    std::optional<int> code = 0;
    if (size_t at = query.find("&code="); at != std::string::npos) {
      size_t start = at + 6;
      code = ToInt(
          std::string_view(query).substr(start, query.find('&', start) - start),
          0, 255);
    }
    if (!code) return {400, kTextPlain, "code must be in [0, 255]\n"};
    *exit_code = code;
    return {200, kTextPlain, "ok"};
  }
  return {404, kTextPlain, "not found\n"};
}

const char* StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

bool SendResponse(int fd, const Response& response, bool keep_alive) {
  return SendAll(
      fd, "HTTP/1.1 " + std::to_string(response.status) + " " +
              StatusText(response.status) +
              "\r\nContent-Type: " + response.content_type +
              "\r\nContent-Length: " + std::to_string(response.body.size()) +
              "\r\nConnection: " + (keep_alive ? "keep-alive" : "close") +
              "\r\n\r\n" + response.body);
}

// Reads into *buffer until done(*buffer). Returns false if the peer goes
// away or stalls. Between requests, shutdown also ends the wait: an idle
// keep-alive connection is dropped at once, while a request that has
// started arriving is in flight and gets to finish.
template <typename Done>
bool ReadUntil(int fd, std::string* buffer, bool between_requests,
               Done done) {
  Clock::time_point deadline = Clock::now() + kIdleTimeout;
  while (!done(*buffer)) {
    if ((between_requests && buffer->empty() && g_shutdown_requested) ||
        Clock::now() > deadline) {
      return false;
    }
    pollfd poll_fd{fd, POLLIN, 0};
    if (poll(&poll_fd, 1, kPollIntervalMs) <= 0) continue;
    char chunk[16384];
    ssize_t received = recv(fd, chunk, sizeof chunk, 0);
    if (received < 0 && errno == EINTR) continue;
    if (received <= 0) return false;
    buffer->append(chunk, static_cast<size_t>(received));
  }
  return true;
}

void ServeConnection(int fd, ServerState* state) {
  std::string buffer;  // May hold the start of pipelined requests.
  bool keep_alive = true;
  while (keep_alive) {
    auto head_done = [](const std::string& data) {
      return data.find("\r\n\r\n") != std::string::npos ||
             data.size() > kMaxHeadBytes;
    };
    if (!ReadUntil(fd, &buffer, true, head_done)) break;
    size_t head_end = buffer.find("\r\n\r\n");
    Request request;
    Response response;
    std::optional<int> exit_code;
    // After a bad request we cannot tell where the next one starts.
    keep_alive = false;
    if (head_end == std::string::npos) {
      response = {431, kTextPlain, "request head too large\n"};
    } else if (!ParseRequestHead(
                   std::string_view(buffer).substr(0, head_end), &request)) {
      response = {400, kTextPlain, "malformed request\n"};
    } else if (request.chunked) {
      response = {501, kTextPlain, "chunked bodies are not supported\n"};
    } else if (request.content_length > kMaxBodyBytes) {
      response = {413, kTextPlain, "request body over 1 MiB\n"};
    } else {
      buffer.erase(0, head_end + 4);
      size_t body_size = request.content_length;
      auto body_done = [body_size](const std::string& data) {
        return data.size() >= body_size;
      };
      if (!ReadUntil(fd, &buffer, false, body_done)) break;
      buffer.erase(0, body_size);
      response = Route(request, state, &exit_code);
      keep_alive = request.keep_alive;
    }
    // Saying so now stops clients reusing a connection we are about to drop.
    if (g_shutdown_requested || exit_code) keep_alive = false;
    if (!SendResponse(fd, response, keep_alive)) break;
    if (exit_code) {
      shutdown(fd, SHUT_WR);  // Get the reply out before the process dies.
      std::this_thread::sleep_for(milliseconds(100));
      Log("exiting with code " + std::to_string(*exit_code) +
          " (POST /control/exit)");
      std::fflush(nullptr);
      std::_Exit(*exit_code);
    }
  }
  close(fd);
  state->active_connections.fetch_sub(1);
}

void HandleShutdownSignal(int /*signal*/) { g_shutdown_requested = true; }

void InstallSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = HandleShutdownSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

// Simulates a crash: exits after `ms` whatever is in flight.
void StartCrashTimer(int ms, int code) {
  std::thread([ms, code] {
    std::this_thread::sleep_for(milliseconds(ms));
    Log("exiting with code " + std::to_string(code) + " after " +
        std::to_string(ms) + " ms (--exit-after-ms)");
    std::fflush(nullptr);
    std::_Exit(code);
  }).detach();
}

int Listen(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) < 0 ||
      listen(fd, SOMAXCONN) < 0) {
    Log("cannot listen on 0.0.0.0:" + std::to_string(port) + ": " +
        std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

// Hands each connection to its own thread until shutdown is requested.
void AcceptConnections(int listener, ServerState* state) {
  while (!g_shutdown_requested) {
    pollfd poll_fd{listener, POLLIN, 0};
    if (poll(&poll_fd, 1, kPollIntervalMs) <= 0) continue;
    int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors: back off rather than spin on a ready listener.
      if (errno == EMFILE || errno == ENFILE) {
        std::this_thread::sleep_for(milliseconds(kPollIntervalMs));
      }
      continue;
    }
    if (state->active_connections >= kMaxConnections) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // A client that stops reading must not pin a thread forever.
    SetSocketTimeout(fd, SO_SNDTIMEO, kSendTimeoutMs);
    state->active_connections.fetch_add(1);
    try {
      std::thread(ServeConnection, fd, state).detach();
    } catch (const std::system_error&) {
      close(fd);
      state->active_connections.fetch_sub(1);
    }
  }
}

int Serve(const ServeConfig& config) {
  InstallSignalHandlers();
  if (config.exit_after_ms >= 0) {
    StartCrashTimer(config.exit_after_ms, config.exit_code);
  }
  // Sleep in slices so that a SIGTERM during a simulated slow start is still
  // honoured promptly.
  Clock::time_point listen_at =
      Clock::now() + milliseconds(config.start_delay_ms);
  while (Clock::now() < listen_at && !g_shutdown_requested) {
    std::this_thread::sleep_for(milliseconds(kPollIntervalMs / 4));
  }
  if (g_shutdown_requested) {
    Log("stopped before listening");
    return 0;
  }

  if (!config.data_file.empty()) {
    // Like tracked migrations: a version already applied is not applied again.
    const std::string line = config.role + " " + config.version + " migrated\n";
    std::string seen;
    if (FILE* in = std::fopen(config.data_file.c_str(), "r")) {
      char buf[4096];
      for (size_t n; (n = std::fread(buf, 1, sizeof(buf), in)) > 0;) seen.append(buf, n);
      std::fclose(in);
    }
    FILE* f = seen.find(line) != std::string::npos ? nullptr : std::fopen(config.data_file.c_str(), "a");
    if (seen.find(line) != std::string::npos) {
      Log("data file " + config.data_file + " already migrated to " + config.version);
    } else if (f == nullptr || std::fputs(line.c_str(), f) < 0 || std::fclose(f) != 0) {
      Log("cannot append to " + config.data_file + ": " + std::strerror(errno));
      return 1;
    }
  }

  ServerState state;
  state.config = config;
  state.healthy = !config.unhealthy;
  int listener = Listen(config.port);
  Log("started: listening on 0.0.0.0:" + std::to_string(config.port) +
      " role=" + config.role + " version=" + config.version +
      (config.unhealthy ? " (unhealthy)" : ""));
  AcceptConnections(listener, &state);

  close(listener);
  Log("shutting down: draining " +
      std::to_string(state.active_connections) + " connection(s)");
  Clock::time_point deadline = Clock::now() + kDrainTimeout;
  while (state.active_connections > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  if (int left = state.active_connections; left > 0) {
    Log("stopped with " + std::to_string(left) +
        " connection(s) still open after 10 s");
    // Detached threads still use `state`, so this frame must not unwind.
    std::fflush(nullptr);
    std::_Exit(0);
  }
  Log("stopped");
  return 0;
}

// ---------------------------------------------------------------------------
// job, probe, get

int RunJob(const std::vector<std::string>& args) {
  int exit_code = 0;
  int sleep_ms = 0;
  std::vector<std::string> lines;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string value;
    if (args[i] == "--help" || args[i] == "-h") {
      PrintUsageAndExit();
    } else if (TakeFlag(args, &i, "--exit-code", &value)) {
      exit_code = ParseIntOrDie(value, 0, 255, "--exit-code");
    } else if (TakeFlag(args, &i, "--sleep-ms", &value)) {
      sleep_ms = ParseIntOrDie(value, 0, kMaxDelayMs, "--sleep-ms");
    } else if (TakeFlag(args, &i, "--print", &value)) {
      lines.push_back(value);
    } else {
      UsageError("unknown flag \"" + args[i] + "\" for job");
    }
  }
  for (const std::string& line : lines) std::printf("%s\n", line.c_str());
  if (auto version = Env("TESTSVC_VERSION")) {
    std::printf("version=%s\n", version->c_str());
  }
  // The output must survive the job being killed while it sleeps.
  std::fflush(stdout);
  std::this_thread::sleep_for(milliseconds(sleep_ms));
  return exit_code;
}

// The first A record of `name`, asked of the first nameserver in
// /etc/resolv.conf over UDP; nullopt with *error set when there is none.
std::optional<in_addr> ResolveA(const std::string& name, std::string* error) {
  std::string nameserver;
  if (FILE* f = std::fopen("/etc/resolv.conf", "r")) {
    char line[512];
    while (nameserver.empty() && std::fgets(line, sizeof(line), f) != nullptr) {
      char ns[256];
      if (std::sscanf(line, " nameserver %255s", ns) == 1) nameserver = ns;
    }
    std::fclose(f);
  }
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(53);
  if (nameserver.empty() || inet_pton(AF_INET, nameserver.c_str(), &server.sin_addr) != 1) {
    *error = "no IPv4 nameserver in /etc/resolv.conf";
    return std::nullopt;
  }
  std::string query = {'\x48', '\x53', 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};  // id, RD, one question
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    if (dot == start || dot - start > 63) {
      *error = "\"" + name + "\" is not a host name";
      return std::nullopt;
    }
    query += static_cast<char>(dot - start);
    query += name.substr(start, dot - start);
    start = dot + 1;
  }
  query += std::string("\0\0\x01\0\x01", 5);  // root, type A, class IN
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return std::nullopt;
  }
  SetSocketTimeout(fd, SO_RCVTIMEO, kProbeTimeoutMs);
  unsigned char reply[1500];
  ssize_t n = -1;
  if (sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&server), sizeof(server)) ==
      static_cast<ssize_t>(query.size())) {
    n = recv(fd, reply, sizeof(reply), 0);
  }
  close(fd);
  if (n < 12 || reply[0] != 0x48 || reply[1] != 0x53) {
    *error = "no answer from nameserver " + nameserver + " for " + name;
    return std::nullopt;
  }
  int answers = reply[6] << 8 | reply[7];
  if ((reply[3] & 0x0f) != 0 || answers == 0) {
    *error = name + " does not resolve (nameserver " + nameserver + ")";
    return std::nullopt;
  }
  size_t at = query.size();  // the question comes back as sent
  for (int i = 0; i < answers && at < static_cast<size_t>(n); ++i) {
    if ((reply[at] & 0xc0) == 0xc0) {  // a compressed name
      at += 2;
    } else {
      while (at < static_cast<size_t>(n) && reply[at] != 0) at += reply[at] + 1;
      ++at;
    }
    if (at + 10 > static_cast<size_t>(n)) break;
    int type = reply[at] << 8 | reply[at + 1];
    size_t length = static_cast<size_t>(reply[at + 8] << 8 | reply[at + 9]);
    at += 10;
    if (at + length > static_cast<size_t>(n)) break;
    if (type == 1 && length == 4) {
      in_addr a;
      std::memcpy(&a, reply + at, 4);
      return a;
    }
    at += length;
  }
  *error = name + " has no A record (nameserver " + nameserver + ")";
  return std::nullopt;
}

struct Url {
  sockaddr_in address{};
  std::string host;  // As written, port included, for the Host header.
  std::string path;
};

Url ParseUrlOrDie(std::string_view text) {
  constexpr std::string_view kScheme = "http://";
  if (!text.starts_with(kScheme)) {
    UsageError("URL must start with http://, got \"" + std::string(text) +
               "\"");
  }
  std::string_view rest = text.substr(kScheme.size());
  size_t slash = rest.find('/');
  Url url;
  url.host = rest.substr(0, slash);
  url.path = slash == std::string_view::npos ? "/" : rest.substr(slash);
  std::string_view host = url.host;
  int port = 80;
  if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    port = ParseIntOrDie(host.substr(colon + 1), 1, 65535, "URL port");
    host = host.substr(0, colon);
  }
  // "localhost" is too common in HEALTHCHECKs to refuse, and needs no DNS.
  std::string ip = host == "localhost" ? "127.0.0.1" : std::string(host);
  url.address.sin_family = AF_INET;
  url.address.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, ip.c_str(), &url.address.sin_addr) != 1) {
    std::string error;
    std::optional<in_addr> found = ResolveA(ip, &error);
    if (!found.has_value()) {
      Log("cannot resolve the URL's host: " + error);
      std::exit(1);
    }
    url.address.sin_addr = *found;
  }
  return url;
}

// One GET that must complete within timeout_ms. Returns the status code, or
// nullopt with *error set.
std::optional<int> HttpGet(const Url& url, int timeout_ms, std::string* body,
                           std::string* error) {
  Clock::time_point deadline = Clock::now() + milliseconds(timeout_ms);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return std::nullopt;
  }
  // Linux applies SO_SNDTIMEO to connect() too.
  SetSocketTimeout(fd, SO_SNDTIMEO, timeout_ms);
  std::string request = "GET " + url.path + " HTTP/1.1\r\nHost: " + url.host +
                        "\r\nUser-Agent: testsvc\r\nConnection: close\r\n\r\n";
  bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&url.address),
                    sizeof url.address) == 0 &&
             SendAll(fd, request);
  std::string raw;
  // We asked for Connection: close, so the response ends at EOF.
  while (ok) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline -
                                                         Clock::now());
    if (left.count() <= 0) {
      errno = ETIMEDOUT;
      ok = false;
      break;
    }
    // Re-armed before every read so the whole exchange honours the deadline.
    SetSocketTimeout(fd, SO_RCVTIMEO, static_cast<int>(left.count()));
    char chunk[16384];
    ssize_t received = recv(fd, chunk, sizeof chunk, 0);
    if (received == 0) break;
    if (received > 0) raw.append(chunk, static_cast<size_t>(received));
    if (received < 0 && errno != EINTR) ok = false;
  }
  int saved_errno = errno;
  close(fd);
  if (!ok) {
    bool timed_out = saved_errno == EAGAIN || saved_errno == EINPROGRESS ||
                     saved_errno == ETIMEDOUT;
    *error = timed_out ? "timed out" : std::strerror(saved_errno);
    return std::nullopt;
  }
  // "HTTP/1.1 200 OK\r\n...": the status code sits at offset 9.
  size_t head_end = raw.find("\r\n\r\n");
  std::optional<int> status;
  if (raw.starts_with("HTTP/1.") && head_end != std::string::npos) {
    status = ToInt(std::string_view(raw).substr(9, 3), 100, 599);
  }
  if (!status) {
    *error = raw.empty() ? "empty response" : "malformed response";
    return std::nullopt;
  }
  *body = raw.substr(head_end + 4);
  return status;
}

int RunClient(const std::string& command,
              const std::vector<std::string>& args) {
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    PrintUsageAndExit();
  }
  if (args.size() != 1) {
    UsageError(command + " expects exactly one URL argument");
  }
  Url url = ParseUrlOrDie(args[0]);
  bool print_body = command == "get";
  std::string body;
  std::string error;
  std::optional<int> status = HttpGet(
      url, print_body ? kGetTimeoutMs : kProbeTimeoutMs, &body, &error);
  if (!status) {
    Log(command + " " + args[0] + ": " + error);
    return 1;
  }
  if (print_body) std::fwrite(body.data(), 1, body.size(), stdout);
  if (*status < 200 || *status > 299) {
    Log(command + " " + args[0] + ": HTTP " + std::to_string(*status));
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string command = "serve";
  if (!args.empty() && !args[0].starts_with("-")) {
    command = args[0];
    args.erase(args.begin());
  }
  if (command == "serve") return Serve(ParseServeConfig(args));
  if (command == "job") return RunJob(args);
  if (command == "probe" || command == "get") return RunClient(command, args);
  if (command == "exec") {
    if (args.empty() || !args[0].starts_with("/")) UsageError("exec needs an absolute program path");
    std::vector<char*> exec_argv;
    for (std::string& a : args) exec_argv.push_back(a.data());
    exec_argv.push_back(nullptr);
    ::execv(exec_argv[0], exec_argv.data());
    std::fprintf(stderr, "testsvc: exec %s: %s\n", exec_argv[0], std::strerror(errno));
    return 127;
  }
  if (command == "help") PrintUsageAndExit();
  UsageError("unknown command \"" + command +
             "\"; expected serve, job, probe, get or exec");
}
