/* Unit tests of the frame and field codec (frame.c) and of START's value parsers (spec.c): round
 * trips and hostile inputs; RLIMIT and CAPS values too. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include "frame.h"
#include "spec.h"
#include "tests/check.h"

static const struct field_spec spec[] = {
    {VMPOD_F_ARG, FK_STR_LIST, 1}, {VMPOD_F_CWD, FK_STR, 1}, {VMPOD_F_UID, FK_U32, 0},
    {VMPOD_F_GROUP, FK_U32_LIST, 0}, {0, 0, 0},
};

/* Builds a field by hand, to make malformed ones. */
static size_t raw_field(uint8_t *b, uint16_t tag, uint32_t len, const void *v, size_t vlen)
{
    b[0] = (uint8_t)(tag >> 8), b[1] = (uint8_t)tag;
    b[2] = (uint8_t)(len >> 24), b[3] = (uint8_t)(len >> 16), b[4] = (uint8_t)(len >> 8);
    b[5] = (uint8_t)len;
    memcpy(b + 6, v, vlen);
    return 6 + vlen;
}

static void test_header_round_trip(void)
{
    uint8_t b[VMPOD_HEADER_SIZE + 3] = {0};
    struct frame_hdr h;
    const uint8_t *p;
    const char *why = NULL;
    frame_header_put(b, VMPOD_MSG_STDOUT, 0xA1B2C3D4u, 3);
    memcpy(b + VMPOD_HEADER_SIZE, "abc", 3);
    CHECK(b[0] == 0 && b[3] == 3 && b[4] == 0 && b[5] == VMPOD_MSG_STDOUT && b[8] == 0xA1);
    CHECK(frame_split(b, sizeof b, &h, &p, &why) == FRAME_OK);
    CHECK(h.len == 3 && h.type == VMPOD_MSG_STDOUT && h.id == 0xA1B2C3D4u && h.reserved == 0);
    CHECK(p == b + VMPOD_HEADER_SIZE && memcmp(p, "abc", 3) == 0);
}

static void test_header_truncated(void)
{
    uint8_t b[VMPOD_HEADER_SIZE + 4];
    struct frame_hdr h;
    const uint8_t *p;
    const char *why = NULL;
    frame_header_put(b, VMPOD_MSG_STDIN, 1, 4);
    for (size_t n = 0; n < VMPOD_HEADER_SIZE; n++)
        CHECK(frame_header_parse(b, n, &h, &why) == FRAME_NEED_MORE);
    CHECK(frame_split(b, VMPOD_HEADER_SIZE + 3, &h, &p, &why) == FRAME_NEED_MORE);
    CHECK(frame_split(b, VMPOD_HEADER_SIZE + 4, &h, &p, &why) == FRAME_OK);
}

static void test_header_bad(void)
{
    uint8_t b[VMPOD_HEADER_SIZE];
    struct frame_hdr h;
    const char *why = NULL;
    frame_header_put(b, VMPOD_MSG_STDIN, 1, VMPOD_MAX_PAYLOAD);
    CHECK(frame_header_parse(b, sizeof b, &h, &why) == FRAME_OK);
    frame_header_put(b, VMPOD_MSG_STDIN, 1, VMPOD_MAX_PAYLOAD + 1);
    CHECK(frame_header_parse(b, sizeof b, &h, &why) == FRAME_BAD && why);
    frame_header_put(b, VMPOD_MSG_STDIN, 1, 0xFFFFFFFFu);
    CHECK(frame_header_parse(b, sizeof b, &h, &why) == FRAME_BAD);
    frame_header_put(b, VMPOD_MSG_STDIN, 1, 0);
    b[7] = 1;
    why = NULL;
    CHECK(frame_header_parse(b, sizeof b, &h, &why) == FRAME_BAD && why);
}

static void test_types(void)
{
    CHECK(frame_type_known(VMPOD_MSG_START) && frame_type_known(VMPOD_MSG_EXEC) &&
          frame_type_known(VMPOD_MSG_EXIT));
    CHECK(!frame_type_known(0) && !frame_type_known(4) && !frame_type_known(22) &&
          !frame_type_known(39));
}

static void test_fields_round_trip(void)
{
    uint8_t b[256];
    struct wbuf w;
    struct fields f;
    const char *why = NULL;
    wbuf_init(&w, b, sizeof b);
    fields_put_str(&w, VMPOD_F_ARG, "/bin/sh");
    fields_put_str(&w, VMPOD_F_CWD, "/");
    fields_put_str(&w, VMPOD_F_ARG, "");
    fields_put_str(&w, VMPOD_F_ARG, "-c");
    fields_put_u32(&w, VMPOD_F_UID, 0xDEADBEEFu);
    fields_put_u32(&w, VMPOD_F_GROUP, 5);
    fields_put_u32(&w, VMPOD_F_GROUP, 10);
    CHECK(!w.overflow);
    CHECK(fields_decode(b, w.len, spec, &f, &why) == 0);
    CHECK(f.count[VMPOD_F_ARG] == 3 && f.count[VMPOD_F_GROUP] == 2);
    CHECK(f.u32[VMPOD_F_UID] == 0xDEADBEEFu && fields_has(&f, VMPOD_F_UID));
    CHECK(f.len[VMPOD_F_CWD] == 1 && f.str[VMPOD_F_CWD][0] == '/');
    CHECK(!fields_has(&f, VMPOD_F_GID));
    size_t off = 0;
    const uint8_t *v;
    uint32_t len;
    CHECK(fields_next(&f, VMPOD_F_ARG, &off, &v, &len) && len == 7 && !memcmp(v, "/bin/sh", 7));
    CHECK(fields_next(&f, VMPOD_F_ARG, &off, &v, &len) && len == 0);
    CHECK(fields_next(&f, VMPOD_F_ARG, &off, &v, &len) && len == 2 && !memcmp(v, "-c", 2));
    CHECK(!fields_next(&f, VMPOD_F_ARG, &off, &v, &len));
    off = 0;
    CHECK(fields_next(&f, VMPOD_F_GROUP, &off, &v, &len) && fields_u32_at(v) == 5);
    CHECK(fields_next(&f, VMPOD_F_GROUP, &off, &v, &len) && fields_u32_at(v) == 10);
}

static void test_fields_empty_and_overflow(void)
{
    static const struct field_spec none[] = {{0, 0, 0}};
    struct fields f;
    const char *why = NULL;
    uint8_t b[8] = {0};
    struct wbuf w;
    CHECK(fields_decode(b, 0, none, &f, &why) == 0);
    wbuf_init(&w, b, sizeof b);
    fields_put_str(&w, VMPOD_F_CWD, "ab");
    CHECK(!w.overflow && w.len == 8);
    fields_put_u32(&w, VMPOD_F_UID, 1);
    CHECK(w.overflow && w.len == 8);
}

/* A valid prefix (the required fields) followed by `extra`, decoded against spec. */
static int decode_with(const uint8_t *extra, size_t n, const char **why)
{
    uint8_t b[128];
    struct fields f;
    size_t len = raw_field(b, VMPOD_F_ARG, 4, "true", 4);
    len += raw_field(b + len, VMPOD_F_CWD, 1, "/", 1);
    memcpy(b + len, extra, n);
    *why = NULL;
    return fields_decode(b, len + n, spec, &f, why);
}

static void test_fields_malformed(void)
{
    uint8_t x[64];
    const char *why;
    size_t n;
    CHECK(decode_with(x, 0, &why) == 0);
    /* field length past the end of the payload */
    n = raw_field(x, VMPOD_F_UID, 5, "\0\0\0\1", 4);
    CHECK(decode_with(x, n, &why) < 0 && why);
    n = raw_field(x, VMPOD_F_ARG, 0xFFFFFFFFu, "", 0);
    CHECK(decode_with(x, n, &why) < 0);
    /* truncated field header */
    CHECK(decode_with((const uint8_t *)"\0\x13\0\0", 4, &why) < 0 && why);
    /* NUL in a string, in a list item too */
    n = raw_field(x, VMPOD_F_ARG, 3, "a\0b", 3);
    CHECK(decode_with(x, n, &why) < 0 && why);
    /* repeated non-list field */
    n = raw_field(x, VMPOD_F_CWD, 1, "/", 1);
    CHECK(decode_with(x, n, &why) < 0 && why);
    n = raw_field(x, VMPOD_F_UID, 4, "\0\0\0\1", 4);
    n += raw_field(x + n, VMPOD_F_UID, 4, "\0\0\0\1", 4);
    CHECK(decode_with(x, n, &why) < 0);
    /* unknown tags: not in the spec, and beyond the bitmask */
    n = raw_field(x, VMPOD_F_PID, 4, "\0\0\0\1", 4);
    CHECK(decode_with(x, n, &why) < 0 && why);
    n = raw_field(x, 0xFFFF, 0, "", 0);
    CHECK(decode_with(x, n, &why) < 0);
    n = raw_field(x, 0, 0, "", 0);
    CHECK(decode_with(x, n, &why) < 0);
    /* u32 fields are exactly 4 bytes, list or not */
    n = raw_field(x, VMPOD_F_UID, 3, "\0\0\1", 3);
    CHECK(decode_with(x, n, &why) < 0 && why);
    n = raw_field(x, VMPOD_F_UID, 8, "\0\0\0\1\0\0\0\1", 8);
    CHECK(decode_with(x, n, &why) < 0);
    n = raw_field(x, VMPOD_F_GROUP, 2, "\0\1", 2);
    CHECK(decode_with(x, n, &why) < 0);
    /* list fields may repeat */
    n = raw_field(x, VMPOD_F_GROUP, 4, "\0\0\0\1", 4);
    n += raw_field(x + n, VMPOD_F_GROUP, 4, "\0\0\0\2", 4);
    CHECK(decode_with(x, n, &why) == 0);
}

static void test_fields_missing_required(void)
{
    uint8_t b[32];
    struct fields f;
    const char *why = NULL;
    size_t n = raw_field(b, VMPOD_F_CWD, 1, "/", 1);
    CHECK(fields_decode(b, n, spec, &f, &why) < 0 && why);
}

static int path_ok(const char *p)
{
    const char *why = NULL;
    int r = spec_path_check(p, &why);
    CHECK(r == 0 || why);
    return r == 0;
}

static void test_path_check(void)
{
    CHECK(path_ok("/data") && path_ok("/a/b/c") && path_ok("//a//b/") && path_ok("/./a/.") &&
          path_ok("/a/..b/c..") && path_ok("/.../x") && path_ok("/etc/hosts"));
    CHECK(!path_ok("") && !path_ok("data") && !path_ok("./data") && !path_ok("/") &&
          !path_ok("//") && !path_ok("/./."));
    CHECK(!path_ok("/..") && !path_ok("/../etc") && !path_ok("/a/../../b") && !path_ok("/a/..") &&
          !path_ok("/a/../") && !path_ok("/a//..//b"));
    char long_path[SPEC_MAX_PATH + 2];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[SPEC_MAX_PATH + 1] = 0;
    CHECK(!path_ok(long_path));
    long_path[SPEC_MAX_PATH] = 0;
    CHECK(path_ok(long_path));
}

static int mount_parse(const char *v, struct mount_spec *m)
{
    static char buf[4096];
    const char *why = NULL;
    snprintf(buf, sizeof buf, "%s", v);
    memset(m, 0, sizeof *m);
    int r = spec_mount_parse(buf, m, &why);
    CHECK(r == 0 || why);
    return r;
}

static void test_mount_parse(void)
{
    struct mount_spec m;
    CHECK(mount_parse("9p\tvol0\t/data\tro", &m) == 0);
    CHECK(m.type == MOUNT_9P && !strcmp(m.source, "vol0") && !strcmp(m.target, "/data"));
    CHECK(m.flags == MS_RDONLY && !strcmp(m.data, ""));
    CHECK(mount_parse("tmpfs\t\t/scratch\tsize=64m,noexec,mode=1777,nosuid,nodev", &m) == 0);
    CHECK(m.type == MOUNT_TMPFS && m.flags == (MS_NOEXEC | MS_NOSUID | MS_NODEV));
    CHECK(!strcmp(m.data, "size=64m,mode=1777"));
    CHECK(mount_parse("virtiofs\tfs0\t/a/b\trw,,uid=5,", &m) == 0);
    CHECK(m.type == MOUNT_VIRTIOFS && m.flags == 0 && !strcmp(m.data, "uid=5"));
    CHECK(mount_parse("tmpfs\ttmpfs\t/t\tro,row,rox", &m) == 0);  /* whole words only */
    CHECK(m.flags == MS_RDONLY && !strcmp(m.data, "row,rox"));
    /* not four parts, unknown type, no tag, bad target */
    CHECK(mount_parse("", &m) < 0 && mount_parse("9p\tvol0\t/data", &m) < 0);
    CHECK(mount_parse("9p\tvol0\t/data\tro\tx", &m) < 0);
    CHECK(mount_parse("ext4\t/dev/vdb\t/data\t", &m) < 0 && mount_parse("\tv\t/d\t", &m) < 0);
    CHECK(mount_parse("9p\t\t/data\t", &m) < 0 && mount_parse("virtiofs\t\t/data\t", &m) < 0);
    CHECK(mount_parse("tmpfs\t\t\t", &m) < 0 && mount_parse("tmpfs\t\tdata\t", &m) < 0);
    CHECK(mount_parse("tmpfs\t\t/a/../../etc\t", &m) < 0 && mount_parse("tmpfs\t\t/\t", &m) < 0);
    char big[SPEC_MAX_OPTIONS + 32] = "tmpfs\t\t/t\t";
    size_t n = strlen(big);
    memset(big + n, 'x', SPEC_MAX_OPTIONS + 1);
    big[n + SPEC_MAX_OPTIONS + 1] = 0;
    CHECK(mount_parse(big, &m) < 0);
    big[n + SPEC_MAX_OPTIONS] = 0;
    CHECK(mount_parse(big, &m) == 0);
}

static int file_parse(char *buf, struct file_spec *f)
{
    const char *why = NULL;
    memset(f, 0, sizeof *f);
    int r = spec_file_parse(buf, f, &why);
    CHECK(r == 0 || why);
    return r;
}

static void test_file_parse(void)
{
    struct file_spec f;
    char v[] = "/etc/hosts\t644\t127.0.0.1\tlocalhost\n::1\tlocalhost\n";
    CHECK(file_parse(v, &f) == 0);
    CHECK(!strcmp(f.path, "/etc/hosts") && f.mode == 0644);
    CHECK(!strcmp(f.content, "127.0.0.1\tlocalhost\n::1\tlocalhost\n") && f.len == 34);
    char empty[] = "/e\t0\t";
    CHECK(file_parse(empty, &f) == 0 && f.mode == 0 && f.len == 0);
    char exe[] = "/x\t04755\t#!/bin/sh\n";
    CHECK(file_parse(exe, &f) == 0 && f.mode == 04755);
    char *bad[] = {"", "/etc/hosts", "/etc/hosts\t644", "etc/hosts\t644\tx", "\t644\tx",
                   "/../etc/passwd\t644\tx", "/\t644\tx", "/e\t\tx", "/e\t8\tx", "/e\t-1\tx",
                   "/e\t0x1\tx", "/e\t10000\tx", "/e\t 644\tx", "/e\t0000000\tx"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char b[64];
        snprintf(b, sizeof b, "%s", bad[i]);
        CHECK(file_parse(b, &f) < 0);
    }
    static char big[SPEC_MAX_FILE + 32];
    int n = snprintf(big, sizeof big, "/big\t644\t");
    memset(big + n, 'x', SPEC_MAX_FILE);
    CHECK(file_parse(big, &f) == 0 && f.len == SPEC_MAX_FILE);
    memset(big + n, 'x', SPEC_MAX_FILE + 1);
    CHECK(file_parse(big, &f) < 0);
}

static int net_parse(const char *a, const char *g, struct net_spec *n)
{
    const char *why = NULL;
    int r = spec_net_parse(a, g, n, &why);
    CHECK(r == 0 || why);
    return r;
}

static void test_net_parse(void)
{
    struct net_spec n;
    CHECK(net_parse(NULL, NULL, &n) == 0 && !n.set && !n.gateway);
    CHECK(net_parse("10.0.2.15/24", "10.0.2.2", &n) == 0 && n.set && n.gateway);
    CHECK(n.addr.s_addr == inet_addr("10.0.2.15") && n.mask.s_addr == inet_addr("255.255.255.0"));
    CHECK(n.gw.s_addr == inet_addr("10.0.2.2"));
    CHECK(net_parse("192.168.1.7/32", NULL, &n) == 0 && !n.gateway);
    CHECK(n.mask.s_addr == 0xFFFFFFFFu);
    CHECK(net_parse("10.1.2.3/1", NULL, &n) == 0 && n.mask.s_addr == inet_addr("128.0.0.0"));
    CHECK(net_parse("10.1.2.3/17", NULL, &n) == 0 && n.mask.s_addr == inet_addr("255.255.128.0"));
    const char *bad[] = {"", "10.0.2.15", "10.0.2.15/", "10.0.2.15/0", "10.0.2.15/33",
                         "10.0.2.15/024", "10.0.2.15/24x", "10.0.2.15/+4", "10.0.2/24", "0xa.0.2.15/24",
                         "10.0.2.256/24", "fe80::1/64", " 10.0.2.15/24", "10.0.2.15/24/1",
                         "1000.0.2.15/24", "10.0.2.15 /24"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(net_parse(bad[i], NULL, &n) < 0);
    CHECK(net_parse(NULL, "10.0.2.2", &n) < 0);
    CHECK(net_parse("10.0.2.15/24", "", &n) < 0 && net_parse("10.0.2.15/24", "10.0.2", &n) < 0);
    CHECK(net_parse("10.0.2.15/24", "10.0.2.2/24", &n) < 0);
}

static void test_rlimit_parse(void)
{
    struct rlimit_spec r;
    const char *why = NULL;
    CHECK(spec_rlimit_parse("RLIMIT_NOFILE\t1024\t2048", &r, &why) == 0);
    CHECK(r.resource == RLIMIT_NOFILE && r.soft == 1024 && r.hard == 2048);
    CHECK(spec_rlimit_parse("RLIMIT_CORE\t0\t18446744073709551615", &r, &why) == 0);
    CHECK(r.resource == RLIMIT_CORE && r.soft == 0 && r.hard == ~0ULL);
    CHECK(spec_rlimit_parse("RLIMIT_RTTIME\t5\t5", &r, &why) == 0 && r.resource == RLIMIT_RTTIME);
    const char *bad[] = {"", "RLIMIT_NOFILE", "RLIMIT_NOFILE\t1", "RLIMIT_NOFILE\t1\t2\t3",
                         "RLIMIT_NOFILES\t1\t2", "rlimit_nofile\t1\t2", "RLIMIT_\t1\t2",
                         "\t1\t2", "RLIMIT_NOFILE\t-1\t2", "RLIMIT_NOFILE\t+1\t2",
                         "RLIMIT_NOFILE\t1 \t2", "RLIMIT_NOFILE\t\t2", "RLIMIT_NOFILE\t1\t",
                         "RLIMIT_NOFILE\t18446744073709551616\t18446744073709551616",
                         "RLIMIT_NOFILE\t99999999999999999999\t99999999999999999999",
                         "RLIMIT_NOFILE\t3\t2", "RLIMIT_NOFILE\t0x10\t0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CHECK(spec_rlimit_parse(bad[i], &r, &why) < 0 && why);
    }
}

static void test_caps_parse(void)
{
    struct caps_spec c;
    const char *why = NULL;
    CHECK(spec_caps_parse("CAP_KILL,CAP_CHOWN\tCAP_KILL\t\tCAP_KILL\t", &c, &why) == 0);
    CHECK(c.set[CAPS_BOUNDING] == ((1ULL << 5) | 1ULL) && c.set[CAPS_EFFECTIVE] == 1ULL << 5);
    CHECK(c.set[CAPS_INHERITABLE] == 0 && c.set[CAPS_PERMITTED] == 1ULL << 5 && !c.set[CAPS_AMBIENT]);
    CHECK(spec_caps_parse("\t\t\t\t", &c, &why) == 0 && !c.set[0] && !c.set[4]);
    CHECK(spec_caps_parse("CAP_CHECKPOINT_RESTORE\t\t\t\tCAP_NET_RAW", &c, &why) == 0);
    CHECK(c.set[CAPS_BOUNDING] == 1ULL << 40 && c.set[CAPS_AMBIENT] == 1ULL << 13);
    /* a name this agent does not know is ignored, as runc ignores it */
    CHECK(spec_caps_parse("CAP_FUTURE_THING,CAP_KILL\t\t\t\t", &c, &why) == 0);
    CHECK(c.set[CAPS_BOUNDING] == 1ULL << 5);
    CHECK(spec_cap_number("CAP_SYS_ADMIN", 13) == 21 && spec_cap_number("CAP_SYS_ADMI", 12) < 0);
    const char *bad[] = {"", "CAP_KILL", "\t\t\t", "\t\t\t\t\t", "CAP_KILL,,CAP_CHOWN\t\t\t\t",
                         ",CAP_KILL\t\t\t\t", "cap_kill\t\t\t\t", "CAP KILL\t\t\t\t",
                         "CAP_KILL;rm\t\t\t\t"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        CHECK(spec_caps_parse(bad[i], &c, &why) < 0 && why);
    }
    char big[SPEC_MAX_CAPS + 8];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK(spec_caps_parse(big, &c, &why) < 0);
}

int main(void)
{
    test_header_round_trip();
    test_header_truncated();
    test_header_bad();
    test_types();
    test_fields_round_trip();
    test_fields_empty_and_overflow();
    test_fields_malformed();
    test_fields_missing_required();
    test_path_check();
    test_mount_parse();
    test_file_parse();
    test_net_parse();
    test_rlimit_parse();
    test_caps_parse();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
