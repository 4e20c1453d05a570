/* Host channel. Reads are non-blocking and buffered for the event loop; writes block (poll) until the
 * whole frame is out: the host side never blocks, so waiting here is brief and keeps frames whole. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include "agent.h"
#include "channel.h"
#include "sysfs.h"
#include "xencons.h"

#define PORTS "/sys/class/virtio-ports"

static int fd = -1, guest;
static uint8_t rbuf[VMPOD_HEADER_SIZE + VMPOD_MAX_PAYLOAD];
static size_t rpos, rlen;

/* One scan of the sysfs ports: returns an open fd or -1. */
static int find_once(void)
{
    DIR *d = opendir(PORTS);
    if (!d)
        return -1;
    struct dirent *e;
    int out = -1;
    while (out < 0 && (e = readdir(d))) {
        char path[300], buf[128], dev[300];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, PORTS "/%s/name", e->d_name);
        if (sysfs_read(path, buf, sizeof buf) < 0 || strcmp(buf, VMPOD_CHANNEL_NAME) != 0)
            continue;
        snprintf(dev, sizeof dev, "/dev/%s", e->d_name);
        snprintf(path, sizeof path, PORTS "/%s/dev", e->d_name);
        out = sysfs_open_device(dev, path);
    }
    closedir(d);
    return out;
}

int chan_find_guest(void)
{
    for (int i = 0; i < 1000; i++) {  /* ~10 s: the virtio driver may probe late */
        int f = find_once();
        if (f >= 0)
            return f;
        if ((f = xen_channel_open(VMPOD_CHANNEL_NAME)) >= 0)  /* under Xen: a PV console channel */
            return f;
        msleep(10);
    }
    return -1;
}

void chan_use(int f, int is_guest)
{
    fd = f;
    guest = is_guest;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int chan_fd(void) { return fd; }
int chan_is_guest(void) { return guest; }

int chan_fill(void)
{
    if (rpos) {  /* keep the partial frame at the front so a whole frame always fits */
        memmove(rbuf, rbuf + rpos, rlen - rpos);
        rlen -= rpos;
        rpos = 0;
    }
    for (;;) {
        ssize_t n = read(fd, rbuf + rlen, sizeof rbuf - rlen);
        if (n > 0) {
            rlen += (size_t)n;
            return CHAN_DATA;
        }
        if (n == 0)
            return CHAN_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return CHAN_NODATA;
        die("channel read: %s", strerror(errno));
    }
}

int chan_next(struct frame_hdr *h, const uint8_t **payload, const char **why)
{
    int r = frame_split(rbuf + rpos, rlen - rpos, h, payload, why);
    if (r == FRAME_OK)
        rpos += VMPOD_HEADER_SIZE + h->len;
    return r;
}

static void wait_writable(void)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 1000) > 0 && !(p.revents & POLLOUT) && (p.revents & POLLHUP) && guest)
        msleep(10);  /* virtio port with no host connected: POLLHUP until it is */
}

void chan_send(uint16_t type, uint32_t id, const void *payload, size_t n)
{
    uint8_t hdr[VMPOD_HEADER_SIZE];
    frame_header_put(hdr, type, id, (uint32_t)n);
    struct iovec iov[2] = {{hdr, sizeof hdr}, {(void *)payload, n}};
    struct iovec *v = iov;
    int cnt = n ? 2 : 1;
    while (cnt) {
        ssize_t w = writev(fd, v, cnt);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                wait_writable();
                continue;
            }
            die("channel write: %s", strerror(errno));
        }
        while (cnt && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            cnt--;
        }
        if (cnt) {
            v->iov_base = (uint8_t *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
}

void send_ok(uint32_t id, int with_pid, uint32_t pid)
{
    uint8_t b[16];
    struct wbuf w;
    wbuf_init(&w, b, sizeof b);
    if (with_pid)
        fields_put_u32(&w, VMPOD_F_PID, pid);
    chan_send(VMPOD_MSG_OK, id, b, w.len);
}

void send_error(uint32_t id, int err, const char *fmt, ...)
{
    char msg[512];
    uint8_t b[sizeof msg + 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct wbuf w;
    wbuf_init(&w, b, sizeof b);
    fields_put_u32(&w, VMPOD_F_ERRNO, (uint32_t)err);
    fields_put_str(&w, VMPOD_F_MESSAGE, msg);
    chan_send(VMPOD_MSG_ERROR, id, b, w.len);
}

void send_u32(uint16_t type, uint32_t id, uint16_t tag, uint32_t v)
{
    uint8_t b[10];
    struct wbuf w;
    wbuf_init(&w, b, sizeof b);
    fields_put_u32(&w, tag, v);
    chan_send(type, id, b, w.len);
}

void send_ready(void)
{
    uint8_t b[64];
    struct wbuf w;
    wbuf_init(&w, b, sizeof b);
    fields_put_u32(&w, VMPOD_F_PROTO_VERSION, VMPOD_PROTOCOL_VERSION);
    fields_put_str(&w, VMPOD_F_AGENT_VERSION, VMPOD_AGENT_VERSION);
    chan_send(VMPOD_MSG_READY, 0, b, w.len);
}
