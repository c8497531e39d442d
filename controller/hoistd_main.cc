// hoistd: the Hoist controller. All logic lives in hoist_controller.
#include "controller/controller_main.h"

int main(int argc, char** argv) { return hoist::ControllerMain(argc, argv); }
