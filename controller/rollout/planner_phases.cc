// Planner phases around the moves: pre-flight, backup, pull and pin before
// anything moves (blue-green shares the first three), the postcheck and the
// smoke test after, and a restore's stop-app and restore phases.

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/rollout/planner_internal.h"
#include "shared/status_macros.h"

namespace hoist::rollout::internal {

void Planner::PhasePreflight() {
  PlanPhase& ph = AddPhase(
      PhaseRole::kPreflight, "",
      mode_ == Mode::kUpgrade
          ? "first, before anything is touched: if the current deployment is already unhealthy the "
            "rollout stops here, so a fresh problem is never blamed on the new version"
          : "first, before anything is touched: every host must answer");
  std::vector<std::string> hosts;
  for (const HostSpec& h : m_.hosts) hosts.push_back(h.id);
  AddStep(ph, "agents", StepKind::kPreflight, "",
          absl::StrCat("every host's agent is connected: ", absl::StrJoin(hosts, ", ")), 0, kControllerStepTimeout);
  if (mode_ == Mode::kUpgrade) {
    // Every running instance with a health check is probed now, all at once
    // (one batch): the inventory's health can be minutes old.
    for (const ServiceSpec& s : m_.services) {
      if (s.role == v1::ROLE_JOB || !s.health.has_value()) continue;
      for (const auto& [replica, lives] : live_[s.name]) {
        for (const Live& l : lives) {
          if (!l.running) continue;
          PlanStep& st = AddStep(
              ph, absl::StrCat("health-", s.name, "-", replica, lives.size() > 1 ? absl::StrCat("-", l.version) : ""),
              StepKind::kProbeHealth, l.agent,
              absl::StrCat(s.name, " replica ", replica, " (", l.version, ") on ", l.agent,
                           " passes its health check now (deadline ", Fmt(s.health->deadline), ")"),
              0, s.health->deadline + kStepSlack);
          st.instance = Ref(s.name, replica, live_slot_);
          v1::ProbeHealth* a = st.action.mutable_probe_health();
          *a->mutable_instance() = *st.instance;
          *a->mutable_check() = CheckOf(*s.health, l.version);
          a->set_version(l.version);
        }
      }
    }
  }
  if ((mode_ == Mode::kUpgrade || mode_ == Mode::kInitial) &&
      (in_.target.required_env_size() > 0 || in_.target.renamed_env_size() > 0)) {
    std::vector<std::string> names(in_.target.required_env().begin(), in_.target.required_env().end());
    for (const auto& [o, n] : in_.target.renamed_env()) names.push_back(absl::StrCat(o, "->", n));
    AddStep(ph, "env", StepKind::kPreflight, "",
            absl::StrCat("env vars release ", to_version_, " needs are set: ", absl::StrJoin(names, ", ")), 0,
            kControllerStepTimeout);
  }
  AddStep(ph, "disk", StepKind::kPreflight, "",
          absl::StrCat("every host pulling images has ", in_.options.min_image_disk_free_bytes >> 20,
                       " MiB free", m_.backup.has_value() && mode_ == Mode::kUpgrade && !in_.options.skip_backup
                                        ? absl::StrCat(", the backup host ", in_.options.min_backup_disk_free_bytes >> 20, " MiB")
                                        : ""),
          0, kControllerStepTimeout);
}

absl::Status Planner::PhaseBackupUnlessSkipped() {
  if (!m_.backup.has_value()) return absl::OkStatus();
  if (in_.options.skip_backup) {
    plan_.warnings.push_back("the backup is skipped at the operator's request: a rollback cannot restore data");
    return absl::OkStatus();
  }
  return PhaseBackup();
}

absl::StatusOr<std::string> Planner::BackupHost() {
  const BackupSpec& b = *m_.backup;
  // One agent takes the whole backup: the database's host, else the first
  // host that mounts a listed volume, else the first host.
  std::string host;
  if (b.postgres.has_value()) {
    const std::string& db_service = b.postgres->service;
    if (!placement_[db_service].empty()) host = placement_[db_service][0];
  }
  if (host.empty() && !b.volumes.empty()) {
    for (const ServiceSpec& s : m_.services) {
      for (const VolumeSpec& v : s.volumes) {
        if (host.empty() && v.source == b.volumes[0] && !placement_[s.name].empty()) host = placement_[s.name][0];
      }
    }
  }
  if (host.empty()) host = m_.hosts.front().id;
  for (const std::string& vol : b.volumes) {
    bool here = false;
    for (const ServiceSpec& s : m_.services) {
      for (const VolumeSpec& v : s.volumes) {
        if (v.source != vol) continue;
        for (const std::string& h : placement_[s.name]) here = here || h == host;
      }
    }
    if (!here) {
      return absl::FailedPreconditionError(absl::StrCat(
          "backup.volumes names ", vol, ", but no service mounts it on ", host,
          ", the host that takes the backup; place the services that use it there"));
    }
  }
  const AgentState* a = agents_.at(host);
  if (a->backup_disk_free_bytes < in_.options.min_backup_disk_free_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pre-flight: ", host, " has ", a->backup_disk_free_bytes >> 20, " MiB free for the backup; at least ",
        in_.options.min_backup_disk_free_bytes >> 20, " MiB are needed"));
  }
  return host;
}

absl::Status Planner::PhaseBackup() {
  const BackupSpec& b = *m_.backup;
  HOIST_ASSIGN_OR_RETURN(const std::string host, BackupHost());
  const std::string db_service = b.postgres.has_value() ? b.postgres->service : "";
  plan_.backup_id = in_.options.backup_id;
  if (plan_.backup_id.empty()) {
    plan_.backup_id = absl::StrCat(m_.deployment, "-pre-", to_version_);
    if (!in_.options.backup_suffix.empty()) absl::StrAppend(&plan_.backup_id, "-", in_.options.backup_suffix);
  }
  PlanPhase& ph = AddPhase(
      "backup",
      "before any image changes: migrations are forward-only, so this backup is what a rollback "
      "restores; a failed backup stops the upgrade with nothing changed");
  std::vector<std::string> what;
  v1::Backup backup;
  backup.set_deployment(m_.deployment);
  backup.set_backup_id(plan_.backup_id);
  backup.set_keep(b.keep);
  if (b.postgres.has_value()) {
    v1::PostgresDump* pg = backup.add_items()->mutable_postgres();
    *pg->mutable_instance() = Ref(db_service, 0);
    pg->set_database(b.postgres->database);
    pg->set_user(b.postgres->user);
    what.push_back(absl::StrCat("database ", b.postgres->database, " (pg_dump from ", db_service, ")"));
  }
  for (const std::string& vol : b.volumes) {
    backup.add_items()->mutable_volume()->set_volume(vol);
    what.push_back(absl::StrCat("volume ", vol));
  }
  for (const std::string& f : b.config_files) {
    backup.add_items()->mutable_config()->set_path(f);
    what.push_back(f);
  }
  PlanStep& st = AddStep(ph, "backup", StepKind::kBackup, host,
                         absl::StrCat("back up ", absl::StrJoin(what, ", "), " on ", host, " as ", plan_.backup_id,
                                      "; sizes and sha256 recorded and read back; the newest ", b.keep,
                                      " backups are kept"),
                         0, b.timeout);
  *st.action.mutable_backup() = backup;
  return absl::OkStatus();
}

void Planner::PhasePull(const std::vector<std::string>& services) {
  PlanPhase& ph = AddPhase(
      PhaseRole::kPull, "",
      "every new image is pulled on every host that runs it, in parallel, before anything is "
      "stopped: a registry or disk problem stops the rollout with nothing changed");
  for (const HostSpec& h : m_.hosts) {
    std::set<std::string> images;
    for (const std::string& name : services) {
      const ServiceSpec& s = *m_.FindService(name);
      std::vector<std::string> hosts = placement_[name];
      if (hosts.empty()) hosts.push_back(HostOfFirstReplica(s));
      if (std::find(hosts.begin(), hosts.end(), h.id) == hosts.end()) continue;
      std::string image = NewImage(s);
      if (!images.insert(image).second) continue;
      PlanStep& st = AddStep(ph, absl::StrCat("pull-", h.id, "-", name), StepKind::kPullImage, h.id,
                             absl::StrCat("pull ", image, " on ", h.id), 0, in_.options.pull_timeout);
      st.action.mutable_pull_image()->set_image(image);
    }
  }
}

void Planner::PhasePin() {
  PlanPhase& ph = AddPhase(
      "pin", "the images are on every host, so the target is recorded now: from here a restart of "
             "the controller or any host comes back on " + to_version_ + ", not on what ran before");
  AddStep(ph, "pin", StepKind::kPin, "",
          absl::StrCat("record ", to_version_, " as ", m_.deployment, "'s pinned version"), 0, kControllerStepTimeout);
}

void Planner::PhasePostcheck() {
  PlanPhase& ph = AddPhase("postcheck",
                           "after every move: each instance is probed once more on the version it should run");
  for (const ServiceSpec& s : m_.services) {
    if (s.role == v1::ROLE_JOB) continue;
    for (uint32_t r = 0; r < s.replicas && r < placement_[s.name].size(); ++r) {
      std::string version = NewVersion(s);
      if (!Moves(s)) {
        for (const Live& c : live_[s.name][r]) version = c.version;
      }
      StepProbe(ph, s, r, version, 0, true);
    }
  }
  if (ph.steps.empty()) {
    plan_.phases.pop_back();
    plan_.warnings.push_back("no service has a health check: the post-upgrade check only knows containers started");
  }
  const std::optional<SmokeTestSpec>& smoke = m_.smoke_test;
  if (smoke.has_value() && mode_ != Mode::kRestore && mode_ != Mode::kRollback) {
    const ServiceSpec& s = *m_.FindService(smoke->service);
    PlanPhase& sp = AddPhase("smoke-test", "last: the smoke test runs against the whole stack once every instance is healthy");
    StepJob(sp, s, "smoke-test", smoke->job.command, smoke->job.timeout, StepKind::kSmokeTest,
            absl::StrCat("run the smoke test with the ", s.name, " ", NewVersion(s), " image"), 0);
  }
}

void Planner::PhaseStopApp() {
  PlanPhase& ph = AddPhase(
      "stop-app",
      "the backup is restored into a database nothing writes to: every application service stops "
      "first (the scheduler before the rest); the database and the proxy keep running");
  for (const ServiceSpec& s : m_.services) {
    if (!Moves(s) || s.role == v1::ROLE_PROXY) continue;
    uint32_t batch = s.role == v1::ROLE_SCHEDULER ? 0 : 1;
    for (auto& [r, cs] : live_[s.name]) {
      for (Live& c : cs) {
        if (c.running) StepStop(ph, s, r, c, batch);
      }
    }
  }
  if (ph.steps.empty()) {
    AddStep(ph, "none", StepKind::kPreflight, "", "no application instance runs; nothing to stop", 0,
            kControllerStepTimeout);
  }
}

absl::Status Planner::PhaseRestore(const v1::BackupRecord& record) {
  if (!agents_.contains(record.agent_id())) {
    return absl::FailedPreconditionError(absl::StrCat("backup ", record.id(), " is held by ", record.agent_id(),
                                                      ", which is not a connected host of ", m_.deployment));
  }
  if (record.artifacts_size() == 0) {
    return absl::FailedPreconditionError(absl::StrCat("backup ", record.id(), " has no artifacts to restore"));
  }
  if (m_.backup.has_value() && m_.backup->postgres.has_value()) {
    const std::vector<std::string>& db_hosts = placement_[m_.backup->postgres->service];
    if (!db_hosts.empty() && db_hosts[0] != record.agent_id()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "backup ", record.id(), " is held by ", record.agent_id(), " but ", m_.backup->postgres->service,
          " runs on ", db_hosts[0], "; the restore runs beside the database, so the backup must be on its host"));
    }
  }
  plan_.backup_id = record.id();
  PlanPhase& ph = AddPhase(
      "restore",
      absl::StrCat("migrations are forward-only: the database goes back to backup ", record.id(),
                   " (taken before the upgrade) so the old version finds the schema it expects; "
                   "data written since is lost"));
  v1::Restore restore;
  restore.set_deployment(m_.deployment);
  restore.set_backup_id(record.id());
  *restore.mutable_artifacts() = record.artifacts();
  std::vector<std::string> what;
  for (const v1::BackupArtifact& a : record.artifacts()) what.push_back(absl::StrCat(a.kind(), " ", a.source()));
  if (m_.backup.has_value() && m_.backup->postgres.has_value()) {
    *restore.mutable_database_instance() = Ref(m_.backup->postgres->service, 0);
    restore.set_database_user(m_.backup->postgres->user);
  }
  PlanStep& st = AddStep(ph, "restore", StepKind::kRestore, record.agent_id(),
                         absl::StrCat("restore ", absl::StrJoin(what, ", "), " from backup ", record.id(), " on ",
                                      record.agent_id(), " after checking each sha256"),
                         0, m_.backup.has_value() ? m_.backup->timeout : absl::Minutes(30));
  if (restore.has_database_instance()) st.instance = restore.database_instance();
  *st.action.mutable_restore() = restore;
  return absl::OkStatus();
}

}  // namespace hoist::rollout::internal
