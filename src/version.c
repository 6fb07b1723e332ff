/*
 * version.c - the version of the library running (shmq_version(), shmq_version_number()):
 * the values of shmq/version.h, generated from project(VERSION) in CMakeLists.txt.
 */
#include "shmq/shmq.h"

const char *shmq_version(void)
{
    return SHMQ_VERSION_STRING;
}

uint32_t shmq_version_number(void)
{
    return SHMQ_VERSION_NUMBER;
}
