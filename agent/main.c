/* vmpod-agent: PID 1 of a vmpod guest (or, with --channel-fd, a host-side test double of it).
 * One epoll loop serves the host channel, SIGCHLD and the container processes' stdio. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include "agent.h"
#include "boot.h"
#include "channel.h"
#include "process.h"
#include "request.h"

struct agent g = {.epfd = -1};
static int log_fd = 2;
static const char *log_prefix = "";

/* Every agent log line is an error: as KERN_ERR it reaches the console past the kernel's `quiet`. */
void alog_to_kmsg(int fd)
{
    log_fd = fd;
    log_prefix = "<3>";
}

void alog(const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%svmpod-agent: ", log_prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(buf);
    buf[n++] = '\n';
    if (write(log_fd, buf, (size_t)n) < 0)  /* one write: one kmsg record */
        return;
}

_Noreturn void agent_exit(int code)
{
    if (is_pid1())
        boot_reboot();  /* PID 1 exiting would panic the kernel */
    proc_kill_all();
    exit(code);
}

_Noreturn void die(const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    alog("fatal: %s", buf);
    agent_exit(1);
}

void msleep(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
}

static void watch_channel(int on)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = EV_TAG(EV_CHANNEL, 0)};
    if (epoll_ctl(g.epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, chan_fd(), &e) < 0)
        die("epoll_ctl channel: %s", strerror(errno));
}

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

/* Returns 1 when the channel should be left alone for a while (no host connected). */
static int channel_readable(void)
{
    int r = chan_fill();
    if (r == CHAN_EOF) {
        if (!chan_is_guest())
            agent_exit(0);  /* host test mode: the host hung up */
        return 1;  /* virtio port: 0 / POLLHUP only means no host yet; never give up */
    }
    struct frame_hdr h;
    const uint8_t *payload;
    const char *why = "";
    while ((r = chan_next(&h, &payload, &why)) == FRAME_OK)
        request_handle(&h, payload);
    if (r == FRAME_BAD) {
        /* A bad length or reserved field means we no longer know where the next frame starts:
         * stream sync is lost for good, so answer once and end (as PID 1: power off). */
        send_error(h.id, EPROTO, "%s", why);
        die("protocol error: %s", why);
    }
    return 0;
}

static _Noreturn void loop(int sfd)
{
    struct epoll_event ev[16];
    long resume = 0;  /* when the paused channel is watched again, 0: not paused */
    for (;;) {
        proc_update_watches();
        int timeout = resume ? (int)(resume - now_ms()) : -1;
        int n = epoll_wait(g.epfd, ev, 16, timeout < 0 && resume ? 0 : timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        if (resume && now_ms() >= resume) {
            resume = 0;
            watch_channel(1);
        }
        for (int i = 0; i < n; i++) {
            int kind = (int)(ev[i].data.u64 & 0xff), slot = (int)(ev[i].data.u64 >> 8);
            if (kind == EV_CHANNEL) {
                if (!resume && channel_readable()) {
                    watch_channel(0);
                    resume = now_ms() + 10;
                }
            } else if (kind == EV_SIGNAL) {
                proc_reap(sfd);
            } else {
                proc_event(kind, slot);
            }
        }
    }
}

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: vmpod-agent [--channel-fd N] [--version]\n"
                    "  As PID 1 of a vmpod guest it takes no arguments.\n"
                    "  --channel-fd N: host test mode, speak the protocol on fd N, no PID-1 work.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int fd = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 && getpid() != 1) {
            printf("vmpod-agent %s (protocol %d)\n", VMPOD_AGENT_VERSION, VMPOD_PROTOCOL_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--channel-fd") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 65535 || fcntl((int)v, F_GETFD) < 0)
                usage();
            fd = (int)v;
        } else if (getpid() != 1) {
            usage();  /* as PID 1, unknown kernel command line words arrive here: ignore them */
        }
    }
    if (fd < 0 && getpid() != 1)
        usage();
    umask(022);
    if (fd < 0) {
        g.pid1 = 1;
        boot_pid1();
        if ((fd = chan_find_guest()) < 0)
            die("no virtio port named " VMPOD_CHANNEL_NAME);
        chan_use(fd, 1);
    } else {
        chan_use(fd, 0);
        boot_std_fds();
    }
    int sfd = boot_signals();
    if ((g.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = EV_TAG(EV_SIGNAL, 0)};
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, sfd, &e) < 0)
        die("epoll_ctl: %s", strerror(errno));
    watch_channel(1);
    send_ready();
    loop(sfd);
}
