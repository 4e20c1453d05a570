/* The Xen PV console channel: see xencons.h. Parsers are pure (agent/tests/test_xencons.c). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include "sysfs.h"
#include "xencons.h"

#define XEN_DEVICES "/sys/bus/xen/devices"
#define XENBUS "/dev/xen/xenbus"
#define MAX_CONSOLES 16

static uint32_t get_u32(const uint8_t *p)  /* xenstore's wire format is the guest's byte order */
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

int xen_console_devid(const char *name)
{
    static const char prefix[] = "console-";
    if (strncmp(name, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *p = name + sizeof prefix - 1;
    if (!*p)
        return -1;
    long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return (int)v;
}

size_t xs_read_request(uint8_t *buf, size_t cap, uint32_t req_id, const char *path)
{
    size_t len = strlen(path) + 1;
    if (len > XS_PAYLOAD_MAX || cap < XS_HEADER_SIZE + len)
        return 0;
    put_u32(buf, XS_READ);
    put_u32(buf + 4, req_id);
    put_u32(buf + 8, 0);  /* no transaction */
    put_u32(buf + 12, (uint32_t)len);
    memcpy(buf + XS_HEADER_SIZE, path, len);
    return XS_HEADER_SIZE + len;
}

int xs_parse_reply(const uint8_t *buf, size_t n, uint32_t req_id, char *out, size_t cap)
{
    if (n < XS_HEADER_SIZE)
        return XS_SHORT;
    uint32_t type = get_u32(buf), id = get_u32(buf + 4), len = get_u32(buf + 12);
    if (len > XS_PAYLOAD_MAX)
        return XS_BAD;
    if (n < XS_HEADER_SIZE + len)
        return XS_SHORT;
    if (type != XS_READ || id != req_id || len >= cap)
        return XS_BAD;
    memcpy(out, buf + XS_HEADER_SIZE, len);
    out[len] = 0;
    if (memchr(out, 0, len))  /* a name never holds a NUL */
        return XS_BAD;
    return (int)len;
}

int xen_hvc_index(const int *devids, size_t n, int devid)
{
    int rank = 0, found = 0;
    for (size_t i = 0; i < n; i++) {
        if (devids[i] == devid)
            found = 1;
        else if (devids[i] < devid)
            rank++;
    }
    return found ? rank + 1 : -1;
}

/* One xenstore read through /dev/xen/xenbus, bounded by a 2 s wait for the answer. */
static int xs_read(const char *path, char *out, size_t cap)
{
    static uint32_t next_id = 0x766d7000;  /* "vmp" */
    uint8_t req[XS_HEADER_SIZE + 256], rep[XS_HEADER_SIZE + XS_PAYLOAD_MAX];
    uint32_t id = next_id++;
    size_t len = xs_read_request(req, sizeof req, id, path);
    if (!len)
        return -1;
    int f = open(XENBUS, O_RDWR | O_CLOEXEC);
    if (f < 0)
        return -1;
    int r = -1;
    size_t got = 0;
    if (write(f, req, len) == (ssize_t)len) {
        for (;;) {
            struct pollfd p = {.fd = f, .events = POLLIN};
            if (poll(&p, 1, 2000) <= 0)
                break;
            ssize_t k = read(f, rep + got, sizeof rep - got);
            if (k <= 0)
                break;
            got += (size_t)k;
            r = xs_parse_reply(rep, got, id, out, cap);
            if (r != XS_SHORT)
                break;
        }
    }
    close(f);
    return r >= 0 ? 0 : -1;
}

static int make_raw(int f)
{
    struct termios t;
    if (tcgetattr(f, &t) < 0)
        return -1;
    cfmakeraw(&t);  /* no echo, no CR/LF translation, no signals, no flow control: a byte pipe */
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    return tcsetattr(f, TCSANOW, &t);
}

int xen_channel_open(const char *name)
{
    DIR *d = opendir(XEN_DEVICES);
    if (!d)
        return -1;
    int devids[MAX_CONSOLES];
    size_t n = 0;
    struct dirent *e;
    while (n < MAX_CONSOLES && (e = readdir(d))) {
        int id = xen_console_devid(e->d_name);
        if (id >= 0)
            devids[n++] = id;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        char path[300], nodename[200], value[256], dev[32];
        snprintf(path, sizeof path, XEN_DEVICES "/console-%d/nodename", devids[i]);
        if (sysfs_read(path, nodename, sizeof nodename) < 0)
            continue;
        snprintf(path, sizeof path, "%s/name", nodename);
        if (xs_read(path, value, sizeof value) < 0 || strcmp(value, name) != 0)
            continue;
        int index = xen_hvc_index(devids, n, devids[i]);
        snprintf(dev, sizeof dev, "/dev/hvc%d", index);
        snprintf(path, sizeof path, "/sys/class/tty/hvc%d/dev", index);
        int f = sysfs_open_device(dev, path);
        if (f < 0)
            return -1;
        if (make_raw(f) < 0) {
            close(f);
            return -1;
        }
        return f;
    }
    return -1;
}
