/*
 * emit.c - the text/JSON emitter described in emit.h.
 *
 * Invariant: need_comma[d] is true once an item was written at depth d of a JSON document, so
 * the next item there is preceded by a comma; kind[d] says how depth d renders in text.
 */
#include "emit.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "cli.h"

void emit_init(struct emitter *e, FILE *out, bool json)
{
    *e = (struct emitter){.out = out, .json = json, .depth = 0};
    e->kind[0] = EMIT_BLOCK;
    if (json)
        fputc('{', out);
}

static void indent(struct emitter *e, int depth)
{
    for (int i = 0; i < depth; i++)
        fputs("  ", e->out);
}

/* Write what precedes a value: JSON comma, newline, indent and key; text key or " key=". */
static void key(struct emitter *e, const char *k)
{
    if (e->json) {
        if (e->need_comma[e->depth])
            fputc(',', e->out);
        e->need_comma[e->depth] = true;
        fputc('\n', e->out);
        indent(e, e->depth + 1);
        if (k) {
            json_string(e->out, k, strlen(k));
            fputs(": ", e->out);
        }
        return;
    }
    if (e->kind[e->depth] == EMIT_INLINE) {
        fprintf(e->out, " %s=", k ? k : "");
        return;
    }
    indent(e, e->depth);
    if (e->kind[e->depth] == EMIT_ARRAY)
        fputs("- ", e->out);
    else if (k)
        fprintf(e->out, "%s: ", k);
}

/* Write what follows a value: a newline in text block context. */
static void done(struct emitter *e)
{
    if (!e->json && e->kind[e->depth] != EMIT_INLINE)
        fputc('\n', e->out);
}

void emit_begin(struct emitter *e, const char *k, const char *label, enum emit_kind kind)
{
    assert(e->depth < EMIT_MAX_DEPTH);
    const char *name = label ? label : k;
    if (e->json) {
        key(e, k);
        fputc(kind == EMIT_ARRAY ? '[' : '{', e->out);
    } else if (e->kind[e->depth] == EMIT_INLINE) {
        fprintf(e->out, " %s={", name ? name : "");
        kind = EMIT_INLINE;
    } else {
        indent(e, e->depth);
        if (e->kind[e->depth] == EMIT_ARRAY && kind != EMIT_INLINE)
            fputs("- ", e->out);
        fprintf(e->out, "%s:", name ? name : "");
        if (kind != EMIT_INLINE)
            fputc('\n', e->out);
    }
    e->depth++;
    e->kind[e->depth] = kind;
    e->need_comma[e->depth] = false;
}

void emit_end(struct emitter *e)
{
    assert(e->depth > 0);
    enum emit_kind kind = e->kind[e->depth];
    bool had_items = e->need_comma[e->depth];
    e->depth--;
    if (e->json) {
        if (had_items) {
            fputc('\n', e->out);
            indent(e, e->depth + 1);
        }
        fputc(kind == EMIT_ARRAY ? ']' : '}', e->out);
    } else if (kind == EMIT_INLINE) {
        if (e->kind[e->depth] == EMIT_INLINE)
            fputs(" }", e->out);
        else
            fputc('\n', e->out);
    }
}

void emit_finish(struct emitter *e)
{
    while (e->depth > 0)
        emit_end(e);
    if (e->json)
        fputs("\n}\n", e->out);
}

void emit_u64(struct emitter *e, const char *k, uint64_t v)
{
    key(e, k);
    fprintf(e->out, "%" PRIu64, v);
    done(e);
}

void emit_i64(struct emitter *e, const char *k, int64_t v)
{
    key(e, k);
    fprintf(e->out, "%" PRId64, v);
    done(e);
}

void emit_hex(struct emitter *e, const char *k, uint64_t v)
{
    key(e, k);
    fprintf(e->out, e->json ? "\"0x%" PRIx64 "\"" : "0x%" PRIx64, v);
    done(e);
}

void emit_oct(struct emitter *e, const char *k, uint32_t v)
{
    key(e, k);
    fprintf(e->out, e->json ? "\"0%o\"" : "0%o", v);
    done(e);
}

void emit_double(struct emitter *e, const char *k, double v)
{
    key(e, k);
    if (isfinite(v))
        fprintf(e->out, "%.17g", v);
    else
        fputs(e->json ? "null" : "-", e->out); /* JSON has no NaN or infinity */
    done(e);
}

void emit_bool(struct emitter *e, const char *k, bool v)
{
    key(e, k);
    fputs(v ? "true" : "false", e->out);
    done(e);
}

void emit_null(struct emitter *e, const char *k)
{
    key(e, k);
    fputs(e->json ? "null" : "-", e->out);
    done(e);
}

void emit_word(struct emitter *e, const char *k, const char *word)
{
    key(e, k);
    if (e->json)
        json_string(e->out, word, strlen(word));
    else
        fputs(word, e->out);
    done(e);
}

void emit_bytes(struct emitter *e, const char *k, const void *p, size_t len)
{
    key(e, k);
    if (e->json)
        json_string(e->out, p, len);
    else
        text_quoted(e->out, p, len);
    done(e);
}

void emit_payload(struct emitter *e, const char *k, const void *p, size_t len)
{
    if (!e->json || utf8_valid(p, len)) {
        emit_bytes(e, k, p, len);
        return;
    }
    char k64[64];
    snprintf(k64, sizeof k64, "%s_b64", k);
    key(e, k64);
    fputc('"', e->out);
    base64_write(e->out, p, len);
    fputc('"', e->out);
    done(e);
}

void emit_hexbytes(struct emitter *e, const char *k, const void *p, size_t len)
{
    key(e, k);
    if (e->json)
        fputc('"', e->out);
    hex_bytes(e->out, p, len);
    if (e->json)
        fputc('"', e->out);
    done(e);
}
