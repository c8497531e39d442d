#include "controller/cli/cli_main.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/cli/ca_command.h"
#include "controller/cli/commands.h"
#include "controller/cli/exit_codes.h"
#include "controller/cli/interrupt.h"
#include "shared/flags.h"

namespace hoist {
namespace {

using cli::Args;
using cli::CliIo;

struct Verb {
  const char* words;  // one or two words: "plan", "release create"
  const char* summary;
  int (*run)(const Args&, CliIo&);
};

constexpr Verb kVerbs[] = {
    {"apply", "Validate a stack manifest and store it as its deployment.", cli::RunApply},
    {"release create", "Record a release from a YAML file.", cli::RunReleaseCreate},
    {"release show", "Show one release: images, env changes, notes.", cli::RunReleaseShow},
    {"releases", "List a deployment's releases.", cli::RunReleases},
    {"plan", "What an upgrade to VERSION would do, in order, and why.", cli::RunPlan},
    {"upgrade", "Upgrade to VERSION and follow it live (rolling or blue-green).", cli::RunUpgrade},
    {"watch", "Re-attach to a rollout and follow it to the end.", cli::RunWatch},
    {"status", "Pinned release, latest rollout, lock, instances and problems.", cli::RunStatus},
    {"matrix", "Which version runs where; skew is flagged.", cli::RunMatrix},
    {"rollback", "Back to the previous release (restoring a backup if needed).", cli::RunRollback},
    {"cutover", "Blue-green: switch --back, --forward, or --finish.", cli::RunCutover},
    {"cancel", "Stop a running rollout after its current steps.", cli::RunCancel},
    {"backups", "List a deployment's backups.", cli::RunBackups},
    {"lock status", "List the deploy locks held now.", cli::RunLockStatus},
    {"audit", "The audit log, newest first.", cli::RunAudit},
    {"agents", "Agents, their hosts, connection and last heartbeat.", cli::RunAgents},
};

constexpr const char* kExitCodes =
    "Exit codes:\n"
    "  0    success\n"
    "  1    the operation ran and failed: a rollout failed, was cancelled or rolled back; hoistd refused\n"
    "  2    bad usage: an unknown flag, a bad value, an invalid file\n"
    "  3    not found: no such deployment, release, rollout or backup\n"
    "  69   no controller answered (or it lacks the call)\n"
    "  77   refused: your certificate's level does not allow the call, or it is revoked\n"
    "  130  interrupted: Ctrl-C detached from a watched rollout, which keeps running\n";

std::string TopHelp() {
  FlagSet globals("hoist VERB [ARGS] [flags]",
                  "Plan and run safe upgrades of multi-service apps across Docker hosts.");
  cli::AddGlobalFlags(globals);
  globals.AddExample("hoist plan 1.5.0");
  globals.AddExample("hoist upgrade 1.5.0 --strategy blue-green");
  globals.AddExample("HOIST_CONTROLLER=ctl-1:7443,ctl-2:7443 hoist status -d shop");
  std::string verbs = "\nVerbs:\n";
  auto line = [&](absl::string_view name, absl::string_view summary) {
    std::string left = absl::StrCat("  ", name);
    left.resize(std::max<size_t>(left.size() + 2, 20), ' ');
    absl::StrAppend(&verbs, left, summary, "\n");
  };
  for (const auto& v : kVerbs) line(v.words, v.summary);
  line("ca init|issue", "The fleet CA and mTLS certificates (hoist ca --help).");
  line("version", "Print the CLI's version.");
  absl::StrAppend(&verbs, "\nEvery verb takes --help. Global flags (before or after the verb; -d is --deployment):\n");
  std::string help = globals.Help();
  // Verbs first: they are what people look for.
  size_t flags_at = help.find("\nFlags:\n");
  return absl::StrCat(help.substr(0, flags_at), verbs, help.substr(flags_at + 8), "\n", kExitCodes);
}

}  // namespace

int RunCli(const std::vector<std::string>& raw_args, CliIo& io) {
  std::vector<std::string> args = raw_args;
  for (auto& a : args) {
    if (a == "-d") a = "--deployment";
  }
  // The verb is the first word that is not a global flag or its value.
  size_t verb_at = args.size();
  bool help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      help = true;
      continue;
    }
    if (a == "--version") {
      // As hoistd and hoist-agent take it; the same as `hoist version`.
      *io.out << "hoist " << HOIST_VERSION << "\n";
      return cli::kExitOk;
    }
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      std::string name = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
      bool takes_value = false;
      if (!cli::IsGlobalFlag(name, &takes_value)) {
        *io.err << "hoist: unknown flag --" << name << " before the verb; verb flags go after it (see hoist --help)\n";
        return cli::kExitUsage;
      }
      if (takes_value && a.find('=') == std::string::npos) ++i;
      continue;
    }
    verb_at = i;
    break;
  }
  if (verb_at == args.size()) {
    (help ? *io.out : *io.err) << TopHelp();
    return help ? cli::kExitOk : cli::kExitUsage;
  }
  std::string word = args[verb_at];
  std::vector<std::string> rest(args.begin(), args.begin() + verb_at);
  rest.insert(rest.end(), args.begin() + verb_at + 1, args.end());
  if (word == "version") {
    *io.out << "hoist " << HOIST_VERSION << "\n";
    return cli::kExitOk;
  }
  if (word == "ca") {
    // `ca` works offline on local files and has its own flags.
    return RunCaCommand(std::vector<std::string>(args.begin() + verb_at + 1, args.end()), *io.out, *io.err);
  }
  if (word == "help") {
    // `hoist help VERB` is `hoist VERB --help`.
    if (verb_at + 1 >= args.size()) {
      *io.out << TopHelp();
      return cli::kExitOk;
    }
    std::vector<std::string> again(args.begin() + verb_at + 1, args.end());
    again.push_back("--help");
    return RunCli(again, io);
  }
  bool group = false;
  for (const auto& v : kVerbs) {
    std::string words = v.words;
    size_t space = words.find(' ');
    if (space == std::string::npos) {
      if (words == word) return v.run(rest, io);
      continue;
    }
    if (words.substr(0, space) != word) continue;
    group = true;
    // Two-word verb: the sub-verb is the next word after the group.
    for (size_t i = verb_at; i < rest.size(); ++i) {
      if (rest[i].rfind("-", 0) == 0) {
        bool takes_value = false;
        std::string name = rest[i].substr(rest[i].rfind("--", 0) == 0 ? 2 : 1);
        if (name.find('=') == std::string::npos && cli::IsGlobalFlag(name, &takes_value) && takes_value) ++i;
        continue;
      }
      if (rest[i] == words.substr(space + 1)) {
        Args sub = rest;
        sub.erase(sub.begin() + i);
        return v.run(sub, io);
      }
      break;
    }
  }
  if (group) {
    std::string choices;
    for (const auto& v : kVerbs) {
      if (absl::string_view(v.words).substr(0, word.size() + 1) == word + " ") {
        absl::StrAppend(&choices, "\n  hoist ", v.words, "  ", v.summary);
      }
    }
    *io.err << "hoist " << word << ": expected one of:" << choices << "\n";
    return cli::kExitUsage;
  }
  *io.err << "hoist: unknown verb \"" << word << "\"; see hoist --help\n";
  return cli::kExitUsage;
}

int CliMain(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // SIGINT is taken by a thread of ours, so that Ctrl-C can cancel a watch
  // stream (which a signal handler could not do safely).
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  cli::Interrupt interrupt;
  std::atomic<bool> done{false};
  std::thread signals([&] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (done.load()) return;
      // Nothing to detach from, or a second Ctrl-C: stop now.
      bool again = interrupt.triggered();
      if (again || !interrupt.Trigger()) {
        constexpr char kMsg[] = "\nhoist: interrupted\n";
        (void)!write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
        _exit(cli::kExitInterrupted);
      }
    }
  });
  CliIo io{.in = &std::cin,
           .out = &std::cout,
           .err = &std::cerr,
           .stdin_tty = isatty(STDIN_FILENO) == 1,
           .stdout_tty = isatty(STDOUT_FILENO) == 1,
           .clock = RealClock::Get(),
           .interrupt = &interrupt};
  int code = RunCli(args, io);
  std::cout.flush();
  done.store(true);
  pthread_kill(signals.native_handle(), SIGINT);
  signals.join();
  return code;
}

}  // namespace hoist
