/* Parsing of START's MOUNT, FILE and NET_* values and of the RLIMIT and CAPS values of START and
 * EXEC (docs/protocol.md, Lifecycle step 2). */
#include <arpa/inet.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
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

static const char *const rlimit_names[] = {
    [RLIMIT_CPU] = "RLIMIT_CPU", [RLIMIT_FSIZE] = "RLIMIT_FSIZE", [RLIMIT_DATA] = "RLIMIT_DATA",
    [RLIMIT_STACK] = "RLIMIT_STACK", [RLIMIT_CORE] = "RLIMIT_CORE", [RLIMIT_RSS] = "RLIMIT_RSS",
    [RLIMIT_NPROC] = "RLIMIT_NPROC", [RLIMIT_NOFILE] = "RLIMIT_NOFILE",
    [RLIMIT_MEMLOCK] = "RLIMIT_MEMLOCK", [RLIMIT_AS] = "RLIMIT_AS", [RLIMIT_LOCKS] = "RLIMIT_LOCKS",
    [RLIMIT_SIGPENDING] = "RLIMIT_SIGPENDING", [RLIMIT_MSGQUEUE] = "RLIMIT_MSGQUEUE",
    [RLIMIT_NICE] = "RLIMIT_NICE", [RLIMIT_RTPRIO] = "RLIMIT_RTPRIO",
    [RLIMIT_RTTIME] = "RLIMIT_RTTIME",
};

/* A decimal number up to 2^64-1: digits only, no sign, no overflow. */
static int u64_parse(const char *s, size_t n, unsigned long long *out)
{
    unsigned long long v = 0;
    if (!n || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (~0ULL - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int spec_rlimit_parse(const char *s, struct rlimit_spec *r, const char **why)
{
    const char *t1 = strchr(s, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!t2 || strchr(t2 + 1, '\t'))
        FAIL("RLIMIT is not NAME<TAB>SOFT<TAB>HARD");
    size_t len = (size_t)(t1 - s);
    r->resource = -1;
    for (size_t i = 0; i < sizeof rlimit_names / sizeof *rlimit_names; i++)
        if (rlimit_names[i] && strlen(rlimit_names[i]) == len && !memcmp(s, rlimit_names[i], len))
            r->resource = (int)i;
    if (r->resource < 0)
        FAIL("RLIMIT names an unknown resource");
    if (u64_parse(t1 + 1, (size_t)(t2 - t1 - 1), &r->soft) < 0 ||
        u64_parse(t2 + 1, strlen(t2 + 1), &r->hard) < 0)
        FAIL("RLIMIT values are not decimal numbers below 2^64");
    if (r->soft > r->hard)
        FAIL("RLIMIT soft value above the hard one");
    return 0;
}

static const char *const cap_names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

int spec_cap_number(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof cap_names / sizeof *cap_names; i++)
        if (strlen(cap_names[i]) == len && !memcmp(name, cap_names[i], len))
            return (int)i;
    return -1;
}

int spec_caps_parse(const char *s, struct caps_spec *c, const char **why)
{
    memset(c, 0, sizeof *c);
    if (strlen(s) > SPEC_MAX_CAPS)
        FAIL("CAPS too long");
    int set = 0;
    for (const char *p = s;; set++) {
        if (set == CAPS_SETS)
            FAIL("CAPS has more than five sets");
        size_t end = strcspn(p, "\t");
        for (const char *q = p; q < p + end;) {
            size_t len = strcspn(q, ",\t");
            if (!len)
                FAIL("CAPS has an empty name");
            if (strspn(q, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") < len || len > 64)
                FAIL("CAPS names are upper case letters, digits and _");
            int n = spec_cap_number(q, len);
            if (n >= 0)
                c->set[set] |= 1ULL << n;
            q += len + (q[len] == ',');
        }
        if (!p[end])
            break;
        p += end + 1;
    }
    if (set != CAPS_SETS - 1)
        FAIL("CAPS is not five TAB-separated sets");
    return 0;
}
