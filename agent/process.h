/* Container processes: start, stdio streams with flow control, exit. Keyed by process handle: the
 * main process (START) is MAIN_PROCESS, further ones (EXEC) take the handle the host chose. */
#ifndef VMPOD_PROCESS_H
#define VMPOD_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "container.h"

#define MAX_PROCS 16

struct proc {
    int used;
    uint32_t handle;
    pid_t pid;
    int terminal;
    int out_fd, err_fd, in_fd;         /* -1 once closed; on a pty out/in are dups of the master */
    int pty_fd;                        /* the pty master, held until EXIT (or -1: pipes) */
    uint32_t out_ev, err_ev, in_ev;    /* epoll events currently registered for each */
    uint8_t *in_buf;                   /* STDIN bytes not yet written, at most one window */
    size_t in_off, in_len;
    int in_close;                      /* STDIN_CLOSE received, not yet carried out */
    int in_closed_by_host;
    uint64_t sent, acked;              /* STDOUT+STDERR bytes, for the credit */
    int exited, status, exit_sent;
};

struct proc *proc_find(uint32_t handle);
/* Starts r as process handle in the container (set up already); returns the pid, or -1 with *err
 * and msg set. */
pid_t proc_start(uint32_t handle, const struct start_req *r, int *err, char *msg, size_t cap);
/* Brings the epoll registrations in line with credit and pending stdin. */
void proc_update_watches(void);
void proc_event(int kind, int slot);
void proc_reap(int sfd);
/* Host frames for a process; a protocol violation returns -1 with *why. */
int proc_stdin(struct proc *p, const uint8_t *data, size_t n, const char **why);
int proc_stdin_close(struct proc *p, const char **why);
int proc_output_ack(struct proc *p, uint32_t count, const char **why);
/* Kills what is still running (as PID 1: everything; host mode: our children's process groups). */
void proc_kill_all(void);

#endif
