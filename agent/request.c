/* Host->agent messages: strict decoding, then the action. Every request gets OK or ERROR. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include "agent.h"
#include "boot.h"
#include "channel.h"
#include "machine.h"
#include "process.h"
#include "request.h"

#define REQ 1
#define OPT 0

static const struct field_spec start_spec[] = {
    {VMPOD_F_ROOT_DEVICE, FK_STR, REQ}, {VMPOD_F_ROOT_FSTYPE, FK_STR, REQ},
    {VMPOD_F_ROOT_READONLY, FK_U32, OPT}, {VMPOD_F_HOSTNAME, FK_STR, OPT},
    {VMPOD_F_MOUNT, FK_STR_LIST, OPT}, {VMPOD_F_FILE, FK_STR_LIST, OPT},
    {VMPOD_F_NET_ADDRESS, FK_STR, OPT}, {VMPOD_F_NET_GATEWAY, FK_STR, OPT},
    {VMPOD_F_ARG, FK_STR_LIST, REQ}, {VMPOD_F_ENV, FK_STR_LIST, OPT},
    {VMPOD_F_CWD, FK_STR, REQ}, {VMPOD_F_UID, FK_U32, REQ}, {VMPOD_F_GID, FK_U32, REQ},
    {VMPOD_F_GROUP, FK_U32_LIST, OPT}, {VMPOD_F_TERMINAL, FK_U32, REQ},
    {VMPOD_F_ROWS, FK_U32, OPT}, {VMPOD_F_COLS, FK_U32, OPT},
    {VMPOD_F_STDIN_OPEN, FK_U32, REQ}, {VMPOD_F_RLIMIT, FK_STR_LIST, OPT},
    {VMPOD_F_NO_NEW_PRIVS, FK_U32, OPT}, {VMPOD_F_CAPS, FK_STR, OPT}, {0, 0, 0},
};
/* START's process fields without the container's (root, hostname): the container exists already. */
static const struct field_spec exec_spec[] = {
    {VMPOD_F_PROCESS, FK_U32, REQ},
    {VMPOD_F_ARG, FK_STR_LIST, REQ}, {VMPOD_F_ENV, FK_STR_LIST, OPT},
    {VMPOD_F_CWD, FK_STR, REQ}, {VMPOD_F_UID, FK_U32, REQ}, {VMPOD_F_GID, FK_U32, REQ},
    {VMPOD_F_GROUP, FK_U32_LIST, OPT}, {VMPOD_F_TERMINAL, FK_U32, REQ},
    {VMPOD_F_ROWS, FK_U32, OPT}, {VMPOD_F_COLS, FK_U32, OPT},
    {VMPOD_F_STDIN_OPEN, FK_U32, REQ}, {VMPOD_F_RLIMIT, FK_STR_LIST, OPT},
    {VMPOD_F_NO_NEW_PRIVS, FK_U32, OPT}, {VMPOD_F_CAPS, FK_STR, OPT}, {0, 0, 0},
};
static const struct field_spec signal_spec[] = {
    {VMPOD_F_PROCESS, FK_U32, REQ}, {VMPOD_F_SIGNO, FK_U32, REQ}, {0, 0, 0},
};
static const struct field_spec resize_spec[] = {
    {VMPOD_F_PROCESS, FK_U32, REQ}, {VMPOD_F_ROWS, FK_U32, REQ}, {VMPOD_F_COLS, FK_U32, REQ},
    {0, 0, 0},
};
static const struct field_spec machine_spec[] = {
    {VMPOD_F_TIME, FK_STR, OPT}, {VMPOD_F_SEED, FK_STR, OPT}, {VMPOD_F_MAC, FK_STR, OPT}, {0, 0, 0},
};
static const struct field_spec ack_spec[] = {{VMPOD_F_COUNT, FK_U32, REQ}, {0, 0, 0}};
static const struct field_spec no_fields[] = {{0, 0, 0}};

static char *dup_str(const uint8_t *v, uint32_t len)
{
    char *s = malloc((size_t)len + 1);
    if (!s)
        die("out of memory");
    memcpy(s, v, len);
    s[len] = 0;
    return s;
}

static char **dup_list(const struct fields *f, uint16_t tag)
{
    char **out = calloc((size_t)f->count[tag] + 1, sizeof *out);
    if (!out)
        die("out of memory");
    size_t off = 0, i = 0;
    const uint8_t *v;
    uint32_t len;
    while (fields_next(f, tag, &off, &v, &len))
        out[i++] = dup_str(v, len);
    return out;
}

static void free_list(char **l)
{
    for (size_t i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

static int flag(const struct fields *f, uint16_t tag, const char **why)
{
    if (f->u32[tag] > 1)
        *why = "a boolean field is neither 0 nor 1";
    return f->u32[tag] == 1;
}

/* The process fields shared by START and EXEC, after the flags were checked. */
static void proc_fields(const struct fields *f, struct start_req *r)
{
    r->cwd = dup_str(f->str[VMPOD_F_CWD], f->len[VMPOD_F_CWD]);
    r->argv = dup_list(f, VMPOD_F_ARG);
    r->envp = dup_list(f, VMPOD_F_ENV);
    r->uid = f->u32[VMPOD_F_UID];
    r->gid = f->u32[VMPOD_F_GID];
    r->rows = f->u32[VMPOD_F_ROWS];
    r->cols = f->u32[VMPOD_F_COLS];
    r->ngroups = f->count[VMPOD_F_GROUP];
    r->groups = calloc(r->ngroups + 1, sizeof *r->groups);
    if (!r->groups)
        die("out of memory");
    size_t off = 0, i = 0;
    const uint8_t *v;
    uint32_t len;
    while (fields_next(f, VMPOD_F_GROUP, &off, &v, &len))
        r->groups[i++] = fields_u32_at(v);
}

static void req_free(struct start_req *r)
{
    free(r->root_device), free(r->root_fstype), free(r->cwd), free(r->hostname), free(r->groups);
    free_list(r->argv);
    free_list(r->envp);
    free_list(r->mount_vals);
    free_list(r->file_vals);
    free(r->mounts), free(r->files), free(r->rlimits);
}

static void *alloc_array(size_t n, size_t size)
{
    void *p = calloc(n + 1, size);
    if (!p)
        die("out of memory");
    return p;
}

/* MOUNT, FILE and NET_*: checked here, in host test mode too, so that a bad value fails START before
 * the container exists. 0, or -1 with msg. */
static int extras(const struct fields *f, struct start_req *r, char *msg, size_t cap)
{
    const char *why = NULL;
    size_t i;
    if (f->count[VMPOD_F_MOUNT] > SPEC_MAX_ITEMS || f->count[VMPOD_F_FILE] > SPEC_MAX_ITEMS) {
        snprintf(msg, cap, "START: more than %d MOUNT or FILE fields", SPEC_MAX_ITEMS);
        return -1;
    }
    r->mount_vals = dup_list(f, VMPOD_F_MOUNT);
    r->mounts = alloc_array(f->count[VMPOD_F_MOUNT], sizeof *r->mounts);
    for (i = 0; r->mount_vals[i]; i++, r->nmounts++)
        if (spec_mount_parse(r->mount_vals[i], &r->mounts[i], &why) < 0) {
            snprintf(msg, cap, "START: MOUNT #%zu: %s", i + 1, why);
            return -1;
        }
    r->file_vals = dup_list(f, VMPOD_F_FILE);
    r->files = alloc_array(f->count[VMPOD_F_FILE], sizeof *r->files);
    for (i = 0; r->file_vals[i]; i++, r->nfiles++)
        if (spec_file_parse(r->file_vals[i], &r->files[i], &why) < 0) {
            snprintf(msg, cap, "START: FILE #%zu: %s", i + 1, why);
            return -1;
        }
    char *addr = fields_has(f, VMPOD_F_NET_ADDRESS)
                     ? dup_str(f->str[VMPOD_F_NET_ADDRESS], f->len[VMPOD_F_NET_ADDRESS]) : NULL;
    char *gw = fields_has(f, VMPOD_F_NET_GATEWAY)
                   ? dup_str(f->str[VMPOD_F_NET_GATEWAY], f->len[VMPOD_F_NET_GATEWAY]) : NULL;
    int bad = spec_net_parse(addr, gw, &r->net, &why) < 0;
    if (bad)
        snprintf(msg, cap, "START: %s", why);
    free(addr), free(gw);
    return bad ? -1 : 0;
}

/* RLIMIT, NO_NEW_PRIVS and CAPS of START or EXEC, checked before anything happens. 0, or -1 with msg. */
static int limits(const char *what, const struct fields *f, struct start_req *r, char *msg, size_t cap)
{
    const char *why = NULL;
    r->no_new_privs = flag(f, VMPOD_F_NO_NEW_PRIVS, &why);
    if (why) {
        snprintf(msg, cap, "%s: NO_NEW_PRIVS: %s", what, why);
        return -1;
    }
    if (f->count[VMPOD_F_RLIMIT] > SPEC_MAX_RLIMITS) {
        snprintf(msg, cap, "%s: more than %d RLIMIT fields", what, SPEC_MAX_RLIMITS);
        return -1;
    }
    r->rlimits = alloc_array(f->count[VMPOD_F_RLIMIT], sizeof *r->rlimits);
    size_t off = 0;
    const uint8_t *v;
    uint32_t len;
    while (fields_next(f, VMPOD_F_RLIMIT, &off, &v, &len)) {
        char *s = dup_str(v, len);
        int bad = spec_rlimit_parse(s, &r->rlimits[r->nrlimits], &why) < 0;
        free(s);
        if (bad) {
            snprintf(msg, cap, "%s: RLIMIT #%zu: %s", what, r->nrlimits + 1, why);
            return -1;
        }
        r->nrlimits++;
    }
    if (fields_has(f, VMPOD_F_CAPS)) {
        char *s = dup_str(f->str[VMPOD_F_CAPS], f->len[VMPOD_F_CAPS]);
        int bad = spec_caps_parse(s, &r->caps, &why) < 0;
        free(s);
        if (bad) {
            snprintf(msg, cap, "%s: CAPS: %s", what, why);
            return -1;
        }
        r->has_caps = 1;
    }
    return 0;
}

/* Spawns r as handle and answers OK with its pid, or the ERROR of the failed step. */
static void spawn(uint32_t id, uint32_t handle, const struct start_req *r)
{
    char msg[400];
    int err = 0;
    pid_t pid = proc_start(handle, r, &err, msg, sizeof msg);
    if (pid < 0)
        send_error(id, err, "%s", msg);
    else
        send_ok(id, 1, (uint32_t)pid);
}

static int started;  /* START was accepted (one container per VM) */

static void on_start(uint32_t id, const uint8_t *p, size_t n)
{
    struct fields f;
    const char *why = NULL;
    if (fields_decode(p, n, start_spec, &f, &why) < 0) {
        send_error(id, EPROTO, "START: %s", why);
        return;
    }
    struct start_req r = {0};
    r.readonly = flag(&f, VMPOD_F_ROOT_READONLY, &why);
    r.terminal = flag(&f, VMPOD_F_TERMINAL, &why);
    r.stdin_open = flag(&f, VMPOD_F_STDIN_OPEN, &why);
    if (why) {
        send_error(id, EPROTO, "START: %s", why);
        return;
    }
    if (started) {  /* later processes come by EXEC */
        send_error(id, EBUSY, "the container was already started");
        return;
    }
    char msg[400];
    if (extras(&f, &r, msg, sizeof msg) < 0 || limits("START", &f, &r, msg, sizeof msg) < 0) {
        send_error(id, EINVAL, "%s", msg);
        req_free(&r);
        return;
    }
    started = 1;
    r.root_device = dup_str(f.str[VMPOD_F_ROOT_DEVICE], f.len[VMPOD_F_ROOT_DEVICE]);
    r.root_fstype = dup_str(f.str[VMPOD_F_ROOT_FSTYPE], f.len[VMPOD_F_ROOT_FSTYPE]);
    if (fields_has(&f, VMPOD_F_HOSTNAME))
        r.hostname = dup_str(f.str[VMPOD_F_HOSTNAME], f.len[VMPOD_F_HOSTNAME]);
    proc_fields(&f, &r);
    int err = container_setup(&r, msg, sizeof msg);
    if (err)
        send_error(id, err, "%s", msg);  /* the host then sends SHUTDOWN */
    else
        spawn(id, VMPOD_MAIN_PROCESS, &r);
    req_free(&r);
}

static struct proc *live_proc(uint32_t handle)
{
    struct proc *p = proc_find(handle);
    return p && !p->exited ? p : NULL;
}

/* EXEC: another process in the running container, under the host's handle. A handle that can never
 * be valid (0, MAIN_PROCESS) and EXEC before START are host bugs: EINVAL. A container whose main
 * process has ended (or never started) is a race the host can lose: ESRCH. */
static void on_exec(uint32_t id, const uint8_t *p, size_t n)
{
    struct fields f;
    const char *why = NULL;
    if (fields_decode(p, n, exec_spec, &f, &why) < 0) {
        send_error(id, EPROTO, "EXEC: %s", why);
        return;
    }
    struct start_req r = {0};
    r.terminal = flag(&f, VMPOD_F_TERMINAL, &why);
    r.stdin_open = flag(&f, VMPOD_F_STDIN_OPEN, &why);
    uint32_t handle = f.u32[VMPOD_F_PROCESS];
    if (why)
        send_error(id, EPROTO, "EXEC: %s", why);
    else if (handle <= VMPOD_MAIN_PROCESS)
        send_error(id, EINVAL, "EXEC: process handle %u is reserved", handle);
    else if (!started)
        send_error(id, EINVAL, "EXEC before START");
    else if (!live_proc(VMPOD_MAIN_PROCESS))
        send_error(id, ESRCH, "the container is not running");
    else if (proc_find(handle))
        send_error(id, EEXIST, "process handle %u is in use", handle);
    else {
        char msg[400];
        if (limits("EXEC", &f, &r, msg, sizeof msg) < 0)
            send_error(id, EINVAL, "%s", msg);
        else {
            proc_fields(&f, &r);
            spawn(id, handle, &r);
        }
        req_free(&r);
    }
}

static void on_signal(uint32_t id, const struct fields *f)
{
    struct proc *p = live_proc(f->u32[VMPOD_F_PROCESS]);
    if (!p)
        send_error(id, ESRCH, "no such process");
    else if (kill(p->pid, (int)f->u32[VMPOD_F_SIGNO]) < 0)
        send_error(id, errno, "kill: %s", strerror(errno));
    else
        send_ok(id, 0, 0);
}

static void on_resize(uint32_t id, const struct fields *f)
{
    struct proc *p = proc_find(f->u32[VMPOD_F_PROCESS]);
    struct winsize ws = {.ws_row = (unsigned short)f->u32[VMPOD_F_ROWS],
                         .ws_col = (unsigned short)f->u32[VMPOD_F_COLS]};
    if (!p || (p->terminal && p->pty_fd < 0))
        send_error(id, ESRCH, "no such process");
    else if (!p->terminal)
        send_error(id, ENOTTY, "the process has no terminal");
    else if (ioctl(p->pty_fd, TIOCSWINSZ, &ws) < 0)  /* the kernel sends SIGWINCH */
        send_error(id, errno, "resize: %s", strerror(errno));
    else
        send_ok(id, 0, 0);
}

/* MACHINE: checked in full first, so that a bad value changes nothing; applied only as PID 1 (in host
 * test mode the clock and the pool are the host's). */
static void on_machine(uint32_t id, const struct fields *f)
{
    struct machine_spec m = {0};
    const char *why = NULL;
    char *time = fields_has(f, VMPOD_F_TIME) ? dup_str(f->str[VMPOD_F_TIME], f->len[VMPOD_F_TIME]) : NULL;
    char *seed = fields_has(f, VMPOD_F_SEED) ? dup_str(f->str[VMPOD_F_SEED], f->len[VMPOD_F_SEED]) : NULL;
    char *mac = fields_has(f, VMPOD_F_MAC) ? dup_str(f->str[VMPOD_F_MAC], f->len[VMPOD_F_MAC]) : NULL;
    m.has_time = time != NULL;
    m.has_mac = mac != NULL;
    int bad = (time && machine_time_parse(time, &m.time, &why) < 0) ||
              (seed && machine_seed_parse(seed, m.seed, &m.seed_len, &why) < 0) ||
              (mac && machine_mac_parse(mac, m.mac, &why) < 0);
    free(time), free(seed), free(mac);
    char msg[300];
    int err = 0;
    if (bad)
        send_error(id, EINVAL, "MACHINE: %s", why);
    else if (is_pid1() && (err = machine_apply(&m, msg, sizeof msg)))
        send_error(id, err, "%s", msg);
    else
        send_ok(id, 0, 0);
}

static void on_shutdown(uint32_t id)
{
    proc_kill_all();
    boot_teardown();  /* PID 1: kill everything, sync, unmount; then answer */
    send_ok(id, 0, 0);
    agent_exit(0);
}

/* Stream frames: id is the process handle. Frames for unknown processes are ignored (the host may
 * race with an exit); violations get an ERROR and the frame is dropped. */
static void on_stream(const struct frame_hdr *h, const uint8_t *p)
{
    struct fields f;
    const char *why = NULL;
    struct proc *pr = proc_find(h->id);
    int r = 0;
    switch (h->type) {
    case VMPOD_MSG_STDIN:
        if (pr)
            r = proc_stdin(pr, p, h->len, &why);
        else if (h->len > VMPOD_MAX_DATA)
            r = -1, why = "STDIN frame larger than MAX_DATA";
        break;
    case VMPOD_MSG_STDIN_CLOSE:
        if ((r = fields_decode(p, h->len, no_fields, &f, &why)) == 0 && pr)
            r = proc_stdin_close(pr, &why);
        break;
    case VMPOD_MSG_OUTPUT_ACK:
        if ((r = fields_decode(p, h->len, ack_spec, &f, &why)) == 0 && pr)
            r = proc_output_ack(pr, f.u32[VMPOD_F_COUNT], &why);
        break;
    }
    if (r < 0)
        send_error(h->id, EPROTO, "%s", why);
}

void request_handle(const struct frame_hdr *h, const uint8_t *p)
{
    struct fields f;
    const char *why = NULL;
    const struct field_spec *spec = NULL;
    switch (h->type) {
    case VMPOD_MSG_START:
        on_start(h->id, p, h->len);
        return;
    case VMPOD_MSG_EXEC:
        on_exec(h->id, p, h->len);
        return;
    case VMPOD_MSG_STDIN: case VMPOD_MSG_STDIN_CLOSE: case VMPOD_MSG_OUTPUT_ACK:
        on_stream(h, p);
        return;
    case VMPOD_MSG_SIGNAL: spec = signal_spec; break;
    case VMPOD_MSG_RESIZE: spec = resize_spec; break;
    case VMPOD_MSG_SHUTDOWN: spec = no_fields; break;
    case VMPOD_MSG_MACHINE: spec = machine_spec; break;
    default:
        /* The header is sound, so the stream is still in sync: answer and drop just this frame. */
        send_error(h->id, EPROTO, frame_type_known(h->type) ? "unexpected message type %u"
                                                            : "unknown message type %u", h->type);
        return;
    }
    if (fields_decode(p, h->len, spec, &f, &why) < 0) {
        send_error(h->id, EPROTO, "%s", why);
        return;
    }
    if (h->type == VMPOD_MSG_SIGNAL)
        on_signal(h->id, &f);
    else if (h->type == VMPOD_MSG_RESIZE)
        on_resize(h->id, &f);
    else if (h->type == VMPOD_MSG_MACHINE)
        on_machine(h->id, &f);
    else
        on_shutdown(h->id);
}
