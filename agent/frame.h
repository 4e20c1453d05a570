/* Frame and field (TLV) codec of docs/protocol.md. Pure functions: no I/O, no allocation. */
#ifndef VMPOD_FRAME_H
#define VMPOD_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include "protocol.h"

#define FIELD_TAG_MAX 64  /* tags are < 64 so that "seen" fits one bitmask */

struct frame_hdr {
    uint32_t len;
    uint16_t type;
    uint16_t reserved;
    uint32_t id;
};

enum { FRAME_BAD = -1, FRAME_NEED_MORE = 0, FRAME_OK = 1 };

void frame_header_put(uint8_t out[VMPOD_HEADER_SIZE], uint16_t type, uint32_t id, uint32_t len);
/* Parses a header from n bytes: FRAME_NEED_MORE if n < HEADER_SIZE, FRAME_BAD (with *why) when the
 * length or the reserved field make the stream unusable. The type is checked by the caller. */
int frame_header_parse(const uint8_t *b, size_t n, struct frame_hdr *h, const char **why);
/* FRAME_OK when b holds a whole frame (header + payload). */
int frame_split(const uint8_t *b, size_t n, struct frame_hdr *h, const uint8_t **payload,
                const char **why);
int frame_type_known(uint16_t type);

enum field_kind { FK_U32 = 1, FK_STR, FK_U32_LIST, FK_STR_LIST };
struct field_spec {
    uint16_t tag;     /* 0 ends a spec array */
    uint8_t kind;
    uint8_t required;
};

struct fields {
    uint64_t seen;
    uint32_t count[FIELD_TAG_MAX];
    uint32_t u32[FIELD_TAG_MAX];        /* non-list u32 fields */
    const uint8_t *str[FIELD_TAG_MAX];  /* non-list strings: not NUL-terminated, see len */
    uint32_t len[FIELD_TAG_MAX];
    const uint8_t *payload;
    size_t size;
};

/* Strict decode against spec: unknown tag, repeated non-list field, u32 not 4 bytes, NUL in a
 * string, truncation or a missing required field -> -1 with *why. */
int fields_decode(const uint8_t *p, size_t n, const struct field_spec *spec, struct fields *f,
                  const char **why);
int fields_has(const struct fields *f, uint16_t tag);
/* Iterates the values of tag (a list) in order; *off starts at 0. Only on decoded payloads. */
int fields_next(const struct fields *f, uint16_t tag, size_t *off, const uint8_t **v,
                uint32_t *len);
uint32_t fields_u32_at(const uint8_t *v);

/* Payload encoder into a caller buffer; overflow is sticky and checked once at the end. */
struct wbuf {
    uint8_t *b;
    size_t cap, len;
    int overflow;
};
void wbuf_init(struct wbuf *w, uint8_t *b, size_t cap);
void fields_put_u32(struct wbuf *w, uint16_t tag, uint32_t v);
void fields_put_bytes(struct wbuf *w, uint16_t tag, const void *v, size_t n);
void fields_put_str(struct wbuf *w, uint16_t tag, const char *s);

#endif
