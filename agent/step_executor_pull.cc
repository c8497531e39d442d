// pull_image: pulls an image (unless a digest-pinned one is here already)
// with throttled progress, and answers its content digest; and the digest
// check start_instance makes before it creates a container.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/step_executor.h"

namespace hoist::agent {
namespace {

// Repository part of an image reference (without tag or digest).
std::string Repository(absl::string_view image) {
  size_t at = image.find('@');
  if (at != absl::string_view::npos) return std::string(image.substr(0, at));
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    return std::string(image.substr(0, colon));
  }
  return std::string(image);
}

}  // namespace

absl::Status StepExecutor::CheckImageDigest(const std::string& image, const std::string& digest) {
  auto local = docker_->InspectImage(image);
  if (!local.ok()) {
    return absl::Status(local.status().code(), absl::StrCat("inspect ", image, ": ", local.status().message()));
  }
  const std::string repository = Repository(image);
  std::vector<std::string> here;
  for (const std::string& repo_digest : local->repo_digests) {
    size_t at = repo_digest.find('@');
    if (at == std::string::npos || repo_digest.substr(0, at) != repository) continue;
    if (repo_digest.substr(at + 1) == digest) return absl::OkStatus();
    here.push_back(repo_digest.substr(at + 1));
  }
  if (local->id == digest) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      image, " is ", here.empty() ? local->id : absl::StrJoin(here, ", "), " on this host, but its release recorded ",
      digest, " when it was first pulled: the tag was pushed again since. Publish the new image under a new "
      "version (or push the recorded one back to the tag); nothing was started"));
}

absl::Status StepExecutor::PullImage(const StepContext& ctx, hoist::v1::StepResult* result) {
  const std::string& image = ctx.step.pull_image().image();
  bool pinned_by_digest = image.find('@') != std::string::npos;
  auto local = docker_->InspectImage(image);
  // A digest names content: if it is here, there is nothing to fetch.
  if (!pinned_by_digest || !local.ok()) {
    uint32_t last_layers_done = UINT32_MAX;
    absl::Time last_report = absl::InfinitePast();
    absl::Status s = docker_->Pull(image, [&](const docker::PullProgress& p) {
      absl::Time now = clock_->Now();
      // Docker reports every chunk; forward layer completions and at most a few lines a second.
      if (p.layers_done == last_layers_done && now - last_report < absl::Milliseconds(500)) return;
      last_layers_done = p.layers_done;
      last_report = now;
      hoist::v1::StepProgress progress;
      progress.set_message(absl::StrCat("pulling ", image, ": ", p.layers_done, "/", p.layers_total, " layers"));
      auto* pull = progress.mutable_pull();
      pull->set_bytes_done(p.bytes_done);
      pull->set_bytes_total(p.bytes_total);
      pull->set_layers_done(p.layers_done);
      pull->set_layers_total(p.layers_total);
      Progress(ctx, std::move(progress));
    });
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("pull ", image, ": ", s.message()));
    local = docker_->InspectImage(image);
  }
  if (!local.ok()) {
    return absl::Status(local.status().code(),
                        absl::StrCat("inspect ", image, " after pulling it: ", local.status().message()));
  }
  std::string digest;
  if (pinned_by_digest) digest = image.substr(image.find('@') + 1);
  std::string repository = Repository(image);
  for (const std::string& repo_digest : local->repo_digests) {
    if (!digest.empty()) break;
    size_t at = repo_digest.find('@');
    if (at != std::string::npos && repo_digest.substr(0, at) == repository) digest = repo_digest.substr(at + 1);
  }
  if (digest.empty() && !local->repo_digests.empty()) {
    const std::string& first = local->repo_digests.front();
    digest = first.substr(first.find('@') + 1);
  }
  // An image that never came from a registry has no content digest; its id
  // (the config's digest) is the best stable name for it.
  if (digest.empty()) digest = local->id;
  result->mutable_pull()->set_image_digest(digest);
  return absl::OkStatus();
}

}  // namespace hoist::agent
