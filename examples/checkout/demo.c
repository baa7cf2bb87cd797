/* demo.c — placeholder replaced below */
#include "ck.h"
int ck_demo(int argc, char **argv) { (void)argc; (void)argv; return 1; }
