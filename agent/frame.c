/* Frame and field codec. Every length is checked against what is left before it is used: the peer
 * (and, for the host, the guest) is not trusted. */
#include <string.h>
#include "frame.h"

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

uint32_t fields_u32_at(const uint8_t *v) { return get32(v); }

void frame_header_put(uint8_t out[VMPOD_HEADER_SIZE], uint16_t type, uint32_t id, uint32_t len)
{
    put32(out, len);
    put16(out + 4, type);
    put16(out + 6, 0);
    put32(out + 8, id);
}

int frame_header_parse(const uint8_t *b, size_t n, struct frame_hdr *h, const char **why)
{
    if (n < VMPOD_HEADER_SIZE)
        return FRAME_NEED_MORE;
    h->len = get32(b);
    h->type = get16(b + 4);
    h->reserved = get16(b + 6);
    h->id = get32(b + 8);
    if (h->len > VMPOD_MAX_PAYLOAD) {
        *why = "frame length exceeds MAX_PAYLOAD";
        return FRAME_BAD;
    }
    if (h->reserved != 0) {
        *why = "reserved header bytes are not zero";
        return FRAME_BAD;
    }
    return FRAME_OK;
}

int frame_split(const uint8_t *b, size_t n, struct frame_hdr *h, const uint8_t **payload,
                const char **why)
{
    int r = frame_header_parse(b, n, h, why);
    if (r != FRAME_OK)
        return r;
    if (n - VMPOD_HEADER_SIZE < h->len)
        return FRAME_NEED_MORE;
    *payload = b + VMPOD_HEADER_SIZE;
    return FRAME_OK;
}

int frame_type_known(uint16_t type)
{
    switch (type) {
    case VMPOD_MSG_READY: case VMPOD_MSG_OK: case VMPOD_MSG_ERROR:
    case VMPOD_MSG_START: case VMPOD_MSG_SIGNAL: case VMPOD_MSG_RESIZE: case VMPOD_MSG_SHUTDOWN:
    case VMPOD_MSG_EXEC: case VMPOD_MSG_MACHINE:
    case VMPOD_MSG_STDIN: case VMPOD_MSG_STDIN_CLOSE: case VMPOD_MSG_STDOUT:
    case VMPOD_MSG_STDERR: case VMPOD_MSG_OUTPUT_ACK: case VMPOD_MSG_STDIN_ACK:
    case VMPOD_MSG_EXIT:
        return 1;
    }
    return 0;
}

static const struct field_spec *spec_find(const struct field_spec *s, uint16_t tag)
{
    for (; s->tag; s++)
        if (s->tag == tag && tag < FIELD_TAG_MAX)
            return s;
    return NULL;
}

#define FAIL(msg) do { *why = (msg); return -1; } while (0)

int fields_decode(const uint8_t *p, size_t n, const struct field_spec *spec, struct fields *f,
                  const char **why)
{
    memset(f, 0, sizeof *f);
    f->payload = p;
    f->size = n;
    size_t off = 0;
    while (off < n) {
        if (n - off < 6)
            FAIL("truncated field header");
        uint16_t tag = get16(p + off);
        uint32_t len = get32(p + off + 2);
        off += 6;
        if (len > n - off)
            FAIL("field longer than the payload");
        const uint8_t *v = p + off;
        off += len;
        const struct field_spec *s = spec_find(spec, tag);
        if (!s)
            FAIL("unknown field tag");
        int list = s->kind == FK_U32_LIST || s->kind == FK_STR_LIST;
        if (!list && f->count[tag])
            FAIL("repeated field");
        if ((s->kind == FK_U32 || s->kind == FK_U32_LIST) && len != 4)
            FAIL("integer field is not 4 bytes");
        if ((s->kind == FK_STR || s->kind == FK_STR_LIST) && memchr(v, 0, len))
            FAIL("NUL in a string field");
        f->count[tag]++;
        f->seen |= (uint64_t)1 << tag;
        if (s->kind == FK_U32)
            f->u32[tag] = get32(v);
        else if (s->kind == FK_STR) {
            f->str[tag] = v;
            f->len[tag] = len;
        }
    }
    for (; spec->tag; spec++)
        if (spec->required && !f->count[spec->tag])
            FAIL("missing required field");
    return 0;
}

int fields_has(const struct fields *f, uint16_t tag)
{
    return tag < FIELD_TAG_MAX && (f->seen >> tag & 1);
}

int fields_next(const struct fields *f, uint16_t tag, size_t *off, const uint8_t **v,
                uint32_t *len)
{
    while (*off + 6 <= f->size) {
        uint16_t t = get16(f->payload + *off);
        uint32_t l = get32(f->payload + *off + 2);
        const uint8_t *val = f->payload + *off + 6;
        if (l > f->size - *off - 6)
            return 0;  /* cannot happen after fields_decode; stay safe anyway */
        *off += 6 + (size_t)l;
        if (t == tag) {
            *v = val;
            *len = l;
            return 1;
        }
    }
    return 0;
}

void wbuf_init(struct wbuf *w, uint8_t *b, size_t cap)
{
    w->b = b;
    w->cap = cap;
    w->len = 0;
    w->overflow = 0;
}

void fields_put_bytes(struct wbuf *w, uint16_t tag, const void *v, size_t n)
{
    if (w->overflow || n > UINT32_MAX || w->cap - w->len < 6 || w->cap - w->len - 6 < n) {
        w->overflow = 1;
        return;
    }
    put16(w->b + w->len, tag);
    put32(w->b + w->len + 2, (uint32_t)n);
    if (n)
        memcpy(w->b + w->len + 6, v, n);
    w->len += 6 + n;
}

void fields_put_u32(struct wbuf *w, uint16_t tag, uint32_t v)
{
    uint8_t b[4];
    put32(b, v);
    fields_put_bytes(w, tag, b, 4);
}

void fields_put_str(struct wbuf *w, uint16_t tag, const char *s)
{
    fields_put_bytes(w, tag, s, strlen(s));
}
