/*
 * cli.h - shared helpers of the tests that run the built tools as a user runs them
 * (test_cli.c, test_cli_dump.c, test_cli_wal.c, test_replay.c, test_metrics.c, test_bridge.c,
 * test_watchdog.c).
 *
 * A tool is found next to the tests' directory: dirname(/proc/self/exe)/../NAME. It runs as a
 * separate process with stdin given as text and stdout and stderr captured, within a bounded
 * wait, so a test sees exactly what a user sees: the text, the JSON, the exit code and any
 * crash signal. A small JSON reader parses what --json prints (and fails the test unless it is
 * exactly one valid JSON value).
 *
 * Everything here is static (and H_UNUSED): each test executable includes its own copy.
 */
#ifndef SHMQ_TEST_CLI_H
#define SHMQ_TEST_CLI_H

#include "helpers.h"

#include <ctype.h>
#include <libgen.h>
#include <limits.h>

/* ------------------------------------------------------------------ finding a tool */

/* dirname(/proc/self/exe)/../NAME, in a static buffer (the next call overwrites it); not
 * checked: see cli_tool_path(). */
static H_UNUSED const char *cli_tool_location(const char *name)
{
    static char path[PATH_MAX];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    cr_assert(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    exe[n] = '\0';
    snprintf(path, sizeof(path), "%s/../%s", dirname(exe), name);
    return path;
}

/* The tool NAME (see cli_tool_location()); fails the test unless it is there and executable. */
static H_UNUSED const char *cli_tool_path(const char *name)
{
    const char *path = cli_tool_location(name);
    cr_assert(access(path, X_OK) == 0, "the %s tool is not at %s: %s", name, path, strerror(errno));
    return path;
}

/* ------------------------------------------------------------------ running a tool */

/*
 * Start the tool at path (see cli_tool_path()) with args (NULL-terminated, after argv[0]), its
 * stdout on out_fd and its stderr on err_fd (-1: the test's own), tracked for h_cleanup(); its
 * pid. The caller waits for it or stops it.
 */
static H_UNUSED pid_t cli_spawn(const char *path, const char *const *args, int out_fd, int err_fd)
{
    const char *argv[32] = {path};
    int k = 1;
    for (; args[k - 1]; k++) {
        cr_assert(k < 31, "%s: too many arguments", path);
        argv[k] = args[k - 1];
    }
    argv[k] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(out_fd, STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    h_track(pid, -1);
    return pid;
}

struct run {
    int status; /* wait status */
    char *out;  /* stdout, NUL-terminated */
    char *err;  /* stderr, NUL-terminated */
    size_t out_len;
};

/* The whole content of f (malloc'd, NUL-terminated); closes f. */
static H_UNUSED char *cli_slurp(FILE *f, size_t *len)
{
    cr_assert(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    cr_assert(n >= 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    cr_assert(fread(buf, 1, (size_t)n, f) == (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

/*
 * Run the tool NAME with args (NULL-terminated) and stdin_text (NULL: empty) on its stdin;
 * wait at most timeout_s seconds (then kill it and fail). Its stdout and stderr are returned
 * (free with run_free()); a sanitizer report on its stderr fails the test.
 */
static H_UNUSED struct run cli_run(const char *name, int timeout_s, const char *stdin_text,
                                   const char *const *args)
{
    const char *argv[32];
    int argc = 0;
    argv[argc++] = cli_tool_path(name);
    for (; *args; args++) {
        cr_assert(argc < 31);
        argv[argc++] = *args;
    }
    argv[argc] = NULL;

    FILE *in = tmpfile(), *out = tmpfile(), *err = tmpfile();
    cr_assert(in && out && err, "tmpfile: %s", strerror(errno));
    if (stdin_text) {
        fputs(stdin_text, in);
        fflush(in);
        rewind(in);
    }
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fileno(in), 0);
        dup2(fileno(out), 1);
        dup2(fileno(err), 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    h_track(pid, -1);
    struct run r = {0};
    int rc = h_waitpid(pid, timeout_s * 1000, 0, &r.status);
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        h_untrack(pid);
    }
    cr_assert_eq(rc, 0, "%s %s did not finish within %d s", name, argv[1] ? argv[1] : "",
                 timeout_s);
    fclose(in);
    r.out = cli_slurp(out, &r.out_len);
    r.err = cli_slurp(err, NULL);
    /* a sanitizer build reports through stderr (and ASan exits 1, like a runtime error) */
    cr_assert(!strstr(r.err, "Sanitizer") && !strstr(r.err, "runtime error:"),
              "%s %s: sanitizer report:\n%s", name, argv[1] ? argv[1] : "", r.err);
    return r;
}

/* Run `shmq ARGS...` (NULL-terminated) with stdin_text (NULL: empty) on stdin; at most 30 s. */
static H_UNUSED struct run run_argv(const char *stdin_text, const char *const *args)
{
    return cli_run("shmq", 30, stdin_text, args);
}

#define RUN(...) run_argv(NULL, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_IN(text, ...) run_argv((text), (const char *const[]){__VA_ARGS__, NULL})

static H_UNUSED void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* The tool ended by exit(code), not by a signal. */
static H_UNUSED void assert_exit(const struct run *r, int code, const char *what)
{
    char buf[96];
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == code,
              "%s: shmq %s, expected exit %d\nstdout:\n%s\nstderr:\n%s", what,
              h_status_str(r->status, buf, sizeof(buf)), code, r->out, r->err);
}

/* Run `shmq ARGS...` (NULL-terminated, no stdin) and expect it to exit with code (what names
 * the case in the failure message). */
static H_UNUSED void run_expect_exit(int code, const char *what, const char *const *args)
{
    struct run r = run_argv(NULL, args);
    assert_exit(&r, code, what);
    run_free(&r);
}

#define RUN_EXPECT_EXIT(code, what, ...)                                                           \
    run_expect_exit((code), (what), (const char *const[]){__VA_ARGS__, NULL})

#define assert_contains(text, needle, what)                                                        \
    cr_assert(strstr((text), (needle)) != NULL, "%s: no \"%s\" in:\n%s", (what), (needle), (text))

/* ------------------------------------------------------------------ a small JSON reader */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
    enum jtype type;
    double num;
    bool b;
    char *str;           /* J_STR (decoded: \uXXXX and surrogate pairs as UTF-8) */
    struct jval **items; /* J_ARR, J_OBJ (values) */
    char **keys;         /* J_OBJ */
    size_t n;
};

struct jp {
    const char *s;
    size_t i, n;
    bool bad;
};

static H_UNUSED void jws(struct jp *p)
{
    while (p->i < p->n && strchr(" \t\r\n", p->s[p->i]))
        p->i++;
}

static H_UNUSED struct jval *jnew(enum jtype t)
{
    struct jval *v = calloc(1, sizeof *v);
    cr_assert(v);
    v->type = t;
    return v;
}

/* The four hex digits of a \\u escape (p->bad if they are not). */
static H_UNUSED unsigned jhex4(struct jp *p)
{
    unsigned v = 0;
    for (int d = 0; d < 4; d++) {
        if (p->i >= p->n || !isxdigit((unsigned char)p->s[p->i])) {
            p->bad = true;
            return 0;
        }
        char h = p->s[p->i++];
        v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return v;
}

/* Code point v as UTF-8 into out; how many bytes (1..4). */
static H_UNUSED size_t jutf8(char *out, unsigned v)
{
    if (v < 0x80) {
        out[0] = (char)v;
        return 1;
    }
    if (v < 0x800) {
        out[0] = (char)(0xc0 | v >> 6);
        out[1] = (char)(0x80 | (v & 0x3f));
        return 2;
    }
    if (v < 0x10000) {
        out[0] = (char)(0xe0 | v >> 12);
        out[1] = (char)(0x80 | (v >> 6 & 0x3f));
        out[2] = (char)(0x80 | (v & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | v >> 18);
    out[1] = (char)(0x80 | (v >> 12 & 0x3f));
    out[2] = (char)(0x80 | (v >> 6 & 0x3f));
    out[3] = (char)(0x80 | (v & 0x3f));
    return 4;
}

static H_UNUSED char *jstring(struct jp *p)
{
    if (p->i >= p->n || p->s[p->i] != '"') {
        p->bad = true;
        return NULL;
    }
    p->i++;
    char *out = malloc(p->n + 1);
    cr_assert(out);
    size_t k = 0;
    while (p->i < p->n && p->s[p->i] != '"') {
        unsigned char c = (unsigned char)p->s[p->i++];
        if (c < 0x20) {
            p->bad = true;
            break;
        }
        if (c != '\\') {
            out[k++] = (char)c;
            continue;
        }
        if (p->i >= p->n)
            break;
        char e = p->s[p->i++];
        switch (e) {
        case '"': out[k++] = '"'; break;
        case '\\': out[k++] = '\\'; break;
        case '/': out[k++] = '/'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 't': out[k++] = '\t'; break;
        case 'b': out[k++] = '\b'; break;
        case 'f': out[k++] = '\f'; break;
        case 'u': {
            unsigned v = jhex4(p);
            if (v >= 0xd800 && v <= 0xdbff && p->i + 1 < p->n && p->s[p->i] == '\\' &&
                p->s[p->i + 1] == 'u') { /* a surrogate pair */
                p->i += 2;
                unsigned lo = jhex4(p);
                if (lo < 0xdc00 || lo > 0xdfff)
                    p->bad = true;
                v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
            }
            k += jutf8(out + k, v);
            break;
        }
        default: p->bad = true;
        }
    }
    if (p->i >= p->n)
        p->bad = true;
    p->i++;
    out[k] = 0;
    return out;
}

static H_UNUSED struct jval *jvalue(struct jp *p, int depth)
{
    jws(p);
    if (p->i >= p->n || depth > 32) {
        p->bad = true;
        return jnew(J_NULL);
    }
    char c = p->s[p->i];
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        struct jval *v = jnew(obj ? J_OBJ : J_ARR);
        p->i++;
        jws(p);
        if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) {
            p->i++;
            return v;
        }
        for (;;) {
            v->items = realloc(v->items, (v->n + 1) * sizeof *v->items);
            v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
            cr_assert(v->items && v->keys);
            v->keys[v->n] = NULL;
            if (obj) {
                jws(p);
                v->keys[v->n] = jstring(p);
                jws(p);
                if (p->i >= p->n || p->s[p->i] != ':') {
                    p->bad = true;
                    return v;
                }
                p->i++;
            }
            v->items[v->n++] = jvalue(p, depth + 1);
            jws(p);
            if (p->bad || p->i >= p->n) {
                p->bad = true;
                return v;
            }
            if (p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->s[p->i] == (obj ? '}' : ']')) {
                p->i++;
                return v;
            }
            p->bad = true;
            return v;
        }
    }
    if (c == '"') {
        struct jval *v = jnew(J_STR);
        v->str = jstring(p);
        return v;
    }
    if (strncmp(p->s + p->i, "true", 4) == 0 || strncmp(p->s + p->i, "false", 5) == 0) {
        struct jval *v = jnew(J_BOOL);
        v->b = c == 't';
        p->i += v->b ? 4 : 5;
        return v;
    }
    if (strncmp(p->s + p->i, "null", 4) == 0) {
        p->i += 4;
        return jnew(J_NULL);
    }
    char *end;
    struct jval *v = jnew(J_NUM);
    v->num = strtod(p->s + p->i, &end);
    if (end == p->s + p->i || !(c == '-' || isdigit((unsigned char)c)))
        p->bad = true;
    p->i = (size_t)(end - p->s);
    return v;
}

/* Parse a whole document; fails the test unless it is exactly one valid JSON value. */
static H_UNUSED struct jval *json_parse(const char *s)
{
    struct jp p = {.s = s, .n = strlen(s)};
    struct jval *v = jvalue(&p, 0);
    jws(&p);
    cr_assert(!p.bad && p.i == p.n, "invalid JSON (at byte %zu):\n%s", p.i, s);
    return v;
}

static H_UNUSED void json_free(struct jval *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++) {
        json_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

/* Member path "a.b.c" of an object (NULL if absent); a numeric part indexes an array
 * ("files.0.seq"). */
static H_UNUSED struct jval *jget(struct jval *v, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
        if (v && v->type == J_ARR && isdigit((unsigned char)k[0])) {
            size_t idx = strtoul(k, NULL, 10);
            v = idx < v->n ? v->items[idx] : NULL;
            continue;
        }
        if (!v || v->type != J_OBJ)
            return NULL;
        struct jval *next = NULL;
        for (size_t i = 0; i < v->n; i++)
            if (v->keys[i] && strcmp(v->keys[i], k) == 0)
                next = v->items[i];
        v = next;
    }
    return v;
}

static H_UNUSED double jnum(struct jval *doc, const char *path)
{
    struct jval *v = jget(doc, path);
    cr_assert(v && v->type == J_NUM, "JSON field %s: missing or not a number", path);
    return v->num;
}

static H_UNUSED const char *jstr(struct jval *doc, const char *path)
{
    struct jval *v = jget(doc, path);
    cr_assert(v && v->type == J_STR, "JSON field %s: missing or not a string", path);
    return v->str;
}

static H_UNUSED bool jbool(struct jval *doc, const char *path)
{
    struct jval *v = jget(doc, path);
    cr_assert(v && v->type == J_BOOL, "JSON field %s: missing or not a boolean", path);
    return v->b;
}

static H_UNUSED void jassert_num(struct jval *doc, const char *path, double want)
{
    double got = jnum(doc, path);
    cr_assert(got == want, "JSON field %s: %g, expected %g", path, got, want);
}

#endif
