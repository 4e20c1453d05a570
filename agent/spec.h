/* START's container extras (MOUNT, FILE, NET_*): parsing and checking of their values. Pure functions,
 * no I/O, so that they are unit-tested on the host; the host is trusted less than these checks. */
#ifndef VMPOD_SPEC_H
#define VMPOD_SPEC_H

#include <netinet/in.h>
#include <stddef.h>

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

#endif
