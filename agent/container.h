/* The container's view: its root disk, /proc, /sys, /dev, and the child's way into it. */
#ifndef VMPOD_CONTAINER_H
#define VMPOD_CONTAINER_H

#include <stddef.h>
#include <sys/types.h>
#include "spec.h"

#define NEWROOT "/newroot"

/* A decoded START request; strings are NUL-terminated copies. */
struct start_req {
    char *root_device, *root_fstype, *hostname, *cwd;
    char **argv, **envp;
    gid_t *groups;
    size_t ngroups;
    uid_t uid;
    gid_t gid;
    int readonly, terminal, stdin_open;
    unsigned rows, cols;
    char **mount_vals, **file_vals;  /* START only: the MOUNT and FILE values, split in place */
    struct mount_spec *mounts;
    struct file_spec *files;
    size_t nmounts, nfiles;
    struct net_spec net;
    struct rlimit_spec *rlimits;     /* START and EXEC: RLIMIT, NO_NEW_PRIVS, CAPS (process.c) */
    size_t nrlimits;
    int no_new_privs, has_caps;
    struct caps_spec caps;
};

/* Steps of the child before exec, reported to the parent with errno when one fails. */
enum { STAGE_SETSID = 1, STAGE_TTY, STAGE_CHROOT, STAGE_CWD, STAGE_GROUPS, STAGE_GID, STAGE_UID,
       STAGE_EXEC, STAGE_RLIMIT, STAGE_CAPS, STAGE_NNP };

/* Mounts the root and the container's /proc, /sys, /dev, sets the hostname, then does the MOUNTs,
 * FILEs and network (PID 1); refuses a root device in host test mode, where the extras were only
 * checked. 0 or an errno with msg filled. */
int container_setup(const struct start_req *r, char *msg, size_t cap);
/* Where the container root is seen from the agent: NEWROOT as PID 1, "" (the host) otherwise. */
const char *container_prefix(void);
/* In the child: chroot, cwd, credentials. guest: the parent is PID 1 (the child's own pid is not 1,
 * so it cannot ask is_pid1()). 0 or an errno with *stage set. */
int container_enter(const struct start_req *r, int guest, int *stage);
/* Unmounts everything under NEWROOT, innermost first (PID 1 only). */
void container_unmount_all(void);

#endif
