#pragma once

// The gRPC adapter of AgentService.Session: it authenticates the stream,
// redirects agents that dialled a follower, and forwards everything else to
// AgentHub.
//
// Sessions use gRPC's callback API: an open session is a reactor, not a
// thread, so a thousand agents cost a thousand small objects and the
// library's few polling threads. What may wait on Postgres (recording a
// hello, recording a disconnect) runs on the service's own workers, never
// on gRPC's threads. Writes go through a per-session queue so that a slow
// agent never blocks the hub.

#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/agent_hub.h"
#include "controller/authorizer.h"
#include "controller/leadership.h"
#include "hoist/v1/agent.grpc.pb.h"

namespace hoist {

class SessionReactor;

struct AgentServiceOptions {
  // How long a new session may take to send its Hello.
  absl::Duration hello_timeout = absl::Seconds(10);
  // Session calls one agent certificate may have open at once (a reconnect
  // may overlap the old session's end; more is one key holding streams).
  int max_calls_per_certificate = 4;
  // Threads that record hellos and disconnects. Hellos that arrive together
  // are recorded together (PgAgentStore), as many as there are workers.
  int workers = 16;
};

class AgentServiceImpl final : public hoist::v1::AgentService::CallbackService {
 public:
  // Sessions are opened only while `leadership` says this replica leads; a
  // follower sends agents to the leader it names. With an
  // authorizer under mTLS, the client certificate must be an agent's, not
  // revoked, and its common name must equal Hello.agent_id; auth may be
  // null (development, nothing checked).
  AgentServiceImpl(AgentHub* hub, const Leadership* leadership, const Authorizer* auth,
                   AgentServiceOptions options = {});
  // The gRPC server must be shut down first (it waits for every session to
  // end); this then finishes the work those sessions left.
  ~AgentServiceImpl() override;
  AgentServiceImpl(const AgentServiceImpl&) = delete;
  AgentServiceImpl& operator=(const AgentServiceImpl&) = delete;

  grpc::ServerBidiReactor<hoist::v1::SessionRequest, hoist::v1::SessionResponse>* Session(
      grpc::CallbackServerContext* context) override;

  // Ends the open sessions whose certificate is now revoked (called when the
  // revocation list changes). Returns how many it ended.
  int CloseRevokedSessions();

 private:
  friend class SessionReactor;

  // Runs `job` on a worker thread (jobs may wait on Postgres).
  void Post(std::function<void()> job);
  void WorkLoop();
  // Cancels the sessions that sent no hello in time, once a second.
  void HelloWatchLoop();

  // A reactor's start and end, for the revocation sweep, the hello watch and
  // the per-certificate limit. Begin returns false when the certificate has
  // too many calls open.
  bool Begin(SessionReactor* reactor, const std::string& serial);
  void End(SessionReactor* reactor, const std::string& serial);

  AgentHub* const hub_;
  const Leadership* const leadership_;
  const Authorizer* const auth_;
  const AgentServiceOptions options_;

  absl::Mutex mu_;
  std::set<SessionReactor*> open_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_per_serial_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex work_mu_;
  std::deque<std::function<void()>> work_ ABSL_GUARDED_BY(work_mu_);
  bool work_stop_ ABSL_GUARDED_BY(work_mu_) = false;
  std::vector<std::thread> workers_;
  std::thread hello_watch_;
};

}  // namespace hoist
