// The cab-client subcommand table. Each subcommand lives in <name>_command.cc and is listed once
// in commands.cc. run() gets argv without the program name (argv[0] is the subcommand) and returns
// the exit code: 0 ok, 1 RPC error, 2 usage.
#pragma once

namespace cab::cli {

struct Command {
  const char* name;
  const char* help;
  int (*run)(int argc, char** argv);
};

// The table, terminated by an entry with name == nullptr.
extern const Command kCommands[];

int RunInfo(int argc, char** argv);
int RunPredict(int argc, char** argv);
int RunEvict(int argc, char** argv);
int RunBridgeDemo(int argc, char** argv);
int RunBench(int argc, char** argv);
int RunAttention(int argc, char** argv);  // client/cli/attention_command.cc (engineer "a")

}  // namespace cab::cli
