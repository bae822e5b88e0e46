// cab-client: command-line client of the cab.v1.MaskPredictor service.
//   cab-client SUBCOMMAND --server=HOST:PORT [--json] [flags]   (cab-client help lists them)
#include <cstdio>
#include <cstring>

#include "commands.h"

int main(int argc, char** argv) {
  using cab::cli::kCommands;
  auto usage = [](FILE* out) {
    std::fprintf(out, "usage: cab-client SUBCOMMAND --server=HOST:PORT [--json] [flags]\n\nsubcommands:\n");
    for (const auto* c = kCommands; c->name; ++c) std::fprintf(out, "  %-12s %s\n", c->name, c->help);
    std::fprintf(out, "\n`cab-client SUBCOMMAND --help` lists its flags. Exit codes: 0 ok, 1 RPC error, 2 usage.\n");
  };
  if (argc < 2) return usage(stderr), 2;
  if (!std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))
    return usage(stdout), 0;
  for (const auto* c = kCommands; c->name; ++c)
    if (!std::strcmp(argv[1], c->name)) return c->run(argc - 1, argv + 1);
  std::fprintf(stderr, "error: unknown subcommand '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
