/* MACHINE's actions (PID 1 only): the clock, the random pool and the MAC of this VM (see machine.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "machine.h"
#include "net.h"

/* <linux/random.h>'s ioctls, spelled out: musl's headers do not carry the kernel's. */
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#define RNDRESEEDCRNG _IO('R', 0x07)

/* Credits the bytes to the input pool, then makes the kernel's generator rekey from it now (the
 * per-CPU generators follow), so nothing drawn after this depends on the template's state alone. */
static int reseed(const unsigned char *seed, size_t len, char *msg, size_t cap)
{
    struct {
        int entropy_count, buf_size;
        unsigned char buf[MACHINE_MAX_SEED];
    } pool = {.entropy_count = (int)(8 * len), .buf_size = (int)len};
    memcpy(pool.buf, seed, len);
    int f = open("/dev/urandom", O_WRONLY | O_CLOEXEC), e = 0;
    const char *step = "open /dev/urandom";
    if (f < 0 || (step = "RNDADDENTROPY", ioctl(f, RNDADDENTROPY, &pool) < 0) ||
        (step = "RNDRESEEDCRNG", ioctl(f, RNDRESEEDCRNG) < 0)) {
        e = errno;
        snprintf(msg, cap, "reseeding the random pool: %s: %s", step, strerror(e));
    }
    if (f >= 0)
        close(f);
    return e;
}

int machine_apply(const struct machine_spec *m, char *msg, size_t cap)
{
    int e;
    if (m->has_time && clock_settime(CLOCK_REALTIME, &m->time) < 0) {
        e = errno;
        snprintf(msg, cap, "setting the clock: %s", strerror(e));
        return e;
    }
    if (m->seed_len && (e = reseed(m->seed, m->seed_len, msg, cap)))
        return e;
    return m->has_mac ? net_set_mac(m->mac, msg, cap) : 0;
}
