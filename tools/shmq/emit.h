/*
 * emit.h - one description of a document, two renderings: indented text or JSON.
 *
 * A subcommand describes what it prints once (objects, arrays, fields) and the emitter renders
 * it either as JSON or as text: a block object becomes "key:" and one "key: value" line per
 * field, an inline object becomes one line "label: k=v k=v ...". So --json and the text output
 * always hold the same fields. Not thread-safe; one emitter per output stream.
 */
#ifndef SHMQ_TOOLS_EMIT_H
#define SHMQ_TOOLS_EMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EMIT_MAX_DEPTH 8

enum emit_kind { EMIT_BLOCK, EMIT_INLINE, EMIT_ARRAY };

struct emitter {
    FILE *out;
    bool json;
    int depth;
    bool need_comma[EMIT_MAX_DEPTH + 1];
    enum emit_kind kind[EMIT_MAX_DEPTH + 1];
};

void emit_init(struct emitter *e, FILE *out, bool json);

/* Open an object or array. key: its JSON key (NULL inside an array); label: its name in text
 * (NULL: key). Nesting deeper than EMIT_MAX_DEPTH is a programming error (asserted). */
void emit_begin(struct emitter *e, const char *key, const char *label, enum emit_kind kind);
void emit_end(struct emitter *e);
/* Close the document (JSON: a final newline). */
void emit_finish(struct emitter *e);

void emit_u64(struct emitter *e, const char *key, uint64_t v);
void emit_i64(struct emitter *e, const char *key, int64_t v);
void emit_hex(struct emitter *e, const char *key, uint64_t v); /* "0x..": a string in JSON */
void emit_oct(struct emitter *e, const char *key, uint32_t v); /* "0600": a string in JSON */
void emit_double(struct emitter *e, const char *key, double v);
void emit_bool(struct emitter *e, const char *key, bool v);
void emit_null(struct emitter *e, const char *key); /* text: "-" */
/* A fixed word (state names and the like): unquoted in text, a JSON string. */
void emit_word(struct emitter *e, const char *key, const char *word);
/* Untrusted bytes: quoted and escaped in both renderings. */
void emit_bytes(struct emitter *e, const char *key, const void *p, size_t len);
/* A payload: in JSON "key" as a string when it is valid UTF-8, else "key_b64" with its bytes in
 * base64 (json_payload() in cli.h), so it comes out unchanged; in text as emit_bytes(). */
void emit_payload(struct emitter *e, const char *key, const void *p, size_t len);
/* Bytes as a hex string (quoted in JSON, bare in text). */
void emit_hexbytes(struct emitter *e, const char *key, const void *p, size_t len);

#endif
