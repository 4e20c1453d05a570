/* MOUNT and FILE: volumes, tmpfs and Docker's /etc files, placed without trusting the image. Every
 * path is walked from NEWROOT one component at a time without following symlinks: a link in the
 * (untrusted) image, absolute or through "..", would otherwise land the mount on the agent's own
 * files. The mount itself targets the walked fd through /proc/self/fd, so nothing is resolved twice. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include "agent.h"
#include "mounts.h"

#define FILES_DIR "/run/vmpod-files"  /* in the initramfs root, out of the container's sight */
#define NINEP_DATA "trans=virtio,version=9p2000.L,msize=262144,cache=none"

struct walk {
    const char *what;      /* "MOUNT" or "FILE", for messages */
    const char *path;      /* as the host gave it */
    char *msg;
    size_t cap;
};

static int fail(const struct walk *w, int e, const char *what_failed)
{
    snprintf(w->msg, w->cap, "%s %s: %s: %s", w->what, w->path, what_failed, strerror(e));
    return e;
}

/* path without empty and "." components, as "/a/b/c" (spec_path_check ruled out ".." and "/"). */
static void normalize(const char *path, char *out)
{
    char *o = out;
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len && !(len == 1 && *p == '.')) {
            *o++ = '/';
            memcpy(o, p, len);
            o += len;
        }
        p += len;
    }
    *o = 0;
}

static const char *symlink_msg(const char *path)
{
    static char m[SPEC_MAX_PATH + 64];
    snprintf(m, sizeof m, "%s is a symbolic link in the image (not followed)", path);
    return m;
}

/* One directory down from dfd, made when missing if create; a symlink is ELOOP. */
static int step(int dfd, const char *name, int create)
{
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(dfd, name, flags);
    if (fd < 0 && errno == ENOENT && create) {
        if (mkdirat(dfd, name, 0755) < 0 && errno != EEXIST)
            return -1;
        fd = openat(dfd, name, flags);
    }
    struct stat st;
    if (fd < 0 && (errno == ENOTDIR || errno == ELOOP) &&
        fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        errno = S_ISLNK(st.st_mode) ? ELOOP : ENOTDIR;  /* O_DIRECTORY may win over O_NOFOLLOW */
    return fd;
}

/* Opens the directory holding the last component of w->path (keep_last: *last names it) or the
 * whole path. An fd, or -1 with errno returned in *err and the message written. */
static int walk(const struct walk *w, char *buf, int keep_last, int create, char **last, int *err)
{
    normalize(w->path, buf);
    int dfd = open(NEWROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        *err = fail(w, errno, "opening " NEWROOT);
        return -1;
    }
    for (char *c = buf + 1;;) {
        char *slash = strchr(c, '/');
        if (!slash && keep_last) {
            *last = c;
            return dfd;
        }
        if (slash)
            *slash = 0;
        int fd = step(dfd, c, create);
        int e = errno;
        close(dfd);
        if (fd < 0) {
            /* buf ends with c now: the path up to the component that failed. */
            *err = fail(w, e, e == ELOOP ? symlink_msg(buf) : buf);
            errno = e;
            return -1;
        }
        if (!slash)
            return fd;
        *slash = '/';
        c = slash + 1;
        dfd = fd;
    }
}

static int do_mount(const struct mount_spec *m, char *msg, size_t cap)
{
    static const char *const types[] = {[MOUNT_9P] = "9p", [MOUNT_VIRTIOFS] = "virtiofs",
                                        [MOUNT_TMPFS] = "tmpfs"};
    struct walk w = {"MOUNT", m->target, msg, cap};
    char buf[SPEC_MAX_PATH + 1], data[SPEC_MAX_OPTIONS + sizeof NINEP_DATA + 1], at[32];
    int err, fd = walk(&w, buf, 0, 1, NULL, &err);
    if (fd < 0)
        return err;
    if (m->type == MOUNT_9P)
        snprintf(data, sizeof data, NINEP_DATA "%s%s", *m->data ? "," : "", m->data);
    else
        snprintf(data, sizeof data, "%s", m->data);
    snprintf(at, sizeof at, "/proc/self/fd/%d", fd);
    const char *src = m->type == MOUNT_TMPFS ? "tmpfs" : m->source;
    int r = mount(src, at, types[m->type], m->flags, *data ? data : NULL);
    err = errno;
    close(fd);
    if (r < 0) {
        snprintf(msg, cap, "MOUNT %s %s on %s: %s", types[m->type], src, m->target, strerror(err));
        return err;
    }
    return 0;
}

/* The agent's own tmpfs that holds the FILEs' contents. */
static int files_dir(char *msg, size_t cap)
{
    static int ready;
    if (ready)
        return 0;
    mkdir("/run", 0755);
    mkdir(FILES_DIR, 0755);
    /* No noexec: a FILE's mode says whether it is executable. 64 files of 256 KiB fit. */
    if (mount("tmpfs", FILES_DIR, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=32m") < 0) {
        int e = errno;
        snprintf(msg, cap, "mount tmpfs on " FILES_DIR ": %s", strerror(e));
        return e;
    }
    ready = 1;
    return 0;
}

static int write_content(const char *path, const struct file_spec *f)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    for (size_t off = 0; off < f->len;) {
        ssize_t n = write(fd, f->content + off, f->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return e;
        }
        off += (size_t)n;
    }
    int e = fchmod(fd, f->mode) < 0 ? errno : 0;  /* fchmod: open's mode went through the umask */
    close(fd);
    return e;
}

/* The regular file at last in dfd, made empty when missing: an O_PATH fd, -1 with errno (ENOENT
 * when it is missing and cannot be made). */
static int open_target_file(int dfd, const char *last, int create)
{
    int fd = openat(dfd, last, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        int c = openat(dfd, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (c < 0 && errno != EEXIST)
            return -1;
        if (c >= 0)
            close(c);
        fd = openat(dfd, last, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
        close(fd);
        errno = S_ISLNK(st.st_mode) ? ELOOP : S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        return -1;
    }
    return fd;
}

static int do_file(size_t i, const struct file_spec *f, int readonly, char *msg, size_t cap)
{
    struct walk w = {"FILE", f->path, msg, cap};
    char buf[SPEC_MAX_PATH + 1], src[64], at[32], *last;
    int e = files_dir(msg, cap);
    if (e)
        return e;
    snprintf(src, sizeof src, FILES_DIR "/%zu", i);
    if ((e = write_content(src, f)))
        return fail(&w, e, src);
    /* With a read-only root Docker makes its /etc files read-only too: a read-only bind of the content
     * first, whose flags the bind into the container inherits. */
    if (readonly && (mount(src, src, NULL, MS_BIND, NULL) < 0 ||
                     mount(NULL, src, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                           NULL) < 0))
        return fail(&w, errno, "read-only bind");
    /* On a read-only root a missing file (or directory) cannot be made: Docker's rule, skip it. */
    int dfd = walk(&w, buf, 1, !readonly, &last, &e);
    if (dfd < 0)
        return readonly && errno == ENOENT ? 0 : e;
    int fd = open_target_file(dfd, last, !readonly);
    e = errno;
    close(dfd);
    if (fd < 0)
        return readonly && e == ENOENT ? 0
               : fail(&w, e, e == ELOOP ? symlink_msg(f->path) : "the target");
    snprintf(at, sizeof at, "/proc/self/fd/%d", fd);
    int r = mount(src, at, NULL, MS_BIND, NULL);
    e = errno;
    close(fd);
    return r < 0 ? fail(&w, e, "bind mount") : 0;
}

int mounts_apply(const struct start_req *r, char *msg, size_t cap)
{
    int e;
    for (size_t i = 0; i < r->nmounts; i++)
        if ((e = do_mount(&r->mounts[i], msg, cap)))
            return e;
    for (size_t i = 0; i < r->nfiles; i++)
        if ((e = do_file(i, &r->files[i], r->readonly, msg, cap)))
            return e;
    return 0;
}
