/* Root filesystem and container view, as Docker sets them up. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "agent.h"
#include "container.h"
#include "mounts.h"
#include "net.h"

/* As mounts.c mounts 9p volumes; the root keeps the guest's page cache (nothing else writes it). */
#define ROOT_9P_DATA "trans=virtio,version=9p2000.L,msize=262144"

const char *container_prefix(void) { return is_pid1() ? NEWROOT : ""; }

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++)
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (buf[0] && mkdir(buf, mode) < 0 && errno != EEXIST)
                return errno;
            if (!(*p = c))
                return 0;
        }
}

/* Mounts under NEWROOT, creating the mount point; errno and msg on failure. */
static int mnt(const char *src, const char *rel, const char *type, unsigned long flags,
               const char *data, char *msg, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, NEWROOT "%s", rel);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        int e = errno;
        snprintf(msg, cap, "mkdir %s: %s", rel, strerror(e));
        return e;
    }
    if (mount(src, path, type, flags, data) < 0) {
        int e = errno;
        snprintf(msg, cap, "mount %s on %s: %s", type, rel, strerror(e));
        return e;
    }
    return 0;
}

static int make_dev(void)
{
    static const struct { const char *name; unsigned maj, min; } nodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9},
        {"tty", 5, 0},
    };
    static const char *const links[][2] = {
        {"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
    };
    char path[64];
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        snprintf(path, sizeof path, NEWROOT "/dev/%s", nodes[i].name);
        if (mknod(path, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0 ||
            chmod(path, 0666) < 0)  /* chmod: the umask trimmed the mode */
            return errno;
    }
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        snprintf(path, sizeof path, NEWROOT "/dev/%s", links[i][1]);
        if (symlink(links[i][0], path) < 0)
            return errno;
    }
    return 0;
}

static void wait_for_device(const char *dev)
{
    /* A disk hot-plugged just before START may not have its node yet. */
    for (int i = 0; i < 500 && access(dev, F_OK) < 0; i++)
        msleep(10);
}

/* A VM restored from a template read its placeholder disk through this same device: whatever the page
 * cache holds of it belongs to that disk, not to this one, so it goes before the mount reads. */
static void drop_cached_blocks(const char *device)
{
    int f = open(device, O_RDONLY | O_CLOEXEC);
    if (f >= 0) {
        if (ioctl(f, BLKFLSBUF, 0) < 0)
            alog("BLKFLSBUF %s: %s", device, strerror(errno));
        close(f);
    }
}

int container_setup(const struct start_req *r, char *msg, size_t cap)
{
    int e;
    if (!is_pid1()) {
        if (!r->root_device[0])
            return 0;  /* host test mode: run on the host as is */
        snprintf(msg, cap, "a root device needs the agent to run as PID 1");
        return EPERM;
    }
    if (!r->root_device[0]) {
        snprintf(msg, cap, "ROOT_DEVICE is empty");
        return EINVAL;
    }
    /* A shared filesystem (virtio-fs, 9p) is named by its tag, not by a device node. */
    int shared = strcmp(r->root_fstype, "virtiofs") == 0 || strcmp(r->root_fstype, "9p") == 0;
    if (!shared) {
        wait_for_device(r->root_device);
        drop_cached_blocks(r->root_device);
    }
    mkdir(NEWROOT, 0755);
    /* The root is mounted writable even for a read-only container, so that missing mount points and
     * /etc files can be created first (as Docker does); it becomes read-only at the end. */
    unsigned long ro = 0;
    /* noinit_itable spares the lazy inode-table zeroing thread; an option only, so fall back. */
    const char *data = strcmp(r->root_fstype, "9p") == 0 ? ROOT_9P_DATA : NULL;
    if ((strcmp(r->root_fstype, "ext4") != 0 ||
         mount(r->root_device, NEWROOT, r->root_fstype, ro, "noinit_itable") < 0) &&
        mount(r->root_device, NEWROOT, r->root_fstype, ro, data) < 0) {
        e = errno;
        snprintf(msg, cap, "mount %s (%s) on " NEWROOT ": %s", r->root_device, r->root_fstype,
                 strerror(e));
        return e;
    }
    unsigned long common = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if ((e = mnt("proc", "/proc", "proc", common, NULL, msg, cap)) ||
        (e = mnt("sysfs", "/sys", "sysfs", common | MS_RDONLY, NULL, msg, cap)) ||
        (e = mnt("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k",
                 msg, cap)))
        return e;
    if ((e = make_dev())) {
        snprintf(msg, cap, "creating /dev nodes: %s", strerror(e));
        return e;
    }
    if ((e = mnt("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620,gid=5", msg, cap)) ||
        (e = mnt("shm", "/dev/shm", "tmpfs", common, "mode=1777,size=65536k", msg, cap)))
        return e;
    if (r->hostname && sethostname(r->hostname, strlen(r->hostname)) < 0) {
        e = errno;
        snprintf(msg, cap, "sethostname: %s", strerror(e));
        return e;
    }
    /* After /proc, /sys and /dev, so that a MOUNT or FILE may go under them too. */
    if ((e = mounts_apply(r, msg, cap)))
        return e;
    if (r->readonly && mount(NULL, NEWROOT, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0) {
        e = errno;
        snprintf(msg, cap, "making the root read-only: %s", strerror(e));
        return e;
    }
    return net_setup(&r->net, msg, cap);
}

int container_enter(const struct start_req *r, int guest, int *stage)
{
    if (guest) {
        *stage = STAGE_CHROOT;
        if (chroot(NEWROOT) < 0 || chdir("/") < 0)
            return errno;
    }
    *stage = STAGE_CWD;
    if (r->cwd[0] && chdir(r->cwd) < 0) {
        /* Docker creates a missing working directory; on the host (test mode) we do not. */
        int e = errno;
        if (e != ENOENT || !guest)
            return e;
        if ((e = mkdir_p(r->cwd, 0755)))
            return e;
        if (chdir(r->cwd) < 0)
            return errno;
    }
    /* Host test mode runs as the caller: only switch credentials when asked for other ones. */
    if (guest || r->uid != getuid() || r->gid != getgid()) {
        *stage = STAGE_GROUPS;
        if (setgroups(r->ngroups, r->groups) < 0)
            return errno;
        *stage = STAGE_GID;
        if (setgid(r->gid) < 0)
            return errno;
        *stage = STAGE_UID;
        if (setuid(r->uid) < 0)
            return errno;
    }
    return 0;
}

/* /proc/self/mounts escapes blanks as \ooo octal. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++)
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else
            *o++ = *s;
    *o = 0;
}

void container_unmount_all(void)
{
    if (!is_pid1())
        return;
    static char targets[256][256];
    int n = 0;
    FILE *f = fopen("/proc/self/mounts", "re");
    char line[1024], dir[256];
    while (f && n < 256 && fgets(line, sizeof line, f))
        if (sscanf(line, "%*s %255s", dir) == 1) {
            unescape(dir);
            size_t l = strlen(NEWROOT);
            if (strncmp(dir, NEWROOT, l) == 0 && (dir[l] == 0 || dir[l] == '/'))
                snprintf(targets[n++], sizeof targets[0], "%s", dir);
        }
    if (f)
        fclose(f);
    /* Later lines were mounted later, so reverse order unmounts the inner ones first. */
    while (n--)
        umount2(targets[n], MNT_DETACH);
}
