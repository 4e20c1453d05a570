/* START's container extras (MOUNT, FILE, NET_*) and the process limits of START and EXEC (RLIMIT,
 * CAPS): parsing and checking of their values. Pure functions,
 * no I/O, so that they are unit-tested on the host; the host is trusted less than these checks. */
#ifndef VMPOD_SPEC_H
#define VMPOD_SPEC_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define SPEC_MAX_ITEMS 64             /* MOUNT or FILE fields in one START */
#define SPEC_MAX_FILE (256 * 1024)    /* bytes of one FILE's content */
#define SPEC_MAX_PATH 1024            /* a TARGET or PATH */
#define SPEC_MAX_OPTIONS 1024         /* a MOUNT's OPTIONS: mount data is one page at most */

enum { MOUNT_9P = 1, MOUNT_VIRTIOFS, MOUNT_TMPFS };

struct mount_spec {
    int type;
    const char *source, *target;
    char *data;           /* OPTIONS without the ones turned into flags, comma-separated */
    unsigned long flags;  /* MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC */
};

struct file_spec {
    const char *path, *content;
    size_t len;
    unsigned mode;
};

#define SPEC_MAX_RLIMITS 16           /* RLIMIT fields in one START or EXEC: one per resource */
#define SPEC_MAX_CAPS 2048            /* bytes of a CAPS value */

struct rlimit_spec {
    int resource;                     /* RLIMIT_* */
    unsigned long long soft, hard;    /* RLIM_INFINITY is 2^64-1 */
};

/* The five capability sets of the runtime spec, as masks of capability numbers (0..63). */
enum { CAPS_BOUNDING, CAPS_EFFECTIVE, CAPS_INHERITABLE, CAPS_PERMITTED, CAPS_AMBIENT, CAPS_SETS };
struct caps_spec {
    uint64_t set[CAPS_SETS];
};

struct net_spec {
    int set, gateway;  /* NET_ADDRESS given; NET_GATEWAY given */
    struct in_addr addr, mask, gw;
};

/* An absolute path with at least one component, none of them "..": it cannot name the container
 * root itself nor leave it lexically (symlinks are the caller's business). 0 or -1 with *why. */
int spec_path_check(const char *path, const char **why);
/* TYPE\tSOURCE\tTARGET\tOPTIONS, split in place (s is modified and must outlive m). */
int spec_mount_parse(char *s, struct mount_spec *m, const char **why);
/* PATH\tMODE\tCONTENT: only the first two TABs separate. In place, as above. */
int spec_file_parse(char *s, struct file_spec *f, const char **why);
/* NET_ADDRESS "A.B.C.D/PREFIX" (prefix 1..32); gateway may be NULL, else "A.B.C.D". */
int spec_net_parse(const char *address, const char *gateway, struct net_spec *n, const char **why);

/* RLIMIT "NAME<TAB>SOFT<TAB>HARD": NAME as in the runtime spec (RLIMIT_NOFILE), SOFT and HARD decimal
 * (at most 2^64-1, which means unlimited), SOFT <= HARD. */
int spec_rlimit_parse(const char *s, struct rlimit_spec *r, const char **why);
/* CAPS "BOUNDING<TAB>EFFECTIVE<TAB>INHERITABLE<TAB>PERMITTED<TAB>AMBIENT", each a comma-separated list
 * of names (CAP_KILL) or empty. Names this agent does not know are ignored, as runc ignores them. */
int spec_caps_parse(const char *s, struct caps_spec *c, const char **why);
/* The number of a capability name, or -1. */
int spec_cap_number(const char *name, size_t len);

#endif
