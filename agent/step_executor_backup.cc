// StepExecutor's backup and restore actions: database dumps through pg_dump
// in the database's own container, volumes through a created-never-started
// helper container, config files copied. Every artifact is hashed while it is
// written and hashed again from disk (proving it readable); a backup becomes
// visible only complete, by renaming its ".partial" directory.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/container_names.h"
#include "agent/file_util.h"
#include "agent/step_executor.h"
#include "nlohmann/json.hpp"
#include "shared/labels.h"
#include "shared/logging.h"
#include "spdlog/spdlog.h"

namespace hoist::agent {
namespace {

constexpr absl::string_view kManifest = "manifest.json";
// Where helper containers mount the volume they archive or restore.
constexpr absl::string_view kHelperMount = "/hoist-volume";
// Marks helper containers; they carry no hoist.managed, so no inventory lists them.
constexpr absl::string_view kHelperLabel = "hoist.helper";

// Removes the deployment's finished backups in `dir` beyond the newest
// `keep` (by when each manifest was written; `current` counts first and is
// never removed). Unfinished ones (no manifest) are left alone. Returns the
// ids removed.
absl::StatusOr<std::vector<std::string>> PruneBackups(const std::string& dir, const std::string& current,
                                                      uint32_t keep) {
  std::error_code ec;
  std::vector<std::pair<std::filesystem::file_time_type, std::string>> finished;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string id = e.path().filename().string();
    std::error_code mec;
    auto written = std::filesystem::last_write_time(e.path() / std::string(kManifest), mec);
    if (mec || id == current) continue;
    finished.emplace_back(written, id);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  std::sort(finished.begin(), finished.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> removed;
  for (size_t i = 0; i < finished.size(); ++i) {
    if (i + 1 < keep) continue;  // the current backup is the first kept
    if (absl::Status s = RemoveAll(absl::StrCat(dir, "/", finished[i].second)); !s.ok()) return s;
    removed.push_back(finished[i].second);
  }
  return removed;
}

std::string FileSafe(absl::string_view text) {
  std::string out;
  for (char c : text) {
    out.push_back(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ? c : '_');
  }
  while (!out.empty() && (out.front() == '_' || out.front() == '.')) out.erase(out.begin());
  if (out.size() > 80) out.resize(80);
  return out.empty() ? "item" : out;
}

std::string Tail(absl::string_view text, size_t max) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  if (text.size() > max) text = text.substr(text.size() - max);
  return std::string(text);
}

std::string ParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Names the artifact of item `index` (its kind and source into *artifact)
// and returns its file name in the backup directory.
std::string ArtifactFile(const hoist::v1::BackupItem& item, int index, hoist::v1::BackupArtifact* artifact) {
  if (item.has_postgres()) {
    artifact->set_kind("postgres");
    artifact->set_source(item.postgres().database());
    return absl::StrFormat("%02d-postgres-%s.dump", index + 1, FileSafe(item.postgres().database()));
  }
  if (item.has_volume()) {
    artifact->set_kind("volume");
    artifact->set_source(item.volume().volume());
    return absl::StrFormat("%02d-volume-%s.tar", index + 1, FileSafe(item.volume().volume()));
  }
  artifact->set_kind("config");
  artifact->set_source(item.config().path());
  return absl::StrFormat("%02d-config-%s", index + 1, FileSafe(item.config().path()));
}

nlohmann::json ArtifactJson(const hoist::v1::BackupArtifact& artifact) {
  return {{"kind", artifact.kind()},
          {"source", artifact.source()},
          {"path", artifact.path()},
          {"size_bytes", artifact.size_bytes()},
          {"sha256", artifact.sha256()},
          {"verified_by", artifact.verified_by()}};
}

// Writes the manifest into partial_dir and makes the backup visible, whole,
// under final_dir.
absl::Status PublishBackup(const std::string& partial_dir, const std::string& final_dir,
                           const nlohmann::json& manifest) {
  if (absl::Status s = WriteFileAtomic(absl::StrCat(partial_dir, "/", kManifest), manifest.dump(2)); !s.ok()) return s;
  if (std::rename(partial_dir.c_str(), final_dir.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", partial_dir, " to ", final_dir));
  }
  return FsyncDir(ParentDir(final_dir));
}

// Removes the deployment's older backups beyond backup.keep() and lists them
// in the result; a failure is only logged (the new backup stands).
void PruneOldBackups(const std::string& dir, const hoist::v1::Backup& backup, hoist::v1::StepResult* result) {
  auto pruned = PruneBackups(dir, backup.backup_id(), backup.keep());
  if (!pruned.ok()) {
    spdlog::warn("backup {}: older backups were not pruned: {}", backup.backup_id(), pruned.status());
    return;
  }
  for (const std::string& id : *pruned) result->mutable_backup()->add_pruned(id);
  if (!pruned->empty()) {
    spdlog::info("backup {}: removed {} older backup(s) of {} (keep {}): {}", backup.backup_id(), pruned->size(),
                 backup.deployment(), backup.keep(), absl::StrJoin(*pruned, ", "));
  }
}

}  // namespace

void StepExecutor::RemoveHelper(const std::string& id) {
  if (absl::Status s = docker_->Remove(id, /*force=*/true, /*remove_volumes=*/false); !s.ok() && !absl::IsNotFound(s)) {
    spdlog::warn("cannot remove helper container {}: {}", id, s);
  }
}

absl::StatusOr<std::string> StepExecutor::CreateVolumeHelper(const StepContext& ctx, absl::string_view deployment,
                                                             absl::string_view volume, int index, bool read_only) {
  std::string image = policy_.helper_image;
  if (image.empty()) {
    // Any image already on the host will do: the helper never runs.
    for (const auto& filters : {std::vector<std::string>{absl::StrCat(labels::kManaged, "=true"),
                                                         absl::StrCat(labels::kDeployment, "=", deployment)},
                                std::vector<std::string>{absl::StrCat(labels::kManaged, "=true")}}) {
      auto containers = docker_->List(filters);
      if (!containers.ok()) return containers.status();
      for (const auto& c : *containers) {
        image = c.image_id.empty() ? c.image : c.image_id;
        if (!image.empty()) break;
      }
      if (!image.empty()) break;
    }
  }
  if (image.empty()) {
    return absl::FailedPreconditionError(
        "no image on this host to build a helper container from (no managed container exists and the agent's "
        "helper_image is not set)");
  }
  std::string name =
      SanitizeContainerName(absl::StrCat("hoist-helper-", Sha256Hex(absl::StrCat(ctx.step.step_id(), "/", index)).substr(0, 16)));
  // A helper left behind by an interrupted run of this step.
  if (auto old = docker_->Inspect(name); old.ok()) {
    if (LabelOf(*old, kHelperLabel) != "true") {
      return absl::AlreadyExistsError(absl::StrCat("a container named ", name, " exists that Hoist did not create"));
    }
    RemoveHelper(old->id);
  }
  docker::ContainerSpec spec;
  spec.name = name;
  spec.image = image;
  spec.command = {"/hoist-helper-never-runs"};
  spec.mounts.push_back(docker::Mount{std::string(volume), std::string(kHelperMount), read_only});
  spec.labels = {{std::string(kHelperLabel), "true"},
                 {std::string(labels::kDeployment), std::string(deployment)},
                 {std::string(labels::kStep), ctx.step.step_id()},
                 {std::string(labels::kAgent), policy_.agent_id}};
  for (const auto& [key, value] : policy_.extra_labels) spec.labels.emplace(key, value);
  auto id = docker_->Create(spec);
  if (!id.ok()) {
    return absl::Status(id.status().code(),
                        absl::StrCat("create a helper container for volume ", volume, ": ", id.status().message()));
  }
  return *id;
}

absl::Status StepExecutor::ReadBackupManifest(const StepContext& ctx, const std::string& dir,
                                              hoist::v1::StepResult* result) {
  std::string path = absl::StrCat(dir, "/", kManifest);
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object() || !manifest["artifacts"].is_array() || !manifest["step_id"].is_string()) {
    return absl::DataLossError(absl::StrCat(path, " is not a backup manifest"));
  }
  if (manifest["step_id"].get<std::string>() != ctx.step.step_id()) {
    return absl::AlreadyExistsError(absl::StrCat("backup ", dir, " already exists, taken by step ",
                                                 manifest["step_id"].get<std::string>(), "; choose another backup id"));
  }
  auto* backup = result->mutable_backup();
  for (const auto& a : manifest["artifacts"]) {
    auto* artifact = backup->add_artifacts();
    artifact->set_kind(a.value("kind", ""));
    artifact->set_source(a.value("source", ""));
    artifact->set_path(a.value("path", ""));
    artifact->set_size_bytes(a.value("size_bytes", uint64_t{0}));
    artifact->set_sha256(a.value("sha256", ""));
    artifact->set_verified_by(a.value("verified_by", ""));
    if (!PathExists(artifact->path())) {
      return absl::DataLossError(absl::StrCat("backup ", dir, " lists ", artifact->path(), " but it is gone"));
    }
  }
  return absl::OkStatus();
}

absl::Status StepExecutor::Backup(const StepContext& ctx, hoist::v1::StepResult* result) {
  const auto& backup = ctx.step.backup();
  std::string final_dir = absl::StrCat(policy_.backup_dir, "/", backup.deployment(), "/", backup.backup_id());
  std::string partial_dir = final_dir + ".partial";
  // Idempotent: a complete backup from an earlier run of this step is the answer.
  if (PathExists(absl::StrCat(final_dir, "/", kManifest))) return ReadBackupManifest(ctx, final_dir, result);
  if (PathExists(final_dir)) {
    return absl::AlreadyExistsError(
        absl::StrCat(final_dir, " exists but holds no manifest; move it aside or choose another backup id"));
  }
  if (absl::Status s = RemoveAll(partial_dir); !s.ok()) return s;
  if (absl::Status s = MakeDirs(partial_dir); !s.ok()) return s;

  absl::Status status = [&]() -> absl::Status {
    nlohmann::json artifacts = nlohmann::json::array();
    for (int i = 0; i < backup.items_size(); ++i) {
      if (absl::Status s = CheckDeadline(ctx, absl::StrCat("backing up item ", i)); !s.ok()) return s;
      auto artifact = BackupItem(ctx, i, partial_dir, final_dir);
      if (!artifact.ok()) return artifact.status();
      artifacts.push_back(ArtifactJson(*artifact));
      hoist::v1::StepProgress progress;
      progress.set_message(absl::StrCat("backed up ", artifact->kind(), " ", artifact->source(), ": ",
                                        artifact->size_bytes(), " bytes, sha256 ", artifact->sha256()));
      Progress(ctx, std::move(progress));
      *result->mutable_backup()->add_artifacts() = std::move(*artifact);
    }
    nlohmann::json manifest = {{"step_id", ctx.step.step_id()},
                               {"deployment", backup.deployment()},
                               {"backup_id", backup.backup_id()},
                               {"taken_at", absl::FormatTime(clock_->Now(), absl::UTCTimeZone())},
                               {"artifacts", artifacts}};
    return PublishBackup(partial_dir, final_dir, manifest);
  }();
  if (!status.ok()) {
    result->clear_backup();
    if (absl::Status s = RemoveAll(partial_dir); !s.ok()) spdlog::error("cannot remove {}: {}", partial_dir, s);
  }
  if (status.ok() && backup.keep() > 0) {
    PruneOldBackups(absl::StrCat(policy_.backup_dir, "/", backup.deployment()), backup, result);
  }
  return status;
}

absl::StatusOr<hoist::v1::BackupArtifact> StepExecutor::BackupItem(const StepContext& ctx, int index,
                                                                   const std::string& partial_dir,
                                                                   const std::string& final_dir) {
  const auto& item = ctx.step.backup().items(index);
  hoist::v1::BackupArtifact artifact;
  const std::string file = ArtifactFile(item, index, &artifact);
  const std::string partial_path = absl::StrCat(partial_dir, "/", file);
  auto written = WriteArtifact(ctx, index, partial_path);
  if (!written.ok()) return written.status();
  // Read back from disk: the artifact must be readable and unchanged.
  auto reread = HashFile(partial_path);
  if (!reread.ok()) return reread.status();
  if (reread->sha256 != written->sha256 || reread->size_bytes != written->size_bytes) {
    return absl::DataLossError(absl::StrCat("artifact ", file, " reads back differently from what was written"));
  }
  std::string verified_by = "sha256 and size read back from disk";
  if (item.has_postgres()) {
    auto listed = VerifyDump(ctx, item.postgres(), partial_path);
    if (!listed.ok()) return listed.status();
    absl::StrAppend(&verified_by, *listed);
  }
  artifact.set_path(absl::StrCat(final_dir, "/", file));
  artifact.set_size_bytes(written->size_bytes);
  artifact.set_sha256(written->sha256);
  artifact.set_verified_by(verified_by);
  return artifact;
}

absl::StatusOr<FileDigest> StepExecutor::WriteArtifact(const StepContext& ctx, int index, const std::string& path) {
  const auto& backup = ctx.step.backup();
  const auto& item = backup.items(index);
  if (item.has_postgres()) {
    auto container = RunningContainerOf(item.postgres().instance(), "");
    if (!container.ok()) return container.status();
    auto writer = HashingFileWriter::Create(path);
    if (!writer.ok()) return writer.status();
    std::vector<std::string> argv = {"pg_dump", "--format=custom", "-U", item.postgres().user(),
                                     item.postgres().database()};
    auto exec = docker_->Exec(container->id, argv, ctx.deadline - clock_->Now(),
                              [&](absl::string_view chunk) { return (*writer)->Write(chunk); });
    if (!exec.ok()) {
      return absl::Status(exec.status().code(), absl::StrCat("pg_dump in ", container->name, ": ",
                                                             exec.status().message()));
    }
    if (exec->exit_code != 0) {
      return absl::InternalError(absl::StrCat("pg_dump of database ", item.postgres().database(), " in ",
                                              container->name, " exited with ", exec->exit_code, ": ",
                                              Tail(exec->output, 500)));
    }
    return (*writer)->Finish();
  }
  if (item.has_volume()) {
    auto helper = CreateVolumeHelper(ctx, backup.deployment(), item.volume().volume(), index, /*read_only=*/true);
    if (!helper.ok()) return helper.status();
    auto writer = HashingFileWriter::Create(path);
    absl::Status s = writer.ok() ? docker_->GetArchive(*helper, kHelperMount,
                                                       [&](absl::string_view chunk) { return (*writer)->Write(chunk); })
                                 : writer.status();
    RemoveHelper(*helper);
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("archive volume ", item.volume().volume(), ": ", s.message()));
    }
    return (*writer)->Finish();
  }
  return CopyFileHashed(item.config().path(), path);
}

// The dump must be one pg_restore can read: its table of contents is listed
// in the database's own container (the same pg_restore a restore would
// use). Returns what the listing showed, for the artifact's verified_by.
absl::StatusOr<std::string> StepExecutor::VerifyDump(const StepContext& ctx, const hoist::v1::PostgresDump& pg,
                                                     const std::string& path) {
  auto container = RunningContainerOf(pg.instance(), "");
  if (!container.ok()) return container.status();
  auto dump = ReadFileToString(path);
  if (!dump.ok()) return dump.status();
  auto listed = docker_->Exec(container->id, {"pg_restore", "--list"}, ctx.deadline - clock_->Now(), nullptr,
                              *dump);
  if (!listed.ok()) {
    return absl::Status(listed.status().code(), absl::StrCat("verifying the dump of ", pg.database(),
                                                             ": pg_restore --list in ", container->name, ": ",
                                                             listed.status().message()));
  }
  if (listed->exit_code != 0) {
    return absl::DataLossError(absl::StrCat("the dump of database ", pg.database(),
                                            " cannot be read back: pg_restore --list exited with ",
                                            listed->exit_code, ": ", Tail(listed->output, 500)));
  }
  int tables = 0, entries = 0;
  for (absl::string_view line : absl::StrSplit(listed->output, '\n')) {
    if (line.empty() || line[0] == ';') continue;
    ++entries;
    if (absl::StrContains(line, " TABLE DATA ")) ++tables;
  }
  return absl::StrCat("; pg_restore --list reads ", entries, " entries, ", tables,
                      tables == 1 ? " table's data" : " tables' data");
}

absl::Status StepExecutor::Restore(const StepContext& ctx) {
  const auto& restore = ctx.step.restore();
  // Every artifact is checked before anything is touched.
  for (int i = 0; i < restore.artifacts_size(); ++i) {
    const auto& a = restore.artifacts(i);
    auto digest = HashFile(a.path());
    if (!digest.ok()) {
      return absl::Status(digest.status().code(),
                          absl::StrCat("restore.artifacts[", i, "]: ", digest.status().message()));
    }
    if (digest->sha256 != absl::AsciiStrToLower(a.sha256()) ||
        (a.size_bytes() != 0 && digest->size_bytes != a.size_bytes())) {
      return absl::DataLossError(absl::StrCat("restore.artifacts[", i, "]: ", a.path(), " has sha256 ", digest->sha256,
                                              " and ", digest->size_bytes, " bytes but the backup recorded ",
                                              a.sha256(), " and ", a.size_bytes(),
                                              " bytes; refusing to restore a corrupted artifact"));
    }
  }
  for (int i = 0; i < restore.artifacts_size(); ++i) {
    const auto& a = restore.artifacts(i);
    if (absl::Status s = CheckDeadline(ctx, absl::StrCat("restoring artifact ", i)); !s.ok()) return s;
    if (a.kind() == "postgres") {
      auto container = RunningContainerOf(restore.database_instance(), "");
      if (!container.ok()) return container.status();
      auto dump = ReadFileToString(a.path());
      if (!dump.ok()) return dump.status();
      std::vector<std::string> argv = {"pg_restore", "--clean", "--if-exists", "-U", restore.database_user(),
                                       "-d", a.source()};
      auto exec = docker_->Exec(container->id, argv, ctx.deadline - clock_->Now(), nullptr, *dump);
      if (!exec.ok()) {
        return absl::Status(exec.status().code(),
                            absl::StrCat("pg_restore in ", container->name, ": ", exec.status().message()));
      }
      if (exec->exit_code != 0) {
        return absl::InternalError(absl::StrCat("pg_restore of database ", a.source(), " in ", container->name,
                                                " exited with ", exec->exit_code, ": ", Tail(exec->output, 500)));
      }
    } else if (a.kind() == "volume") {
      auto helper = CreateVolumeHelper(ctx, restore.deployment(), a.source(), i, /*read_only=*/false);
      if (!helper.ok()) return helper.status();
      // The archive holds "hoist-volume/..." entries: extracting at / lands them in the volume.
      absl::Status s = docker_->PutArchive(*helper, "/", a.path());
      RemoveHelper(*helper);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("restore volume ", a.source(), ": ", s.message()));
    } else {
      std::string tmp = absl::StrCat(a.source(), ".hoist-restore");
      auto copied = CopyFileHashed(a.path(), tmp);
      if (!copied.ok()) return copied.status();
      if (std::rename(tmp.c_str(), a.source().c_str()) != 0) {
        RemoveAll(tmp).IgnoreError();
        return absl::InternalError(absl::StrCat("cannot replace ", a.source()));
      }
      if (absl::Status s = FsyncDir(ParentDir(a.source())); !s.ok()) return s;
    }
    hoist::v1::StepProgress progress;
    progress.set_message(absl::StrCat("restored ", a.kind(), " ", a.source()));
    Progress(ctx, std::move(progress));
  }
  return absl::OkStatus();
}

}  // namespace hoist::agent
