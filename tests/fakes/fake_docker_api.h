#pragma once

// An in-memory Docker Engine for unit tests of the agent: images (local and
// in a pretend registry), containers with labels, states and published ports,
// named volumes with opaque content, exec through a handler. Failures can be
// injected per method, every call is counted, and a hook runs before each
// call (to block a step mid-way). Thread-safe.
//
// Archives are not real tar streams: a volume's content is an opaque string,
// GetArchive emits it and PutArchive replaces it with the file's bytes.

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/docker/docker_api.h"
#include "agent/file_util.h"
#include "tests/fakes/fake_clock.h"

namespace hoist::testing {

class FakeDockerApi final : public docker::DockerApi {
 public:
  // What containers created from an image do once started.
  struct ImageBehavior {
    // Exits on its own (a job) rather than running until stopped.
    bool exits = false;
    int exit_code = 0;
    // With exits: keep running until FinishContainer() is called.
    bool hold = false;
    // What Logs() returns.
    std::string logs;
    // Docker health once running ("" = no HEALTHCHECK).
    std::string health;
    // With health: reports "starting" this long after the container started
    // (a service warming up), then `health`.
    absl::Duration healthy_after = absl::ZeroDuration();
  };

  struct Container {
    docker::ContainerInfo info;
    docker::ContainerSpec spec;
  };

  // clock (optional) is advanced by Wait() timeouts, so that loops waiting on
  // a running container move fake time forward.
  explicit FakeDockerApi(FakeClock* clock = nullptr) : clock_(clock) {}

  // ---- set-up ----

  // An image the pretend registry serves; Pull copies it to the host.
  void AddRegistryImage(const std::string& ref, const std::string& digest, uint32_t layers = 2) {
    absl::MutexLock lock(&mu_);
    registry_[ref] = RegistryImage{digest, layers};
  }
  // An image already on the host.
  void AddLocalImage(const std::string& ref, const std::string& id, std::vector<std::string> repo_digests = {}) {
    absl::MutexLock lock(&mu_);
    docker::ImageInfo info;
    info.id = id;
    info.repo_digests = std::move(repo_digests);
    info.repo_tags = {ref};
    images_[ref] = std::move(info);
  }
  void SetImageBehavior(const std::string& ref, ImageBehavior behavior) {
    absl::MutexLock lock(&mu_);
    behaviors_[ref] = std::move(behavior);
  }
  // The pretend registry serves every reference (a simulated host): its
  // digest is derived from the reference alone, so that every FakeDockerApi
  // of a process pulls the same digest for it; containers of images without
  // a behaviour of their own behave as `behavior`.
  void ServeAnyImage(ImageBehavior behavior) {
    absl::MutexLock lock(&mu_);
    serve_any_image_ = true;
    default_behavior_ = std::move(behavior);
  }
  // Adds a container directly (for example one without Hoist's labels);
  // returns its id.
  std::string AddContainer(const std::string& name, const std::string& image,
                           std::map<std::string, std::string> labels, const std::string& state = "running") {
    absl::MutexLock lock(&mu_);
    Container c;
    c.info.id = NewId();
    c.info.name = name;
    c.info.image = image;
    c.info.labels = std::move(labels);
    c.info.state = state;
    c.info.created_at = Now();
    c.spec.name = name;
    c.spec.image = image;
    c.spec.labels = c.info.labels;
    std::string id = c.info.id;
    containers_[id] = std::move(c);
    return id;
  }
  // Makes a running container exit with exit_code.
  void FinishContainer(absl::string_view id_or_name, int exit_code) {
    absl::MutexLock lock(&mu_);
    if (Container* c = FindLocked(id_or_name)) {
      c->info.state = "exited";
      c->info.exit_code = exit_code;
    }
  }
  void SetHealth(absl::string_view id_or_name, const std::string& health) {
    absl::MutexLock lock(&mu_);
    if (Container* c = FindLocked(id_or_name)) c->info.health = health;
  }
  void SetExecHandler(
      std::function<absl::StatusOr<docker::ExecResult>(const Container&, const std::vector<std::string>&,
                                                       const std::function<absl::Status(absl::string_view)>&,
                                                       absl::string_view)>
          handler) {
    absl::MutexLock lock(&mu_);
    exec_handler_ = std::move(handler);
  }
  void SetVolumeData(const std::string& volume, std::string data) {
    absl::MutexLock lock(&mu_);
    volumes_[volume] = std::move(data);
  }
  std::optional<std::string> VolumeData(const std::string& volume) {
    absl::MutexLock lock(&mu_);
    auto it = volumes_.find(volume);
    if (it == volumes_.end()) return std::nullopt;
    return it->second;
  }
  // The next call of method fails with status (once).
  void FailNext(const std::string& method, absl::Status status) {
    absl::MutexLock lock(&mu_);
    fail_next_[method] = std::move(status);
  }
  // Runs before every call, outside the fake's lock, with the method name.
  void SetBeforeCall(std::function<void(absl::string_view)> hook) {
    absl::MutexLock lock(&mu_);
    before_call_ = std::move(hook);
  }

  // ---- inspection ----

  int Calls(const std::string& method) {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(method);
    return it == calls_.end() ? 0 : it->second;
  }
  std::optional<Container> Find(absl::string_view id_or_name) {
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return std::nullopt;
    return *c;
  }
  std::vector<Container> Containers() {
    absl::MutexLock lock(&mu_);
    std::vector<Container> out;
    for (const auto& [id, c] : containers_) out.push_back(c);
    return out;
  }
  bool HasImage(const std::string& ref) {
    absl::MutexLock lock(&mu_);
    return images_.count(ref) > 0;
  }
  // Blocks until pred holds for the container or timeout passes (real time).
  bool AwaitContainer(absl::string_view name, const std::function<bool(const Container&)>& pred,
                      absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto cond = [&]() {
      Container* c = FindLocked(name);
      return c != nullptr && pred(*c);
    };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
  }

  // ---- DockerApi ----

  absl::StatusOr<std::string> Version() override {
    if (auto s = Enter("Version"); !s.ok()) return s;
    return std::string("fake-24.0");
  }

  absl::StatusOr<std::string> EngineId() override {
    if (auto s = Enter("EngineId"); !s.ok()) return s;
    return std::string("FAKE:ENGINE");
  }

  absl::Status Pull(absl::string_view image,
                    const std::function<void(const docker::PullProgress&)>& on_progress) override {
    if (auto s = Enter("Pull"); !s.ok()) return s;
    RegistryImage found;
    {
      absl::MutexLock lock(&mu_);
      auto it = registry_.find(std::string(image));
      if (it == registry_.end() && serve_any_image_) {
        const std::string part = absl::StrCat(absl::Hex(std::hash<std::string>()(std::string(image)), absl::kZeroPad16));
        it = registry_.emplace(std::string(image), RegistryImage{absl::StrCat("sha256:", part, part, part, part), 2})
                 .first;
      }
      if (it == registry_.end()) {
        return absl::NotFoundError(absl::StrCat("manifest for ", image, " not found: manifest unknown"));
      }
      found = it->second;
    }
    docker::PullProgress p;
    p.layers_total = found.layers;
    p.bytes_total = 1000 * found.layers;
    for (uint32_t layer = 1; layer <= found.layers; ++layer) {
      p.bytes_done = 1000 * layer;
      p.layers_done = layer;
      if (on_progress) on_progress(p);
    }
    absl::MutexLock lock(&mu_);
    docker::ImageInfo info;
    info.id = absl::StrCat("sha256:id-", found.digest.substr(found.digest.find(':') + 1));
    size_t colon = image.rfind(':');
    std::string repo = std::string(image.substr(0, colon == absl::string_view::npos ? image.size() : colon));
    info.repo_digests = {absl::StrCat(repo, "@", found.digest)};
    info.repo_tags = {std::string(image)};
    images_[std::string(image)] = std::move(info);
    return absl::OkStatus();
  }

  absl::StatusOr<docker::ImageInfo> InspectImage(absl::string_view image) override {
    if (auto s = Enter("InspectImage"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    auto it = images_.find(std::string(image));
    if (it != images_.end()) return it->second;
    for (const auto& [ref, info] : images_) {
      if (info.id == image) return info;
    }
    return absl::NotFoundError(absl::StrCat("No such image: ", image));
  }

  absl::StatusOr<std::string> Create(const docker::ContainerSpec& spec) override {
    if (auto s = Enter("Create"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    if (FindLocked(spec.name) != nullptr) {
      return absl::AlreadyExistsError(absl::StrCat("Conflict. The container name \"/", spec.name, "\" is already in use"));
    }
    bool image_known = images_.count(spec.image) > 0;
    for (const auto& [ref, info] : images_) image_known = image_known || info.id == spec.image;
    if (!image_known) return absl::NotFoundError(absl::StrCat("No such image: ", spec.image));
    Container c;
    c.info.id = NewId();
    c.info.name = spec.name;
    c.info.image = spec.image;
    c.info.image_id = images_.count(spec.image) ? images_[spec.image].id : spec.image;
    c.info.labels = spec.labels;
    c.info.state = "created";
    c.info.created_at = Now();
    c.spec = spec;
    for (const auto& mount : spec.mounts) {
      if (!mount.is_bind() && volumes_.count(mount.source) == 0) volumes_[mount.source] = "";
    }
    std::string id = c.info.id;
    containers_[id] = std::move(c);
    return id;
  }

  absl::Status Start(absl::string_view id_or_name) override {
    if (auto s = Enter("Start"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    if (c->info.state == "running") return absl::OkStatus();
    c->info.state = "running";
    c->info.started_at = Now();
    c->info.network_ips = {{c->spec.network.empty() ? "bridge" : c->spec.network, absl::StrCat("172.17.0.", ++ip_)}};
    c->info.published_ports.clear();
    for (const auto& port : c->spec.ports) {
      c->info.published_ports[absl::StrCat(port.container_port, "/", port.protocol)] =
          port.host_port != 0 ? port.host_port : static_cast<uint16_t>(49000 + (++port_));
    }
    if (const ImageBehavior* behavior = BehaviorLocked(c->spec.image)) {
      c->info.health = behavior->healthy_after > absl::ZeroDuration() ? "starting" : behavior->health;
      if (behavior->exits && !behavior->hold) {
        c->info.state = "exited";
        c->info.exit_code = behavior->exit_code;
      }
    }
    return absl::OkStatus();
  }

  absl::Status Stop(absl::string_view id_or_name, absl::Duration timeout) override {
    if (auto s = Enter("Stop"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    last_stop_timeout_ = timeout;
    if (c->info.state == "running" || c->info.state == "paused" || c->info.state == "restarting") {
      c->info.state = "exited";
      c->info.exit_code = 143;
    }
    return absl::OkStatus();
  }

  absl::Status Kill(absl::string_view id_or_name) override {
    if (auto s = Enter("Kill"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    c->info.state = "exited";
    c->info.exit_code = 137;
    return absl::OkStatus();
  }

  absl::Status Rename(absl::string_view id_or_name, absl::string_view new_name) override {
    if (auto s = Enter("Rename"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    c->info.name = std::string(new_name);
    return absl::OkStatus();
  }

  absl::Status Remove(absl::string_view id_or_name, bool force, bool remove_volumes) override {
    (void)remove_volumes;
    if (auto s = Enter("Remove"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    if (c->info.state == "running" && !force) {
      return absl::FailedPreconditionError(
          absl::StrCat("You cannot remove a running container ", c->info.id, ". Stop the container before removing"));
    }
    containers_.erase(c->info.id);
    return absl::OkStatus();
  }

  absl::StatusOr<int> Wait(absl::string_view id_or_name, absl::Duration timeout) override {
    if (auto s = Enter("Wait"); !s.ok()) return s;
    {
      absl::MutexLock lock(&mu_);
      auto exited = [&]() {
        Container* c = FindLocked(id_or_name);
        return c == nullptr || c->info.state == "exited" || c->info.state == "dead";
      };
      // A short real wait lets another thread's FinishContainer end it.
      mu_.AwaitWithTimeout(absl::Condition(&exited), absl::Milliseconds(20));
      Container* c = FindLocked(id_or_name);
      if (c == nullptr) return NoSuchContainer(id_or_name);
      if (c->info.state == "exited" || c->info.state == "dead") return c->info.exit_code;
    }
    if (clock_ != nullptr) clock_->Advance(timeout);
    return absl::DeadlineExceededError(absl::StrCat("waiting for ", id_or_name, " timed out"));
  }

  absl::StatusOr<std::string> Logs(absl::string_view id_or_name, int tail) override {
    (void)tail;
    if (auto s = Enter("Logs"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    const ImageBehavior* behavior = BehaviorLocked(c->spec.image);
    return behavior == nullptr ? std::string() : behavior->logs;
  }

  absl::StatusOr<docker::ExecResult> Exec(absl::string_view id_or_name, const std::vector<std::string>& argv,
                                          absl::Duration timeout,
                                          const std::function<absl::Status(absl::string_view)>& stdout_sink,
                                          absl::string_view stdin_data) override {
    (void)timeout;
    if (auto s = Enter("Exec"); !s.ok()) return s;
    Container copy;
    decltype(exec_handler_) handler;
    {
      absl::MutexLock lock(&mu_);
      Container* c = FindLocked(id_or_name);
      if (c == nullptr) return NoSuchContainer(id_or_name);
      if (c->info.state != "running") {
        return absl::FailedPreconditionError(absl::StrCat("Container ", c->info.id, " is not running"));
      }
      copy = *c;
      handler = exec_handler_;
    }
    if (!handler) return docker::ExecResult{0, ""};
    return handler(copy, argv, stdout_sink, stdin_data);
  }

  absl::StatusOr<docker::ContainerInfo> Inspect(absl::string_view id_or_name) override {
    if (auto s = Enter("Inspect"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    const ImageBehavior* behavior = BehaviorLocked(c->spec.image);
    if (behavior != nullptr && c->info.health == "starting" && c->info.state == "running" &&
        Now() - c->info.started_at >= behavior->healthy_after) {
      c->info.health = behavior->health;
    }
    return c->info;
  }

  absl::StatusOr<std::vector<docker::ContainerInfo>> List(const std::vector<std::string>& label_filters) override {
    if (auto s = Enter("List"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    std::vector<docker::ContainerInfo> out;
    for (const auto& [id, c] : containers_) {
      bool match = true;
      for (const std::string& filter : label_filters) {
        size_t eq = filter.find('=');
        std::string key = filter.substr(0, eq);
        auto it = c.info.labels.find(key);
        if (it == c.info.labels.end() || (eq != std::string::npos && it->second != filter.substr(eq + 1))) {
          match = false;
        }
      }
      if (match) out.push_back(c.info);
    }
    return out;
  }

  absl::Status CreateVolume(absl::string_view name, const std::map<std::string, std::string>& labels) override {
    if (auto s = Enter("CreateVolume"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    volumes_.emplace(std::string(name), "");
    object_labels_[absl::StrCat("volume:", name)] = labels;
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> EnsureNetwork(absl::string_view name,
                                            const std::map<std::string, std::string>& labels) override {
    if (auto s = Enter("EnsureNetwork"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    if (networks_.insert(std::string(name)).second) object_labels_[absl::StrCat("network:", name)] = labels;
    return std::string(name);  // the fake's ids are the names
  }

  absl::StatusOr<std::map<std::string, std::string>> VolumeLabels(absl::string_view name) override {
    absl::MutexLock lock(&mu_);
    if (!volumes_.contains(std::string(name))) return absl::NotFoundError(absl::StrCat("no such volume: ", name));
    return object_labels_[absl::StrCat("volume:", name)];
  }

  absl::StatusOr<std::map<std::string, std::string>> NetworkLabels(absl::string_view name) override {
    absl::MutexLock lock(&mu_);
    if (!networks_.contains(std::string(name))) return absl::NotFoundError(absl::StrCat("no such network: ", name));
    return object_labels_[absl::StrCat("network:", name)];
  }

  // A network or volume made by someone else, with these labels.
  void AddForeignNetwork(const std::string& name, std::map<std::string, std::string> labels) {
    absl::MutexLock lock(&mu_);
    networks_.insert(name);
    object_labels_["network:" + name] = std::move(labels);
  }
  void AddForeignVolume(const std::string& name, std::map<std::string, std::string> labels) {
    absl::MutexLock lock(&mu_);
    volumes_.emplace(name, "");
    object_labels_["volume:" + name] = std::move(labels);
  }

  bool HasNetwork(const std::string& name) {
    absl::MutexLock lock(&mu_);
    return networks_.contains(name);
  }

  absl::Status RemoveVolume(absl::string_view name) override {
    if (auto s = Enter("RemoveVolume"); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    if (volumes_.erase(std::string(name)) == 0) return absl::NotFoundError(absl::StrCat("no such volume: ", name));
    return absl::OkStatus();
  }

  absl::Status GetArchive(absl::string_view id_or_name, absl::string_view path,
                          const std::function<absl::Status(absl::string_view)>& sink) override {
    if (auto s = Enter("GetArchive"); !s.ok()) return s;
    std::string data;
    {
      absl::MutexLock lock(&mu_);
      Container* c = FindLocked(id_or_name);
      if (c == nullptr) return NoSuchContainer(id_or_name);
      const docker::Mount* mount = nullptr;
      for (const auto& m : c->spec.mounts) {
        if (m.target == path) mount = &m;
      }
      if (mount == nullptr) return absl::NotFoundError(absl::StrCat("Could not find the file ", path, " in container"));
      data = volumes_[mount->source];
    }
    // Two chunks, as a stream would deliver them.
    size_t half = data.size() / 2;
    if (absl::Status s = sink(absl::string_view(data).substr(0, half)); !s.ok()) return s;
    return sink(absl::string_view(data).substr(half));
  }

  absl::Status PutArchive(absl::string_view id_or_name, absl::string_view path, absl::string_view tar_path) override {
    (void)path;
    if (auto s = Enter("PutArchive"); !s.ok()) return s;
    auto data = agent::ReadFileToString(std::string(tar_path));
    if (!data.ok()) return data.status();
    absl::MutexLock lock(&mu_);
    Container* c = FindLocked(id_or_name);
    if (c == nullptr) return NoSuchContainer(id_or_name);
    for (const auto& m : c->spec.mounts) {
      if (!m.is_bind()) {
        volumes_[m.source] = *data;
        return absl::OkStatus();
      }
    }
    archives_[absl::StrCat(c->info.name, ":", path)] = *data;  // a file written into the container
    return absl::OkStatus();
  }

  absl::Status ImportImage(absl::string_view repository, absl::string_view tag, absl::string_view tar_path) override {
    if (auto s = Enter("ImportImage"); !s.ok()) return s;
    auto data = agent::ReadFileToString(std::string(tar_path));
    if (!data.ok()) return data.status();
    absl::MutexLock lock(&mu_);
    docker::ImageInfo info;
    info.id = absl::StrCat("sha256:import", images_.size());
    std::string ref = absl::StrCat(repository, ":", tag);
    info.repo_tags = {ref};
    images_[ref] = info;
    imported_[ref] = *data;
    return absl::OkStatus();
  }

  // The last tar PutArchive wrote to `path` of container `name` (no volume
  // mounted), or "" when none.
  std::string ArchiveAt(absl::string_view name, absl::string_view path) {
    absl::MutexLock lock(&mu_);
    auto it = archives_.find(absl::StrCat(name, ":", path));
    return it == archives_.end() ? "" : it->second;
  }
  // The tar an image was imported from, or "" when it was not imported.
  std::string ImportedFrom(absl::string_view ref) {
    absl::MutexLock lock(&mu_);
    auto it = imported_.find(std::string(ref));
    return it == imported_.end() ? "" : it->second;
  }

  absl::Duration last_stop_timeout() {
    absl::MutexLock lock(&mu_);
    return last_stop_timeout_;
  }

 private:
  struct RegistryImage {
    std::string digest;
    uint32_t layers = 2;
  };

  absl::Status Enter(const std::string& method) {
    std::function<void(absl::string_view)> hook;
    {
      absl::MutexLock lock(&mu_);
      ++calls_[method];
      hook = before_call_;
    }
    if (hook) hook(method);
    absl::MutexLock lock(&mu_);
    auto it = fail_next_.find(method);
    if (it == fail_next_.end()) return absl::OkStatus();
    absl::Status s = it->second;
    fail_next_.erase(it);
    return s;
  }

  const ImageBehavior* BehaviorLocked(const std::string& image) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = behaviors_.find(image);
    if (it != behaviors_.end()) return &it->second;
    return serve_any_image_ ? &default_behavior_ : nullptr;
  }

  Container* FindLocked(absl::string_view id_or_name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = containers_.find(std::string(id_or_name));
    if (it != containers_.end()) return &it->second;
    for (auto& [id, c] : containers_) {
      if (c.info.name == id_or_name) return &c;
    }
    return nullptr;
  }

  std::string NewId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return absl::StrCat("c", ++next_id_, "0000000000000000"); }
  absl::Time Now() { return clock_ != nullptr ? clock_->Now() : absl::Now(); }
  static absl::Status NoSuchContainer(absl::string_view id) {
    return absl::NotFoundError(absl::StrCat("No such container: ", id));
  }

  FakeClock* const clock_;
  absl::Mutex mu_;
  std::map<std::string, RegistryImage> registry_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, docker::ImageInfo> images_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> archives_ ABSL_GUARDED_BY(mu_);  // "name:path" -> tar
  std::map<std::string, std::string> imported_ ABSL_GUARDED_BY(mu_);  // image ref -> tar
  std::map<std::string, ImageBehavior> behaviors_ ABSL_GUARDED_BY(mu_);
  bool serve_any_image_ ABSL_GUARDED_BY(mu_) = false;
  ImageBehavior default_behavior_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Container> containers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> volumes_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> networks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::string>> object_labels_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Status> fail_next_ ABSL_GUARDED_BY(mu_);
  std::function<void(absl::string_view)> before_call_ ABSL_GUARDED_BY(mu_);
  std::function<absl::StatusOr<docker::ExecResult>(const Container&, const std::vector<std::string>&,
                                                   const std::function<absl::Status(absl::string_view)>&,
                                                   absl::string_view)>
      exec_handler_ ABSL_GUARDED_BY(mu_);
  absl::Duration last_stop_timeout_ ABSL_GUARDED_BY(mu_);
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
  int ip_ ABSL_GUARDED_BY(mu_) = 1;
  int port_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace hoist::testing
