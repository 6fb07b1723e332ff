/*
 * version.h - `--version` of every tool (shmq, shmq-watchdog, shmq-bridge): one line
 * "NAME VERSION" on stdout, the version being the library's (shmq_version(), from
 * project(VERSION) in CMakeLists.txt). help2man reads this line for the man pages.
 */
#ifndef SHMQ_TOOLS_VERSION_H
#define SHMQ_TOOLS_VERSION_H

/* getopt_long()'s value for {"version", no_argument, NULL, TOOL_OPT_VERSION}: above the
 * characters and clear of the tools' own OPT_* values (256 and up). */
#define TOOL_OPT_VERSION 0x7e57

/* Print "name VERSION\n" on stdout; 0, or -1 if stdout could not be written. */
int tool_print_version(const char *name);

#endif
