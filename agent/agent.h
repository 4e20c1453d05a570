/* Shared state and helpers of the in-guest agent. */
#ifndef VMPOD_AGENT_H
#define VMPOD_AGENT_H

#include <stdint.h>
#include <unistd.h>

#ifndef VMPOD_AGENT_VERSION
#define VMPOD_AGENT_VERSION "0.1.0"
#endif

struct agent {
    int pid1;  /* started as the guest's init (not --channel-fd) */
    int epfd;
};
extern struct agent g;

/* Every PID-1-only action (mounts, kill(-1), reboot) checks both the mode and the real pid, so that
 * host test mode can never touch the machine it runs on. */
static inline int is_pid1(void) { return g.pid1 && getpid() == 1; }

/* epoll tags: kind in the low byte, process slot above it. */
enum { EV_CHANNEL = 1, EV_SIGNAL, EV_OUT, EV_ERR, EV_IN };
#define EV_TAG(kind, slot) (((uint64_t)(slot) << 8) | (uint64_t)(kind))

void alog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void alog_to_kmsg(int fd);
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Ends the agent: exits in host test mode, powers the VM off as PID 1 (PID 1 must never exit). */
_Noreturn void agent_exit(int code);
void msleep(int ms);

#endif
