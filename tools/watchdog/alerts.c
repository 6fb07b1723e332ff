/*
 * alerts.c - alert rules: edge-triggered, one log line each time a condition starts, and an
 * optional command.
 *
 * State per queue and rule: w->firing[k]. alert_update() is the only writer, from the
 * maintenance loop (single-threaded): false -> true logs event=alert and spawns --alert-cmd;
 * true -> false logs event=alert_cleared (the rule is armed again); no change, nothing.
 *
 * The command runs through posix_spawn("/bin/sh", "-c", cmd) with its details in the
 * environment, with the default signal mask and SIGPIPE and SIGXFSZ dispositions (the daemon blocks SIGTERM
 * and ignores SIGPIPE; the command must not inherit that). It is not waited for: alerts_reap()
 * collects finished ones from the loop, so a slow or hung command delays no maintenance. At
 * most MAX_RUNNING run at once; an alert that finds them all busy is logged with
 * cmd_skipped=1. posix_spawn builds nothing in the child (the environment is prepared before),
 * so it is safe with the opener's and the HTTP server's threads running.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "watchdog.h"

#define MAX_RUNNING 32

extern char **environ;

static pid_t running[MAX_RUNNING];
static size_t n_running;

static const char *const names[ALERT__COUNT] = {"depth", "dead_letters", "consumer_died",
                                                "no_lease", "age", "pinned", "group_lag"};

const char *alert_name(enum alert_kind k)
{
    return (unsigned)k < ALERT__COUNT ? names[k] : "unknown";
}

bool alerts_any(const struct alert_rules *r)
{
    for (int k = 0; k < ALERT__COUNT; k++)
        if (r->on[k])
            return true;
    return false;
}

static bool ours(const char *var)
{
    static const char *const mine[] = {
        "SHMQ_ALERT=", "SHMQ_QUEUE=", "SHMQ_VALUE=", "SHMQ_THRESHOLD="};
    for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++)
        if (strncmp(var, mine[i], strlen(mine[i])) == 0)
            return true;
    return false;
}

/* Spawn cmd with the alert's environment. The child's pid, or -errno. */
static pid_t spawn(const char *cmd, const char *alert, const char *queue, uint64_t value,
                   uint64_t threshold)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = calloc(n + 5, sizeof *env);
    if (!env)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!ours(environ[i]))
            env[k++] = environ[i];
    char v_alert[64], v_queue[SHMQ_NAME_MAX + 16], v_value[48], v_threshold[48];
    snprintf(v_alert, sizeof v_alert, "SHMQ_ALERT=%s", alert);
    snprintf(v_queue, sizeof v_queue, "SHMQ_QUEUE=%s", queue);
    snprintf(v_value, sizeof v_value, "SHMQ_VALUE=%llu", (unsigned long long)value);
    snprintf(v_threshold, sizeof v_threshold, "SHMQ_THRESHOLD=%llu", (unsigned long long)threshold);
    env[k++] = v_alert;
    env[k++] = v_queue;
    env[k++] = v_value;
    env[k++] = v_threshold;
    env[k] = NULL;

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGXFSZ); /* ignored by the daemon, not by the command */
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int err = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, env);
    posix_spawnattr_destroy(&attr);
    free(env);
    return err ? -err : pid;
}

void alert_update(struct watch *w, const struct alert_rules *r, enum alert_kind k, bool cond,
                  uint64_t value, uint64_t threshold)
{
    if ((unsigned)k >= ALERT__COUNT || !r->on[k] || cond == w->firing[k])
        return;
    w->firing[k] = cond;
    if (!cond) {
        wd_log(WD_INFO, w->name, "alert_cleared", "alert=%s value=%llu threshold=%llu",
               alert_name(k), (unsigned long long)value, (unsigned long long)threshold);
        return;
    }
    char cmd_field[64] = "";
    if (r->cmd) {
        if (n_running >= MAX_RUNNING) {
            snprintf(cmd_field, sizeof cmd_field, " cmd_skipped=1 cmd_running=%zu", n_running);
        } else {
            pid_t pid = spawn(r->cmd, alert_name(k), w->name, value, threshold);
            if (pid > 0) {
                running[n_running++] = pid;
                snprintf(cmd_field, sizeof cmd_field, " cmd_pid=%d", (int)pid);
            } else {
                snprintf(cmd_field, sizeof cmd_field, " cmd_err=%d", (int)-pid);
            }
        }
    }
    wd_log(WD_WARN, w->name, "alert", "alert=%s value=%llu threshold=%llu%s", alert_name(k),
           (unsigned long long)value, (unsigned long long)threshold, cmd_field);
}

void alerts_reap(void)
{
    size_t k = 0;
    for (size_t i = 0; i < n_running; i++) {
        int st = 0;
        pid_t r = waitpid(running[i], &st, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) {
            running[k++] = running[i];
            continue;
        }
        if (r == running[i] && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            if (WIFEXITED(st))
                wd_log(WD_WARN, NULL, "alert_cmd_failed", "pid=%d exit=%d", (int)r,
                       WEXITSTATUS(st));
            else
                wd_log(WD_WARN, NULL, "alert_cmd_failed", "pid=%d signal=%d", (int)r,
                       WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        }
    }
    n_running = k;
}
