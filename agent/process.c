/* Container processes and their stdio. Output is read only while the host's credit allows, stdin
 * is buffered up to one window and acknowledged as it is written. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include "agent.h"
#include "channel.h"
#include "process.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER 0x5441
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#define CAP_VERSION_3 0x20080522  /* <linux/capability.h>, which musl does not ship */

extern char **environ;
static struct proc procs[MAX_PROCS];
static uint8_t databuf[VMPOD_MAX_DATA];

struct proc *proc_find(uint32_t handle)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && procs[i].handle == handle)
            return &procs[i];
    return NULL;
}

static void watch(int fd, uint64_t tag, uint32_t want, uint32_t *cur)
{
    if (fd < 0 || want == *cur)
        return;
    struct epoll_event e = {.events = want, .data.u64 = tag};
    int op = !*cur ? EPOLL_CTL_ADD : !want ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(g.epfd, op, fd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
    *cur = want;
}

/* Deregister before close: a pty's stdin fd is a dup of the master, and epoll keeps a registration
 * alive while any fd of the open file remains. */
static void close_stream(int *fd, uint32_t *ev)
{
    if (*fd < 0)
        return;
    if (*ev)
        epoll_ctl(g.epfd, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
    *ev = 0;
}

void proc_update_watches(void)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        struct proc *p = &procs[i];
        if (!p->used)
            continue;
        /* Not even registered without credit: a closed pipe would report EPOLLHUP forever. */
        uint32_t rd = p->sent - p->acked < VMPOD_STREAM_WINDOW ? EPOLLIN : 0;
        watch(p->out_fd, EV_TAG(EV_OUT, i), rd, &p->out_ev);
        watch(p->err_fd, EV_TAG(EV_ERR, i), rd, &p->err_ev);
        watch(p->in_fd, EV_TAG(EV_IN, i), p->in_len || p->in_close ? EPOLLOUT : 0, &p->in_ev);
    }
}

/* An exec'd process is forgotten once its EXIT is out: its handle may be used again. */
static void proc_free(struct proc *p)
{
    close_stream(&p->out_fd, &p->out_ev);
    close_stream(&p->err_fd, &p->err_ev);
    close_stream(&p->in_fd, &p->in_ev);
    free(p->in_buf);
    memset(p, 0, sizeof *p);
}

static int exec_pending(void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && procs[i].handle != VMPOD_MAIN_PROCESS)
            return 1;
    return 0;
}

static void maybe_send_exit(struct proc *p)
{
    if (!p->exited || p->exit_sent || p->out_fd >= 0 || p->err_fd >= 0)
        return;
    /* The main process's EXIT ends the run on the host: every exec'd process reports first. */
    if (p->handle == VMPOD_MAIN_PROCESS && exec_pending())
        return;
    p->exit_sent = 1;
    if (p->pty_fd >= 0)
        close(p->pty_fd), p->pty_fd = -1;
    if (WIFSIGNALED(p->status))
        send_u32(VMPOD_MSG_EXIT, p->handle, VMPOD_F_EXIT_SIGNAL, (uint32_t)WTERMSIG(p->status));
    else
        send_u32(VMPOD_MSG_EXIT, p->handle, VMPOD_F_EXIT_CODE, (uint32_t)WEXITSTATUS(p->status));
    if (p->handle == VMPOD_MAIN_PROCESS)
        return;
    proc_free(p);
    struct proc *m = proc_find(VMPOD_MAIN_PROCESS);
    if (m)
        maybe_send_exit(m);  /* it may have been waiting for this one */
}

/* Nobody will read stdin any more: drop what is pending but acknowledge it, so the host's window
 * does not stall. */
static void stdin_drop(struct proc *p)
{
    if (p->in_len)
        send_u32(VMPOD_MSG_STDIN_ACK, p->handle, VMPOD_F_COUNT, (uint32_t)p->in_len);
    p->in_off = p->in_len = 0;
    p->in_close = 0;
    close_stream(&p->in_fd, &p->in_ev);
}

static void stdin_flush(struct proc *p)
{
    size_t done = 0;
    while (p->in_len) {
        ssize_t w = write(p->in_fd, p->in_buf + p->in_off, p->in_len);
        if (w > 0) {
            p->in_off += (size_t)w;
            p->in_len -= (size_t)w;
            done += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else {
            if (done)
                send_u32(VMPOD_MSG_STDIN_ACK, p->handle, VMPOD_F_COUNT, (uint32_t)done);
            if (w < 0 && errno != EAGAIN)  /* EPIPE, EIO: the reader is gone */
                stdin_drop(p);
            return;
        }
    }
    p->in_off = 0;
    if (done)
        send_u32(VMPOD_MSG_STDIN_ACK, p->handle, VMPOD_F_COUNT, (uint32_t)done);
    if (p->in_close) {
        if (p->terminal) {
            /* A terminal has no half-close: the line discipline turns VEOF into EOF for the reader. */
            struct termios t;
            char c = tcgetattr(p->in_fd, &t) == 0 && t.c_cc[VEOF] ? (char)t.c_cc[VEOF] : 4;
            if (write(p->in_fd, &c, 1) < 0 && errno == EAGAIN)
                return;
        }
        p->in_close = 0;
        close_stream(&p->in_fd, &p->in_ev);
    }
}

static void pump_output(struct proc *p, int kind)
{
    int *fd = kind == EV_OUT ? &p->out_fd : &p->err_fd;
    uint32_t *ev = kind == EV_OUT ? &p->out_ev : &p->err_ev;
    uint64_t outstanding = p->sent - p->acked;
    if (*fd < 0 || outstanding >= VMPOD_STREAM_WINDOW)
        return;
    size_t want = VMPOD_STREAM_WINDOW - outstanding;
    if (want > sizeof databuf)
        want = sizeof databuf;
    ssize_t r = read(*fd, databuf, want);
    if (r > 0) {
        p->sent += (uint64_t)r;
        chan_send(kind == EV_OUT ? VMPOD_MSG_STDOUT : VMPOD_MSG_STDERR, p->handle, databuf,
                  (size_t)r);
        return;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    /* 0: EOF; EIO on a pty master: the slave side is gone, which is EOF too. Closing this fd does
     * not hang up a pty (pty_fd still holds the master), so a process that closed its stdio just
     * before exiting gets no SIGHUP. */
    close_stream(fd, ev);
    maybe_send_exit(p);
}

void proc_event(int kind, int slot)
{
    if (slot < 0 || slot >= MAX_PROCS || !procs[slot].used)
        return;
    struct proc *p = &procs[slot];
    if (kind == EV_IN)
        stdin_flush(p);
    else
        pump_output(p, kind);
}

/* As the end of a PID namespace would: as PID 1 everyone but us; in host test mode only the
 * process groups (sessions) of our own children, whose pgid is their pid (setsid). */
void proc_kill_all(void)
{
    if (is_pid1()) {
        kill(-1, SIGKILL);
        return;
    }
    for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && !procs[i].exit_sent && procs[i].pid > 1)
            kill(-procs[i].pid, SIGKILL);
}

static void proc_exited(struct proc *p, int status)
{
    p->exited = 1;
    p->status = status;
    if (p->handle == VMPOD_MAIN_PROCESS)
        proc_kill_all();  /* only the main process's end ends the container */
    stdin_drop(p);
    maybe_send_exit(p);
}

void proc_reap(int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) > 0)
        ;
    int st;
    pid_t pid;
    /* PID 1 also reaps orphans it never started. */
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
        for (int i = 0; i < MAX_PROCS; i++)
            if (procs[i].used && procs[i].pid == pid && !procs[i].exited)
                proc_exited(&procs[i], st);
}

int proc_stdin(struct proc *p, const uint8_t *data, size_t n, const char **why)
{
    if (n > VMPOD_MAX_DATA)
        return *why = "STDIN frame larger than MAX_DATA", -1;
    if (p->in_closed_by_host)
        return *why = "STDIN after STDIN_CLOSE", -1;
    if (p->in_len + n > VMPOD_STREAM_WINDOW)
        return *why = "STDIN overruns the window", -1;
    if (p->in_fd < 0) {  /* no stdin, or its reader is gone: drop, but acknowledge */
        if (n)
            send_u32(VMPOD_MSG_STDIN_ACK, p->handle, VMPOD_F_COUNT, (uint32_t)n);
        return 0;
    }
    if (p->in_off + p->in_len + n > VMPOD_STREAM_WINDOW) {
        memmove(p->in_buf, p->in_buf + p->in_off, p->in_len);
        p->in_off = 0;
    }
    memcpy(p->in_buf + p->in_off + p->in_len, data, n);
    p->in_len += n;
    stdin_flush(p);
    return 0;
}

int proc_stdin_close(struct proc *p, const char **why)
{
    (void)why;
    if (p->in_closed_by_host)
        return 0;
    p->in_closed_by_host = 1;
    if (p->in_fd >= 0) {
        p->in_close = 1;
        stdin_flush(p);
    }
    return 0;
}

int proc_output_ack(struct proc *p, uint32_t count, const char **why)
{
    if (count > p->sent - p->acked)
        return *why = "OUTPUT_ACK for more bytes than were sent", -1;
    p->acked += count;
    return 0;
}

/* Before the credentials change: resource limits (raising a hard one needs CAP_SYS_RESOURCE, which
 * the agent's root has) and the bounding set (dropping needs CAP_SETPCAP). 0 or an errno. */
static int limits_before(const struct start_req *r, int *stage)
{
    *stage = STAGE_RLIMIT;
    for (size_t i = 0; i < r->nrlimits; i++) {
        struct rlimit rl = {.rlim_cur = (rlim_t)r->rlimits[i].soft, .rlim_max = (rlim_t)r->rlimits[i].hard};
        if (setrlimit(r->rlimits[i].resource, &rl) < 0)
            return errno;
    }
    if (!r->has_caps)
        return 0;
    *stage = STAGE_CAPS;
    for (int c = 0; c < 64 && prctl(PR_CAPBSET_READ, c, 0, 0, 0) >= 0; c++)
        if (!(r->caps.set[CAPS_BOUNDING] & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
            return errno;
    /* Keep the permitted set across setuid to another user; capset then trims it. */
    if (r->uid != 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return errno;
    return 0;
}

/* After the credentials change: the other capability sets, then no_new_privs. 0 or an errno. */
static int limits_after(const struct start_req *r, int *stage)
{
    if (r->has_caps) {
        *stage = STAGE_CAPS;
        struct { uint32_t version; int pid; } head = {CAP_VERSION_3, 0};
        struct { uint32_t effective, permitted, inheritable; } data[2];
        for (int i = 0; i < 2; i++) {
            data[i].effective = (uint32_t)(r->caps.set[CAPS_EFFECTIVE] >> (32 * i));
            data[i].permitted = (uint32_t)(r->caps.set[CAPS_PERMITTED] >> (32 * i));
            data[i].inheritable = (uint32_t)(r->caps.set[CAPS_INHERITABLE] >> (32 * i));
        }
        if (syscall(SYS_capset, &head, data) < 0)
            return errno;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
            return errno;
        /* An ambient capability must be permitted and inheritable; one that is not stays out, as
         * runc leaves it out with a warning (its default spec lists ambient ones, no inheritable). */
        for (int c = 0; c < 64; c++)
            if (r->caps.set[CAPS_AMBIENT] & (1ULL << c))
                prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0);
    }
    *stage = STAGE_NNP;
    if (r->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return errno;
    return 0;
}

/* The child, between fork and exec. Failures go to the parent as {stage, errno}. */
static _Noreturn void child(const struct start_req *r, int guest, const int fds[3], int tty,
                            int rep)
{
    int stage = STAGE_SETSID, e;
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);  /* SIG_IGN (SIGPIPE...) would survive exec */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0)
        goto fail;
    stage = STAGE_TTY;
    if (tty && ioctl(fds[0], TIOCSCTTY, 0) < 0)
        goto fail;
    for (int i = 0; i < 3; i++)  /* fds[] are >= 3 (boot_std_fds), so dup2 never clobbers them */
        if (dup2(fds[i], i) < 0)
            goto fail;
    if ((e = limits_before(r, &stage)) || (e = container_enter(r, guest, &stage)) ||
        (e = limits_after(r, &stage)))
        goto report;
    umask(022);
    environ = r->envp;  /* before execvp: it searches the PATH of the new environment */
    stage = STAGE_EXEC;
    execvp(r->argv[0], r->argv);
fail:
    e = errno;
report:;
    int msg[2] = {stage, e};
    ssize_t w = write(rep, msg, sizeof msg);  /* a pipe write this small is atomic */
    _exit(w < 0 ? 126 : 127);
}

static void start_error(const struct start_req *r, int stage, int e, char *msg, size_t cap)
{
    char es[128];
    snprintf(es, sizeof es, "%s", strerror(e));
    es[0] = (char)tolower((unsigned char)es[0]);  /* Docker/Go style messages */
    switch (stage) {
    case STAGE_EXEC:
        if (e == ENOENT && !strchr(r->argv[0], '/'))
            snprintf(msg, cap, "exec: \"%s\": executable file not found in $PATH", r->argv[0]);
        else
            snprintf(msg, cap, "exec: \"%s\": %s", r->argv[0], es);
        break;
    case STAGE_CWD: snprintf(msg, cap, "chdir to cwd (\"%s\"): %s", r->cwd, es); break;
    case STAGE_CHROOT: snprintf(msg, cap, "chroot " NEWROOT ": %s", es); break;
    case STAGE_GROUPS: snprintf(msg, cap, "setgroups: %s", es); break;
    case STAGE_GID: snprintf(msg, cap, "setgid %u: %s", (unsigned)r->gid, es); break;
    case STAGE_UID: snprintf(msg, cap, "setuid %u: %s", (unsigned)r->uid, es); break;
    case STAGE_RLIMIT: snprintf(msg, cap, "setrlimit: %s", es); break;
    case STAGE_CAPS: snprintf(msg, cap, "setting capabilities: %s", es); break;
    case STAGE_NNP: snprintf(msg, cap, "setting no_new_privs: %s", es); break;
    default: snprintf(msg, cap, "setting up the process's stdio: %s", es); break;
    }
}

/* Opens a pty pair from the container's devpts (so the slave is valid inside it). */
static int open_pty(const struct start_req *r, int *master, int *slave)
{
    char path[64];
    snprintf(path, sizeof path, "%s/dev/%s", container_prefix(), is_pid1() ? "pts/ptmx" : "ptmx");
    int unlock = 0;
    unsigned n;
    *master = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (*master < 0 || ioctl(*master, TIOCSPTLCK, &unlock) < 0)
        return -1;
    struct winsize ws = {.ws_row = (unsigned short)r->rows, .ws_col = (unsigned short)r->cols};
    if (r->rows && r->cols && ioctl(*master, TIOCSWINSZ, &ws) < 0)
        return -1;
    *slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*slave < 0) {  /* kernels before 4.13: by name */
        if (ioctl(*master, TIOCGPTN, &n) < 0)
            return -1;
        snprintf(path, sizeof path, "%s/dev/pts/%u", container_prefix(), n);
        *slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    }
    return *slave < 0 ? -1 : 0;
}

static int pipe_nb(int p[2], int parent_end)
{
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    fcntl(p[parent_end], F_SETFL, O_NONBLOCK);
    return 0;
}

pid_t proc_start(uint32_t handle, const struct start_req *r, int *err, char *msg, size_t cap)
{
    int slot = 0, e;
    while (slot < MAX_PROCS && procs[slot].used)
        slot++;
    if (slot == MAX_PROCS) {
        snprintf(msg, cap, "too many processes");
        return *err = EAGAIN, -1;
    }
    /* parent ends: out, err, in; child ends: stdin, stdout, stderr */
    int mine[3] = {-1, -1, -1}, theirs[3] = {-1, -1, -1}, rep[2] = {-1, -1}, pp[2], pty = -1;
    uint8_t *in_buf = NULL;
    if (r->terminal) {
        if (open_pty(r, &pty, &theirs[0]) < 0)
            goto fail_setup;
        theirs[1] = theirs[2] = theirs[0];
        /* output and stdin each get their own fd on the master, to close them independently */
        if ((mine[0] = fcntl(pty, F_DUPFD_CLOEXEC, 3)) < 0 ||
            (mine[2] = fcntl(pty, F_DUPFD_CLOEXEC, 3)) < 0)
            goto fail_setup;
    } else {
        if (pipe_nb(pp, 0) < 0)
            goto fail_setup;
        mine[0] = pp[0], theirs[1] = pp[1];
        if (pipe_nb(pp, 0) < 0)
            goto fail_setup;
        mine[1] = pp[0], theirs[2] = pp[1];
        if (r->stdin_open) {
            if (pipe_nb(pp, 1) < 0)
                goto fail_setup;
            mine[2] = pp[1], theirs[0] = pp[0];
        } else {
            char path[64];
            snprintf(path, sizeof path, "%s/dev/null", container_prefix());
            if ((theirs[0] = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                goto fail_setup;
        }
    }
    if ((mine[2] >= 0 && !(in_buf = malloc(VMPOD_STREAM_WINDOW))) || pipe2(rep, O_CLOEXEC) < 0)
        goto fail_setup;
    int guest = is_pid1();
    pid_t pid = fork();
    if (pid == 0)
        child(r, guest, theirs, r->terminal, rep[1]);
    e = errno;
    close(rep[1]);
    for (int i = 0; i < 3; i++)
        if (theirs[i] >= 0 && (i == 0 || theirs[i] != theirs[i - 1]))
            close(theirs[i]);
    int report[2];
    ssize_t n = pid < 0 ? -1 : 0;
    while (pid > 0 && (n = read(rep[0], report, sizeof report)) < 0 && errno == EINTR)
        ;
    close(rep[0]);
    if (pid < 0 || n != 0) {  /* fork failed, or the child told us why it could not exec */
        if (pid > 0) {
            waitpid(pid, NULL, 0);
            e = n == sizeof report ? report[1] : EIO;
            start_error(r, n == sizeof report ? report[0] : 0, e, msg, cap);
        } else
            snprintf(msg, cap, "fork: %s", strerror(e));
        for (int i = 0; i < 3; i++)
            if (mine[i] >= 0)
                close(mine[i]);
        if (pty >= 0)
            close(pty);
        free(in_buf);
        return *err = e, -1;
    }
    struct proc *p = &procs[slot];
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->handle = handle;
    p->pid = pid;
    p->terminal = r->terminal;
    p->out_fd = mine[0];
    p->err_fd = mine[1];
    p->in_fd = mine[2];
    p->pty_fd = pty;
    p->in_buf = in_buf;
    return pid;

fail_setup:
    e = errno;
    snprintf(msg, cap, "setting up stdio: %s", strerror(e));
    for (int i = 0; i < 3; i++) {
        if (mine[i] >= 0)
            close(mine[i]);
        if (theirs[i] >= 0 && (i == 0 || theirs[i] != theirs[i - 1]))
            close(theirs[i]);
    }
    if (rep[0] >= 0)
        close(rep[0]), close(rep[1]);
    if (pty >= 0)
        close(pty);
    free(in_buf);
    return *err = e, -1;
}
