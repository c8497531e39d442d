// hoist: the operator CLI. All logic lives in hoist_cli.
#include "controller/cli/cli_main.h"

int main(int argc, char** argv) { return hoist::CliMain(argc, argv); }
