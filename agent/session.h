#pragma once

// AgentSession: the agent's end of AgentService.Session. It dials the
// controller addresses it was given (following a NotLeader hint to the
// leader), says Hello, and then, until stopped: runs the steps the leader
// pushes (each on its own thread, results through the same stream), sends
// heartbeats, and sends its inventory on connect, on request and whenever it
// changes. It reconnects with capped, jittered backoff. It listens on no port.

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "hoist/v1/agent.grpc.pb.h"

namespace hoist {

struct AgentSessionOptions {
  // host:port of each controller replica.
  std::vector<std::string> controllers;
  // mTLS credentials (or insecure ones for development).
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Identity and labels; protocol and versions are filled by the session.
  hoist::v1::Hello hello;
  // Runs one step to its result (StepExecutor::Run).
  std::function<hoist::v1::StepResult(const hoist::v1::Step&,
                                      const std::function<void(const hoist::v1::StepProgress&)>&)>
      run_step;
  // A snapshot of the managed containers.
  std::function<absl::StatusOr<hoist::v1::Inventory>()> take_inventory;
  // Free bytes where Docker keeps images and in the backup directory, sent
  // in every heartbeat.
  std::function<std::pair<uint64_t, uint64_t>()> disk_free;
  // The highest epoch the agent has accepted steps from (from its journal).
  std::function<uint64_t()> highest_epoch;
  // How often the inventory is compared with the last one sent.
  absl::Duration inventory_interval = absl::Seconds(3);
  absl::Duration backoff_min = absl::Milliseconds(100);
  absl::Duration backoff_max = absl::Seconds(5);
  // A controller whose connection (TCP, TLS, HTTP/2) is not up this long
  // after the agent dialled is given up for the next one: a frozen or
  // cut-off host still completes TCP handshakes, and nothing else would end
  // the wait.
  absl::Duration hello_timeout = absl::Seconds(5);
  // Once the connection is up (TLS and HTTP/2 included), how long the
  // controller may take to answer the hello. Longer than hello_timeout: a
  // controller welcoming a thousand agents at once is slow, not gone (a
  // frozen one stops answering keepalive pings, which ends the wait sooner),
  // and giving up on it only adds a connection to its load.
  absl::Duration hello_answer_timeout = absl::Seconds(30);
  // HTTP/2 keepalive on the session: a ping every keepalive_time, and the
  // connection is dropped when one goes unanswered for keepalive_timeout. It
  // is what tells a frozen or vanished controller from a quiet one (TCP
  // alone keeps a stopped process's socket open).
  absl::Duration keepalive_time = absl::Seconds(2);
  absl::Duration keepalive_timeout = absl::Seconds(2);
  // Under mTLS: true when a certificate serial is on the fleet's revocation
  // list. The controller's certificate is checked (role controller, not
  // revoked) when it welcomes the agent, before any step is taken from it.
  // Empty: no TLS, nothing checked.
  std::function<bool(const std::string& serial)> is_revoked;
};

class AgentSession {
 public:
  explicit AgentSession(AgentSessionOptions options);
  // Stops and joins every thread.
  ~AgentSession();
  AgentSession(const AgentSession&) = delete;
  AgentSession& operator=(const AgentSession&) = delete;

  void Start();
  void Stop();

  // True while a session with the leader is open (for tests and logs).
  bool connected() const { return connected_.load(); }
  // Epoch of the leader of the current session; 0 when not connected.
  uint64_t session_epoch() const { return session_epoch_.load(); }

  // Ends the open session when its controller's certificate is now revoked
  // (called when the revocation list changes).
  void CloseIfControllerRevoked();

 private:
  using Stream = grpc::ClientReaderWriter<hoist::v1::SessionRequest, hoist::v1::SessionResponse>;

  void Loop();
  // One connection attempt and, on Welcome, the whole session. Returns the
  // leader address hinted by a NotLeader, if any.
  std::string RunOnce(const std::string& address);
  // RunOnce's parts: a channel to the controller with the session's
  // keepalive and reconnect settings; the wait for its connection (false,
  // and says why, when it is not up within hello_timeout); the hello this
  // agent sends; and the session served after a Welcome.
  std::shared_ptr<grpc::Channel> Dial(const std::string& address) const;
  bool AwaitConnection(grpc::Channel& channel, const std::string& address);
  hoist::v1::SessionRequest HelloMessage() const;
  void ServeWelcome(Stream* stream, grpc::ClientContext* context, const std::string& address,
                    const hoist::v1::Welcome& welcome);
  void Serve(Stream* stream, grpc::ClientContext* context, absl::Duration heartbeat_interval);
  // Checks the certificate of the controller that welcomed the agent; false
  // (and says why) when it is not a controller's or is revoked.
  bool ControllerCertificateOk(grpc::ClientContext& context, const std::string& address);
  // Writes to the open session's stream; false when there is none.
  bool Write(const hoist::v1::SessionRequest& message);
  void SendInventory(bool only_if_changed);
  void ReapWorkers(bool all);

  // A step's worker thread, reaped once it has sent its result.
  struct StepWorker {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  bool Stopping();

  const AgentSessionOptions options_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> session_epoch_{0};

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* active_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Serial of the certificate of the controller the open session is with.
  std::string controller_serial_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> running_steps_ ABSL_GUARDED_BY(mu_);

  absl::Mutex write_mu_;
  std::string last_inventory_ ABSL_GUARDED_BY(write_mu_);
  Stream* current_stream_ ABSL_GUARDED_BY(write_mu_) = nullptr;

  absl::Mutex workers_mu_;
  std::vector<std::unique_ptr<StepWorker>> workers_ ABSL_GUARDED_BY(workers_mu_);

  std::thread thread_;
};

}  // namespace hoist
