/* Parsing of START's MOUNT, FILE and NET_* values (docs/protocol.md, Lifecycle step 2). */
#include <arpa/inet.h>
#include <string.h>
#include <sys/mount.h>
#include "spec.h"

#define FAIL(msg) do { *why = (msg); return -1; } while (0)

int spec_path_check(const char *path, const char **why)
{
    size_t n = strlen(path);
    if (!n)
        FAIL("empty path");
    if (path[0] != '/')
        FAIL("path is not absolute");
    if (n > SPEC_MAX_PATH)
        FAIL("path too long");
    int parts = 0;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            FAIL("path has a \"..\" component");
        if (len && !(len == 1 && p[0] == '.'))
            parts++;
        p += len;
    }
    if (!parts)
        FAIL("path is the container root");
    return 0;
}

/* Cuts s at its next TAB: returns the part after it, or NULL when there is none. */
static char *cut_tab(char *s)
{
    char *t = strchr(s, '\t');
    if (!t)
        return NULL;
    *t = 0;
    return t + 1;
}

/* The options that are mount flags leave the list; the others stay, compacted in place. */
static unsigned long take_flags(char *opts)
{
    static const struct { const char *name; unsigned long flag; } known[] = {
        {"ro", MS_RDONLY}, {"rw", 0}, {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV},
        {"noexec", MS_NOEXEC},
    };
    unsigned long flags = 0;
    char *out = opts;
    for (char *p = opts; *p;) {
        size_t len = strcspn(p, ",");
        int flag = 0;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
            if (strlen(known[i].name) == len && !memcmp(p, known[i].name, len)) {
                flags |= known[i].flag;
                flag = 1;
            }
        if (!flag && len) {  /* empty items ("a,,b") are dropped */
            if (out != opts)
                *out++ = ',';
            memmove(out, p, len);
            out += len;
        }
        p += len + (p[len] == ',');
    }
    *out = 0;
    return flags;
}

int spec_mount_parse(char *s, struct mount_spec *m, const char **why)
{
    char *source = cut_tab(s), *target = source ? cut_tab(source) : NULL;
    char *opts = target ? cut_tab(target) : NULL;
    if (!opts || strchr(opts, '\t'))
        FAIL("MOUNT is not TYPE<TAB>SOURCE<TAB>TARGET<TAB>OPTIONS");
    if (!strcmp(s, "9p"))
        m->type = MOUNT_9P;
    else if (!strcmp(s, "virtiofs"))
        m->type = MOUNT_VIRTIOFS;
    else if (!strcmp(s, "tmpfs"))
        m->type = MOUNT_TMPFS;
    else
        FAIL("MOUNT type is not 9p, virtiofs or tmpfs");
    if (m->type != MOUNT_TMPFS && !*source)
        FAIL("MOUNT source (the device tag) is empty");
    if (spec_path_check(target, why) < 0)
        return -1;
    if (strlen(opts) > SPEC_MAX_OPTIONS)
        FAIL("MOUNT options too long");
    m->source = source;
    m->target = target;
    m->flags = take_flags(opts);
    m->data = opts;
    return 0;
}

int spec_file_parse(char *s, struct file_spec *f, const char **why)
{
    char *mode = cut_tab(s), *content = mode ? cut_tab(mode) : NULL;
    if (!content)
        FAIL("FILE is not PATH<TAB>MODE<TAB>CONTENT");
    if (spec_path_check(s, why) < 0)
        return -1;
    size_t digits = strspn(mode, "01234567");
    if (!digits || mode[digits] || digits > 6)
        FAIL("FILE mode is not octal");
    unsigned v = 0;
    for (const char *p = mode; *p; p++)
        v = v * 8 + (unsigned)(*p - '0');
    if (v > 07777)
        FAIL("FILE mode above 07777");
    f->len = strlen(content);
    if (f->len > SPEC_MAX_FILE)
        FAIL("FILE content larger than 256 KiB");
    f->path = s;
    f->mode = v;
    f->content = content;
    return 0;
}

/* inet_pton's dotted quad only: no hex, no octal, no short forms. */
static int ipv4(const char *s, struct in_addr *a)
{
    return strlen(s) <= 15 && inet_pton(AF_INET, s, a) == 1;
}

int spec_net_parse(const char *address, const char *gateway, struct net_spec *n, const char **why)
{
    memset(n, 0, sizeof *n);
    if (!address) {
        if (gateway)
            FAIL("NET_GATEWAY without NET_ADDRESS");
        return 0;
    }
    char ip[16];
    const char *slash = strchr(address, '/');
    size_t len = slash ? (size_t)(slash - address) : 0;
    if (!slash || len >= sizeof ip)
        FAIL("NET_ADDRESS is not A.B.C.D/PREFIX");
    memcpy(ip, address, len);
    ip[len] = 0;
    const char *p = slash + 1;
    size_t digits = strspn(p, "0123456789");
    unsigned prefix = 0;
    for (size_t i = 0; i < digits && i < 3; i++)
        prefix = prefix * 10 + (unsigned)(p[i] - '0');
    if (!ipv4(ip, &n->addr) || !digits || digits > 2 || p[digits] || prefix < 1 || prefix > 32)
        FAIL("NET_ADDRESS is not A.B.C.D/PREFIX (prefix 1 to 32)");
    n->mask.s_addr = htonl(prefix == 32 ? 0xFFFFFFFFu : ~(0xFFFFFFFFu >> prefix));
    if (gateway && !ipv4(gateway, &n->gw))
        FAIL("NET_GATEWAY is not A.B.C.D");
    n->set = 1;
    n->gateway = gateway != NULL;
    return 0;
}
