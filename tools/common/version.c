/*
 * version.c - `--version` of every tool (see version.h).
 */
#include "version.h"

#include <stdio.h>

#include "shmq/shmq.h"

int tool_print_version(const char *name)
{
    printf("%s %s\n", name, shmq_version());
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}
