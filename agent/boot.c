/* PID-1 setup and teardown. Nothing here runs in host test mode (callers check is_pid1()). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include "agent.h"
#include "boot.h"
#include "container.h"

#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

static void early_mount(const char *src, const char *dir, const char *type, const char *data)
{
    mkdir(dir, 0755);  /* the initramfs holds only /init and modules */
    if (mount(src, dir, type, MS_NOSUID, data) < 0 && errno != EBUSY)
        alog("mount %s: %s", dir, strerror(errno));
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static void load_module(const char *path)
{
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        alog("module %s: %s", path, strerror(errno));
        return;
    }
    /* Compressed modules need the kernel to decompress them (CONFIG_MODULE_DECOMPRESS). */
    int flags = ends_with(path, ".xz") || ends_with(path, ".zst") || ends_with(path, ".gz")
                    ? MODULE_INIT_COMPRESSED_FILE : 0;
    if (syscall(SYS_finit_module, f, "", flags) < 0 && errno != EEXIST)
        alog("module %s: %s", path, strerror(errno));
    close(f);
}

static void load_modules(void)
{
    FILE *f = fopen("/modules.list", "re");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *s = line, *e;
        while (*s == ' ' || *s == '\t')
            s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = 0;
        if (*s && *s != '#')
            load_module(s);
    }
    fclose(f);
}

void boot_std_fds(void)
{
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0) {
            int f = open("/dev/null", O_RDWR);
            if (f < 0)
                f = open("/", O_RDONLY);  /* any placeholder will do */
            if (f >= 0 && f != i) {
                dup2(f, i);
                close(f);
            }
        }
}

void boot_pid1(void)
{
    early_mount("devtmpfs", "/dev", "devtmpfs", "mode=0755");
    early_mount("proc", "/proc", "proc", NULL);
    early_mount("sysfs", "/sys", "sysfs", NULL);
    int c = open("/dev/console", O_RDWR | O_NOCTTY);
    if (c >= 0) {
        for (int i = 0; i < 3; i++)
            if (c != i)
                dup2(c, i);
        if (c > 2)
            close(c);
    }
    boot_std_fds();
    int k = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (k >= 0)
        alog_to_kmsg(k);
    reboot(RB_DISABLE_CAD);  /* Ctrl-Alt-Del becomes a SIGINT to us, which is ignored */
    load_modules();
}

int boot_signals(void)
{
    static const int ignored[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
                                  SIGTSTP, SIGTTIN, SIGTTOU};
    /* Host test mode keeps SIGINT/SIGTERM so the test harness can stop us. */
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++)
        if (is_pid1() || ignored[i] == SIGPIPE || ignored[i] == SIGTTOU || ignored[i] == SIGTTIN)
            signal(ignored[i], SIG_IGN);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    sigprocmask(SIG_BLOCK, &s, NULL);
    int f = signalfd(-1, &s, SFD_CLOEXEC | SFD_NONBLOCK);
    if (f < 0)
        die("signalfd: %s", strerror(errno));
    return f;
}

void boot_teardown(void)
{
    if (!is_pid1())
        return;
    kill(-1, SIGKILL);
    /* Give the killed processes a moment to let go of the root fs, for a clean unmount. */
    for (int i = 0; i < 100; i++) {
        pid_t r;
        while ((r = waitpid(-1, NULL, WNOHANG)) > 0)
            ;
        if (r < 0)
            break;  /* ECHILD: nobody left */
        msleep(10);
    }
    sync();
    container_unmount_all();
    sync();
}

_Noreturn void boot_reboot(void)
{
    boot_teardown();
    if (is_pid1()) {
        reboot(RB_AUTOBOOT);  /* reboot=t and QEMU -no-reboot: the VM ends at once */
        reboot(RB_POWER_OFF);
        for (;;)
            pause();
    }
    exit(0);
}
